"""Grounding the Reasoner: region proposals, the grounded prompt, and the prompt saved with a Reasoner."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from embedrl.data.sides import MediaStore
from embedrl.models.reasoner import ReasonerPrompt, reasoner_images, reasoner_input, reasoner_messages
from embedrl.tcot.regions import region_proposals, track_strips
from embedrl.tcot.teachers import gold_tcot, oracle_tcot
from embedrl.train.embedder import load_pairs


def _sides(prepared, subset):
    pairs = load_pairs(prepared)[subset]
    return [side for pair in pairs[:10] for side in (pair.query, pair.positive)]


def test_image_regions_list_every_object_without_its_fine_detail(prepared_small):
    for side in _sides(prepared_small, "T2I-Marked"):
        if side.media_kind != "image":
            continue
        regions = region_proposals(side.scene)
        assert len(regions) == len(side.scene["objects"])
        assert not any("dot" in r.label for r in regions)  # which object carries the dot is the Reasoner's call
        # Both the teacher and the gold trace point at an object that is among the proposals.
        labels = " | ".join(r.label for r in regions)
        for writer in (oracle_tcot, gold_tcot):
            answer = writer(side.scene).answer.removesuffix(" with a dot")
            assert answer in labels


def test_page_regions_read_the_title_and_every_row(prepared_small):
    side = next(s for s in _sides(prepared_small, "VisDoc-Price") if s.media_kind == "image")
    regions = region_proposals(side.scene)
    assert regions[0].label == f"title: {side.scene['title']}"
    assert [r.label.split()[0] for r in regions[1:]] == [row["item"] for row in side.scene["rows"]]
    assert all(r.box_2d is not None for r in regions[1:])


def test_text_sides_and_scene_less_data_get_no_regions():
    assert region_proposals({}) == []
    assert region_proposals({"type": "text", "object": "large red star"}) == []


@pytest.mark.parametrize("subset", ["T2I-Marked", "I2T-Marked", "T2V-Flash", "VisDoc-Price"])
def test_text_regions_list_the_keywords_and_marks_round_trip_the_teacher_trace(prepared_small, subset):
    from embedrl.models.reasoner import completion_for, resolve_completion, side_regions
    from embedrl.tcot import parse, render
    from embedrl.tcot.teachers import oracle_tcot, text_keywords

    prompt = ReasonerPrompt(grounded=True, back_references=True, text_regions=True)
    texts = [s for s in _sides(prepared_small, subset) if not s.media_path]
    assert texts
    for side in texts:
        regions = side_regions(side, prompt)
        assert [r.label for r in regions] == text_keywords(side.clean_text)[:len(regions)]
        listed = " ".join(part["text"] for part in reasoner_messages(side, "query", prompt)[-1]["content"])
        assert all(f"{k}. {r.label}" in listed for k, r in enumerate(regions, 1))
        full = render(oracle_tcot({"type": "text"}, text=side.clean_text))
        marked = completion_for(side, full, prompt)
        assert '"text_keywords": ["#1"' in marked and not any(f'"{r.label}"' in marked for r in regions)
        assert resolve_completion(side, marked, prompt) == full
        assert parse(resolve_completion(side, marked, prompt), modality="text").text_keywords == text_keywords(side.clean_text)
        # Without the setting (and for models saved before it) a text side lists nothing.
        assert side_regions(side, ReasonerPrompt(grounded=True)) == []


@pytest.mark.parametrize("subset", ["T2I-Marked", "I2T-Marked", "T2V-Flash", "VisDoc-Price"])
def test_grounded_prompt_images_match_its_image_placeholders(prepared_small, tiny_models, subset):
    """The processor must find exactly one image per placeholder: media first, then one crop per boxed region."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models["reasoner"])
    store = MediaStore(prepared_small)
    prompt = ReasonerPrompt(grounded=True, image_size=112)
    for role, side in zip(("query", "target") * 10, _sides(prepared_small, subset), strict=False):
        messages, images = reasoner_input(side, role, store, prompt)
        frames = store.num_frames(side)
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert text.count("<|vision_start|>") == len(images)
        batch = processor(text=[text], images=images or None, return_tensors="pt")
        if side.media_kind == "image" and side.scene.get("type") == "image":
            assert len(images) == 1 + len(side.scene["objects"])
            assert "Regions:" in text and batch["image_grid_thw"].shape[0] == len(images)
        ungrounded = reasoner_messages(side, role, ReasonerPrompt(), num_frames=frames)
        assert "Regions:" not in json.dumps(ungrounded)


def test_reasoner_prompt_round_trips_and_rejects_unknown_styles(tmp_path):
    prompt = ReasonerPrompt(style="full", image_size=112, grounded=True)
    assert ReasonerPrompt.from_dict(prompt.to_dict()) == prompt
    (tmp_path / "embedrl.json").write_text(json.dumps({"reasoner_prompt": prompt.to_dict()}))
    assert ReasonerPrompt.of_model(tmp_path) == prompt
    assert ReasonerPrompt.of_model(tmp_path / "missing") == ReasonerPrompt()
    with pytest.raises(ValueError, match="style"):
        ReasonerPrompt(style="verbose")
    with pytest.raises(ValueError, match="track_size"):
        ReasonerPrompt(grounded=True, track_size=-1)


@pytest.mark.parametrize("subset", ["T2V-Flash", "Moment-Flash"])
def test_track_strips_show_each_object_in_every_frame_and_the_flash_in_one_cell(prepared_small, subset):
    """One strip per object, one cell per frame of the side (a segment's 2, a clip's 8); the flashing
    object's cell at the flash frame is the one nearly-white cell of the side: the object drawn white."""
    import numpy as np

    from embedrl.tcot.teachers import flash_frame

    store = MediaStore(prepared_small)
    checked = 0
    for side in _sides(prepared_small, subset):
        if side.media_kind != "video":
            continue
        frames = store.load(side)
        strips = track_strips(frames, side.scene, 28)
        assert len(strips) == len(side.scene["objects"])
        assert all(strip.size == (28 * len(frames), 28) for strip in strips)
        cells = np.stack([np.asarray(strip, dtype=float).reshape(28, len(frames), 28, 3).swapaxes(0, 1)
                          for strip in strips])  # [object, frame, y, x, rgb]
        saturation = (cells.max(-1) - cells.min(-1)).mean(axis=(2, 3))  # a white object on a grey canvas: ~0
        frame = flash_frame(side.scene)
        if frame is None:
            assert saturation.min() > 20
            continue
        flashing = side.scene["event"]["object"]
        assert np.unravel_index(saturation.argmin(), saturation.shape) == (flashing, frame - 1)
        assert np.sort(saturation.ravel())[1] > 2 * saturation.min()
        checked += 1
    assert checked


def test_track_strips_follow_the_object_list_in_a_grounded_clip_prompt(prepared_small, tiny_models):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models["reasoner"])
    store = MediaStore(prepared_small)
    prompt = ReasonerPrompt(grounded=True, image_size=112, track_size=28)
    sides = [s for s in _sides(prepared_small, "Moment-Flash") + _sides(prepared_small, "T2V-Flash") if s.media_path]
    for side in sides:
        frames = store.load(side)
        images = reasoner_images(side, store, prompt)
        assert len(images) == len(frames) + len(side.scene["objects"])
        assert [i.size for i in images[len(frames):]] == [(28 * len(frames), 28)] * len(side.scene["objects"])
        messages, prompt_images = reasoner_input(side, "query", store, prompt)
        assert [i.size for i in prompt_images] == [i.size for i in images]
        content = messages[0]["content"]
        lines = [i for i, part in enumerate(content) if part["type"] == "text" and part["text"].startswith("\n1. ")]
        assert content[lines[0] + 1] == {"type": "image"}  # the first object's strip right after its line
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        batch = processor(text=[text], images=images, return_tensors="pt")
        assert batch["image_grid_thw"].shape[0] == len(images)
        # without track strips (the default, and every Reasoner saved before the setting) only the frames
        assert len(reasoner_images(side, store, ReasonerPrompt(grounded=True))) == len(frames)


def test_sft_saves_the_prompt_the_reasoner_was_trained_with(sft_reasoner):
    from embedrl.models.reasoner import Reasoner

    saved = ReasonerPrompt.of_model(sft_reasoner.out_dir / "model")
    assert saved.grounded and saved.image_size == 112  # the micro profile's SFT settings
    assert Reasoner.load(sft_reasoner.out_dir / "model").prompt == saved


@pytest.mark.parametrize("subset", ["T2I-Marked", "I2T-Marked", "CIR-Marked", "Grounding-Marked", "T2V-Flash",
                                    "VisDoc-Price", "VisDoc-Quantity"])
def test_marks_round_trip_keeps_the_evidence_of_teacher_and_gold_traces(prepared_small, subset):
    from embedrl.tcot import parse
    from embedrl.tcot.regions import resolve_marks, to_marks
    from embedrl.tcot.teachers import names_absent_object, names_disambiguating_evidence

    checked = 0
    for side in _sides(prepared_small, subset):
        regions = region_proposals(side.scene) if side.media_path else []
        if not regions:
            continue
        frames = 8 if side.media_kind == "video" else None
        for writer in (oracle_tcot, gold_tcot):
            from embedrl.tcot import render

            full = render(writer(side.scene, text=side.clean_text))
            marked = to_marks(full, regions)
            assert "#" in marked and len(marked) < len(full)
            back = parse(resolve_marks(marked, regions), modality=side.modality, num_frames=frames)
            original = parse(full, modality=side.modality, num_frames=frames)
            assert names_disambiguating_evidence(back, side.scene) == names_disambiguating_evidence(original, side.scene)
            assert not names_absent_object(back, side.scene)
            assert back.key_frames == original.key_frames
            assert set(original.text_keywords) <= set(back.text_keywords) | {""}
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("subset", ["T2I-Marked", "CIR-Marked", "T2V-Flash", "VisDoc-Price"])
def test_back_references_name_the_first_region_once_and_resolve_to_the_same_trace(prepared_small, subset):
    from embedrl.tcot import render
    from embedrl.tcot.regions import BACK_REFERENCE, resolve_marks, to_marks

    checked = 0
    for side in _sides(prepared_small, subset):
        regions = region_proposals(side.scene) if side.media_path else []
        if not regions:
            continue
        full = render(oracle_tcot(side.scene, text=side.clean_text))
        explicit = to_marks(full, regions)
        short = to_marks(full, regions, back_references=True)
        first = re.search(r"#\d+", explicit).group(0)
        assert short.count(first) == 1 and short.index(first) == explicit.index(first)
        assert short.count(BACK_REFERENCE) == len(re.findall(rf"{first}(?!\d)", explicit)) - 1
        assert resolve_marks(short, regions) == resolve_marks(explicit, regions)
        checked += 1
    assert checked >= 3


def test_a_back_reference_before_any_mark_stays_unresolved(prepared_small):
    from embedrl.tcot.regions import resolve_marks

    side = next(s for s in _sides(prepared_small, "T2I-Marked") if s.media_kind == "image")
    regions = region_proposals(side.scene)
    assert resolve_marks("<answer>#= then #2, #= again</answer>", regions) == (
        f"<answer>#= then {regions[1].words}, {regions[1].words} again</answer>")


def test_image_marks_replace_every_object_phrase_and_unknown_marks_stay_unresolved(prepared_small):
    from embedrl.tcot import TCoTFormatError, parse, render
    from embedrl.tcot.regions import resolve_marks, to_marks

    side = next(s for s in _sides(prepared_small, "T2I-Marked") if s.media_kind == "image")
    regions = region_proposals(side.scene)
    marked = to_marks(render(oracle_tcot(side.scene)), regions)
    for obj in side.scene["objects"]:
        assert f"{obj['colour']} {obj['shape']}" not in marked
    assert '"bbox_2d": ["#' in marked
    beyond = len(regions) + 1
    bad = f'<thinking>It is there. {{"bbox_2d": ["#{beyond}"]}}</thinking>\n<rethink>Yes.</rethink>\n<answer>#{beyond}</answer>'
    assert resolve_marks(bad, regions) == bad  # never repaired into some other region
    with pytest.raises(TCoTFormatError):
        parse(resolve_marks(bad, regions), modality="image")
    good = bad.replace(f"#{beyond}", "#1")
    assert parse(resolve_marks(good, regions), modality="image").bbox_2d == [regions[0].box_2d]


def test_sft_with_negative_sides_adds_each_hard_negative_as_a_target_with_its_own_trace(prepared_small):
    from embedrl.train.sft import sft_examples

    plain = sft_examples(prepared_small)
    with_negatives = sft_examples(prepared_small, negative_sides=True)
    pairs = [p for subset in load_pairs(prepared_small).values() for p in subset]
    negatives = [p for p in pairs if p.negative is not None and p.negative_tcot]
    assert negatives and len(with_negatives) == len(plain) + len(negatives)
    completions = Counter(e["completion"][0]["content"] for e in with_negatives)
    completions.subtract(e["completion"][0]["content"] for e in plain)
    assert +completions == Counter(p.negative_tcot for p in negatives)
    store, first = MediaStore(prepared_small), negatives[0]
    as_target = reasoner_input(first.negative, "target", store, ReasonerPrompt())[0]
    assert any(e["prompt"] == as_target and e["completion"][0]["content"] == first.negative_tcot for e in with_negatives)


def test_grounded_sft_completions_are_in_mark_form(prepared_small):
    from embedrl.train.sft import sft_examples

    grounded = sft_examples(prepared_small, prompt=ReasonerPrompt(grounded=True, image_size=112))
    plain = sft_examples(prepared_small)
    assert len(grounded) == len(plain)
    image_completions = [e["completion"][0]["content"] for e in grounded if len(e["images"]) > 1]
    assert image_completions and all("#" in c for c in image_completions)
    assert not any("#" in e["completion"][0]["content"] for e in plain)
    once = sft_examples(prepared_small, prompt=ReasonerPrompt(grounded=True, image_size=112, back_references=True))
    once_completions = [e["completion"][0]["content"] for e in once if len(e["images"]) > 1]
    explicit = [len(re.findall(r"#\d", c)) for c in image_completions]
    assert once_completions and all(c.count("#=") >= 1 and len(re.findall(r"#\d", c)) < n
                                    for c, n in zip(once_completions, explicit, strict=True))
