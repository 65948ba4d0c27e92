"""Embedder contrastive training (method.md stage 3): symmetric InfoNCE over `<emb>` vectors.

Each pair is seen with one trace variant (config.evidence_mix): raw input, the teacher's T-CoT, a
*blind* T-CoT (evidence that is present but not the disambiguating one), or the gold T-CoT; the trace's
boxes become crops and its key frames become frames that the Embedder sees after `</thinking>`. Every
step's pairs come from one subset (probability proportional to weight x size; the sets, weights and caps of
`config.data_mix`, embedrl.data.mmeb_train); in-batch negatives are
gathered across ranks with gradients. With `grad_cache_chunk_size` the sides are embedded in chunks with
gradient caching (embedrl.train.gradcache), so the batch is not bounded by memory. Runs in one process,
under torchrun, or with DeepSpeed.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from embedrl.config import EmbedderTrainConfig, config_dict
from embedrl.data.mmeb_train import DataMix, load_mix, mix_tasks
from embedrl.data.readers import iter_manifest_tasks, read_records, write_quarantine
from embedrl.data.sides import MediaStore, SideRef, train_negative, train_sides
from embedrl.models.embedder import IMAGE_SIZES_KEY, Embedder, EmbedderInputs, ImageSizes, Side
from embedrl.tcot import TCoT, TCoTFormatError, extract_evidence, parse
from embedrl.tcot.teachers import blind_tcot, gold_tcot
from embedrl.train.checkpoint import (
    check_finite_loss,
    latest_checkpoint,
    load_torch_state,
    save_torch_state,
    write_checkpoint,
    write_json,
)
from embedrl.train.gradcache import ContrastiveLoss, contrastive_loss

log = logging.getLogger(__name__)
VARIANTS = ("raw", "teacher", "blind", "gold")


@dataclass
class Pair:
    subset: str
    query: SideRef
    positive: SideRef
    query_tcot: str
    positive_tcot: str
    group: str = ""  # RL pairs whose targets are near misses of each other share a group
    negative: SideRef | None = None  # the row's hard negative, when it has one
    negative_tcot: str = ""


@dataclass
class EmbedderTrainResult:
    out_dir: Path
    steps: int
    losses: list[float]
    accuracies: list[float]
    seconds: float

    @property
    def first_loss(self) -> float:
        return float(np.mean(self.losses[: max(1, len(self.losses) // 10)]))

    @property
    def last_loss(self) -> float:
        return float(np.mean(self.losses[-max(1, len(self.losses) // 10):]))


# -------------------------------------------------------------------------------------------- data
def load_pairs(data_root: str | Path, split: str = "train", quarantine: str | Path | None = None, *,
               mix: DataMix | None = None) -> dict[str, list[Pair]]:
    """Prepared pairs of a split by subset, read through the validating reader.

    With `mix`, only its sets with weight > 0 are read (each must be in the manifest) and each keeps at most
    its cap of valid rows. Bad rows of every subset are counted, logged and written together to `quarantine`.
    """
    root = Path(data_root)
    tasks = [t for t in iter_manifest_tasks(root) if t.split == split and t.kind == "mmeb_train"]
    if mix is not None:
        tasks = mix_tasks(tasks, mix, where=str(root))
    pairs: dict[str, list[Pair]] = {}
    rejections = []
    for task in tasks:
        result = read_records(task.location(root), "mmeb_train", data_root=root)
        rejections += result.rejected
        records = mix.entry(task.name).keep(result.records) if mix is not None else result.records
        for record in records:
            row = record.to_dict()
            query, positive = train_sides(row)
            pairs.setdefault(task.name, []).append(
                Pair(task.name, query, positive, row.get("qry_tcot") or "", row.get("pos_tcot") or "",
                     row.get("group") or "", train_negative(row), row.get("neg_tcot") or ""))
        if mix is not None and task.name not in pairs:
            raise ValueError(f"{root}: set {task.name} of mix {mix.name!r} has no valid row ({result.n_rejected} "
                             f"of {result.total} rejected{_where(quarantine)}); fix the file or set its weight to 0")
    if rejections and quarantine is not None:
        write_quarantine(quarantine, rejections)
        log.warning("%s: %d %s rows rejected; quarantined in %s", root, len(rejections), split, quarantine)
    if not pairs:
        where = f"; {len(rejections)} rows were rejected{_where(quarantine)}" if rejections else ""
        raise ValueError(f"{root}: no {split} pairs found (manifest tasks with split={split!r}, kind mmeb_train)"
                         f"{where}")
    return pairs


def _where(quarantine: str | Path | None) -> str:
    return f" (see {quarantine})" if quarantine else " (logged above)"


def trace_for(ref: SideRef, variant: str, teacher_text: str, num_frames: int | None, *, where: str = "") -> TCoT | None:
    """The T-CoT a side is shown with under a variant (None = raw input); `where` names the record in errors."""
    if variant == "raw":
        return None
    if variant == "teacher":
        if not teacher_text:
            return None
        try:
            return parse(teacher_text, modality=ref.modality, num_frames=num_frames)
        except TCoTFormatError as exc:
            raise TCoTFormatError(f"{where or ref.media_path or 'a text side'}: the stored teacher T-CoT does not "
                                  f"fit a {ref.modality} side ({exc}); fix or re-run data prep") from exc
    writer = gold_tcot if variant == "gold" else blind_tcot
    if not ref.scene:  # data without scene graphs (real data): fall back to the teacher's trace
        return trace_for(ref, "teacher", teacher_text, num_frames, where=where)
    return writer(ref.scene, text=ref.clean_text)


def build_side(ref: SideRef, store: MediaStore, tcot: TCoT | None) -> Side:
    """A side with its media loaded and its trace's evidence extracted from the original media."""
    media = store.load(ref)
    evidence, kind = [], "crop"
    if tcot is not None and media:
        if ref.media_kind == "video":
            evidence, kind = extract_evidence(tcot, frames=media).images, "frame"
        else:
            evidence = extract_evidence(tcot, image=media[0]).images
    return Side(ref.clean_text, media, ref.media_kind, tcot, evidence, kind)


# ------------------------------------------------------------------------------------------- train
def _pick_variants(rng: np.random.Generator, mix: dict[str, float], n: int, *, per_batch: bool) -> list[str]:
    names = [v for v in VARIANTS if mix.get(v, 0) > 0]
    weights = np.array([mix[v] for v in names], dtype=float)
    picks = rng.choice(len(names), size=1 if per_batch else n, p=weights / weights.sum())
    return [names[i] for i in picks] * (n if per_batch else 1)


def _image_sizes(config: EmbedderTrainConfig) -> ImageSizes:
    return ImageSizes(image=config.image_size, frame=config.frame_size, crop_long_side=config.crop_long_side,
                      key_frame=config.key_frame_size)


def _total_steps(config: EmbedderTrainConfig, n_pairs: int) -> int:
    if config.max_steps > 0:
        return config.max_steps
    return max(1, math.ceil(config.epochs * n_pairs / config.global_batch_size))


def _apply_lora(vlm, spec) -> torch.nn.Module:
    if not spec or spec.get("lora_r", 0) <= 0:
        return vlm
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=spec["lora_r"], lora_alpha=spec["lora_alpha"], lora_dropout=spec.get("lora_dropout", 0.0),
                      target_modules=list(spec["lora_target_modules"]), bias="none")
    return get_peft_model(vlm, lora)


def train_embedder(
    data_root: str | Path,
    model_dir: str | Path,
    out_dir: str | Path,
    config: EmbedderTrainConfig,
    *,
    lora: dict | None = None,
    progress: bool = True,
    resume: bool = True,
) -> EmbedderTrainResult:
    """Train the Embedder of `model_dir` on the prepared pairs under `data_root`; save to `out_dir`.

    Every `config.save_every` steps the model, optimizer, scheduler, RNG and step are checkpointed
    atomically under `out_dir/checkpoints`; with `resume`, a rerun continues from the newest one and
    ends where an uninterrupted run would. A NaN or inf loss stops the stage before it touches the
    weights (`NonFiniteLossError`); the last good checkpoint stays.
    """
    from tqdm import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from embedrl.models.factory import load_model
    from embedrl.train.contrastive import info_nce_details
    from embedrl.train.distributed import init_distributed
    from embedrl.train.sampling import DatasetBatchSampler

    started = time.perf_counter()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    dist = init_distributed()
    torch.manual_seed(config.seed)
    per_batch = config.variant_per == "batch"
    rng = np.random.default_rng(config.seed if per_batch else [config.seed, dist.rank])  # per batch: same on every rank
    out = Path(out_dir)
    mix = load_mix(config.data_mix) if config.data_mix else None
    pairs = load_pairs(data_root, "train", quarantine=out / "train_quarantine.jsonl", mix=mix)
    weights = {**(mix.weights if mix else {}), **config.dataset_weights}
    n_pairs = sum(len(v) for v in pairs.values())
    store = MediaStore(data_root)

    vlm, processor = load_model(model_dir)
    vlm = _apply_lora(vlm, lora)
    if config.gradient_checkpointing:  # recompute activations in the backward pass: memory for batch size
        vlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    vlm.train()
    inputs = EmbedderInputs(processor, sizes=_image_sizes(config))
    embedder = Embedder(vlm, inputs.emb_id)
    if torch.cuda.is_available() and not config.deepspeed:  # DeepSpeed places the model itself
        embedder.to(torch.device("cuda", dist.local_rank))
    params = [p for p in embedder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = _total_steps(config, n_pairs)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, steps)
    if config.deepspeed and 0 < config.save_every < steps:
        raise ValueError(f"train_embedder: checkpoints are not written under DeepSpeed yet (save_every="
                         f"{config.save_every} < {steps} steps); set save_every: 0 with a DeepSpeed config")
    stepper = _Stepper(embedder, params, optimizer, scheduler, config, dist)
    sampler = DatasetBatchSampler({k: len(v) for k, v in pairs.items()}, config.global_batch_size,
                                  weights=weights or None, seed=config.seed,
                                  rank=dist.rank, world_size=dist.world_size)
    batches = _endless(sampler)
    loss_fn = functools.partial(info_nce_details, temperature=config.temperature)
    checkpoints = out / "checkpoints"
    start = _resume(checkpoints, embedder, stepper) if resume else 0
    for _ in range(start):  # batches and variants are fixed by the seeds: replay them up to the checkpoint
        _, indices = next(batches)
        _pick_variants(rng, config.evidence_mix, len(indices), per_batch=per_batch)
    log_path = out / "train_log.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    history = _log_until(log_path, start)
    losses, accuracies = [r["loss"] for r in history], [r["accuracy"] for r in history]
    with (log_path.open("a", encoding="utf-8") if dist.is_main else open(os.devnull, "w")) as log_file:
        for step in tqdm(range(start + 1, steps + 1), desc="embedder", disable=not (progress and dist.is_main)):
            step_started = time.perf_counter()
            subset, indices = next(batches)
            batch = [pairs[subset][i] for i in indices]
            variants = _pick_variants(rng, config.evidence_mix, len(batch), per_batch=per_batch)
            encoder = _SideEncoder(stepper.model, store, inputs, config)
            loss = contrastive_loss(encoder, *_pair_sides(batch, variants), loss_fn,
                                    chunk_size=config.grad_cache_chunk_size)
            details, tokens = loss.details, encoder.tokens  # tokens before the backward re-embeds the chunks
            check_finite_loss("train_embedder", step, float(details.loss), latest_checkpoint(checkpoints))
            grad_norm = stepper.step(loss)
            losses.append(float(details.loss.detach()))
            accuracies.append(float(details.accuracy))
            record = {"step": step, "subset": subset, "variant": variants[0] if per_batch else "mixed",
                      "loss": losses[-1], "accuracy": accuracies[-1], "grad_norm": grad_norm,
                      "lr": stepper.scheduler.get_last_lr()[0], "seconds": time.perf_counter() - step_started,
                      "tokens": tokens}
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            if step % config.log_every == 0 or step == steps:
                log.info("embedder step %d/%d loss %.4f acc %.3f (%s)", step, steps, losses[-1], accuracies[-1], subset)
            # The last step is checkpointed too: a rerun of the finished stage (a retried pod, a resubmitted
            # run) then resumes at the end instead of training the steps after the last periodic checkpoint again.
            if config.save_every > 0 and not config.deepspeed and (step % config.save_every == 0 or step == steps):
                _checkpoint(checkpoints, step, embedder, stepper, dist, keep=config.keep_checkpoints)
    if dist.is_main:
        _save(embedder.vlm, processor, out, config, model_dir)
    if dist.world_size > 1:
        from embedrl.train.distributed import barrier

        barrier()
    return EmbedderTrainResult(out, steps, losses, accuracies, time.perf_counter() - started)


def _checkpoint(root: Path, step: int, embedder, stepper: _Stepper, dist, *, keep: int) -> None:
    if dist.is_main:
        def write(directory: Path) -> None:
            from safetensors.torch import save_model

            save_model(embedder, str(directory / "model.safetensors"))
            save_torch_state(directory / "optimizer.pt", stepper.optimizer.state_dict())
            save_torch_state(directory / "scheduler.pt", stepper.scheduler.state_dict())
            save_torch_state(directory / "rng.pt", {"torch": torch.get_rng_state()})
            write_json(directory / "state.json", {"step": step})

        write_checkpoint(root, step, write, keep=keep)
        log.info("embedder: checkpoint at step %d in %s", step, root)
    if dist.world_size > 1:
        from embedrl.train.distributed import barrier

        barrier()


def _resume(root: Path, embedder, stepper: _Stepper) -> int:
    """Load the newest checkpoint under `root` into the training state; returns its step (0: none)."""
    directory = latest_checkpoint(root)
    if directory is None:
        return 0
    from safetensors.torch import load_model

    load_model(embedder, str(directory / "model.safetensors"))
    stepper.optimizer.load_state_dict(load_torch_state(directory / "optimizer.pt"))
    stepper.scheduler.load_state_dict(load_torch_state(directory / "scheduler.pt"))
    torch.set_rng_state(load_torch_state(directory / "rng.pt")["torch"])
    state = json.loads((directory / "state.json").read_text())
    log.info("embedder: resuming from %s (step %d)", directory, state["step"])
    return int(state["step"])


def _log_until(log_path: Path, step: int) -> list[dict]:
    """The training log's records up to `step` (a resumed run rewrites the rest); empty log when step is 0."""
    kept = []
    if step > 0 and log_path.exists():
        kept = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        kept = [r for r in kept if r["step"] <= step]
    log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept


def _autocast(config: EmbedderTrainConfig):
    """bfloat16 autocast on a GPU when the config asks for it (the loss itself is computed in float32)."""
    import contextlib

    if config.bf16 and torch.cuda.is_available():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _endless(sampler):
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from sampler
        epoch += 1


@dataclass(frozen=True)
class _PairSide:
    """One side of a pair as a step shows it: its reference, stored teacher T-CoT and trace variant."""

    ref: SideRef
    teacher_text: str
    variant: str
    where: str  # names the record in errors


def _pair_sides(batch: list[Pair], variants: list[str]) -> tuple[list[_PairSide], list[_PairSide]]:
    queries, targets = [], []
    for pair, variant in zip(batch, variants, strict=True):
        for ref, text, bucket, field_name in ((pair.query, pair.query_tcot, queries, "qry_tcot"),
                                              (pair.positive, pair.positive_tcot, targets, "pos_tcot")):
            where = f"{pair.subset}: {ref.media_path or ref.clean_text[:40]!r} field={field_name}"
            bucket.append(_PairSide(ref, text, variant, where))
    return queries, targets


class _SideEncoder:
    """Embeds pair sides: loads their media and traces, collates and runs the model (bf16 autocast if set).

    Inputs are built on every call, so gradient caching holds only a chunk's pixels at a time. `tokens`
    counts the tokens of every call.
    """

    def __init__(self, model, store: MediaStore, inputs: EmbedderInputs, config: EmbedderTrainConfig):
        self.model, self.store, self.inputs, self.config = model, store, inputs, config
        self.tokens = 0

    def __call__(self, sides: Sequence[_PairSide]) -> torch.Tensor:
        encoded = []
        for side in sides:
            tcot = trace_for(side.ref, side.variant, side.teacher_text, self.store.num_frames(side.ref),
                             where=side.where)
            encoded.append(self.inputs.encode(build_side(side.ref, self.store, tcot)))
        batch = self.inputs.collate(encoded)
        self.tokens += int(batch["attention_mask"].sum())
        with _autocast(self.config):
            return self.model(batch)


class _Stepper:
    """One optimizer step: plain or DDP-style averaging (torchrun), or a DeepSpeed engine (ZeRO-2/3).

    Every rank's loss already covers the gathered global batch (see embedrl.train.distributed), so
    averaging the gradients over ranks, as DDP and DeepSpeed do, gives the one-process gradient.
    """

    def __init__(self, embedder, params, optimizer, scheduler, config: EmbedderTrainConfig, dist):
        self.params, self.optimizer, self.scheduler, self.dist = params, optimizer, scheduler, dist
        self.model = embedder
        self.engine = None
        if config.deepspeed:
            import deepspeed

            from embedrl.train.distributed import load_deepspeed_config

            ds_config = load_deepspeed_config(
                config.deepspeed, micro_batch_size=config.global_batch_size // dist.world_size,
                world_size=dist.world_size, bf16=config.bf16 and torch.cuda.is_available())
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=embedder, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config,
                model_parameters=params)
            self.model = self.engine

    def step(self, loss: ContrastiveLoss) -> float:
        """Backward and update; returns the global gradient norm before clipping."""
        if self.engine is not None:
            with self._one_reduction(loss.backward_passes):
                loss.backward(self.engine.backward)
            self.engine.step()
            return float(self.engine.get_global_grad_norm() or 0.0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _average_gradients(self.params, self.dist)
        norm = torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        return float(norm)

    def _one_reduction(self, backward_passes: int):
        """DeepSpeed: reduce the gradients of several backward passes (gradient caching) once, at the end."""
        import contextlib

        if backward_passes == 1:
            return contextlib.nullcontext()
        if not hasattr(self.engine, "coalesce_grad_reduction"):
            import deepspeed

            raise RuntimeError(f"grad_cache_chunk_size > 0 under DeepSpeed needs engine.coalesce_grad_reduction, "
                               f"which deepspeed {deepspeed.__version__} lacks; install the pinned deepspeed "
                               "(requirements/lock.txt) or set grad_cache_chunk_size: 0")
        return self.engine.coalesce_grad_reduction()


def _average_gradients(params, dist) -> None:
    """DDP-style averaging over ranks (the loss on each rank already covers the gathered batch)."""
    if dist.world_size <= 1:
        return
    import torch.distributed as tdist

    for p in params:
        if p.grad is not None:
            tdist.all_reduce(p.grad)
            p.grad /= dist.world_size


def _save(vlm, processor, out: Path, config: EmbedderTrainConfig, base_dir) -> None:
    from embedrl.models.factory import save_model_dir
    from embedrl.models.spec import ModelSpec

    if hasattr(vlm, "merge_and_unload"):
        vlm = vlm.merge_and_unload()
    vlm.eval()
    base = json.loads((Path(base_dir) / "embedrl.json").read_text()) if (Path(base_dir) / "embedrl.json").exists() else {}
    spec = ModelSpec.from_dict(base["spec"]) if "spec" in base else ModelSpec(role="embedder")
    save_model_dir(vlm, processor, out / "model", spec=spec, seed=config.seed)
    meta_path = out / "model" / "embedrl.json"
    meta = json.loads(meta_path.read_text())
    meta["stage"] = {"name": "train_embedder", "config": config_dict(config), "base_model": str(base_dir)}
    meta[IMAGE_SIZES_KEY] = _image_sizes(config).to_dict()  # what reward and evaluation show it (load_embedder)
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
