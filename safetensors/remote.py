"""Remote safetensors: ``safe_open``, ``load_file`` and ``save_file`` on URLs.

Any fsspec URL (``s3://``, ``gs://``, ``az://``, ``hf://``, ``http(s)://``, ...)
or fsspec file object is read with ranged requests:

* the header costs one speculative ranged read of the first ``head_bytes``
  (plus one more when the header is larger), after one metadata request
  (``info``: size and ETag/version, pinned for the life of the handle);
* ``safe_open`` is the C handle for URLs too: it reads through the byte
  source ``open_source`` returns (``read_many``), so the header is checked
  with exactly the rules and messages of local files and every framework,
  device and slicing rule is the path's;
* one ``read_many`` gets every request of a load: requests less than ``GAP``
  apart are coalesced, runs cut into chunks of at most ``chunk_size`` bytes
  that a thread pool reads straight into the destinations (no whole-file
  buffer); at most ``concurrency`` chunks are in flight;
* every ranged read after ``info`` is conditional on the pinned ETag (HTTP
  ``If-Match``, S3 ``IfMatch``/``VersionId``), so an object replaced while it
  is read fails with :class:`RemoteObjectChangedError` instead of mixing two
  versions; transient failures (connection drops, timeouts, 5xx, short
  bodies) are retried ``retries`` times with exponential backoff.

fsspec and the filesystem package of the scheme (``s3fs``, ``gcsfs``,
``adlfs``, ``huggingface_hub``, ``aiohttp`` for http) are optional
dependencies, imported on first use.  Knobs: docs/remote.md.
"""

import _thread
import ctypes
import errno
import http.client
import os
import queue
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
    "direct": True,           # http(s)/s3: own http.client/botocore requests reading into tensors
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


class _Cancel:
    """Set once when a read must stop: its first failure, an interrupt, or the
    handle's close. A transport registers an ``abort`` callable (shuts the
    connection's socket down) for each request in flight, so ``set()`` unblocks
    a read stalled in the kernel at once; transports check ``is_set()`` before
    each attempt and between body reads and then raise ``_Cancelled``.
    ``started`` (monotonic) is when the load began: ``deadline`` counts from it."""

    def __init__(self) -> None:
        # Only C-level lock calls: an interrupt landing inside threading.Event's
        # Python code (its Condition) can leave a lock held and hang the next
        # set() or unregister(). _gate is held until set() releases it once.
        self._lock = threading.Lock()
        self._gate = threading.Lock()
        self._gate.acquire()
        self._set = False
        self._aborts: List[Any] = []
        self.started = time.monotonic()

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
            try:
                self._aborts.remove(abort)
            except ValueError:
                pass


class _Cancelled(Exception):
    """A read stopped because its _Cancel was set (never retried)."""


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


# --------------------------------------------------------------------------
# the object: ranged reads with pinning, error mapping and retries
# --------------------------------------------------------------------------

def _import_fsspec(url: str):
    try:
        import fsspec  # noqa: F401
    except ImportError:
        raise ImportError(
            f"Reading {url!r} needs the optional dependency fsspec (and the filesystem package for "
            "its scheme, e.g. s3fs for s3://, gcsfs for gs://, aiohttp for http(s)://): "
            "pip install fsspec s3fs"
        ) from None
    return fsspec


def _filesystem(target: Any, storage_options: Optional[dict]):
    if not isinstance(target, str):
        return target.fs, target.path, getattr(target, "path", repr(target))
    fsspec = _import_fsspec(target)
    try:
        fs, path = fsspec.core.url_to_fs(target, **(storage_options or {}))
    except ImportError as e:
        raise ImportError(f"Reading {target!r} needs a filesystem package fsspec could not import: {e}") from e
    except ValueError as e:
        if "Protocol not known" in str(e):
            raise ValueError(f"{target!r}: fsspec knows no filesystem for this scheme ({e})") from e
        raise
    return fs, path, target


def _status_of(exc: BaseException) -> Optional[int]:
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        response = getattr(exc.__cause__, "response", None)
    if isinstance(response, dict):
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if response.get("Error", {}).get("Code") == "PreconditionFailed":
            return 412
        return code
    return None


def _named(exc: BaseException, url: str, what: str) -> BaseException:
    """A transport failure as the exception remote reading raises, naming the
    URL: FileNotFoundError / PermissionError kept as such, timeouts and
    connection failures as SafetensorIOError subclasses that are also
    TimeoutError / ConnectionError, anything else SafetensorIOError."""
    if isinstance(exc, SafetensorError):
        return exc
    text = f"{url}: {what} failed: {type(exc).__name__}: {exc}"
    for kind, named in ((FileNotFoundError, FileNotFoundError), (PermissionError, PermissionError),
                        (TimeoutError, RemoteTimeoutError), (ConnectionError, RemoteConnectionError)):
        if isinstance(exc, kind):
            return named(text)
    return SafetensorIOError(text)


def _open_error(kind: str, number: int, url: str) -> OSError:
    """What opening a local file raises (the extension's type, upstream's
    text, errno, strerror and filename), naming the URL."""
    exc = getattr(_safetensors_c, kind)(f"{os.strerror(number)}: {url}")
    exc.errno, exc.strerror, exc.filename = number, os.strerror(number), url
    return exc


def _classify(exc: BaseException, url: str, what: str) -> BaseException:
    """Map a storage failure to the exception to raise (always one naming the
    URL: SafetensorIOError or a subclass, FileNotFoundError, PermissionError);
    wrap retryable ones in _Transient."""
    if isinstance(exc, (SafetensorError, _Transient, _Cancelled)):
        return exc
    if isinstance(exc, PermissionError):
        return exc if url in str(exc) else _named(exc, url, what)
    status = _status_of(exc)
    if status == 404 or isinstance(exc, FileNotFoundError):
        return _open_error("FileNotFoundError", errno.ENOENT, url)
    if status in (401, 403):
        return PermissionError(f"{url}: access denied, HTTP {status} ({what})")
    if status == 412:
        return RemoteObjectChangedError(f"{url}: the object changed since it was opened ({what})")
    if status is not None and (status in (408, 429) or status >= 500):
        return _Transient(SafetensorIOError(f"{url}: HTTP {status} ({what}): {exc}"))
    if status is not None and status >= 400:
        return SafetensorIOError(f"{url}: HTTP {status} ({what}): {exc}")
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return _Transient(RemoteTimeoutError(f"{url}: timed out ({what})"))
    if isinstance(exc, (OSError, EOFError, http.client.HTTPException)) or any(
        word in name for word in ("Connection", "Payload", "Disconnected", "Protocol", "Incomplete")
    ):
        return _Transient(RemoteConnectionError(f"{url}: connection failed ({what}): {name}: {exc}"))
    return _named(exc, url, what)


# --------------------------------------------------------------------------
# checks every response passes
# --------------------------------------------------------------------------

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
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise SafetensorIOError(f"{url}: invalid Content-Length {value!r} ({what})")
    return int(text)


def _content_range(value: Optional[str]) -> Optional[Tuple[Optional[int], Optional[int], Optional[int]]]:
    """'bytes A-B/T' as (A, B, T); 'bytes */T' as (None, None, T); '*' totals
    as None; None when malformed."""
    if value is None:
        return None
    unit, _, rest = value.strip().partition(" ")
    span, _, total = rest.partition("/")
    if unit.lower() != "bytes" or not total:
        return None
    number = lambda t: int(t) if t.isascii() and t.isdigit() else -1  # noqa: E731
    size = None if total == "*" else number(total)
    if span == "*":
        first = last = None
    else:
        a, sep, b = span.partition("-")
        first, last = number(a), number(b)
        if not sep or first < 0 or last < first:
            return None
    if size is not None and size < 0:
        return None
    return first, last, size


def _check_partial(url: str, content_range: Optional[str], start: int, end: int, size: Optional[int],
                   etag: Optional[str], got_etag: Optional[str], version: Optional[str] = None,
                   got_version: Optional[str] = None) -> None:
    """A 206 must be of the pinned object (ETag / VersionId when both sides
    have one, total size) and of exactly the bytes asked (Content-Range)."""
    what = f"bytes {start}-{end - 1}"
    if etag and got_etag and got_etag != etag:
        raise RemoteObjectChangedError(
            f"{url}: the object changed since it was opened ({what}: ETag {got_etag}, pinned {etag})")
    if version and got_version and got_version != version:
        raise RemoteObjectChangedError(
            f"{url}: the object changed since it was opened ({what}: version {got_version}, pinned {version})")
    parsed = _content_range(content_range)
    if parsed is not None and size is not None and parsed[2] is not None and parsed[2] != size:
        raise RemoteObjectChangedError(
            f"{url}: the object changed since it was opened ({what}: {parsed[2]} bytes, pinned {size})")
    if parsed is None or parsed[:2] != (start, end - 1) or parsed[2] is None:
        raise SafetensorIOError(
            f"{url}: asked {what}, the server answered Content-Range {content_range!r} "
            f"(expected 'bytes {start}-{end - 1}/{size}')")


def _deadline_error(url: str, seconds: float, what: str) -> RemoteTimeoutError:
    return RemoteTimeoutError(f"{url}: the load's deadline of {seconds} s passed ({what})")


class _Guard:
    """Bounds one request in flight (connect, headers, body): at ``until``
    (monotonic) or when ``cancel`` is set, its connection's socket is shut
    down, which ends any read stalled in the kernel or fed a byte at a time.
    ``target``: what the transport reads from (an object with ``.sock``, a
    socket, or something with ``close()``), set as soon as it is known."""

    def __init__(self, url: str, what: str, timeout: float, limit: Optional[float], cancel: Optional[_Cancel]):
        now = time.monotonic()
        self.url, self.what, self.timeout, self.cancel = url, what, timeout, cancel
        self.until = now + timeout if limit is None else min(now + timeout, limit)
        self.target: Any = None
        self._lock = threading.Lock()
        self._live = True
        self._timer = threading.Timer(max(0.0, self.until - now), self.abort)
        self._timer.daemon = True

    def __enter__(self):
        if self.cancel is not None:
            self.cancel.register(self.abort)
        self._timer.start()
        return self

    def __exit__(self, kind, exc, tb):
        with self._lock:
            self._live = False
        self._timer.cancel()
        if self.cancel is not None:
            self.cancel.unregister(self.abort)
        if exc is None or isinstance(exc, (_Cancelled, SafetensorError)) or not isinstance(exc, Exception):
            return False
        if self.cancel is not None and self.cancel.is_set():
            raise _Cancelled() from exc
        if time.monotonic() >= self.until:
            raise self.expired() from exc
        return False

    def _socket(self):
        target = self.target
        return target if isinstance(target, socket.socket) else getattr(target, "sock", None)

    def abort(self) -> None:
        with self._lock:
            if not self._live:
                return
            sock = self._socket()
            if isinstance(sock, socket.socket):
                try:   # the plain socket's shutdown: also under an SSL wrapper
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass
            elif not hasattr(self.target, "sock") and hasattr(self.target, "close"):
                self.target.close()   # no socket to reach (a connection still connecting is bounded by timeout)

    def expired(self) -> _Transient:
        return _Transient(RemoteTimeoutError(
            f"{self.url}: timed out: a request may take {self.timeout} s in all ({self.what})"))

    def check(self) -> None:
        """Between reads: stops a cancelled or late request; gives the socket
        the time left as its timeout."""
        if self.cancel is not None and self.cancel.is_set():
            raise _Cancelled()
        left = self.until - time.monotonic()
        if left <= 0:
            raise self.expired()
        sock = self._socket()
        if isinstance(sock, socket.socket):
            sock.settimeout(left)


class _RemoteObject:
    """One remote object, pinned at open (size + ETag/version)."""

    def __init__(self, target: Any, storage_options: Optional[dict], retries: int, backoff: float,
                 timeout: float, concurrency: int = 16, direct: bool = True, deadline: Optional[float] = None):
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.deadline = DEFAULTS["deadline"] if deadline is None else deadline
        self._direct = None
        self._prefix: Optional[bytes] = None   # bytes 0.. from a HEAD-less open, served once
        started = time.monotonic()
        plain_http = (isinstance(target, str) and target.split("://", 1)[0].lower() in ("http", "https")
                      and set(storage_options or {}) <= {"headers"})
        if direct and plain_http:
            # Needs neither fsspec nor aiohttp.
            self.fs, self.path, self.url, self.kind = None, target, target, "http"
            self._direct = _DirectHTTP(target, dict((storage_options or {}).get("headers", {})), timeout)
        else:
            self.fs, self.path, self.url = _filesystem(target, storage_options)
            protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
            self.kind = (
                "s3" if hasattr(self.fs, "_call_s3")
                else "http" if ("http" in protocols or "https" in protocols)
                else "generic"
            )
            try:
                self.fs.invalidate_cache(self.path)   # s3fs may hold a listing from before
            except Exception:
                pass
            if direct and self.kind == "http" and set(getattr(self.fs, "kwargs", {})) <= {"headers"}:
                url = self.path if "://" in self.path else self.url
                self._direct = _DirectHTTP(url, dict(self.fs.kwargs.get("headers", {})), timeout)
            elif direct and self.kind == "s3":
                self._direct = _DirectS3.build(self.fs, self.path, concurrency, timeout)
        limit = self._limit(started)
        if self._direct is not None:
            stat = lambda: self._direct.info(limit)  # noqa: E731
        else:
            stat = (lambda: self._http_info(limit)) if self.kind == "http" else lambda: self.fs.info(self.path)
        info = self._retrying(stat, "info", limit=limit)
        if info.get("type") == "directory":
            raise _open_error("IsADirectoryError", errno.EISDIR, self.url)
        size = info.get("size")
        if size is None:
            raise SafetensorIOError(f"{self.url}: the server does not report the object's size")
        self.size = int(size)
        self.etag = info.get("ETag") or info.get("etag")
        if self.etag and self.etag.startswith("W/"):
            self.etag = None   # If-Match compares strongly: a weak ETag would never match
        self.version = info.get("VersionId") or info.get("version_id")
        self._prefix = info.get("prefix")

    def _limit(self, started: float) -> Optional[float]:
        return None if self.deadline is None else started + float(self.deadline)

    def _retrying(self, call, what: str, cancel: Optional[_Cancel] = None, limit: Optional[float] = None):
        attempt = 0
        while True:
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            if limit is not None and time.monotonic() >= limit:
                raise _deadline_error(self.url, self.deadline, what)
            try:
                return call()
            except BaseException as e:  # noqa: BLE001 - classified below, re-raised
                if isinstance(e, (KeyboardInterrupt, SystemExit, _Cancelled)):
                    raise
                if cancel is not None and cancel.is_set():
                    raise _Cancelled() from e
                mapped = _classify(e, self.url, what)
                if not isinstance(mapped, _Transient):
                    if mapped is e:
                        raise
                    raise mapped from e
                if attempt >= self.retries:
                    raise mapped.final from e
                delay = min(2.0, self.backoff * (2 ** attempt))
                if limit is not None:
                    if time.monotonic() + delay >= limit:
                        raise _deadline_error(self.url, self.deadline, what) from e
                if cancel is not None:
                    if cancel.wait(delay):
                        raise _Cancelled() from e
                else:
                    time.sleep(delay)
                attempt += 1

    def _aiohttp_timeout(self, limit: Optional[float]):
        import aiohttp

        total = self.timeout if limit is None else max(0.001, min(self.timeout, limit - time.monotonic()))
        return aiohttp.ClientTimeout(total=total, sock_connect=self.timeout, sock_read=self.timeout)

    async def _http_request(self, method: str, headers: Dict[str, str], limit: Optional[float] = None):
        """An aiohttp request on fsspec's HTTP session, redirects followed by
        _follow's rules; HTTP errors raise _HTTPStatus (fsspec's own info()
        turns every failure into FileNotFoundError, 403 included). ``timeout``
        bounds the whole request, body included."""
        import aiohttp

        session = await self.fs.set_session()
        kwargs = dict(self.fs.kwargs)
        sent = {**kwargs.pop("headers", {}), **headers}
        kwargs["timeout"] = self._aiohttp_timeout(limit)
        kwargs["allow_redirects"] = False
        first = url = str(self.fs.encode_url(self.path))
        for _ in range(6):
            try:
                response = await session.request(method, self.fs.encode_url(url), headers=sent, **kwargs)
            except aiohttp.ClientResponseError as e:
                # aiohttp's word for a response it could not parse (bad status
                # line, bad Content-Length): a broken connection, not an HTTP status
                raise ConnectionError(f"invalid response: {e.message}") from e
            location = response.headers.get("Location")
            if response.status in (301, 302, 303, 307, 308) and location:
                response.release()
                url, sent = _follow(first, url, location, sent)
                continue
            if response.status >= 400:
                response.release()
                raise _HTTPStatus(response.status, f"HTTP {response.status} {response.reason}")
            return response
        raise SafetensorIOError(f"{self.url}: too many redirects")

    def _http_info(self, limit: Optional[float] = None) -> Dict[str, Any]:
        from fsspec.asyn import sync

        async def head():
            response = await self._http_request("head", {"Accept-Encoding": "identity"}, limit)
            response.release()
            return response.headers

        async def first_bytes():
            count = int(DEFAULTS["head_bytes"])
            headers = {"Range": f"bytes=0-{count - 1}", "Accept-Encoding": "identity"}
            async with await self._http_request("get", headers, limit) as response:
                size, want = _head_from_get(self.url, response.status, response.headers.get, count)
                body = await response.read() if want else b""
                if len(body) != want:
                    raise _Transient(SafetensorIOError(
                        f"{self.url}: asked bytes 0-{want - 1}, the body has {len(body)} bytes"))
                return {"size": size, "ETag": response.headers.get("ETag"), "type": "file", "prefix": body}

        try:
            headers = sync(self.fs.loop, head)
        except _HTTPStatus as e:
            if e.status not in _NO_HEAD:
                raise
            return sync(self.fs.loop, first_bytes)
        return {"size": _length_of(headers.get("Content-Length"), self.url, "HEAD"),
                "ETag": headers.get("ETag"), "type": "file"}

    def _get(self, start: int, end: int, limit: Optional[float] = None) -> bytes:
        """One ranged GET of [start, end), conditional on the pinned identity
        and checked against it."""
        if self.kind == "s3":
            from fsspec.asyn import sync

            bucket, key, version = self.fs.split_path(self.path)
            kwargs = {"Bucket": bucket, "Key": key, "Range": f"bytes={start}-{end - 1}"}
            if self.version or version:
                kwargs["VersionId"] = self.version or version
            if self.etag:
                kwargs["IfMatch"] = self.etag

            async def get():
                response = await self.fs._call_s3("get_object", **kwargs)
                body = response["Body"]
                try:
                    _check_partial(self.url, response.get("ContentRange"), start, end, self.size, self.etag,
                                   response.get("ETag"), kwargs.get("VersionId"), response.get("VersionId"))
                    return await body.read()
                finally:
                    body.close()

            return sync(self.fs.loop, get, timeout=self.timeout)
        if self.kind == "http":
            from fsspec.asyn import sync

            headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
            if self.etag:
                headers["If-Match"] = self.etag

            async def get():
                async with await self._http_request("get", headers, limit) as response:
                    if response.status != 206:
                        raise SafetensorIOError(
                            f"{self.url}: asked bytes {start}-{end - 1}, the server answered HTTP "
                            f"{response.status} (it must honour Range)")
                    _check_partial(self.url, response.headers.get("Content-Range"), start, end, self.size,
                                   self.etag, response.headers.get("ETag"))
                    return await response.read()

            return sync(self.fs.loop, get)
        return self.fs.cat_file(self.path, start=start, end=end)

    def read(self, start: int, end: int):
        """Bytes [start, end) exactly, retried; a short or long body is an error."""
        if end <= start:
            return b""
        buffer = bytearray(end - start)
        self.read_into(start, end, [(start, end, memoryview(buffer))])
        return bytes(buffer)

    def read_into(self, start: int, end: int, targets: List[Tuple[int, int, memoryview]],
                  cancel: Optional[_Cancel] = None) -> None:
        """Bytes [start, end) into the destinations covering them ((file start,
        file end, memory) each), retried as a whole on a transient failure.
        Stops with _Cancelled as soon as ``cancel`` is set (see _Cancel).
        ``deadline`` counts from cancel.started (the load), else from this call."""
        prefix, self._prefix = self._prefix, None   # the open's first bytes: for the header read only
        if prefix is not None and end <= len(prefix):
            _scatter(memoryview(prefix)[start:end], start, end, targets)
            return
        limit = self._limit(cancel.started if cancel is not None else time.monotonic())

        def attempt():
            if self._direct is not None:
                return self._direct.get_into(start, end, targets, self.etag, self.version, cancel,
                                             size=self.size, limit=limit)
            data = self._get(start, end, limit) if self.kind == "http" else self._get(start, end)
            if len(data) != end - start:
                raise _Transient(SafetensorIOError(
                    f"{self.url}: truncated response: asked bytes {start}-{end - 1}, got {len(data)} bytes"
                    + (" (the server ignored Range)" if len(data) == self.size and start else "")))
            _scatter(memoryview(data), start, end, targets)

        self._retrying(attempt, f"bytes {start}-{end - 1}", cancel, limit)


_NO_HEAD = (403, 405, 501)   # a HEAD refused (presigned GET URLs): size and ETag come from a ranged GET


def _head_from_get(url: str, status: int, header, count: int) -> Tuple[int, int]:
    """(size, bytes to read) from the answer to a GET of bytes 0..count-1 (a
    server refusing HEAD), checked before its body is read: the size is
    Content-Range's total, the body must be bytes 0..min(count, size)-1."""
    parsed = _content_range(header("Content-Range"))
    if status == 416 and parsed is not None and parsed[2] is not None:
        return parsed[2], 0
    if status != 206 or parsed is None or parsed[2] is None or parsed[:2] != (0, min(count, parsed[2]) - 1):
        raise SafetensorIOError(
            f"{url}: HEAD refused, and a GET of bytes 0-{count - 1} answered HTTP {status} with Content-Range "
            f"{header('Content-Range')!r}: the size is unknown")
    return parsed[2], parsed[1] + 1


def _scatter(data: memoryview, start: int, end: int, targets) -> None:
    for t_start, t_end, dest in targets:
        a, b = max(start, t_start), min(end, t_end)
        if a < b:
            dest[a - t_start:b - t_start] = data[a - start:b - start]


def _stream_into(read_into, start: int, end: int, targets, url: str, check=None) -> None:
    """Reads a response body of end - start bytes straight into the targets'
    memory with read_into(memoryview) -> count (socket reads: GIL released).
    ``check()`` runs before each read (cancel, deadline)."""
    for t_start, t_end, dest in targets:
        a, b = max(start, t_start), min(end, t_end)
        view = dest[a - t_start:b - t_start]
        got = 0
        while got < len(view):
            if check is not None:
                check()
            n = read_into(view[got:])
            if not n:
                if check is not None:
                    check()   # a socket shut down by cancel or deadline reads as EOF
                raise _Transient(SafetensorIOError(
                    f"{url}: truncated response: bytes {start}-{end - 1} ended {end - a - got} bytes early"))
            got += n


class _DirectHTTP:
    """Plain HTTP(S) ranged GETs with http.client: one keep-alive connection
    per thread and host, bodies read straight into tensor memory."""

    def __init__(self, url: str, headers: Dict[str, str], timeout: float):
        self.url, self.headers, self.timeout = url, headers, timeout
        self.local = threading.local()

    def _connection(self, scheme: str, netloc: str):
        pool = self.local.__dict__.setdefault("pool", {})
        conn = pool.get((scheme, netloc))
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = pool[(scheme, netloc)] = cls(netloc, timeout=self.timeout)
        return conn

    def _drop(self, scheme: str, netloc: str) -> None:
        conn = self.local.__dict__.get("pool", {}).pop((scheme, netloc), None)
        if conn is not None:
            conn.close()

    def request(self, method: str, headers: Dict[str, str], guard: _Guard):
        """(response, drop) after following up to 5 redirects (_follow's
        rules); raises _HTTPStatus for 4xx/5xx. drop() discards the connection."""
        from urllib.parse import urlsplit

        url = self.url
        sent = {**self.headers, **headers}
        for _ in range(6):
            parts = urlsplit(url)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn = self._connection(parts.scheme, parts.netloc)
            guard.target = conn
            try:
                guard.check()
                if conn.sock is None:
                    conn.timeout = max(0.001, guard.until - time.monotonic())
                    conn.connect()
                    guard.check()
                conn.request(method, target, headers=sent)
                response = conn.getresponse()
            except BaseException:
                self._drop(parts.scheme, parts.netloc)
                raise
            drop = lambda p=parts: self._drop(p.scheme, p.netloc)  # noqa: E731
            location = response.getheader("Location")
            if response.status in (301, 302, 303, 307, 308) and location:
                try:
                    response.read()
                    url, sent = _follow(self.url, url, location, sent)
                except BaseException:
                    drop()
                    raise
                continue
            if response.status >= 400:
                response.read()
                raise _HTTPStatus(response.status, f"HTTP {response.status} {response.reason}")
            return response, drop
        raise SafetensorIOError(f"{self.url}: too many redirects")

    def info(self, limit: Optional[float] = None) -> Dict[str, Any]:
        with _Guard(self.url, "HEAD", self.timeout, limit, None) as guard:
            try:
                response, drop = self.request("HEAD", {"Accept-Encoding": "identity"}, guard)
            except _HTTPStatus as e:
                if e.status not in _NO_HEAD:
                    raise
            else:
                response.read()
                return {"size": _length_of(response.getheader("Content-Length"), self.url, "HEAD"),
                        "ETag": response.getheader("ETag"), "type": "file"}
        count = int(DEFAULTS["head_bytes"])
        with _Guard(self.url, "GET of the first bytes", self.timeout, limit, None) as guard:
            response, drop = self.request("GET", {"Range": f"bytes=0-{count - 1}", "Accept-Encoding": "identity"},
                                          guard)
            try:
                size, want = _head_from_get(self.url, response.status, response.getheader, count)
                length = _length_of(response.getheader("Content-Length"), self.url, "GET")
                if length is not None and length != want:
                    raise _Transient(SafetensorIOError(
                        f"{self.url}: truncated response: asked bytes 0-{want - 1}, got {length} bytes"))
                body = bytearray(want)
                _stream_into(response.readinto, 0, want, [(0, want, memoryview(body))], self.url, guard.check)
                if length is None and response.read(1):
                    raise SafetensorIOError(f"{self.url}: asked bytes 0-{want - 1}, the body went on")
            except BaseException:
                drop()
                raise
            return {"size": size, "ETag": response.getheader("ETag"), "type": "file", "prefix": bytes(body)}

    def get_into(self, start, end, targets, etag, version, cancel=None, *, size=None, limit=None) -> None:
        what = f"bytes {start}-{end - 1}"
        headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
        if etag:
            headers["If-Match"] = etag
        with _Guard(self.url, what, self.timeout, limit, cancel) as guard:
            response, drop = self.request("GET", headers, guard)
            try:
                if response.status != 206:
                    raise SafetensorIOError(
                        f"{self.url}: asked {what}, the server answered HTTP {response.status} "
                        "(it must honour Range)")
                _check_partial(self.url, response.getheader("Content-Range"), start, end, size, etag,
                               response.getheader("ETag"))
                length = _length_of(response.getheader("Content-Length"), self.url, what)
                if length is not None and length != end - start:
                    raise _Transient(SafetensorIOError(
                        f"{self.url}: truncated response: asked {what}, got {length} bytes"))
                # No Content-Length: a chunked (or close-delimited) body, read to the length asked.
                _stream_into(response.readinto, start, end, targets, self.url, guard.check)
                if length is None and response.read(1):
                    raise SafetensorIOError(f"{self.url}: asked {what}, the body went on past {end - start} bytes")
            except BaseException:
                drop()
                raise


class _DirectS3:
    """S3 ranged GETs through botocore (thread-safe client, a connection pool
    of `concurrency`), bodies read straight into tensor memory. Built from the
    s3fs filesystem's own settings; None when they hold anything it does not
    map (then s3fs does the requests)."""

    @classmethod
    def build(cls, fs, path: str, concurrency: int, timeout: float):
        try:
            import botocore.session
            from botocore import UNSIGNED
            from botocore.config import Config
            from fsspec.asyn import sync
        except ImportError:
            return None
        client_kwargs = dict(getattr(fs, "client_kwargs", {}) or {})
        endpoint = getattr(fs, "endpoint_url", None) or client_kwargs.pop("endpoint_url", None)
        region = client_kwargs.pop("region_name", None)
        if client_kwargs or getattr(fs, "requester_pays", False) or getattr(fs, "session", None) is not None:
            return None
        bucket = fs.split_path(path)[0]
        if region is None:
            try:
                region = sync(fs.loop, fs._get_s3, bucket).meta.region_name
            except Exception:
                region = None
        config = dict(getattr(fs, "config_kwargs", {}) or {})
        config.update(max_pool_connections=max(10, concurrency), read_timeout=timeout, connect_timeout=timeout,
                      retries={"max_attempts": 1})
        if getattr(fs, "anon", False):
            config["signature_version"] = UNSIGNED
        session = botocore.session.Session(profile=getattr(fs, "profile", None))
        client = session.create_client(
            "s3", region_name=region or session.get_config_variable("region") or "us-east-1",
            endpoint_url=endpoint, aws_access_key_id=getattr(fs, "key", None),
            aws_secret_access_key=getattr(fs, "secret", None), aws_session_token=getattr(fs, "token", None),
            config=Config(**config))
        self = cls()
        self.client, self.url, self.timeout = client, f"s3://{path}", timeout
        self.bucket, self.key, version = fs.split_path(path)
        self.version_kw = {"VersionId": version} if version else {}
        return self

    def info(self, limit: Optional[float] = None) -> Dict[str, Any]:
        head = self.client.head_object(Bucket=self.bucket, Key=self.key, **self.version_kw)
        return {"size": head.get("ContentLength"), "ETag": head.get("ETag"), "VersionId": head.get("VersionId"),
                "type": "file"}

    def get_into(self, start, end, targets, etag, version, cancel=None, *, size=None, limit=None) -> None:
        what = f"bytes {start}-{end - 1}"
        kwargs = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={start}-{end - 1}"}
        if etag:
            kwargs["IfMatch"] = etag
        if version:
            kwargs["VersionId"] = version
        # The headers are bounded by botocore's socket timeouts; from the body
        # on, the guard bounds the request and cancel shuts its socket down.
        with _Guard(self.url, what, getattr(self, "timeout", 60.0), limit, cancel) as guard:
            response = self.client.get_object(**kwargs)
            body = response["Body"]
            raw = getattr(body, "_raw_stream", None)
            guard.target = getattr(raw, "connection", None) or body
            try:
                _check_partial(self.url, response.get("ContentRange"), start, end, size, etag, response.get("ETag"),
                               version, response.get("VersionId"))
                if response.get("ContentLength") != end - start:
                    raise _Transient(SafetensorIOError(
                        f"{self.url}: asked {what}, got {response.get('ContentLength')} bytes"))
                if raw is not None and hasattr(raw, "readinto"):
                    _stream_into(raw.readinto, start, end, targets, self.url, guard.check)
                else:
                    guard.check()
                    _scatter(memoryview(body.read()), start, end, targets)
            finally:
                body.close()


# --------------------------------------------------------------------------
# running chunk reads
# --------------------------------------------------------------------------

class _Workers:
    """Up to ``size`` threads running ``fn(arg)`` for each submit (fn must not
    raise). Submitting is C calls only (_thread.start_new_thread,
    SimpleQueue.put): an interrupt landing in ThreadPoolExecutor.submit can
    leave one of its Python-level locks held and deadlock the pool."""

    def __init__(self, size: int):
        self._size, self._threads, self._pid = size, 0, os.getpid()
        self._jobs: Any = queue.SimpleQueue()
        self._lock = threading.Lock()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job[0](job[1])

    def submit(self, fn, arg) -> None:
        with self._lock:
            if self._pid != os.getpid():   # a forked child has none of the parent's threads
                self._threads, self._pid, self._jobs = 0, os.getpid(), queue.SimpleQueue()
            if self._threads < self._size:
                _thread.start_new_thread(self._work, ())
                self._threads += 1
        self._jobs.put((fn, arg))

    def shutdown(self) -> None:
        """The threads end once the jobs queued so far ran; no new ones start."""
        with self._lock:
            self._size = 0
            for _ in range(self._threads):
                self._jobs.put(None)


def _run_all(submit, work, items, cancel: _Cancel) -> None:
    """Runs ``work(*item)`` for every item through ``submit`` (an executor's)
    and returns once all succeeded. Otherwise -- an item failed, the caller
    was interrupted (KeyboardInterrupt, any exception from a signal handler)
    or ``cancel`` was set from outside (close) -- it sets ``cancel`` (a failing
    item does so at once, in its own thread), so items not started never
    start and those running stop, waits until none runs, and raises: what
    interrupted the caller, else the first failure, else _Cancelled. Further
    interrupts cannot cut that wait short: an item still running may be
    writing into memory the caller frees after this returns; the items hold
    their destinations themselves, alive for as long as an item exists.

    The caller's thread waits only on C-level primitives (a Lock taken with
    ``with``, SimpleQueue.get): an interrupt can land anywhere in it without
    leaving a lock held (concurrent.futures.wait can, and deadlocks)."""
    lock = threading.Lock()
    woken = queue.SimpleQueue()   # a token after each item and on cancel
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

    raised = None
    try:
        cancel.register(lambda: woken.put(None))
        for item in items:
            submit(run, item)
        while True:
            with lock:
                if state["done"] == len(items):
                    return
                if failures or cancel.is_set():
                    break
            woken.get()
    except BaseException as e:  # noqa: BLE001 - an interrupt, submit refused (pool shut down), or closed
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


# --------------------------------------------------------------------------
# the byte source safe_open reads a URL through
# --------------------------------------------------------------------------

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
    unknown = set(knobs) - {"chunk_size", "concurrency", "head_bytes", "retries", "timeout", "backoff",
                            "direct", "deadline"}
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
        self._lock = threading.Lock()
        self._closed = False
        self._pool: Optional[_Workers] = None
        self._reads: set = set()   # the _Cancel of each read_many in flight
        self._object = _RemoteObject(target, storage_options, int(pick("retries")), float(pick("backoff")),
                                     float(pick("timeout")), self._concurrency, bool(pick("direct")),
                                     knobs.get("deadline"))
        self.size = self._object.size
        self.identity = self._object.etag or self._object.version
        self._head = self._object.read(0, min(self.size, max(8, int(pick("head_bytes")))))

    def close(self) -> None:
        """Reads in flight stop (their read_many raises "File is closed"),
        nothing new starts."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            reads = list(self._reads)
        for cancel in reads:
            cancel.set()
        if pool is not None:
            pool.shutdown()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

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
            self._object.read_into(lo, hi, targets, cancel)
            return
        scratch = memoryview(bytearray(hi - lo))
        self._object.read_into(lo, hi, [(lo, hi, scratch)], cancel)
        _scatter(scratch, lo, hi, targets)

    def read_many(self, requests: List[Tuple[int, memoryview]]) -> None:
        """Fills every (offset, writable memoryview). All-or-nothing: the first
        failure, an interrupt or close() stops the rest (_run_all), and no
        read into a destination outlives the call."""
        chunks = self._chunks(requests)
        if not chunks:
            return
        cancel = _Cancel()
        with self._lock:
            if self._closed:
                raise SafetensorError("File is closed")
            self._reads.add(cancel)
            if self._pool is None and len(chunks) > 1:
                self._pool = _Workers(self._concurrency)
            pool = self._pool
        try:
            if len(chunks) == 1:
                self._read(*chunks[0], cancel)
            else:
                _run_all(pool.submit, lambda *chunk: self._read(*chunk, cancel), chunks, cancel)
        except Exception as e:
            if self._closed or isinstance(e, _Cancelled):
                raise SafetensorError("File is closed") from e
            raise
        finally:
            with self._lock:
                self._reads.discard(cancel)


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------

def _spec_bytes(value) -> Tuple[str, List[int], memoryview]:
    """(dtype code, shape, bytes) of a serialize_file value (TensorSpec or 0.7 dict)."""
    if isinstance(value, TensorSpec):
        nbytes = value.data_len
        data = (ctypes.c_ubyte * nbytes).from_address(value.data_ptr) if nbytes else b""
        return value.dtype, list(value.shape), memoryview(data).cast("B")
    if isinstance(value, dict):
        shape = list(value["shape"])
        data = value["data"]
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
                storage_options: Optional[dict] = None, part_size: Optional[int] = None) -> None:
    """serialize_file to a URL: the filesystem's writer receives the header and
    then each tensor's bytes in pieces of part_size (a multipart upload on
    object stores), never the whole file at once. On failure the upload is
    discarded (multipart aborted): no object is created or replaced."""
    if not isinstance(tensor_dict, dict):
        raise TypeError(f"argument 'tensor_dict': {type(tensor_dict).__name__!r} object cannot be converted to 'PyDict'")
    names = list(tensor_dict)
    entries, views = [], []
    for name in names:
        code, shape, view = _spec_bytes(tensor_dict[name])
        entries.append((name, code, shape, view.nbytes))
        views.append(view)
    header, order = _write_layout(entries, metadata)
    part = max(5 * MiB, int(part_size or DEFAULTS["part_size"]))
    if isinstance(url, str):
        fs, path, name = _filesystem(url, storage_options)
    else:
        fs, path = url.fs, url.path
        name = fs.unstrip_protocol(path) if hasattr(fs, "unstrip_protocol") else path
    writer = None
    try:
        writer = fs.open(path, "wb", block_size=part)
        writer.write(header)
        for i in order:
            view = views[i]
            for lo in range(0, view.nbytes, part):
                writer.write(view[lo:lo + part])
        writer.close()   # the last part and the commit: a failure here aborts too
    except BaseException as e:
        error = _named(e, name, "upload") if isinstance(e, Exception) else e
        if writer is not None:
            _discard(writer, error)
        if error is e:
            raise
        raise error from e


def _discard(writer, error: Optional[BaseException] = None) -> None:
    """Throws an unfinished upload away without committing it. When that
    fails too, ``error`` (what is being raised) gets a note saying so
    (Python >= 3.11; on 3.10 the abort's failure is left in its __context__)
    and the abort's failure is not raised."""
    try:
        discard = getattr(writer, "discard", None)
        if discard is not None:
            discard()
    except Exception as abort_error:  # noqa: BLE001 - reported on the error being raised
        if error is None:
            raise
        if hasattr(error, "add_note"):
            error.add_note(f"Discarding the unfinished upload failed as well ({type(abort_error).__name__}: "
                           f"{abort_error}): an incomplete multipart upload may be left behind.")
        elif error.__context__ is None:
            error.__context__ = abort_error
    finally:
        # A buffered fsspec file commits in close()/__del__: mark it closed so
        # nothing is uploaded after the failure.
        try:
            writer.closed = True
        except AttributeError:
            pass
