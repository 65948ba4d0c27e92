"""The registry against real servers: `mlflow server` (sqlite + S3 artifacts on moto), the pyfunc
Embedder logged, registered, promoted by the gate, rolled back, loaded and served over HTTP.

Three pipeline runs register three versions of the tiny Embedder: 0.50 (first: champion), 0.45 (worse:
stays challenger), 0.60 (better by more than the margin: champion); the first run's register stage
is retried and must not register a duplicate.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow_servers import MotoS3, mlflow_model_server, mlflow_tracking_server
from PIL import Image, ImageDraw

from embedrl.registry.cli import add_registry_commands
from embedrl.registry.promotion import (
    CHALLENGER,
    CHAMPION,
    PromotionDecision,
    PromotionError,
    champion_history,
    promote,
    register_and_gate,
    rollback,
)
from embedrl.registry.pyfunc import SOURCE_RUN_TAG, EmbeddingInputError, image_to_base64, log_embedder_model
from embedrl.registry.tracking import pipeline_parent_run, stage_run

MODEL = "embedrl-embedder-test"
EXPERIMENT = "embedrl-registry-test"
BUCKET = "mlflow-artifacts"
MARGIN = 0.05
SCORES = {"kfp-a": 0.50, "kfp-b": 0.45, "kfp-c": 0.60}
TCOT = (
    '<thinking>The dotted object is the blue circle. {"bbox_2d": [[500, 500, 950, 950]]}</thinking>\n'
    "<rethink>The box holds the circle and its dot.</rethink>\n<answer>a blue circle with a dot</answer>"
)


@dataclass
class Registration:
    run_id: str
    version: str
    decision: PromotionDecision


@pytest.fixture(scope="module")
def s3():
    with MotoS3() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(scope="module")
def server(s3, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_tracking_server(workdir, artifacts_destination=f"s3://{BUCKET}/mlflow", s3=s3) as process:
        yield process


@pytest.fixture(scope="module")
def client_env(server):
    """The test process as an MLflow client: the tracking URI only, no S3 endpoint or keys."""
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
            patch.delenv(name, raising=False)
        patch.setenv("MLFLOW_TRACKING_URI", server.url)
        mlflow.set_tracking_uri(server.url)
        yield server.url
    mlflow.set_tracking_uri(previous)


def _register(uri: str, kfp_run_id: str, models: dict) -> Registration:
    parent = pipeline_parent_run(uri, EXPERIMENT, kfp_run_id)
    config = {"model_name": MODEL, "promotion": {"metric": "overall", "margin": MARGIN}}
    score = SCORES[kfp_run_id]
    with stage_run(uri, parent, "register", config=config, log_system_metrics=False) as run:
        version = log_embedder_model(
            models["embedder"], models["reasoner"], registered_model_name=MODEL, metrics={"overall": score}
        )
        decision = register_and_gate(MODEL, version.version, score=score, margin=MARGIN)
    return Registration(run.info.run_id, version.version, decision)


@pytest.fixture(scope="module")
def registrations(client_env, tiny_models) -> dict[str, Registration]:
    first = _register(client_env, "kfp-a", tiny_models)
    retried = _register(client_env, "kfp-a", tiny_models)  # the register stage of kfp-a, retried
    later = {kfp: _register(client_env, kfp, tiny_models) for kfp in ("kfp-b", "kfp-c")}
    return {"kfp-a": first, "kfp-a retried": retried, **later}


@pytest.fixture(scope="module")
def hidden_size(tiny_models) -> int:
    config = json.loads((tiny_models["embedder"] / "config.json").read_text())
    return config["text_config"]["hidden_size"]


def _scene(size: int = 96) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((6, 6, 40, 40), fill="red")
    draw.ellipse((52, 52, 90, 90), fill="blue")
    draw.ellipse((68, 68, 74, 74), fill="black")
    return image


def _rows() -> pd.DataFrame:
    png, jpeg = image_to_base64(_scene()), image_to_base64(_scene(), format="JPEG")
    return pd.DataFrame(
        {
            "text": ["a blue circle with a dot", None, "which object carries the dot?"],
            "image": [None, png, jpeg],
            "tcot": [None, None, TCOT],
        }
    )


# ------------------------------------------------------------------------------- registration
def test_each_pipeline_run_registers_one_version(registrations) -> None:
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]
    first, retried = registrations["kfp-a"], registrations["kfp-a retried"]
    assert (retried.run_id, retried.version) == (first.run_id, first.version)
    for registration in registrations.values():
        version = client.get_model_version(MODEL, registration.version)
        assert version.tags[SOURCE_RUN_TAG] == registration.run_id == version.run_id


def test_artifacts_go_through_the_server_to_the_bucket(registrations, s3) -> None:
    run = MlflowClient().get_run(registrations["kfp-a"].run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    keys = s3.keys(BUCKET, "mlflow/")
    for suffix in (
        "/MLmodel",
        "/embedder/config.json",
        "/embedder/model.safetensors",
        "/reasoner/config.json",
        "/pyfunc_entry.py",
    ):
        assert any(key.endswith(suffix) for key in keys), f"no object ending {suffix} in {keys[:20]}"


# ------------------------------------------------------------------------------------ the gate
def test_gate_keeps_a_worse_version_as_challenger(registrations) -> None:
    first, retried, worse, better = (registrations[k] for k in ("kfp-a", "kfp-a retried", "kfp-b", "kfp-c"))
    assert first.decision.promoted and first.decision.previous_champion is None
    assert retried.decision.promoted and "already champion" in retried.decision.reason
    assert not worse.decision.promoted
    assert (worse.decision.champion_version, worse.decision.champion_score) == (first.version, 0.50)
    assert better.decision.promoted
    assert (better.decision.champion_version, better.decision.previous_champion) == (
        better.version,
        first.version,
    )
    model = MlflowClient().get_registered_model(MODEL)
    assert model.aliases == {CHAMPION: better.version, CHALLENGER: better.version}
    assert champion_history(MODEL) == [first.version]


def test_gate_needs_more_than_the_margin(registrations) -> None:
    champion = registrations["kfp-c"]
    near = register_and_gate(MODEL, registrations["kfp-b"].version, score=0.60 + MARGIN, margin=MARGIN)
    assert not near.promoted and near.champion_version == champion.version
    register_and_gate(MODEL, champion.version, score=0.60, margin=MARGIN)  # challenger back on the champion


def test_rollback_returns_to_the_previous_champion(registrations) -> None:
    first, better = registrations["kfp-a"], registrations["kfp-c"]
    assert rollback(MODEL) == first.version
    assert MlflowClient().get_registered_model(MODEL).aliases[CHAMPION] == first.version
    with pytest.raises(PromotionError, match="no previous champion"):
        rollback(MODEL)
    assert promote(MODEL, better.version) == first.version
    assert champion_history(MODEL) == [first.version]


def test_cli_show_promote_and_rollback(registrations, client_env, capsys) -> None:
    parser = argparse.ArgumentParser()
    add_registry_commands(parser.add_subparsers(dest="command"))

    def run(*argv: str) -> int:
        args = parser.parse_args([*argv, "--name", MODEL, "--tracking-uri", client_env])
        return args.handler(args)

    assert run("promote", "--version", registrations["kfp-b"].version) == 0
    assert run("rollback") == 0
    capsys.readouterr()
    assert run("show") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["aliases"][CHAMPION] == registrations["kfp-c"].version
    assert [v["scores"].get("overall") for v in shown["versions"]] == [0.50, 0.60 + MARGIN, 0.60]


# ------------------------------------------------------------------------------ load and serve
@pytest.fixture(scope="module")
def champion_model(registrations):
    return mlflow.pyfunc.load_model(f"models:/{MODEL}@{CHAMPION}")


def test_champion_embeds_text_image_and_tcot_rows(champion_model, hidden_size) -> None:
    embeddings = np.array(champion_model.predict(_rows())["embedding"].tolist())
    assert embeddings.shape == (3, hidden_size)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(embeddings[1], embeddings[2])  # the question and the crop change the vector


def test_champion_carries_its_reasoner(champion_model) -> None:
    assert champion_model.metadata.metadata["embedrl"] == {"reasoner": True}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "x", "image": "not base64!"}, "row 1: field `image` is not valid base64"),
        ({"text": "x", "image": "aGVsbG8="}, "row 1: field `image` decodes to 5 bytes that are not"),
        ({"text": "x", "tcot": "<thinking>no cue</thinking>"}, "row 1: field `tcot` is not a valid T-CoT"),
        ({"text": "x", "tcot": TCOT}, "row 1: field `tcot`.*no image to crop"),
        ({"text": None, "image": None, "tcot": TCOT}, "row 1: needs `text` or `image`"),
    ],
)
def test_bad_rows_are_named(champion_model, row, message) -> None:
    # None, not NaN, for absent values: MLflow's schema check rejects an all-NaN (float) string column
    frame = pd.DataFrame(
        [{"text": "fine", "image": None, "tcot": None}, {"image": None, "tcot": None, **row}]
    )
    with pytest.raises(EmbeddingInputError, match=message):
        champion_model.predict(frame)


def test_model_server_answers_invocations(registrations, client_env, hidden_size, tmp_path) -> None:
    rows = _rows()
    payload = {"dataframe_split": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}}
    with mlflow_model_server(
        f"models:/{MODEL}@{CHAMPION}", tracking_uri=client_env, workdir=tmp_path
    ) as serving:
        request = urllib.request.Request(
            serving.url + "/invocations",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    embeddings = np.array([row["embedding"] for row in answer["predictions"]])
    assert embeddings.shape == (3, hidden_size)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
