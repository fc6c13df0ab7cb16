"""The transport under the C ``safe_open`` for URLs: ``open_source`` gives the
byte source it reads through (``read_many``), ``save_to_url`` uploads.

One request path per kind: http(s) with ``http.client``, s3 with botocore (or
s3fs's own client), any other fsspec filesystem with ``cat_file``. Opening pins
the object (size, ETag/version); every ranged read is conditional on the pin,
checked against it, retried, bounded by ``timeout``/``deadline`` and read
straight into the destinations. Knobs and rules: docs/remote.md.
"""

import _thread
import ctypes
import errno
import http.client
import itertools
import os
import queue
import re
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from . import _safetensors_c
from ._safetensors_c import SafetensorError, SafetensorIOError, TensorSpec, _write_layout

__all__ = ["open_source", "save_to_url", "RemoteObjectChangedError", "RemoteTimeoutError", "RemoteConnectionError",
           "is_remote", "local_path", "DEFAULTS"]

MiB = 1 << 20

# Defaults of the knobs (each can also be given to safe_open/load_file).
DEFAULTS = {
    "chunk_size": 16 * MiB,   # bytes per ranged GET
    "concurrency": 16,        # GETs in flight (threads)
    "head_bytes": 1 * MiB,    # speculative first read: length prefix + header (+ first tensors)
    "retries": 4,             # extra attempts for a transient failure
    "backoff": 0.1,           # first retry delay, seconds; doubles, capped at 2 s
    "timeout": 60.0,          # seconds one request may take in all: connect, headers and body
    "deadline": None,         # seconds one load (open, or one tensor read call) may take, retries included
    "part_size": 16 * MiB,    # upload part size for save_file to a URL
    "direct": True,           # s3: own botocore requests reading into tensors (False: s3fs's)
}


class RemoteObjectChangedError(SafetensorIOError):
    """The remote object changed (ETag/version) after it was opened."""


class RemoteTimeoutError(SafetensorIOError, TimeoutError):
    """A request ran past ``timeout`` or a load past ``deadline``."""


class RemoteConnectionError(SafetensorIOError, ConnectionError):
    """A connection failed (reset, refused, closed early)."""


class _HTTPStatus(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Transient(Exception):
    """A failure worth retrying; .final is what to raise when retries run out."""

    def __init__(self, final: BaseException):
        super().__init__(str(final))
        self.final = final


class _Cancelled(Exception):
    """A read stopped because its _Cancel was set (never retried)."""


class _Cancel:
    """One load's stop signal, set once: its first failure, an interrupt, or
    the handle's close. Each request in flight registers an ``abort`` (shuts
    its socket down), so ``set()`` unblocks a read stalled in the kernel at
    once; transports check ``is_set()`` before each attempt and between body
    reads. ``limit`` (monotonic) is when the load's ``deadline`` passes."""

    def __init__(self, deadline: Optional[float] = None) -> None:
        # Only C-level lock calls: an interrupt landing inside threading.Event's
        # Python code (its Condition) can leave a lock held and hang the next
        # set() or unregister(). _gate is held until set() releases it once.
        self._lock = threading.Lock()
        self._gate = threading.Lock()
        self._gate.acquire()
        self._set = False
        self._aborts: List[Any] = []
        self.deadline = deadline
        self.limit = None if deadline is None else time.monotonic() + deadline

    def is_set(self) -> bool:
        return self._set

    def wait(self, seconds: float) -> bool:
        """Sleeps up to ``seconds``; True (at once) when set."""
        if self._gate.acquire(timeout=max(0.0, seconds)):
            self._gate.release()
            return True
        return self._set

    def set(self) -> None:
        """Sets it and calls each registered abort once. Safe to call again
        (an interrupt that cut this short): the aborts not yet called run then."""
        with self._lock:
            if not self._set:
                self._set = True
                self._gate.release()
        while True:
            with self._lock:
                if not self._aborts:
                    return
                abort = self._aborts.pop()
            try:
                abort()
            except Exception:  # noqa: BLE001 - a connection already gone is fine
                pass

    def register(self, abort) -> None:
        """Adds ``abort``; raises _Cancelled when already set."""
        with self._lock:
            if not self._set:
                self._aborts.append(abort)
                return
        raise _Cancelled()

    def unregister(self, abort) -> None:
        with self._lock:
            if abort in self._aborts:
                self._aborts.remove(abort)

    def late(self, url: str, what: str) -> RemoteTimeoutError:
        return RemoteTimeoutError(f"{url}: the load's deadline of {self.deadline} s passed ({what})")


def is_remote(target: Any) -> bool:
    """True for a URL with a scheme other than file://, or an fsspec file."""
    if isinstance(target, str):
        scheme, sep, _ = target.partition("://")
        return bool(sep) and scheme != "file" and scheme.replace("+", "").replace("-", "").isalnum()
    return hasattr(target, "fs") and hasattr(target, "path") and not isinstance(target, os.PathLike)


def local_path(target: Any) -> Any:
    """file:// URLs become plain paths; anything else is returned as is."""
    if isinstance(target, str) and target.startswith("file://"):
        return target[len("file://"):]
    return target


def _status_of(exc: BaseException) -> Optional[int]:
    """The HTTP status of a failure: ours (_HTTPStatus), or botocore's, also as
    the cause of the OSError s3fs raises (S3's PreconditionFailed: 412)."""
    if isinstance(getattr(exc, "status", None), int):
        return exc.status
    for error in (exc, exc.__cause__):
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            if response.get("Error", {}).get("Code") == "PreconditionFailed":
                return 412
            return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _open_error(kind: str, number: int, url: str) -> OSError:
    """What opening a local file raises (the extension's type, upstream's
    text, errno, strerror and filename), naming the URL."""
    exc = getattr(_safetensors_c, kind)(f"{os.strerror(number)}: {url}")
    exc.errno, exc.strerror, exc.filename = number, os.strerror(number), url
    return exc


def _classify(exc: BaseException, url: str, what: str) -> BaseException:
    """The exception to raise for a transport failure, naming the URL:
    SafetensorIOError or a subclass (RemoteTimeoutError, RemoteConnectionError
    are also TimeoutError, ConnectionError), FileNotFoundError or
    PermissionError; a retryable one wrapped in _Transient."""
    if isinstance(exc, (SafetensorError, _Transient, _Cancelled)):
        return exc
    name = type(exc).__name__
    if isinstance(exc, PermissionError):
        return exc if url in str(exc) else PermissionError(f"{url}: {what} failed: {name}: {exc}")
    status = _status_of(exc)
    if status == 404 or isinstance(exc, FileNotFoundError):
        return _open_error("FileNotFoundError", errno.ENOENT, url)
    if status in (401, 403):
        return PermissionError(f"{url}: access denied, HTTP {status} ({what})")
    if status == 412:
        return RemoteObjectChangedError(f"{url}: the object changed since it was opened ({what})")
    if status is not None and status >= 400:
        error = SafetensorIOError(f"{url}: HTTP {status} ({what}): {exc}")
        return _Transient(error) if status in (408, 429) or status >= 500 else error
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return _Transient(RemoteTimeoutError(f"{url}: {what} failed: timed out ({name})"))
    if isinstance(exc, (OSError, EOFError, http.client.HTTPException)) or any(
        word in name for word in ("Connection", "Payload", "Disconnected", "Protocol", "Incomplete")
    ):
        return _Transient(RemoteConnectionError(f"{url}: {what} failed: connection failed: {name}: {exc}"))
    return SafetensorIOError(f"{url}: {what} failed: {name}: {exc}")


_SECRETS = ("authorization", "proxy-authorization", "cookie")


def _origin(url: str) -> Tuple[str, str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


def _follow(first: str, current: str, location: str, headers: Dict[str, str]) -> Tuple[str, Dict[str, str]]:
    """The next URL of a redirect and the headers to send there: only http(s),
    never https -> http, and no credentials (Authorization,
    Proxy-Authorization, Cookie) to an origin other than the first URL's."""
    from urllib.parse import urljoin

    target = urljoin(current, location)
    scheme = _origin(target)[0]
    if scheme not in ("http", "https"):
        raise SafetensorIOError(f"{first}: refused a redirect to {target!r} (not http or https)")
    if _origin(current)[0] == "https" and scheme == "http":
        raise SafetensorIOError(f"{first}: refused a redirect from https to plain http ({target!r})")
    if _origin(target) != _origin(first):
        headers = {k: v for k, v in headers.items() if k.lower() not in _SECRETS}
    return target, headers


def _length_of(value: Optional[str], url: str, what: str) -> Optional[int]:
    """A Content-Length header as an int (None when absent); anything but
    digits is an error naming the URL."""
    if value is None:
        return None
    if not (value.strip().isascii() and value.strip().isdigit()):
        raise SafetensorIOError(f"{url}: invalid Content-Length {value!r} ({what})")
    return int(value)


_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", re.ASCII | re.IGNORECASE)


def _content_range(value: Optional[str]) -> Optional[Tuple[Optional[int], Optional[int], Optional[int]]]:
    """'bytes A-B/T' as (A, B, T), 'bytes */T' as (None, None, T), a '*' total
    as None; None when malformed."""
    match = _RANGE.fullmatch((value or "").strip())
    if match is None:
        return None
    first, last, total = (None if group in (None, "*") else int(group) for group in match.groups())
    return None if first is not None and last < first else (first, last, total)


def _check_partial(url: str, content_range: Optional[str], start: int, end: int, size: Optional[int],
                   etag: Optional[str], got_etag: Optional[str], version: Optional[str] = None,
                   got_version: Optional[str] = None) -> None:
    """A 206 must be of the pinned object (ETag / VersionId when both sides
    have one, total size) and of exactly the bytes asked (Content-Range)."""
    what = f"bytes {start}-{end - 1}"
    parsed = _content_range(content_range)
    total = None if parsed is None else parsed[2]
    for got, pinned, shown in ((got_etag, etag, f"ETag {got_etag}"), (got_version, version, f"version {got_version}"),
                               (total, size, f"{total} bytes")):
        if got not in (None, "") and pinned not in (None, "") and got != pinned:
            raise RemoteObjectChangedError(
                f"{url}: the object changed since it was opened ({what}: {shown}, pinned {pinned})")
    if parsed is None or parsed[:2] != (start, end - 1) or parsed[2] is None:
        raise SafetensorIOError(
            f"{url}: asked {what}, the server answered Content-Range {content_range!r} "
            f"(expected 'bytes {start}-{end - 1}/{size}')")


def _size_from_first(url: str, status: int, header, count: int) -> Tuple[int, int]:
    """(size, bytes to read) from the answer to a GET of bytes 0..count-1,
    checked before its body is read: the size is Content-Range's total, the
    body must be bytes 0..min(count, size)-1. An empty object: 416, or 200
    with no body (nginx)."""
    content_range = header("Content-Range")
    parsed = _content_range(content_range)
    if status == 416 and parsed is not None and parsed[2] is not None:
        return parsed[2], 0
    if status == 200 and _length_of(header("Content-Length"), url, "GET") == 0:
        return 0, 0
    if status != 206 or parsed is None or parsed[2] is None or parsed[:2] != (0, min(count, parsed[2]) - 1):
        raise SafetensorIOError(
            f"{url}: a GET of bytes 0-{count - 1} answered HTTP {status} with Content-Range {content_range!r}: "
            "the size is unknown (the server must honour Range)")
    return parsed[2], parsed[1] + 1


def _scatter(data: memoryview, start: int, end: int, targets) -> None:
    """Bytes [start, end) of the object into the destinations (file start, file end, memory) they cover."""
    for t_start, t_end, dest in targets:
        a, b = max(start, t_start), min(end, t_end)
        if a < b:
            dest[a - t_start:b - t_start] = data[a - start:b - start]


def _fill(url: str, data: bytes, start: int, end: int, targets) -> None:
    """A whole body into the targets; another length than asked is transient."""
    if len(data) != end - start:
        raise _Transient(SafetensorIOError(
            f"{url}: truncated response: asked bytes {start}-{end - 1}, got {len(data)} bytes"))
    _scatter(memoryview(data), start, end, targets)


def _stream_into(read_into, start: int, end: int, targets, url: str, check) -> None:
    """Reads a body of end - start bytes straight into the targets' memory
    with read_into(memoryview) -> count (socket reads: GIL released);
    ``check()`` (cancel, deadline) runs before each read."""
    for t_start, t_end, dest in targets:
        a, b = max(start, t_start), min(end, t_end)
        view = dest[a - t_start:b - t_start]
        got = 0
        while got < len(view):
            check()
            n = read_into(view[got:])
            if not n:
                check()   # a socket shut down by cancel or deadline reads as EOF
                raise _Transient(SafetensorIOError(
                    f"{url}: truncated response: bytes {start}-{end - 1} ended {end - a - got} bytes early"))
            got += n


class _Guard:
    """Bounds one request in flight (connect, headers, body): at ``until``
    (``timeout`` from now, or the load's deadline when sooner) or when
    ``cancel`` is set, the socket of ``target`` (a connection with ``.sock``,
    set once known) is shut down, which ends any read stalled in the kernel or
    fed a byte at a time; the request then raises _Cancelled or a timeout."""

    def __init__(self, url: str, what: str, timeout: float, cancel: _Cancel):
        now = time.monotonic()
        self.url, self.what, self.timeout, self.cancel = url, what, timeout, cancel
        self.until = now + timeout if cancel.limit is None else min(now + timeout, cancel.limit)
        self.target: Any = None
        self._lock = threading.Lock()
        self._live = True
        self._timer = threading.Timer(max(0.0, self.until - now), self.abort)
        self._timer.daemon = True

    def __enter__(self):
        self.cancel.register(self.abort)
        self._timer.start()
        return self

    def __exit__(self, kind, exc, tb):
        with self._lock:
            self._live = False
        self._timer.cancel()
        self.cancel.unregister(self.abort)
        if exc is None or isinstance(exc, (_Cancelled, SafetensorError)) or not isinstance(exc, Exception):
            return False
        if self.cancel.is_set():
            raise _Cancelled() from exc
        if time.monotonic() >= self.until:
            raise self.expired() from exc
        return False

    def _socket(self) -> Optional[socket.socket]:
        sock = getattr(self.target, "sock", None)
        return sock if isinstance(sock, socket.socket) else None

    def abort(self) -> None:
        with self._lock:
            sock = self._socket()
            if self._live and sock is not None:
                try:   # the plain socket's shutdown: also under an SSL wrapper
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def expired(self) -> _Transient:
        return _Transient(RemoteTimeoutError(
            f"{self.url}: timed out: a request may take {self.timeout} s in all ({self.what})"))

    def check(self) -> None:
        """Between reads: stops a cancelled or late request; gives the socket
        the time left as its timeout."""
        if self.cancel.is_set():
            raise _Cancelled()
        left = self.until - time.monotonic()
        if left <= 0:
            raise self.expired()
        sock = self._socket()
        if sock is not None:
            sock.settimeout(left)


# --- the request paths: info(count, cancel) -> {"size", "ETag", "VersionId",
# "head": the first count bytes, where they came along} (fsspec's info dict
# for _FS); get_into(start, end, targets, cancel) of the object pinned by the
# caller (.size, .etag, .version, set after info) ---

def _resolve(target: Any, storage_options: Optional[dict]):
    """(filesystem, path, URL naming it) of a URL or an fsspec file object."""
    if not isinstance(target, str):
        fs, path = target.fs, target.path
        return fs, path, fs.unstrip_protocol(path) if hasattr(fs, "unstrip_protocol") else path
    try:
        import fsspec
    except ImportError:
        raise ImportError(
            f"Reading {target!r} needs the optional dependency fsspec (and the filesystem package for "
            "its scheme, e.g. s3fs for s3://, gcsfs for gs://): pip install fsspec s3fs"
        ) from None
    try:
        return (*fsspec.core.url_to_fs(target, **(storage_options or {})), target)
    except ImportError as e:
        raise ImportError(f"Reading {target!r} needs a filesystem package fsspec could not import: {e}") from e
    except ValueError as e:
        if "Protocol not known" in str(e):
            raise ValueError(f"{target!r}: fsspec knows no filesystem for this scheme ({e})") from e
        raise


def _transport(target: Any, storage_options: Optional[dict], timeout: float, concurrency: int, direct: bool):
    if isinstance(target, str) and target.split("://", 1)[0].lower() in ("http", "https"):
        return _HTTP(target, storage_options, timeout)   # no fsspec needed
    fs, path, url = _resolve(target, storage_options)
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if "http" in protocols or "https" in protocols:   # an fsspec file object of an http(s) URL
        return _HTTP(path, {**fs.kwargs, **({"client_kwargs": fs.client_kwargs} if fs.client_kwargs else {})},
                     timeout)
    if hasattr(fs, "_call_s3"):
        return _S3.build(fs, path, url, concurrency, timeout, direct)
    return _FS(fs, path, url)


class _HTTP:
    """HTTP(S) ranged GETs with http.client: one keep-alive connection per
    thread and host, bodies read straight into tensor memory."""

    def __init__(self, url: str, storage_options: Optional[dict], timeout: float):
        unknown = sorted(set(storage_options or {}) - {"headers"})
        if unknown:
            raise ValueError(f"{url}: http(s) URLs are read with http.client, which takes storage_options "
                             f"'headers' only, not {unknown} (credentials: headers={{'Authorization': ...}})")
        self.url, self.timeout = url, timeout
        self.headers = {**((storage_options or {}).get("headers") or {}), "Accept-Encoding": "identity"}
        self.size = self.etag = self.version = None
        self._local = threading.local()

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        pool = self._local.__dict__.setdefault("pool", {})
        key = (os.getpid(), scheme, netloc)   # a forked child opens its own
        if key not in pool:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            pool[key] = cls(netloc, timeout=self.timeout)
        return pool[key]

    def _call(self, method: str, headers: Dict[str, str], what: str, cancel: _Cancel, read):
        """``read(response, guard)`` of the answer, after following up to 5
        redirects (_follow's rules); 4xx/5xx but 416 raise _HTTPStatus. On any failure
        the connection is closed (the next request opens it again)."""
        from urllib.parse import urlsplit

        url, sent = self.url, {**self.headers, **headers}
        with _Guard(self.url, what, self.timeout, cancel) as guard:
            for _ in range(6):
                parts = urlsplit(url)
                conn = guard.target = self._connection(parts.scheme, parts.netloc)
                try:
                    guard.check()
                    if conn.sock is None:
                        conn.timeout = max(0.001, guard.until - time.monotonic())
                        conn.connect()
                        guard.check()
                    conn.request(method, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                                 headers=sent)
                    response = conn.getresponse()
                    location = response.getheader("Location")
                    if response.status in (301, 302, 303, 307, 308) and location:
                        response.read()
                        url, sent = _follow(self.url, url, location, sent)
                        continue
                    if response.status >= 400 and response.status != 416:   # 416: read() sees it
                        response.read()
                        raise _HTTPStatus(response.status, f"HTTP {response.status} {response.reason}")
                    return read(response, guard)
                except BaseException:
                    conn.close()
                    raise
        raise SafetensorIOError(f"{self.url}: too many redirects")

    def _body(self, response, start: int, end: int, targets, guard: _Guard) -> None:
        """The body, exactly bytes [start, end), into the targets."""
        what = f"bytes {start}-{end - 1}"
        length = _length_of(response.getheader("Content-Length"), self.url, what)
        if length is not None and length != end - start:
            raise _Transient(SafetensorIOError(f"{self.url}: truncated response: asked {what}, got {length} bytes"))
        # No Content-Length: a chunked (or close-delimited) body, read to the length asked.
        _stream_into(response.readinto, start, end, targets, self.url, guard.check)
        if length is None and response.read(1):
            raise SafetensorIOError(f"{self.url}: asked {what}, the body went on past {end - start} bytes")

    def info(self, count: int, cancel: _Cancel) -> Dict[str, Any]:
        """Size and ETag from the answer to a GET of the first ``count``
        bytes, which are the head (no HEAD request: servers with presigned
        GET URLs refuse it)."""
        def first_bytes(response, guard):
            size, want = _size_from_first(self.url, response.status, response.getheader, count)
            head = bytearray(want)
            if want:
                self._body(response, 0, want, [(0, want, memoryview(head))], guard)
            else:
                response.read()   # the object is empty: what a 416 says
            return {"size": size, "ETag": response.getheader("ETag"), "head": head}

        return self._call("GET", {"Range": f"bytes=0-{count - 1}"}, "GET of the first bytes", cancel, first_bytes)

    def get_into(self, start: int, end: int, targets, cancel: _Cancel) -> None:
        what = f"bytes {start}-{end - 1}"

        def read(response, guard):
            if response.status != 206:
                raise SafetensorIOError(
                    f"{self.url}: asked {what}, the server answered HTTP {response.status} (it must honour Range)")
            _check_partial(self.url, response.getheader("Content-Range"), start, end, self.size, self.etag,
                           response.getheader("ETag"))
            self._body(response, start, end, targets, guard)

        headers = {"Range": f"bytes={start}-{end - 1}", **({"If-Match": self.etag} if self.etag else {})}
        self._call("GET", headers, what, cancel, read)


class _S3:
    """S3 ranged GETs through a botocore client built from the s3fs
    filesystem's settings (thread-safe, a pool of ``concurrency``
    connections, bodies read straight into tensor memory); through s3fs's own
    client (``fs``, bodies copied once) with ``direct=False`` or settings the
    botocore client does not map (extra ``client_kwargs``, a custom session,
    requester-pays). Every answer is checked against the pin either way."""

    def __init__(self, url: str, timeout: float, bucket: str, key: str, version: Optional[str] = None,
                 client=None, fs=None):
        self.url, self.timeout, self.bucket, self.key, self.client, self.fs = url, timeout, bucket, key, client, fs
        self.size, self.etag, self.version = None, None, version

    @classmethod
    def build(cls, fs, path: str, url: str, concurrency: int, timeout: float, direct: bool) -> "_S3":
        self = cls(url, timeout, *fs.split_path(path), fs=fs)
        client_kwargs = dict(getattr(fs, "client_kwargs", {}) or {})
        endpoint = getattr(fs, "endpoint_url", None) or client_kwargs.pop("endpoint_url", None)
        region = client_kwargs.pop("region_name", None)
        if not direct or client_kwargs or getattr(fs, "requester_pays", False) or getattr(fs, "session", None):
            return self
        import botocore.session
        from botocore import UNSIGNED
        from botocore.config import Config

        if region is None:
            try:
                region = self._s3fs(fs._get_s3, self.bucket).meta.region_name
            except Exception:  # noqa: BLE001 - the configured or default region then
                region = None
        config = dict(getattr(fs, "config_kwargs", {}) or {})
        config.update(max_pool_connections=max(10, concurrency), read_timeout=timeout, connect_timeout=timeout,
                      retries={"max_attempts": 1})
        if getattr(fs, "anon", False):
            config["signature_version"] = UNSIGNED
        session = botocore.session.Session(profile=getattr(fs, "profile", None))
        self.client = session.create_client(
            "s3", region_name=region or session.get_config_variable("region") or "us-east-1",
            endpoint_url=endpoint, aws_access_key_id=getattr(fs, "key", None),
            aws_secret_access_key=getattr(fs, "secret", None), aws_session_token=getattr(fs, "token", None),
            config=Config(**config))
        return self

    def _s3fs(self, coroutine, *args, **kwargs):
        """A coroutine function of s3fs run on its loop, bounded by timeout."""
        from fsspec.asyn import sync

        return sync(self.fs.loop, coroutine, *args, timeout=self.timeout, **kwargs)

    def _object(self, **more) -> Dict[str, Any]:
        """The request's arguments: the object (its pinned version), and ``more``."""
        return {"Bucket": self.bucket, "Key": self.key, **({"VersionId": self.version} if self.version else {}), **more}

    def info(self, count: int, cancel: _Cancel) -> Dict[str, Any]:
        if self.client is not None:
            head = self.client.head_object(**self._object())
        else:
            head = self._s3fs(self.fs._call_s3, "head_object", **self._object())
        return {"size": head.get("ContentLength"), "ETag": head.get("ETag"),
                "VersionId": head.get("VersionId") or self.version}

    def _check(self, response, start: int, end: int) -> None:
        _check_partial(self.url, response.get("ContentRange"), start, end, self.size, self.etag, response.get("ETag"),
                       self.version, response.get("VersionId"))
        if response.get("ContentLength") != end - start:
            raise _Transient(SafetensorIOError(
                f"{self.url}: asked bytes {start}-{end - 1}, got {response.get('ContentLength')} bytes"))

    def get_into(self, start: int, end: int, targets, cancel: _Cancel) -> None:
        kwargs = self._object(Range=f"bytes={start}-{end - 1}", **({"IfMatch": self.etag} if self.etag else {}))
        if self.client is None:
            async def get():
                response = await self.fs._call_s3("get_object", **kwargs)
                try:
                    self._check(response, start, end)
                    return await response["Body"].read()
                finally:
                    response["Body"].close()

            _fill(self.url, self._s3fs(get), start, end, targets)
            return
        # The headers are bounded by botocore's socket timeouts; from the body
        # on, the guard bounds the request and cancel shuts its socket down.
        with _Guard(self.url, f"bytes {start}-{end - 1}", self.timeout, cancel) as guard:
            response = self.client.get_object(**kwargs)
            body = response["Body"]
            raw = body._raw_stream   # urllib3's response: readinto, .connection.sock
            guard.target = getattr(raw, "connection", None)
            try:
                self._check(response, start, end)
                _stream_into(raw.readinto, start, end, targets, self.url, guard.check)
            finally:
                body.close()


class _FS:
    """Any other fsspec filesystem (gs, az, hf, memory, ...): ``info`` and
    ``cat_file``, bounded by the filesystem's own settings."""

    def __init__(self, fs, path: str, url: str):
        self.fs, self.path, self.url = fs, path, url
        self.size = self.etag = self.version = None
        getattr(fs, "invalidate_cache", lambda path: None)(path)   # a listing from before may be stale

    def info(self, count: int, cancel: _Cancel) -> Dict[str, Any]:
        return self.fs.info(self.path)

    def get_into(self, start: int, end: int, targets, cancel: _Cancel) -> None:
        _fill(self.url, self.fs.cat_file(self.path, start=start, end=end), start, end, targets)


def _run_all(work, items, cancel: _Cancel, threads: int) -> None:
    """Runs ``work(*item)`` for every item on up to ``threads`` threads of its
    own; returns once all succeeded. Otherwise (an item failed, the caller was
    interrupted, or ``cancel`` was set from outside: close) it sets ``cancel``
    (a failing item at once, in its own thread), so no item starts any more
    and the running ones stop, waits until none runs -- further interrupts
    cannot cut that wait short: a running item may still write into memory
    the caller frees next -- and raises what interrupted the caller, else the
    first failure, else _Cancelled. The caller's thread makes only C-level
    calls (thread start, Lock, SimpleQueue): an interrupt cannot leave one of
    its locks held (concurrent.futures' submit and wait can, and deadlock)."""
    lock = threading.Lock()
    woken = queue.SimpleQueue()   # a token after each item and on cancel
    todo = queue.SimpleQueue()
    state = {"running": 0, "done": 0}
    failures: List[BaseException] = []

    def run(item):
        with lock:
            started = not cancel.is_set()
            state["running"] += started
        try:
            if started:
                work(*item)
                with lock:
                    state["done"] += 1
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            failures.append(e)
            cancel.set()
        finally:
            with lock:
                state["running"] -= started
            woken.put(None)

    def worker():
        while True:
            try:
                run(todo.get_nowait())
            except queue.Empty:
                return

    raised = None
    try:
        cancel.register(lambda: woken.put(None))
        for item in items:
            todo.put(item)
        for _ in range(min(threads, len(items))):
            _thread.start_new_thread(worker, ())
        while True:
            with lock:
                if state["done"] == len(items):
                    return
                if failures or cancel.is_set():
                    break
            woken.get()
    except BaseException as e:  # noqa: BLE001 - an interrupt, a thread that could not start, or closed
        raised = e
    while True:
        try:
            cancel.set()
            with lock:
                if not state["running"]:
                    break
            woken.get()
        except BaseException as e:  # noqa: BLE001 - a second interrupt: raised once all stopped, as the first
            raised = raised or e
    if raised is not None:
        raise raised
    raise next((e for e in failures if not isinstance(e, _Cancelled)), None) or _Cancelled()


# Two requests closer than this are read as one, the bytes between them into
# a scratch buffer: a strided slice asks for many small runs, and reading
# 64 KiB more costs less than another round trip (about 0.1 ms at 5 Gbit/s
# against a millisecond or more of latency).
GAP = 64 * 1024


def open_source(target: Any, storage_options: Optional[dict] = None, **knobs) -> "_Source":
    """The byte source ``safe_open`` reads a URL or fsspec file object through
    (registered with the C extension at import): ``size``, ``identity``
    (ETag / version, informational) and ``read_many(requests)``. ``knobs``:
    chunk_size, concurrency, head_bytes, retries, timeout, backoff, direct,
    deadline (docs/remote.md); None or absent means the default."""
    unknown = set(knobs) - (set(DEFAULTS) - {"part_size"})   # part_size: uploads only
    if unknown:
        raise TypeError(f"open_source() got unexpected keyword arguments {sorted(unknown)}")
    return _Source(target, storage_options, {k: v for k, v in knobs.items() if v is not None})


class _Source:
    """One remote object read for the C handle: opening pins it (size and
    ETag/version) and reads its first ``head_bytes`` speculatively (length
    prefix, header, often the first tensors), served from memory after."""

    def __init__(self, target: Any, storage_options: Optional[dict], knobs: Dict[str, Any]):
        pick = lambda name: knobs.get(name, DEFAULTS[name])  # noqa: E731
        self._chunk_size = max(1, int(pick("chunk_size")))
        self._concurrency = max(1, int(pick("concurrency")))
        self._retries, self._backoff = int(pick("retries")), float(pick("backoff"))
        self._deadline = pick("deadline")
        self._lock = threading.Lock()
        self._closed = False
        self._reads: set = set()   # the _Cancel of each read_many in flight
        self._io = _transport(target, storage_options, float(pick("timeout")), self._concurrency,
                              bool(pick("direct")))
        self.url = self._io.url
        count = max(8, int(pick("head_bytes")))
        info = self._retrying(self._io.info, "info", _Cancel(self._deadline), count)
        if info.get("type") == "directory":
            raise _open_error("IsADirectoryError", errno.EISDIR, self.url)
        if info.get("size") is None:
            raise SafetensorIOError(f"{self.url}: the server does not report the object's size")
        etag = info.get("ETag") or info.get("etag")
        self._io.size = self.size = int(info["size"])
        self._io.etag = None if etag and etag.startswith("W/") else etag   # If-Match compares strongly
        self._io.version = info.get("VersionId") or info.get("version_id")
        self.identity = self._io.etag or self._io.version
        head, count = info.get("head"), min(count, self.size)
        if head is None:
            head = bytearray(count)
            if count:
                self._fetch(0, count, [(0, count, memoryview(head))], _Cancel(self._deadline))
        self._head = bytes(head)

    def close(self) -> None:
        """Reads in flight stop (their read_many raises "File is closed"),
        nothing new starts."""
        with self._lock:
            self._closed = True
            reads = list(self._reads)
        for cancel in reads:
            cancel.set()

    def _retrying(self, call, what: str, cancel: _Cancel, *args):
        """call(*args, cancel), retried on a transient failure with backoff;
        never after ``cancel`` is set or past the load's deadline."""
        for attempt in itertools.count():
            if cancel.is_set():
                raise _Cancelled()
            if cancel.limit is not None and time.monotonic() >= cancel.limit:
                raise cancel.late(self.url, what)
            try:
                return call(*args, cancel)
            except Exception as e:  # noqa: BLE001 - classified below, re-raised
                if cancel.is_set():
                    raise _Cancelled() from e
                mapped = _classify(e, self.url, what)
                if not isinstance(mapped, _Transient):
                    if mapped is e:
                        raise
                    raise mapped from e
                if attempt >= self._retries:
                    raise mapped.final from e
                delay = min(2.0, self._backoff * (2 ** attempt))
                if cancel.limit is not None and time.monotonic() + delay >= cancel.limit:
                    raise cancel.late(self.url, what) from e
                if cancel.wait(delay):
                    raise _Cancelled() from e

    def _fetch(self, start: int, end: int, targets, cancel: _Cancel) -> None:
        """Bytes [start, end) into the destinations covering them ((file
        start, file end, memory) each), retried as a whole."""
        self._retrying(self._io.get_into, f"bytes {start}-{end - 1}", cancel, start, end, targets)

    def _chunks(self, requests) -> List[Tuple[int, int, list, bool]]:
        """(start, end, targets, exact) reads for the requests: what the head
        holds is copied from it, the rest sorted, requests less than GAP
        apart joined, runs cut into chunk_size pieces. exact: the targets
        cover the piece without a gap (read straight into them)."""
        head, spans = self._head, []
        for offset, view in requests:
            end = offset + view.nbytes
            if offset < len(head):
                held = min(end, len(head))
                view[:held - offset] = head[offset:held]
                view, offset = view[held - offset:], held
            if end > offset:
                spans.append((offset, end, view))
        spans.sort(key=lambda span: span[0])
        runs: List[list] = []
        for span in spans:
            if runs and span[0] - runs[-1][1] <= GAP:
                runs[-1][1] = max(runs[-1][1], span[1])
                runs[-1][2].append(span)
            else:
                runs.append([span[0], span[1], [span]])
        chunks = []
        for start, end, targets in runs:
            for lo in range(start, end, self._chunk_size):
                hi = min(end, lo + self._chunk_size)
                inside = [t for t in targets if t[0] < hi and t[1] > lo]
                covered, exact = lo, True
                for i, t in enumerate(inside):   # no gap, no overlap
                    exact = exact and (t[0] <= lo if i == 0 else t[0] == covered)
                    covered = max(covered, t[1])
                chunks.append((lo, hi, inside, exact and covered >= hi))
        return chunks

    def _read(self, lo: int, hi: int, targets, exact: bool, cancel: _Cancel) -> None:
        if exact:
            self._fetch(lo, hi, targets, cancel)
            return
        scratch = memoryview(bytearray(hi - lo))
        self._fetch(lo, hi, [(lo, hi, scratch)], cancel)
        _scatter(scratch, lo, hi, targets)

    def read_many(self, requests: List[Tuple[int, memoryview]]) -> None:
        """Fills every (offset, writable memoryview). All-or-nothing: the first
        failure, an interrupt or close() stops the rest (_run_all), and no
        read into a destination outlives the call."""
        chunks = self._chunks(requests)
        if not chunks:
            return
        cancel = _Cancel(self._deadline)
        with self._lock:
            if self._closed:
                raise SafetensorError("File is closed")
            self._reads.add(cancel)
        try:
            if len(chunks) == 1:
                self._read(*chunks[0], cancel)
            else:
                _run_all(lambda *chunk: self._read(*chunk, cancel), chunks, cancel, self._concurrency)
        except Exception as e:
            if self._closed or isinstance(e, _Cancelled):
                raise SafetensorError("File is closed") from e
            raise
        finally:
            with self._lock:
                self._reads.discard(cancel)


def _spec_bytes(value) -> Tuple[str, List[int], memoryview]:
    """(dtype code, shape, bytes) of a serialize_file value (TensorSpec or 0.7 dict)."""
    if isinstance(value, TensorSpec):
        nbytes = value.data_len
        data = (ctypes.c_ubyte * nbytes).from_address(value.data_ptr) if nbytes else b""
        return value.dtype, list(value.shape), memoryview(data).cast("B")
    if isinstance(value, dict):
        shape, data = list(value["shape"]), value["data"]
        try:
            view = memoryview(data).cast("B")
        except TypeError:
            import numpy as np

            view = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
        # TensorSpec knows the writer's dtype names: its .dtype is the header code.
        try:
            code = TensorSpec(dtype=value["dtype"], shape=shape, data_ptr=0, data_len=0).dtype
        except SafetensorError:
            code = value["dtype"]   # a header code ("F32"): _write_layout checks it
        return code, shape, view
    raise TypeError(f"a tensor must be a TensorSpec or a dict with dtype, shape and data, not {type(value).__name__!r}")


def save_to_url(tensor_dict: Dict[str, Any], url: Any, metadata: Optional[Dict[str, str]] = None, *,
                storage_options: Optional[dict] = None, part_size: Optional[int] = None,
                alignment: Optional[int] = None) -> None:
    """serialize_file to a URL: the filesystem's writer receives the header and
    then each tensor's bytes in pieces of part_size (a multipart upload on
    object stores), never the whole file at once. On failure the upload is
    discarded (multipart aborted): no object is created or replaced."""
    if not isinstance(tensor_dict, dict):
        raise TypeError(f"argument 'tensor_dict': {type(tensor_dict).__name__!r} object cannot be converted to 'PyDict'")
    entries, views = [], []
    for name, value in tensor_dict.items():
        code, shape, view = _spec_bytes(value)
        entries.append((name, code, shape, view.nbytes))
        views.append(view)
    header, order = _write_layout(entries, metadata, alignment)
    part = max(5 * MiB, int(part_size or DEFAULTS["part_size"]))
    fs, path, name = _resolve(url, storage_options)
    writer = None
    try:
        writer = fs.open(path, "wb", block_size=part)
        writer.write(header)
        for i in order:
            for lo in range(0, views[i].nbytes, part):
                writer.write(views[i][lo:lo + part])
        writer.close()   # the last part and the commit: a failure here aborts too
    except BaseException as e:
        error = _classify(e, name, "upload") if isinstance(e, Exception) else e
        error = error.final if isinstance(error, _Transient) else error
        if writer is not None:
            _discard(writer, error)
        if error is e:
            raise
        raise error from e


def _discard(writer, error: BaseException) -> None:
    """Throws an unfinished upload away (S3: the multipart upload is aborted)
    and marks the writer closed, so that its close()/__del__ commit nothing.
    When the abort fails too, ``error`` (being raised) gets a note saying so
    (Python >= 3.11; on 3.10 the abort's failure is left in its __context__)."""
    try:
        getattr(writer, "discard", lambda: None)()
    except Exception as abort_error:  # noqa: BLE001 - reported on the error being raised
        if hasattr(error, "add_note"):
            error.add_note(f"Discarding the unfinished upload failed as well ({type(abort_error).__name__}: "
                           f"{abort_error}): an incomplete multipart upload may be left behind.")
        elif error.__context__ is None:
            error.__context__ = abort_error
    try:
        writer.closed = True
    except AttributeError:
        pass
