"""SFT cold start of the Reasoner: trl's SFTTrainer on the teacher's T-CoTs (completion-only loss).

Every prepared training pair gives two examples: the query-side prompt (the query's media and text)
and the target-side prompt (the positive's), each completed by the teacher's T-CoT for that side.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import trl

from embedrl.data.sides import MediaStore
from embedrl.models.reasoner import ReasonerPrompt, completion_for, reasoner_images, reasoner_messages
from embedrl.train.checkpoint import completion_marker, resume_point
from embedrl.train.embedder import load_pairs

log = logging.getLogger(__name__)


@dataclass
class SFTStageConfig(trl.SFTConfig):
    """trl's SFTConfig plus the Reasoner's prompt settings. Defaults: SFT on teacher traces, 1 epoch."""

    prompt_style: str = field(default="short", metadata={"help": "short (tiny models) or full (paper-scale prompts)"})
    reasoner_image_size: int = field(default=224, metadata={"help": "pixels of an image the Reasoner sees"})
    reasoner_frame_size: int = field(default=56, metadata={"help": "pixels of each video frame the Reasoner sees"})
    grounded: bool = field(default=False, metadata={
        "help": "list the input's region proposals in the prompt (embedrl.tcot.regions); saved with the model"})
    region_size: int = field(default=56, metadata={"help": "pixels of each region crop of a grounded prompt"})
    region_boxes: bool = field(default=True, metadata={"help": "write each region's 0-1000 box in a grounded prompt"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})

    def __post_init__(self) -> None:
        self.completion_only_loss = True
        self.remove_unused_columns = False  # the images column feeds the collator
        self.logging_nan_inf_filter = False  # a NaN loss must stop the stage, not be averaged away
        self.reasoner_prompt()  # validates the prompt settings
        self.dataset_kwargs = {"skip_prepare_dataset": True}
        super().__post_init__()

    def reasoner_prompt(self) -> ReasonerPrompt:
        return ReasonerPrompt(self.prompt_style, self.reasoner_image_size, self.reasoner_frame_size,
                              self.grounded, self.region_size, self.region_boxes)


def sft_examples(data_root: str | Path, split: str = "train", *, prompt: ReasonerPrompt | None = None) -> list[dict]:
    """Prompt-completion examples (conversational, with images) for both sides of every pair."""
    prompt = prompt or ReasonerPrompt()
    store = MediaStore(data_root)
    examples = []
    for pairs in load_pairs(data_root, split).values():
        for pair in pairs:
            for ref, role, tcot in ((pair.query, "query", pair.query_tcot), (pair.positive, "target", pair.positive_tcot)):
                if not tcot:
                    continue
                images = reasoner_images(ref, store, prompt)
                frames = len(images) if ref.media_kind == "video" else None
                examples.append({
                    "prompt": reasoner_messages(ref, role, prompt, num_frames=frames),
                    "completion": [{"role": "assistant", "content": completion_for(ref, tcot, prompt)}],
                    "images": images,
                })
    return examples


@dataclass
class SFTResult:
    out_dir: Path
    losses: list[float]
    seconds: float


def train_sft(data_root: str | Path, model_dir: str | Path, out_dir: str | Path, config: SFTStageConfig) -> SFTResult:
    import datasets
    import torch

    from embedrl.models.factory import load_model

    started = time.perf_counter()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    examples = sft_examples(data_root, prompt=config.reasoner_prompt())
    dataset = datasets.Dataset.from_list(examples)
    model, processor = load_model(model_dir)
    config.output_dir = str(Path(out_dir) / "checkpoints")
    trainer = trl.SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=processor,
                             callbacks=[completion_marker("sft_cold_start", train_log=Path(out_dir) / "train_log.jsonl")])
    resume = resume_point(config.output_dir)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    final = Path(out_dir) / "model"
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    _write_metadata(model_dir, final, config, len(examples))
    return SFTResult(Path(out_dir), losses, time.perf_counter() - started)


def _write_metadata(base_dir, final: Path, config: SFTStageConfig, n_examples: int) -> None:
    base = Path(base_dir) / "embedrl.json"
    meta = json.loads(base.read_text()) if base.exists() else {}
    meta["role"] = "reasoner"
    meta["stage"] = {"name": "sft_cold_start", "base_model": str(base_dir), "examples": n_examples}
    meta["reasoner_prompt"] = config.reasoner_prompt().to_dict()
    (final / "embedrl.json").write_text(json.dumps(meta, indent=1) + "\n")
