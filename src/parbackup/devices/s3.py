"""A bucket (and key prefix) of S3-compatible object storage as a device (boto3; ``s3`` extra).

``s3://bucket/prefix``. Credentials, region and profile come from the standard AWS
configuration (environment variables, ``~/.aws/config`` and ``credentials``, instance
roles); ``?profile=NAME`` and ``?region=NAME`` pick them explicitly. The endpoint of a
non-AWS store comes from ``?endpoint=URL`` or ``AWS_ENDPOINT_URL``; with an endpoint,
path-style addressing is used unless ``?addressing=virtual``. Credentials never appear in
URLs, messages or the catalog.

Objects are written with multipart upload in parts of ``?part=SIZE`` (default 8 MiB),
``?uploads=N`` of them (default 3) going up at once while the next one fills, so memory
per writer stays (N + 1) parts whatever the volume size (W3); a small object is one PUT.
Object stores report no free space: the device is unbounded unless ``?capacity=``.
Retries have one owner per failure, so a dead store is given up after a stated time.
botocore owns every request: throttling, 5xx answers, timeouts and dropped connections
are tried ``?retries=N`` times in all (default 5), each attempt waiting at most
``?timeout=`` seconds (default 60) to connect and as long for each read, with botocore's
backoff between them (at most 20 s). What still fails is a *permanent* device error
(``... (gave up after N attempts)``), which the engine's retry wrapper (devices/retry.py)
does not try again: a frozen store costs a command about N x timeout per request, not
5 x that. Only a range read whose answer breaks off after it began (botocore does not
retry a body) is transient, so the engine's wrapper reads it again (5 reads in all),
each read's request again under botocore's attempts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

import boto3
import botocore.config
import botocore.exceptions

from parbackup.devices.base import LABEL_NAME, Device, ObjectInfo, ObjectWriter, label_bytes
from parbackup.devices.pool import DaemonPool
from parbackup.devices.url import DeviceURL, parse_size
from parbackup.errors import (
    DeviceError,
    DeviceFullError,
    DeviceMissingError,
    TransientDeviceError,
    UsageError,
)
from parbackup.model import Capabilities, Label, Space

_T = TypeVar("_T")
MIN_PART = 5 * 1024 * 1024
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchUpload"}
_FULL_CODES = {"QuotaExceeded", "EntityTooLarge", "InsufficientStorage", "507"}


def client_for(url: DeviceURL):  # type: ignore[no-untyped-def]
    """A boto3 S3 client for ``url``: its ``?profile=``, ``?region=``, ``?endpoint=``,
    ``?addressing=``, ``?retries=`` and ``?timeout=`` over the standard AWS configuration.

    The one place that builds a client, for the device and for S3 sources alike.
    """
    params = url.params
    endpoint = params.get("endpoint") or None
    addressing = params.get("addressing") or ("path" if endpoint else "auto")
    timeout = float(params.get("timeout", "60"))
    config = botocore.config.Config(
        # total_max_attempts counts the first try; botocore's max_attempts would not
        retries={"mode": "standard", "total_max_attempts": attempts_of(url)},
        connect_timeout=timeout,
        read_timeout=timeout,
        s3={"addressing_style": addressing},
    )
    try:
        session = boto3.session.Session(profile_name=params.get("profile") or None)
        return session.client(
            "s3", endpoint_url=endpoint, region_name=params.get("region") or None, config=config
        )
    except botocore.exceptions.BotoCoreError as exc:
        raise DeviceError(f"{url.display}: {exc}") from exc


def attempts_of(url: DeviceURL) -> int:
    """How often botocore tries each request in all (``?retries=``, default 5); a value
    that is not a number raises ValueError, which opening a device or source reports."""
    return max(1, int(url.params.get("retries", "5")))


def call(where: str, fn: Callable[[], _T], gave_up: int = 0) -> _T:
    """Run a boto3 call; foreign exceptions become device errors (no secrets in them).

    ``where`` starts every message (the URL's display form and what was being done).
    With ``gave_up`` (botocore's attempts in all), what botocore retried and still failed
    is permanent, saying so: no other layer should try it again. Without it, such
    failures are transient (an S3 source's reads, which nothing retries on top).
    """

    def transient(message: str) -> DeviceError:
        if gave_up:
            return DeviceError(f"{where}: {message} (gave up after {gave_up} attempts)")
        return TransientDeviceError(f"{where}: {message}")

    try:
        return fn()
    except botocore.exceptions.ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        message = err.get("Message") or code
        if code in _MISSING_CODES:
            raise DeviceMissingError(f"{where}: not found ({code})") from exc
        if code in _FULL_CODES:
            raise DeviceFullError(f"{where}: {message}") from exc
        if code in _TRANSIENT_CODES:
            raise transient(message) from exc
        raise DeviceError(f"{where}: {code}: {message}") from exc
    except botocore.exceptions.NoCredentialsError as exc:
        raise DeviceError(f"{where}: no AWS credentials found") from exc
    except (
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectionClosedError,
        botocore.exceptions.ReadTimeoutError,
        botocore.exceptions.ConnectTimeoutError,
        ConnectionError,
    ) as exc:
        raise transient(f"cannot reach the store ({exc})") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise DeviceError(f"{where}: {exc}") from exc


class _S3Writer(ObjectWriter):
    """Fills one part at a time; full parts go up in the background (at most ``uploads``
    at once, so memory stays ``(uploads + 1) x part``); commit completes the upload."""

    def __init__(self, device: S3Device, name: str) -> None:
        self.device, self.name, self.key = device, name, device._key(name)
        self.buf = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict] = []
        self.inflight: list[Future] = []
        self.pool: DaemonPool | None = None
        self.done = False

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        return self.device._call(f"{what} {self.name}", fn)  # permanent once botocore gave up

    def _put_part(self, number: int, data: bytes) -> dict:
        s3, bucket = self.device._client(), self.device.bucket
        resp = self._call(
            "upload part",
            lambda: s3.upload_part(
                Bucket=bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
            ),
        )
        return {"ETag": resp["ETag"], "PartNumber": number}

    def _upload(self, data: bytes) -> None:
        """Start uploading the next part, after waiting for room among the uploads."""
        if self.upload_id is None:
            s3, bucket = self.device._client(), self.device.bucket
            resp = self._call(
                "start upload",
                lambda: s3.create_multipart_upload(Bucket=bucket, Key=self.key),
            )
            self.upload_id = resp["UploadId"]
            # daemon workers: a part stuck on a hung store must not hold the process exit
            self.pool = DaemonPool(self.device.uploads, name="s3-part")
        assert self.pool is not None
        while len(self.inflight) >= self.device.uploads:
            self._wait_one()
        number = len(self.parts) + len(self.inflight) + 1
        self.inflight.append(self.pool.submit(self._put_part, number, data))

    def _wait_one(self) -> None:
        self.parts.append(self.inflight.pop(0).result())

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.buf += data
        size = self.device.part_size
        while len(self.buf) >= size:
            part = bytes(self.buf[:size])
            del self.buf[:size]
            self._upload(part)

    def commit(self) -> None:
        s3, bucket = self.device._client(), self.device.bucket
        if self.upload_id is None:
            body = bytes(self.buf)
            self._call("put", lambda: s3.put_object(Bucket=bucket, Key=self.key, Body=body))
        else:
            if self.buf:
                self._upload(bytes(self.buf))
            while self.inflight:
                self._wait_one()
            upload = {"Parts": sorted(self.parts, key=lambda p: p["PartNumber"])}
            self._call(
                "complete upload",
                lambda: s3.complete_multipart_upload(
                    Bucket=bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload=upload
                ),
            )
            self._shutdown()
        self.buf = bytearray()
        self.done = True

    def _shutdown(self) -> None:
        for fut in self.inflight:
            fut.cancel()
        for fut in self.inflight:
            with contextlib.suppress(Exception):
                fut.result()
        self.inflight = []
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        self.buf = bytearray()
        self._shutdown()
        if self.upload_id is not None:
            with contextlib.suppress(Exception):
                self.device._client().abort_multipart_upload(
                    Bucket=self.device.bucket, Key=self.key, UploadId=self.upload_id
                )


class S3Device(Device):
    """``s3://bucket/prefix``; see the module docstring."""

    scheme = "s3"
    capabilities = Capabilities(sequential=False, random_read=True, max_connections=16)
    options = frozenset(
        {"part", "uploads", "endpoint", "retries", "timeout", "addressing", "profile", "region"}
    )

    def __init__(self, url: DeviceURL) -> None:
        super().__init__(url)
        self.bucket = url.host
        self.prefix = url.path.strip("/")
        self.part_size = max(MIN_PART, parse_size(url.params.get("part", "8MiB")))
        self.uploads = max(1, int(url.params.get("uploads", "3")))
        self.s3 = None
        self.attempts = attempts_of(url)

    @classmethod
    def check_url(cls, url: DeviceURL) -> None:
        if not url.host:
            raise UsageError(f"{url.display}: no bucket (use s3://bucket/prefix)")

    def _key(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/"):
            raise DeviceError(f"bad object name {name!r}")
        return f"{self.prefix}/{name}" if self.prefix else name

    def _client(self):  # type: ignore[no-untyped-def]
        if self.s3 is None:
            self.s3 = client_for(self.url)
        return self.s3

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        return call(f"{self.url.display}: {what}", fn, self.attempts)

    # -- the seven -------------------------------------------------------------------------
    def open(self, write: bool = True) -> None:
        """Check the bucket answers; reading and writing need the same (no write probe)."""
        s3 = self._client()
        try:
            self._call("open", lambda: s3.head_bucket(Bucket=self.bucket))
        except DeviceMissingError as exc:
            raise DeviceMissingError(f"{self.url.display}: no such bucket") from exc

    def close(self) -> None:
        client, self.s3 = self.s3, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def raw_space(self) -> Space:
        return Space(free=None, capacity=None)  # object stores do not tell

    def create(self, name: str) -> ObjectWriter:
        return self.capped(_S3Writer(self, name))

    def put_label_if_absent(self, label: Label) -> None:
        """One PUT with ``If-None-Match: *``, which the store refuses where the object
        exists (412: another run's label, kept) or while another conditional write of it
        is under way (409: tried again). A store without conditional writes (501) gets
        look-then-put, in which two runs at once may both write (the later label wins)."""
        s3, key, body = self._client(), self._key(LABEL_NAME), label_bytes(label)

        def put() -> int:
            """0 when written, else the HTTP status of a refusal named above."""
            try:
                s3.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
            except botocore.exceptions.ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status in (409, 412, 501):
                    return int(status)
                raise
            return 0

        for attempt in range(self.attempts):
            refused = self._call(f"put {LABEL_NAME}", put)
            if refused == 409:
                if attempt + 1 < self.attempts:  # no wait after the last
                    time.sleep(min(8.0, 0.5 * 2**attempt))
                continue
            if refused == 501 and not self.has_label():
                self.write_label(label)
            return
        raise DeviceError(
            f"{self.url.display}: put {LABEL_NAME}: another write of it kept conflicting "
            f"(gave up after {self.attempts} attempts)"
        )

    def read(self, name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        s3 = self._client()

        def ask() -> dict | None:
            try:
                return s3.get_object(
                    Bucket=self.bucket,
                    Key=self._key(name),
                    Range=f"bytes={offset}-{offset + length - 1}",
                )
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return None  # starts at or past the end
                raise

        resp = self._call(f"read {name}", ask)
        if resp is None:
            return b""
        try:
            with contextlib.closing(resp["Body"]) as body:
                return body.read()
        except (botocore.exceptions.BotoCoreError, OSError) as exc:  # not retried by botocore
            raise TransientDeviceError(
                f"{self.url.display}: read {name}: the answer broke off ({exc})"
            ) from exc

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        s3 = self._client()
        base = f"{self.prefix}/" if self.prefix else ""

        def walk() -> list[ObjectInfo]:
            out = []
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    out.append(ObjectInfo(obj["Key"][len(base) :], int(obj["Size"])))
            return sorted(out, key=lambda o: o.name)

        return self._call("list", walk)

    def unfinished(self, prefix: str = "") -> list[ObjectInfo]:
        """Multipart uploads started under ``prefix`` and never completed nor aborted
        (a writer whose process was killed): the store keeps their parts, and bills
        them, until they are aborted. Sizes are not asked (0)."""
        s3 = self._client()
        base = f"{self.prefix}/" if self.prefix else ""

        def walk() -> list[ObjectInfo]:
            pages = s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=base + prefix
            )
            keys = {u["Key"] for page in pages for u in page.get("Uploads", [])}
            return [ObjectInfo(k[len(base) :], 0) for k in sorted(keys)]

        return self._call("list uploads", walk)

    def discard(self, name: str) -> None:
        """Abort every open multipart upload of ``name``."""
        s3, key = self._client(), self._key(name)

        def abort() -> None:
            pages = s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=key
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Key"] != key:
                        continue
                    try:
                        s3.abort_multipart_upload(
                            Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]
                        )
                    except botocore.exceptions.ClientError as exc:
                        if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                            raise  # gone meanwhile is fine; anything else is told

        self._call(f"abort upload {name}", abort)

    def delete(self, name: str) -> None:
        s3 = self._client()
        self._call(
            f"delete {name}", lambda: s3.delete_object(Bucket=self.bucket, Key=self._key(name))
        )

    def size(self, name: str) -> int:
        s3 = self._client()
        resp = self._call(
            f"stat {name}", lambda: s3.head_object(Bucket=self.bucket, Key=self._key(name))
        )
        return int(resp["ContentLength"])
