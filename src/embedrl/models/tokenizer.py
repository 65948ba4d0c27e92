"""A small Qwen-style byte-level BPE tokenizer, trained offline on the project's own corpus.

Tiny models cannot download Qwen's 151k-token vocabulary, so they get their own: the same
pre-tokenizer regex, NFC normaliser and byte-level decoder as Qwen2/Qwen3, the Qwen special tokens,
the Embedder's `<emb>` and the T-CoT tags. Training takes well under a second and is deterministic
(same corpus -> byte-identical files), so a model directory can be rebuilt from its seed alone.

`<emb>` is special (the Embedder pools its hidden state; it never appears in generated text), while
the T-CoT tags are ordinary added tokens: one id each, but they survive
`decode(..., skip_special_tokens=True)`, because the Reasoner's output is parsed by them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

EMB_TOKEN = "<emb>"
TCOT_TAGS: tuple[str, ...] = ("<thinking>", "</thinking>", "<rethink>", "</rethink>", "<answer>", "</answer>")

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    VISION_START,
    VISION_END,
    IMAGE_PAD,
    VIDEO_PAD,
)
# Order fixes the ids: the BPE trainer puts these first (0..7), then the 256 byte symbols, then merges.
SPECIAL_TOKENS: tuple[str, ...] = (*QWEN_SPECIAL_TOKENS, EMB_TOKEN)

DEFAULT_VOCAB_SIZE = 1024

# Qwen-VL style chat template. Like Qwen3-VL (and unlike Qwen2-VL) there is no default system turn,
# which keeps tiny prompts short. A content part is {"type": "image"|"video"|"text", ...}.
CHAT_TEMPLATE = r"""{%- for message in messages %}
{{- '<|im_start|>' + message['role'] + '\n' }}
{%- if message['content'] is string %}
{{- message['content'] }}
{%- else %}
{%- for part in message['content'] %}
{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part %}
{{- '<|vision_start|><|image_pad|><|vision_end|>' }}
{%- elif part['type'] == 'video' or 'video' in part %}
{{- '<|vision_start|><|video_pad|><|vision_end|>' }}
{%- elif part['type'] == 'text' %}
{{- part['text'] }}
{%- endif %}
{%- endfor %}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\n' }}
{%- endif %}"""

# Text the chat template and the project's prompts put around the data; trained on so that the
# words common to every prompt become single tokens.
PROMPT_LINES: tuple[str, ...] = (
    "system\nYou are a helpful assistant.",
    "user\n",
    "assistant\n",
    "Summarize the above content in one word:",
    "Represent the given image. Represent the given text. Represent the given video. "
    "Represent the given document page.",
    "Given the query, write a traceable chain of thought: <thinking> with steps and a JSON cue, "
    "<rethink> checking the evidence against the task, <answer> a one-line summary.",
    'Use {"bbox_2d": [x1, y1, x2, y2]} for boxes in 0-1000 coordinates, {"key_frames": [1, 2]} for '
    'frames (1-based) and {"text_keywords": ["..."]} for keywords.',
    "Is the candidate relevant to the query? Answer yes or no.",
)


def training_corpus(extra_lines: Iterable[str] = ()) -> list[str]:
    """The lines the tokenizer is trained on: MiniMMEB's corpus, the prompt templates, `extra_lines`."""
    from embedrl.data.minimmeb.vocab import corpus_lines

    return [*corpus_lines(), *PROMPT_LINES, *TCOT_TAGS, *extra_lines]


def train_bpe(
    lines: Sequence[str], vocab_size: int = DEFAULT_VOCAB_SIZE, min_frequency: int = 1
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a Qwen-style byte-level BPE; return its (vocab, merges), special tokens included in vocab.

    Deterministic: the lines are de-duplicated and sorted first, and the trainer's ties are broken
    by token id, so the result depends only on the set of lines.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sorted(set(lines)), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return dict(model["vocab"]), merges


def build_tokenizer(
    vocab_size: int = DEFAULT_VOCAB_SIZE, extra_lines: Iterable[str] = ()
) -> PreTrainedTokenizerBase:
    """Train on `training_corpus(extra_lines)` and wrap as a `Qwen2Tokenizer` with the chat template."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    if vocab_size < 256 + len(SPECIAL_TOKENS) + len(TCOT_TAGS):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE needs 256 byte symbols plus "
            f"{len(SPECIAL_TOKENS) + len(TCOT_TAGS)} special and T-CoT tokens; use at least 512."
        )
    vocab, merges = train_bpe(training_corpus(extra_lines), vocab_size=vocab_size - len(TCOT_TAGS))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=list(merges),
        unk_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=CHAT_TEMPLATE,
        extra_special_tokens={
            "image_token": IMAGE_PAD,
            "video_token": VIDEO_PAD,
            "vision_start_token": VISION_START,
            "vision_end_token": VISION_END,
            "emb_token": EMB_TOKEN,
        },
        model_max_length=32768,
    )
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TCOT_TAGS])
    return tokenizer


def build_standin_tokenizer(
    added_tokens: Sequence[tuple[int, str, bool]],
    *,
    base_vocab_size: int,
    eos_token: str,
    pad_token: str,
) -> PreTrainedTokenizerBase:
    """A tokenizer laid out like a released Qwen one, for a real architecture built offline.

    `added_tokens` are the released tokenizer's added tokens as (id, content, special), with ids that follow
    on from `base_vocab_size` (Qwen3: 151643 regular entries, then `<|endoftext|>` ... `</think>`). The stand-in
    has the same added tokens at the same ids and the same length, so a model config's token ids, its
    embedding rows and the id `<emb>` gets when the factory adds it are those of the real checkpoint. Its
    regular vocabulary is the small BPE of `build_tokenizer`, padded with filler entries no merge produces:
    how text splits into tokens is **not** the real tokenizer's. `<emb>` and the T-CoT tags are left out, as
    in a released checkpoint (`embedrl.models.factory` adds them).
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    _check_added_ids(added_tokens, base_vocab_size)
    trained, merges = train_bpe(training_corpus(), vocab_size=DEFAULT_VOCAB_SIZE - len(TCOT_TAGS))
    regular = [token for token, _ in sorted(trained.items(), key=lambda item: item[1]) if token not in SPECIAL_TOKENS]
    vocab = {token: index for index, token in enumerate(regular)}
    vocab.update({f"<|standin_filler_{index}|>": index for index in range(len(regular), base_vocab_size)})
    vocab.update({content: token_id for token_id, content, _ in added_tokens})
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=list(merges),
        unk_token=None,
        eos_token=eos_token,
        pad_token=pad_token,
        chat_template=CHAT_TEMPLATE,
        extra_special_tokens={"image_token": IMAGE_PAD, "video_token": VIDEO_PAD,
                              "vision_start_token": VISION_START, "vision_end_token": VISION_END},
        model_max_length=32768,
    )
    tokenizer.add_tokens([AddedToken(content, special=special, normalized=False)
                          for _, content, special in added_tokens])
    for token_id, content, _ in added_tokens:  # adding must not have moved a token
        if tokenizer.convert_tokens_to_ids(content) != token_id:
            raise RuntimeError(f"stand-in tokenizer: {content!r} landed on id "
                               f"{tokenizer.convert_tokens_to_ids(content)}, expected {token_id}")
    return tokenizer


def _check_added_ids(added_tokens: Sequence[tuple[int, str, bool]], base_vocab_size: int) -> None:
    ids = [token_id for token_id, _, _ in added_tokens]
    expected = list(range(base_vocab_size, base_vocab_size + len(ids)))
    if ids != expected:
        raise ValueError(f"added token ids {ids[:3]}...{ids[-1:]} must run from base_vocab_size={base_vocab_size} "
                         f"without gaps, in order (a tokenizer gives added tokens the next free id)")
    contents = [content for _, content, _ in added_tokens]
    for needed in (IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END, IM_START, IM_END, ENDOFTEXT):
        if needed not in contents:
            raise ValueError(f"added tokens lack {needed!r}, which the chat template and the processors use")


def emb_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id of `<emb>`; raises if the tokenizer does not have it as a single token."""
    token_id = tokenizer.convert_tokens_to_ids(EMB_TOKEN)
    if (
        token_id is None
        or token_id == tokenizer.unk_token_id
        or tokenizer.convert_ids_to_tokens(token_id) != EMB_TOKEN
    ):
        raise ValueError(
            f"the tokenizer has no {EMB_TOKEN!r} token; the Embedder pools the hidden state at it. "
            f"Add it with tokenizer.add_tokens([{EMB_TOKEN!r}], special_tokens=True) and resize the model's "
            "embeddings, or make the model directory with `embedrl model init`, which does both."
        )
    return int(token_id)
