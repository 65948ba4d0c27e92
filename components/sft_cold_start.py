"""SFT cold start of the Reasoner on teacher T-CoTs (trl SFTTrainer, loss on the completion only)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def sft_cold_start(
    prepared: Input[Dataset],
    profile: str,
    config: dict,
    seed: int,
    tracking_uri: str,
    experiment: str,
    model: Output[Model],
    metrics: Output[Metrics],
):
    """The SFT Reasoner (it writes T-CoTs in the format EG-RL rewards)."""
    from embedrl.pipeline.steps import Tracking, publish_metrics, train_sft_step

    values = train_sft_step(prepared.path, model.path, profile=profile, config=config, seed=seed,
                            tracking=Tracking(tracking_uri, experiment))
    publish_metrics(metrics, values)
