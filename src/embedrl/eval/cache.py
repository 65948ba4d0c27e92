"""On-disk cache of evaluation work: the Reasoner's T-CoTs and the Embedder's vectors.

Entries live under `<root>/<kind>/<fingerprint>/`, where the fingerprint names everything the
entries depend on: the model's weights and configuration (`model_fingerprint`) plus the settings of
the call (the Reasoner's prompt and token budget; nothing extra for the Embedder). A retrained model,
another prompt or another budget therefore never reads stale entries, and entries of several models
sit side by side. Each `put` writes one new shard (written aside, then renamed), so a killed
evaluation leaves only whole shards behind and concurrent writers never corrupt each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

_FINGERPRINT_FILES = ("config.json", "embedrl.json", "preprocessor_config.json", "tokenizer.json",
                      "chat_template.jinja", "adapter_config.json")
_MEMO = "weight-hashes.json"


def model_fingerprint(model_dir: str | Path, memo_dir: str | Path | None = None) -> str:
    """sha256 over a saved model's weight files and the configuration files that change its outputs.

    With `memo_dir` (the cache root), weight hashes are memoised there by path, size and mtime, so a
    multi-GB checkpoint is read once, not at every evaluation. The model directory is never written.
    """
    root = Path(model_dir).resolve()
    weights = sorted(p for p in root.iterdir() if p.suffix in (".safetensors", ".bin"))
    if not weights:
        raise FileNotFoundError(f"{root}: no weight files (*.safetensors) to fingerprint")
    memo_path = Path(memo_dir) / _MEMO if memo_dir else None
    memo = _read_memo(memo_path)
    digest = hashlib.sha256()
    for path in weights:
        stat = path.stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        if memo.get(str(path), {}).get("stamp") != stamp:
            memo[str(path)] = {"stamp": stamp, "sha256": _file_sha256(path)}
        digest.update(f"{path.name}={memo[str(path)]['sha256']}\n".encode())
    for name in _FINGERPRINT_FILES:
        if (root / name).exists():
            digest.update(f"{name}=".encode() + (root / name).read_bytes() + b"\n")
    if memo_path is not None:
        _write_memo(memo_path, memo)
    return digest.hexdigest()[:24]


def settings_fingerprint(base: str, **settings) -> str:
    """The fingerprint of a model used with these call settings."""
    payload = json.dumps({"model": base, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def entry_key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()


class EvalCache:
    """T-CoT texts and vectors of one fingerprint, read once at open, extended by shards."""

    def __init__(self, root: str | Path, kind: str, fingerprint: str):
        if kind not in ("traces", "vectors"):
            raise ValueError(f"EvalCache kind={kind!r}: expected 'traces' or 'vectors'")
        self.kind, self.fingerprint = kind, fingerprint
        self.directory = Path(root) / kind / fingerprint
        self.directory.mkdir(parents=True, exist_ok=True)
        self.texts: dict[str, str] = {}
        self.vectors: dict[str, np.ndarray] = {}
        self._load()

    def __len__(self) -> int:
        return len(self.texts) if self.kind == "traces" else len(self.vectors)

    def __contains__(self, key: str) -> bool:
        return key in (self.texts if self.kind == "traces" else self.vectors)

    def put_texts(self, entries: dict[str, str]) -> None:
        fresh = {k: v for k, v in entries.items() if k not in self.texts}
        if fresh:
            self._write_shard(".jsonl", lambda f: f.write("".join(
                json.dumps({"key": k, "text": v}) + "\n" for k, v in fresh.items()).encode()))
            self.texts.update(fresh)

    def put_vectors(self, keys: Iterable[str], vectors: np.ndarray) -> None:
        keys = list(keys)
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        fresh = [i for i, k in enumerate(keys) if k not in self.vectors]
        if fresh:
            self._write_shard(".npz", lambda f: np.savez(f, keys=np.array([keys[i] for i in fresh]),
                                                         vectors=vectors[fresh]))
            self.vectors.update({keys[i]: vectors[i] for i in fresh})

    def _write_shard(self, suffix: str, write) -> None:
        name = f"shard-{uuid.uuid4().hex}{suffix}"
        tmp = self.directory / f".{name}.tmp"
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / name)

    def _load(self) -> None:
        for path in sorted(self.directory.glob("shard-*")):
            if path.suffix == ".jsonl":
                for line in path.read_text(encoding="utf-8").splitlines():
                    row = json.loads(line)
                    self.texts[row["key"]] = row["text"]
            elif path.suffix == ".npz":
                with np.load(path) as shard:
                    self.vectors.update(zip(shard["keys"].tolist(), shard["vectors"], strict=True))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_memo(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):  # absent or half-written: hash again
        return {}


def _write_memo(path: Path, memo: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(memo, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
