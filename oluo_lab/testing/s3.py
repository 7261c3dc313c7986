"""A local S3 server for tests: moto's threaded server on the loopback interface.

Layer: testing. Needs ``moto[server]`` (the ``dev`` extra), which brings ``boto3``; nothing
in the package imports this module. The server binds ``127.0.0.1`` on an ephemeral port
(moto's default would be every interface) and talks to no other host::

    with MotoS3() as s3:
        store = PackStore(s3.url("my-test"), **s3.options)

A pytest session fixture typically starts one server and hands out fresh prefixes, so
tests share the server's start-up cost but never each other's objects.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

__all__ = ["MotoS3"]


class MotoS3:
    """A running moto S3 server with one bucket; ``url`` gives fresh ``s3://`` prefixes and
    ``options`` the keyword options a :class:`~oluo_lab.cas.PackStore` needs to reach it."""

    def __init__(self, bucket: str = "oluo-lab-test", region: str = "us-east-1") -> None:
        self.bucket = bucket
        self.region = region
        self._server: Any = None
        self._names = itertools.count()
        self.endpoint = ""

    def start(self) -> MotoS3:
        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=self.region,
        )
        client.create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

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
