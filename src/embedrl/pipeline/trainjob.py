"""Kubeflow Trainer v2 TrainJobs for the pipeline's distributed mode: build the manifest, create it, wait.

A KFP step with ``distributed=True`` does not train in its own pod: it creates a ``TrainJob`` that a
``ClusterTrainingRuntime`` of Kubeflow Trainer expands into one pod per node, and waits for it:

- Embedder contrastive training (DeepSpeed ZeRO-2): runtime ``deepspeed-distributed`` (OpenMPI + sshd).
- EG-RL (trl GRPOTrainer): runtime ``torch-distributed`` (torchrun, ``PET_*`` environment).

Field names follow the ``trainer.kubeflow.org/v1alpha1`` API of Kubeflow Trainer v2.2
(kubeflow/trainer, ``pkg/apis/trainer/v1alpha1/trainjob_types.go``): ``spec.runtimeRef``,
``spec.trainer.{image,command,env,numNodes,resourcesPerNode}``, and ``spec.runtimePatches`` for pod
settings (v2.2 replaced the earlier ``podTemplateOverrides`` with it). The ``kubernetes`` client is
imported only by :func:`run_trainjob`.
"""

from __future__ import annotations

import copy
import logging
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
API_VERSION = f"{GROUP}/{VERSION}"

DEEPSPEED_RUNTIME = "deepspeed-distributed"
TORCH_RUNTIME = "torch-distributed"
# The built-in runtimes name their training container "node"; the MPI runtime adds a "launcher" job
# beside the "node" job, and both need the same scheduling settings and volumes.
TRAINER_CONTAINER = "node"
RUNTIME_JOBS = {DEEPSPEED_RUNTIME: ("launcher", "node"), TORCH_RUNTIME: ("node",)}
PATCH_MANAGER = "embedrl.pipeline"

MPI_HOSTFILE = "/etc/mpi/hostfile"
MASTER_PORT = 29500
# Set in the image; a process started over ssh by mpirun does not inherit the container environment.
IMAGE_ENV = ("PATH", "HOME", "HF_HOME", "HF_HUB_OFFLINE", "DS_BUILD_OPS")

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class TrainJobError(RuntimeError):
    """A TrainJob failed, or did not finish in time."""


def trainjob_manifest(
    *,
    name: str,
    namespace: str,
    runtime: str,
    image: str,
    command: Sequence[str],
    num_nodes: int,
    gpus_per_node: int,
    env: Mapping[str, str] | None = None,
    env_from_secrets: Mapping[str, tuple[str, str]] | None = None,
    resources: Mapping[str, str] | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    volumes: Sequence[Mapping[str, Any]] | None = None,
    volume_mounts: Sequence[Mapping[str, Any]] | None = None,
    service_account: str | None = None,
    labels: Mapping[str, str] | None = None,
    active_deadline_s: int | None = None,
) -> dict:
    """A ``TrainJob`` as a plain dict, ready for ``CustomObjectsApi`` or ``kubectl apply``.

    ``env_from_secrets`` maps an environment variable to ``(secret name, key)``; ``resources`` adds
    per-node requests such as ``{"cpu": "16", "memory": "128Gi"}`` beside the GPU limit.
    """
    _check_job_shape(name, runtime, image, command, num_nodes, gpus_per_node)
    trainer: dict[str, Any] = {
        "image": image,
        "command": list(command),
        "numNodes": num_nodes,
        "resourcesPerNode": _resources_per_node(gpus_per_node, resources),
    }
    env_list = _env_list(env, env_from_secrets)
    if env_list:
        trainer["env"] = env_list
    spec: dict[str, Any] = {"runtimeRef": {"name": runtime}, "trainer": trainer}
    pod_patch = _pod_spec_patch(node_selector, tolerations, volumes, volume_mounts, service_account)
    if pod_patch:
        spec["runtimePatches"] = [_runtime_patch(pod_patch, RUNTIME_JOBS.get(runtime, ("node",)))]
    if active_deadline_s is not None:
        spec["activeDeadlineSeconds"] = int(active_deadline_s)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": API_VERSION, "kind": "TrainJob", "metadata": metadata, "spec": spec}


def _check_job_shape(name: str, runtime: str, image: str, command: Sequence[str], num_nodes: int,
                     gpus_per_node: int) -> None:
    if not (_DNS_LABEL.match(name) and len(name) <= 63):
        raise ValueError(f"TrainJob name {name!r} must be an RFC 1035 label: lower-case letters, digits and '-', "
                         "starting with a letter, at most 63 characters")
    if not runtime:
        raise ValueError("runtime must name a ClusterTrainingRuntime, e.g. 'torch-distributed'")
    if not image:
        raise ValueError("image must be the embedrl image reference (REGISTRY/embedrl:TAG-cuda)")
    if not command or isinstance(command, str):
        raise ValueError(f"command must be a non-empty list of strings, got {command!r}")
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    if gpus_per_node < 0:
        raise ValueError(f"gpus_per_node must be >= 0, got {gpus_per_node}")


def _resources_per_node(gpus_per_node: int, resources: Mapping[str, str] | None) -> dict:
    per_node: dict[str, dict[str, str]] = {}
    if resources:
        per_node["requests"] = {key: str(value) for key, value in resources.items()}
    if gpus_per_node:
        per_node["limits"] = {"nvidia.com/gpu": str(gpus_per_node)}
    return per_node


def _env_list(env: Mapping[str, str] | None, env_from_secrets: Mapping[str, tuple[str, str]] | None) -> list:
    entries = [{"name": key, "value": str(value)} for key, value in (env or {}).items()]
    for key, (secret, secret_key) in (env_from_secrets or {}).items():
        if key in (env or {}):
            raise ValueError(f"environment variable {key} is set both as a value and from secret {secret}")
        entries.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": secret_key}}})
    return entries


def _pod_spec_patch(node_selector, tolerations, volumes, volume_mounts, service_account) -> dict:
    patch: dict[str, Any] = {}
    if service_account:
        patch["serviceAccountName"] = service_account
    if node_selector:
        patch["nodeSelector"] = dict(node_selector)
    if tolerations:
        patch["tolerations"] = [dict(t) for t in tolerations]
    if volumes:
        patch["volumes"] = [dict(v) for v in volumes]
    if volume_mounts:
        patch["containers"] = [{"name": TRAINER_CONTAINER, "volumeMounts": [dict(m) for m in volume_mounts]}]
    return patch


def _runtime_patch(pod_patch: dict, job_names: Sequence[str]) -> dict:
    replicated_jobs = [
        {"name": job, "template": {"spec": {"template": {"spec": copy.deepcopy(pod_patch)}}}} for job in job_names
    ]
    return {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": replicated_jobs}}},
    }


# ---------------------------------------------------------------------------------------------------
# Launch commands


def launch_command(runtime: str, args: Sequence[str], *, num_nodes: int, gpus_per_node: int,
                   module: str = "embedrl.cli", forward_env: Sequence[str] = ()) -> list[str]:
    """``python -m MODULE ARGS`` on every GPU of every node, the way ``runtime`` starts its pods."""
    if runtime == DEEPSPEED_RUNTIME:
        return mpi_torchrun_command(args, num_nodes=num_nodes, gpus_per_node=gpus_per_node, module=module,
                                    forward_env=forward_env)
    if runtime == TORCH_RUNTIME:
        return torchrun_command(args, gpus_per_node=gpus_per_node, module=module)
    raise ValueError(f"runtime {runtime!r} has no launch command here; use {DEEPSPEED_RUNTIME!r} or "
                     f"{TORCH_RUNTIME!r}, or build the command yourself and call trainjob_manifest")


def torchrun_command(args: Sequence[str], *, gpus_per_node: int, module: str = "embedrl.cli") -> list[str]:
    """``torchrun -m MODULE ARGS`` for the torch-distributed runtime.

    The runtime sets ``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and ``PET_MASTER_PORT``,
    which torchrun reads as its own flags; only the processes per node are given here.
    """
    return ["torchrun", f"--nproc-per-node={max(gpus_per_node, 1)}", "-m", module, *args]


def mpi_torchrun_command(args: Sequence[str], *, num_nodes: int, gpus_per_node: int, module: str = "embedrl.cli",
                         forward_env: Sequence[str] = ()) -> list[str]:
    """The launcher command for the deepspeed-distributed (MPI) runtime.

    mpirun only starts one torchrun per node over the runtime's ssh; torchrun then gives every rank the
    ``RANK`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` environment that ``embedrl.train.distributed`` expects,
    and DeepSpeed reuses that process group (no mpi4py needed). The first host of the hostfile is the
    rendezvous; ``-x`` forwards the variables that ssh would not carry.
    """
    per_node = " ".join([
        "exec torchrun",
        f"--nnodes={num_nodes}",
        f"--nproc-per-node={max(gpus_per_node, 1)}",
        '--node-rank="$OMPI_COMM_WORLD_RANK"',
        '--master-addr="$MASTER_ADDR"',
        f"--master-port={MASTER_PORT}",
        f"-m {shlex.quote(module)}",
        *(shlex.quote(arg) for arg in args),
    ])
    mpirun = [
        f"exec mpirun --hostfile {MPI_HOSTFILE} -np {num_nodes} --map-by ppr:1:node",
        " ".join(f"-x {name}" for name in ("MASTER_ADDR", *IMAGE_ENV, *forward_env)),
        f"bash -c {shlex.quote(per_node)}",
    ]
    script = "\n".join([
        "set -euo pipefail",
        f"export MASTER_ADDR=\"$(awk 'NR==1 {{print $1}}' {MPI_HOSTFILE})\"",
        " \\\n  ".join(mpirun),
    ])
    return ["bash", "-c", script]


def _stage_args(stage: str, required: Mapping[str, str], optional: Mapping[str, Any]) -> list[str]:
    args = ["train", stage]
    for flag, value in [*required.items(), *optional.items()]:
        if value is not None:
            args += [f"--{flag}", str(value)]
    return args


def embedder_trainjob(*, name: str, namespace: str, image: str, data: str, model: str, out: str,
                      num_nodes: int, gpus_per_node: int, profile: str = "tiny", max_steps: int | None = None,
                      seed: int | None = None, deepspeed_config: str = "infra/deepspeed/zero2.json",
                      runtime: str = DEEPSPEED_RUNTIME, **manifest_options: Any) -> dict:
    """A TrainJob running ``embedrl train embedder --deepspeed CONFIG`` on ``num_nodes`` nodes.

    ``data``, ``model`` and ``out`` must be paths every node sees (a ReadWriteMany volume given with
    ``volumes`` / ``volume_mounts``); ``deepspeed_config`` is relative to the image's working directory.
    """
    cli_args = _stage_args("embedder", {"data": data, "model": model, "out": out},
                           {"profile": profile, "max-steps": max_steps, "seed": seed, "deepspeed": deepspeed_config})
    return _stage_trainjob(cli_args, name=name, namespace=namespace, image=image, num_nodes=num_nodes,
                           gpus_per_node=gpus_per_node, runtime=runtime, **manifest_options)


def egrl_trainjob(*, name: str, namespace: str, image: str, data: str, reasoner: str, embedder: str, out: str,
                  num_nodes: int, gpus_per_node: int, profile: str = "tiny", max_steps: int | None = None,
                  seed: int | None = None, judge: str | None = None, runtime: str = TORCH_RUNTIME,
                  **manifest_options: Any) -> dict:
    """A TrainJob running ``embedrl train egrl`` (GRPO, frozen Embedder reward) under torchrun."""
    cli_args = _stage_args("egrl", {"data": data, "reasoner": reasoner, "embedder": embedder, "out": out},
                           {"profile": profile, "max-steps": max_steps, "seed": seed, "judge": judge})
    return _stage_trainjob(cli_args, name=name, namespace=namespace, image=image, num_nodes=num_nodes,
                           gpus_per_node=gpus_per_node, runtime=runtime, **manifest_options)


def _stage_trainjob(cli_args: list[str], *, runtime: str, num_nodes: int, gpus_per_node: int,
                    **manifest_options: Any) -> dict:
    forwarded = [*(manifest_options.get("env") or {}), *(manifest_options.get("env_from_secrets") or {})]
    command = launch_command(runtime, cli_args, num_nodes=num_nodes, gpus_per_node=gpus_per_node,
                             forward_env=forwarded)
    return trainjob_manifest(runtime=runtime, command=command, num_nodes=num_nodes, gpus_per_node=gpus_per_node,
                             **manifest_options)


# ---------------------------------------------------------------------------------------------------
# Create and wait


def run_trainjob(manifest: Mapping[str, Any], *, timeout_s: float, poll_s: float = 10, api: Any = None,
                 delete_on_timeout: bool = True, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> dict:
    """Create the TrainJob and poll its conditions until ``Complete`` or ``Failed``; return its status.

    ``api`` is a ``kubernetes.client.CustomObjectsApi`` (built from the in-cluster or kubeconfig
    credentials when None). Raises :class:`TrainJobError` naming the job and the controller's message
    when it fails, or when ``timeout_s`` passes (the job is then deleted, freeing its GPUs, unless
    ``delete_on_timeout`` is False). A job that already exists (a retried KFP step) is waited for.
    """
    api = api if api is not None else _custom_objects_api()
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    ref = (GROUP, VERSION, namespace, PLURAL)
    _create(api, ref, dict(manifest), f"{namespace}/{name}")
    deadline = clock() + timeout_s
    while True:
        status = api.get_namespaced_custom_object(*ref, name).get("status") or {}
        outcome = _finished(status)
        if outcome == "Complete":
            logger.info("TrainJob %s/%s complete", namespace, name)
            return status
        if outcome == "Failed":
            raise TrainJobError(f"TrainJob {namespace}/{name} failed: {_condition_text(status, 'Failed')}")
        if clock() >= deadline:
            if delete_on_timeout:
                api.delete_namespaced_custom_object(*ref, name)
            raise TrainJobError(f"TrainJob {namespace}/{name} did not finish within {timeout_s:.0f} s "
                                f"(conditions: {_conditions_summary(status)}); "
                                f"{'deleted' if delete_on_timeout else 'left running'}")
        sleep(poll_s)


def _custom_objects_api():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def _create(api: Any, ref: tuple, body: dict, job: str) -> None:
    try:
        api.create_namespaced_custom_object(*ref, body)
        logger.info("created TrainJob %s", job)
    except Exception as error:
        if getattr(error, "status", None) != 409:
            raise
        logger.warning("TrainJob %s already exists; waiting for it", job)


def _true_conditions(status: Mapping[str, Any]) -> dict[str, dict]:
    return {c.get("type"): c for c in status.get("conditions") or [] if str(c.get("status")) == "True"}


def _finished(status: Mapping[str, Any]) -> str | None:
    conditions = _true_conditions(status)
    for outcome in ("Failed", "Complete"):
        if outcome in conditions:
            return outcome
    return None


def _condition_text(status: Mapping[str, Any], kind: str) -> str:
    condition = _true_conditions(status)[kind]
    reason = condition.get("reason") or "no reason given"
    return f"{reason}: {condition.get('message') or 'no message'}"


def _conditions_summary(status: Mapping[str, Any]) -> str:
    conditions = status.get("conditions") or []
    if not conditions:
        return "none yet"
    return ", ".join(f"{c.get('type')}={c.get('status')}" for c in conditions)
