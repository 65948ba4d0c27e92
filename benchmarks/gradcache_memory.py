"""GradCache memory benchmark (issue 6, item 2): peak memory and seconds of one Embedder training step,
plain vs gradient caching, at several global batch sizes, on the tiny profile's Embedder.

    python benchmarks/gradcache_memory.py --out gradcache.json                 # batches 32 128 512, chunk 32
    python benchmarks/gradcache_memory.py --out gradcache.json --plain-max-batch 128  # skip plain above 128

A step is what train_embedder does in one process: embed the batch (embedrl.train.gradcache.contrastive_loss,
chunk_size 0 = plain), symmetric InfoNCE, backward, clip, AdamW. The Embedder is the tiny profile's (random
weights, float32); the pairs are synthetic: a query is an image and an instruction of about ten words, a
target an image and a caption (images of --image-size pixels, the tiny profile's 112 by default), built
lazily from their seeds as the trainer loads sides from disk.

Each measurement runs in a fresh process (`--single`): load the model, take one warm-up step of 2 pairs (grads
and optimizer state exist from then on), return freed heap to the OS (malloc_trim), reset the peak resident set
(/proc/self/clear_refs), take the measured step. `step_peak_mib` is the peak resident memory during the step
minus the resident memory before it: the step's own memory, where torch's CPU allocations show up (they go
through malloc). On a GPU, `cuda_step_peak_mib` is the same from torch's allocator. `--single --batch 512 32`
takes several steps in one process, in that order (tests/test_gradcache.py does, to start one process only).

Two allocator settings (`--malloc`): `default` is glibc as a training run has it; its heap keeps freed blocks
(it raises its mmap threshold to the largest block freed so far), which adds a few tens of MiB of slack that
grows with the number of chunk passes and then levels off. `pinned` sets MALLOC_MMAP_THRESHOLD_=131072, glibc's
own initial value, which only stops that raising: freed tensors go back to the OS and the resident peak
follows torch's live allocations (checked against torch.profiler's allocation events), at the cost of
slower steps. Step seconds are meaningful with `default`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("red blue green yellow circle square triangle star left right above below small large near far "
         "the a of in on next to find image showing").split()
DEFAULT_CHUNK = 32
TEMPERATURE = 0.05  # the tiny profile's
MALLOC_ENV = {"default": {}, "pinned": {"MALLOC_MMAP_THRESHOLD_": "131072"}}


# ------------------------------------------------------------------------------------ one measurement
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> str:
    """Return freed heap to the OS and restart the peak-RSS counter; says how the peak will be read."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS
        return "VmHWM"
    except OSError:
        return "ru_maxrss"  # cannot reset: the peak since process start (an upper bound)


def _peak_rss_kib(method: str) -> int:
    if method == "VmHWM":
        return _status_kib("VmHWM")
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _pair_items(batch: int, offset: int) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(seed, text) per side; the image is drawn from the seed when the side is embedded."""
    import numpy as np

    rng = np.random.default_rng(offset)
    queries = [(offset + 2 * i, "find the image showing " + " ".join(rng.choice(WORDS, 8))) for i in range(batch)]
    targets = [(offset + 2 * i + 1, " ".join(rng.choice(WORDS, 6))) for i in range(batch)]
    return queries, targets


def _loss(queries, targets):
    from embedrl.train.contrastive import info_nce_details

    return info_nce_details(queries, targets, temperature=TEMPERATURE)


def _encoder(embedder, inputs, image_size: int):
    import numpy as np
    from PIL import Image

    from embedrl.models.embedder import Side

    def encode(items):
        sides = []
        for seed, text in items:
            pixels = np.random.default_rng(seed).integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
            sides.append(Side(text, [Image.fromarray(pixels)], "image"))
        return embedder(inputs.collate([inputs.encode(side) for side in sides]))

    return encode


def load_embedder(model_dir: Path, image_size: int):
    """The Embedder in train mode (on the GPU if there is one) and an `encode(items)` of synthetic sides."""
    import torch

    from embedrl.models.embedder import Embedder, EmbedderInputs, ImageSizes
    from embedrl.models.factory import load_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    vlm, processor = load_model(model_dir, dtype="float32")
    vlm.train()
    inputs = EmbedderInputs(processor, sizes=ImageSizes(image=image_size))
    embedder = Embedder(vlm, inputs.emb_id)
    if torch.cuda.is_available():
        embedder.cuda()
    return embedder, _encoder(embedder, inputs, image_size)


def measure(model_dir: Path, batches: list[int], chunk: int, image_size: int) -> list[dict]:
    """A training step of each of `batches` pairs (chunk 0 = plain), in turn in this process; memory, seconds.

    Only the first step meets the heap as a fresh process has it; a later one may reuse what the earlier ones
    left (returned to the OS by malloc_trim, but mapped), so put the batch you compare against last.
    """
    import gc

    import torch

    from embedrl.train.gradcache import contrastive_loss

    embedder, encode = load_embedder(model_dir, image_size)
    params = [p for p in embedder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step(queries, targets) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = contrastive_loss(encode, queries, targets, _loss, chunk_size=chunk)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return float(loss.details.loss)

    step(*_pair_items(2, offset=10**6))  # warm-up: grads and AdamW state are allocated once
    results = []
    for batch in batches:
        gc.collect()
        results.append({**_measured_step(step, batch, chunk, torch.cuda.is_available()), "image_size": image_size})
    return results


def equivalence(model_dir: Path, batch: int, chunks: list[int], image_size: int) -> list[dict]:
    """Largest differences of the loss and of any parameter gradient, cached (each chunk) vs plain."""
    from embedrl.train.gradcache import contrastive_loss

    embedder, encode = load_embedder(model_dir, image_size)
    queries, targets = _pair_items(batch, offset=0)

    def loss_and_grads(chunk: int):
        embedder.zero_grad(set_to_none=True)
        loss = contrastive_loss(encode, queries, targets, _loss, chunk_size=chunk)
        loss.backward()
        return float(loss.details.loss), {n: p.grad.clone() for n, p in embedder.named_parameters() if p.grad is not None}

    plain_loss, plain = loss_and_grads(0)
    rows = []
    for chunk in chunks:
        loss, grads = loss_and_grads(chunk)
        rows.append({"batch": batch, "chunk": chunk, "loss": plain_loss, "loss_abs_diff": abs(loss - plain_loss),
                     "grad_max_abs_diff": max(float((grads[k] - plain[k]).abs().max()) for k in plain),
                     "grad_max_abs": max(float(g.abs().max()) for g in plain.values()),
                     "parameters_compared": len(plain), "same_parameters": grads.keys() == plain.keys()})
    return rows


def _measured_step(step, batch: int, chunk: int, cuda: bool) -> dict:
    import torch

    queries, targets = _pair_items(batch, offset=0)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    method = _reset_peak_rss()
    rss_before = _status_kib("VmRSS")
    started = time.perf_counter()
    loss = step(queries, targets)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = _peak_rss_kib(method)
    result = {"mode": "cached" if chunk else "plain", "batch": batch, "chunk": chunk, "loss": loss, "seconds": seconds,
              "rss_before_mib": rss_before / 1024, "peak_rss_mib": peak / 1024,
              "step_peak_mib": (peak - rss_before) / 1024, "peak_method": method}
    if cuda:
        result["cuda_step_peak_mib"] = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20
    return result


# ------------------------------------------------------------------------------------------ driver
def build_model(out: Path) -> Path:
    from embedrl.models.factory import init_model_dir
    from embedrl.models.spec import load_model_specs

    return init_model_dir(load_model_specs("tiny")["embedder"], out, seed=0)


def start_single(model_dir: Path, batches: list[int], chunk: int, image_size: int, malloc: str) -> subprocess.Popen:
    """`measure` in a fresh process (so that another measurement's heap does not hide this one's)."""
    import os

    command = [sys.executable, __file__, "--single", "--model", str(model_dir), "--batch", *map(str, batches),
               "--chunk", str(chunk), "--image-size", str(image_size)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", **MALLOC_ENV[malloc]}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def results_of(proc: subprocess.Popen, malloc: str, timeout: float = 1800) -> list[dict]:
    stdout, stderr = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(proc.args)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return [{**row, "malloc": malloc} for row in json.loads(stdout.strip().splitlines()[-1])]


def machine() -> dict:
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine() or "cpu",
            "platform": platform.platform(), "threads": 1,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "cuda": torch.version.cuda}}


def ratios(results: list[dict], key: str) -> dict:
    """Per allocator setting and mode, `key` at each batch over `key` at the smallest batch measured."""
    out: dict[str, dict[str, float]] = {}
    for malloc in MALLOC_ENV:
        for mode in ("plain", "cached"):
            rows = sorted((r for r in results if (r["malloc"], r["mode"]) == (malloc, mode)), key=lambda r: r["batch"])
            if rows and rows[0].get(key):
                out[f"{malloc}/{mode}"] = {str(r["batch"]): r[key] / rows[0][key] for r in rows}
    return out


def _cached_over_plain(results: list[dict], key: str) -> dict:
    return {f"{c['malloc']}/{c['batch']}": c[key] / p[key] for c in results for p in results
            if (c["mode"], p["mode"]) == ("cached", "plain") and (c["malloc"], c["batch"]) == (p["malloc"], p["batch"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="JSON report path")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 512], help="global batch sizes (pairs)")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="GradCache chunk (sides per forward pass)")
    parser.add_argument("--image-size", type=int, default=112, help="image side in pixels (multiple of 28)")
    parser.add_argument("--plain-max-batch", type=int, default=512, help="skip the plain step above this batch")
    parser.add_argument("--model", help="an Embedder directory to reuse (default: build the tiny one)")
    parser.add_argument("--check-batch", type=int, default=64, help="pairs of the loss/gradient comparison")
    parser.add_argument("--check-chunks", type=int, nargs="+", default=[24, 32],
                        help="chunk sizes compared with the plain step (24 does not divide 64)")
    parser.add_argument("--malloc", choices=["default", "pinned", "both"], default="both",
                        help="glibc allocator setting of the measuring processes (module docstring)")
    parser.add_argument("--single", action="store_true", help="internal: measure the --batch steps in this process, print JSON")
    parser.add_argument("--batch", type=int, nargs="+", help="with --single: pairs in the step (several: in turn)")
    args = parser.parse_args(argv)

    if args.single:
        if not (args.model and args.batch):
            parser.error("--single needs --model and --batch")
        print(json.dumps(measure(Path(args.model), args.batch, args.chunk, args.image_size)))
        return 0
    if not args.out:
        parser.error("--out is required")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gradcache-bench-") as tmp:
        model_dir = Path(args.model) if args.model else build_model(Path(tmp) / "embedder")
        results, skipped = [], []
        for malloc in ("default", "pinned") if args.malloc == "both" else (args.malloc,):
            for batch in args.batches:
                for chunk in (0, args.chunk):
                    if chunk == 0 and batch > args.plain_max_batch:
                        skipped.append({"malloc": malloc, "mode": "plain", "batch": batch,
                                        "reason": f"above --plain-max-batch {args.plain_max_batch}"})
                        continue
                    proc = start_single(model_dir, [batch], chunk, args.image_size, malloc)
                    results += results_of(proc, malloc)  # one at a time: the step seconds are compared
                    print(json.dumps(results[-1]), flush=True)
        checks = equivalence(model_dir, args.check_batch, args.check_chunks, args.image_size)
        print(json.dumps(checks), flush=True)
    report = {"command": " ".join([sys.executable, *sys.argv]), **machine(), "profile": "tiny",
              "chunk": args.chunk, "image_size": args.image_size, "results": results, "skipped": skipped,
              "ratios_step_peak_vs_smallest_batch": ratios(results, "step_peak_mib"),
              "ratios_cuda_step_peak_vs_smallest_batch": ratios(results, "cuda_step_peak_mib"),
              "ratios_seconds_vs_smallest_batch": ratios(results, "seconds"),
              "cached_over_plain_step_peak": _cached_over_plain(results, "step_peak_mib"),
              "cached_over_plain_seconds": _cached_over_plain(results, "seconds"),
              "cached_vs_plain_loss_and_gradients": checks, "seconds": time.perf_counter() - started}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
