"""DVC with an S3 remote, for real: a moto S3 server, a git + DVC repo, push, and reads from fresh clones.

The origin repo commits two versions of a small MiniMMEB subset (tags v1 and v2) and pushes both to
s3://embedrl-data/dvcstore. Its committed config names the remote; the endpoint is set with `--local`,
as docs/dvc.md advises, so a clone learns it from AWS_ENDPOINT_URL or `remote_config`.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from embedrl.data.dvc_source import DataFetchError, DataLineage, fetch_pinned, workspace_lineage
from embedrl.data.versioning import DataVersionMismatch, directory_hash, file_md5

BUCKET = "embedrl-data"
REMOTE_URL = f"s3://{BUCKET}/dvcstore"
DVC = str(Path(sys.executable).parent / "dvc")
MEDIA_FILES_KEPT = 6  # a few images beside the record files keep push and pull around a second


@dataclass(frozen=True)
class Origin:
    root: Path
    endpoint: str
    v1: str  # commit shas
    v2: str
    v1_md5: str
    v2_md5: str
    v1_copy: Path  # the v1 files as they were committed


def run(*args: str, cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed in {cwd}:\n{result.stdout}\n{result.stderr}"
    return result.stdout.strip()


def git_identity(root: Path) -> None:
    run("git", "config", "user.name", "embedrl test", cwd=root)
    run("git", "config", "user.email", "test@embedrl.invalid", cwd=root)


def git_repo(root: Path) -> None:
    run("git", "init", "-q", "-b", "main", cwd=root)
    git_identity(root)


def commit_all(root: Path, message: str, tag: str) -> str:
    run("git", "add", "-A", cwd=root)
    run("git", "commit", "-q", "-m", message, cwd=root)
    run("git", "tag", tag, cwd=root)
    return run("git", "rev-parse", "HEAD", cwd=root)


def clone(origin: Origin, dest: Path) -> Path:
    run("git", "clone", "-q", str(origin.root), str(dest), cwd=dest.parent)
    git_identity(dest)
    return dest


def minimmeb_subset(source: Path, dest: Path) -> None:
    """Every record file of a generated MiniMMEB and the first few media files."""
    media = sorted(p for p in source.rglob("*.png"))[:MEDIA_FILES_KEPT]
    for path in [p for p in source.rglob("*") if p.is_file() and p.suffix != ".png"] + media:
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def change_data(data: Path) -> None:
    """A second version: one file edited, one removed, one added."""
    manifest = data / "manifest.json"
    manifest.write_text(manifest.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    next(iter(sorted(data.rglob("*.png")))).unlink()
    (data / "NOTES.txt").write_text("v2: one image dropped\n", encoding="utf-8")


@pytest.fixture(scope="module")
def isolated_env(tmp_path_factory):
    """HOME, XDG and DVC dirs in tmp, fake AWS keys: nothing global is read or written."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_MAX_ATTEMPTS"):
            patch.delenv(name, raising=False)
        for name, value in {
            "HOME": home,
            "XDG_CONFIG_HOME": home / "config",
            "XDG_CACHE_HOME": home / "cache",
            "DVC_GLOBAL_CONFIG_DIR": home / "dvc-global",
            "DVC_SYSTEM_CONFIG_DIR": home / "dvc-system",
            "DVC_SITE_CACHE_DIR": home / "dvc-site",
            "DVC_NO_ANALYTICS": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            patch.setenv(name, str(value))
        yield


@pytest.fixture(scope="module")
def s3_endpoint(isolated_env):
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def origin(s3_endpoint, small_minimmeb, tmp_path_factory) -> Origin:
    root = tmp_path_factory.mktemp("origin")
    git_repo(root)
    run(DVC, "init", "-q", cwd=root)
    run(DVC, "remote", "add", "-d", "store", REMOTE_URL, cwd=root)
    run(DVC, "remote", "modify", "--local", "store", "endpointurl", s3_endpoint, cwd=root)

    minimmeb_subset(small_minimmeb, root / "data")
    run(DVC, "add", "-q", "data", cwd=root)
    v1 = commit_all(root, "data v1", "v1")
    run(DVC, "push", "-q", cwd=root)
    v1_copy = tmp_path_factory.mktemp("v1") / "data"
    shutil.copytree(root / "data", v1_copy)

    change_data(root / "data")
    run(DVC, "add", "-q", "data", cwd=root)
    v2 = commit_all(root, "data v2", "v2")
    run(DVC, "push", "-q", cwd=root)
    return Origin(
        root, s3_endpoint, v1, v2, directory_hash(v1_copy).md5, directory_hash(root / "data").md5, v1_copy
    )


def test_versions_differ_and_remote_config_is_committed_without_endpoint(origin):
    assert origin.v1_md5 != origin.v2_md5
    committed = run("git", "show", "v2:.dvc/config", cwd=origin.root)
    assert REMOTE_URL in committed and "endpointurl" not in committed


def test_fresh_clone_fetches_the_first_version_from_s3(origin, tmp_path):
    repo = clone(origin, tmp_path / "clone")
    assert not (repo / ".dvc" / "cache").exists()

    lineage = fetch_pinned(
        str(repo), "data", tmp_path / "out", rev="v1", remote_config={"endpointurl": origin.endpoint}
    )

    assert lineage == DataLineage(
        str(repo.resolve()), origin.v1, "data", origin.v1_md5, *astuple_counts(origin.v1_copy)
    )
    assert_same_files(tmp_path / "out", origin.v1_copy)
    assert lineage.to_dict()["rev"] == origin.v1


def test_fetch_by_commit_sha_reads_that_commit_not_the_workspace(origin, tmp_path):
    repo = clone(origin, tmp_path / "clone")  # checked out at v2

    lineage = fetch_pinned(
        str(repo), "data", tmp_path / "out", rev=origin.v1, remote_config={"endpointurl": origin.endpoint}
    )

    assert (lineage.rev, lineage.md5) == (origin.v1, origin.v1_md5)


def test_fetch_without_rev_pins_head_and_takes_the_endpoint_from_the_environment(
    origin, tmp_path, monkeypatch
):
    repo = clone(origin, tmp_path / "clone")
    monkeypatch.setenv("AWS_ENDPOINT_URL", origin.endpoint)

    lineage = fetch_pinned(str(repo), "data", tmp_path / "out")

    assert (lineage.rev, lineage.md5) == (origin.v2, origin.v2_md5)
    assert (tmp_path / "out" / "NOTES.txt").is_file()


def test_fetch_from_a_git_url_clones_and_resolves_the_tag(origin, tmp_path):
    url = f"file://{origin.root}"

    lineage = fetch_pinned(
        url, "data", tmp_path / "out", rev="v1", remote_config={"endpointurl": origin.endpoint}
    )

    assert (lineage.repo, lineage.rev, lineage.md5) == (url, origin.v1, origin.v1_md5)


def test_origin_reads_its_own_cache_without_the_remote(origin, tmp_path):
    unreachable = {"endpointurl": "http://127.0.0.1:9"}

    lineage = fetch_pinned(str(origin.root), "data", tmp_path / "out", rev="v1", remote_config=unreachable)

    assert lineage.md5 == origin.v1_md5


def test_existing_output_with_the_pinned_version_is_kept(origin, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(origin.v1_copy, out)

    lineage = fetch_pinned(str(origin.root), "data", out, rev="v1")

    assert lineage.md5 == origin.v1_md5
    with pytest.raises(FileExistsError, match="does not hold"):
        fetch_pinned(str(origin.root), "data", out, rev="v2")


def test_dvc_pull_in_a_clone_restores_the_first_version(origin, tmp_path, monkeypatch):
    repo = clone(origin, tmp_path / "clone")
    monkeypatch.setenv("AWS_ENDPOINT_URL", origin.endpoint)

    run("git", "checkout", "-q", "v1", cwd=repo)
    run(DVC, "pull", "-q", cwd=repo)

    assert_same_files(repo / "data", origin.v1_copy)
    assert workspace_lineage(repo, "data") == DataLineage(
        str(repo.resolve()), origin.v1, "data", origin.v1_md5, *astuple_counts(origin.v1_copy)
    )


def test_workspace_lineage_rejects_a_changed_workspace(origin, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(origin.root, repo)
    assert workspace_lineage(repo, "data").rev == origin.v2

    (repo / "data" / "NOTES.txt").write_text("edited\n", encoding="utf-8")
    with pytest.raises(DataVersionMismatch, match="dvc pull"):
        workspace_lineage(repo, "data")


def test_workspace_lineage_without_git_has_no_rev(origin, tmp_path):
    repo = tmp_path / "plain"
    repo.mkdir()
    shutil.copytree(origin.root / "data", repo / "data")
    shutil.copyfile(origin.root / "data.dvc", repo / "data.dvc")

    assert workspace_lineage(repo, "data") == DataLineage(
        str(repo.resolve()), None, "data", origin.v2_md5, *astuple_counts(repo / "data")
    )


def test_revision_without_a_remote_needs_it_named_and_defined_by_the_caller(origin, tmp_path):
    repo = clone(origin, tmp_path / "clone")
    run(DVC, "remote", "remove", "store", cwd=repo)
    no_remote = commit_all(repo, "no remote", "no-remote")
    store = {"url": REMOTE_URL, "endpointurl": origin.endpoint}

    with pytest.raises(DataFetchError, match="names no default DVC remote"):
        fetch_pinned(f"file://{repo}", "data", tmp_path / "out", rev=no_remote, remote_config=store)
    lineage = fetch_pinned(
        str(repo), "data", tmp_path / "out", rev=no_remote, remote="store", remote_config=store
    )

    assert (lineage.rev, lineage.md5) == (no_remote, origin.v2_md5)


def test_remote_without_the_objects_names_it_and_says_to_push(origin, tmp_path):
    repo = clone(origin, tmp_path / "clone")
    empty = f"s3://{BUCKET}/nothing-here"

    with pytest.raises(DataFetchError) as caught:
        fetch_pinned(
            str(repo),
            "data",
            tmp_path / "out",
            rev="v1",
            remote_config={"url": empty, "endpointurl": origin.endpoint},
        )

    message = str(caught.value)
    assert empty in message and "dvc push" in message and origin.v1 in message
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_unreachable_remote_names_the_endpoint_and_the_fix(origin, tmp_path, monkeypatch):
    repo = clone(origin, tmp_path / "clone")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore would retry for about ten seconds
    monkeypatch.setenv("EMBEDRL_DATA_RETRY_SECONDS", "0")  # and fetch_pinned for a minute (an outage looks alike)
    closed_port = "http://127.0.0.1:9"

    with pytest.raises(DataFetchError, match="unreachable") as caught:
        fetch_pinned(
            str(repo), "data", tmp_path / "out", rev="v1", remote_config={"endpointurl": closed_port}
        )

    message = str(caught.value)
    assert closed_port in message and REMOTE_URL in message and "dvc remote modify" in message


def test_corrupted_remote_object_fails_the_hash_check(origin, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=origin.endpoint)
    corrupt_prefix = "corrupted"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="dvcstore/")["Contents"]]
    for key in keys:
        s3.copy_object(
            Bucket=BUCKET, Key=key.replace("dvcstore", corrupt_prefix, 1), CopySource=f"{BUCKET}/{key}"
        )
    manifest_md5 = file_md5(origin.v1_copy / "manifest.json")
    s3.put_object(
        Bucket=BUCKET, Key=f"{corrupt_prefix}/files/md5/{manifest_md5[:2]}/{manifest_md5[2:]}", Body=b"{}"
    )
    repo = clone(origin, tmp_path / "clone")

    remote = {"url": f"s3://{BUCKET}/{corrupt_prefix}", "endpointurl": origin.endpoint}
    with pytest.raises(DataVersionMismatch, match="corrupted") as caught:
        fetch_pinned(str(repo), "data", tmp_path / "out", rev="v1", remote_config=remote)

    message = str(caught.value)
    assert origin.v1 in message and "path data" in message and origin.v1_md5 in message
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def astuple_counts(root: Path) -> tuple[int, int]:
    hashed = directory_hash(root)
    return hashed.nfiles, hashed.size


def assert_same_files(actual: Path, expected: Path) -> None:
    def listing(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }

    assert listing(actual) == listing(expected)
