"""The Embedder as an MLflow pyfunc model; the Reasoner travels with it as a second artifact.

Input: a DataFrame with optional string columns `text`, `image` (base64 PNG/JPEG, a `data:` URI
prefix is allowed) and `tcot` (a T-CoT text; its boxes become crops of the image, as in training).
Output: a DataFrame with one column `embedding`, a unit-norm list of floats per row.

The serving environment must have `embedrl` installed (the project image does; locally
`pip install -e .`), so no `code_paths` are logged. Video inputs are not served.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import pandas as pd

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models import ModelSignature

log = logging.getLogger(__name__)

MODEL_NAME = "embedder"  # the logged model's name inside the run
SOURCE_RUN_TAG = "embedrl.source_run_id"
INPUT_COLUMNS = ("text", "image", "tcot")
OUTPUT_COLUMN = "embedding"
BATCH_SIZE = 16
ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")
_DATA_URI_SEPARATOR = ";base64,"


class EmbeddingInputError(ValueError):
    """A request row that cannot be embedded; the message names the row and the field."""


@dataclass
class _Row:
    text: str
    image: Any  # PIL.Image.Image | None
    tcot: str


class EmbedderModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of the Embedder. Artifacts: `embedder` (model dir), optionally `reasoner`."""

    def load_context(self, context) -> None:
        from embedrl.models.embedder import load_embedder

        self.embedder, self.inputs = load_embedder(context.artifacts["embedder"])
        self.reasoner_dir = context.artifacts.get("reasoner")

    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        import torch

        sides = [self._side(index, row) for index, row in enumerate(_rows(model_input))]
        vectors: list[list[float]] = []
        with torch.no_grad():
            for start in range(0, len(sides), BATCH_SIZE):
                encoded = [self.inputs.encode(side) for side in sides[start : start + BATCH_SIZE]]
                vectors.extend(self.embedder(self.inputs.collate(encoded)).tolist())
        return pd.DataFrame({OUTPUT_COLUMN: vectors})

    def _side(self, index: int, row: _Row):
        from embedrl.models.embedder import Side
        from embedrl.tcot import crops_from_boxes

        if not row.text and row.image is None:
            raise EmbeddingInputError(f"row {index}: needs `text` or `image` (both are empty)")
        tcot = _parse_tcot(index, row) if row.tcot else None
        crops = crops_from_boxes(row.image, tcot.bbox_2d) if tcot and row.image is not None else []
        return Side(
            text=row.text,
            media=[row.image] if row.image is not None else [],
            media_kind="image" if row.image is not None else "text",
            tcot=tcot,
            evidence=crops,
        )


# ------------------------------------------------------------------------------------------ rows
def _rows(model_input) -> list[_Row]:
    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    unknown = [column for column in frame.columns if column not in INPUT_COLUMNS]
    if unknown:
        raise EmbeddingInputError(f"unknown column(s) {unknown}; the Embedder reads {list(INPUT_COLUMNS)}")
    rows = []
    for index, record in enumerate(frame.to_dict(orient="records")):
        rows.append(
            _Row(
                text=_field(index, record, "text"),
                image=_decode_image(index, _field(index, record, "image")),
                tcot=_field(index, record, "tcot"),
            )
        )
    return rows


def _field(index: int, record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if not isinstance(value, str):
        raise EmbeddingInputError(f"row {index}: field `{name}` must be a string, got {type(value).__name__}")
    return value.strip()


def _decode_image(index: int, encoded: str):
    from PIL import Image, UnidentifiedImageError

    if not encoded:
        return None
    if _DATA_URI_SEPARATOR in encoded[:64]:
        encoded = encoded.split(_DATA_URI_SEPARATOR, 1)[1]
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as err:
        raise EmbeddingInputError(f"row {index}: field `image` is not valid base64 ({err})") from None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise EmbeddingInputError(
            f"row {index}: field `image` decodes to {len(raw)} bytes that are not a PNG/JPEG image ({err})"
        ) from None


def _parse_tcot(index: int, row: _Row):
    from embedrl.tcot import TCoTFormatError, parse, validate

    try:
        tcot = parse(row.tcot)
        if tcot.bbox_2d:
            if row.image is None:
                raise TCoTFormatError("it has bbox_2d boxes but the row has no image to crop them from")
            validate(tcot, modality="image")
    except TCoTFormatError as err:
        raise EmbeddingInputError(f"row {index}: field `tcot` is not a valid T-CoT: {err}") from None
    return tcot


# --------------------------------------------------------------------------------------- logging
def embedding_signature() -> ModelSignature:
    """Optional string columns text/image/tcot -> `embedding` (a list of floats per row)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    inputs = Schema([ColSpec(DataType.string, name, required=False) for name in INPUT_COLUMNS])
    outputs = Schema([ColSpec(Array(DataType.float), OUTPUT_COLUMN)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def image_to_base64(image, format: str = "PNG") -> str:
    """A PIL image as the base64 text the `image` column expects."""
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def input_example() -> pd.DataFrame:
    """Three rows: text only, image only, image with a T-CoT whose box becomes a crop."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle((8, 8, 40, 40), fill="red")
    tcot = (
        '<thinking>A red square, top left. {"bbox_2d": [[100, 100, 650, 650]]}</thinking>\n'
        "<rethink>The box covers it.</rethink>\n<answer>a red square</answer>"
    )
    encoded = image_to_base64(image)
    return pd.DataFrame(
        {
            "text": ["a red square", "", "what is in the box?"],
            "image": ["", encoded, encoded],
            "tcot": ["", "", tcot],
        }
    )


def log_embedder_model(
    embedder_dir: str | Path,
    reasoner_dir: str | Path | None = None,
    *,
    registered_model_name: str,
    metrics: dict[str, float] | None = None,
) -> ModelVersion:
    """Log the Embedder (and Reasoner) as a pyfunc model of the active run and register it.

    Idempotent per run: if this run already registered a version of `registered_model_name` (a
    retried stage), that version is returned and nothing is logged again.
    """
    import mlflow
    from mlflow import MlflowClient

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_embedder_model needs an active run: call it inside `with stage_run(...)`")
    client = MlflowClient()
    existing = registered_version_of_run(client, registered_model_name, run.info.run_id)
    if existing is not None:
        log.info(
            "run %s already registered %s v%s; not logging again",
            run.info.run_id,
            registered_model_name,
            existing.version,
        )
        return existing
    info = mlflow.pyfunc.log_model(
        name=MODEL_NAME,
        python_model=str(ENTRY_FILE),
        artifacts=_artifacts(embedder_dir, reasoner_dir),
        signature=embedding_signature(),
        input_example=input_example(),
        pip_requirements=serving_requirements(),
        registered_model_name=registered_model_name,
        metadata={"embedrl": {"reasoner": reasoner_dir is not None}},
    )
    if metrics:
        mlflow.log_metrics(metrics, model_id=info.model_id)
    version = client.get_model_version(registered_model_name, str(info.registered_model_version))
    client.set_model_version_tag(registered_model_name, version.version, SOURCE_RUN_TAG, run.info.run_id)
    return client.get_model_version(registered_model_name, version.version)


def registered_version_of_run(client, name: str, run_id: str):
    """The version of `name` that run `run_id` registered, or None."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:  # the registered model does not exist yet
        return None
    return min(versions, key=lambda v: int(v.version)) if versions else None


def _artifacts(embedder_dir: str | Path, reasoner_dir: str | Path | None) -> dict[str, str]:
    artifacts = {"embedder": Path(embedder_dir)}
    if reasoner_dir is not None:
        artifacts["reasoner"] = Path(reasoner_dir)
    for name, path in artifacts.items():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{name} directory {path} has no config.json; pass a saved model directory"
            )
    return {name: str(path) for name, path in artifacts.items()}


def serving_requirements() -> list[str]:
    """Pinned from this environment, so that MLflow need not load the model to infer them."""
    from importlib.metadata import version

    names = ("embedrl", "mlflow", "torch", "transformers", "tokenizers", "pillow", "pandas", "numpy")
    return [f"{name}=={version(name)}" for name in names]
