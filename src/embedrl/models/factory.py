"""Build, save and load the Embedder's and the Reasoner's Qwen-VL models.

- `build_tiny(spec, seed)`: a small Qwen-VL from a config with random weights, with a tokenizer
  trained on the project's corpus and a torchvision-free processor.
- `init_model_dir(spec, out_dir, seed=)`: build (tiny) or load (hub id / local path) and save a
  Hugging Face directory: safetensors weights, config, generation config, tokenizer, processor, chat
  template, and `embedrl.json` (the spec that made it, the seed, the embedrl version).
- `load_model(name_or_path)`: one code path for a local directory and a hub id; safetensors weights
  only (a pickled `.bin` can run code when it is loaded), remote code only when the spec allows it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedrl.models.spec import ModelSpec
from embedrl.models.tokenizer import EMB_TOKEN, TCOT_TAGS, build_tokenizer
from embedrl.models.tokenizer import emb_token_id as _tokenizer_emb_token_id

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, ProcessorMixin

log = logging.getLogger(__name__)

METADATA_FILE = "embedrl.json"
ROPE_THETA = 5_000_000.0  # Qwen3-VL's
_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")  # pickle-based weight formats


class ModelNotAvailableError(OSError):
    """A hub model that is neither downloadable (offline) nor in the local Hugging Face cache."""


class UnsafeWeightsError(ValueError):
    """A model directory whose weights are not safetensors: loading a pickle can run arbitrary code."""


def emb_token_id(tokenizer_or_processor: Any) -> int:
    """The id of `<emb>` in a tokenizer (or a processor's tokenizer)."""
    return _tokenizer_emb_token_id(getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor))


# ------------------------------------------------------------------------------------------ build
def build_tiny(spec: ModelSpec, seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A tiny Qwen-VL (random weights drawn from `seed`) and its processor, as `spec` describes."""
    import torch
    from transformers import AutoModelForImageTextToText

    from embedrl.models.processor import make_processor

    if not spec.is_tiny:
        raise ValueError(f"build_tiny needs source='tiny', got source={spec.source!r}; use init_model_dir")
    tokenizer = build_tokenizer(vocab_size=spec.vocab_size)
    processor = make_processor(
        tokenizer,
        arch=spec.arch,
        patch_size=spec.patch_size,
        temporal_patch_size=spec.temporal_patch_size,
        merge_size=spec.spatial_merge_size,
        min_pixels=spec.image_min_pixels or 56 * 56,
        max_pixels=spec.image_max_pixels or 224 * 224,
    )
    config = tiny_config(spec, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.to(_torch_dtype(spec.dtype))
    _set_generation_defaults(model, tokenizer)
    model.eval()
    return model, processor


def tiny_config(spec: ModelSpec, tokenizer: Any):
    """The transformers config of a tiny model; vocabulary and special ids from `tokenizer`."""
    from transformers import Qwen2VLConfig, Qwen3VLConfig

    ids = tokenizer.convert_tokens_to_ids
    head_dim = spec.hidden_size // spec.num_heads
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": ROPE_THETA,
            "mrope_section": _mrope_section(head_dim),
        },
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
    }
    special = {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
        "tie_word_embeddings": spec.tie_word_embeddings,
    }
    common_vision = {
        "depth": spec.vision_depth,
        "num_heads": spec.vision_heads,
        "patch_size": spec.patch_size,
        "temporal_patch_size": spec.temporal_patch_size,
        "spatial_merge_size": spec.spatial_merge_size,
    }
    if spec.arch == "qwen3_vl":
        text["head_dim"] = head_dim
        text["rope_parameters"]["mrope_interleaved"] = True
        vision = {
            **common_vision,
            "hidden_size": spec.vision_hidden_size,
            "intermediate_size": spec.vision_intermediate_size,
            "out_hidden_size": spec.hidden_size,
            "num_position_embeddings": spec.vision_position_embeddings,
            "deepstack_visual_indexes": list(spec.deepstack_layers),
        }
        return Qwen3VLConfig(text_config=text, vision_config=vision, **special)
    vision = {
        **common_vision,
        "embed_dim": spec.vision_hidden_size,
        "hidden_size": spec.hidden_size,
        "mlp_ratio": max(1, spec.vision_intermediate_size // spec.vision_hidden_size),
    }
    return Qwen2VLConfig(text_config=text, vision_config=vision, **special)


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) as Qwen-VL's [24, 20, 20] of 64."""
    half = head_dim // 2
    spatial = round(half * 20 / 64)
    return [half - 2 * spatial, spatial, spatial]


def _set_generation_defaults(model: Any, tokenizer: Any) -> None:
    """Stop at <|im_end|> (end of a chat turn) or <|endoftext|>; pad with <|endoftext|>; greedy."""
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    gen = model.generation_config
    gen.eos_token_id = eos
    gen.pad_token_id = tokenizer.pad_token_id
    gen.bos_token_id = None
    gen.do_sample = False
    for name in ("temperature", "top_p", "top_k"):
        setattr(gen, name, None)


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


# ------------------------------------------------------------------------------------------- save
def init_model_dir(spec: ModelSpec, out_dir: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Build (tiny) or load (hub id / path) the model of `spec` and save it as a Hugging Face directory.

    A pretrained tokenizer gets `<emb>` and the T-CoT tags (the embeddings grow if needed). The
    directory is written next to `out_dir` and renamed into place, so a crash leaves no half model.
    `out_dir` must be absent or empty.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory; choose a new --out or remove it")
    if spec.is_tiny:
        model, processor = build_tiny(spec, seed=seed)
    else:
        model, processor = _load_pretrained_for_spec(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_model_dir(model, processor, staging, spec=spec, seed=seed)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("saved %s model (%s, %.2fM parameters) to %s", spec.role, spec.source, _millions(model), out)
    return out


def save_model_dir(model: Any, processor: Any, out_dir: Path, *, spec: ModelSpec, seed: int) -> None:
    """Weights (safetensors only), config, processor, tokenizer, chat template and `embedrl.json`."""
    import transformers

    from embedrl import __version__

    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    stray = [p.name for p in out_dir.iterdir() if p.suffix in _WEIGHT_SUFFIXES]
    if stray:
        raise RuntimeError(f"{out_dir}: weights must be safetensors only, found {stray}")
    metadata = {
        "embedrl_version": __version__,
        "transformers_version": transformers.__version__,
        "role": spec.role,
        "seed": seed,
        "emb_token_id": emb_token_id(processor),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "spec": spec.to_dict(),
    }
    (out_dir / METADATA_FILE).write_text(
        json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def _load_pretrained_for_spec(spec: ModelSpec) -> tuple[Any, Any]:
    """Load a pretrained source and add the project's tokens (`<emb>`, T-CoT tags) to its tokenizer."""
    model, processor = load_model(spec.source, trust_remote_code=spec.trust_remote_code, dtype=spec.dtype)
    if model.config.model_type != spec.arch:
        raise ValueError(
            f"ModelSpec({spec.role!r}).arch={spec.arch!r} but {spec.source} is a {model.config.model_type!r} model"
        )
    add_project_tokens(model, processor.tokenizer)
    if spec.image_min_pixels or spec.image_max_pixels:
        size = dict(processor.image_processor.size)
        if spec.image_min_pixels:
            size["shortest_edge"] = spec.image_min_pixels
        if spec.image_max_pixels:
            size["longest_edge"] = spec.image_max_pixels
        processor.image_processor.size = size
    return model, processor


def add_project_tokens(model: Any, tokenizer: Any) -> None:
    """Add `<emb>` (special) and the T-CoT tags to a pretrained tokenizer; grow the embeddings only if needed.

    A released Qwen-VL has spare embedding rows (vocab_size 151936 for 151669 tokens), so the new tokens
    usually fit without resizing.
    """
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(EMB_TOKEN, special=True, normalized=False)], special_tokens=True)
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in TCOT_TAGS])
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)


def _millions(model: Any) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


# ------------------------------------------------------------------------------------------- load
def load_model(
    name_or_path: str | os.PathLike[str], *, trust_remote_code: bool = False, dtype: str | None = None
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load a model and its processor from a local directory or a hub id (the same code path).

    `dtype`: "float32", "bfloat16", "float16", or None for the dtype the weights were saved in.
    Offline (HF_HUB_OFFLINE=1), a hub id works only from a pre-populated Hugging Face cache; otherwise
    this raises `ModelNotAvailableError` saying how to provide the model.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    from embedrl.models.processor import load_processor

    name = os.fspath(name_or_path)
    if Path(name).is_dir():
        _require_safetensors(Path(name))
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            name,
            config=config,
            dtype=_torch_dtype(dtype) if dtype else "auto",
            trust_remote_code=trust_remote_code,
            use_safetensors=True,  # never fall back to a pickled pytorch_model.bin
        )
        processor = load_processor(name, trust_remote_code=trust_remote_code)
    except OSError as err:  # a partial cache (config but no weights) fails here too
        if Path(name).exists():
            raise
        raise _not_available(name) from err
    model.eval()
    return model, processor


def _require_safetensors(directory: Path) -> None:
    """Refuse a local model directory without safetensors weights, naming the pickles it holds instead."""
    if any(directory.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    found = f"only pickle weights {pickles}" if pickles else "no weights"
    raise UnsafeWeightsError(
        f"model directory {directory} holds {found}; embedrl loads safetensors only, because unpickling a "
        f"file can run arbitrary code. On a machine that trusts the file, convert it: load the model with "
        f"transformers and `save_pretrained(DIR)` (safetensors by default), then point `source:` at DIR."
    )


def _not_available(name: str) -> ModelNotAvailableError:
    from huggingface_hub import constants

    where = "offline (HF_HUB_OFFLINE=1)" if constants.is_offline_mode() else "from the Hugging Face hub"
    return ModelNotAvailableError(
        f"model {name!r} is not available {where}: it is neither a local directory nor in the Hugging Face "
        f"cache ({constants.HF_HUB_CACHE}). Provide it as a local path (a directory with config.json and "
        f"safetensors weights, e.g. made by `hf download {name} --local-dir DIR` on a connected machine) "
        f"and set `source:` to that path, or pre-populate a cache and point HF_HOME at it. For a model "
        f"built from scratch use `embedrl model init --profile tiny`."
    )
