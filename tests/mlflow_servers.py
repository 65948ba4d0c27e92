"""Real servers for tests: an S3 endpoint (moto), an MLflow tracking server, an MLflow model server.

Each listens on a free loopback port and is polled until it answers. A server process writes its
output to a log file (shown when it fails to start) and runs in its own process group, so `stop()`
also ends the workers it spawned; stopping is idempotent and also runs at interpreter exit.
`stop()` then `start()` restarts a server on the same port with the same state (sqlite file, moto
memory), which is what fault-injection tests need.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
S3_KEY_ID = "testing"
S3_SECRET = "testing"
S3_REGION = "us-east-1"
# Variables a server must not inherit from the test process: they would point it elsewhere.
_SCRUBBED_PREFIXES = ("AWS_", "MLFLOW_")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, *, timeout: float, is_alive=lambda: True, poll: float = 0.25) -> None:
    """Poll `url` until it answers HTTP 200; TimeoutError, or RuntimeError once `is_alive()` is False."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if not is_alive():
            raise RuntimeError(f"the process serving {url} exited before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            last_error = str(err)
        time.sleep(poll)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s ({last_error})")


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without AWS_* / MLFLOW_* variables, plus `extra`.

    This interpreter's bin directory goes first on PATH: `mlflow models serve` execs `uvicorn` by
    name, which is not found when the tests run from an unactivated virtual environment.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith(_SCRUBBED_PREFIXES)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # keeps server logs readable
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------ processes
@dataclass
class ServerProcess:
    """A server subprocess with a readiness URL path, a log file and guaranteed teardown."""

    name: str
    command: list[str]
    port: int
    ready_path: str
    log_path: Path
    env: dict[str, str] = field(default_factory=clean_env)
    startup_timeout: float = 90.0
    process: subprocess.Popen | None = field(default=None, init=False)
    _exit_hook: bool = field(default=False, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ServerProcess:
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {' '.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        if not self._exit_hook:
            atexit.register(self.stop)
            self._exit_hook = True
        try:
            wait_until_ready(
                self.url + self.ready_path, timeout=self.startup_timeout, is_alive=lambda: self.running
            )
        except (RuntimeError, TimeoutError) as err:
            self.stop()
            raise RuntimeError(
                f"{self.name} did not start: {err}\n--- {self.log_path}:\n{self.log_tail()}"
            ) from None
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the server's process group, SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------- S3
class MotoS3:
    """An S3 endpoint on loopback (moto's threaded server, state in this process's memory)."""

    def __init__(self, port: int | None = None):
        from moto.server import ThreadedMotoServer

        self.port = port or free_port()
        self._server = ThreadedMotoServer(ip_address=LOOPBACK, port=self.port, verbose=False)
        self._started = False

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> MotoS3:
        if not self._started:
            self._server.start()
            self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._server.stop()
            self._started = False

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=S3_KEY_ID,
            aws_secret_access_key=S3_SECRET,
            region_name=S3_REGION,
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            obj["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]

    def server_env(self) -> dict[str, str]:
        """What a process (the MLflow server, DVC) needs to reach this endpoint."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": S3_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_DEFAULT_REGION": S3_REGION,
        }

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------------------- MLflow
def mlflow_tracking_server(
    workdir: Path, *, artifacts_destination: str, s3: MotoS3 | None = None, port: int | None = None
) -> ServerProcess:
    """`mlflow server` with a sqlite store in `workdir`, proxying artifacts to `artifacts_destination`.

    Only the server gets the S3 endpoint and keys; clients see `mlflow-artifacts:/` URIs. Not started.
    """
    port = port or free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", artifacts_destination,
        "--host", LOOPBACK, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = clean_env(**(s3.server_env() if s3 else {}))
    return ServerProcess("mlflow server", command, port, "/health", workdir / "mlflow-server.log", env)


def mlflow_model_server(
    model_uri: str, *, tracking_uri: str, workdir: Path, port: int | None = None
) -> ServerProcess:
    """`mlflow models serve` of `model_uri` in this environment (`--env-manager local`). Not started."""
    port = port or free_port()
    command = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
        "--env-manager", "local", "-h", LOOPBACK, "-p", str(port), "--workers", "1",
    ]  # fmt: skip
    env = clean_env(MLFLOW_TRACKING_URI=tracking_uri, HF_HUB_OFFLINE="1")
    return ServerProcess("mlflow model server", command, port, "/ping", workdir / "model-server.log", env)
