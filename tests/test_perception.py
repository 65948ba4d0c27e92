"""The perception curriculum of the tiny Reasoner (embedrl.train.perception) and its place in SFT."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import MICRO_PROFILE

from embedrl.config import build_config
from embedrl.data.sides import MediaStore
from embedrl.models.reasoner import (
    ReasonerPrompt,
    completion_for,
    reasoner_input,
    reasoner_messages,
    side_regions,
)
from embedrl.tcot import parse, render
from embedrl.tcot.regions import first_mark, region_crops, resolve_marks
from embedrl.tcot.teachers import (
    flash_frame,
    names_absent_event,
    names_disambiguating_evidence,
    side_gold_tcot,
    side_teacher_tcot,
)
from embedrl.train.perception import (
    detail_examples,
    detail_images,
    flash_clips,
    flashless_clips,
    grounding_examples,
    single_detail,
    track_examples,
    track_forms,
)
from embedrl.train.sft import PERCEPTION_DONE, SFTStageConfig, sft_examples, train_sft

PROMPT = ReasonerPrompt("short", 112, 56, True, 56, False)


def _answer(example) -> str:
    return example["completion"][0]["content"]


def test_detail_images_point_at_the_one_dotted_object(prepared_small):
    images = list(detail_images(prepared_small))
    assert len(images) > 20
    for image in images:
        objects = image.ref.scene["objects"]
        assert objects[image.mark - 1]["detail"] == image.detail == "dot"
        assert sum(bool(o.get("detail")) for o in objects) == 1
    assert len({image.ref.media_path for image in images}) == len(images)  # each image once


def test_scenes_without_a_single_detail_give_no_example():
    def obj(detail):
        return {"detail": detail}

    assert single_detail({"objects": [obj(None), obj("dot"), obj(None)]}) == ("dot", 2)
    assert single_detail({"objects": [obj("dot"), obj("dot")]}) is None
    assert single_detail({"objects": [obj(None)]}) is None


def test_detail_examples_pair_the_dotted_crop_with_a_plain_one(prepared_small):
    examples = detail_examples(prepared_small, PROMPT, seed=0)
    answers = [_answer(e) for e in examples]
    assert set(answers) == {"yes", "no"}
    assert abs(answers.count("yes") - answers.count("no")) <= answers.count("yes") * 0.05
    for example in examples:
        assert len(example["images"]) == 1 and example["images"][0].size == (56, 56)
        assert example["prompt"][0]["content"][-1]["text"] == "Does it carry a dot?"
    # the "yes" crop is the crop of the dotted region
    first = next(detail_images(prepared_small))
    crops = region_crops(MediaStore(prepared_small).load(first.ref)[0], side_regions(first.ref, PROMPT), 56)
    dotted = np.asarray(crops[first.mark - 1])
    assert any(_answer(e) == "yes" and np.array_equal(np.asarray(e["images"][0]), dotted) for e in examples)
    assert detail_examples(prepared_small, PROMPT, seed=0)[0]["completion"] == examples[0]["completion"]


def test_flash_clips_point_at_the_frame_that_shows_the_flash(prepared_small):
    clips = list(flash_clips(prepared_small))
    assert len(clips) > 10
    assert any(clip.ref.scene.get("segment") for clip in clips)  # moment segments count, renumbered
    for clip in clips:
        scene = clip.ref.scene
        first = (scene.get("segment") or [1])[0]
        assert clip.frame == scene["event"]["frame"] - first + 1
        assert 1 <= clip.frame <= len(MediaStore(prepared_small).load(clip.ref))
    assert len({clip.ref.media_path for clip in clips}) == len(clips)


def test_video_grounding_examples_write_the_gold_trace_of_each_flash_clip(prepared_small):
    """video=True (trace form): each clip with its flash in view adds its T-CoT prompt, all its frames, and
    the gold trace whose mark is the flashing object and whose key frame is the flash."""
    images = grounding_examples(prepared_small, PROMPT, form="trace")
    examples = grounding_examples(prepared_small, PROMPT, form="trace", video=True)
    clips = list(flash_clips(prepared_small))
    assert len(examples) == len(images) + len(clips)
    store = MediaStore(prepared_small)
    for example, clip in zip(examples[len(images):], clips, strict=True):
        frames = store.load(clip.ref)
        assert len(example["images"]) == len(frames)
        assert example["prompt"] == reasoner_messages(clip.ref, "query", PROMPT, num_frames=len(frames))
        answer = _answer(example)
        assert first_mark(answer) == clip.ref.scene["event"]["object"] + 1
        trace = parse(resolve_marks(answer, side_regions(clip.ref, PROMPT)))
        assert trace.key_frames == [clip.frame] and names_disambiguating_evidence(trace, clip.ref.scene)
    with pytest.raises(ValueError, match="trace"):
        grounding_examples(prepared_small, PROMPT, form="question", video=True)


def test_teacher_grounding_traces_keep_the_teachers_policy(prepared_small):
    """traces="teacher": the oracle teacher's own trace, in mark form, on exactly the detailed sides (dotted
    images, flash clips) where it names the evidence; the sides its blind spots miss give no example, so the
    cold start does not learn the gold policy that EG-RL is there to find."""
    sides = [image.ref for image in detail_images(prepared_small)] + [c.ref for c in flash_clips(prepared_small)]
    seen = [ref for ref in sides if names_disambiguating_evidence(side_teacher_tcot(ref), ref.scene)]
    assert 0 < len(seen) < len(sides)  # the teacher misses some dots and flashes, not all
    gold = grounding_examples(prepared_small, PROMPT, form="trace", video=True)
    teacher = grounding_examples(prepared_small, PROMPT, form="trace", video=True, traces="teacher")
    assert len(gold) == len(sides) and len(teacher) == len(seen)
    for example, ref in zip(teacher, seen, strict=True):
        assert _answer(example) == completion_for(ref, render(side_teacher_tcot(ref)), PROMPT)
        trace = parse(resolve_marks(_answer(example), side_regions(ref, PROMPT)))
        assert names_disambiguating_evidence(trace, ref.scene)
    every = grounding_examples(prepared_small, PROMPT, form="trace", video=True, traces="teacher_all")
    assert [_answer(e) for e in every] == [completion_for(ref, render(side_teacher_tcot(ref)), PROMPT) for ref in sides]
    with pytest.raises(ValueError, match="grounding traces"):
        grounding_examples(prepared_small, PROMPT, form="trace", traces="random")


def test_flashless_grounding_examples_trace_the_motion_of_each_clip_side_without_a_flash(prepared_small):
    """flashless=True adds, after the flash clips, each clip side of the training split whose flash is out of
    view (the Moment-Flash hard negatives) with its trace: an object's motion, no flash, as the gold trace."""
    sides = list(flashless_clips(prepared_small))
    assert len(sides) > 5
    assert len({ref.media_path for ref in sides}) == len(sides)
    assert not {ref.media_path for ref in sides} & {clip.ref.media_path for clip in flash_clips(prepared_small)}
    for ref in sides:
        assert ref.scene.get("segment") and flash_frame(ref.scene) is None
    before = grounding_examples(prepared_small, PROMPT, form="trace", video=True, traces="teacher_all")
    examples = grounding_examples(prepared_small, PROMPT, form="trace", video=True, traces="teacher_all",
                                  flashless=True)
    assert len(examples) == len(before) + len(sides)
    assert [_answer(e) for e in examples[:len(before)]] == [_answer(e) for e in before]
    for example, ref in zip(examples[len(before):], sides, strict=True):
        assert _answer(example) == completion_for(ref, render(side_teacher_tcot(ref)), PROMPT)
        trace = parse(resolve_marks(_answer(example), side_regions(ref, PROMPT)))
        assert "flashes" not in trace.answer and " moves " in trace.answer
        assert trace == side_gold_tcot(ref) and not names_absent_event(trace, ref.scene)
    with pytest.raises(ValueError, match="video"):
        grounding_examples(prepared_small, PROMPT, form="trace", flashless=True)


def test_track_examples_ask_which_frame_of_a_strip_flashes(prepared_small):
    """Per clip side with its flash in view: the flashing object's strip -> its flash frame, another
    object's strip -> "none"; each strip exactly the one the grounded prompt shows for that object."""
    from embedrl.tcot.regions import track_strips

    prompt = dataclasses.replace(PROMPT, track_size=28)
    examples = track_examples(prepared_small, prompt, seed=0)
    clips = list(flash_clips(prepared_small))
    answers = [_answer(e) for e in examples]
    assert answers.count("none") == len(clips) and len(examples) == 2 * len(clips)
    assert {a for a in answers if a != "none"} <= {f"frame {f}" for f in range(1, 9)}
    assert all(e["prompt"][0]["content"][-1]["text"] == "Which frame flashes?" for e in examples)
    store = MediaStore(prepared_small)
    clip = clips[0]
    strip = track_strips(store.load(clip.ref), clip.ref.scene, 28)[clip.ref.scene["event"]["object"]]
    matching = [e for e in examples if np.array_equal(np.asarray(e["images"][0]), np.asarray(strip))]
    assert [_answer(e) for e in matching] == [f"frame {clip.frame}"]
    with pytest.raises(ValueError, match="track"):
        track_examples(prepared_small, PROMPT)


def test_track_examples_in_prompt_form_ask_which_frame_a_mark_flashes_in(prepared_small):
    """Form "prompt": the clip's own grounded prompt (frames, region lines, every strip, in that order), asked
    about the flashing object's mark -> its flash frame, and about another object's mark -> "none"."""
    import re

    prompt = dataclasses.replace(PROMPT, track_size=28)
    examples = track_examples(prepared_small, prompt, seed=0, form="prompt")
    clips = list(flash_clips(prepared_small))
    assert len(examples) == 2 * len(clips)
    store = MediaStore(prepared_small)
    by_question = {}
    for clip in clips:
        messages, images = reasoner_input(clip.ref, "query", store, prompt)
        n_objects = len(clip.ref.scene["objects"])
        for example in examples:
            if len(example["images"]) == len(images) and all(
                    np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(example["images"], images, strict=True)):
                question = example["prompt"][-1]["content"][-1]["text"]
                mark = int(re.fullmatch(r"\nWhich frame does #(\d+) flash in\?", question).group(1))
                assert 1 <= mark <= n_objects
                assert example["prompt"][-1]["content"][:-1] == messages[-1]["content"][:-1]
                by_question[(clip.ref.media_path, mark)] = _answer(example)
        flashing = clip.ref.scene["event"]["object"] + 1
        assert by_question[(clip.ref.media_path, flashing)] == f"frame {clip.frame}"
        assert [a for (path, m), a in by_question.items() if path == clip.ref.media_path and m != flashing] == ["none"]
    with pytest.raises(ValueError, match="track form"):
        track_examples(prepared_small, prompt, form="caption")


def test_flashless_track_examples_ask_about_an_object_of_each_side_without_a_flash(prepared_small):
    """flashless=True keeps the flash clips' examples as they were and adds, per clip side whose flash is out
    of view, one question about one of its objects, answered "none", in the form asked for."""
    prompt = dataclasses.replace(PROMPT, track_size=28)
    sides = list(flashless_clips(prepared_small))
    store = MediaStore(prepared_small)
    for form in ("strip", "prompt"):
        before = track_examples(prepared_small, prompt, seed=0, form=form)
        examples = track_examples(prepared_small, prompt, seed=0, form=form, flashless=True)
        assert len(examples) == len(before) + len(sides)
        assert sorted(map(_answer, examples)) == sorted(list(map(_answer, before)) + ["none"] * len(sides))
    # each segment without a flash is asked about in its own prompt: its frames and all its strips
    for ref in sides[:3]:
        messages, images = reasoner_input(ref, "query", store, prompt)
        asked = [e for e in examples if len(e["images"]) == len(images) and all(
            np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(e["images"], images, strict=True))]
        assert len(asked) == 1 and _answer(asked[0]) == "none"
        assert asked[0]["prompt"][-1]["content"][:-1] == messages[-1]["content"][:-1]


def test_track_examples_in_which_form_ask_which_object_of_a_side_flashes(prepared_small):
    """Form "which": one example per clip side, its own prompt asked "Which object flashes?" -> the flashing
    object's mark, or "none" for a side whose flash is out of view (with flashless)."""
    prompt = dataclasses.replace(PROMPT, track_size=28)
    clips, sides = list(flash_clips(prepared_small)), list(flashless_clips(prepared_small))
    examples = track_examples(prepared_small, prompt, seed=0, form="which", flashless=True)
    assert len(examples) == len(clips) + len(sides)
    answers = sorted(map(_answer, examples))
    assert answers == sorted([f"#{c.ref.scene['event']['object'] + 1}" for c in clips] + ["none"] * len(sides))
    assert all(e["prompt"][-1]["content"][-1]["text"] == "\nWhich object flashes?" for e in examples)
    store = MediaStore(prepared_small)
    clip = clips[0]
    messages, images = reasoner_input(clip.ref, "query", store, prompt)
    asked = [e for e in examples if len(e["images"]) == len(images) and all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(e["images"], images, strict=True))]
    assert [_answer(e) for e in asked] == [f"#{clip.ref.scene['event']['object'] + 1}"]


def test_track_forms_joined_by_plus_give_each_forms_examples_of_every_side(prepared_small):
    """"strip+which": the strip examples and the which examples of every clip side (flash-less ones too), the
    same questions about the same objects as each form alone; a form named twice or unknown is refused."""
    prompt = dataclasses.replace(PROMPT, track_size=28)
    both = track_examples(prepared_small, prompt, seed=0, form="strip+which", flashless=True)
    alone = [track_examples(prepared_small, prompt, seed=0, form=form, flashless=True) for form in ("strip", "which")]
    assert len(both) == sum(map(len, alone))
    questions = sorted((e["prompt"][-1]["content"][-1]["text"].strip(), _answer(e)) for e in both)
    assert questions == sorted((e["prompt"][-1]["content"][-1]["text"].strip(), _answer(e)) for e in alone[0] + alone[1])
    assert track_forms("which+strip") == ["which", "strip"]
    for bad in ("strip+strip", "strip+caption", "strip+", "+which"):
        with pytest.raises(ValueError, match="joined by"):
            track_examples(prepared_small, prompt, form=bad)


def test_grounding_examples_answer_with_the_dotted_mark(prepared_small):
    examples = grounding_examples(prepared_small, PROMPT)
    images = list(detail_images(prepared_small))
    assert len(examples) == len(images)
    for example, image in zip(examples, images, strict=True):
        assert _answer(example) == f"#{image.mark}"
        content = example["prompt"][0]["content"]
        assert content[-1]["text"] == "\nWhich region carries the dot?"
        n_regions = len(side_regions(image.ref, PROMPT))
        assert len(example["images"]) == 1 + n_regions == sum(p["type"] == "image" for p in content)
    with pytest.raises(ValueError, match="grounded"):
        grounding_examples(prepared_small, ReasonerPrompt())


def test_trace_form_grounding_examples_write_the_gold_trace_marking_the_dot(prepared_small):
    """form "trace": the Reasoner's own T-CoT prompt, answered by the gold T-CoT whose first mark is the
    dotted region: the pointer is learned where a trace names its region."""
    examples = grounding_examples(prepared_small, PROMPT, form="trace")
    images = list(detail_images(prepared_small))
    assert len(examples) == len(images)
    for example, image in zip(examples, images, strict=True):
        assert first_mark(_answer(example)) == image.mark
        assert example["prompt"] == reasoner_messages(image.ref, "query", PROMPT)
        assert len(example["images"]) == 1 + len(side_regions(image.ref, PROMPT))
        trace = parse(resolve_marks(_answer(example), side_regions(image.ref, PROMPT)))
        assert names_disambiguating_evidence(trace, image.ref.scene)
    with pytest.raises(ValueError, match="grounding form"):
        grounding_examples(prepared_small, PROMPT, form="caption")


def test_sft_config_rejects_grounding_without_a_grounded_prompt(tmp_path):
    with pytest.raises(ValueError, match="grounded"):
        build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), grounded=False,
                     grounding_copies=1)
    with pytest.raises(ValueError, match="grounding_video"):
        build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), grounding_video=True)

    with pytest.raises(ValueError, match="flashless_clips"):
        build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), grounding_form="trace",
                     flashless_clips=True)
    with pytest.raises(ValueError, match="must be >= 0"):
        build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), perception_steps=-1)
    with pytest.raises(ValueError, match="grounding_form"):
        build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), grounding_form="caption")
    with pytest.raises(ValueError, match="track_steps"):
        build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), track_steps=2)
    with pytest.raises(ValueError, match="grounding_traces"):
        build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), grounding_traces="random")
    with pytest.raises(ValueError, match="trace only"):
        build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), grounding_traces="teacher",
                     grounding_form="question")
    with pytest.raises(ValueError, match="track_form"):
        build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), track_form="caption")
    with pytest.raises(ValueError, match="sft.track_form='strip\\+strip'"):
        build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), track_form="strip+strip")


@pytest.mark.timeout(600)
def test_sft_runs_the_warm_up_first_and_reuses_it(prepared_small, tiny_models, tmp_path, caplog):
    settings = {"max_steps": 4, "perception_steps": 6, "grounding_steps": 2, "grounding_copies": 1}
    config = build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), **settings)
    result = train_sft(prepared_small, tiny_models["reasoner"], tmp_path, config)
    marker = json.loads((tmp_path / "perception" / "model" / PERCEPTION_DONE).read_text())
    assert marker["detail"]["steps"] == 6 and marker["detail"]["examples"] > 40
    assert marker["grounding"]["steps"] == 2 and len(marker["grounding"]["losses"]) >= 1
    for phase in ("detail", "grounding"):
        assert (tmp_path / "perception" / phase / "train_log.jsonl").exists()
    meta = json.loads((result.out_dir / "model" / "embedrl.json").read_text())
    assert meta["stage"]["perception_steps"] == 6 and meta["stage"]["grounding_steps"] == 2
    assert meta["stage"]["grounding_copies"] == 1
    prompt = config.reasoner_prompt()
    assert meta["stage"]["examples"] == len(sft_examples(prepared_small, prompt=prompt)) + len(
        grounding_examples(prepared_small, prompt))
    # a second run in the same directory (a retry) keeps the finished warm-up
    caplog.set_level("INFO", logger="embedrl.train.sft")
    config = build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), **settings)
    train_sft(prepared_small, tiny_models["reasoner"], tmp_path, config)
    assert any("reusing" in r.getMessage() for r in caplog.records)
    # a finished warm-up with other settings is never taken for this run's
    config = build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path),
                          **{**settings, "perception_steps": 7})
    with pytest.raises(ValueError, match="other settings"):
        train_sft(prepared_small, tiny_models["reasoner"], tmp_path, config)
    config = build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path),
                          **{**settings, "grounding_form": "trace"})
    with pytest.raises(ValueError, match="other settings"):
        train_sft(prepared_small, tiny_models["reasoner"], tmp_path, config)


@pytest.mark.timeout(600)
def test_runs_naming_one_perception_dir_share_its_warm_up(prepared_small, tiny_models, tmp_path, caplog):
    """sft.perception_dir: the first run trains the warm-up there, a later run (another output directory,
    another seed) starts its cold start from it, as runs of a pretrained Reasoner share its base."""
    shared = tmp_path / "perception-base"
    settings = {"max_steps": 2, "perception_steps": 2, "grounding_steps": 2, "perception_dir": str(shared)}
    first = build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path / "a"), seed=0, **settings)
    train_sft(prepared_small, tiny_models["reasoner"], tmp_path / "a", first)
    assert (shared / "model" / PERCEPTION_DONE).exists() and not (tmp_path / "a" / "perception").exists()
    caplog.set_level("INFO", logger="embedrl.train.sft")
    second = build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path / "b"), seed=1, **settings)
    train_sft(prepared_small, tiny_models["reasoner"], tmp_path / "b", second)
    assert any("reusing" in r.getMessage() and str(shared) in r.getMessage() for r in caplog.records)
    assert (tmp_path / "b" / "model" / "model.safetensors").exists()


@pytest.mark.timeout(600)
def test_the_warm_up_learns_from_more_data_roots_when_given(prepared_small, small_minimmeb, tiny_models, tmp_path):
    """sft.perception_data adds the train-split images of other roots (e.g. other generator seeds): more
    distinct scenes for the warm-up, the cold start itself unchanged."""
    settings = {"max_steps": 2, "perception_steps": 2, "grounding_steps": 2, "perception_data": str(small_minimmeb)}
    config = build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), **settings)
    result = train_sft(prepared_small, tiny_models["reasoner"], tmp_path, config)
    marker = json.loads((tmp_path / "perception" / "model" / PERCEPTION_DONE).read_text())
    prompt = config.reasoner_prompt()
    assert marker["grounding"]["examples"] == len(grounding_examples(prepared_small, prompt)) + len(
        grounding_examples(small_minimmeb, prompt))
    assert marker["detail"]["examples"] == len(detail_examples(prepared_small, prompt)) + len(
        detail_examples(small_minimmeb, prompt, seed=1))
    meta = json.loads((result.out_dir / "model" / "embedrl.json").read_text())
    assert meta["stage"]["examples"] == len(sft_examples(prepared_small, prompt=prompt))


@pytest.mark.timeout(600)
def test_the_trace_form_trains_the_warm_up_and_the_copies_on_gold_traces(prepared_small, tiny_models, tmp_path):
    settings = {"max_steps": 2, "perception_steps": 2, "grounding_steps": 2, "grounding_copies": 2,
                "grounding_form": "trace", "grounding_video": True}
    config = build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path), **settings)
    result = train_sft(prepared_small, tiny_models["reasoner"], tmp_path, config)
    marker = json.loads((tmp_path / "perception" / "model" / PERCEPTION_DONE).read_text())
    prompt = config.reasoner_prompt()
    traces = grounding_examples(prepared_small, prompt, form="trace", video=True)
    assert marker["settings"]["grounding_form"] == "trace" and marker["settings"]["grounding_video"]
    assert marker["grounding"]["examples"] == len(traces)
    meta = json.loads((result.out_dir / "model" / "embedrl.json").read_text())
    assert meta["stage"]["grounding_form"] == "trace"
    assert meta["stage"]["examples"] == len(sft_examples(prepared_small, prompt=prompt)) + 2 * len(traces)


@pytest.mark.timeout(600)
def test_the_track_phase_runs_between_detail_and_grounding_and_old_warm_ups_stay_valid(
        prepared_small, tiny_models, tmp_path, caplog):
    settings = {"max_steps": 2, "perception_steps": 2, "grounding_steps": 2, "perception_dir": str(tmp_path / "base")}
    plain_form = "question"  # the micro profile's
    tracks = {**settings, "track_steps": 2, "reasoner_track_size": 28, "grounding_form": "trace",
              "grounding_video": True}
    config = build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path / "a"), **tracks)
    result = train_sft(prepared_small, tiny_models["reasoner"], tmp_path / "a", config)
    marker = json.loads((tmp_path / "base" / "model" / PERCEPTION_DONE).read_text())
    assert list(marker)[1:] == ["detail", "track", "grounding"]
    prompt = config.reasoner_prompt()
    assert marker["track"]["examples"] == len(track_examples(prepared_small, prompt)) + len(
        detail_examples(prepared_small, prompt))  # the dot replayed
    assert ReasonerPrompt.of_model(result.out_dir / "model").track_size == 28
    meta = json.loads((result.out_dir / "model" / "embedrl.json").read_text())
    assert meta["stage"]["track_steps"] == 2 and meta["stage"]["track_form"] == "strip"
    # a warm-up recorded before track strips existed (no track_steps, no track_size) is still reused by a
    # run that does not use them, and refused by one that does
    del marker["settings"]["track_steps"], marker["settings"]["track_form"], marker["settings"]["grounding_traces"]
    del marker["settings"]["flashless_clips"]
    del marker["settings"]["reasoner_prompt"]["track_size"]
    marker["settings"].update(grounding_form=plain_form, grounding_video=False)
    (tmp_path / "base" / "model" / PERCEPTION_DONE).write_text(json.dumps(marker))
    caplog.set_level("INFO", logger="embedrl.train.sft")
    plain = build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path / "b"), **settings)
    assert plain.grounding_form == plain_form
    train_sft(prepared_small, tiny_models["reasoner"], tmp_path / "b", plain)
    assert any("reusing" in r.getMessage() for r in caplog.records)
    again = build_config(SFTStageConfig, MICRO_PROFILE, "sft", output_dir=str(tmp_path / "c"), **tracks)
    with pytest.raises(ValueError, match="other settings"):
        train_sft(prepared_small, tiny_models["reasoner"], tmp_path / "c", again)
