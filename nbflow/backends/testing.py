"""Real servers for tests and benchmarks: an S3-compatible server (moto) on the loopback interface.

Lives in the package (like ``distributed.utils_test``) so the test suite, the stress tests and
``bench/`` start the same server the same way. Nothing here is imported by nbflow itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

#: dummy credentials: moto accepts any, and they keep real ones out of tests
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "nbflow-test",
    "AWS_SECRET_ACCESS_KEY": "nbflow-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    process: subprocess.Popen[bytes]

    @property
    def storage_options(self) -> dict[str, object]:
        """What ``nbflow.open_store("s3://...", **options)`` needs to reach this server."""
        return {
            "endpoint_url": self.endpoint_url,
            "key": S3_ENV["AWS_ACCESS_KEY_ID"],
            "secret": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        }

    def make_bucket(self, name: str) -> str:
        import s3fs

        fs = s3fs.S3FileSystem(**self.storage_options)
        if not fs.exists(name):
            fs.mkdir(name)
        return name


def _moto_command(port: int) -> list[str]:
    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    if exe:
        return [exe, "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


@contextlib.contextmanager
def s3_server(timeout: float = 30.0) -> Iterator[S3Server]:
    """Start moto's standalone S3 server on 127.0.0.1 (a free port); stop it on exit.

    Sets dummy AWS credentials in the environment (restored on exit) so that s3fs in this
    process and in worker processes started meanwhile finds them.
    """
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    port = free_port()
    proc = subprocess.Popen(
        _moto_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto S3 server did not start on {endpoint}") from None
                time.sleep(0.05)
        yield S3Server(endpoint, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
