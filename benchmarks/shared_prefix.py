"""Shared-prefix reward embedding (issue 6, item 3): EG-RL's reward embedding of one step, plain vs shared.

    python benchmarks/shared_prefix.py --out results.json                 # tiny model, both shapes
    python benchmarks/shared_prefix.py --out r.json --groups 8 --threads 1

One step embeds B pairs x 2 sides x G rollouts with the frozen Embedder (the tiny profile's model, random
weights). "plain" encodes and embeds every rollout whole (`embed_plain`, EG-RL's path before); "shared"
runs each side's media and text once and only the rollouts' suffixes after it (`embed_sides`). Both
include the encoding (image processor, token ids), as EG-RL pays it; both run in this process, in turn.
Shapes:
- tiny: the tiny profile's inputs: 112 px images (16 visual tokens), a short text, traces of about 70-110
  tokens with 0-2 evidence crops of 56 px;
- long_prefix: the paper's proportions, where the media prefix dominates: a 448 px image (256 visual
  tokens) and a long query text, the same traces.
Reported: seconds per step (median of --repeats), plain / shared, and the largest difference between the
two paths' vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

WORDS = ("red blue green yellow cat dog car tree sky house small large left right top bottom near far "
         "round square bright dark striped spotted").split()
SHAPES = {  # image side in px, query text words
    "tiny": {"image": 112, "text_words": (4, 20)},
    "long_prefix": {"image": 448, "text_words": (120, 180)},
}


def build_embedder(image_px: int):
    from dataclasses import replace

    from embedrl.config import profile_path
    from embedrl.models.embedder import Embedder, EmbedderInputs, ImageSizes, inference_device
    from embedrl.models.factory import build_tiny
    from embedrl.models.spec import load_model_specs

    spec = load_model_specs(profile_path("tiny"))["embedder"]
    # The tiny profile caps images at 224 x 224 pixels; the long-prefix shape needs 448 x 448.
    spec = replace(spec, image_max_pixels=max(spec.image_max_pixels or 0, image_px * image_px))
    model, processor = build_tiny(spec, seed=0)
    inputs = EmbedderInputs(processor, sizes=ImageSizes(image=image_px))
    return Embedder(model, inputs.emb_id).eval().to(inference_device()), inputs


def step_sides(rng: np.random.Generator, shape: dict, pairs: int, g: int) -> list:
    """One EG-RL step: `pairs` queries and targets (image + text), G rollouts each, in the trainer's order."""
    from PIL import Image

    from embedrl.models.embedder import Side
    from embedrl.tcot import TCoT

    def words(n) -> str:
        return " ".join(rng.choice(WORDS, int(n)))

    sides = []
    for _ in range(2 * pairs):
        size = shape["image"]
        image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        text = words(rng.integers(*shape["text_words"]))
        for _ in range(g):
            trace = TCoT(thinking=words(rng.integers(8, 20)), rethink=words(rng.integers(4, 10)),
                         answer=words(rng.integers(2, 5)), bbox_2d=[(100, 100, 600, 700)])
            crops = [Image.fromarray(rng.integers(0, 256, (int(rng.integers(40, 200)), int(rng.integers(40, 200)), 3),
                                                  dtype=np.uint8)) for _ in range(rng.integers(0, 3))]
            sides.append(Side(text, [image], "image", trace, crops, "crop"))
    return sides


def measure(embedder, inputs, sides: list, g: int, repeats: int) -> dict:
    import torch

    from embedrl.models.prefix_cache import embed_plain, embed_sides

    def timed(fn) -> tuple[float, np.ndarray]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        vectors = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - started, vectors

    def plain():
        return embed_plain(embedder, inputs, sides)

    def shared():
        return embed_sides(embedder, inputs, sides)

    plain(), shared()  # warm-up: allocation, kernel selection
    plain_s, shared_s = [], []
    for _ in range(repeats):
        seconds, a = timed(plain)
        plain_s.append(seconds)
        seconds, b = timed(shared)
        shared_s.append(seconds)
    prefix = [len(inputs.encode_prefix(s).input_ids) for s in sides[::g]]
    suffix = [len(inputs.encode_suffix(s).input_ids) for s in sides]
    return {"rollouts": len(sides), "prefix_tokens_mean": statistics.mean(prefix),
            "suffix_tokens_mean": statistics.mean(suffix), "suffix_tokens_range": [min(suffix), max(suffix)],
            "plain_seconds": statistics.median(plain_s), "shared_seconds": statistics.median(shared_s),
            "plain_seconds_all": plain_s, "shared_seconds_all": shared_s,
            "speedup": statistics.median(plain_s) / statistics.median(shared_s),
            "max_abs_diff": float(np.abs(a - b).max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--groups", type=int, nargs="+", default=[4, 8, 16], help="G: rollouts per side")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--pairs", type=int, default=4, help="B: pairs per step (tiny profile: 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args(argv)

    import torch
    import transformers

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    gpu = torch.cuda.is_available()
    report = {"command": " ".join([sys.executable, *sys.argv]),
              "device": torch.cuda.get_device_name() if gpu else platform.processor() or "cpu",
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
              "torch_threads": torch.get_num_threads(), "model": "tiny profile Embedder (random weights, float32)",
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "cuda": torch.version.cuda},
              "pairs": args.pairs, "results": []}
    for name in args.shapes:
        shape = SHAPES[name]
        embedder, inputs = build_embedder(shape["image"])
        for g in args.groups:
            sides = step_sides(np.random.default_rng(g), shape, args.pairs, g)
            row = {"shape": name, "image_px": shape["image"], "g": g, **measure(embedder, inputs, sides, g, args.repeats)}
            report["results"].append(row)
            print(f"{name:12s} G={g:3d} rollouts={row['rollouts']:4d} prefix={row['prefix_tokens_mean']:.0f} "
                  f"suffix={row['suffix_tokens_mean']:.0f} plain={row['plain_seconds']:.3f}s "
                  f"shared={row['shared_seconds']:.3f}s x{row['speedup']:.2f} diff={row['max_abs_diff']:.1e}",
                  flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
