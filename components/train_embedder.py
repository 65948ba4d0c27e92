"""Embedder contrastive training (symmetric InfoNCE on teacher T-CoTs and their evidence)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_embedder(
    prepared: Input[Dataset],
    profile: str,
    config: dict,
    seed: int,
    tracking_uri: str,
    experiment: str,
    distributed: bool,
    distributed_settings: dict,
    model: Output[Model],
    metrics: Output[Metrics],
):
    """In this pod, or (distributed) as a Kubeflow Trainer TrainJob that this step creates and waits for."""
    from embedrl.pipeline.steps import Tracking, publish_metrics, train_embedder_step

    tracking = Tracking(tracking_uri, experiment)
    if distributed:
        from embedrl.pipeline.distributed import DistributedSettings, run_stage_distributed

        values = run_stage_distributed("embedder", DistributedSettings.from_dict(distributed_settings),
                                       inputs={"data": prepared.path}, out_dir=model.path, profile=profile,
                                       config=config, seed=seed, tracking=tracking)
    else:
        values = train_embedder_step(prepared.path, model.path, profile=profile, config=config, seed=seed,
                                     tracking=tracking)
    publish_metrics(metrics, values)
