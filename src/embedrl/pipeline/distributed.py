"""`distributed=True`: a training step runs its stage as a Kubeflow Trainer TrainJob and waits for it.

The step pod cannot share its artifact directories with the TrainJob's pods, so they meet in a staging
area (an S3 prefix, or a path on a shared volume): the step uploads the stage's inputs and resolved
profile, every TrainJob node runs `python -m embedrl.pipeline.worker` under torchrun (see
embedrl.pipeline.trainjob.launch_command for how each runtime starts it), rank 0 uploads the trained model and its
metrics, and the step downloads them into its output artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from embedrl.pipeline.steps import RUN_KEY_ENV, Tracking

STAGES = {"embedder": "deepspeed-distributed", "egrl": "torch-distributed"}  # stage -> Trainer runtime


@dataclass(frozen=True)
class DistributedSettings:
    """Where and how big the TrainJob is. Pipeline parameter `distributed_settings` (a dict) fills it."""

    staging_uri: str = ""  # s3://bucket/prefix or a path on a volume every pod mounts
    namespace: str = "kubeflow"
    num_nodes: int = 2
    gpus_per_node: int = 8
    image: str = ""  # default: the step's own image (EMBEDRL_IMAGE)
    deepspeed_config: str = "/opt/embedrl/infra/deepspeed/zero2.json"
    s3_secret: str = "embedrl-s3"
    mlflow_secret: str = "embedrl-mlflow"
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    timeout_s: int = 7 * 24 * 3600

    @classmethod
    def from_dict(cls, values: dict | None) -> DistributedSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise ValueError(f"distributed_settings: unknown key(s) {unknown}; known: {sorted(known)}")
        settings = cls(**(values or {}))
        if not settings.staging_uri:
            raise ValueError("distributed_settings.staging_uri is required (s3://bucket/prefix or a shared path): "
                             "the TrainJob's pods get the stage's inputs from there")
        return settings


# ------------------------------------------------------------------------------------ staging area
def _is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key.strip("/")


def _s3():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def upload_dir(local: str | Path, uri: str) -> None:
    local = Path(local)
    if not _is_s3(uri):
        shutil.copytree(local, uri, dirs_exist_ok=True)
        return
    bucket, prefix = _split_s3(uri)
    client = _s3()
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")


def download_dir(uri: str, local: str | Path) -> Path:
    local = Path(local)
    local.mkdir(parents=True, exist_ok=True)
    if not _is_s3(uri):
        shutil.copytree(uri, local, dirs_exist_ok=True)
        return local
    bucket, prefix = _split_s3(uri)
    client = _s3()
    found = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            target = local / item["Key"][len(prefix) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, item["Key"], str(target))
            found += 1
    if not found:
        raise FileNotFoundError(f"nothing under {uri}: the stage's files were not uploaded there")
    return local


def stage_key(stage: str) -> str:
    """Same for every attempt of one step in one pipeline run: a retried step finds its TrainJob again."""
    run = os.environ.get(RUN_KEY_ENV, "") or f"adhoc-{uuid.uuid4().hex}"
    return f"{stage}-{hashlib.sha256(run.encode()).hexdigest()[:10]}"


def stage_prefix(settings: DistributedSettings, stage: str) -> str:
    return f"{settings.staging_uri.rstrip('/')}/{stage_key(stage)}"


def write_stage_spec(prefix: str, stage: str, *, profile: str, config: dict | None, seed: int,
                     tracking: Tracking, inputs: dict[str, str], settings: DistributedSettings) -> None:
    """Inputs and the stage's settings, uploaded where the worker finds them."""
    import tempfile

    for name, path in inputs.items():
        upload_dir(path, f"{prefix}/inputs/{name}")
    spec = {"stage": stage, "profile": profile, "config": config or {}, "seed": seed,
            "tracking": asdict(tracking), "inputs": sorted(inputs),
            "deepspeed_config": settings.deepspeed_config if stage == "embedder" else ""}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "stage.yaml").write_text(yaml.safe_dump(spec, sort_keys=True), encoding="utf-8")
        upload_dir(tmp, f"{prefix}/spec")


# -------------------------------------------------------------------------------------- the TrainJob
def stage_trainjob(stage: str, prefix: str, settings: DistributedSettings, *, name: str) -> dict:
    from embedrl.pipeline.trainjob import launch_command, trainjob_manifest

    secrets = {"AWS_ACCESS_KEY_ID": (settings.s3_secret, "AWS_ACCESS_KEY_ID"),
               "AWS_SECRET_ACCESS_KEY": (settings.s3_secret, "AWS_SECRET_ACCESS_KEY"),
               "AWS_ENDPOINT_URL": (settings.s3_secret, "AWS_ENDPOINT_URL"),
               "MLFLOW_TRACKING_USERNAME": (settings.mlflow_secret, "MLFLOW_TRACKING_USERNAME"),
               "MLFLOW_TRACKING_PASSWORD": (settings.mlflow_secret, "MLFLOW_TRACKING_PASSWORD")}
    image = settings.image or os.environ.get("EMBEDRL_IMAGE", "")
    if not image:
        raise ValueError("distributed_settings.image is empty and EMBEDRL_IMAGE is not set in the step")
    # torchrun on every node (mpirun starts it on each node under the DeepSpeed runtime)
    command = launch_command(STAGES[stage], ["--staging", prefix], module="embedrl.pipeline.worker",
                             num_nodes=settings.num_nodes, gpus_per_node=settings.gpus_per_node,
                             forward_env=list(secrets))
    return trainjob_manifest(name=name, namespace=settings.namespace, runtime=STAGES[stage], image=image,
                             command=command, num_nodes=settings.num_nodes,
                             gpus_per_node=settings.gpus_per_node, env_from_secrets=secrets,
                             node_selector=settings.node_selector or None,
                             tolerations=settings.tolerations or None)


def run_stage_distributed(stage: str, settings: DistributedSettings, *, inputs: dict[str, str], out_dir: str,
                          profile: str, config: dict | None, seed: int, tracking: Tracking,
                          api: Any = None) -> dict:
    """Stage the inputs, run the TrainJob to completion, fetch the model into `out_dir`; its metrics."""
    from embedrl.pipeline.trainjob import run_trainjob

    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} cannot run distributed; choose one of {sorted(STAGES)}")
    prefix = stage_prefix(settings, stage)
    write_stage_spec(prefix, stage, profile=profile, config=config, seed=seed, tracking=tracking, inputs=inputs,
                     settings=settings)
    name = f"embedrl-{prefix.rsplit('/', 1)[-1]}"
    run_trainjob(stage_trainjob(stage, prefix, settings, name=name), timeout_s=settings.timeout_s, api=api)
    download_dir(f"{prefix}/outputs/model", out_dir)
    return json.loads((Path(out_dir) / "logs" / "metrics.json").read_text(encoding="utf-8"))
