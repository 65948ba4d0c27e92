"""Compile, run locally (kfp.local, whole DAG in subprocesses) or submit the pipeline of `pipelines/`.

The pipeline and its components live at the top of the repository (`pipelines/`, `components/`), not
in the package: they are needed only to compile or run, and the compiled YAML carries each component's
source. `repo_root()` finds them from the working directory or from this package's checkout.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedrl.pipeline.steps import RUN_KEY_ENV, DataSource, load_profile

log = logging.getLogger(__name__)

PIPELINE_MODULE = "pipelines.embedrl_pipeline"
COMPILED = Path("pipelines") / "embedrl_pipeline.yaml"


def repo_root(start: str | Path | None = None) -> Path:
    """The checkout holding `pipelines/` and `components/`: above `start` (default: cwd), else above
    this package (an editable install)."""
    candidates = [Path(start or Path.cwd()).resolve(), Path(__file__).resolve()]
    for candidate in candidates:
        for folder in (candidate, *candidate.parents):
            if (folder / "pipelines" / "embedrl_pipeline.py").is_file() and (folder / "components").is_dir():
                return folder
    raise FileNotFoundError("no checkout with pipelines/embedrl_pipeline.py found above the working directory "
                            "or the embedrl package; run from the repository (git clone) root")


def load_pipeline(root: Path | None = None, image: str | None = None):
    """The pipeline function. `image` (default: components.DEFAULT_IMAGE) is every step's base image."""
    root = root or repo_root()
    if image:
        os.environ["EMBEDRL_IMAGE"] = image
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    for name in [m for m in sys.modules if m == "components" or m.startswith(("components.", "pipelines"))]:
        del sys.modules[name]  # the image is read at import time
    return importlib.import_module(PIPELINE_MODULE).embedrl_pipeline


def compile_pipeline(out: str | Path, *, image: str | None = None) -> Path:
    from kfp import compiler

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(load_pipeline(image=image), str(out))
    return out


@dataclass
class RunParameters:
    """Pipeline parameters (see pipelines/embedrl_pipeline.py); the profile is resolved into `config`."""

    profile: str = "tiny"
    seed: int = 0
    data: DataSource = field(default_factory=DataSource)
    tracking_uri: str = ""
    experiment: str = "embedrl"
    model_name: str = "embedrl-embedder"
    promotion_metric: str = "overall"
    promotion_margin: float = 0.0
    overrides: dict = field(default_factory=dict)  # {"embedder": {"max_steps": 5}, ...} on top of the profile

    def arguments(self) -> dict[str, Any]:
        config = load_profile(self.profile)
        for section, values in self.overrides.items():
            config.setdefault(section, {}).update(values)
        return {"profile": str(self.profile), "config": config, "seed": self.seed,
                "data_repo": self.data.repo, "data_rev": self.data.rev, "data_path": self.data.path,
                "data_md5": self.data.md5, "data_seed": self.data.seed, "data_size": self.data.size,
                "tracking_uri": self.tracking_uri, "experiment": self.experiment, "model_name": self.model_name,
                "promotion_metric": self.promotion_metric, "promotion_margin": self.promotion_margin}


def default_data_source(root: Path) -> DataSource:
    """The embedded default: the checkout's DVC-tracked `data/` if present, else MiniMMEB generated in the
    step; either way pinned to the md5 in data.dvc."""
    from embedrl.data.versioning import read_dvc_out

    pinned = read_dvc_out(root / "data.dvc")["md5"] if (root / "data.dvc").is_file() else ""
    if (root / "data").is_dir():
        return DataSource(repo=str(root), path="data", md5=pinned)
    return DataSource(md5=pinned)


@dataclass
class LocalRun:
    run_key: str
    workdir: Path
    tracking_uri: str
    seconds: float
    mlflow: dict


def run_local(workdir: str | Path, params: RunParameters, *, caching: bool = True) -> LocalRun:
    """The whole DAG with kfp.local's SubprocessRunner (this interpreter, no venv per task); MLflow on
    sqlite in `workdir` unless `params.tracking_uri` is set."""
    from kfp import local

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if not params.tracking_uri:
        params.tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    run_key = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    os.environ[RUN_KEY_ENV] = run_key  # inherited by each task's subprocess; not part of any cache key
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir / "pipeline_root"),
               enable_caching=caching, cache_root=str(workdir / "kfp_cache"), raise_on_error=True)
    pipeline = load_pipeline()
    started = time.perf_counter()
    from embedrl.registry.tracking import finish_parent_run

    try:
        pipeline(**params.arguments())
    except BaseException:
        finish_parent_run(params.tracking_uri, params.experiment, run_key, status="FAILED")
        raise
    finish_parent_run(params.tracking_uri, params.experiment, run_key, status="FINISHED")
    seconds = time.perf_counter() - started
    return LocalRun(run_key, workdir, params.tracking_uri, seconds,
                    summarise_mlflow(params.tracking_uri, params.experiment, run_key, params.model_name))


def summarise_mlflow(tracking_uri: str, experiment: str, run_key: str, model_name: str) -> dict:
    """What the MLflow UI shows for one pipeline run: the parent, its stage runs, the registered version."""
    from mlflow import MlflowClient

    from embedrl.registry.tracking import find_parent_run

    client = MlflowClient(tracking_uri)
    parent = find_parent_run(tracking_uri, experiment, run_key)
    if parent is None:
        return {"parent_run_id": None, "stages": {}}
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    stages = {c.data.tags.get("embedrl.stage", c.info.run_name): {"run_id": c.info.run_id, "status": c.info.status}
              for c in children}
    aliases = {}
    try:
        for alias in ("champion", "challenger"):
            aliases[alias] = int(client.get_model_version_by_alias(model_name, alias).version)
    except Exception:  # noqa: BLE001 - no model registered yet (every stage cached, or registration failed)
        pass
    return {"parent_run_id": parent.info.run_id, "status": client.get_run(parent.info.run_id).info.status,
            "stages": stages, "aliases": aliases}


def submit(endpoint: str, package: str | Path, params: RunParameters, *, experiment_name: str = "embedrl",
           run_name: str | None = None, namespace: str | None = None, extra: dict | None = None,
           service_account: str | None = "embedrl-pipeline") -> str:
    """Submit the compiled package to a Kubeflow Pipelines endpoint (kfp.Client); returns the run id."""
    import kfp

    client = kfp.Client(host=endpoint, namespace=namespace)
    arguments = {**params.arguments(), **(extra or {})}
    run = client.create_run_from_pipeline_package(str(package), arguments=arguments, run_name=run_name,
                                                  experiment_name=experiment_name, namespace=namespace,
                                                  service_account=service_account)
    return run.run_id
