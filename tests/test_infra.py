"""infra/: the kustomize builds, their schemas, the TrainJob builder and waiter, and secret hygiene. Offline."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

from embedrl.pipeline import trainjob as tj

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
KUBERNETES_VERSION = "1.34.0"  # the schemas kubernetes-validate checks built-in kinds against (strict)
K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
PLACEHOLDER = "CHANGE_ME"
CREDENTIAL_KEY = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|_URI$|\.ini$")

TEMPLATE_OPTIONS = dict(
    namespace="kubeflow",
    image="REGISTRY/embedrl:TAG-cuda",
    env={"MLFLOW_TRACKING_URI": "http://embedrl-mlflow:5000", "NCCL_DEBUG": "WARN"},
    env_from_secrets={
        "MLFLOW_TRACKING_USERNAME": ("embedrl-mlflow", "MLFLOW_TRACKING_USERNAME"),
        "MLFLOW_TRACKING_PASSWORD": ("embedrl-mlflow", "MLFLOW_TRACKING_PASSWORD"),
    },
    resources={"cpu": "32", "memory": "256Gi"},
    node_selector={"nvidia.com/gpu.present": "true"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    volumes=[{"name": "workspace", "persistentVolumeClaim": {"claimName": "embedrl-workspace"}}],
    volume_mounts=[{"name": "workspace", "mountPath": "/mnt/work"}],
    num_nodes=2, gpus_per_node=8, profile="paper-2b",
)


# ---------------------------------------------------------------------------------------------------
# Building the kustomizations


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def _load_resources(directory: Path) -> list[dict]:
    """Without a kustomize binary: every file a kustomization.yaml lists, recursively (no transforms)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        assert path.exists(), f"{directory / 'kustomization.yaml'} lists {entry}, which does not exist"
        if path.is_dir():
            objects += _load_resources(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def _build(directory: Path) -> list[dict]:
    command = _kustomize_command()
    if command is None:
        return _load_resources(directory)
    result = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(command)} {directory}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def infra_objects() -> list[dict]:
    return _build(INFRA)


@pytest.fixture(scope="module")
def trainjob_templates() -> list[dict]:
    return _build(INFRA / "trainer")


def _by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_every_kustomization_lists_existing_files_that_parse():
    kustomizations = sorted(INFRA.rglob("kustomization.yaml"))
    assert len(kustomizations) >= 7
    for kustomization in kustomizations:
        objects = _load_resources(kustomization.parent)
        assert objects and all("kind" in o and "metadata" in o for o in objects), kustomization


def test_the_top_level_build_holds_the_deployable_pieces(infra_objects):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in infra_objects}
    assert {
        ("Deployment", "embedrl-mlflow"), ("Service", "embedrl-mlflow"), ("ServiceAccount", "embedrl-mlflow"),
        ("StatefulSet", "embedrl-postgres"), ("Service", "embedrl-postgres"),
        ("Secret", "embedrl-s3"), ("Secret", "embedrl-mlflow"),
        ("Role", "embedrl-pipeline-trainjobs"), ("RoleBinding", "embedrl-pipeline-trainjobs"),
        ("Role", "embedrl-pipeline-runner"), ("RoleBinding", "embedrl-pipeline-runner"),
        ("ServiceAccount", "embedrl-pipeline"), ("PersistentVolumeClaim", "embedrl-workspace"),
    } <= kinds
    assert not any(o["kind"] == "TrainJob" for o in infra_objects)  # applying infra/ must not start training


@pytest.mark.skipif(_kustomize_command() is None, reason="no kustomize or kubectl binary")
def test_kustomize_sets_the_namespace_everywhere(infra_objects):
    assert {o["metadata"].get("namespace") for o in infra_objects} == {"kubeflow"}
    binding = _by_kind(infra_objects, "RoleBinding")["embedrl-pipeline-trainjobs"]
    assert binding["subjects"][0]["namespace"] == "kubeflow"


def test_built_in_kinds_pass_strict_kubernetes_schemas(infra_objects):
    assert len(infra_objects) >= 12
    for obj in infra_objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_a_misspelt_field(infra_objects):
    deployment = copy.deepcopy(_by_kind(infra_objects, "Deployment")["embedrl-mlflow"])
    deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRefs"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# ---------------------------------------------------------------------------------------------------
# MLflow, secrets wiring and RBAC


def _container(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


def test_mlflow_server_runs_with_postgres_s3_allowed_hosts_and_basic_auth(infra_objects):
    container = _container(_by_kind(infra_objects, "Deployment")["embedrl-mlflow"])
    assert container["command"] == ["mlflow", "server"]
    args = container["args"]
    assert "--app-name=basic-auth" in args
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in args
    assert "--artifacts-destination=$(MLFLOW_ARTIFACTS_DESTINATION)" in args
    assert "--allowed-hosts=$(MLFLOW_ALLOWED_HOSTS)" in args
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "embedrl-postgres-credentials"
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/etc/mlflow-auth/basic_auth.ini"
    config = _by_kind(infra_objects, "ConfigMap")["embedrl-mlflow-config"]["data"]
    assert config["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert "embedrl-mlflow" in config["MLFLOW_ALLOWED_HOSTS"].split(",")


def test_mlflow_and_postgres_run_unprivileged(infra_objects):
    for kind, name in [("Deployment", "embedrl-mlflow"), ("StatefulSet", "embedrl-postgres")]:
        pod = _by_kind(infra_objects, kind)[name]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert _container({"spec": {"template": {"spec": pod}}})["securityContext"]["allowPrivilegeEscalation"] is False


def _references(obj) -> list[tuple[str, str, str | None]]:
    """(kind, name, key) of every Secret / ConfigMap an object refers to."""
    found = []
    if isinstance(obj, dict):
        for field, kind in [("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")]:
            if field in obj:
                found.append((kind, obj[field]["name"], obj[field]["key"]))
        if "secretRef" in obj:
            found.append(("Secret", obj["secretRef"]["name"], None))
        if "secretName" in obj:
            found.append(("Secret", obj["secretName"], None))
        for value in obj.values():
            found += _references(value)
    elif isinstance(obj, list):
        for value in obj:
            found += _references(value)
    return found


def _data_keys(obj: dict) -> set[str]:
    return set(obj.get("stringData", {})) | set(obj.get("data", {}))


def test_every_secret_and_configmap_reference_resolves(infra_objects, trainjob_templates):
    defined = {(o["kind"], o["metadata"]["name"]): _data_keys(o) for o in infra_objects}
    references = _references(infra_objects) + _references(trainjob_templates)
    assert len(references) >= 10
    for kind, name, key in references:
        assert (kind, name) in defined, f"{kind} {name} is referenced but not defined in infra/"
        assert key is None or key in defined[(kind, name)], f"{kind} {name} has no key {key}"


def test_pipeline_role_is_least_privilege(infra_objects):
    roles = _by_kind(infra_objects, "Role")
    assert roles["embedrl-pipeline-trainjobs"]["rules"] == [
        {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"], "verbs": ["create", "get", "delete"]},
    ]
    assert roles["embedrl-pipeline-runner"]["rules"] == [
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["mlpipeline-minio-artifact"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kfp-launcher"], "verbs": ["get"]},
    ]
    for name in ("embedrl-pipeline-trainjobs", "embedrl-pipeline-runner"):
        binding = _by_kind(infra_objects, "RoleBinding")[name]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        assert [s["name"] for s in binding["subjects"]] == ["embedrl-pipeline"]


# ---------------------------------------------------------------------------------------------------
# No real secrets anywhere

SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "password in a URI": re.compile(r"://[^/\s:@]+:(?!CHANGE_ME@)[^@\s/]+@"),
    "long random token": re.compile(r"(?<![\w/.-])(?=[A-Za-z0-9+/=_-]*\d)(?=[A-Za-z0-9+/=_-]*[A-Z])"
                                    r"(?=[A-Za-z0-9+/=_-]*[a-z])[A-Za-z0-9+/=_-]{32,}(?![\w/.-])"),
}


def _scanned_files() -> list[Path]:
    files = [p for p in [*INFRA.rglob("*"), *(ROOT / "docker").rglob("*")] if p.is_file()]
    return [p for p in files if p.suffix != ".json" or p.parent.name == "trainer"]


def _secret_findings(text: str) -> list[str]:
    return [label for label, pattern in SECRET_PATTERNS.items() if pattern.search(text)]


def test_secret_scan_catches_real_looking_values():
    assert _secret_findings("key: AKIAIOSFODNN7EXAMPLE") == ["AWS access key id"]
    assert _secret_findings("uri: postgresql://mlflow:s3cr3t@db:5432/mlflow") == ["password in a URI"]
    assert _secret_findings("token: wJalrXUtnFEMI0K7MDENGbPxRfiCYEXAMPLEKEY") == ["long random token"]
    assert _secret_findings("uri: postgresql://mlflow:CHANGE_ME@db:5432/mlflow") == []


def test_no_manifest_or_template_holds_a_real_looking_secret():
    files = _scanned_files()
    assert len(files) >= 20
    for path in files:
        assert _secret_findings(path.read_text()) == [], f"{path.relative_to(ROOT)} holds a real-looking secret"


def test_secret_templates_hold_placeholders_only(infra_objects):
    secrets = _by_kind(infra_objects, "Secret")
    assert len(secrets) == 4
    for name, secret in secrets.items():
        assert "data" not in secret, f"{name}: base64 `data` hides values from review; use stringData"
        for key, value in secret["stringData"].items():
            if CREDENTIAL_KEY.search(key):
                assert PLACEHOLDER in value, f"Secret {name} key {key} must hold the {PLACEHOLDER} placeholder"


# ---------------------------------------------------------------------------------------------------
# TrainJob schema


@pytest.fixture(scope="module")
def trainjob_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((INFRA / "trainer" / "trainjob.schema.json").read_text())
    strict = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    definitions = json.loads((strict / "_definitions.json").read_text())
    assert definitions["$id"] == K8S_DEFINITIONS
    registry = referencing.Registry().with_resource(K8S_DEFINITIONS, referencing.Resource.from_contents(definitions))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _errors(validator, obj) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def _template(name: str, templates: list[dict]) -> dict:
    return next(t for t in templates if t["metadata"]["name"] == name)


def test_trainjob_templates_match_the_schema(trainjob_validator, trainjob_templates):
    assert {t["spec"]["runtimeRef"]["name"] for t in trainjob_templates} == {tj.DEEPSPEED_RUNTIME, tj.TORCH_RUNTIME}
    for template in trainjob_templates:
        assert _errors(trainjob_validator, template) == []


def test_templates_are_what_the_pipeline_helpers_build(trainjob_templates):
    embedder = tj.embedder_trainjob(name="embedrl-embedder", data="/mnt/work/prepared",
                                    model="/mnt/work/models/embedder", out="/mnt/work/runs/embedder",
                                    **TEMPLATE_OPTIONS)
    egrl = tj.egrl_trainjob(name="embedrl-egrl", data="/mnt/work/prepared", reasoner="/mnt/work/runs/sft/model",
                            embedder="/mnt/work/runs/embedder/model", out="/mnt/work/runs/egrl", **TEMPLATE_OPTIONS)
    assert _template("embedrl-embedder", trainjob_templates) == embedder
    assert _template("embedrl-egrl", trainjob_templates) == egrl


@pytest.mark.parametrize("mutate, field", [
    (lambda j: j["spec"].update(podTemplateOverrides=[]), "podTemplateOverrides"),  # removed in Trainer v2.2
    (lambda j: j["spec"]["trainer"].update(numNodes=0), "numNodes"),
    (lambda j: j["spec"]["trainer"].update(resources={}), "resources"),  # the field is resourcesPerNode
    (lambda j: j["spec"]["runtimeRef"].update(kind="PyTorchJob"), "kind"),
    (lambda j: j["metadata"].update(name="Embedder_Job"), "name"),
    (lambda j: j["spec"]["trainer"]["env"][0].update(valueFrom={"secretKeyRef": {"nam": "x"}}), "nam"),
    (lambda j: _pod_patch(j)["tolerations"][0].update(effects="NoSchedule"), "effects"),
    (lambda j: _pod_patch(j)["containers"][0].update(image="x"), "image"),
])
def test_schema_rejects_wrong_trainjobs(trainjob_validator, trainjob_templates, mutate, field):
    job = copy.deepcopy(_template("embedrl-embedder", trainjob_templates))
    mutate(job)
    errors = _errors(trainjob_validator, job)
    assert errors and any(field in e for e in errors), errors


def _pod_patch(job: dict) -> dict:
    jobs = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    return jobs[0]["template"]["spec"]["template"]["spec"]


# ---------------------------------------------------------------------------------------------------
# trainjob_manifest and the launch commands


def _minimal(**overrides) -> dict:
    options = dict(name="emb-1", namespace="team-a", runtime="torch-distributed", image="r/embedrl:1",
                   command=["torchrun", "-m", "embedrl.cli"], num_nodes=3, gpus_per_node=4)
    return tj.trainjob_manifest(**{**options, **overrides})


def test_trainjob_manifest_fields(trainjob_validator):
    job = _minimal(env_from_secrets={"AWS_ACCESS_KEY_ID": ("embedrl-s3", "AWS_ACCESS_KEY_ID")},
                   service_account="embedrl-pipeline", active_deadline_s=7200)
    assert _errors(trainjob_validator, job) == []
    assert job["metadata"] == {"name": "emb-1", "namespace": "team-a"}
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["resourcesPerNode"]) == (3, {"limits": {"nvidia.com/gpu": "4"}})
    assert trainer["env"] == [{"name": "AWS_ACCESS_KEY_ID", "valueFrom": {
        "secretKeyRef": {"name": "embedrl-s3", "key": "AWS_ACCESS_KEY_ID"}}}]
    assert _pod_patch(job) == {"serviceAccountName": "embedrl-pipeline"}
    assert job["spec"]["activeDeadlineSeconds"] == 7200


def test_trainjob_manifest_without_pod_settings_has_no_patch_and_no_gpu_limit(trainjob_validator):
    job = _minimal(gpus_per_node=0)
    assert "runtimePatches" not in job["spec"] and job["spec"]["trainer"]["resourcesPerNode"] == {}
    assert _errors(trainjob_validator, job) == []


def test_mpi_runtime_patches_launcher_and_nodes_alike():
    job = _minimal(runtime=tj.DEEPSPEED_RUNTIME, tolerations=[{"key": "gpu", "operator": "Exists"}])
    jobs = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert [j["name"] for j in jobs] == ["launcher", "node"]
    patches = [j["template"]["spec"]["template"]["spec"] for j in jobs]
    assert patches[0] == patches[1] and patches[0] is not patches[1]


@pytest.mark.parametrize("overrides, message", [
    (dict(name="Emb_1"), "RFC 1035"),
    (dict(name="e" * 64), "RFC 1035"),
    (dict(num_nodes=0), "num_nodes"),
    (dict(gpus_per_node=-1), "gpus_per_node"),
    (dict(command="torchrun train.py"), "command"),
    (dict(env={"A": "1"}, env_from_secrets={"A": ("s", "k")}), "both"),
])
def test_trainjob_manifest_rejects_bad_input(overrides, message):
    with pytest.raises(ValueError, match=message):
        _minimal(**overrides)


def test_unknown_runtime_has_no_stage_command():
    with pytest.raises(ValueError, match="no launch command"):
        tj.egrl_trainjob(name="x", namespace="n", image="i", data="d", reasoner="r", embedder="e", out="o",
                         num_nodes=1, gpus_per_node=1, runtime="mlx-distributed")


def test_egrl_command_is_torchrun_of_the_cli_with_its_flags():
    job = tj.egrl_trainjob(name="rl", namespace="n", image="i", data="/w/prep", reasoner="/w/sft", embedder="/w/emb",
                           out="/w/rl", num_nodes=2, gpus_per_node=4, max_steps=10, judge="lexical")
    command = job["spec"]["trainer"]["command"]
    assert command[:4] == ["torchrun", "--nproc-per-node=4", "-m", "embedrl.cli"]
    cli = command[4:]
    assert cli[:2] == ["train", "egrl"]
    assert dict(zip(cli[2::2], cli[3::2], strict=True)) == {
        "--data": "/w/prep", "--reasoner": "/w/sft", "--embedder": "/w/emb", "--out": "/w/rl",
        "--profile": "tiny", "--max-steps": "10", "--judge": "lexical"}


def test_stage_flags_are_accepted_by_the_cli_parser():
    from embedrl.cli import build_parser

    embedder = tj.embedder_trainjob(name="e", namespace="n", image="i", data="/d", model="/m", out="/o",
                                    num_nodes=1, gpus_per_node=1, runtime=tj.TORCH_RUNTIME, seed=3, max_steps=5)
    egrl = tj.egrl_trainjob(name="r", namespace="n", image="i", data="/d", reasoner="/r", embedder="/e", out="/o",
                            num_nodes=1, gpus_per_node=1, judge="chat")
    for job in (embedder, egrl):
        args = build_parser().parse_args(job["spec"]["trainer"]["command"][4:])
        assert args.out == "/o" and args.data == "/d"
    assert build_parser().parse_args(embedder["spec"]["trainer"]["command"][4:]).deepspeed == \
        "infra/deepspeed/zero2.json"
    assert (INFRA / "deepspeed" / "zero2.json").exists()


def test_launch_command_runs_any_module_under_either_runtime():
    torch = tj.launch_command(tj.TORCH_RUNTIME, ["--staging", "s3://b/p"], num_nodes=2, gpus_per_node=4,
                              module="embedrl.pipeline.worker")
    assert torch == ["torchrun", "--nproc-per-node=4", "-m", "embedrl.pipeline.worker", "--staging", "s3://b/p"]
    mpi = tj.launch_command(tj.DEEPSPEED_RUNTIME, ["--staging", "s3://b/p"], num_nodes=3, gpus_per_node=8,
                            module="embedrl.pipeline.worker", forward_env=["AWS_ACCESS_KEY_ID"])
    assert mpi[:2] == ["bash", "-c"]
    assert "-m embedrl.pipeline.worker --staging s3://b/p" in mpi[2] and "-x AWS_ACCESS_KEY_ID" in mpi[2]
    assert "--nnodes=3" in mpi[2] and "-np 3" in mpi[2]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_mpi_launch_script_starts_one_torchrun_per_node_with_intact_arguments(tmp_path):
    """Run the launcher script with stand-ins for mpirun and torchrun: the quoting must survive both shells."""
    job = tj.embedder_trainjob(name="e", namespace="n", image="i", data="/w/my data", model="/w/m", out="/w/o'x",
                               num_nodes=2, gpus_per_node=8, env_from_secrets={"MLFLOW_TRACKING_PASSWORD": ("s", "k")})
    script = job["spec"]["trainer"]["command"][2]
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("job-node-0-0.job slots=1\njob-node-0-1.job slots=1\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # mpirun stand-in: record its options, then run the per-node command as rank 1 would.
    (bin_dir / "mpirun").write_text('#!/bin/bash\necho "MPIRUN $*" > "$LOG.mpirun"\n'
                                    'cmd="${@: -1}"\nOMPI_COMM_WORLD_RANK=1 bash -c "$cmd"\n')
    (bin_dir / "torchrun").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$LOG.torchrun"\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(tmp_path / "log")}
    result = subprocess.run(["bash", "-c", script.replace(tj.MPI_HOSTFILE, str(hostfile))],
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    mpirun = (tmp_path / "log.mpirun").read_text()
    assert "-np 2 --map-by ppr:1:node" in mpirun and "-x MLFLOW_TRACKING_PASSWORD" in mpirun
    torchrun = (tmp_path / "log.torchrun").read_text().splitlines()
    assert torchrun[:5] == ["--nnodes=2", "--nproc-per-node=8", "--node-rank=1",
                            "--master-addr=job-node-0-0.job", "--master-port=29500"]
    cli = torchrun[7:]
    assert torchrun[5:7] == ["-m", "embedrl.cli"] and cli[:2] == ["train", "embedder"]
    flags = dict(zip(cli[2::2], cli[3::2], strict=True))
    assert flags["--data"] == "/w/my data" and flags["--out"] == "/w/o'x"
    assert flags["--deepspeed"] == "infra/deepspeed/zero2.json"


# ---------------------------------------------------------------------------------------------------
# run_trainjob against a stand-in CustomObjectsApi (no cluster here)


class ApiConflict(Exception):
    status = 409


class FakeCustomObjects:
    """Replays a scripted sequence of TrainJob statuses, one per get."""

    def __init__(self, statuses: list[dict], create_error: Exception | None = None):
        self.statuses = list(statuses)
        self.create_error = create_error
        self.created: list[tuple] = []
        self.deleted: list[tuple] = []
        self.gets = 0

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append((group, version, namespace, plural, body["metadata"]["name"]))
        if self.create_error:
            raise self.create_error
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.gets += 1
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"metadata": {"name": name, "namespace": namespace}, "status": status}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.deleted.append((namespace, name))


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _condition(kind: str, status: str = "True", reason: str = "", message: str = "") -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message}


RUNNING = {"jobsStatus": [{"name": "node", "active": 2}]}


def _run(api, timeout_s: float = 100, **kwargs):
    clock = FakeClock()
    job = _minimal(name="emb-7", namespace="team-a")
    return tj.run_trainjob(job, timeout_s=timeout_s, poll_s=10, api=api, clock=clock, sleep=clock.sleep, **kwargs)


def test_run_trainjob_creates_then_returns_the_complete_status():
    complete = {"conditions": [_condition("Suspended", "False"), _condition("Complete", reason="JobsCompleted")]}
    api = FakeCustomObjects([{}, RUNNING, complete])
    assert _run(api) == complete
    assert api.created == [("trainer.kubeflow.org", "v1alpha1", "team-a", "trainjobs", "emb-7")]
    assert api.gets == 3 and api.deleted == []


def test_run_trainjob_raises_naming_the_job_and_the_failure():
    failed = {"conditions": [_condition("Failed", reason="FailedJobs", message="node-0 exited with code 137")]}
    api = FakeCustomObjects([RUNNING, failed])
    with pytest.raises(tj.TrainJobError, match=r"TrainJob team-a/emb-7 failed: FailedJobs: node-0 exited with code 137"):
        _run(api)


def test_a_false_failed_condition_is_not_a_failure():
    done = {"conditions": [_condition("Failed", "False"), _condition("Complete")]}
    assert _run(FakeCustomObjects([done])) == done


def test_run_trainjob_times_out_deletes_and_names_the_job():
    api = FakeCustomObjects([RUNNING])
    with pytest.raises(tj.TrainJobError, match=r"TrainJob team-a/emb-7 did not finish within 30 s.*deleted"):
        _run(api, timeout_s=30)
    assert api.deleted == [("team-a", "emb-7")] and api.gets == 4


def test_run_trainjob_can_leave_a_timed_out_job_running():
    api = FakeCustomObjects([RUNNING])
    with pytest.raises(tj.TrainJobError, match="left running"):
        _run(api, timeout_s=5, delete_on_timeout=False)
    assert api.deleted == []


def test_run_trainjob_waits_for_an_existing_job_on_conflict_and_raises_other_errors():
    complete = {"conditions": [_condition("Complete")]}
    assert _run(FakeCustomObjects([complete], create_error=ApiConflict("exists"))) == complete
    with pytest.raises(PermissionError):
        _run(FakeCustomObjects([complete], create_error=PermissionError("forbidden")))


# ---------------------------------------------------------------------------------------------------
# Docs pin what they install


def test_kfp_install_pins_the_backend_of_the_locked_sdk():
    lock = (ROOT / "requirements/lock.txt").read_text()
    server_api = re.search(r"^kfp-server-api==(\S+)$", lock, flags=re.M).group(1)
    readme = (INFRA / "kfp" / "README.md").read_text()
    assert f"PIPELINE_VERSION={server_api}" in readme
    for path in ("cluster-scoped-resources", "env/platform-agnostic"):
        assert f"github.com/kubeflow/pipelines/manifests/kustomize/{path}?ref=$PIPELINE_VERSION" in readme
