"""The Embedder's image sizes: aligned to the processor's visual token, configured for training, saved with the
trained Embedder and reused wherever it is loaded (EG-RL reward, evaluation, serving)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import MICRO_PROFILE
from PIL import Image

from embedrl.config import EmbedderTrainConfig, build_config
from embedrl.models.embedder import (
    IMAGE_SIZES_KEY,
    Embedder,
    EmbedderInputs,
    ImageSizes,
    Side,
    load_embedder,
    patch_alignment,
)
from embedrl.tcot import TCoT

# Non-default sizes for the tiny models (multiples of 28, at least the micro profile's 56 x 56 smallest image).
TRAINED_SIZES = ImageSizes(image=84, frame=84, crop_long_side=84, key_frame=56)


def _tiny(**spec) -> tuple:
    from embedrl.models.factory import build_tiny
    from embedrl.models.spec import ModelSpec

    return build_tiny(ModelSpec(role="embedder", **spec), seed=0)


def _crop_side(crop: Image.Image) -> Side:
    trace = TCoT(thinking="the red box", rethink="red", answer="red box", bbox_2d=[(0, 0, 999, 999)])
    return Side("a picture", [], "text", trace, [crop], "crop")


def _grids(inputs: EmbedderInputs, side: Side) -> list[list[int]]:
    return inputs.encode(side).grid_thw.tolist()


# --------------------------------------------------------------------------------------- alignment
def test_alignment_is_the_processors_patch_times_merge():
    _, tiny_processor = _tiny()
    assert patch_alignment(tiny_processor) == 14 * 2
    _, qwen3_processor = _tiny(patch_size=16, image_min_pixels=32 * 32)  # the released Qwen3-VL's patch
    assert patch_alignment(qwen3_processor) == 16 * 2
    assert patch_alignment(SimpleNamespace(image_processor=SimpleNamespace())) == 28  # a processor that does not say


def test_crops_align_to_32_px_on_a_patch_16_processor():
    model, processor = _tiny(patch_size=16, image_min_pixels=32 * 32)
    inputs = EmbedderInputs(processor, sizes=ImageSizes(crop_long_side=64))
    side = _crop_side(Image.new("RGB", (300, 70), (200, 30, 30)))
    (crop,) = inputs.evidence_images(side)
    assert crop.size == (64, 32)  # 64 x 15 px scaled, each side rounded to the 32 px visual token (not 56 x 28)
    assert _grids(inputs, side) == [[1, 2, 4]]  # 32 x 64 px = 2 x 4 patches of 16 px: the processor keeps it
    with torch.no_grad():
        vector = Embedder(model, inputs.emb_id).eval()(inputs.collate([inputs.encode(side)]))
    assert vector.shape[0] == 1 and torch.isfinite(vector).all()


# ---------------------------------------------------------------------------------------- defaults
def test_defaults_are_unchanged():
    assert ImageSizes() == ImageSizes(image=112, frame=56, crop_long_side=56, key_frame=112)
    config = EmbedderTrainConfig()
    assert (config.image_size, config.frame_size, config.crop_long_side, config.key_frame_size) == (112, 56, 56, 112)
    tiny = build_config(EmbedderTrainConfig, "tiny", "embedder")
    assert (tiny.image_size, tiny.frame_size, tiny.crop_long_side, tiny.key_frame_size) == (112, 56, 56, 112)
    _, processor = _tiny()
    inputs = EmbedderInputs(processor)
    assert _grids(inputs, Side("a red square", [Image.new("RGB", (200, 150), (200, 30, 30))], "image")) == [[1, 8, 8]]


@pytest.mark.parametrize("profile", ["paper-2b", "paper-4b"])
def test_paper_profiles_set_sizes_on_qwen3_vls_32_px_grid(profile):
    config = build_config(EmbedderTrainConfig, profile, "embedder")
    sizes = (config.image_size, config.frame_size, config.crop_long_side, config.key_frame_size)
    assert sizes == (448, 256, 256, 448)
    assert all(size % 32 == 0 and size * size >= 65536 for size in sizes)  # Qwen3-VL enlarges below 256 x 256


# -------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("field, value", [("image_size", 0), ("frame_size", -56), ("crop_long_side", 56.5),
                                          ("key_frame_size", True)])
def test_a_bad_size_is_rejected_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"EmbedderTrainConfig.{field}="):
        build_config(EmbedderTrainConfig, MICRO_PROFILE, "embedder", **{field: value})


def test_a_bad_size_record_is_rejected_naming_the_file_and_field(tmp_path):
    with pytest.raises(ValueError, match="ImageSizes.frame=0"):
        ImageSizes(frame=0)
    (tmp_path / "embedrl.json").write_text(json.dumps({IMAGE_SIZES_KEY: {"image": 448, "frame": "big"}}))
    with pytest.raises(ValueError, match=r"embedrl.json: bad embedder_image_sizes record.*ImageSizes.frame='big'"):
        ImageSizes.of_model(tmp_path)


# -------------------------------------------------------------------------- saved with the Embedder
@pytest.fixture(scope="module")
def embedder_trained_with_sizes(prepared_small, tiny_models, tmp_path_factory):
    """The tiny Embedder trained 2 steps at TRAINED_SIZES; the whole-image sizes its training showed it."""
    from embedrl.train.embedder import train_embedder

    seen: set[tuple[int, int]] = set()
    media_images = EmbedderInputs.media_images

    def recording(self, side):
        images = media_images(self, side)
        seen.update(image.size for image in images if side.media_kind == "image")
        return images

    config = build_config(EmbedderTrainConfig, MICRO_PROFILE, "embedder", max_steps=2, global_batch_size=4,
                          save_every=0, image_size=TRAINED_SIZES.image, frame_size=TRAINED_SIZES.frame,
                          crop_long_side=TRAINED_SIZES.crop_long_side, key_frame_size=TRAINED_SIZES.key_frame)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EmbedderInputs, "media_images", recording)
        result = train_embedder(prepared_small, tiny_models["embedder"], tmp_path_factory.mktemp("sized"), config,
                                progress=False)
    return result.out_dir / "model", seen


def test_training_uses_the_configured_sizes_and_saves_them(embedder_trained_with_sizes):
    model_dir, seen = embedder_trained_with_sizes
    assert seen == {(84, 84)}
    meta = json.loads((model_dir / "embedrl.json").read_text())
    assert meta[IMAGE_SIZES_KEY] == {"image": 84, "frame": 84, "crop_long_side": 84, "key_frame": 56}
    assert ImageSizes.of_model(model_dir) == TRAINED_SIZES


def test_a_loaded_embedder_sees_images_at_its_trained_sizes(embedder_trained_with_sizes):
    """load_embedder builds the inputs of the EG-RL reward, pre_rl_check, rl_holdout and evaluation."""
    model_dir, _ = embedder_trained_with_sizes
    embedder, inputs = load_embedder(model_dir)
    assert inputs.sizes == TRAINED_SIZES
    image = Image.new("RGB", (200, 150), (200, 30, 30))
    assert _grids(inputs, Side("a red square", [image], "image")) == [[1, 6, 6]]  # 84 px: 6 x 6 patches of 14
    assert _grids(inputs, Side("a clip", [image, image], "video")) == [[1, 6, 6]] * 2
    assert _grids(inputs, _crop_side(Image.new("RGB", (200, 100)))) == [[1, 4, 6]]  # 84 x 42 -> 84 x 56 px
    with torch.no_grad():
        assert embedder(inputs.collate([inputs.encode(Side("a red square", [image], "image"))])).shape[0] == 1


def test_the_served_embedder_sees_images_at_its_trained_sizes(embedder_trained_with_sizes):
    from embedrl.registry.pyfunc import EmbedderModel

    model_dir, _ = embedder_trained_with_sizes
    served = EmbedderModel()
    served.load_context(SimpleNamespace(artifacts={"embedder": str(model_dir)}))
    assert served.inputs.sizes == TRAINED_SIZES


def test_an_embedder_without_the_record_gets_the_defaults(tiny_models):
    assert IMAGE_SIZES_KEY not in json.loads((tiny_models["embedder"] / "embedrl.json").read_text())
    _, inputs = load_embedder(tiny_models["embedder"])
    assert inputs.sizes == ImageSizes()
    assert _grids(inputs, Side("a red square", [Image.new("RGB", (200, 150))], "image")) == [[1, 8, 8]]
