"""A local S3 server for tests: moto's threaded server on the loopback interface.

Layer: testing. Needs ``moto[server]`` (the ``dev`` extra), which brings ``boto3``; nothing
in the package imports this module. The server binds ``127.0.0.1`` on an ephemeral port
(moto's default would be every interface) and talks to no other host::

    with MotoS3() as s3:
        store = PackStore(s3.url("my-test"), **s3.options)

A pytest session fixture typically starts one server and hands out fresh prefixes, so
tests share the server's start-up cost but never each other's objects.

``MotoS3(process=True)`` runs the server in a child process (``python -m
oluo_lab.testing.s3``) instead of a thread of the caller's: a benchmark then measures its
client the way a real S3 server serves it, without the server's request handling taking
the caller's GIL. The child stops when its standard input closes, so it cannot outlive
the caller.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import subprocess
import sys
from typing import Any

__all__ = ["MotoS3"]


class MotoS3:
    """A running moto S3 server with one bucket; ``url`` gives fresh ``s3://`` prefixes and
    ``options`` the keyword options a :class:`~oluo_lab.cas.PackStore` needs to reach it."""

    def __init__(
        self, bucket: str = "oluo-lab-test", region: str = "us-east-1", *, process: bool = False
    ) -> None:
        self.bucket = bucket
        self.region = region
        self.process = process
        self._server: Any = None
        self._child: subprocess.Popen[str] | None = None
        self._names = itertools.count()
        self.endpoint = ""

    def start(self) -> MotoS3:
        if self.process:
            return self._start_child()
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self._create_bucket()
        return self

    def _start_child(self) -> MotoS3:
        self._child = subprocess.Popen(
            [sys.executable, "-m", __name__, "--bucket", self.bucket, "--region", self.region],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._child.stdout is not None
        self.endpoint = self._child.stdout.readline().strip()
        if not self.endpoint.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError("the moto S3 server process did not start (see its stderr)")
        return self

    def _create_bucket(self) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=self.region,
        )
        client.create_bucket(Bucket=self.bucket)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._child is not None:
            child, self._child = self._child, None
            assert child.stdin is not None
            child.stdin.close()  # the child's signal to stop
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def options(self) -> dict[str, Any]:
        """Endpoint, credentials and region of this server (plain HTTP allowed)."""
        return {
            "endpoint": self.endpoint,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "region": self.region,
            "allow_http": True,
        }

    @property
    def env(self) -> dict[str, str]:
        """The same as the standard environment variables obstore reads."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
        }

    def url(self, name: str = "store") -> str:
        """A fresh ``s3://bucket/<name>-<n>`` prefix no other caller got."""
        return f"s3://{self.bucket}/{name}-{next(self._names)}"


def _serve() -> None:
    """The child of ``MotoS3(process=True)``: serve, print the endpoint, stop at stdin EOF."""
    ap = argparse.ArgumentParser(description="a moto S3 server on 127.0.0.1 until stdin closes")
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--region", required=True)
    args = ap.parse_args()
    with MotoS3(args.bucket, args.region) as server:
        print(server.endpoint, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    _serve()
