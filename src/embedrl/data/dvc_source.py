"""Pinned data from a DVC repository: fetch a tracked directory at a git revision and prove it.

A pipeline run names its data by (repo, rev, path). `fetch_pinned` reads the `.dvc` file of `path` at
that revision from git, materialises the directory from the repo's DVC cache or, failing that, its
remote (S3 in this project), and checks that the copy hashes to what the `.dvc` file pins. The result is
a `DataLineage` whose `rev` is a commit sha, so that it can key a cache and be logged with a run.

An unreachable remote (the S3 endpoint down for a while) is retried with exponential backoff for up to
$EMBEDRL_DATA_RETRY_SECONDS (default 60) before `DataFetchError` names the remote, the revision and what
to check. Each attempt is one DVC download with botocore's own retries inside it (AWS_MAX_ATTEMPTS).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from embedrl.data.versioning import DataVersionMismatch, DirectoryHash, check_matches_dvc, directory_hash

if TYPE_CHECKING:
    from dvc.api import DVCFileSystem

logger = logging.getLogger(__name__)

RETRY_SECONDS_ENV = "EMBEDRL_DATA_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 60.0
FIRST_RETRY_DELAY = 1.0  # seconds; doubles after each failed attempt
MAX_RETRY_DELAY = 15.0


class DataFetchError(RuntimeError):
    """The pinned data could not be read from the DVC cache or remote."""


@dataclass(frozen=True)
class DataLineage:
    repo: str
    rev: str | None  # commit sha when the repo is a git repo, else None
    path: str
    md5: str  # the DVC directory hash pinned by `<path>.dvc`, with its ".dir" suffix
    nfiles: int
    size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fetch_pinned(
    repo: str,
    path: str,
    out: str | Path,
    *,
    rev: str | None = None,
    remote: str | None = None,
    remote_config: dict | None = None,
    retry_seconds: float | None = None,
) -> DataLineage:
    """Materialise the DVC-tracked directory `path` of `repo` at `rev` into `out` and verify it.

    `repo` is a local path or a git URL; `rev` any git revision (default: HEAD of a local repo, the
    default branch of a URL). `remote` picks a DVC remote by name (default: the repo's default remote);
    `remote_config` overrides its settings, e.g. `{"endpointurl": ..., "access_key_id": ...}`. Without
    keys there, the standard `AWS_*` variables apply. If `out` already holds the pinned version it is
    kept; any other existing `out` is an error. An unreachable remote is retried for `retry_seconds`
    (default: $EMBEDRL_DATA_RETRY_SECONDS, else 60), then `DataFetchError`.
    """
    path = path.strip("/")
    out = Path(out)
    retry_seconds = data_retry_seconds() if retry_seconds is None else retry_seconds
    fs = _open_pinned(repo, rev, remote, remote_config)
    try:
        commit = _commit_of(fs)
        where = f"repo {repo} at rev {commit or rev or 'workspace'}, path {path}"
        pinned_md5 = _pinned_out(fs, path, where)["md5"]
        if existing := _existing_copy(out, pinned_md5, where):
            return _lineage(repo, commit, path, existing)
        partial = _download(fs, path, out.with_name(out.name + ".partial"), where, remote, retry_seconds)
    finally:
        fs.close()
    hashed = _verified(partial, pinned_md5, where)
    partial.rename(out)
    return _lineage(repo, commit, path, hashed)


def workspace_lineage(repo_root: str | Path, path: str) -> DataLineage:
    """The lineage of the working tree's `path`, after checking it against `<path>.dvc`.

    `rev` is HEAD's sha when the `.dvc` file there pins the same version, and None otherwise (no git,
    or an uncommitted `.dvc` change), so that a cache keyed on `rev` never confuses two versions.
    """
    root = Path(repo_root).resolve()
    path = path.strip("/")
    dvc_file = root / f"{path}.dvc"
    actual = check_matches_dvc(root / path, dvc_file)
    return _lineage(str(root), _head_pinning(root, dvc_file, actual.md5), path, actual)


def _open_pinned(repo: str, rev: str | None, remote: str | None, remote_config: dict | None) -> DVCFileSystem:
    from dvc.api import DVCFileSystem

    fs = _opened(DVCFileSystem(repo, rev=rev, remote=remote, remote_config=remote_config), repo)
    if rev is None and _reads_workspace(fs):
        # A local repo without rev reads its working tree; pin HEAD instead so the `.dvc` file comes
        # from git and the lineage names a commit.
        head = _commit_of(fs)
        if head is not None:
            fs.close()
            fs = _opened(DVCFileSystem(repo, rev=head, remote=remote, remote_config=remote_config), repo)
    return fs


def _opened(fs: DVCFileSystem, repo: str) -> DVCFileSystem:
    try:
        fs.repo  # noqa: B018 - opens the repo (clone, config) lazily; do it here to report config errors
    except ValueError as exc:
        if "remote name" not in str(exc):
            raise
        raise DataFetchError(
            f"{repo}: `remote_config` was given but the repo names no default DVC remote at this revision; "
            "pass `remote='NAME'` (with `url` in remote_config if the remote is not defined there either)"
        ) from exc
    return fs


def _reads_workspace(fs: DVCFileSystem) -> bool:
    from dvc.fs import LocalFileSystem

    return isinstance(fs.repo.fs, LocalFileSystem)


def _commit_of(fs: DVCFileSystem) -> str | None:
    from scmrepo.git import Git

    if not isinstance(fs.repo.scm, Git):
        return None
    return fs.repo.get_rev()  # the commit a git view reads, or HEAD for the working tree


def _pinned_out(fs: DVCFileSystem, path: str, where: str) -> dict:
    dvc_file = f"{path}.dvc"
    try:
        text = fs.read_text(dvc_file, encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataFetchError(
            f"{where}: no {dvc_file} at this revision; is `{path}` tracked with `dvc add`?"
        ) from exc
    outs = (yaml.safe_load(text) or {}).get("outs") or []
    if len(outs) != 1 or not str(outs[0].get("md5", "")).endswith(".dir"):
        raise DataFetchError(
            f"{where}: {dvc_file} must pin one directory (an md5 ending in .dir), found {outs!r}"
        )
    return outs[0]


def _existing_copy(out: Path, md5: str, where: str) -> DirectoryHash | None:
    if not out.exists():
        return None
    existing = directory_hash(out) if out.is_dir() else None
    if existing is not None and existing.md5 == md5:
        logger.info("%s already holds %s (%s)", out, md5, where)
        return existing
    raise FileExistsError(
        f"{out} exists and does not hold {where} ({md5}); remove it or choose another `out`"
    )


def data_retry_seconds() -> float:
    """How long an unreachable DVC remote is retried: $EMBEDRL_DATA_RETRY_SECONDS, default 60."""
    from embedrl.config import env_seconds

    return env_seconds(RETRY_SECONDS_ENV, DEFAULT_RETRY_SECONDS)


def _download(
    fs: DVCFileSystem, path: str, partial: Path, where: str, remote: str | None, retry_seconds: float
) -> Path:
    """`path` into `partial`, retrying while the remote is unreachable (objects already fetched into
    the DVC cache are not fetched again)."""
    started = time.monotonic()
    delay = FIRST_RETRY_DELAY
    attempt = 0
    while True:
        attempt += 1
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get(path, str(partial), recursive=True)
            return partial
        except Exception as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if not _is_storage_error(exc):
                raise
            elapsed = time.monotonic() - started
            if not _is_unreachable(exc) or elapsed >= retry_seconds:
                message = _storage_message(exc, where, _describe_remote(fs, remote))
                if attempt > 1:
                    message += f" Tried {attempt} times over {elapsed:.0f} s (${RETRY_SECONDS_ENV})."
                raise DataFetchError(message) from exc
            pause = min(delay, retry_seconds - elapsed)
            logger.warning(
                "%s: the DVC remote is unreachable (%s); retrying in %.1f s (attempt %d, up to %.0f s in all)",
                where, _root(exc), pause, attempt + 1, retry_seconds,
            )  # fmt: skip
            time.sleep(pause)
            delay = min(delay * 2, MAX_RETRY_DELAY)


def _verified(partial: Path, md5: str, where: str) -> DirectoryHash:
    actual = directory_hash(partial)
    if actual.md5 != md5:
        shutil.rmtree(partial)
        raise DataVersionMismatch(
            f"{where}: the fetched copy hashes to {actual.md5} ({actual.nfiles} files, {actual.size} bytes) "
            f"but the .dvc file pins {md5}, so an object in the DVC cache or on the remote is corrupted; "
            "push it again from a good copy (`dvc push`), or delete the bad object, and fetch again."
        )
    return actual


def _is_storage_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError
    from dvc.exceptions import DvcException
    from dvc_data.index import DataIndexError

    return isinstance(exc, (OSError, DvcException, DataIndexError, BotoCoreError, ClientError))


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _is_unreachable(exc: BaseException) -> bool:
    """Whether the remote could not be reached at all (refused, reset, timed out), as in an outage."""
    import botocore.exceptions

    unreachable = (botocore.exceptions.ConnectionError, ConnectionError, TimeoutError)
    return any(isinstance(e, unreachable) for e in _causes(exc))


def _root(exc: BaseException) -> str:
    root = _causes(exc)[-1]
    return f"{type(root).__name__}: {root}"


def _storage_message(exc: BaseException, where: str, remote: str) -> str:
    from botocore.exceptions import NoCredentialsError

    chain = _causes(exc)
    if _is_unreachable(exc):
        problem = "the remote is unreachable"
        fix = (
            "check that the S3 endpoint is up and reachable from here, and that it is the right one "
            "(`dvc remote modify --local store endpointurl URL` or AWS_ENDPOINT_URL)"
        )
    elif any(isinstance(e, (NoCredentialsError, PermissionError)) for e in chain):
        problem = "the remote refused the credentials"
        fix = "set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or `dvc remote modify --local store access_key_id ...`"
    else:
        problem = "the objects are neither in the DVC cache nor on the remote"
        fix = "run `dvc push` from a clone that has them, or point to the right remote (`dvc remote modify store url`)"
    return f"cannot fetch {where}: {problem} ({remote}); {fix}. Cause: {_root(exc)}."


def _describe_remote(fs: DVCFileSystem, remote: str | None) -> str:
    config = fs.repo.config
    name = remote or config["core"].get("remote")
    if not name:
        return "no DVC remote configured: `dvc remote add -d store s3://BUCKET/PATH`"
    settings = config["remote"].get(name, {})
    endpoint = settings.get("endpointurl") or os.environ.get("AWS_ENDPOINT_URL") or "the AWS default endpoint"
    return f"remote {name!r} at {settings.get('url', '?')} via {endpoint}"


def _head_pinning(root: Path, dvc_file: Path, md5: str) -> str | None:
    from scmrepo.exceptions import SCMError
    from scmrepo.git import Git

    try:
        scm = Git(root)
    except SCMError:
        return None
    try:
        head = scm.get_rev()
        relative = dvc_file.relative_to(Path(scm.root_dir).resolve()).as_posix()
        committed = yaml.safe_load(scm.get_fs(head).read_text(relative))
    except (SCMError, FileNotFoundError):
        return None
    finally:
        scm.close()
    if ((committed or {}).get("outs") or [{}])[0].get("md5") != md5:
        logger.warning("%s differs from HEAD %s; the lineage carries no rev", dvc_file, head)
        return None
    return head


def _lineage(repo: str | Path, rev: str | None, path: str, hashed: DirectoryHash) -> DataLineage:
    location = str(Path(repo).resolve()) if os.path.exists(repo) else str(repo)
    return DataLineage(location, rev, path, hashed.md5, hashed.nfiles, hashed.size)
