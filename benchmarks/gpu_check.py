"""GPU check (issue 6, item 6): one Embedder training run of a few steps and a GRPO (EG-RL) run of a few
steps at the Qwen3-VL-2B architecture (random weights, bf16), through embedrl's own stage code on a small
MiniMMEB. Prints and writes JSON: the card, versions, seconds per step, tokens/s and model FLOPs
utilisation (MFU).

    python benchmarks/gpu_check.py --out DIR            # the 2B architecture, on a CUDA GPU
    python benchmarks/gpu_check.py --out DIR --size tiny  # the same code path on CPU in about a minute

The models are built from config with random weights: the Qwen3-VL-2B text and vision shapes (hidden
2048, 28 layers, 16 heads / 8 KV heads, MLP 6144; vision depth 24, width 1024, patch 16, deepstack at
5/11/17), but the vocabulary is the project's own BPE trained on MiniMMEB's corpus (a few thousand
tokens instead of 151,936), so the embedding and LM head are smaller than the real checkpoint's.
MFU = 6 * N * tokens/s / peak, N = the model's parameters (LoRA with gradient checkpointing: forward,
recomputed forward and backward, about 6 N FLOPs per token); peak = 989 TFLOP/s dense bf16 for H100/H200.
Vision-tower work on image patches is not counted, so MFU is an under-estimate.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import yaml

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
QWEN3_VL_2B = {"hidden_size": 2048, "num_layers": 28, "num_heads": 16, "num_kv_heads": 8, "intermediate_size": 6144,
               "vision_depth": 24, "vision_hidden_size": 1024, "vision_heads": 16, "vision_intermediate_size": 4096,
               "deepstack_layers": [5, 11, 17], "patch_size": 16, "temporal_patch_size": 2, "spatial_merge_size": 2,
               "image_min_pixels": 3136, "image_max_pixels": 200704, "dtype": "bfloat16"}


def profile(size: str, gpu: bool) -> dict:
    """The profile of the check: tiny's models and stage settings, or the 2B shapes with GPU settings."""
    from embedrl.config import profile_path

    base = yaml.safe_load(profile_path("tiny").read_text())
    if size == "2b":
        for role in ("embedder", "reasoner"):
            base["models"][role].update(QWEN3_VL_2B)
        base["models"]["embedder"].update(lora_r=64, lora_alpha=128)
    base["embedder"].update(max_steps=4, global_batch_size=64 if size == "2b" else 8, bf16=gpu,
                            gradient_checkpointing=gpu, num_threads=0, save_every=0, log_every=1)
    base["egrl"].update(max_steps=3, num_generations=8, pairs_per_step=4, max_completion_length=128,
                        use_cpu=not gpu, bf16=gpu, gradient_checkpointing=gpu, logging_steps=1, num_threads=0,
                        save_strategy="no", temperature=1.0)
    return base


def build(out: Path, size: str, gpu: bool) -> tuple[Path, Path, Path, Path]:
    from embedrl.data.minimmeb.generate import generate
    from embedrl.data.prepare import prepare
    from embedrl.models.factory import init_model_dir
    from embedrl.models.spec import load_model_specs

    profile_file = out / "profile.yaml"
    profile_file.write_text(yaml.safe_dump(profile(size, gpu), sort_keys=False))
    generate(out / "minimmeb", seed=0, size="default" if size == "2b" else "small", progress=False)
    prepare(out / "minimmeb", out / "prepared", splits=("train", "rl"))
    specs = load_model_specs(profile_file)
    models = {role: init_model_dir(specs[role], out / "init" / role, seed=i)
              for i, role in enumerate(("embedder", "reasoner"))}
    return profile_file, out / "prepared", models["embedder"], models["reasoner"]


def parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not iterable
                count = 1
                for dim in handle.get_slice(key).get_shape():
                    count *= dim
                total += count
    return total


def mfu(n_params: int, tokens_per_second: float, device_name: str) -> float | None:
    peak = next((v for k, v in PEAK_BF16.items() if k in device_name), None)
    return 6 * n_params * tokens_per_second / peak if peak else None


def embedder_check(profile_file: Path, prepared: Path, init: Path, out: Path, device_name: str) -> dict:
    from embedrl.config import EmbedderTrainConfig, build_config
    from embedrl.models.spec import load_model_specs
    from embedrl.train.embedder import train_embedder

    config = build_config(EmbedderTrainConfig, profile_file, "embedder")
    spec = load_model_specs(profile_file)["embedder"]
    result = train_embedder(prepared, init, out, config, lora=spec.to_dict() if spec.lora_r > 0 else None,
                            progress=False)
    steps = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    timed = steps[1:] or steps  # the first step pays for kernel selection and allocation
    seconds = sum(s["seconds"] for s in timed) / len(timed)
    tokens = sum(s["tokens"] for s in timed) / len(timed)  # batches differ in length: means, not medians
    n = parameters(init)
    return {"steps": result.steps, "global_batch_pairs": config.global_batch_size, "parameters": n,
            "per_step": [{k: s[k] for k in ("subset", "seconds", "tokens")} for s in steps],
            "seconds_per_step": seconds, "tokens_per_step": tokens, "tokens_per_second": tokens / seconds,
            "pairs_per_second": config.global_batch_size / seconds,
            "mfu": mfu(n, tokens / seconds, device_name), "loss_first_last": [steps[0]["loss"], steps[-1]["loss"]]}


def grpo_check(profile_file: Path, prepared: Path, reasoner: Path, embedder: Path, out: Path, device_name: str) -> dict:
    from embedrl.config import build_config
    from embedrl.train.egrl import EGRLStageConfig, train_egrl

    config = build_config(EGRLStageConfig, profile_file, "egrl", output_dir=str(out))
    result = train_egrl(prepared, reasoner, embedder, out, config)
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "step_time" in r]
    timed = steps[1:] or steps
    step_time = statistics.mean(float(r["step_time"]) for r in timed)
    reward_time = statistics.mean(h["reward_seconds"] for h in result.history[1:] or result.history)
    cumulative = [float(r["num_tokens"]) for r in steps]
    per_step = [b - a for a, b in zip(cumulative, cumulative[1:], strict=False)] or cumulative[:1]
    tokens = statistics.mean(per_step)
    n = parameters(reasoner)
    return {"steps": len(steps), "completions_per_step": config.per_device_train_batch_size,
            "max_completion_length": config.max_completion_length, "parameters": n,
            "seconds_per_step": step_time, "reward_seconds_per_step": reward_time,
            "generation_and_update_seconds_per_step": step_time - reward_time,
            "tokens_per_step": tokens, "tokens_per_second": tokens / step_time,
            "mfu_update_only_lower_bound": mfu(n, tokens / step_time, device_name)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="work directory (models, data, results.json)")
    parser.add_argument("--size", default="2b", choices=["2b", "tiny"], help="model shapes")
    args = parser.parse_args(argv)

    import torch
    import transformers
    import trl

    gpu = torch.cuda.is_available()
    if args.size == "2b" and not gpu:
        parser.error("--size 2b needs a CUDA GPU; use --size tiny on CPU")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device_name = torch.cuda.get_device_name() if gpu else platform.processor() or "cpu"
    report = {"command": " ".join([sys.executable, *sys.argv]), "device": device_name, "size": args.size,
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "trl": trl.__version__,
                           "cuda": torch.version.cuda}}
    started = time.perf_counter()
    profile_file, prepared, embedder, reasoner = build(out, args.size, gpu)
    report["build_seconds"] = time.perf_counter() - started
    report["embedder_training"] = embedder_check(profile_file, prepared, embedder, out / "embedder", device_name)
    if gpu:
        report["embedder_training"]["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    report["grpo"] = grpo_check(profile_file, prepared, reasoner, out / "embedder" / "model", out / "egrl", device_name)
    if gpu:
        report["grpo"]["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    report["seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
