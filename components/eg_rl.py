"""EG-RL: GRPO of the SFT Reasoner, rewarded by the frozen Embedder, a judge and the format."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def eg_rl(
    prepared: Input[Dataset],
    reasoner: Input[Model],
    embedder: Input[Model],
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
    """The EG-RL Reasoner; the pre-RL check (gold vs teacher reward gap) is logged with it."""
    from embedrl.pipeline.steps import Tracking, publish_metrics, train_egrl_step

    tracking = Tracking(tracking_uri, experiment)
    if distributed:
        from embedrl.pipeline.distributed import DistributedSettings, run_stage_distributed

        values = run_stage_distributed("egrl", DistributedSettings.from_dict(distributed_settings),
                                       inputs={"data": prepared.path, "reasoner": reasoner.path,
                                               "embedder": embedder.path},
                                       out_dir=model.path, profile=profile, config=config, seed=seed,
                                       tracking=tracking)
    else:
        values = train_egrl_step(prepared.path, reasoner.path, embedder.path, model.path, profile=profile,
                                 config=config, seed=seed, tracking=tracking)
    publish_metrics(metrics, values)
