"""One step of every stage at the paper's real model sizes, with random weights (issue 7, part B).

    python benchmarks/paper_step.py --out DIR                      # CUDA GPU: paper-2b (2B Embedder, 8B Reasoner)
    python benchmarks/paper_step.py --out DIR --profile paper-4b   # the 4B Embedder
    python benchmarks/paper_step.py --out DIR --smoke              # tiny widths, real vocabulary: CPU, about a minute

The models are built in memory on the device from embedrl/models/qwen3_vl_architectures.yaml: full depth, the
real widths, vocabulary (151936 rows), head counts and token ids, random weights, bf16, and the stand-in
tokenizer (the real added tokens and length, the project's small BPE for ordinary text, so texts are made to
a target length in tokens). The profile gives LoRA, temperature and EG-RL settings. Stages, timed apart:

1. embedder: one contrastive step of the LoRA Embedder (gradient checkpointing, GradCache chunks, symmetric
   InfoNCE), `--pairs` pairs of an image side with its teacher T-CoT and evidence crop and a text side.
2. sft: one next-token step of the fully trained 8B Reasoner on `--sft-batch` image prompts with a T-CoT.
3. grpo: one EG-RL step: `--generations` rollouts for each side of `--grpo-pairs` pairs (HF `generate`; the
   cluster uses vLLM), the three rewards (`EGRLRewards`: the frozen Embedder, the local lexical judge; a
   rollout of the random Reasoner that is no T-CoT is scored as the teacher's T-CoT, so the Embedder sees
   real-length inputs), group-normalised advantages, trl's clipped loss with a KL to a reference copy, one
   optimizer step.
4. eval: one evaluation batch: the Reasoner writes `--eval-queries` query T-CoTs (greedy), the Embedder
   embeds them with their evidence and `--eval-candidates` candidates each.

Each stage reports seconds, tokens, tokens/s and peak memory (GPU: torch's peak allocation; CPU: the
process's peak RSS). The 8B Reasoner with AdamW (bf16 states) and a reference copy needs about 100 GB: on an
80 GB card pass `--reasoner-optimizer sgd` (no optimizer state). Measured on an H200: docs/gpu.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import logging
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

log = logging.getLogger("paper_step")

STAGES = ("embedder", "sft", "grpo", "eval")
# --smoke: the real vocabulary and token ids, tiny widths (a model of a few million parameters)
SMOKE_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 16, "mrope_section": [4, 2, 2]}
SMOKE_VISION = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                "deepstack_visual_indexes": [0, 1]}
SMOKE_MIN_PIXELS = 64 * 64
FILLER = ("the red star sits left of a blue square near the top edge while a small green circle with a dot "
          "stays below it and the caption names the colour of the marked shape in the table cell ")


@dataclass(frozen=True)
class Settings:
    """Sizes of one run; the defaults are a GPU run, `smoke()` a CPU run in about a minute."""

    pairs: int = 64
    chunk: int = 32
    image_size: int = 448
    text_tokens: int = 32
    tcot_tokens: int = 192
    sft_batch: int = 8
    grpo_pairs: int = 4
    generations: int = 8
    max_new_tokens: int = 512
    grpo_micro_batch: int = 8
    eval_queries: int = 32
    eval_candidates: int = 8
    reasoner_optimizer: str = "adamw"
    prompt_style: str = "full"  # the paper profiles' Reasoner prompt; smoke: short

    def __post_init__(self) -> None:
        if self.reasoner_optimizer not in ("adamw", "sgd"):
            raise ValueError(f"reasoner_optimizer={self.reasoner_optimizer!r}: expected adamw or sgd")
        if self.grpo_pairs < 2:
            raise ValueError(f"grpo_pairs={self.grpo_pairs}: the outcome reward needs at least 2 pairs (negatives)")

    @classmethod
    def smoke(cls) -> Settings:
        return cls(pairs=4, chunk=2, image_size=64, text_tokens=8, tcot_tokens=24, sft_batch=2, grpo_pairs=2,
                   generations=2, max_new_tokens=4, grpo_micro_batch=2, eval_queries=2, eval_candidates=2,
                   prompt_style="short")


class Meter:
    """Wall seconds and peak memory of a block (GPU: peak allocation; CPU: the process's peak RSS so far)."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.peak_gib = device, 0.0, 0.0

    def __enter__(self) -> Meter:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_gib = torch.cuda.max_memory_allocated() / 2**30
        else:
            self.peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        self.seconds = time.perf_counter() - self._started


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


# ------------------------------------------------------------------------------------------- inputs
def text_of(tokenizer, n_tokens: int, seed: int) -> str:
    """A text of about `n_tokens` tokens of the stand-in tokenizer (words rotated by `seed`)."""
    words = FILLER.split()
    rotated = " ".join(words[seed % len(words):] + words[: seed % len(words)])
    ids = tokenizer(rotated * (1 + n_tokens // 8), add_special_tokens=False)["input_ids"][:n_tokens]
    return tokenizer.decode(ids).strip()


def tcot_text(tokenizer, n_tokens: int, seed: int) -> str:
    """A well-formed image T-CoT (one box cue) of about `n_tokens` tokens."""
    x = 100 + 37 * seed % 400
    cue = f'{{"bbox_2d": [[{x}, 150, {x + 300}, 650]]}}'
    return (f"<thinking>{text_of(tokenizer, max(1, n_tokens - 40), seed)} {cue}</thinking>"
            f"<rethink>{text_of(tokenizer, 12, seed + 1)}</rethink><answer>{text_of(tokenizer, 10, seed + 2)}</answer>")


def write_images(root: Path, count: int, size: int) -> list[str]:
    """`count` drawn images under root/images (relative paths)."""
    from PIL import Image, ImageDraw

    paths = []
    for i in range(count):
        image = Image.new("RGB", (size, size), ((47 * i) % 256, (83 * i) % 256, 90))
        ImageDraw.Draw(image).ellipse((size // 4, size // 5, size // 2 + i % (size // 4), size // 2), fill=(230, 40, 40))
        rel = f"images/{i:04d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / rel)
        paths.append(rel)
    return paths


@dataclass
class Workload:
    """The synthetic data every stage draws from: image sides with texts and teacher-like T-CoTs."""

    store: object
    refs: list  # SideRef per image
    texts: list[str]  # a text side per image (the positive of a pair)
    tcots: list[str]  # the teacher T-CoT of each image side


def make_workload(root: Path, tokenizer, settings: Settings, count: int) -> Workload:
    from embedrl.data.sides import MediaStore, SideRef

    paths = write_images(root, count, settings.image_size)
    refs = [SideRef(text_of(tokenizer, settings.text_tokens, i), path) for i, path in enumerate(paths)]
    texts = [text_of(tokenizer, settings.text_tokens, 1000 + i) for i in range(count)]
    tcots = [tcot_text(tokenizer, settings.tcot_tokens, i) for i in range(count)]
    return Workload(MediaStore(root), refs, texts, tcots)


# ------------------------------------------------------------------------------------------- models
def architecture(name: str, smoke: bool):
    from embedrl.models.architectures import load_architecture

    arch = load_architecture(name)
    if smoke:  # and a small least image size, so that a smoke image is a few visual tokens
        arch = dataclasses.replace(arch.overridden(text=SMOKE_TEXT, vision=SMOKE_VISION),
                                   processor={**arch.processor, "min_pixels": SMOKE_MIN_PIXELS})
    return arch


def build(name: str, smoke: bool, device: torch.device):
    from embedrl.models.architectures import build_model

    arch = architecture(name, smoke)
    dtype = "float32" if device.type == "cpu" else "bfloat16"
    model, processor = build_model(arch, dtype=dtype, device=device)
    log.info("built %s: %.2fB parameters, %s on %s", arch.name, sum(p.numel() for p in model.parameters()) / 1e9,
             dtype, device)
    return model, processor


def image_sizes(settings: Settings):
    from embedrl.models.embedder import ImageSizes

    size = settings.image_size
    return ImageSizes(image=size, frame=max(32, size // 2), crop_long_side=max(32, size // 2), key_frame=size)


def optimizer_for(params, kind: str, lr: float):
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


# ------------------------------------------------------------------------------------------- stages
def embedder_stage(vlm, processor, spec: dict, config, settings: Settings, work: Workload, device) -> dict:
    """One LoRA contrastive step: image sides with T-CoT and crop against their text sides."""
    from embedrl.models.embedder import Embedder, EmbedderInputs, Side
    from embedrl.tcot import parse
    from embedrl.train.contrastive import info_nce_details
    from embedrl.train.embedder import _apply_lora, build_side
    from embedrl.train.gradcache import contrastive_loss

    vlm = _apply_lora(vlm, spec)
    vlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    vlm.train()
    inputs = EmbedderInputs(processor, sizes=image_sizes(settings))
    embedder = Embedder(vlm, inputs.emb_id)
    queries = [build_side(ref, work.store, parse(t, modality="image")) for ref, t in zip(work.refs, work.tcots,
                                                                                          strict=True)]
    targets = [Side(text) for text in work.texts]
    tokens = sum(len(inputs.encode(side).input_ids) for side in queries + targets)

    def encode(sides):
        return embedder({k: v.to(device) for k, v in inputs.collate([inputs.encode(s) for s in sides]).items()})

    params = [p for p in embedder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    with Meter(device) as meter:
        loss = contrastive_loss(encode, queries, targets,
                                functools.partial(info_nce_details, temperature=config.temperature),
                                chunk_size=settings.chunk)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    vlm.eval()
    return {"pairs": len(queries), "chunk": settings.chunk, "trainable_parameters": sum(p.numel() for p in params),
            "loss": float(loss.details.loss), "seconds": meter.seconds, "tokens": tokens,
            "tokens_per_second": _rate(tokens, meter.seconds), "peak_memory_gib": meter.peak_gib,
            "embedder": embedder, "inputs": inputs}


def _prompt_and_images(processor, prompt, ref, store, role: str = "query"):
    from embedrl.models.reasoner import reasoner_images, reasoner_messages

    messages = reasoner_messages(ref, role, prompt)
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text, reasoner_images(ref, store, prompt)


def sft_stage(model, processor, prompt, settings: Settings, work: Workload, device) -> dict:
    """One next-token step on image prompts with their T-CoT; loss on the completion tokens only."""
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "right"
    rows = range(settings.sft_batch)
    texts, images, completion_lengths = [], [], []
    for i in rows:
        prompt_text, media = _prompt_and_images(processor, prompt, work.refs[i], work.store)
        completion = work.tcots[i] + "<|im_end|>\n"
        texts.append(prompt_text + completion)
        images += media
        completion_lengths.append(len(tokenizer(completion, add_special_tokens=False)["input_ids"]))
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True).to(device)
    labels = torch.full_like(batch["input_ids"], -100)
    for row, n_completion in enumerate(completion_lengths):
        end = int(batch["attention_mask"][row].sum())
        labels[row, end - n_completion:end] = batch["input_ids"][row, end - n_completion:end]
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = optimizer_for(model.parameters(), settings.reasoner_optimizer, 1e-5)
    with Meter(device) as meter:
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    del optimizer
    tokens = int(batch["attention_mask"].sum())
    return {"batch": settings.sft_batch, "optimizer": settings.reasoner_optimizer, "loss": float(loss.detach()),
            "seconds": meter.seconds, "tokens": tokens, "tokens_per_second": _rate(tokens, meter.seconds),
            "peak_memory_gib": meter.peak_gib}


def _completion_mask(completions: torch.Tensor, eos_ids: set[int]) -> torch.Tensor:
    """1 up to and including the first end-of-turn token of each row, 0 after it."""
    is_eos = torch.zeros_like(completions, dtype=torch.bool)
    for eos in eos_ids:
        is_eos |= completions == eos
    after = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
    return (~after).long()


def _token_logprobs(model, sequences, attention, pixels, grids, n_completion: int) -> torch.Tensor:
    image_token_id = model.config.image_token_id
    out = model(input_ids=sequences, attention_mask=attention, pixel_values=pixels, image_grid_thw=grids,
                mm_token_type_ids=(sequences == image_token_id).long(), logits_to_keep=n_completion + 1)
    logits = out.logits[:, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, sequences[:, -n_completion:, None]).squeeze(-1)


def grpo_stage(policy, processor, embedder, inputs, egrl_config, settings: Settings, work: Workload, device,
               out: Path, prompt) -> dict:
    """Generate G rollouts per side, reward them, and take one clipped policy-gradient step with a KL."""
    from embedrl.tcot import TCoTFormatError, parse
    from embedrl.train.egrl import EGRLRewards

    tokenizer, g = processor.tokenizer, settings.generations
    tokenizer.padding_side = "left"
    sides = [work.refs[i // 2] if i % 2 == 0 else work.refs[len(work.refs) // 2 + i // 2]
             for i in range(2 * settings.grpo_pairs)]  # [q0, t0, q1, t1, ...]: image sides both
    prompts = [_prompt_and_images(processor, prompt, ref, work.store, "query" if i % 2 == 0 else "target")
               for i, ref in enumerate(sides)]
    batch = processor(text=[p for p, _ in prompts], images=[im for _, ims in prompts for im in ims],
                      return_tensors="pt", padding=True).to(device)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    policy.eval()
    with Meter(device) as generation:
        sequences = policy.generate(**batch, do_sample=True, temperature=egrl_config.temperature, top_p=None,
                                    top_k=None, num_return_sequences=g, max_new_tokens=settings.max_new_tokens,
                                    pad_token_id=tokenizer.pad_token_id)
    prompt_length = batch["input_ids"].shape[1]
    completions = sequences[:, prompt_length:]
    eos_ids = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id}
    completion_mask = _completion_mask(completions, eos_ids)
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)

    def scored_text(index: int, text: str) -> str:  # what a trained Reasoner writes, for real-length rewards
        try:
            parse(text, modality="image")
            return text
        except (TCoTFormatError, ValueError):
            return work.tcots[work.refs.index(sides[index // g])]

    reward_texts = [scored_text(i, t) for i, t in enumerate(texts)]
    columns = {"side": [i // g for i in range(len(texts))],
               "role": ["query" if (i // g) % 2 == 0 else "target" for i in range(len(texts))],
               "pair_index": [(i // g) // 2 for i in range(len(texts))]}
    rewards_fn = EGRLRewards(sides, work.store, embedder, inputs, egrl_config, out / "grpo_rewards.jsonl", prompt)
    with Meter(device) as reward_meter:
        parts = [torch.tensor(fn(None, reward_texts, **columns)) for fn in rewards_fn.functions()]
    weights = torch.tensor(egrl_config.reward_weights, dtype=torch.float32)
    rewards = sum(w * r for w, r in zip(weights, parts, strict=True)).view(-1, g)
    advantages = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)).view(-1)

    image_patches = batch["image_grid_thw"].prod(dim=1).tolist()
    pixel_rows = torch.split(batch["pixel_values"], image_patches)
    policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy.train()
    optimizer = optimizer_for(policy.parameters(), settings.reasoner_optimizer, egrl_config.learning_rate)
    n, n_completion = sequences.shape[0], completions.shape[1]
    total_mask = completion_mask.sum().clamp(min=1)
    with Meter(device) as update:
        for start in range(0, n, settings.grpo_micro_batch):
            rows = list(range(start, min(n, start + settings.grpo_micro_batch)))
            prompt_rows = [r // g for r in rows]
            attention = torch.cat([batch["attention_mask"][prompt_rows], completion_mask[rows]], dim=1)
            pixels = torch.cat([pixel_rows[p] for p in prompt_rows])
            grids = batch["image_grid_thw"][prompt_rows]
            logp = _token_logprobs(policy, sequences[rows], attention, pixels, grids, n_completion)
            with torch.no_grad():
                ref_logp = _token_logprobs(reference, sequences[rows], attention, pixels, grids, n_completion)
            ratio = torch.exp(logp - logp.detach())  # one update per generation: the old policy is this one
            advantage = advantages[rows].to(device)[:, None]
            clipped = torch.clamp(ratio, 1 - egrl_config.epsilon, 1 + egrl_config.epsilon)
            surrogate = -torch.minimum(ratio * advantage, clipped * advantage)
            kl = torch.exp(ref_logp - logp) - (ref_logp - logp) - 1
            loss = ((surrogate + egrl_config.beta * kl) * completion_mask[rows]).sum() / total_mask
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    del optimizer, reference
    policy.eval()
    generated = int(completion_mask.sum())
    all_tokens = int(batch["attention_mask"].sum()) * g + generated
    return {"prompts": len(sides), "generations": g, "completions": n, "max_new_tokens": settings.max_new_tokens,
            "optimizer": settings.reasoner_optimizer,
            "rollouts_scored_as_teacher_tcot": sum(a != b for a, b in zip(texts, reward_texts, strict=True)),
            "reward_mean": float(rewards.mean()),
            "generation_seconds": generation.seconds, "generated_tokens": generated,
            "generation_tokens_per_second": _rate(generated, generation.seconds),
            "reward_seconds": reward_meter.seconds, "update_seconds": update.seconds,
            "update_tokens": all_tokens, "update_tokens_per_second": _rate(all_tokens, update.seconds),
            "seconds": generation.seconds + reward_meter.seconds + update.seconds,
            "peak_memory_gib": max(generation.peak_gib, reward_meter.peak_gib, update.peak_gib)}


@contextlib.contextmanager
def _counting_generate(model, counts: list[int]):
    """Count the new tokens (not padding) of every `model.generate` call made inside the block."""
    plain = model.generate

    def counting(*args, **kwargs):
        out = plain(*args, **kwargs)
        new = out[:, kwargs["input_ids"].shape[1]:]
        counts.append(int((new != kwargs.get("pad_token_id", -1)).sum()))
        return out

    model.generate = counting
    try:
        yield
    finally:
        del model.generate  # back to the class's method


def eval_stage(reasoner_model, processor, embedder, inputs, prompt, settings: Settings, work: Workload,
               device) -> dict:
    """The Reasoner's query T-CoTs (greedy), then the Embedder on the queries and their candidates."""
    from embedrl.models.embedder import Side
    from embedrl.models.prefix_cache import embed_plain
    from embedrl.models.reasoner import Reasoner
    from embedrl.tcot import TCoTFormatError, parse
    from embedrl.train.embedder import build_side

    n_queries, n_candidates = settings.eval_queries, settings.eval_candidates
    reasoner = Reasoner(reasoner_model, processor, prompt=prompt, max_new_tokens=settings.max_new_tokens)
    refs = work.refs[:n_queries]
    generated: list[int] = []
    with Meter(device) as generation, _counting_generate(reasoner_model, generated):
        written = reasoner.generate(refs, ["query"] * n_queries, work.store, batch_size=n_queries)
    traces = []
    for i, text in enumerate(written):
        try:
            traces.append(parse(text, modality="image"))
        except (TCoTFormatError, ValueError):
            traces.append(parse(work.tcots[i], modality="image"))  # as a trained Reasoner would write
    queries = [build_side(ref, work.store, trace) for ref, trace in zip(refs, traces, strict=True)]
    candidates = [Side(work.texts[(i + j) % len(work.texts)]) for i in range(n_queries) for j in range(n_candidates)]
    tokens = sum(len(inputs.encode(side).input_ids) for side in queries + candidates)
    with Meter(device) as embedding, torch.no_grad():
        q = torch.from_numpy(embed_plain(embedder, inputs, queries, batch_size=128))
        c = torch.from_numpy(embed_plain(embedder, inputs, candidates, batch_size=128)).view(n_queries, n_candidates, -1)
    hit_at_1 = float(((c @ q[:, :, None]).squeeze(-1).argmax(dim=1) == 0).float().mean())
    generated_tokens = sum(generated)
    return {"queries": n_queries, "candidates_per_query": n_candidates, "max_new_tokens": settings.max_new_tokens,
            "generation_seconds": generation.seconds, "generated_tokens": generated_tokens,
            "generation_tokens_per_second": _rate(generated_tokens, generation.seconds),
            "embedding_seconds": embedding.seconds, "embedding_tokens": tokens,
            "embedding_tokens_per_second": _rate(tokens, embedding.seconds), "hit_at_1_random_weights": hit_at_1,
            "seconds": generation.seconds + embedding.seconds,
            "peak_memory_gib": max(generation.peak_gib, embedding.peak_gib)}


# --------------------------------------------------------------------------------------------- main
def stage_configs(profile: str, gpu: bool, out: Path):
    """The profile's Embedder and EG-RL settings (EG-RL built without vLLM, DeepSpeed or a chat judge here)."""
    from embedrl.config import EmbedderTrainConfig, build_config
    from embedrl.models.spec import load_model_specs
    from embedrl.train.egrl import EGRLStageConfig

    specs = load_model_specs(profile)
    embedder_config = build_config(EmbedderTrainConfig, profile, "embedder")
    egrl_config = build_config(EGRLStageConfig, profile, "egrl", output_dir=str(out / "egrl"), use_vllm=False,
                               deepspeed="", judge="lexical", report_to="none", bf16=gpu, use_cpu=not gpu)
    return specs, embedder_config, egrl_config


def run(profile: str, settings: Settings, out: Path, *, smoke: bool, stages: tuple[str, ...]) -> dict:
    from embedrl.models.architectures import load_architecture
    from embedrl.models.reasoner import ReasonerPrompt

    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    specs, embedder_config, egrl_config = stage_configs(profile, gpu, out)
    results: dict = {"profile": profile, "smoke": smoke, "settings": dataclasses.asdict(settings)}
    vlm, embedder_processor = build(load_architecture(specs["embedder"].source).name, smoke, device)
    count = max(settings.pairs, settings.sft_batch, 2 * settings.grpo_pairs, settings.eval_queries)
    work = make_workload(out / "data", embedder_processor.tokenizer, settings, count)
    stage = embedder_stage(vlm, embedder_processor, specs["embedder"].to_dict(), embedder_config, settings, work,
                           device)
    embedder, inputs = stage.pop("embedder"), stage.pop("inputs")
    if "embedder" in stages:
        results["embedder"] = stage
    reasoner, processor = build(load_architecture(specs["reasoner"].source).name, smoke, device)
    prompt = ReasonerPrompt(style=settings.prompt_style, image_size=settings.image_size,
                            frame_size=max(32, settings.image_size // 2))
    later = {"sft": lambda: sft_stage(reasoner, processor, prompt, settings, work, device),
             "grpo": lambda: grpo_stage(reasoner, processor, embedder, inputs, egrl_config, settings, work, device,
                                        out, prompt),
             "eval": lambda: eval_stage(reasoner, processor, embedder, inputs, prompt, settings, work, device)}
    for name in (s for s in STAGES[1:] if s in stages):
        results[name] = _guarded(name, later[name], device)
        write_result(out / "paper_step.partial.json", "paper_step", results)
    return results


def _guarded(name: str, stage, device: torch.device) -> dict:
    """Run one stage; a failure (out of memory on a smaller card, say) is recorded and the next stage still runs."""
    try:
        return stage()
    except (RuntimeError, ValueError) as error:  # torch.OutOfMemoryError is a RuntimeError
        log.exception("stage %s failed", name)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"error": f"{type(error).__name__}: {error}"[:2000]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="work directory (synthetic images, paper_step.json)")
    parser.add_argument("--profile", default="paper-2b", help="paper profile: its models, LoRA and stage settings")
    parser.add_argument("--smoke", action="store_true", help="tiny widths with the real vocabulary, for CPU")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {', '.join(STAGES)}")
    for field in dataclasses.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=type(field.default), default=None, help=f"default {field.default} (GPU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("paper_step.py: the real sizes need a CUDA GPU; use --smoke on CPU", file=sys.stderr)
        return 2
    stages = tuple(s for s in args.stages.split(",") if s)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        print(f"paper_step.py: unknown stage(s) {unknown}; choose from {', '.join(STAGES)}", file=sys.stderr)
        return 2
    base = Settings.smoke() if args.smoke else Settings()
    settings = dataclasses.replace(base, **{f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)
                                            if getattr(args, f.name) is not None})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = run(args.profile, settings, out, smoke=args.smoke, stages=stages)
    results["seconds"] = time.perf_counter() - started
    write_result(out / "paper_step.json", "paper_step", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
