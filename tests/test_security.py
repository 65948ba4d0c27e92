"""Security (issue 5): no unpickling, safetensors only, remote code off, no secret in MLflow or logs,
MLflow basic-auth and a least-privilege Role for the pipeline in infra/.

Each check records what it tried and what happened (tests/faults_table.py). The table in the docs:
`EMBEDRL_FAULTS_DIR=docs/faults .venv/bin/python -m pytest tests/test_security.py` writes docs/faults/security.md.
"""

from __future__ import annotations

import ast
import configparser
import contextlib
import dataclasses
import functools
import importlib.util
import io
import logging
import pickle
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from faults_table import record_fault as _record_fault

record_fault = functools.partial(_record_fault, table="security")

ROOT = Path(__file__).resolve().parents[1]
SCANNED_DIRS = ("src", "components", "pipelines")
INFRA = ROOT / "infra"
PIPELINE_ACCOUNT = "embedrl-pipeline"


# ---------------------------------------------------------------------------------------------------
# Static scan: calls that unpickle, or that switch remote code on


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


# Calls that unpickle whatever file or bytes they are given.
UNPICKLING_CALLS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads",
    "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads", "joblib.load",
    "pandas.read_pickle", "shelve.open", "torch.serialization.load",
}  # fmt: skip


def _imported_names(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted module path, from every import in the module (any scope)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:  # `import a.b` binds `a`; `import a.b as c` binds `c` to `a.b`
                top = alias.name.split(".")[0]
                names[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.AST, imports: dict[str, str]) -> str:
    """`np.load` -> `numpy.load` through the module's imports; "" for anything that is not a dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    parts.append(imports.get(node.id, node.id))
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def _is_constant(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _passes_setting_through(node: ast.expr) -> bool:
    """`trust_remote_code=trust_remote_code` (a parameter) or `=spec.trust_remote_code` (the model spec)."""
    if isinstance(node, ast.Name):
        return node.id == "trust_remote_code"
    return isinstance(node, ast.Attribute) and node.attr == "trust_remote_code"


def _call_findings(call: ast.Call, imports: dict[str, str]) -> list[str]:
    name = _dotted(call.func, imports)
    found = []
    if name in UNPICKLING_CALLS:
        found.append(f"{name}() unpickles its input")
    if name == "torch.load" and not _is_constant(_keyword(call, "weights_only"), True):
        found.append("torch.load() without weights_only=True unpickles arbitrary objects")
    if name == "numpy.load":
        allow = _keyword(call, "allow_pickle")
        if allow is not None and not _is_constant(allow, False):
            found.append("numpy.load(allow_pickle=...) may unpickle object arrays")
    if _is_constant(_keyword(call, "safe_serialization"), False):
        found.append("save_pretrained(safe_serialization=False) writes pickled weights")
    remote = _keyword(call, "trust_remote_code")
    if remote is not None and not _is_constant(remote, False) and not _passes_setting_through(remote):
        found.append(f"trust_remote_code={ast.unparse(remote)}: only the model spec may switch remote code on")
    return found


def _default_findings(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    arguments = function.args
    positional = [*arguments.posonlyargs, *arguments.args]
    pairs = list(zip(positional[len(positional) - len(arguments.defaults) :], arguments.defaults, strict=True))
    pairs += [(arg, default) for arg, default in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True) if default]
    return [
        f"{function.name}(trust_remote_code={ast.unparse(default)}): the default must be False"
        for arg, default in pairs
        if arg.arg == "trust_remote_code" and not _is_constant(default, False)
    ]


def scan_source(source: str, path: str = "<snippet>") -> list[Finding]:
    """Unsafe loading and remote-code switches in one Python source, by its syntax tree (not by grep:
    `np.load(f)` is fine, `np.load(f, allow_pickle=True)` is not, whatever the import is called)."""
    tree = ast.parse(source, filename=path)
    imports = _imported_names(tree)
    findings = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            findings += [Finding(path, node.lineno, what) for what in _call_findings(node, imports)]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            findings += [Finding(path, node.lineno, what) for what in _default_findings(node)]
        elif isinstance(node, ast.Dict):
            findings += [
                Finding(path, node.lineno, "{'trust_remote_code': True} literal")
                for key, value in zip(node.keys, node.values, strict=True)
                if _is_constant(value, True) and isinstance(key, ast.Constant) and key.value == "trust_remote_code"
            ]
    return findings


def scanned_files() -> list[Path]:
    return sorted(p for d in SCANNED_DIRS for p in (ROOT / d).rglob("*.py"))


UNSAFE_SNIPPETS = {
    "pickle.load": "import pickle\nstate = pickle.load(open('x', 'rb'))",
    "pickle.loads (aliased)": "import pickle as pk\nstate = pk.loads(blob)",
    "from pickle import loads": "from pickle import loads\nstate = loads(blob)",
    "pickle.Unpickler": "import pickle\npickle.Unpickler(handle).load()",
    "joblib.load": "import joblib\nmodel = joblib.load('model.joblib')",
    "torch.load, no weights_only": "import torch\nstate = torch.load('ckpt.pt', map_location='cpu')",
    "torch.load(weights_only=False)": "import torch\nstate = torch.load('ckpt.pt', weights_only=False)",
    "torch.load, weights_only from a variable": "import torch\nstate = torch.load(path, weights_only=flag)",
    "numpy.load(allow_pickle=True)": "import numpy as np\narr = np.load('a.npy', allow_pickle=True)",
    "pandas.read_pickle": "import pandas as pd\ndf = pd.read_pickle('frame.pkl')",
    "trust_remote_code=True": "from transformers import AutoModel\nAutoModel.from_pretrained(n, trust_remote_code=True)",
    "trust_remote_code from a dict lookup": "load(n, trust_remote_code=options.get('remote', True))",
    "{'trust_remote_code': True} kwargs": "kwargs = {'trust_remote_code': True}",
    "def f(trust_remote_code=True)": "def load(name, *, trust_remote_code=True):\n    pass",
    "save_pretrained(safe_serialization=False)": "model.save_pretrained(out, safe_serialization=False)",
}

SAFE_SNIPPETS = {
    "torch.load(weights_only=True)": "import torch\nstate = torch.load('ckpt.pt', map_location='cpu', weights_only=True)",
    "numpy.load without pickles": "import numpy as np\na = np.load('a.npy')\nb = np.load('b.npy', allow_pickle=False)",
    "safetensors load_file": "from safetensors.torch import load_file\nstate = load_file('model.safetensors')",
    "trust_remote_code from the spec": "load_model(spec.source, trust_remote_code=spec.trust_remote_code)",
    "trust_remote_code passed through": "def load(n, *, trust_remote_code: bool = False):\n"
                                        "    return f(n, trust_remote_code=trust_remote_code)",
    "json and yaml loads": "import json, yaml\njson.loads(s)\nyaml.safe_load(s)",
}  # fmt: skip


@pytest.mark.parametrize("label", list(UNSAFE_SNIPPETS))
def test_scan_flags_each_unsafe_load(label: str) -> None:
    findings = scan_source(UNSAFE_SNIPPETS[label])
    assert findings, f"the scan missed {label}"
    code = next(line for line in UNSAFE_SNIPPETS[label].splitlines() if not line.startswith(("import ", "from ")))
    record_fault(f"static scan: {label}", f"`{code.strip()}`", f"flagged: {findings[0].what}")


@pytest.mark.parametrize("label", list(SAFE_SNIPPETS))
def test_scan_leaves_safe_loads_alone(label: str) -> None:
    assert scan_source(SAFE_SNIPPETS[label]) == []


def test_project_code_has_no_unsafe_load_or_remote_code_switch() -> None:
    files = scanned_files()
    assert len(files) >= 40, f"expected the project's sources under {SCANNED_DIRS}, found {len(files)} files"
    findings = [f for path in files for f in scan_source(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert findings == [], "unsafe loading or remote code:\n" + "\n".join(map(str, findings))
    record_fault("static scan: the project", f"AST scan of {len(files)} files in {', '.join(SCANNED_DIRS)}/",
                 "no unpickling call, every torch.load has weights_only=True, no trust_remote_code literal")


# ---------------------------------------------------------------------------------------------------
# Weights on disk: safetensors only, and a pickle is never loaded

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz"}


def test_saved_model_directories_hold_safetensors_only(tiny_models) -> None:
    from safetensors import safe_open

    for role, directory in tiny_models.items():
        files = sorted(p for p in directory.rglob("*") if p.is_file())
        pickles = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
        assert pickles == [], f"{role}: pickle-format files in {directory}: {pickles}"
        weights = [p for p in files if p.suffix == ".safetensors"]
        assert weights, f"{role}: no safetensors weights in {directory}"
        for path in weights:
            with safe_open(str(path), framework="pt") as handle:
                assert list(handle.keys()), f"{path} holds no tensors"
    record_fault("weights on disk", "`init_model_dir` / `save_model_dir` for the tiny Embedder and Reasoner",
                 "only `.safetensors` weights (plus JSON/text files); no .bin/.pt/.pkl")


class _Detonator:
    """Unpickling this creates `marker`: proof that a loader unpickled the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _copy_without_weights(model_dir: Path, out: Path) -> Path:
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json"))
    return out


def test_load_model_refuses_a_directory_with_only_pickle_weights(tiny_models, tmp_path) -> None:
    import torch
    from safetensors.torch import load_file

    from embedrl.models.factory import UnsafeWeightsError, load_model

    benign = _copy_without_weights(tiny_models["embedder"], tmp_path / "benign")
    torch.save(load_file(str(tiny_models["embedder"] / "model.safetensors")), benign / "pytorch_model.bin")
    with pytest.raises(UnsafeWeightsError, match=r"only pickle weights \['pytorch_model.bin'\].*safetensors only"):
        load_model(benign)

    marker = tmp_path / "unpickled"
    hostile = _copy_without_weights(tiny_models["embedder"], tmp_path / "hostile")
    (hostile / "pytorch_model.bin").write_bytes(pickle.dumps(_Detonator(marker)))
    with pytest.raises(UnsafeWeightsError):
        load_model(hostile)
    assert not marker.exists(), "load_model unpickled pytorch_model.bin"
    record_fault("pickle weights", "`load_model` on a model directory whose weights are only `pytorch_model.bin` "
                 "(a real state dict; a pickle that runs code when loaded)",
                 "refused with UnsafeWeightsError naming the file; the hostile pickle never ran")


def test_load_model_ignores_a_pickle_beside_safetensors(tiny_models, tmp_path) -> None:
    from embedrl.models.factory import load_model

    marker = tmp_path / "unpickled"
    directory = shutil.copytree(tiny_models["embedder"], tmp_path / "both")
    (directory / "pytorch_model.bin").write_bytes(pickle.dumps(_Detonator(marker)))
    model, _ = load_model(directory)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert not marker.exists(), "load_model unpickled pytorch_model.bin although model.safetensors was there"
    record_fault("pickle weights", "`load_model` on a directory with `model.safetensors` and a hostile "
                 "`pytorch_model.bin`", "loaded the safetensors; the pickle was never opened")


# ---------------------------------------------------------------------------------------------------
# trust_remote_code: off by default, on only where a profile's model spec says so


def test_trust_remote_code_defaults_to_false_everywhere() -> None:
    import inspect

    from embedrl.models import factory, processor
    from embedrl.models.spec import ModelSpec, load_model_specs

    default = {f.name: f.default for f in dataclasses.fields(ModelSpec)}["trust_remote_code"]
    assert default is False
    for function in (factory.load_model, processor.load_processor):
        assert inspect.signature(function).parameters["trust_remote_code"].default is False
    profiles = {"tiny": "tiny", "paper-2b": "paper-2b", "micro": ROOT / "tests" / "profiles" / "micro.yaml"}
    for name, profile in profiles.items():
        for role, spec in load_model_specs(profile).items():
            assert spec.trust_remote_code is False, f"profile {name}: models.{role}.trust_remote_code is on"
    record_fault("trust_remote_code", "ModelSpec default, `load_model` / `load_processor` defaults, profiles "
                 "tiny, paper-2b, micro", "False everywhere")


@pytest.mark.parametrize("allowed", [False, True])
def test_trust_remote_code_reaches_transformers_only_from_the_spec(allowed, tiny_models, tmp_path, monkeypatch):
    """A spec whose source is a local model: every call embedrl makes carries the spec's value; calls that
    transformers makes inside (its tokenizer lookup) get None, its own "never without asking"."""
    import transformers

    from embedrl.models.factory import init_model_dir
    from embedrl.models.spec import load_model_specs

    seen: list[tuple[str, str, object]] = []
    for cls in (transformers.AutoConfig, transformers.AutoModelForImageTextToText, transformers.AutoProcessor):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, _name=cls.__name__, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            seen.append((_name, caller, kwargs.get("trust_remote_code", "absent")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    spec = dataclasses.replace(
        load_model_specs(ROOT / "tests" / "profiles" / "micro.yaml")["embedder"],
        source=str(tiny_models["embedder"]), trust_remote_code=allowed,
    )
    init_model_dir(spec, tmp_path / "copy")
    ours = [(name, value) for name, caller, value in seen if caller.startswith("embedrl.")]
    inner = [(name, value) for name, caller, value in seen if not caller.startswith("embedrl.")]
    assert {name for name, _ in ours} >= {"AutoConfig", "AutoModelForImageTextToText"}
    assert all(value is allowed for _, value in ours), seen
    assert all(value is None or value is allowed for _, value in inner), seen
    record_fault("trust_remote_code", f"a model spec with `trust_remote_code: {str(allowed).lower()}` and a "
                 "local source, through `init_model_dir`",
                 f"embedrl's {len(ours)} from_pretrained calls got {allowed}; transformers' inner calls got "
                 f"None (never True on their own)")


# ---------------------------------------------------------------------------------------------------
# A planted secret must reach no MLflow param, tag, metric, dataset, artifact, store file or log

PLANTED_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "MLFLOW_TRACKING_PASSWORD", "HF_TOKEN",
               "EMBEDRL_TEACHER_API_KEY")  # fmt: skip


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Every log record at DEBUG, from the root logger and from loggers that do not propagate (mlflow's)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger()] + [
        logger for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    ]  # fmt: skip
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def _run_texts(client, run) -> dict[str, str]:
    """Everything MLflow holds about a run, as text, keyed by where it is."""
    texts = {f"param {k}": f"{k}={v}" for k, v in run.data.params.items()}
    texts |= {f"tag {k}": f"{k}={v}" for k, v in run.data.tags.items()}
    texts |= {f"metric name {k}": k for k in run.data.metrics}
    for dataset_input in run.inputs.dataset_inputs:
        dataset = dataset_input.dataset
        texts[f"dataset {dataset.name}"] = " ".join(
            [dataset.name, dataset.digest, dataset.source, dataset.schema or "", dataset.profile or ""]
            + [f"{tag.key}={tag.value}" for tag in dataset_input.tags]
        )
    texts[f"run name {run.info.run_id}"] = run.info.run_name or ""
    return texts


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_a_planted_secret_reaches_no_mlflow_record_artifact_or_log(tmp_path, monkeypatch) -> None:
    import mlflow
    from mlflow import MlflowClient

    from embedrl.config import build_config
    from embedrl.pipeline.steps import RUN_KEY_ENV, DataSource, Tracking, _trainer_args
    from embedrl.registry.tracking import log_data_lineage, log_report_artifacts, log_step_metrics
    from embedrl.train.egrl import EGRLStageConfig

    secret = f"planted-{secrets.token_hex(16)}"
    for name in PLANTED_ENV:
        monkeypatch.setenv(name, secret)
    monkeypatch.setenv(RUN_KEY_ENV, "kfp-run-planted-secret")
    monkeypatch.chdir(tmp_path)  # the sqlite store's default artifact root is ./mlruns
    store = tmp_path / "store"
    store.mkdir()
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
    data_repo = f"https://oauth2:{secret}@git.example.com/ml/embedrl.git"
    judge_url = f"https://judge:{secret}@judge.example.com/v1?api_key={secret}&model=qwen"
    egrl = build_config(EGRLStageConfig, "tiny", "egrl", output_dir=str(tmp_path / "egrl"), hub_token=secret,
                        judge_url=judge_url)
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text('{"overall": 1.0}\n')
    lineage = {"repo": data_repo, "rev": "0" * 40, "path": "data", "md5": "0123456789abcdef0123456789abcdef.dir"}

    previous_uri = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    try:
        with captured_logs() as logs:
            tracking = Tracking(tracking_uri, "security")
            with tracking.stage("data_prep", {"data": DataSource(repo=data_repo, rev="0" * 40).__dict__}) as prep:
                log_data_lineage(lineage)
                log_step_metrics([{"step": 0, "pairs": 10.0}], prefix="data/")
                log_report_artifacts([report], "data_prep")
            with tracking.stage("eg_rl", {"egrl": _trainer_args(egrl)}) as rl:
                log_step_metrics([{"step": 0, "outcome": 0.1}], prefix="egrl/")
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(previous_uri)

    client = MlflowClient(tracking_uri)
    runs = [client.get_run(r.info.run_id) for r in (prep, rl)]
    runs.append(client.get_run(runs[0].data.tags["mlflow.parentRunId"]))
    texts = {where: text for run in runs for where, text in _run_texts(client, run).items()}
    texts["captured logs"] = logs.getvalue()
    assert len(texts["captured logs"]) > 0 and len(texts) > 100
    leaks = sorted(where for where, text in texts.items() if secret in text)
    leaks += [f"file {name}" for name in _files_containing(tmp_path, secret.encode())]
    assert leaks == [], f"the planted secret leaked into: {leaks}"

    params = {**runs[0].data.params, **runs[1].data.params}
    assert params["data.repo"] == "https://oauth2:***@git.example.com/ml/embedrl.git"
    assert params["egrl.judge_url"] == "https://judge:***@judge.example.com/v1?api_key=***&model=qwen"
    assert params["egrl.hub_token"] == "***"
    assert runs[0].data.tags["embedrl.data.repo"] == params["data.repo"]
    record_fault("planted secret", f"a random value in {', '.join(PLANTED_ENV)}, in `hub_token`, in the judge "
                 "URL (password and `api_key` query) and in the data repo URL; data_prep and eg_rl stages "
                 "tracked to sqlite with lineage, metrics and a report artifact, logs captured at DEBUG",
                 f"found in none of {len(texts) - 1} params/tags/metric names/datasets, the captured logs, "
                 "the store or any artifact file; the URLs are logged with `***` in place of the secret")


def test_a_report_artifact_holding_a_secret_is_refused(tmp_path, monkeypatch) -> None:
    import mlflow

    from embedrl.registry.tracking import log_report_artifacts, stage_run

    secret = f"planted-{secrets.token_hex(16)}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "report"
    report.mkdir()
    (report / "debug.txt").write_text(f"env dump: AWS_SECRET_ACCESS_KEY={secret}\n")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous_uri = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    try:
        with stage_run(tracking_uri, None, "evaluate", config={}, log_system_metrics=False, experiment="security"):
            with pytest.raises(ValueError, match=r"debug\.txt.*AWS_SECRET_ACCESS_KEY") as refused:
                log_report_artifacts([report], "evaluation")
    finally:
        mlflow.set_tracking_uri(previous_uri)
    assert secret not in str(refused.value)
    assert _files_containing(tmp_path / "mlruns", secret.encode()) == []
    record_fault("planted secret", "a report directory with a file that holds the value of "
                 "$AWS_SECRET_ACCESS_KEY, given to `log_report_artifacts`",
                 "refused with ValueError naming the file and the variable (not the value); nothing uploaded")


# ---------------------------------------------------------------------------------------------------
# Redaction rules


@pytest.mark.parametrize(
    "name, value, logged",
    [
        ("egrl.hub_token", "hf_abcdefghijklmnop", "***"),
        ("judge.api_key", "sk-abcdefghijklmnop", "***"),
        ("s3.AWS_SECRET_ACCESS_KEY", "abcd/efgh+ijkl", "***"),
        ("db.password", "hunter22", "***"),
        ("egrl.hub_token", "None", "None"),
        ("egrl.judge_url", "", ""),
        ("sft.eos_token", "<|im_end|>", "<|im_end|>"),
        ("egrl.max_completion_length", "160", "160"),
        ("data.repo", "https://user:pa@ss@git.example.com/r.git", "https://user:***@git.example.com/r.git"),
        ("backend", "postgresql://mlflow:pw@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
        ("urls", '["https://a:b@x.org/1", "s3://bucket/key"]', '["https://a:***@x.org/1", "s3://bucket/key"]'),
        ("url", "https://x.org/v1?token=abc&page=2", "https://x.org/v1?token=***&page=2"),
        ("presigned", "https://x.org/a?X-Amz-Signature=f00d&X-Amz-Credential=AK/x",
         "https://x.org/a?X-Amz-Signature=***&X-Amz-Credential=***"),
        ("url", "http://embedrl-mlflow.kubeflow:5000", "http://embedrl-mlflow.kubeflow:5000"),
    ],
)  # fmt: skip
def test_redact_masks_secret_names_url_passwords_and_secret_queries(name, value, logged) -> None:
    from embedrl.registry.tracking import redact

    assert redact(name, value) == logged


def test_redact_masks_values_of_secret_environment_variables(monkeypatch) -> None:
    from embedrl.registry.tracking import redact

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "correct-horse-battery")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAABCDEFGHIJKLMNOP")
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to mask safely: "abc" is in many words
    assert redact("note", "login correct-horse-battery with AKIAABCDEFGHIJKLMNOP") == "login *** with ***"
    assert redact("note", "abc") == "abc"


def test_flattened_params_are_redacted_before_they_are_cut() -> None:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    from embedrl.registry.tracking import flatten_params

    url = "https://user:" + "s" * MAX_PARAM_VAL_LENGTH + "@host/x"
    flat = flatten_params({"data": {"repo": url, "hub_token": "hf_x" * 4}})
    assert flat == {"data.repo": "https://user:***@host/x", "data.hub_token": "***"}


# ---------------------------------------------------------------------------------------------------
# infra/: MLflow basic-auth and the pipeline's Role


def _infra_objects(directory: Path = INFRA) -> list[dict]:
    """Every object the kustomizations under `directory` list (no kustomize transforms needed here)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects += _infra_objects(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    return objects


def _named(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.fixture(scope="module")
def infra() -> list[dict]:
    return _infra_objects()


def _mlflow_container(infra: list[dict]) -> dict:
    return _named(infra, "Deployment")["embedrl-mlflow"]["spec"]["template"]["spec"]["containers"][0]


def _mlflow_auth_module(name: str, monkeypatch):
    """`mlflow.server.auth.<name>` loaded from its file: the package's `__init__` needs Flask-WTF
    (`mlflow[auth]`), which only the server image installs; `config` and `permissions` do not."""
    package = Path(importlib.util.find_spec("mlflow.server.auth").origin).parent
    spec = importlib.util.spec_from_file_location(f"_embedrl_test_mlflow_auth_{name}", package / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_mlflow_server_requires_basic_auth_with_credentials_from_secrets(infra, tmp_path, monkeypatch) -> None:
    read_auth_config = _mlflow_auth_module("config", monkeypatch).read_auth_config
    get_permission = _mlflow_auth_module("permissions", monkeypatch).get_permission

    container = _mlflow_container(infra)
    assert container["command"] == ["mlflow", "server"] and "--app-name=basic-auth" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    secrets_ = _named(infra, "Secret")
    # Every credential the auth app reads comes from a Secret, never a literal in the Deployment.
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets_[ref["name"]]["stringData"], f"{name}: {ref} is not in infra/secrets"
    # mlflow's basic-auth app refuses to start without a static CSRF key (this pins it to the installed mlflow).
    auth_source = Path(importlib.util.find_spec("mlflow.server.auth").origin).read_text()
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY" in auth_source
    # The mounted basic_auth.ini, read by mlflow itself with the Deployment's environment.
    mount = next(m for m in container["volumeMounts"] if m["name"] == "auth-config")
    volume = next(v for v in _named(infra, "Deployment")["embedrl-mlflow"]["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "auth-config")
    ini_name = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"]).relative_to(mount["mountPath"]).as_posix()
    assert [item["path"] for item in volume["secret"]["items"]] == [ini_name]
    ini = secrets_[volume["secret"]["secretName"]]["stringData"][ini_name]
    (tmp_path / ini_name).write_text(ini)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(tmp_path / ini_name))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "admin-from-secret")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "password-from-secret")
    config = read_auth_config()
    assert config.authorization_function == "mlflow.server.auth:authenticate_request_basic_auth"
    assert (config.admin_username, config.admin_password) == ("admin-from-secret", "password-from-secret")
    assert get_permission(config.default_permission).can_read
    assert not get_permission(config.default_permission).can_update, "every user could write every experiment"
    parser = configparser.ConfigParser()
    parser.read_string(ini)
    assert "admin_password" not in parser["mlflow"], "the admin password belongs in the Secret's env, not the ini"
    record_fault("MLflow auth", "the MLflow Deployment, its Secrets and basic_auth.ini, read by mlflow's own "
                 "`read_auth_config`", f"`--app-name basic-auth`; admin user, password and CSRF key from Secrets; "
                 f"default permission {config.default_permission} (no write)")


def _pipeline_roles(infra: list[dict]) -> dict[str, dict]:
    """The Roles bound to the pipeline's service account, by name; a binding to anything else fails."""
    bound = {}
    for binding in [*_named(infra, "RoleBinding").values(), *_named(infra, "ClusterRoleBinding").values()]:
        subjects = {(s["kind"], s["name"]) for s in binding.get("subjects", [])}
        if ("ServiceAccount", PIPELINE_ACCOUNT) in subjects:
            ref = binding["roleRef"]
            assert ref["kind"] == "Role", f"{binding['metadata']['name']} binds a {ref['kind']}: namespace-scoped only"
            assert ref["name"] in _named(infra, "Role"), f"{ref['name']} is not defined in infra/"
            bound[ref["name"]] = _named(infra, "Role")[ref["name"]]
    return bound


def _trainjob_verbs() -> set[str]:
    """The verbs `run_trainjob` uses, observed through a recording stand-in for the Kubernetes API."""
    from embedrl.pipeline import trainjob as tj

    class Recorder:
        def __init__(self):
            self.calls: list[str] = []

        def create_namespaced_custom_object(self, *args):
            self.calls.append("create")

        def get_namespaced_custom_object(self, *args):
            self.calls.append("get")
            return {"status": {}}

        def delete_namespaced_custom_object(self, *args):
            self.calls.append("delete")

    api = Recorder()
    clock = iter([0.0, 0.0, 100.0, 100.0])
    manifest = {"metadata": {"namespace": "kubeflow", "name": "job"}}
    with pytest.raises(tj.TrainJobError):
        tj.run_trainjob(manifest, timeout_s=10, api=api, clock=lambda: next(clock), sleep=lambda _: None)
    return set(api.calls)


NAMED_ONLY = {"secrets": {"mlpipeline-minio-artifact"}, "configmaps": {"kfp-launcher"}}  # KFP's, by name


def assert_least_privilege(objects: list[dict]) -> None:
    """Every Role bound to the pipeline's account grants exactly what it needs: no wildcard, no extra verb."""
    roles = _pipeline_roles(objects)
    assert roles, f"no Role is bound to {PIPELINE_ACCOUNT}"
    needed = {  # (apiGroup, resource) -> verbs, and why
        ("trainer.kubeflow.org", "trainjobs"): _trainjob_verbs(),  # embedrl.pipeline.trainjob.run_trainjob
        ("argoproj.io", "workflowtaskresults"): {"create", "patch"},  # Argo's executor reports step outputs
        ("", "secrets"): {"get"},  # KFP's launcher reads the pipeline root's object-store credentials
        ("", "configmaps"): {"get"},  # KFP's driver reads the kfp-launcher settings
    }
    granted: dict[tuple[str, str], set[str]] = {}
    for name, role in roles.items():
        for rule in role["rules"]:
            fields = [*rule["apiGroups"], *rule["resources"], *rule["verbs"], *rule.get("resourceNames", [])]
            assert "*" not in fields, f"Role {name}: wildcard in {rule}"
            assert not rule.get("nonResourceURLs"), f"Role {name}: {rule}"
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
                    if resource in NAMED_ONLY:
                        names = set(rule.get("resourceNames", []))
                        assert names, f"Role {name}: {resource} must be limited by resourceNames"
                        assert names <= NAMED_ONLY[resource], f"Role {name}: {resource} {names - NAMED_ONLY[resource]}"
    extra = {key: verbs - needed.get(key, set()) for key, verbs in granted.items() if verbs - needed.get(key, set())}
    assert extra == {}, f"{PIPELINE_ACCOUNT} may do more than it needs: {extra}"
    missing = {key: verbs - granted.get(key, set()) for key, verbs in needed.items() if verbs - granted.get(key, set())}
    assert missing == {}, f"{PIPELINE_ACCOUNT} lacks {missing}"


def test_pipeline_service_account_has_least_privilege(infra) -> None:
    assert _trainjob_verbs() == {"create", "get", "delete"}
    assert_least_privilege(infra)
    record_fault("RBAC", f"every Role bound to ServiceAccount `{PIPELINE_ACCOUNT}`, against the verbs "
                 "`run_trainjob` calls (recorded through a stand-in API) and those Argo and KFP need in a step",
                 "no wildcard, no cluster role; trainjobs create/get/delete, workflowtaskresults create/patch, "
                 "get on one named secret and one named configmap")


WIDENINGS = {
    "a wildcard verb": lambda rules: rules[0]["verbs"].append("*"),
    "an extra verb (list)": lambda rules: rules[0]["verbs"].append("list"),
    "an extra resource (pods)": lambda rules: rules.append({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}),
    "secrets without resourceNames": lambda rules: rules.append({"apiGroups": [""], "resources": ["secrets"],
                                                                 "verbs": ["get"]}),
    "get on another Secret (embedrl-s3)": lambda rules: rules.append(
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["embedrl-s3"], "verbs": ["get"]}),
}  # fmt: skip


@pytest.mark.parametrize("label", list(WIDENINGS))
def test_least_privilege_check_fails_on_a_widened_role(infra, label) -> None:
    import copy

    altered = copy.deepcopy(infra)
    role_name = sorted(_pipeline_roles(altered))[0]
    WIDENINGS[label](_named(altered, "Role")[role_name]["rules"])
    with pytest.raises(AssertionError):
        assert_least_privilege(altered)
    record_fault("RBAC", f"the pipeline's Role widened with {label}", "the least-privilege check fails")
