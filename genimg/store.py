"""The object store: one small interface over a local directory (`file://`) and S3 (`s3://`).

Configured by `GENIMG_STORE` (default `file://$GENIMG_HOME/store`). S3 goes through boto3 with
its own configuration: `AWS_ENDPOINT_URL_S3` (MinIO, moto, any S3 API), credentials and region
from the usual chain. Retries with backoff on throttling, 5xx and connection errors come from
botocore's "standard" retry mode; large objects go up and down in parts (s3transfer).

Every object written through `put_*` records its SHA-256 (S3 user metadata; for files, the
content itself), and `get_*` verifies it when the caller passes the expected digest.
Keys are relative, '/'-separated and may not contain '..' or empty segments.
A local write goes through a temporary named after its writer (pid@host), so a temporary left by
a killed writer can be told from one still being written, and removed.
"""

from __future__ import annotations

import abc
import builtins
import errno
import hashlib
import io
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from genimg.errors import GenimgError
from genimg.settings import genimg_home

SHA256_METADATA = "sha256"
MULTIPART_THRESHOLD = 16 * 1024 * 1024
KEY_SEGMENT = re.compile(r"[A-Za-z0-9._@=+-]+")
# `.<final name>.<uuid hex>.<pid>@<host>.tmp`, beside the final file (see LocalStore).
STAGING_NAME = re.compile(r"\.(?P<final>.+)\.[0-9a-f]{32}\.(?P<writer>\d+@.+)\.tmp")


class StoreError(GenimgError):
    """The store could not do what was asked; the message names the URI and the cause."""


class ChecksumMismatch(StoreError):
    pass


class DiskFull(StoreError):
    """A write failed for want of space (ENOSPC), of quota (EDQUOT) or past the file-size limit
    (EFBIG); whatever the write was to replace is intact, and the message says what that is."""

    def __init__(self, cause: str, mount: Path, writing: str, intact: str) -> None:
        self.cause, self.mount, self.writing = cause, mount, writing
        super().__init__(
            f"{cause} on {mount} while writing {writing} ({intact}) — free space "
            "or set GENIMG_HOME/GENIMG_STORE elsewhere"
        )

    def saying(self, intact: str) -> DiskFull:
        """The same failure, saying more precisely what is intact (a caller knows better)."""
        return DiskFull(self.cause, self.mount, self.writing, intact)


# What each of these errors says in the one line a full disk gives.
DISK_FULL_CAUSES = {
    errno.ENOSPC: "no space left",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit reached",
}


def disk_full_cause(exc: BaseException) -> str | None:
    """Why a write failed, when for want of space: an OSError's errno, or the OS error that a
    library in Rust (safetensors) reports in its message ('… (os error 28)'); else None."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:
        found = re.search(r"\(os error (\d+)\)", str(exc))
        code = int(found[1]) if found else None
    return DISK_FULL_CAUSES.get(code) if code is not None else None


def mount_point(path: Path) -> Path:
    """The mount point of the file system `path` (or its nearest existing folder) is on."""
    path = path.resolve()
    while not path.exists() or not path.is_dir():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def disk_full_error(cause: str, path: Path, writing: str, intact: str) -> DiskFull:
    """`no space left on /mnt while writing … (… intact) — free space or …`: one line."""
    return DiskFull(cause, mount_point(path), writing, intact)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def writer_tag() -> str:
    """`pid@host` of this process, for the names of its temporaries."""
    return f"{os.getpid()}@{socket.gethostname()}"


def writer_is_gone(tag: str) -> bool:
    """True only when the writer `pid@host` is known to be dead: it ran on this host and no
    process has its pid now. Another host's process cannot be seen from here: it counts as alive,
    and so does a pid that was reused (its temporary stays; never is one removed mid-write)."""
    pid, _, host = tag.partition("@")
    if not pid.isdigit() or int(pid) <= 0 or host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's process
        return False
    return False


def check_key(key: str) -> str:
    segments = key.split("/")
    if not key or any(s in ("", ".", "..") or not KEY_SEGMENT.fullmatch(s) for s in segments):
        raise StoreError(f"invalid object key {key!r}")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None


class ObjectStore(abc.ABC):
    """put/get bytes and files, list, exists, delete, create-if-absent `publish`, and
    conditional writes and deletes of versioned objects (`read_versioned`, `replace_if`, …)."""

    uri: str

    def uri_for(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def get_bytes(self, key: str, *, sha256: str | None = None) -> bytes: ...

    @abc.abstractmethod
    def put_file(self, key: str, path: Path) -> None: ...

    @abc.abstractmethod
    def get_file(self, key: str, path: Path, *, sha256: str | None = None) -> Path: ...

    @abc.abstractmethod
    def info(self, key: str) -> ObjectInfo | None:
        """Size and recorded SHA-256 of an object, or None if it does not exist."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under `prefix` (a folder-like prefix ending in '/' or ''), sorted."""

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def publish(self, key: str, data: bytes) -> bool:
        """Create `key` atomically if it does not exist yet. False if it already existed."""

    # `builtins.list`: in this class body `list` is the method above.
    def remove_stale_temporaries(self, prefix: str) -> builtins.list[str]:
        """Remove the temporaries under `prefix` that killed writers left; their names.

        Nothing by default: an S3 object appears whole or not at all (a put, or a multipart
        upload's completion), so a killed writer leaves no object behind."""
        return []

    def exists(self, key: str) -> bool:
        return self.info(key) is not None

    def verify(self, key: str, data: bytes, expected: str | None) -> bytes:
        if expected is not None and sha256_hex(data) != expected:
            raise ChecksumMismatch(f"{self.uri_for(key)}: checksum mismatch (object corrupt)")
        return data

    # Versioned objects: compare-and-swap on one small object (the promotion lock). A version
    # names one write: S3's ETag, or a file's SHA-256. Both are digests of the content, so a
    # caller that needs every write to get a new version writes distinct content.

    @abc.abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object's content and version, or None if it does not exist."""

    @abc.abstractmethod
    def create_versioned(self, key: str, data: bytes) -> str | None:
        """Create `key` atomically if it does not exist: its version, or None if it existed."""

    @abc.abstractmethod
    def replace_if(self, key: str, data: bytes, version: str) -> str | None:
        """Overwrite `key` with `data` only if it is still at `version`, atomically: the new
        version, or None if the object changed or vanished (of several callers replacing the
        same version, exactly one succeeds)."""

    @abc.abstractmethod
    def delete_if(self, key: str, version: str) -> bool:
        """Delete `key` only if it is still at `version`, atomically; False if it changed or vanished."""


class LocalStore(ObjectStore):
    """A directory. Writes go to a temporary file that is renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.uri = self.root.as_uri()

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def staging_path(self, final: Path) -> Path:
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.parent / f".{final.name}.{uuid.uuid4().hex}.{writer_tag()}.tmp"

    def remove_stale_temporaries(self, prefix: str) -> list[str]:
        """Remove the staging files under `prefix` whose writer died before renaming them into
        place; a live writer's (here or on another host sharing the folder) are left alone."""
        base = self.root / check_key(prefix.strip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        removed = []
        for path in sorted(base.rglob(".*.tmp")):
            match = STAGING_NAME.fullmatch(path.name)
            if match and path.is_file() and writer_is_gone(match["writer"]):
                path.unlink(missing_ok=True)
                removed.append(path.relative_to(self.root).as_posix())
        return removed

    def write_staged(
        self, key: str, write: Callable[[Path], object], place: Callable[[Path, Path], None], action: str = "write"
    ) -> None:
        """`write` the object's content into a temporary beside it, then `place` that at the
        object's path; a failed write removes its temporary (the space it took) and leaves the
        object as it was, saying so in one line."""
        final = self.path(key)
        staging: Path | None = None
        try:
            staging = self.staging_path(final)
            write(staging)
            place(staging, final)
        except OSError as exc:
            if staging is not None:
                staging.unlink(missing_ok=True)
            cause = disk_full_cause(exc)
            if cause is not None:
                raise disk_full_error(
                    cause, final.parent, self.uri_for(key), "the object there before, if any, is intact"
                ) from exc
            raise StoreError(f"{self.uri_for(key)}: cannot {action} ({exc.strerror or exc})") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        self.write_staged(key, lambda staging: staging.write_bytes(data), os.replace)

    def get_bytes(self, key: str, *, sha256: str | None = None) -> bytes:
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{self.uri_for(key)}: no such object") from None
        except OSError as exc:
            raise StoreError(f"{self.uri_for(key)}: cannot read ({exc.strerror or exc})") from exc
        return self.verify(key, data, sha256)

    def put_file(self, key: str, path: Path) -> None:
        self.write_staged(key, lambda staging: shutil.copyfile(path, staging), os.replace)

    def get_file(self, key: str, path: Path, *, sha256: str | None = None) -> Path:
        source = self.path(key)
        if not source.is_file():
            raise StoreError(f"{self.uri_for(key)}: no such object")
        if sha256 is not None and sha256_file(source) != sha256:
            raise ChecksumMismatch(f"{self.uri_for(key)}: checksum mismatch (object corrupt)")
        shutil.copyfile(source, path)
        return path

    def info(self, key: str) -> ObjectInfo | None:
        path = self.path(key)
        if not path.is_file():
            return None
        return ObjectInfo(key, path.stat().st_size, sha256_file(path))

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                keys.append(path.relative_to(self.root).as_posix())
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def publish(self, key: str, data: bytes) -> bool:
        created = False

        def link_once(staging: Path, final: Path) -> None:
            nonlocal created
            try:
                os.link(staging, final)  # fails if `final` exists: create-if-absent, atomically
                created = True
            except FileExistsError:
                pass
            finally:
                staging.unlink(missing_ok=True)

        self.write_staged(key, lambda staging: staging.write_bytes(data), link_once, "publish")
        return created

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Serialise the conditional changes of one file. A path has no compare-and-swap: a
        check then a rename or unlink lets two callers act on the same thing they checked, and
        moving a file away to inspect it leaves a gap where a third creates one. An flock on a
        sidecar `.<name>.guard` makes check-and-act one step, and the kernel releases it when
        its holder exits, however it exits, so nothing stale is left behind. Creation needs no
        guard: it succeeds only where no file is, and a guarded change acts only on one that is."""
        import fcntl

        final = self.path(key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(final.parent / f".{final.name}.guard", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"{self.uri_for(key)}: cannot lock ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # others hold it for a read and a rename
            yield
        finally:
            os.close(descriptor)  # releases the flock

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self.path(key).read_bytes()  # files are replaced whole (rename), never in place
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.uri_for(key)}: cannot read ({exc.strerror or exc})") from exc
        return data, sha256_hex(data)

    def create_versioned(self, key: str, data: bytes) -> str | None:
        return sha256_hex(data) if self.publish(key, data) else None

    def replace_if(self, key: str, data: bytes, version: str) -> str | None:
        with self.exclusive(key):
            current = self.read_versioned(key)
            if current is None or current[1] != version:
                return None
            self.put_bytes(key, data)  # renamed over it: a reader sees the old or the new, whole
        return sha256_hex(data)

    def delete_if(self, key: str, version: str) -> bool:
        with self.exclusive(key):
            current = self.read_versioned(key)
            if current is None or current[1] != version:
                return False
            try:
                self.path(key).unlink()
            except OSError as exc:
                raise StoreError(f"{self.uri_for(key)}: cannot delete ({exc.strerror or exc})") from exc
        return True


def s3_client_config() -> Any:
    from botocore.config import Config

    return Config(
        retries={
            "mode": "standard",
            "max_attempts": int(os.environ.get("GENIMG_S3_MAX_ATTEMPTS", "5")),
        },
        connect_timeout=float(os.environ.get("GENIMG_S3_CONNECT_TIMEOUT", "5")),
        read_timeout=float(os.environ.get("GENIMG_S3_READ_TIMEOUT", "60")),
    )


def describe_boto_error(exc: Exception) -> str:
    """A short cause without request ids or credentials (botocore never prints secrets, but
    some messages echo the access key id; keep the code and message only)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        code = error.get("Code", "error")
        message = error.get("Message", "")
        return f"{code}: {message}" if message else str(code)
    text = str(exc)
    return re.sub(r"AKIA[0-9A-Z]{12,}", "AKIA…", text)


class S3Store(ObjectStore):
    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig

        if len(bucket) < 3:
            raise StoreError(f"invalid S3 bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = client or boto3.client("s3", config=s3_client_config())
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)

    def object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def wrap(self, key: str, action: str, exc: Exception) -> StoreError:
        return StoreError(f"{self.uri_for(key)}: cannot {action} ({describe_boto_error(exc)})")

    def put_bytes(self, key: str, data: bytes) -> None:
        self.upload(key, io.BytesIO(data), sha256_hex(data))

    def upload(self, key: str, stream: Any, digest: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.upload_fileobj(
                stream,
                self.bucket,
                self.object_key(key),
                ExtraArgs={"Metadata": {SHA256_METADATA: digest}},
                Config=self.transfer,
            )
        except (BotoCoreError, ClientError) as exc:
            raise self.wrap(key, "write", exc) from exc
        except Exception as exc:  # s3transfer wraps failures in its own types
            raise self.wrap(key, "write", exc) from exc

    def get_bytes(self, key: str, *, sha256: str | None = None) -> bytes:
        buffer = io.BytesIO()
        self.download(key, buffer)
        return self.verify(key, buffer.getvalue(), sha256)

    def download(self, key: str, stream: Any) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.download_fileobj(self.bucket, self.object_key(key), stream, Config=self.transfer)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("404", "NoSuchKey"):
                raise StoreError(f"{self.uri_for(key)}: no such object") from None
            raise self.wrap(key, "read", exc) from exc
        except Exception as exc:
            raise self.wrap(key, "read", exc) from exc

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as handle:
            self.upload(key, handle, sha256_file(path))

    def get_file(self, key: str, path: Path, *, sha256: str | None = None) -> Path:
        with open(path, "wb") as handle:
            self.download(key, handle)
        if sha256 is not None and sha256_file(path) != sha256:
            path.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{self.uri_for(key)}: checksum mismatch (object corrupt)")
        return path

    def info(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self.wrap(key, "read", exc) from exc
        except BotoCoreError as exc:
            raise self.wrap(key, "read", exc) from exc
        return ObjectInfo(key, int(head["ContentLength"]), head.get("Metadata", {}).get(SHA256_METADATA))

    def list(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Contents", []):
                    keys.append(item["Key"][len(self.prefix) + 1 :] if self.prefix else item["Key"])
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"{self.uri_for(prefix)}: cannot list ({describe_boto_error(exc)})") from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self.wrap(key, "delete", exc) from exc

    def publish(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            # A conditional PUT: S3 (since 2024), MinIO and moto refuse it if the key exists.
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.object_key(key),
                Body=data,
                IfNoneMatch="*",
                Metadata={SHA256_METADATA: sha256_hex(data)},
            )
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise self.wrap(key, "publish", exc) from exc
        except BotoCoreError as exc:
            raise self.wrap(key, "publish", exc) from exc

    # Conditional requests (If-Match / If-None-Match on PUT and DELETE: S3 since 2024, MinIO,
    # moto) are decided by the server, so of several racing callers exactly one succeeds.

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
            return response["Body"].read(), str(response["ETag"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None
            raise self.wrap(key, "read", exc) from exc
        except BotoCoreError as exc:
            raise self.wrap(key, "read", exc) from exc

    def create_versioned(self, key: str, data: bytes) -> str | None:
        return self.conditional_put(key, data, IfNoneMatch="*")

    def replace_if(self, key: str, data: bytes, version: str) -> str | None:
        return self.conditional_put(key, data, IfMatch=version)

    def conditional_put(self, key: str, data: bytes, **condition: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=self.object_key(key),
                Body=data,
                Metadata={SHA256_METADATA: sha256_hex(data)},
                **condition,
            )
            return str(response["ETag"])
        except ClientError as exc:
            if condition_failed(exc):
                return None
            raise self.wrap(key, "write", exc) from exc
        except BotoCoreError as exc:
            raise self.wrap(key, "write", exc) from exc

    def delete_if(self, key: str, version: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key), IfMatch=version)
            return True
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise self.wrap(key, "delete", exc) from exc
        except BotoCoreError as exc:
            raise self.wrap(key, "delete", exc) from exc


def condition_failed(exc: Any) -> bool:
    """A conditional request refused: the object changed (412), another conditional write to it
    was in flight (409), or it vanished (404 on If-Match)."""
    return exc.response.get("Error", {}).get("Code") in (
        "PreconditionFailed",
        "412",
        "ConditionalRequestConflict",
        "409",
        "NoSuchKey",
        "404",
    )


def default_store_uri() -> str:
    return os.environ.get("GENIMG_STORE") or (genimg_home() / "store").as_uri()


def local_path(uri: str) -> Path:
    """The folder or file a file:// URI names, percent-decoded (`Path.as_uri` encodes a space as
    %20 and ü as %C3%BC; read back undecoded, they would name a sibling folder)."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise StoreError(f"not a file:// URI: {uri!r}")
    return Path(unquote(parsed.path))


def open_store(uri: str | None = None) -> ObjectStore:
    """The store at `uri` (default: `GENIMG_STORE`, else `file://$GENIMG_HOME/store`)."""
    uri = uri or default_store_uri()
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if "@" in parsed.netloc:
            # The URI is not repeated: it holds a secret.
            raise StoreError(
                "the store URI carries credentials (s3://KEY:SECRET@bucket/…): give the bucket "
                "alone (s3://bucket/prefix) and the keys in AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY (or any source boto3 reads)"
            )
        if not parsed.netloc:
            raise StoreError(f"invalid store URI {uri!r}: expected s3://bucket[/prefix]")
        return S3Store(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        return LocalStore(local_path(uri))
    if parsed.scheme == "" and uri:
        return LocalStore(Path(uri).expanduser())
    raise StoreError(f"unsupported store URI {uri!r} (expected file://… or s3://…)")


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StoreError(f"invalid S3 URI {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


@dataclass
class DownloadedSource:
    """An s3:// source copied to a local temporary folder, with a map back to its URIs."""

    local_path: Path
    uri: str
    directory: tempfile.TemporaryDirectory[str]

    def original_name(self, local_item: str) -> str:
        base = str(self.local_path)
        return self.uri + local_item[len(base) :] if local_item.startswith(base) else local_item

    def cleanup(self) -> None:
        self.directory.cleanup()


def s3_listing(uri: str) -> list[tuple[str, int, str]]:
    """(key, size, ETag) of every object under an s3:// prefix: what changes when its content does."""
    bucket, prefix = split_s3_uri(uri)
    store = S3Store(bucket)
    listing = []
    for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        listing += [(item["Key"], int(item["Size"]), str(item["ETag"])) for item in page.get("Contents", [])]
    return listing


def download_s3_source(uri: str) -> DownloadedSource:
    """Copy an s3:// object, or every object under an s3:// prefix, to a temporary folder."""
    bucket, key = split_s3_uri(uri)
    store = S3Store(bucket)
    directory = tempfile.TemporaryDirectory(prefix="genimg-source-")
    root = Path(directory.name)
    try:
        if key and not key.endswith("/") and raw_exists(store, key):
            target = root / Path(key).name
            try:
                store.client.download_file(bucket, key, str(target), Config=store.transfer)
            except Exception as exc:
                raise StoreError(f"{uri}: cannot read ({describe_boto_error(exc)})") from exc
            return DownloadedSource(target, uri, directory)
        prefix = key.rstrip("/") + "/" if key else ""
        keys = store_list_raw(store, prefix)
        if not keys:
            raise StoreError(f"{uri}: no such object or prefix (empty source)")
        local_root = root / "source"
        for object_key in keys:
            target = local_root / object_key[len(prefix) :]
            if ".." in Path(object_key[len(prefix) :]).parts:
                continue  # a key that would escape the folder is no file of this source
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                store.client.download_file(bucket, object_key, str(target), Config=store.transfer)
            except Exception as exc:
                raise StoreError(f"s3://{bucket}/{object_key}: cannot read ({describe_boto_error(exc)})") from exc
        return DownloadedSource(local_root, uri.rstrip("/"), directory)
    except BaseException:
        directory.cleanup()
        raise


def raw_exists(store: S3Store, key: str) -> bool:
    """Whether a source object exists (source keys may hold any characters: no key checks)."""
    from botocore.exceptions import ClientError

    try:
        store.client.head_object(Bucket=store.bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise StoreError(f"s3://{store.bucket}/{key}: cannot read ({describe_boto_error(exc)})") from exc
    except Exception as exc:
        raise StoreError(f"s3://{store.bucket}/{key}: cannot read ({describe_boto_error(exc)})") from exc


def store_list_raw(store: S3Store, prefix: str) -> list[str]:
    """Keys under a raw prefix of a source bucket."""
    keys = []
    try:
        pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix)
        for page in pages:
            keys += [item["Key"] for item in page.get("Contents", []) if not item["Key"].endswith("/")]
    except Exception as exc:
        raise StoreError(f"s3://{store.bucket}/{prefix}: cannot list ({describe_boto_error(exc)})") from exc
    return sorted(keys)
