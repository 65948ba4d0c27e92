"""Evaluation: the Reasoner writes T-CoTs for queries and candidates, the Embedder scores them."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    prepared: Input[Dataset],
    embedder: Input[Model],
    reasoner: Input[Model],
    profile: str,
    config: dict,
    tracking_uri: str,
    experiment: str,
    results: Output[Artifact],
    metrics: Output[Metrics],
    report_md: Output[Markdown],
    report_html: Output[HTML],
):
    """metrics.json, predictions.jsonl and reports; overall / per modality scores for the Kubeflow UI."""
    import shutil
    from pathlib import Path

    from embedrl.pipeline.steps import Tracking, evaluate_step, publish_metrics

    values = evaluate_step(prepared.path, embedder.path, reasoner.path, results.path, profile=profile,
                           config=config, tracking=Tracking(tracking_uri, experiment))
    publish_metrics(metrics, values, skip_prefixes=("task/",))
    shutil.copyfile(Path(results.path) / "report.md", report_md.path)
    shutil.copyfile(Path(results.path) / "report.html", report_html.path)
