"""The embedrl pipeline, read top to bottom as its DAG:

    data_prep --+--> train_embedder --+
                |                     +--> eg_rl --> evaluate --> register
                +--> sft_cold_start --+

Compile: `embedrl pipeline compile --out pipelines/embedrl_pipeline.yaml` (a test fails when the
committed YAML is stale). Run locally: `embedrl pipeline run --local`. Submit: `embedrl pipeline submit`
or `kfp run create -f pipelines/embedrl_pipeline.yaml ...` (see the README's cluster guide).
"""

from kfp import dsl, kubernetes

from components.data_prep import data_prep
from components.eg_rl import eg_rl
from components.evaluate import evaluate
from components.register import register
from components.sft_cold_start import sft_cold_start
from components.train_embedder import train_embedder

RUN_KEY_ENV = "EMBEDRL_PIPELINE_RUN"
ARGO_WORKFLOW_LABEL = "metadata.labels['workflows.argoproj.io/workflow']"  # unique per run, not in cache keys
S3_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
           "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL"}
CHECKPOINT_MOUNT = "/embedrl-checkpoints"  # $EMBEDRL_CHECKPOINT_ROOT: a retried training step resumes from here
MLFLOW_KEYS = {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
               "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"}


def _on_cluster(task, *, s3_secret, mlflow_secret, retries: int = 2):
    """What every step needs on a cluster (ignored by kfp.local): secrets as env, the run key, retries."""
    kubernetes.use_secret_as_env(task, secret_name=s3_secret, secret_key_to_env=S3_KEYS, optional=True)
    kubernetes.use_secret_as_env(task, secret_name=mlflow_secret, secret_key_to_env=MLFLOW_KEYS, optional=True)
    kubernetes.use_field_path_as_env(task, RUN_KEY_ENV, ARGO_WORKFLOW_LABEL)
    task.set_retry(num_retries=retries, backoff_duration="60s", backoff_factor=2.0)
    return task


def _with_checkpoints(task, *, pvc):
    """Training steps keep their checkpoints on a volume that outlives the pod (preemption, retries)."""
    kubernetes.mount_pvc(task, pvc_name=pvc, mount_path=CHECKPOINT_MOUNT)
    task.set_env_variable("EMBEDRL_CHECKPOINT_ROOT", CHECKPOINT_MOUNT)
    return task


def _on_gpu_nodes(task, *, accelerator, gpus, node_selector, tolerations):
    task.set_accelerator_type(accelerator).set_accelerator_limit(gpus)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    return task


@dsl.pipeline(name="embedrl", description="Embed-RL: data prep, SFT cold start and Embedder training, EG-RL, "
                                          "evaluation, registration with promotion by alias.")
def embedrl_pipeline(
    profile: str = "tiny",
    config: dict = {},  # noqa: B006 - KFP reads defaults from the signature; never mutated
    seed: int = 0,
    data_repo: str = "",
    data_rev: str = "",
    data_path: str = "data",
    data_md5: str = "",
    data_seed: int = 0,
    data_size: str = "default",
    tracking_uri: str = "",
    experiment: str = "embedrl",
    model_name: str = "embedrl-embedder",
    promotion_metric: str = "overall",
    promotion_margin: float = 0.0,
    distributed: bool = False,
    distributed_settings: dict = {},  # noqa: B006 - KFP reads defaults from the signature; never mutated
    accelerator: str = "nvidia.com/gpu",
    gpus: int = 1,
    node_selector: dict = {},  # noqa: B006 - KFP reads defaults from the signature; never mutated
    tolerations: list = [],  # noqa: B006 - KFP reads defaults from the signature; never mutated
    s3_secret: str = "embedrl-s3",
    mlflow_secret: str = "embedrl-mlflow",
    checkpoint_pvc: str = "embedrl-workspace",
):
    cluster = {"s3_secret": s3_secret, "mlflow_secret": mlflow_secret}
    gpu = {"accelerator": accelerator, "gpus": gpus, "node_selector": node_selector, "tolerations": tolerations}
    tracked = {"tracking_uri": tracking_uri, "experiment": experiment}
    staged = {"profile": profile, "config": config, **tracked}

    data = data_prep(data_repo=data_repo, data_rev=data_rev, data_path=data_path, data_md5=data_md5,
                     data_seed=data_seed, data_size=data_size, **tracked).set_display_name("data prep")
    _on_cluster(data, **cluster)

    embedder = train_embedder(prepared=data.outputs["prepared"], seed=seed, distributed=distributed,
                              distributed_settings=distributed_settings, **staged)
    _on_gpu_nodes(_on_cluster(embedder.set_display_name("Embedder training"), **cluster), **gpu)
    _with_checkpoints(embedder, pvc=checkpoint_pvc)

    sft = sft_cold_start(prepared=data.outputs["prepared"], seed=seed, **staged)
    _on_gpu_nodes(_on_cluster(sft.set_display_name("SFT cold start"), **cluster), **gpu)
    _with_checkpoints(sft, pvc=checkpoint_pvc)

    rl = eg_rl(prepared=data.outputs["prepared"], reasoner=sft.outputs["model"], embedder=embedder.outputs["model"],
               seed=seed, distributed=distributed, distributed_settings=distributed_settings, **staged)
    _on_gpu_nodes(_on_cluster(rl.set_display_name("EG-RL"), **cluster), **gpu)
    _with_checkpoints(rl, pvc=checkpoint_pvc)

    scores = evaluate(prepared=data.outputs["prepared"], embedder=embedder.outputs["model"],
                      reasoner=rl.outputs["model"], **staged)
    _on_gpu_nodes(_on_cluster(scores.set_display_name("evaluation"), **cluster), **gpu)

    registration = register(embedder=embedder.outputs["model"], reasoner=rl.outputs["model"],
                            results=scores.outputs["results"], model_name=model_name,
                            promotion_metric=promotion_metric, promotion_margin=promotion_margin, **tracked)
    _on_cluster(registration.set_display_name("registration"), **cluster)
