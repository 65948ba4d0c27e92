"""Typed stage configs with the paper's defaults, and profiles of overrides.

Precedence: dataclass defaults (the paper) < profile YAML section < explicit overrides (CLI flags,
pipeline parameters). A profile is `src/embedrl/profiles/<name>.yaml` or a path to a YAML file; its
sections are `models`, `embedder`, `sft`, `egrl`, `eval`, `ablation`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _help(text: str, default: Any = dataclasses.MISSING, **kwargs) -> Any:
    if callable(default):  # a factory (dict, list, lambda) for mutable defaults
        return field(default_factory=default, metadata={"help": text}, **kwargs)
    return field(default=default, metadata={"help": text}, **kwargs)


@dataclass
class EmbedderTrainConfig:
    """Embedder contrastive training (method.md, stage 3)."""

    temperature: float = _help("InfoNCE temperature tau (paper 0.02, logit scale 50)", 0.02)
    learning_rate: float = _help("peak learning rate, cosine schedule", 1e-4)
    warmup_steps: int = _help("linear warm-up steps", 10)
    weight_decay: float = _help("AdamW weight decay", 0.01)
    epochs: float = _help("passes over the training pairs (ignored when max_steps > 0)", 2.0)
    max_steps: int = _help("optimizer steps; > 0 overrides epochs", 0)
    global_batch_size: int = _help("pairs per step over all ranks (paper: 512 for 2B, 256 for 4B)", 512)
    evidence_mix: dict[str, float] = _help(
        "share of pairs seen with each trace: raw (no T-CoT), teacher, blind (present but wrong evidence), "
        "gold; the Embedder learns to weigh evidence against the pixels",
        lambda: {"raw": 0.3, "teacher": 0.3, "blind": 0.2, "gold": 0.2},
    )
    variant_per: str = _help(
        "draw the trace variant once per step for the whole batch (`batch`) or per pair (`pair`). Per batch, "
        "raw steps have only raw negatives, so the pixels must separate them (per pair, raw sides of a tiny "
        "Embedder collapse to one point and it matches through the trace text alone)", "batch")
    dataset_weights: dict[str, float] = _help(
        "per-subset sampling weight (x size); missing = the mix's weight, else 1", dict)
    data_mix: str = _help(
        "training mix: a packaged mix (paper, vlm2vec-v2) or a YAML path, naming the sets with their weights "
        "and caps (embedrl.data.mmeb_train); '' = every train task of the manifest, weighted by dataset_weights",
        "")
    gradient_checkpointing: bool = _help("recompute activations in the backward pass (GPU memory)", True)
    grad_cache_chunk_size: int = _help(
        "gradient caching (GradCache): embed each rank's queries and targets in chunks of this many sides, "
        "so a step's memory follows the chunk, not the batch (one extra gradient-free forward pass); "
        "0 = off, one forward pass per side of the batch", 0)
    bf16: bool = _help("bfloat16 autocast (GPU)", True)
    image_size: int = _help(
        "px of a whole image or page, squared. Sizes are best multiples of the processor's patch x merge (28 for "
        "the tiny models' patch 14, 32 for the released Qwen3-VL's patch 16); the four are saved with the "
        "trained Embedder, and EG-RL and evaluation reuse them", 112)
    frame_size: int = _help("px of each frame of a clip, squared", 56)
    crop_long_side: int = _help("px of an evidence crop's longer side (aspect kept, sides aligned to patch x merge)",
                                56)
    key_frame_size: int = _help("px of an evidence key frame, squared (sharper than the clip's frames)", 112)
    deepspeed: str = _help("DeepSpeed JSON config (e.g. infra/deepspeed/zero2.json); empty = plain / DDP", "")
    num_threads: int = _help("torch CPU threads (0 = leave torch's default)", 0)
    log_every: int = _help("log metrics every N steps", 10)
    save_every: int = _help("checkpoint (model, optimizer, scheduler, RNG, step) every N steps; 0 = never", 100)
    keep_checkpoints: int = _help("newest checkpoints kept under OUT/checkpoints", 2)
    seed: int = _help("random seed", 0)

    def __post_init__(self) -> None:
        _positive(self, "temperature", "learning_rate", "global_batch_size")
        for name in ("image_size", "frame_size", "crop_long_side", "key_frame_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"EmbedderTrainConfig.{name}={value!r}: must be a whole number of pixels > 0")
        if self.grad_cache_chunk_size < 0:
            raise ValueError(f"EmbedderTrainConfig.grad_cache_chunk_size={self.grad_cache_chunk_size}: must be >= 0 "
                             "(0 turns gradient caching off)")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError("EmbedderTrainConfig: set epochs > 0 or max_steps > 0")
        if self.variant_per not in ("batch", "pair"):
            raise ValueError(f"EmbedderTrainConfig.variant_per={self.variant_per!r}: expected 'batch' or 'pair'")
        if self.data_mix:
            from embedrl.data.mmeb_train import load_mix

            load_mix(self.data_mix)  # an unknown or malformed mix fails here, before any model is loaded
        unknown = set(self.evidence_mix) - {"raw", "teacher", "blind", "gold"}
        if unknown or not self.evidence_mix or min(self.evidence_mix.values()) < 0:
            raise ValueError(f"EmbedderTrainConfig.evidence_mix={self.evidence_mix}: keys raw, teacher, blind, gold; "
                             "weights >= 0")


@dataclass
class EvalConfig:
    """Evaluation settings."""

    registry: str = _help("task registry (packaged name or YAML path)", "minimmeb")
    batch_size: int = _help("sides per Embedder forward pass", 64)
    reasoner_batch_size: int = _help("sides per Reasoner generate call", 64)
    max_new_tokens: int = _help("longest T-CoT the Reasoner writes", 160)
    max_queries: int = _help("queries (pools) per task, the first N (0 = all); caps evaluation time", 0)
    cache_dir: str = _help("directory of the on-disk trace and vector cache, keyed by model fingerprints "
                           "('' = none; the pipeline uses $EMBEDRL_CHECKPOINT_ROOT/eval-cache when mounted)", "")

    def __post_init__(self) -> None:
        _positive(self, "batch_size", "reasoner_batch_size", "max_new_tokens")


def _positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{type(config).__name__}.{name}={value!r}: must be > 0")


# --------------------------------------------------------------------------------------- profiles
def profile_path(profile: str | Path) -> Path:
    from importlib import resources

    path = Path(profile)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    packaged = resources.files("embedrl") / "profiles" / f"{profile}.yaml"
    if not packaged.is_file():
        names = sorted(p.name.removesuffix(".yaml") for p in (resources.files("embedrl") / "profiles").iterdir()
                       if p.name.endswith(".yaml"))
        raise ValueError(f"unknown profile {profile!r}: use one of {names} or a path to a YAML file")
    return Path(str(packaged))


def profile_section(profile: str | Path, section: str) -> dict[str, Any]:
    data = yaml.safe_load(profile_path(profile).read_text(encoding="utf-8")) or {}
    return dict(data.get(section) or {})


def build_config(cls: type[T], profile: str | Path | None = None, section: str = "", **overrides: Any) -> T:
    """`cls` with the profile's `section` applied, then the overrides (None values are ignored)."""
    values = profile_section(profile, section) if profile else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown} (from profile {profile!s} section "
                         f"{section!r} or overrides); known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    coerced = {k: _coerce(v, hints[k], f"{cls.__name__}.{k}") for k, v in values.items()}
    return cls(**coerced)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """An int where a float is expected becomes a float; a number written as text becomes the number. YAML 1.1
    (PyYAML) reads `2e-4` without a dot as text, so `--set egrl.learning_rate=2e-4` or `learning_rate: 1e-4` in
    a profile would otherwise reach the optimizer as a string."""
    number = _number_type(hint)
    if number is None or isinstance(value, bool):
        return value
    if number is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, str):
        return value
    try:
        parsed = float(value)
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if number is float:
        return parsed
    if not parsed.is_integer():
        raise ValueError(f"{name}: expected a whole number, got {value!r}")
    return int(parsed)


def _number_type(hint: Any) -> type | None:
    """float or int where `hint` is one of them, alone or with None; otherwise None."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    return args[0] if len(args) == 1 and args[0] in (float, int) else None


def config_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def env_seconds(name: str, default: float) -> float:
    """A duration in seconds from environment variable `name` (unset or empty: `default`); >= 0 and finite."""
    import math
    import os

    text = os.environ.get(name, "")
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"${name} must be a number of seconds >= 0, got {text!r}")
    return value
