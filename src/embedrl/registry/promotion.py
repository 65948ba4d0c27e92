"""Promotion in the MLflow registry with aliases (MLflow 3 has no stages).

- Every registered version gets the alias `challenger` and its score as the version tag
  `embedrl.score.<metric>`.
- `champion` moves to it only if it beats the champion's score by more than the margin; the first
  version becomes champion.
- Each change of champion pushes the previous one onto the model tag `embedrl.champion_history`
  (a JSON list), which is what `rollback` pops.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "embedrl.champion_history"
SCORE_TAG_PREFIX = "embedrl.score."
DECISION_TAG = "embedrl.gate"
ROLLED_BACK_TAG = "embedrl.rolled_back"


class PromotionError(RuntimeError):
    """A promotion or rollback that the registry's state does not allow; the message says what to do."""


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    version: str
    champion_version: str  # after the decision
    previous_champion: str | None  # before the decision
    metric: str
    score: float
    champion_score: float | None  # the previous champion's score, if it had one
    margin: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_tag(metric: str) -> str:
    return f"{SCORE_TAG_PREFIX}{metric}"


# ---------------------------------------------------------------------------------------------- gate
def register_and_gate(
    name: str,
    version: str | int,
    *,
    score: float,
    metric: str = "overall",
    margin: float,
    tracking_uri: str | None = None,
) -> PromotionDecision:
    """Alias `version` as challenger, record its score, and make it champion if it wins by `margin`.

    Calling it again for the same version (a retried stage) decides the same way and changes nothing.
    """
    if not math.isfinite(score):
        raise ValueError(
            f"{name} v{version}: score {metric}={score!r} is not a finite number; nothing registered"
        )
    client = _client(tracking_uri)
    version = str(version)
    client.set_model_version_tag(name, version, score_tag(metric), repr(float(score)))
    client.set_registered_model_alias(name, CHALLENGER, version)
    champion = champion_version(name, tracking_uri=tracking_uri)
    champion_score = _version_score(client, name, champion, metric) if champion else None
    promoted, reason = _decide(version, score, champion, champion_score, metric, margin)
    if promoted and champion != version:
        promote(name, version, tracking_uri=tracking_uri)
    client.set_model_version_tag(name, version, DECISION_TAG, reason)
    log.info("%s v%s: %s", name, version, reason)
    return PromotionDecision(
        promoted=promoted,
        version=version,
        champion_version=version if promoted else str(champion),
        previous_champion=champion,
        metric=metric,
        score=float(score),
        champion_score=champion_score,
        margin=float(margin),
        reason=reason,
    )


def _decide(
    version: str, score: float, champion: str | None, champion_score: float | None, metric: str, margin: float
) -> tuple[bool, str]:
    if champion is None:
        return True, f"first version with a score: champion ({metric}={score:.4f})"
    if champion == version:
        return True, f"already champion ({metric}={score:.4f})"
    if champion_score is None:
        return False, (
            f"champion v{champion} has no {metric!r} score to compare with; stays champion "
            f"(promote by hand with `embedrl registry promote`)"
        )
    comparison = f"{metric}={score:.4f} vs champion v{champion} {champion_score:.4f}, margin {margin}"
    if score > champion_score + margin:
        return True, f"beats the champion by more than the margin ({comparison})"
    return False, f"does not beat the champion by more than the margin ({comparison})"


def _version_score(client, name: str, version: str, metric: str) -> float | None:
    value = client.get_model_version(name, version).tags.get(score_tag(metric))
    return float(value) if value is not None else None


# ---------------------------------------------------------------------------- promote and rollback
def promote(name: str, version: str | int, *, tracking_uri: str | None = None) -> str | None:
    """Make `version` champion by hand; returns the previous champion (kept in the history)."""
    client = _client(tracking_uri)
    version = str(version)
    client.get_model_version(name, version)  # fails clearly if the version does not exist
    previous = champion_version(name, tracking_uri=tracking_uri)
    if previous == version:
        return previous
    if previous is not None:
        _write_history(client, name, [*champion_history(name, tracking_uri=tracking_uri), previous])
    client.set_registered_model_alias(name, CHAMPION, version)
    log.info("%s: champion v%s -> v%s", name, previous, version)
    return previous


def rollback(name: str, *, tracking_uri: str | None = None) -> str:
    """Move `champion` back to the previous champion; returns that version."""
    client = _client(tracking_uri)
    history = champion_history(name, tracking_uri=tracking_uri)
    current = champion_version(name, tracking_uri=tracking_uri)
    if not history:
        raise PromotionError(
            f"{name}: no previous champion to roll back to (champion is v{current}); "
            f"use `embedrl registry promote --name {name} --version V` to pick one"
        )
    restored = history.pop()
    client.set_registered_model_alias(name, CHAMPION, restored)
    _write_history(client, name, history)
    if current is not None:
        client.set_model_version_tag(name, current, ROLLED_BACK_TAG, "true")
    log.info("%s: rolled champion back from v%s to v%s", name, current, restored)
    return restored


# ------------------------------------------------------------------------------------------- reads
def champion_version(name: str, *, tracking_uri: str | None = None) -> str | None:
    return _aliases(_client(tracking_uri), name).get(CHAMPION)


def champion_history(name: str, *, tracking_uri: str | None = None) -> list[str]:
    """Previous champions, oldest first."""
    raw = _client(tracking_uri).get_registered_model(name).tags.get(HISTORY_TAG)
    return [str(v) for v in json.loads(raw)] if raw else []


def registry_summary(name: str, *, tracking_uri: str | None = None) -> dict[str, Any]:
    """Aliases, champion history and every version with its scores and source run."""
    client = _client(tracking_uri)
    model = client.get_registered_model(name)
    versions = client.search_model_versions(f"name = '{name}'")
    return {
        "name": name,
        "aliases": dict(_aliases(client, name)),
        "champion_history": champion_history(name, tracking_uri=tracking_uri),
        "description": model.description or "",
        "versions": [_version_summary(v) for v in sorted(versions, key=lambda v: int(v.version))],
    }


def _version_summary(version) -> dict[str, Any]:
    scores = {
        key.removeprefix(SCORE_TAG_PREFIX): float(value)
        for key, value in version.tags.items()
        if key.startswith(SCORE_TAG_PREFIX)
    }
    return {
        "version": version.version,
        "run_id": version.run_id,
        "aliases": list(version.aliases),
        "scores": scores,
        "gate": version.tags.get(DECISION_TAG, ""),
    }


def _aliases(client, name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def _write_history(client, name: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))


def _client(tracking_uri: str | None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)
