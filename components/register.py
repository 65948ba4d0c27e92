"""Registration: the Embedder (its Reasoner linked) in the MLflow registry, promoted by the gate."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(
    embedder: Input[Model],
    reasoner: Input[Model],
    results: Input[Artifact],
    model_name: str,
    promotion_metric: str,
    promotion_margin: float,
    tracking_uri: str,
    experiment: str,
    metrics: Output[Metrics],
):
    """A new version aliased `challenger`; `champion` moves to it only if it beats the champion by the margin."""
    from pathlib import Path

    from embedrl.pipeline.steps import Tracking, publish_metrics, register_step

    values = register_step(embedder.path, reasoner.path, Path(results.path) / "metrics.json",
                           model_name=model_name, promotion_metric=promotion_metric,
                           promotion_margin=promotion_margin, tracking=Tracking(tracking_uri, experiment))
    publish_metrics(metrics, values)
