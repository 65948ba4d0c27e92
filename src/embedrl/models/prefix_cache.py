"""Embedding many sides at once, sharing the work of a common prefix (EG-RL's G rollouts per side).

In EG-RL the frozen Embedder embeds G rollouts of every query and target. The rollouts of one side
share everything before the T-CoT (chat head, media, text) and differ only after it (T-CoT, evidence
crops or frames, summary prompt, `<emb>`). `embed_sides` runs the vision tower and the decoder over each
distinct prefix once, keeps its keys and values (a `DynamicCache`), repeats them for the rollouts of that
prefix, and runs all suffixes in one batched forward. The vectors are those of `Embedder.forward` on the
whole sequences (float32: equal within 1e-4; what differs is the order of summation).

Why the split is exact:
- positions: multimodal RoPE positions depend only on the tokens before them. The prefix gets the
  positions `get_rope_index` gives it alone; the suffix gets its own, shifted by the prefix's next
  position (its largest position + 1: a prefix ends in text, after which `get_rope_index` continues
  from there). The shift is exact because vision positions are their start plus a grid offset.
- deepstack: each pass adds the early-layer visual features at the image tokens of its own tokens (the
  prefix pass the media's, the suffix pass the evidence's), as the whole-sequence pass does.
- padding: prefixes are left-padded and suffixes right-padded, so a rollout's keys read [pad, prefix,
  suffix, pad] with no hole between real tokens; the 2D mask covers both paddings and `<emb>` is read
  at each row's last real token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import DynamicCache

from embedrl.models.embedder import Embedder, EmbedderInputs, Encoded, Side, language_backbone


@torch.no_grad()
def embed_sides(embedder: Embedder, inputs: EmbedderInputs, sides: Sequence[Side], *, shared_prefix: bool = True,
                batch_size: int = 64) -> np.ndarray:
    """Unit vectors [len(sides), D] in the order of `sides`, as `Embedder.forward` gives them.

    With `shared_prefix`, sides with the same prefix (text, media kind and media pixels) share one
    prefix pass. The plain way (`embed_plain`) serves: a side whose prefix no other side has (nothing to
    share, and two passes cost more than one); a backbone without Qwen-VL's `get_rope_index` (the suffix
    positions could not be continued from the prefix); an embedder that is not an `Embedder` (a stand-in
    known only by its whole-sequence call). `batch_size` bounds the rollouts of one forward.
    """
    if not sides:
        raise ValueError("embed_sides: no sides to embed")
    backbone = _splittable_backbone(embedder) if shared_prefix else None
    if backbone is None:
        return embed_plain(embedder, inputs, sides, batch_size=batch_size)
    groups = group_by_prefix(sides)
    alone = [g[0] for g in groups if len(g) == 1]
    shared = [g for g in groups if len(g) > 1]
    parts: list[tuple[list[int], np.ndarray]] = []
    if alone:
        parts.append((alone, embed_plain(embedder, inputs, [sides[i] for i in alone], batch_size=batch_size)))
    if shared:
        parts.append(_embed_shared(backbone, inputs, sides, shared, batch_size))
    out = np.empty((len(sides), parts[0][1].shape[1]), dtype=np.float32)
    for rows, vectors in parts:
        out[rows] = vectors
    return out


@torch.no_grad()
def embed_plain(embedder: Embedder, inputs: EmbedderInputs, sides: Sequence[Side], *,
                batch_size: int = 64) -> np.ndarray:
    """Unit vectors [len(sides), D]: every side encoded whole, `batch_size` sides per forward."""
    return np.concatenate([
        embedder(inputs.collate([inputs.encode(s) for s in sides[i:i + batch_size]])).float().cpu().numpy()
        for i in range(0, len(sides), batch_size)])


def group_by_prefix(sides: Sequence[Side]) -> list[list[int]]:
    """Indices of `sides` grouped by what `EmbedderInputs.encode_prefix` depends on, in first-seen order."""
    digests: dict[int, tuple] = {}  # by id(image): the rollouts of one side share the loaded media objects

    def digest(image: Image.Image) -> tuple:
        if id(image) not in digests:
            digests[id(image)] = (image.mode, image.size, hashlib.blake2b(image.tobytes(), digest_size=16).digest())
        return digests[id(image)]

    groups: dict[tuple, list[int]] = {}
    for i, side in enumerate(sides):
        key = (side.text, side.media_kind, tuple(digest(m) for m in side.media))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _splittable_backbone(embedder: Embedder):
    """The Qwen-VL backbone of `embedder` when its forward can be split after the prefix, else None."""
    vlm = getattr(embedder, "vlm", None)
    if vlm is None:  # a stand-in for the Embedder (tests): only its whole-sequence call is known
        return None
    backbone = language_backbone(vlm)
    return backbone if hasattr(backbone, "get_rope_index") and hasattr(backbone, "language_model") else None


def _embed_shared(backbone, inputs: EmbedderInputs, sides: Sequence[Side], groups: list[list[int]],
                  batch_size: int) -> tuple[list[int], np.ndarray]:
    """Rows and vectors of the grouped sides, `batch_size` rollouts per suffix pass (a group cut by a
    chunk boundary has its prefix run in both chunks)."""
    order = [i for g in groups for i in g]
    group_of = [k for k, g in enumerate(groups) for _ in g]
    prefixes: dict[int, Encoded] = {}
    vectors = []
    for start in range(0, len(order), batch_size):
        rows, owners = order[start:start + batch_size], group_of[start:start + batch_size]
        distinct = list(dict.fromkeys(owners))
        for k in distinct:
            if k not in prefixes:
                prefixes[k] = inputs.encode_prefix(sides[groups[k][0]])
        local = {k: j for j, k in enumerate(distinct)}
        vectors.append(embed_suffixes(backbone, inputs, [prefixes[k] for k in distinct],
                                      [inputs.encode_suffix(sides[i]) for i in rows],
                                      torch.tensor([local[k] for k in owners])))
    return order, torch.cat(vectors).float().cpu().numpy()


@torch.no_grad()
def embed_suffixes(backbone, inputs: EmbedderInputs, prefixes: Sequence[Encoded], suffixes: Sequence[Encoded],
                   owner: torch.Tensor) -> torch.Tensor:
    """Unit vectors [len(suffixes), D] of the sequences prefixes[owner[r]] + suffixes[r]: one prefix pass
    over the distinct prefixes, one suffix pass over all suffixes with the prefix keys/values repeated."""
    device = next(backbone.parameters()).device
    head = inputs.collate(prefixes)  # left-padded
    head_positions = _positions(backbone, head)
    cache = DynamicCache(config=backbone.language_model.config)
    backbone(**_to(head, device), position_ids=head_positions.to(device), cache=cache, use_cache=True)
    cache.batch_select_indices(owner.to(device))

    tail = inputs.collate(suffixes, padding_side="right")
    next_position = head_positions.amax(dim=(0, 2)) + 1  # [prefixes]; padding sits at 0
    tail_positions = _positions(backbone, tail) + next_position[owner].view(1, -1, 1)
    mask = torch.cat([head["attention_mask"][owner], tail["attention_mask"]], dim=1)
    out = backbone(**_to({**tail, "attention_mask": mask}, device), position_ids=tail_positions.to(device),
                   cache=cache, use_cache=True)
    last = (tail["attention_mask"].sum(dim=1) - 1).to(device)
    hidden = out.last_hidden_state[torch.arange(len(suffixes), device=device), last]
    return F.normalize(hidden.float(), dim=-1)


def _positions(backbone, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[3, B, L] multimodal RoPE positions of a padded batch, each row from 0 (padding at 0), on the CPU."""
    positions, _ = backbone.get_rope_index(batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
                                           image_grid_thw=batch.get("image_grid_thw"),
                                           attention_mask=batch["attention_mask"])
    return positions


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}
