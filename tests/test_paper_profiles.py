"""Paper-scale profiles (paper-2b, paper-4b): settings, and the real Qwen3-VL architectures built offline.

No hub download is possible here, so each checkpoint's architecture is built from its released config values
(embedrl/models/qwen3_vl_architectures.yaml) with random weights, written as a Hugging Face directory and
loaded through the factory code the profiles use (`init_model_dir` / `load_model`).

What is real: widths, vocabulary size (151936 embedding rows), head counts, head size, rope settings,
deepstack indexes, token ids, tied or untied embeddings, image-processor settings (patch 16, merge 2, pixel
bounds, mean/std), and the tokenizer's added tokens with their ids and its length (so `<emb>` lands on
151669 as it would on the real tokenizer). What is substituted: random weights; fewer layers (memory and
time on 2 CPU cores): the 2B and 4B Embedders keep 3 of their text layers (DeepStack feeds the first 3) and
18 of 24 vision blocks (the last deepstack index is 17), the 8B Reasoner 1 of 36 text layers and 25 of
27 vision blocks (deepstack index 24); the tokenizer's ordinary vocabulary (the project's small BPE,
padded to the real length) and chat template; the image processor's smallest size (4096 pixels instead
of 65536) so that a test image is a few visual tokens.
"""

from __future__ import annotations

import dataclasses
import gc
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from embedrl.config import EmbedderTrainConfig, EvalConfig, build_config  # noqa: E402
from embedrl.models.architectures import (  # noqa: E402
    STANDIN_FILE,
    UnknownArchitectureError,
    load_architecture,
    write_offline_model_dir,
)
from embedrl.models.spec import load_model_specs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROFILES = {"paper-2b": ("qwen3-vl-2b", 64, 128, 512), "paper-4b": ("qwen3-vl-4b", 96, 192, 256)}
PUBLISHED_BILLIONS = {"qwen3-vl-2b": 2.13, "qwen3-vl-4b": 4.44, "qwen3-vl-8b": 8.77}  # hub model pages
EMB_ID = 151669  # the first free id after Qwen3's 151669 tokens (0..151668)
SMALL_IMAGE_PIXELS = 64 * 64


def _free() -> None:
    gc.collect()


# ------------------------------------------------------------------------------------ architectures
@pytest.mark.parametrize("name", sorted(PUBLISHED_BILLIONS))
def test_full_configs_build_the_published_model_sizes(name):
    """Every width of the data file is cross-checked by the parameter count of the released checkpoint."""
    arch = load_architecture(name)
    count = arch.count_parameters()  # meta device: no memory
    assert round(count / 1e9, 2) == PUBLISHED_BILLIONS[name]
    assert count == arch.parameters


def test_architectures_are_found_by_hub_id_and_unknown_ones_listed():
    assert load_architecture("Qwen/Qwen3-VL-4B-Instruct").name == "qwen3-vl-4b"
    with pytest.raises(UnknownArchitectureError, match=r"unknown architecture 'Qwen/Qwen3-VL-3B'.*qwen3-vl-2b"):
        load_architecture("Qwen/Qwen3-VL-3B")
    with pytest.raises(ValueError, match="leaves out deepstack index 17"):
        load_architecture("qwen3-vl-2b").reduced(vision_depth=17)


# ----------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_paper_profiles_name_the_papers_models(profile):
    arch_name, rank, alpha, _ = PROFILES[profile]
    specs = load_model_specs(profile)
    embedder, reasoner = specs["embedder"], specs["reasoner"]
    assert load_architecture(embedder.source).name == arch_name
    assert (embedder.lora_r, embedder.lora_alpha, embedder.dtype) == (rank, alpha, "bfloat16")
    assert load_architecture(reasoner.source).name == "qwen3-vl-8b" and reasoner.lora_r == 0


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_paper_profiles_hold_the_method_hyperparameters(profile):
    """method.md's numbers, on every stage; bf16 / DeepSpeed are switched off only to build the configs on CPU."""
    from embedrl.train.egrl import EGRLStageConfig
    from embedrl.train.sft import SFTStageConfig

    batch = PROFILES[profile][3]
    embedder = build_config(EmbedderTrainConfig, profile, "embedder")
    assert (embedder.temperature, embedder.learning_rate, embedder.warmup_steps, embedder.weight_decay,
            embedder.epochs, embedder.global_batch_size) == (0.02, 1e-4, 10, 0.01, 2.0, batch)
    assert embedder.gradient_checkpointing and embedder.bf16 and embedder.data_mix == "paper"
    assert embedder.evidence_mix == {"teacher": 1.0}  # trained with the teacher's T-CoT and evidence
    assert embedder.save_every == 0  # train_embedder refuses checkpoints under DeepSpeed
    cpu = {"bf16": False, "use_cpu": True, "deepspeed": "", "output_dir": "/tmp/unused", "report_to": "none"}
    egrl = build_config(EGRLStageConfig, profile, "egrl", **cpu)
    assert (egrl.num_generations, egrl.learning_rate, egrl.beta, egrl.epsilon) == (8, 3e-6, 0.01, 0.2)
    assert egrl.reward_weights == [0.05, 0.8, 0.2] and egrl.outcome_tau == 0.5 and egrl.num_train_epochs == 1
    assert egrl.use_vllm and egrl.vllm_mode == "colocate" and egrl.judge == "chat"
    sft = build_config(SFTStageConfig, profile, "sft", **cpu)
    assert sft.prompt_style == "full" and sft.gradient_checkpointing
    assert build_config(EvalConfig, profile, "eval").max_new_tokens == 512


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_deepspeed_files_of_the_profiles_exist_with_the_right_stage(profile):
    from embedrl.config import profile_section

    stages = {"embedder": 2, "sft": 3, "egrl": 3}  # ZeRO-2 (paper) for the LoRA Embedder, ZeRO-3 for the 8B
    for section, stage in stages.items():
        path = REPO / profile_section(profile, section)["deepspeed"]
        assert json.loads(path.read_text())["zero_optimization"]["stage"] == stage, (profile, section)


# ------------------------------------------------------------------------------- models, offline
def _processor_checks(processor, config) -> None:
    tokenizer = processor.tokenizer
    assert processor.image_token == "<|image_pad|>"
    assert tokenizer.convert_tokens_to_ids(processor.image_token) == config.image_token_id == 151655
    assert tokenizer.convert_tokens_to_ids("<|vision_start|>") == config.vision_start_token_id == 151652
    image_processor = processor.image_processor
    assert (image_processor.patch_size, image_processor.merge_size, image_processor.temporal_patch_size) == (16, 2, 2)
    assert config.vision_config.patch_size == 16 and config.vision_config.spatial_merge_size == 2


def _lora_parameters(arch, rank: int) -> int:
    """LoRA on q, k, v, o, gate, up, down of every text layer: r x (in + out) per wrapped linear."""
    h, heads, kv, head = (arch.text[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads",
                                                 "head_dim"))
    mlp = arch.text["intermediate_size"]
    shapes = [(h, heads * head), (h, kv * head), (h, kv * head), (heads * head, h), (h, mlp), (h, mlp), (mlp, h)]
    return arch.text["num_hidden_layers"] * rank * sum(i + o for i, o in shapes)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_paper_embedder_builds_through_the_factory_and_embeds(profile, tmp_path):
    from PIL import Image

    from embedrl.models.embedder import Embedder, EmbedderInputs, Side
    from embedrl.models.factory import emb_token_id, init_model_dir, load_model
    from embedrl.train.embedder import _apply_lora

    spec = load_model_specs(profile)["embedder"]
    arch = load_architecture(spec.source).reduced(text_layers=3, vision_depth=18)
    source = write_offline_model_dir(arch, tmp_path / "hub", dtype=spec.dtype)
    assert json.loads((source / STANDIN_FILE).read_text())["stands_in_for"] == spec.source
    local = dataclasses.replace(spec, source=str(source), image_min_pixels=SMALL_IMAGE_PIXELS)
    model_dir = init_model_dir(local, tmp_path / "embedder")  # what `embedrl model init --profile` runs
    _free()
    vlm, processor = load_model(model_dir)

    _processor_checks(processor, vlm.config)
    assert emb_token_id(processor) == EMB_ID
    assert processor.tokenizer.tokenize("<emb>") == ["<emb>"]
    assert vlm.get_input_embeddings().weight.shape == (151936, arch.hidden_size)  # <emb> fits: no resize
    assert vlm.config.text_config.vocab_size == 151936 and vlm.dtype == torch.bfloat16

    vlm = _apply_lora(vlm, spec.to_dict())
    trainable = sum(p.numel() for p in vlm.parameters() if p.requires_grad)
    assert trainable == _lora_parameters(arch, spec.lora_r)  # the LLM's linears only, not the vision tower

    inputs = EmbedderInputs(processor)
    embedder = Embedder(vlm, inputs.emb_id)
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    batch = inputs.collate([inputs.encode(Side("a red square", [image], "image")), inputs.encode(Side("a caption"))])
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]]  # 112 px -> 128 px on the 32 px grid: 8 x 8 patches
    assert int((batch["input_ids"] == 151655).sum()) == 16  # 2 x 2 patches merged per visual token
    with torch.no_grad():
        vectors = embedder(batch)
    assert vectors.shape == (2, arch.hidden_size) == (2, {"paper-2b": 2048, "paper-4b": 2560}[profile])
    assert torch.isfinite(vectors).all() and torch.allclose(vectors.norm(dim=-1), torch.ones(2), atol=1e-3)
    assert not torch.allclose(vectors[0], vectors[1])


def test_paper_reasoner_loads_through_the_factory_and_generates(tmp_path):
    """The 8B Reasoner: untied embeddings and LM head of the real vocabulary, deepstack at 8/16/24."""
    from PIL import Image

    from embedrl.models.factory import _load_pretrained_for_spec, emb_token_id

    spec = load_model_specs("paper-2b")["reasoner"]
    arch = load_architecture(spec.source).reduced(text_layers=1, vision_depth=25)
    source = write_offline_model_dir(arch, tmp_path / "hub", dtype=spec.dtype)
    _free()
    # The loading half of init_model_dir (the save half is covered by the Embedder test; 4 GB of weights here).
    model, processor = _load_pretrained_for_spec(
        dataclasses.replace(spec, source=str(source), image_min_pixels=SMALL_IMAGE_PIXELS))
    _processor_checks(processor, model.config)
    assert emb_token_id(processor) == EMB_ID
    assert not model.config.tie_word_embeddings
    assert model.get_output_embeddings().weight.shape == (151936, 4096)
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert model.config.vision_config.deepstack_visual_indexes == [8, 16, 24]

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Write the T-CoT."}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    batch = processor(images=[Image.new("RGB", (64, 64), (10, 120, 200))], text=[text], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=2, min_new_tokens=2, do_sample=False)
    assert out.shape == (1, batch["input_ids"].shape[1] + 2)


# ----------------------------------------------------------------------------- benchmarks/paper_step
PAPER_STEP = REPO / "benchmarks" / "paper_step.py"


def test_paper_step_refuses_real_sizes_without_a_gpu(tmp_path):
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the real sizes would run")
    result = subprocess.run([sys.executable, str(PAPER_STEP), "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "need a CUDA GPU; use --smoke" in result.stderr


def test_paper_step_smoke_runs_every_stage_on_cpu(tmp_path):
    """The GPU script's whole path at tiny widths (real vocabulary and token ids): every stage reports numbers."""
    import math
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(PAPER_STEP), "--smoke", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "paper_step.json").read_text())
    assert report["benchmark"] == "paper_step" and report["machine"]["versions"]["torch"]
    stages = report["results"]
    for name in ("embedder", "sft", "grpo", "eval"):
        assert stages[name]["seconds"] > 0 and stages[name]["peak_memory_gib"] > 0, name
    # LoRA r64 (paper-2b) on the smoke text model (2 layers, width 64, 4 / 2 heads of 16, MLP 128): q, k, v, o,
    # gate, up, down have in + out = 128, 96, 96, 128, 192, 192, 192
    assert stages["embedder"]["trainable_parameters"] == 2 * 64 * (128 + 96 + 96 + 128 + 192 + 192 + 192)
    assert math.isfinite(stages["embedder"]["loss"]) and math.isfinite(stages["sft"]["loss"])
    assert stages["embedder"]["tokens_per_second"] > 0 and stages["sft"]["tokens_per_second"] > 0
    grpo = stages["grpo"]
    assert grpo["completions"] == 2 * 2 * 2 and grpo["generated_tokens"] > 0 and grpo["update_tokens_per_second"] > 0
    assert stages["eval"]["generated_tokens"] > 0 and stages["eval"]["embedding_tokens_per_second"] > 0
