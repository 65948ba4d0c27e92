"""What model a role uses: `ModelSpec`, and the `models:` section of a profile YAML.

A spec either names a pretrained source (a hub id such as ``Qwen/Qwen3-VL-2B-Instruct`` or a local
Hugging Face directory) or says ``source: tiny``: build a small Qwen-VL from a config with random
weights and a tokenizer trained on the project's corpus (see `embedrl.models.factory`). The tiny sizes
are ignored for a pretrained source, whose own config decides them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

ROLES: tuple[str, ...] = ("embedder", "reasoner")
ARCHS: tuple[str, ...] = ("qwen3_vl", "qwen2_vl")
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
TINY = "tiny"
LLM_LINEAR_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


@dataclass
class ModelSpec:
    """One role's model: where it comes from, the tiny architecture, and the Embedder's LoRA."""

    role: str = field(
        metadata={"help": "embedder (pools the hidden state at <emb>) or reasoner (writes T-CoTs)"}
    )
    arch: str = field(default="qwen3_vl", metadata={"help": "model family: qwen3_vl (paper) or qwen2_vl"})
    source: str = field(
        default=TINY,
        metadata={"help": "'tiny' (built from config, random weights), a hub id, or a local model directory"},
    )
    # ---- tiny architecture (source == "tiny" only)
    vocab_size: int = field(
        default=1024,
        metadata={"help": "target size of the BPE tokenizer trained for a tiny model (upper bound)"},
    )
    hidden_size: int = field(default=128, metadata={"help": "text model width"})
    num_layers: int = field(default=4, metadata={"help": "text decoder layers"})
    num_heads: int = field(default=4, metadata={"help": "text attention heads"})
    num_kv_heads: int = field(default=2, metadata={"help": "text key/value heads (grouped-query attention)"})
    intermediate_size: int = field(default=256, metadata={"help": "text MLP width"})
    max_position_embeddings: int = field(
        default=4096, metadata={"help": "longest text sequence (RoPE range)"}
    )
    vision_depth: int = field(default=2, metadata={"help": "vision transformer blocks"})
    vision_hidden_size: int = field(default=64, metadata={"help": "vision transformer width"})
    vision_heads: int = field(default=4, metadata={"help": "vision attention heads"})
    vision_intermediate_size: int = field(
        default=128, metadata={"help": "vision MLP width (qwen2_vl: rounded to a multiple of the width)"}
    )
    vision_position_embeddings: int = field(
        default=576,
        metadata={"help": "qwen3_vl: learned vision position grid, a square number (576 = 24x24 patches)"},
    )
    deepstack_layers: tuple[int, ...] = field(
        default=(0,),
        metadata={"help": "qwen3_vl: vision blocks whose features DeepStack adds to the first text layers"},
    )
    patch_size: int = field(
        default=14, metadata={"help": "vision patch size in pixels (Qwen2/2.5-VL 14, Qwen3-VL 16)"}
    )
    temporal_patch_size: int = field(
        default=2, metadata={"help": "frames per vision patch (an image is repeated)"}
    )
    spatial_merge_size: int = field(
        default=2, metadata={"help": "patches merged per side into one visual token"}
    )
    out_hidden_size: int | None = field(
        default=None,
        metadata={"help": "width of the visual tokens given to the text model; None = hidden_size"},
    )
    tie_word_embeddings: bool = field(
        default=True, metadata={"help": "share input embeddings and LM head (as Qwen3-VL-2B)"}
    )
    # ---- any source
    image_min_pixels: int | None = field(
        default=None,
        metadata={"help": "fewest pixels an image is resized to; None = the source's (tiny: 56*56)"},
    )
    image_max_pixels: int | None = field(
        default=None,
        metadata={"help": "most pixels an image is resized to; None = the source's (tiny: 224*224)"},
    )
    dtype: str = field(default="float32", metadata={"help": "weights dtype: float32, bfloat16 or float16"})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "allow code from the model directory/hub (off: Qwen-VL is in transformers)"},
    )
    # ---- LoRA (paper: Embedder r64/a128 for 2B, r96/a192 for 4B; the Reasoner is fully fine-tuned)
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 = no LoRA (full fine-tuning)"})
    lora_alpha: int = field(default=0, metadata={"help": "LoRA alpha (scale alpha/r); paper: 2 x r"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: tuple[str, ...] = field(
        default=LLM_LINEAR_MODULES,
        metadata={"help": "module names LoRA wraps (default: every linear of the LLM)"},
    )

    def __post_init__(self) -> None:
        _check_types(self)
        _check_choice(self, "role", ROLES)
        _check_choice(self, "arch", ARCHS)
        _check_choice(self, "dtype", DTYPES)
        if not self.source.strip():
            _fail(self, "source", "must be 'tiny', a hub id (owner/name) or a local directory")
        for name in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "intermediate_size",
            "max_position_embeddings",
            "vision_depth",
            "vision_hidden_size",
            "vision_heads",
            "vision_intermediate_size",
            "vision_position_embeddings",
            "patch_size",
            "temporal_patch_size",
            "spatial_merge_size",
        ):
            if getattr(self, name) < 1:
                _fail(self, name, "must be a positive integer")
        if self.vocab_size < 512:
            _fail(self, "vocab_size", "must be at least 512 (256 byte symbols + special tokens + merges)")
        if self.hidden_size % self.num_heads:
            _fail(self, "num_heads", f"must divide hidden_size={self.hidden_size}")
        if (self.hidden_size // self.num_heads) % 2:
            _fail(self, "num_heads", "hidden_size / num_heads (the head size) must be even for RoPE")
        if self.num_heads % self.num_kv_heads:
            _fail(self, "num_kv_heads", f"must divide num_heads={self.num_heads}")
        if self.vision_hidden_size % self.vision_heads or (self.vision_hidden_size // self.vision_heads) % 4:
            _fail(
                self,
                "vision_heads",
                f"vision_hidden_size={self.vision_hidden_size} / vision_heads must be a multiple of 4",
            )
        if math.isqrt(self.vision_position_embeddings) ** 2 != self.vision_position_embeddings:
            _fail(self, "vision_position_embeddings", "must be a square number (a grid of n x n patches)")
        if self.out_hidden_size is not None and self.out_hidden_size != self.hidden_size:
            _fail(
                self,
                "out_hidden_size",
                f"must equal hidden_size={self.hidden_size} (visual tokens enter the text model)",
            )
        for index in self.deepstack_layers:
            if not 0 <= index < self.vision_depth:
                _fail(
                    self,
                    "deepstack_layers",
                    f"index {index} is not a vision block (0..{self.vision_depth - 1})",
                )
        if len(self.deepstack_layers) > self.num_layers:
            _fail(self, "deepstack_layers", f"more entries than text layers ({self.num_layers})")
        for name in ("image_min_pixels", "image_max_pixels"):
            value = getattr(self, name)
            if value is not None and value < (self.patch_size * self.spatial_merge_size) ** 2:
                _fail(
                    self,
                    name,
                    f"must be at least one visual token, (patch_size*spatial_merge_size)^2 = "
                    f"{(self.patch_size * self.spatial_merge_size) ** 2}",
                )
        if (self.image_min_pixels or 0) > (self.image_max_pixels or math.inf):
            _fail(self, "image_min_pixels", f"must not exceed image_max_pixels={self.image_max_pixels}")
        if self.lora_r < 0:
            _fail(self, "lora_r", "must be >= 0 (0 = no LoRA)")
        if self.lora_r and self.lora_alpha <= 0:
            _fail(self, "lora_alpha", f"must be > 0 when lora_r={self.lora_r} (paper: 2 x r)")
        if not 0.0 <= self.lora_dropout < 1.0:
            _fail(self, "lora_dropout", "must be in [0, 1)")
        if self.lora_r and not self.lora_target_modules:
            _fail(self, "lora_target_modules", "must name at least one module when lora_r > 0")

    @property
    def is_tiny(self) -> bool:
        return self.source == TINY

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "model spec") -> ModelSpec:
        """Build from a mapping; unknown keys raise, listing the allowed ones."""
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed keys: {', '.join(allowed)}")
        return cls(**data)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> one-line help."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def load_model_specs(profile: str | Path) -> dict[str, ModelSpec]:
    """The `models:` section of a profile: a packaged profile name (tiny, paper-2b) or a YAML path.

    Returns ``{"embedder": ModelSpec, "reasoner": ModelSpec}`` (the roles present in the file). The
    role of each spec is its key; a `role:` entry, if present, must agree.
    """
    import yaml

    text, where = _read_profile(profile)
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ValueError(f"{where}: needs a `models:` mapping with keys {', '.join(ROLES)}")
    unknown = sorted(set(data["models"]) - set(ROLES))
    if unknown:
        raise ValueError(f"{where}: models: unknown role(s) {unknown}; allowed keys: {', '.join(ROLES)}")
    specs: dict[str, ModelSpec] = {}
    for role, entry in data["models"].items():
        entry = dict(entry or {})
        if entry.setdefault("role", role) != role:
            raise ValueError(f"{where}: models.{role}.role={entry['role']!r} contradicts its key {role!r}")
        try:
            specs[role] = ModelSpec.from_dict(entry, where=f"{where}: models.{role}")
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: models.{role}: {err}") from err
    return specs


def profile_names() -> list[str]:
    """Names of the profiles shipped with the package."""
    root = resources.files("embedrl") / "profiles"
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_profile(profile: str | Path) -> tuple[str, str]:
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"profile file {str(path)!r} does not exist")
        return path.read_text(encoding="utf-8"), str(path)
    packaged = resources.files("embedrl") / "profiles" / f"{profile}.yaml"
    if not packaged.is_file():
        raise ValueError(
            f"unknown profile {str(profile)!r}: use one of {', '.join(profile_names())} or a path to a YAML file"
        )
    return packaged.read_text(encoding="utf-8"), f"profile {profile!r}"


# ------------------------------------------------------------------------------------ validation
def _fail(spec: ModelSpec, name: str, why: str) -> typing.NoReturn:
    raise ValueError(f"ModelSpec({spec.role!r}).{name}={getattr(spec, name)!r}: {why}")


def _check_choice(spec: ModelSpec, name: str, choices: tuple[str, ...]) -> None:
    if getattr(spec, name) not in choices:
        _fail(spec, name, f"must be one of {', '.join(choices)}")


def _check_types(spec: ModelSpec) -> None:
    """Check each field against its annotation; YAML lists become tuples, ints are accepted as floats."""
    hints = typing.get_type_hints(type(spec))
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        expected = hints[f.name]
        if isinstance(value, list):
            value = tuple(value)
            setattr(spec, f.name, value)
        if not _matches(value, expected):
            raise TypeError(
                f"ModelSpec.{f.name}={value!r}: expected {_type_name(expected)}, got {type(value).__name__}"
            )


def _matches(value: Any, expected: Any) -> bool:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(expected))
    if origin is tuple:
        item = typing.get_args(expected)[0]
        return isinstance(value, tuple) and all(_matches(v, item) for v in value)
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(expected: Any) -> str:
    return str(expected).replace("typing.", "") if typing.get_origin(expected) else expected.__name__
