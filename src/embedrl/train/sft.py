"""SFT cold start of the Reasoner: trl's SFTTrainer on the teacher's T-CoTs (completion-only loss).

Every prepared training pair gives two examples: the query-side prompt (the query's media and text)
and the target-side prompt (the positive's), each completed by the teacher's T-CoT for that side.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import trl

from embedrl.data.sides import MediaStore
from embedrl.models.reasoner import ReasonerPrompt, completion_for, reasoner_input
from embedrl.train.checkpoint import completion_marker, resume_point, train_from
from embedrl.train.embedder import load_pairs
from embedrl.train.perception import (
    GROUNDING_FORMS,
    GROUNDING_TRACES,
    detail_examples,
    grounding_examples,
    track_examples,
    track_forms,
)

log = logging.getLogger(__name__)

PERCEPTION_DONE = "embedrl-perception.json"


@dataclass
class SFTStageConfig(trl.SFTConfig):
    """trl's SFTConfig plus the Reasoner's prompt settings. Defaults: SFT on teacher traces, 1 epoch."""

    prompt_style: str = field(default="short", metadata={"help": "short (tiny models) or full (paper-scale prompts)"})
    reasoner_image_size: int = field(default=224, metadata={"help": "pixels of an image the Reasoner sees"})
    reasoner_frame_size: int = field(default=56, metadata={"help": "pixels of each video frame the Reasoner sees"})
    reasoner_track_size: int = field(default=0, metadata={
        "help": "a grounded clip prompt shows each object's track strip (its crop in every frame) at this many px "
                "per frame (embedrl.tcot.regions.track_strips); 0 = none"})
    grounded: bool = field(default=False, metadata={
        "help": "list the input's region proposals in the prompt (embedrl.tcot.regions); saved with the model"})
    region_size: int = field(default=56, metadata={"help": "pixels of each region crop of a grounded prompt"})
    region_boxes: bool = field(default=True, metadata={"help": "write each region's 0-1000 box in a grounded prompt"})
    back_references: bool = field(default=False, metadata={
        "help": "a grounded Reasoner writes each repeat of its first region mark as #= (one region choice per trace)"})
    text_regions: bool = field(default=False, metadata={
        "help": "a grounded prompt lists a text side's keywords as regions too (embedrl.tcot.regions.text_regions): "
                "the Reasoner marks them instead of copying them token by token"})
    negative_sides: bool = field(default=False, metadata={
        "help": "also train on each pair's hard negative, as a target side with its teacher trace: evaluation asks "
                "for traces of every candidate, most of which match no query, and a Reasoner shown only positives "
                "writes the positives' evidence into them (a flash on a clip segment without one). Measured on the "
                "dev set, tiny: -0.32 / +0.37 / -1.52 over 3 seeds, the invented flashes stay (docs/STATUS.md, "
                "issue 3, session 24)"})
    perception_steps: int = field(default=0, metadata={
        "help": "steps of the one-crop perception warm-up before the cold start (embedrl.train.perception); "
                "0 = none: a pretrained Reasoner already sees"})
    track_steps: int = field(default=0, metadata={
        "help": "steps on the track-strip question (which frame flashes?) after the one-crop warm-up "
                "(embedrl.train.perception); needs sft.reasoner_track_size > 0"})
    track_form: str = field(default="strip", metadata={
        "help": "the track phase's examples: strip (one track strip alone: which frame flashes?) or prompt (the "
                "clip's grounded prompt: which frame does #k flash in?, the hop from a trace's mark to its strip) or which (the "
                "clip's grounded prompt: which object flashes? -> #k or none, the choice at a trace's first mark), or "
                "several joined by '+' (strip+which: the strip phase lets the grounding phase bind the image marks, "
                "which alone did not on seed 0's init; its cold start still scored 7 points under strip's on the dev "
                "set, video -19: docs/STATUS.md, issue 3, session 28)"})
    grounding_steps: int = field(default=0, metadata={
        "help": "steps on the grounding examples alone (sft.grounding_form), after the perception warm-up and "
                "before the cold start"})
    grounding_copies: int = field(default=0, metadata={
        "help": "copies of the grounding examples (which region carries the detail?) mixed into the cold start"})
    grounding_form: str = field(default="question", metadata={
        "help": "the grounding examples' form: question (the grounding question -> #k) or trace (the T-CoT "
                "prompt -> the gold T-CoT in mark form: the pointer learned where the trace names its region)"})
    grounding_video: bool = field(default=False, metadata={
        "help": "the grounding examples (trace form) also cover video clips: each clip's T-CoT prompt -> the "
                "gold T-CoT naming the flashing object and the flash frame"})
    flashless_clips: bool = field(default=False, metadata={
        "help": "the warm-up's clip examples (the track question, the video grounding traces) also take the "
                "training split's clip sides whose flash is out of view (hard negatives: Moment-Flash segments "
                "outside the flash): their objects -> 'none', their trace an object's motion. Without them every "
                "clip side the warm-up shows has a flash, and the cold start writes one on almost every segment "
                "(docs/STATUS.md, issue 3, sessions 24-25)"})
    grounding_traces: str = field(default="gold", metadata={
        "help": "the trace form's T-CoTs: gold (every detailed side names its evidence) or teacher (the oracle "
                "teacher's, only on the sides where it names the evidence: the pointer without the gold policy, "
                "which would leave EG-RL no headroom) or teacher_all (the teacher's on every side, misses "
                "included)"})
    perception_data: str = field(default="", metadata={
        "help": "more data roots (comma-separated, MiniMMEB layout, e.g. other generator seeds; never evaluation "
                "data) whose train-split images add to the warm-up's examples: more distinct scenes to learn "
                "perception from instead of memorising the few there are"})
    perception_dir: str = field(default="", metadata={
        "help": "where the perception warm-up's model is kept (default: <output>/perception); runs that name "
                "the same directory train it once and share it, as runs of a paper-scale Reasoner share its "
                "pretrained base (the ablation's seeds)"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})

    def __post_init__(self) -> None:
        self.completion_only_loss = True
        self.remove_unused_columns = False  # the images column feeds the collator
        self.logging_nan_inf_filter = False  # a NaN loss must stop the stage, not be averaged away
        self.reasoner_prompt()  # validates the prompt settings
        counts = {"perception_steps": self.perception_steps, "track_steps": self.track_steps,
                  "grounding_steps": self.grounding_steps, "grounding_copies": self.grounding_copies}
        if min(counts.values()) < 0:
            raise ValueError(f"sft: {counts}: each must be >= 0")
        if self.grounding_form not in GROUNDING_FORMS:
            raise ValueError(f"sft.grounding_form={self.grounding_form!r}: expected one of {GROUNDING_FORMS}")
        if self.grounding_traces not in GROUNDING_TRACES:
            raise ValueError(f"sft.grounding_traces={self.grounding_traces!r}: expected one of {GROUNDING_TRACES}")
        if self.grounding_traces != "gold" and self.grounding_form != "trace":
            raise ValueError("sft.grounding_traces applies to sft.grounding_form: trace only")
        try:
            track_forms(self.track_form)
        except ValueError as error:
            raise ValueError(f"sft.track_form={self.track_form!r}: {error}") from None
        if self.grounding_video and self.grounding_form != "trace":
            raise ValueError("sft.grounding_video needs sft.grounding_form: trace (its examples are gold traces)")
        if self.flashless_clips and not (self.grounding_video or self.track_steps):
            raise ValueError("sft.flashless_clips needs sft.grounding_video: true or sft.track_steps > 0 "
                             "(it adds to their clip examples)")
        if self.track_steps and not (self.grounded and self.reasoner_track_size > 0):
            raise ValueError("sft.track_steps needs sft.grounded: true and sft.reasoner_track_size > 0 "
                             "(its examples are the prompt's track strips)")
        if (self.grounding_steps or self.grounding_copies) and not self.grounded:
            raise ValueError("sft.grounding_steps and sft.grounding_copies need sft.grounded: true "
                             "(the answer is a region mark)")
        self.dataset_kwargs = {"skip_prepare_dataset": True}
        super().__post_init__()

    def reasoner_prompt(self) -> ReasonerPrompt:
        return ReasonerPrompt(self.prompt_style, self.reasoner_image_size, self.reasoner_frame_size,
                              self.grounded, self.region_size, self.region_boxes, self.back_references,
                              self.text_regions, self.reasoner_track_size)


def sft_examples(data_root: str | Path, split: str = "train", *, prompt: ReasonerPrompt | None = None,
                 negative_sides: bool = False) -> list[dict]:
    """Prompt-completion examples (conversational, with images) for both sides of every pair, and with
    `negative_sides` for its hard negative too (a target side, with the negative's teacher trace)."""
    prompt = prompt or ReasonerPrompt()
    store = MediaStore(data_root)
    examples = []
    for pairs in load_pairs(data_root, split).values():
        for pair in pairs:
            sides = [(pair.query, "query", pair.query_tcot), (pair.positive, "target", pair.positive_tcot)]
            if negative_sides and pair.negative is not None:
                sides.append((pair.negative, "target", pair.negative_tcot))
            for ref, role, tcot in sides:
                if not tcot:
                    continue
                messages, images = reasoner_input(ref, role, store, prompt)
                examples.append({
                    "prompt": messages,
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
    import torch

    from embedrl.models.factory import load_model

    started = time.perf_counter()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    prompt = config.reasoner_prompt()
    model, processor = load_model(model_dir)
    if config.perception_steps or config.track_steps or config.grounding_steps:
        warmup_dir = Path(config.perception_dir) if config.perception_dir else Path(out_dir) / "perception"
        model = _perception_warmup(model, processor, data_root, warmup_dir, config)
    examples = sft_examples(data_root, prompt=prompt, negative_sides=config.negative_sides)
    if config.grounding_copies:
        examples += _grounding(data_root, prompt, config) * config.grounding_copies
        random.Random(config.seed).shuffle(examples)
    trainer = _train(model, processor, examples, config, Path(out_dir), "sft_cold_start")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    final = Path(out_dir) / "model"
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    _write_metadata(model_dir, final, config, len(examples))
    return SFTResult(Path(out_dir), losses, time.perf_counter() - started)


def _train(model, processor, examples: list[dict], config: SFTStageConfig, out_dir: Path, stage: str):
    """trl's SFTTrainer on `examples`, checkpointing under out_dir/checkpoints (resumed after a kill)."""
    import datasets

    config.output_dir = str(out_dir / "checkpoints")
    trainer = trl.SFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(examples),
                             processing_class=processor,
                             callbacks=[completion_marker(stage, train_log=out_dir / "train_log.jsonl")])
    train_from(trainer, resume_point(config.output_dir))
    return trainer


def _perception_warmup(model, processor, data_root, out_dir: Path, config: SFTStageConfig):
    """The perception curriculum before the cold start: the one-crop detail question for
    `perception_steps`, the track-strip question for `track_steps`, then the grounding examples alone for
    `grounding_steps`; kept in out_dir/model."""
    from embedrl.models.factory import load_model

    done = out_dir / "model"
    prompt = config.reasoner_prompt()
    roots = [data_root, *(r.strip() for r in config.perception_data.split(",") if r.strip())]
    settings = {**_curriculum(config), "data": [str(Path(r).resolve()) for r in roots],
                "reasoner_prompt": prompt.to_dict()}
    if (done / PERCEPTION_DONE).exists():  # shared by another run, or a rerun after a kill in the cold start
        kept = _with_defaults(json.loads((done / PERCEPTION_DONE).read_text()).get("settings") or {})
        if kept != settings:
            raise ValueError(f"sft.perception_dir {out_dir} holds a warm-up with other settings ({kept}) than "
                             f"this run's ({settings}): name another directory")
        log.info("perception warm-up: reusing %s", done)
        return load_model(done)[0]

    def pooled(build):  # examples of every root (the i-th root built by build(root, i)), shuffled together
        examples = [e for i, root in enumerate(roots) for e in build(root, i)]
        random.Random(config.seed).shuffle(examples)
        return examples

    phases = [("detail", config.perception_steps,
               lambda: pooled(lambda root, i: detail_examples(root, prompt, seed=config.seed + i))),
              ("track", config.track_steps,  # with the detail examples replayed: alone, it erased the dot
               lambda: pooled(lambda root, i: track_examples(root, prompt, seed=config.seed + i,
                                                             form=config.track_form, flashless=config.flashless_clips)
                              + detail_examples(root, prompt, seed=config.seed + i))),
              ("grounding", config.grounding_steps, lambda: pooled(lambda root, _: _grounding(root, prompt, config)))]
    record: dict = {"settings": settings}
    for name, steps, build in phases:
        if not steps:
            continue
        examples = build()
        phase = dataclasses.replace(config, max_steps=steps, perception_steps=0, track_steps=0, grounding_steps=0,
                                    grounding_copies=0)
        trainer = _train(model, processor, examples, phase, out_dir / name, f"perception_{name}")
        model = trainer.model
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        record[name] = {"steps": steps, "examples": len(examples), "losses": losses}
        log.info("perception warm-up (%s): %d steps on %d examples, loss %.3f -> %.3f", name, steps, len(examples),
                 losses[0] if losses else float("nan"), losses[-1] if losses else float("nan"))
    trainer.save_model(str(done))
    processor.save_pretrained(str(done))
    (done / PERCEPTION_DONE).write_text(json.dumps(record) + "\n")
    return model


def _curriculum(config: SFTStageConfig) -> dict:
    """The perception curriculum's settings: what a shared warm-up must agree on, and the model records."""
    return {"perception_steps": config.perception_steps, "track_steps": config.track_steps,
            "track_form": config.track_form, "grounding_steps": config.grounding_steps,
            "grounding_form": config.grounding_form, "grounding_video": config.grounding_video,
            "grounding_traces": config.grounding_traces, "flashless_clips": config.flashless_clips}


def _with_defaults(settings: dict) -> dict:
    """A warm-up record's settings with the defaults of fields added since it was written."""
    return {"track_steps": 0, "track_form": "strip", "grounding_traces": "gold", "flashless_clips": False,
            **settings,
            "reasoner_prompt": ReasonerPrompt.from_dict(settings.get("reasoner_prompt")).to_dict()}


def _grounding(data_root, prompt: ReasonerPrompt, config: SFTStageConfig) -> list[dict]:
    return grounding_examples(data_root, prompt, form=config.grounding_form, video=config.grounding_video,
                              traces=config.grounding_traces, flashless=config.flashless_clips and config.grounding_video)


def _write_metadata(base_dir, final: Path, config: SFTStageConfig, n_examples: int) -> None:
    base = Path(base_dir) / "embedrl.json"
    meta = json.loads(base.read_text()) if base.exists() else {}
    meta["role"] = "reasoner"
    meta["stage"] = {"name": "sft_cold_start", "base_model": str(base_dir), "examples": n_examples,
                     **_curriculum(config), "grounding_copies": config.grounding_copies}
    meta["reasoner_prompt"] = config.reasoner_prompt().to_dict()
    (final / "embedrl.json").write_text(json.dumps(meta, indent=1) + "\n")
