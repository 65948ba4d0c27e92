"""Data prep: the DVC-pinned data (or the embedded MiniMMEB), teacher T-CoT synthesis and filtering."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def data_prep(
    data_repo: str,
    data_rev: str,
    data_path: str,
    data_md5: str,
    data_seed: int,
    data_size: str,
    tracking_uri: str,
    experiment: str,
    prepared: Output[Dataset],
    metrics: Output[Metrics],
):
    """Prepared data set: splits with teacher and gold T-CoTs; rejected pairs quarantined and counted."""
    from embedrl.pipeline.steps import DataSource, Tracking, prepare_data_step, publish_metrics

    source = DataSource(repo=data_repo, rev=data_rev, path=data_path, md5=data_md5, seed=data_seed, size=data_size)
    values = prepare_data_step(prepared.path, source, tracking=Tracking(tracking_uri, experiment))
    publish_metrics(metrics, values)
