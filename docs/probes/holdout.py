"""Shared by the probe scripts: score Reasoners on the rl holdout (Hit@1 by modality) and the marks' binding."""
import json

from embedrl.experiment import mark_binding, rl_holdout


def score(res: dict, seed: int, models: dict, prepared, embedder, egrl_config) -> None:
    """res[name] = the rl holdout of each named Reasoner directory with its binding rate; printed as it goes."""
    for name, model in models.items():
        res[name] = rl_holdout(prepared, model, embedder, egrl_config, n_groups=None)
        res[name]["binding"] = mark_binding(prepared, model, egrl_config, n_groups=None)["binding_rate"]
        print(seed, name, json.dumps(res[name]), flush=True)
