"""Models: tokenizer training, the torchvision-free processor, tiny-model build/save/load, specs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from embedrl.models.factory import (  # noqa: E402
    ModelNotAvailableError,
    build_tiny,
    emb_token_id,
    init_model_dir,
    load_model,
)
from embedrl.models.spec import ModelSpec, load_model_specs  # noqa: E402
from embedrl.models.tokenizer import (  # noqa: E402
    EMB_TOKEN,
    QWEN_SPECIAL_TOKENS,
    TCOT_TAGS,
    build_tokenizer,
)

IMAGE_PAD = "<|image_pad|>"


@pytest.fixture(scope="module")
def tiny_spec() -> ModelSpec:
    return load_model_specs("tiny")["embedder"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_spec) -> Path:
    return init_model_dir(tiny_spec, tmp_path_factory.mktemp("models") / "embedder", seed=0)


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    return load_model(tiny_dir)


@pytest.fixture
def image() -> Image.Image:
    img = Image.new("RGB", (112, 112), (30, 30, 30))
    img.paste((214, 48, 49), (20, 30, 70, 90))
    return img


def image_chat(processor, text: str = "Find the marked red star.", *, generation: bool = True) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


# ------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_training_is_deterministic_across_processes(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path / "here")
    script = textwrap.dedent(
        f"""
        from embedrl.models.tokenizer import build_tokenizer
        build_tokenizer().save_pretrained({str(tmp_path / "there")!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "there" / name).read_bytes(), name


def test_special_and_tcot_tokens_are_single_ids(tokenizer):
    for token in (*QWEN_SPECIAL_TOKENS, EMB_TOKEN, *TCOT_TAGS):
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, (token, ids)
        assert tokenizer.convert_ids_to_tokens(ids[0]) == token
    assert emb_token_id(tokenizer) == tokenizer.convert_tokens_to_ids(EMB_TOKEN)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_emb_token_id_requires_the_token():
    from transformers import Qwen2Tokenizer

    with pytest.raises(ValueError, match="has no '<emb>' token"):
        emb_token_id(Qwen2Tokenizer(vocab={"<|endoftext|>": 0, "a": 1}, merges=[]))


def test_tcot_tags_survive_decode_but_special_tokens_do_not(tokenizer):
    trace = (
        '<thinking>a small red star {"bbox_2d": [[120, 80, 260, 230]]}</thinking>'
        "<rethink>the dot is on the red star</rethink><answer>small red star</answer>"
    )
    ids = tokenizer(f"<|im_start|>assistant\n{trace}{EMB_TOKEN}<|im_end|>")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == f"assistant\n{trace}"
    assert EMB_TOKEN in tokenizer.decode(ids)


def test_chat_template_renders_an_image_turn(tokenizer):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find the red star."}]},
        {"role": "assistant", "content": EMB_TOKEN},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Find the red star.<|im_end|>\n"
        "<|im_start|>assistant\n<emb><|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


# ------------------------------------------------------------------------------------- processor
def test_processor_expands_image_placeholders(loaded, image):
    _, processor = loaded
    batch = processor(images=[image], text=[image_chat(processor)], return_tensors="pt")
    pad_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    # 112 px / 14 px patches = 8 x 8 patches; the 2 x 2 merge leaves 16 visual tokens
    assert int((batch["input_ids"] == pad_id).sum()) == 16
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert tuple(batch["pixel_values"].shape) == (64, 3 * 2 * 14 * 14)
    assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == pad_id)


def test_processor_takes_video_as_frames(loaded, image):
    _, processor = loaded
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Find the clip."}]}]
    text = processor.apply_chat_template(messages, tokenize=False)
    batch = processor(text=[text], videos=[[image, image, image]], return_tensors="pt")
    pad_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]] * 3
    assert int((batch["input_ids"] == pad_id).sum()) == 3 * 16


def test_saved_processor_loads_back_with_auto_processor(tiny_dir):
    from transformers import AutoProcessor

    from embedrl.models.processor import EmbedRLQwen3VLProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir)
    assert isinstance(processor, EmbedRLQwen3VLProcessor)
    assert processor.image_processor.patch_size == 14


# ------------------------------------------------------------------------------ build, save, load
def test_model_dir_round_trips_to_identical_logits(tiny_spec, tiny_dir, loaded, image):
    built, processor = build_tiny(tiny_spec, seed=0)
    model, _ = loaded
    batch = processor(images=[image], text=[image_chat(processor)], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(built(**batch).logits, model(**batch).logits)
        other, _ = build_tiny(tiny_spec, seed=1)
        assert not torch.equal(other(**batch).logits, model(**batch).logits)


def test_model_dir_holds_safetensors_and_metadata(tiny_spec, tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    assert {"chat_template.jinja", "generation_config.json", "embedrl.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    meta = json.loads((tiny_dir / "embedrl.json").read_text())
    assert meta["spec"] == tiny_spec.to_dict() and meta["seed"] == 0 and meta["embedrl_version"]
    config = json.loads((tiny_dir / "config.json").read_text())
    tokenizer = build_tokenizer()
    assert config["image_token_id"] == tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    assert config["text_config"]["vocab_size"] == len(tokenizer)
    assert config["text_config"]["pad_token_id"] == tokenizer.pad_token_id


def test_generate_a_few_tokens(loaded, image):
    model, processor = loaded
    batch = processor(images=[image, image], text=[image_chat(processor)] * 2, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, min_new_tokens=5)
    assert out.shape == (2, batch["input_ids"].shape[1] + 5)
    assert isinstance(processor.batch_decode(out[:, batch["input_ids"].shape[1] :])[0], str)


def test_pretrained_source_is_reloaded_and_arch_checked(tiny_spec, tiny_dir, tmp_path):
    copy = ModelSpec(role="embedder", source=str(tiny_dir), dtype="bfloat16")
    model, processor = load_model(init_model_dir(copy, tmp_path / "copy"))
    assert model.dtype == torch.bfloat16 and emb_token_id(processor) == emb_token_id(build_tokenizer())
    with pytest.raises(ValueError, match="arch"):
        init_model_dir(ModelSpec(role="embedder", source=str(tiny_dir), arch="qwen2_vl"), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(FileExistsError):
        init_model_dir(copy, tmp_path / "copy")


def test_qwen2_vl_arch_builds_and_runs(tiny_spec, image):
    import dataclasses

    model, processor = build_tiny(dataclasses.replace(tiny_spec, arch="qwen2_vl"), seed=0)
    assert model.config.model_type == "qwen2_vl"
    batch = processor(images=[image], text=[image_chat(processor)], return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape[-1] == len(processor.tokenizer)


def test_hub_id_offline_fails_clearly(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotAvailableError, match="not available offline") as err:
        load_model("Qwen/Qwen3-VL-2B-Instruct")
    assert "local path" in str(err.value) and "cache" in str(err.value)


# ------------------------------------------------------------------------------------------ specs
def test_packaged_profiles():
    tiny = load_model_specs("tiny")
    assert set(tiny) == {"embedder", "reasoner"} and all(s.is_tiny for s in tiny.values())
    paper = load_model_specs("paper-2b")
    assert paper["embedder"].source == "Qwen/Qwen3-VL-2B-Instruct"
    assert (paper["embedder"].lora_r, paper["embedder"].lora_alpha) == (64, 128)
    assert paper["reasoner"].source == "Qwen/Qwen3-VL-8B-Instruct" and paper["reasoner"].lora_r == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"role": "judge"}, "role"),
        ({"arch": "llava"}, "arch"),
        ({"num_heads": 3}, "num_heads"),
        ({"num_kv_heads": 3}, "num_kv_heads"),
        ({"hidden_size": "128"}, "hidden_size"),
        ({"lora_r": 8}, "lora_alpha"),
        ({"lora_dropout": 1.5}, "lora_dropout"),
        ({"deepstack_layers": [5]}, "deepstack_layers"),
        ({"vision_position_embeddings": 100 + 1}, "vision_position_embeddings"),
        ({"dtype": "fp8"}, "dtype"),
        ({"trust_remote_code": "yes"}, "trust_remote_code"),
    ],
)
def test_bad_spec_values_name_the_field(changes, field):
    with pytest.raises((ValueError, TypeError), match=rf"\.{field}="):
        ModelSpec(**{"role": "embedder", **changes})


def test_profile_yaml_unknown_keys_list_allowed_ones(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("models:\n  embedder:\n    source: tiny\n    hiden_size: 64\n")
    with pytest.raises(ValueError, match=r"hiden_size.*allowed keys:.*hidden_size"):
        load_model_specs(path)
    path.write_text("models:\n  judge:\n    source: tiny\n")
    with pytest.raises(ValueError, match="allowed keys: embedder, reasoner"):
        load_model_specs(path)
    with pytest.raises(ValueError, match="unknown profile"):
        load_model_specs("no-such-profile")
