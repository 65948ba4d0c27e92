"""The paper's Qwen3-VL architectures, offline: their released config values, and models built from them.

`qwen3_vl_architectures.yaml` (beside this module) holds, for Qwen3-VL-2B/4B/8B-Instruct, the config.json,
preprocessor_config.json and tokenizer values that shape each model, with where they come from. With no
hub download possible, this is how the paper profiles' architectures are exercised:

- `write_offline_model_dir(arch, DIR)` writes a Hugging Face directory that `embedrl.models.factory` loads
  exactly as it loads the downloaded checkpoint (point a spec's `source:` at DIR): the real config (widths,
  vocabulary size, head counts, rope, deepstack indexes, token ids; depth reduced only when asked), random
  safetensors weights, the real image-processor settings, and a **stand-in tokenizer** with the real
  tokenizer's added tokens at their real ids and its real length, but the project's small BPE for ordinary
  text (`embedrl.models.tokenizer.build_standin_tokenizer`). A file `STANDIN.json` in DIR says so.
- `build_model(arch)` builds the same model and processor in memory (GPU benchmarks), `<emb>` added.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

log = logging.getLogger(__name__)

DATA_FILE = "qwen3_vl_architectures.yaml"
STANDIN_FILE = "STANDIN.json"


class UnknownArchitectureError(KeyError):
    """A name that is neither an architecture of the data file nor one of their hub ids."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


@dataclass(frozen=True)
class Architecture:
    """One released Qwen3-VL checkpoint's shape; `text` and `vision` use config.json's key names."""

    name: str
    hub_id: str
    parameters: int = field(metadata={"help": "parameters the full-depth config builds"})
    tie_word_embeddings: bool
    text: dict[str, Any]
    vision: dict[str, Any]
    token_ids: dict[str, int]
    processor: dict[str, Any]
    tokenizer: dict[str, Any]

    @property
    def hidden_size(self) -> int:
        """Width of the text model: the size of an Embedder vector."""
        return int(self.text["hidden_size"])

    def reduced(self, *, text_layers: int | None = None, vision_depth: int | None = None) -> Architecture:
        """The same widths, vocabulary and indexes with fewer text layers and / or vision blocks.

        The vision tower keeps its real deepstack indexes, so it needs more blocks than the largest index.
        """
        text = dict(self.text, num_hidden_layers=text_layers or self.text["num_hidden_layers"])
        vision = dict(self.vision, depth=vision_depth or self.vision["depth"])
        deepest = max(vision["deepstack_visual_indexes"], default=-1)
        if vision["depth"] <= deepest:
            raise ValueError(f"{self.name}: vision_depth={vision['depth']} leaves out deepstack index {deepest}; "
                             f"keep at least {deepest + 1} blocks, or override deepstack_visual_indexes "
                             f"with Architecture.overridden")
        for what, value in (("text_layers", text["num_hidden_layers"]), ("vision_depth", vision["depth"])):
            if value < 1:
                raise ValueError(f"{self.name}: {what}={value} must be >= 1")
        return dataclasses.replace(self, text=text, vision=vision)

    def overridden(self, *, text: dict[str, Any] | None = None, vision: dict[str, Any] | None = None,
                   tie_word_embeddings: bool | None = None) -> Architecture:
        """A variant with some config keys replaced (e.g. a tiny width for a CPU smoke run)."""
        tie = self.tie_word_embeddings if tie_word_embeddings is None else tie_word_embeddings
        return dataclasses.replace(self, text={**self.text, **(text or {})}, vision={**self.vision, **(vision or {})},
                                   tie_word_embeddings=tie)

    def hf_config(self) -> PretrainedConfig:
        """The transformers `Qwen3VLConfig` this architecture describes."""
        from transformers import Qwen3VLConfig

        text = {k: v for k, v in self.text.items() if k not in ("rope_theta", "mrope_section", "mrope_interleaved")}
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": self.text["rope_theta"],
                                   "mrope_section": list(self.text["mrope_section"]),
                                   "mrope_interleaved": self.text["mrope_interleaved"]}
        text.update(bos_token_id=self.token_ids["bos_token_id"], eos_token_id=self.token_ids["eos_token_id"],
                    tie_word_embeddings=self.tie_word_embeddings)
        ids = {k: v for k, v in self.token_ids.items() if k not in ("bos_token_id", "eos_token_id")}
        return Qwen3VLConfig(text_config=text, vision_config=dict(self.vision),
                             tie_word_embeddings=self.tie_word_embeddings, **ids)

    def count_parameters(self) -> int:
        """Parameters of the model this architecture builds, counted on the meta device (no memory used)."""
        import torch
        from transformers import AutoModelForImageTextToText

        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(self.hf_config())
        return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------- loading
def _data() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((resources.files("embedrl.models") / DATA_FILE).read_text(encoding="utf-8"))


def load_architecture(name_or_hub_id: str) -> Architecture:
    """An architecture by its name (`qwen3-vl-2b`) or its checkpoint's hub id (`Qwen/Qwen3-VL-2B-Instruct`)."""
    data = _data()
    for name, entry in data["architectures"].items():
        if name_or_hub_id in (name, entry["hub_id"]):
            return Architecture(name=name, hub_id=entry["hub_id"], parameters=int(entry["parameters"]),
                                tie_word_embeddings=bool(entry["tie_word_embeddings"]), text=dict(entry["text"]),
                                vision=dict(entry["vision"]), token_ids=dict(data["token_ids"]),
                                processor=dict(data["processor"]), tokenizer=dict(data["tokenizer"]))
    known = ", ".join(f"{n} ({e['hub_id']})" for n, e in sorted(data["architectures"].items()))
    raise UnknownArchitectureError(f"unknown architecture {name_or_hub_id!r}; known: {known} "
                                   f"(embedrl/models/{DATA_FILE})")


# ------------------------------------------------------------------------------------------ building
def standin_processor(arch: Architecture):
    """The torchvision-free processor with the real image settings around the stand-in tokenizer."""
    from embedrl.models.processor import make_processor
    from embedrl.models.tokenizer import build_standin_tokenizer

    spec = arch.tokenizer
    tokenizer = build_standin_tokenizer([tuple(t) for t in spec["added_tokens"]],
                                        base_vocab_size=spec["base_vocab_size"],
                                        eos_token=spec["eos_token"], pad_token=spec["pad_token"])
    settings = arch.processor
    return make_processor(tokenizer, arch="qwen3_vl", patch_size=settings["patch_size"],
                          temporal_patch_size=settings["temporal_patch_size"], merge_size=settings["merge_size"],
                          min_pixels=settings["min_pixels"], max_pixels=settings["max_pixels"])


def _random_model(arch: Architecture, dtype: str, seed: int, device: str | torch.device = "cpu"):
    import torch
    from transformers import AutoModelForImageTextToText

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(arch.hf_config(), dtype=torch_dtype)
    return model.eval()


def build_model(arch: Architecture, *, dtype: str = "bfloat16", seed: int = 0,
                device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """(model, processor) of `arch` with random weights, built on `device`, `<emb>` and T-CoT tags added."""
    from embedrl.models.factory import add_project_tokens

    model = _random_model(arch, dtype, seed, device)
    processor = standin_processor(arch)
    add_project_tokens(model, processor.tokenizer)
    return model, processor


def write_offline_model_dir(arch: Architecture, out_dir: str | Path, *, dtype: str = "bfloat16",
                            seed: int = 0) -> Path:
    """A Hugging Face directory of `arch` with random weights, loadable like the released checkpoint.

    The directory holds what a hub download holds (config.json, safetensors weights, processor and tokenizer
    files) plus STANDIN.json, which lists what is real and what is substituted.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new directory")
    model = _random_model(arch, dtype, seed)
    model.save_pretrained(out)
    standin_processor(arch).save_pretrained(out)
    (out / STANDIN_FILE).write_text(json.dumps(_standin_record(arch, dtype, seed), indent=1) + "\n", encoding="utf-8")
    log.info("wrote %s (%s, %d text layers, %d vision blocks, random weights) to %s", arch.name, arch.hub_id,
             arch.text["num_hidden_layers"], arch.vision["depth"], out)
    return out


def _standin_record(arch: Architecture, dtype: str, seed: int) -> dict[str, Any]:
    full = load_architecture(arch.name)
    return {
        "architecture": arch.name,
        "stands_in_for": arch.hub_id,
        "real": "config widths, vocabulary size, head counts, rope, deepstack indexes, token ids, image "
                "processor settings, the tokenizer's added tokens, their ids and its length",
        "substituted": {
            "weights": f"random (seed {seed}, {dtype})",
            "tokenizer": "the project's small BPE for ordinary text, padded with filler entries to the real length",
            "chat_template": "the project's Qwen-style template (embedrl.models.tokenizer.CHAT_TEMPLATE)",
            "text_layers": f"{arch.text['num_hidden_layers']} of {full.text['num_hidden_layers']}",
            "vision_blocks": f"{arch.vision['depth']} of {full.vision['depth']}",
        },
    }
