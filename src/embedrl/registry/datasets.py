"""A DVC-pinned data set as an MLflow dataset source (source type "dvc").

MLflow records a dataset input as a name, a digest and a source (JSON). Our source says where the
exact bytes live: the git repo and revision whose `.dvc` file pins the data, the path in that repo
and the DVC md5 of the directory, so any run's data can be fetched again with `dvc get`/`dvc.api`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source

SOURCE_TYPE = "dvc"
REQUIRED_FIELDS = ("path", "md5")


class DvcDatasetSource(DatasetSource):
    """`repo` (git URL or local path), `rev` (commit), `path` (in the repo), `md5`, and any extra fields."""

    def __init__(self, *, path: str, md5: str, repo: str = "", rev: str = "", **extra: Any):
        self.path = str(path)
        self.md5 = str(md5)
        self.repo = str(repo)
        self.rev = str(rev)
        self.extra = {key: value for key, value in extra.items() if value is not None}

    @staticmethod
    def _get_source_type() -> str:
        return SOURCE_TYPE

    def load(self, dst_path: str | None = None) -> str:
        """Fetch the pinned data with DVC into `dst_path` (a new temporary directory by default)."""
        import tempfile

        from dvc.api import DVCFileSystem

        target = Path(dst_path or tempfile.mkdtemp(prefix="embedrl-data-")) / Path(self.path).name
        fs = DVCFileSystem(self.repo or None, rev=self.rev or None)
        fs.get(self.path, str(target), recursive=True)
        return str(target)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, dict) and all(raw_source.get(key) for key in REQUIRED_FIELDS)

    @classmethod
    def _resolve(cls, raw_source: Any) -> DvcDatasetSource:
        return cls.from_dict(raw_source)

    def to_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "rev": self.rev, "path": self.path, "md5": self.md5, **self.extra}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> DvcDatasetSource:
        missing = [key for key in REQUIRED_FIELDS if not source_dict.get(key)]
        if missing:
            raise ValueError(f"a DVC dataset source needs {', '.join(missing)}; got {sorted(source_dict)}")
        return cls(**source_dict)


register_dataset_source(DvcDatasetSource)
