"""Shared by the probe scripts: score Reasoners on the rl holdout (Hit@1 by modality) and the marks' binding."""
import json

from embedrl.experiment import mark_binding, rl_holdout


def score(res: dict, seed: int, models: dict, prepared, embedder, egrl_config) -> None:
    """res[name] = the rl holdout of each named Reasoner directory with its binding rate; printed as it goes."""
    for name, model in models.items():
        res[name] = rl_holdout(prepared, model, embedder, egrl_config, n_groups=None)
        res[name]["binding"] = mark_binding(prepared, model, egrl_config, n_groups=None)["binding_rate"]
        print(seed, name, json.dumps(res[name]), flush=True)


def branch_rollouts(reasoner, rewards, store, group: list, sides: list, cfg):
    """The texts of the G branch rollouts of each side of one EG-RL group, side by side, and their outcome
    rewards [sides, G] (the Reasoner's generate patched by explore_only_choices first)."""
    import numpy as np

    g = cfg.num_generations
    refs = [sides[r["side"]] for r in group]
    texts = reasoner.generate([r for r in refs for _ in range(g)], [r["role"] for r in group for _ in range(g)],
                              store, do_sample=True, temperature=cfg.temperature, min_p=cfg.min_p,
                              batch_size=128, resolve=False)
    columns = {k: [r[k] for r in group for _ in range(g)] for k in ("side", "pair_index", "role")}
    return texts, np.array(rewards._compute(texts, columns)["outcome"]).reshape(len(group), g)


def summarize(stats: dict, fields: tuple, label: str) -> dict:
    """Per key of `stats` (lists of per-side dicts): the side count and the mean of each field over the sides
    where it is not None; printed as it goes."""
    import numpy as np

    summary = {}
    for key, items in stats.items():
        means = {}
        for field in fields:
            values = [i[field] for i in items if i[field] is not None]
            means[field] = float(np.mean(values)) if values else None
        summary[key] = {"sides": len(items), **means}
        print(label, key, json.dumps(summary[key]), flush=True)
    return summary
