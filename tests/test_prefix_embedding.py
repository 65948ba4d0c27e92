"""Shared-prefix reward embedding (embedrl.models.prefix_cache): the same vectors as the whole sequences."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from embedrl.models import prefix_cache
from embedrl.models.embedder import Embedder, EmbedderInputs, Side
from embedrl.models.prefix_cache import embed_sides, group_by_prefix
from embedrl.tcot import TCoT

TOLERANCE = 1e-4
WORDS = "red blue green cat dog car tree sky house small large left right top bottom near far".split()


@pytest.fixture(scope="module", params=["qwen3_vl", "qwen2_vl"])
def tiny_embedder(request) -> tuple[Embedder, EmbedderInputs]:
    from embedrl.models.factory import build_tiny
    from embedrl.models.spec import ModelSpec

    model, processor = build_tiny(ModelSpec(role="embedder", arch=request.param), seed=0)
    inputs = EmbedderInputs(processor)
    return Embedder(model, inputs.emb_id).eval(), inputs


def _image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, int(n)))


def _trace(rng: np.random.Generator) -> TCoT:
    return TCoT(thinking=_words(rng, rng.integers(4, 30)), rethink=_words(rng, rng.integers(2, 20)),
                answer=_words(rng, 4), bbox_2d=[(100, 120, 600, 700)])


def _rollouts(rng: np.random.Generator, kind: str, n_media: int, text_words: int, g: int) -> list[Side]:
    """G rollouts of one input: one media and text, traces of different lengths, 0-2 evidence images each,
    the last one without a trace when G > 1 (an unparsed completion, embedded raw)."""
    media = [_image(rng, 112, 112) for _ in range(n_media)]
    text = _words(rng, text_words)
    sides = []
    for r in range(g):
        untraced = g > 1 and r == g - 1
        evidence = [] if kind == "text" or untraced else [
            _image(rng, int(rng.integers(20, 120)), int(rng.integers(20, 120))) for _ in range(rng.integers(0, 3))]
        sides.append(Side(text, media, kind, None if untraced else _trace(rng), evidence,
                          "frame" if kind == "video" else "crop"))
    return sides


def _batch(g: int, seed: int = 0) -> list[Side]:
    """Several inputs with different prefix lengths: images with short and long text, text only, a video."""
    rng = np.random.default_rng(seed)
    shapes = [("image", 1, 3), ("text", 0, 30), ("video", 3, 6), ("image", 1, 45)]
    return [side for kind, n_media, words in shapes for side in _rollouts(rng, kind, n_media, words, g)]


def _whole(embedder: Embedder, inputs: EmbedderInputs, sides: list[Side]) -> np.ndarray:
    """The reference: `Embedder.forward` on one left-padded batch of the whole sequences."""
    with torch.no_grad():
        return embedder(inputs.collate([inputs.encode(s) for s in sides])).numpy()


@pytest.fixture
def suffix_passes(monkeypatch) -> list[int]:
    """Counts the shared path's batched suffix passes (and the rollouts in each)."""
    calls: list[int] = []
    real = prefix_cache.embed_suffixes

    def counted(backbone, inputs, prefixes, suffixes, owner):
        calls.append(len(suffixes))
        return real(backbone, inputs, prefixes, suffixes, owner)

    monkeypatch.setattr(prefix_cache, "embed_suffixes", counted)
    return calls


def test_prefix_and_suffix_join_to_the_whole_encoding(tiny_embedder):
    _, inputs = tiny_embedder
    for side in _batch(2):
        whole, head, tail = inputs.encode(side), inputs.encode_prefix(side), inputs.encode_suffix(side)
        assert head.input_ids + tail.input_ids == whole.input_ids
        parts = [p for p in (head.pixel_values, tail.pixel_values) if p is not None]
        assert (whole.pixel_values is None) == (not parts)
        if parts:
            assert torch.equal(torch.cat(parts), whole.pixel_values)
        assert tail.input_ids[-1] == inputs.emb_id


@pytest.mark.parametrize("g", [1, 8])
def test_shared_prefix_gives_the_whole_sequence_vectors(tiny_embedder, suffix_passes, g):
    embedder, inputs = tiny_embedder
    sides = _batch(g)
    reference = _whole(embedder, inputs, sides)
    shared = embed_sides(embedder, inputs, sides)
    assert shared.shape == reference.shape
    assert np.abs(shared - reference).max() < TOLERANCE
    assert suffix_passes == ([len(sides)] if g > 1 else [])  # G = 1: nothing shared, the plain path


def test_rollouts_of_one_input_really_differ(tiny_embedder):
    """Guards the test above: the suffix changes the vector well beyond the tolerance."""
    embedder, inputs = tiny_embedder
    vectors = _whole(embedder, inputs, _batch(8)).reshape(4, 8, -1)
    assert (np.abs(vectors[:, :, None] - vectors[:, None]).max(axis=(1, 2, 3)) > 100 * TOLERANCE).all()


def test_chunks_split_groups_and_mixed_group_sizes(tiny_embedder, suffix_passes):
    """Groups of 8, 3 and 1 with 5 rollouts per pass: groups cut across passes, the single side plain."""
    embedder, inputs = tiny_embedder
    rng = np.random.default_rng(1)
    sides = (_rollouts(rng, "image", 1, 12, 8) + _rollouts(rng, "text", 0, 40, 3)
             + _rollouts(rng, "image", 1, 2, 1))
    order = rng.permutation(len(sides))  # rollouts of one input need not be adjacent
    sides = [sides[i] for i in order]
    shared = embed_sides(embedder, inputs, sides, batch_size=5)
    assert np.abs(shared - _whole(embedder, inputs, sides)).max() < TOLERANCE
    assert suffix_passes == [5, 5, 1]


def test_plain_flag_and_stand_in_embedders_take_the_whole_sequence_path(tiny_embedder, suffix_passes):
    embedder, inputs = tiny_embedder
    sides = _batch(2)
    plain = embed_sides(embedder, inputs, sides, shared_prefix=False)
    assert suffix_passes == []
    assert np.abs(plain - _whole(embedder, inputs, sides)).max() < TOLERANCE

    def stand_in(batch):
        return torch.nn.functional.normalize(batch["attention_mask"].float(), dim=-1)

    assert embed_sides(stand_in, inputs, sides).shape[0] == len(sides)
    assert suffix_passes == []


def test_group_by_prefix_compares_pixels_not_objects():
    rng = np.random.default_rng(2)
    image = _image(rng, 64, 64)
    copy = image.copy()
    other = _image(rng, 64, 64)
    sides = [Side("a", [image], "image"), Side("a", [copy], "image"), Side("a", [other], "image"),
             Side("b", [image], "image"), Side("a", [image], "video"), Side("a")]
    assert group_by_prefix(sides) == [[0, 1], [2], [3], [4], [5]]


def test_embed_sides_refuses_an_empty_batch(tiny_embedder):
    embedder, inputs = tiny_embedder
    with pytest.raises(ValueError, match="no sides"):
        embed_sides(embedder, inputs, [])


def test_collate_pads_on_the_requested_side(tiny_embedder):
    _, inputs = tiny_embedder
    encoded = [inputs.encode(Side("a")), inputs.encode(Side("a much longer text than the first one"))]
    left, right = inputs.collate(encoded), inputs.collate(encoded, padding_side="right")
    assert (left["input_ids"][:, -1] == inputs.emb_id).all()
    assert right["attention_mask"][0, 0] == 1 and right["attention_mask"][0, -1] == 0
    assert right["input_ids"][0, len(encoded[0].input_ids) - 1] == inputs.emb_id
    with pytest.raises(ValueError, match="padding_side"):
        inputs.collate(encoded, padding_side="middle")


def test_benchmark_script_reports_both_paths(tmp_path):
    import importlib.util

    from conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location("shared_prefix_bench", REPO_ROOT / "benchmarks" / "shared_prefix.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "shared_prefix.json"
    assert bench.main(["--out", str(out), "--groups", "2", "--shapes", "tiny", "--pairs", "1", "--repeats", "1"]) == 0
    report = json.loads(out.read_text())
    assert report["versions"]["transformers"] and report["command"]
    (row,) = report["results"]
    assert row["g"] == 2 and row["rollouts"] == 4 and row["plain_seconds"] > 0 and row["shared_seconds"] > 0
    assert row["max_abs_diff"] < TOLERANCE
