"""Data prep: teacher T-CoTs on every side, gold traces for eval, the consistency filter counts and quarantines."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from embedrl.data.sides import eval_sides, train_negative, train_sides
from embedrl.data.validate import validate_path
from embedrl.tcot import TCoT, parse, render
from embedrl.tcot.teachers import (
    flash_frame,
    names_absent_event,
    names_disambiguating_evidence,
    side_gold_tcot,
    side_teacher_tcot,
)


def _manifest(root):
    return json.loads((root / "manifest.json").read_text())


def test_prepared_data_is_valid_and_keeps_every_task(prepared_small, small_minimmeb):
    assert validate_path(prepared_small).ok
    assert [t["path"] for t in _manifest(prepared_small)["tasks"]] == [t["path"] for t in _manifest(small_minimmeb)["tasks"]]


def test_train_traces_fit_each_side(prepared_small):
    table = pq.read_table(prepared_small / "train/T2V-Flash.parquet").to_pylist()
    for row in table:
        query, positive = train_sides(row)
        assert parse(row["qry_tcot"], modality=query.modality).text_keywords
        assert parse(row["pos_tcot"], modality="video", num_frames=8).key_frames


def test_each_hard_negative_gets_the_teachers_trace_of_its_own_side(prepared_small):
    rows = pq.read_table(prepared_small / "train/Moment-Flash.parquet").to_pylist()
    assert rows and all(row["neg_image_path"] for row in rows)
    for row in rows:
        negative = train_negative(row)
        assert negative.media_path == row["neg_image_path"] and negative.scene
        assert row["neg_tcot"] == render(side_teacher_tcot(negative))
        assert negative.scene != train_sides(row)[1].scene  # another segment of the clip
    assert any(row["neg_tcot"] != row["pos_tcot"] for row in rows)
    rl_rows = pq.read_table(prepared_small / "rl/Moment-Flash.parquet").to_pylist()
    assert rl_rows and all(train_negative(row) is None and row["neg_tcot"] == "" for row in rl_rows)


def test_filter_drops_count_and_quarantine_every_conflicting_pair(prepared_small, small_minimmeb):
    prepared = _manifest(prepared_small)["prepared"]
    quarantined = (prepared_small / "prep_quarantine.jsonl").read_text().splitlines()
    assert prepared["pairs_in"] - prepared["pairs_kept"] == len(quarantined) > 0
    reasons = {json.loads(line)["reason"] for line in quarantined}
    assert reasons <= {"irrelevant", "conflicting", "unparseable_tcot", "judge_error"}
    kept_ids = {r["id"] for t in _manifest(prepared_small)["tasks"] if t["split"] == "train"
                for r in pq.read_table(prepared_small / t["path"], columns=["id"]).to_pylist()}
    assert not kept_ids & {json.loads(line)["id"] for line in quarantined}


def test_gold_traces_always_hold_the_evidence_and_teacher_traces_often_do(prepared_small):
    rows = [json.loads(line) for line in (prepared_small / "eval/image/T2I-Marked.jsonl").read_text().splitlines()]
    gold, teacher = [], []
    for row in rows:
        _, candidates = eval_sides(row)
        scene = candidates[0].scene
        gold.append(names_disambiguating_evidence(parse(row["tgt_tcot_gold"][0]), scene))
        teacher.append(names_disambiguating_evidence(parse(row["tgt_tcot"][0]), scene))
    assert all(gold)
    assert 0 < sum(teacher) < len(teacher)


def test_a_flash_the_clip_side_does_not_show_counts_as_naming_something_absent(prepared_small):
    rows = [json.loads(line) for line in (prepared_small / "eval/video/Moment-Flash.jsonl").read_text().splitlines()]
    segments = [side for row in rows for side in eval_sides(row)[1]]
    shown = next(s for s in segments if flash_frame(s.scene) is not None)
    unshown = next(s for s in segments if flash_frame(s.scene) is None)

    def says_flashes(obj):
        name = f"{obj['colour']} {obj['shape']}"
        return TCoT(thinking=f"The {name} flashes white in frame 1.", rethink="Frame 1 holds the flash.",
                    answer=f"the {name} flashes", key_frames=[1])

    flashing = shown.scene["objects"][shown.scene["event"]["object"]]
    other = next(o for o in shown.scene["objects"] if (o["colour"], o["shape"]) != (flashing["colour"], flashing["shape"]))
    assert not names_absent_event(says_flashes(flashing), shown.scene)
    assert names_absent_event(says_flashes(other), shown.scene)
    assert names_absent_event(says_flashes(unshown.scene["objects"][0]), unshown.scene)
    moves = TCoT(thinking="The red ring moves up.", rethink="The first and last frames show the motion.",
                 answer="the red ring moves up", key_frames=[1, 2])
    assert not names_absent_event(moves, unshown.scene)
    assert not any(names_absent_event(side_gold_tcot(s), s.scene) for s in segments)
