"""The transport of remote reading against servers that misbehave on purpose
(tests/remote_servers.py: FaultServer, moto's S3 behind FailingProxy):
credentials on redirects, the checks every 206 passes, servers refusing HEAD,
uploads failing part-way, deadlines, garbage, cancellation. Every test runs
with small timeouts, retries and backoff."""

import os
import socket
import sys
import threading
import types

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(__file__))
import remote_servers  # noqa: E402
from remote_servers import assert_same as _assert_same, faults, s3  # noqa: E402,F401 - fixtures

import safetensors  # noqa: E402
import safetensors.remote as remote  # noqa: E402
import safetensors.torch  # noqa: E402
from safetensors import SafetensorError, safe_open  # noqa: E402
from safetensors.remote import RemoteObjectChangedError  # noqa: E402

SafetensorIOError = remote.SafetensorIOError


def _tensors(scale=1.0):
    gen = torch.Generator().manual_seed(0)
    return {"w": torch.randn(40, 24, generator=gen) * scale, "b": torch.arange(24, dtype=torch.int64)}


def _file_bytes(tensors=None):
    return safetensors.torch.save(_tensors() if tensors is None else tensors)


@pytest.fixture(scope="module")
def other():
    """A second server: another origin (port) than `faults`."""
    with remote_servers.FaultServer() as server:
        yield server


def _open(url, **kw):
    options = dict(framework="pt", chunk_size=256, concurrency=2, head_bytes=16, retries=1, backoff=0.001,
                   timeout=5.0)
    options.update(kw)
    return safe_open(url, **options)


def _load(url, **kw):
    with _open(url, **kw) as f:
        return f.get_tensors()


# --------------------------------------------------------------------------
# 2. redirects: credentials stay with their origin
# --------------------------------------------------------------------------

SECRETS = {"Authorization": "Bearer secret-token", "Cookie": "session=secret", "Proxy-Authorization": "Basic c2Vj"}


def test_redirect_to_other_origin_drops_credentials(faults, other):
    path = "/cross.safetensors"
    other.put(path, _file_bytes())
    faults.put(path, b"", redirect=other.url + path)
    headers = {**SECRETS, "X-Kept": "yes"}
    got = _load(faults.url + path, storage_options={"headers": headers})
    _assert_same(got, _tensors())
    sent_there = [h for m, p, h in other.headers_seen if p == path]
    assert sent_there
    for seen in sent_there:
        lowered = {k.lower(): v for k, v in seen.items()}
        assert lowered.get("x-kept") == "yes"
        for secret in SECRETS:
            assert secret.lower() not in lowered, (secret, seen)
    # the first origin did get them
    assert any("secret-token" in h.get("Authorization", "") for m, p, h in faults.headers_seen if p == path)


def test_redirect_within_origin_keeps_credentials(faults):
    path, final = "/same.safetensors", "/same-final.safetensors"
    faults.put(final, _file_bytes())
    faults.put(path, b"", redirect=final)   # relative: same origin
    _assert_same(_load(faults.url + path, storage_options={"headers": SECRETS}), _tensors())
    assert all(h.get("Authorization") == SECRETS["Authorization"] for m, p, h in faults.headers_seen if p == final)


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x.safetensors"])
def test_redirect_to_non_http_refused(faults, location):
    path = f"/to-{location.split(':')[0]}.safetensors"
    faults.put(path, b"", redirect=location)
    with pytest.raises(SafetensorIOError, match="refused a redirect") as info:
        _load(faults.url + path)
    assert faults.url + path in str(info.value)


def test_redirect_rules():
    first = "https://a.example/x"
    # https -> http is refused, wherever it points
    with pytest.raises(SafetensorIOError, match="from https to plain http"):
        remote._follow(first, first, "http://a.example/y", {})
    with pytest.raises(SafetensorIOError, match="not http or https"):
        remote._follow(first, first, "gopher://a.example/y", {})
    headers = {"authorization": "a", "COOKIE": "c", "Proxy-Authorization": "p", "Range": "bytes=0-1"}
    # same origin (default port spelled out): kept
    assert remote._follow(first, first, "https://A.example:443/z", headers) == ("https://A.example:443/z", headers)
    # another host, port or scheme: credentials dropped, case-insensitively
    for target in ("https://b.example/z", "https://a.example:8443/z"):
        assert remote._follow(first, first, target, headers) == (target, {"Range": "bytes=0-1"})
    plain = "http://a.example/x"
    assert remote._follow(plain, plain, "https://a.example/x", headers)[1] == {"Range": "bytes=0-1"}


# --------------------------------------------------------------------------
# 3. every 206 is checked: Content-Range, total size, ETag
# --------------------------------------------------------------------------

def test_replaced_object_detected_when_server_ignores_if_match(faults):
    path = "/ignores-if-match.safetensors"
    faults.put(path, _file_bytes())
    with _open(faults.url + path) as f:
        faults.put(path, _file_bytes(_tensors(scale=2.0)), ignore_if_match=True)   # same size, new ETag
        with pytest.raises(RemoteObjectChangedError, match="ETag"):
            f.get_tensors()


def test_content_range_of_other_bytes_same_length(faults):
    path = "/wrong-range.safetensors"
    faults.put(path, _file_bytes(), wrong_range=True)
    with pytest.raises(SafetensorIOError, match="Content-Range") as info:
        _load(faults.url + path)
    assert not isinstance(info.value, RemoteObjectChangedError)
    assert faults.url + path in str(info.value)


def test_content_range_total_not_the_pinned_size(faults):
    path = "/wrong-total.safetensors"
    data = _file_bytes()
    faults.put(path, data)
    with _open(faults.url + path) as f:
        faults.faults[path]["range_total"] = len(data) + 100   # the answers after the open
        with pytest.raises(RemoteObjectChangedError, match="pinned"):
            f.get_tensors()


def test_chunked_206_read_to_the_length_asked(faults):
    path = "/chunked.safetensors"
    faults.put(path, _file_bytes(), chunked="exact")
    _assert_same(_load(faults.url + path), _tensors())


@pytest.mark.parametrize("how", ["long", "short"])
def test_chunked_206_wrong_length(faults, how):
    path = f"/chunked-{how}.safetensors"
    faults.put(path, _file_bytes(), chunked=how)
    with pytest.raises(SafetensorIOError) as info:
        _load(faults.url + path)
    assert faults.url + path in str(info.value)


class _FakeS3:
    """A botocore client stand-in answering get_object with what it is given;
    as_s3fs() is an s3fs stand-in giving the same answers (an async _call_s3
    on fsspec's loop, a body read with await)."""

    def __init__(self, data, **answer):
        self.data, self.answer = data, answer

    def get_object(self, Bucket, Key, Range, **kwargs):
        start, end = (int(x) for x in Range.split("=")[1].split("-"))
        import io

        body = types.SimpleNamespace(_raw_stream=io.BytesIO(self.data[start:end + 1]), close=lambda: None)
        answer = {"Body": body, "ContentLength": end + 1 - start,
                  "ContentRange": f"bytes {start}-{end}/{len(self.data)}", "ETag": '"e1"', "VersionId": "v1"}
        answer.update(self.answer)
        return answer

    def as_s3fs(self):
        from fsspec.asyn import get_loop

        async def call_s3(method, **kwargs):
            answer = getattr(self, method)(**kwargs)
            data = answer["Body"]._raw_stream.read()

            async def read():
                return data
            return {**answer, "Body": types.SimpleNamespace(read=read, close=lambda: None)}
        return types.SimpleNamespace(loop=get_loop(), _call_s3=call_s3)


def _s3(timeout, client=None, fs=None):
    """An _S3 pinned to size 100, ETag "e1", version v1."""
    s3 = remote._S3("s3://b/k", timeout, "b", "k", "v1", client=client, fs=fs)
    s3.size, s3.etag = 100, '"e1"'
    return s3


@pytest.mark.parametrize("path", ["botocore", "s3fs"])
@pytest.mark.parametrize("answer, error", [
    ({}, None),
    ({"ETag": '"e2"'}, RemoteObjectChangedError),
    ({"VersionId": "v2"}, RemoteObjectChangedError),
    ({"ContentRange": "bytes 1-10/100"}, SafetensorIOError),
    ({"ContentRange": "bytes 0-9/101"}, RemoteObjectChangedError),
])
def test_s3_get_object_checked_against_the_pin(answer, error, path):
    pytest.importorskip("fsspec")
    data = bytes(range(100))
    fake = _FakeS3(data, **answer)
    s3 = _s3(5.0, client=fake) if path == "botocore" else _s3(5.0, fs=fake.as_s3fs())
    out = bytearray(10)
    call = lambda: s3.get_into(0, 10, [(0, 10, memoryview(out))], remote._Cancel())  # noqa: E731
    if error is None:
        call()
        assert bytes(out) == data[:10]
    else:
        with pytest.raises(error, match="s3://b/k"):
            call()


class _StalledS3:
    """get_object whose body is a real socket nobody writes to (botocore's
    raw stream: readinto, and .connection.sock as urllib3 has it)."""

    def __init__(self):
        self.ours, self.theirs = socket.socketpair()

    def get_object(self, Bucket, Key, Range, **kwargs):
        start, end = (int(x) for x in Range.split("=")[1].split("-"))
        raw = types.SimpleNamespace(readinto=self.ours.recv_into, connection=types.SimpleNamespace(sock=self.ours))
        body = types.SimpleNamespace(_raw_stream=raw, close=lambda: None)
        return {"Body": body, "ContentLength": end + 1 - start, "ContentRange": f"bytes {start}-{end}/100"}


def test_s3_cancel_shuts_the_body_socket_down():
    s3 = _s3(60.0, client=_StalledS3())
    cancel = remote._Cancel()
    done = {}

    def run():
        try:
            s3.get_into(0, 10, [(0, 10, memoryview(bytearray(10)))], cancel)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            done["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    s3.client.theirs.send(b"abc")   # the body has begun
    while not cancel._aborts and thread.is_alive():
        thread.join(0.01)
    cancel.set()
    thread.join(20)   # a liveness bound: without the abort it waits for the 60 s timeout
    assert not thread.is_alive() and isinstance(done.get("error"), remote._Cancelled)


def test_s3_stalled_body_times_out():
    s3 = _s3(0.5, client=_StalledS3())
    with pytest.raises(remote._Transient) as info:
        s3.get_into(0, 10, [(0, 10, memoryview(bytearray(10)))], remote._Cancel())
    assert isinstance(info.value.final, TimeoutError) and "s3://b/k" in str(info.value.final)


# --------------------------------------------------------------------------
# 5. servers that refuse HEAD (presigned GET URLs)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("status", [403, 405, 501])
def test_head_refused_size_and_etag_from_first_get(faults, status):
    path = f"/no-head-{status}.safetensors"
    faults.put(path, _file_bytes(), head_status=status)
    with safe_open(faults.url + path, framework="pt", retries=0) as f:
        _assert_same(f.get_tensors(), _tensors())
    gets = faults.gets(path)
    # one GET of the first head_bytes gives size, ETag and the header: reused, nothing more
    assert [r[2] for r in gets] == [f"bytes=0-{remote.DEFAULTS['head_bytes'] - 1}"]


@pytest.mark.parametrize("how", ["exact", "long"])
def test_head_refused_and_first_get_chunked(faults, how):
    path = f"/no-head-chunked-{how}.safetensors"
    faults.put(path, _file_bytes(), head_status=405, chunked=how)
    if how == "exact":
        _assert_same(_load(faults.url + path, head_bytes=4096), _tensors())
    else:
        with pytest.raises(SafetensorIOError, match=faults.url + path):
            _load(faults.url + path, head_bytes=4096)


def test_head_refused_then_pinned_etag(faults):
    path = "/no-head-pinned.safetensors"
    faults.put(path, _file_bytes(), head_status=405)
    with _open(faults.url + path) as f:
        faults.put(path, _file_bytes(_tensors(scale=3.0)), head_status=405)
        with pytest.raises(RemoteObjectChangedError):
            f.get_tensors()


# --------------------------------------------------------------------------
# 7. bounded waits, and every transport error a SafetensorIOError naming the URL
# --------------------------------------------------------------------------

def test_trickling_body_times_out(faults):
    """One byte every 0.4 s never leaves a socket idle for the 1 s timeout:
    the timeout bounds the whole request."""
    path = "/trickle.safetensors"
    faults.put(path, _file_bytes(), trickle=(0.4, 12))
    with pytest.raises(TimeoutError) as info:
        _load(faults.url + path, timeout=1.0, retries=0)
    assert isinstance(info.value, SafetensorIOError) and faults.url + path in str(info.value)


def test_load_deadline_bounds_the_retries(faults, monkeypatch):
    path = "/deadline.safetensors"
    faults.put(path, _file_bytes(), trickle=(0.4, 12))
    monkeypatch.setitem(remote.DEFAULTS, "deadline", 1.5)
    with pytest.raises(TimeoutError, match="deadline of 1.5 s") as info:
        _load(faults.url + path, timeout=0.5, retries=50)
    assert faults.url + path in str(info.value)


def test_garbage_instead_of_a_response(faults):
    path = "/garbage.safetensors"
    faults.put(path, _file_bytes(), garbage=True)
    with pytest.raises(SafetensorIOError) as info:
        _load(faults.url + path)
    assert faults.url + path in str(info.value)


def test_garbage_after_body_is_retried_on_a_fresh_connection(faults):
    """The next answer on that connection is garbage: the connection is
    dropped and the read retried on a new one (one per thread)."""
    path = "/garbage-after.safetensors"
    faults.put(path, _file_bytes(), garbage_after=True)
    _assert_same(_load(faults.url + path, concurrency=1, retries=3), _tensors())


@pytest.mark.parametrize("value", ["abc", "-5"])
@pytest.mark.parametrize("head_status", [None, 405], ids=["HEAD", "GET"])
def test_bad_content_length(faults, value, head_status):
    path = f"/length-{value}-{head_status}.safetensors"
    fault = {"content_length": value} if head_status is None else {"content_length": value, "head_status": 405}
    faults.put(path, _file_bytes(), **fault)
    with pytest.raises(SafetensorIOError) as info:
        _load(faults.url + path, retries=0)
    assert faults.url + path in str(info.value)


def test_classify_never_lets_a_raw_transport_error_through():
    import http.client
    import ssl

    url = "http://h/x"
    for exc in (http.client.BadStatusLine("junk"), http.client.RemoteDisconnected("gone"),
                http.client.LineTooLong("header"), ssl.SSLError(1, "bad record"), ConnectionResetError(),
                EOFError(), ValueError("odd")):
        mapped = remote._classify(exc, url, "bytes 0-9")
        final = mapped.final if isinstance(mapped, remote._Transient) else mapped
        assert isinstance(final, SafetensorIOError), exc
        assert url in str(final)


# --------------------------------------------------------------------------
# 7. cancellation
# --------------------------------------------------------------------------

def test_cancel_shuts_a_stalled_request_down(faults):
    path = "/cancel-stall.safetensors"
    faults.put(path, _file_bytes())
    source = remote.open_source(faults.url + path, retries=3, backoff=0.001, timeout=60.0, head_bytes=8)
    faults.faults[path]["trickle"] = (0.2, 10 ** 6)   # from now on a body that never ends in this test
    before, cancel, result = len(faults.gets(path)), remote._Cancel(), {}

    def run():
        try:
            source._fetch(8, source.size, [(8, source.size, memoryview(bytearray(source.size - 8)))], cancel)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            result["value"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while len(faults.gets(path)) == before and thread.is_alive():
        thread.join(0.01)
    cancel.set()
    thread.join(20)   # a liveness bound: without the abort it runs for the 60 s timeout
    assert not thread.is_alive()
    assert isinstance(result.get("value"), remote._Cancelled)
    assert len(faults.gets(path)) == before + 1


def test_cancelled_read_is_neither_retried_nor_backed_off(faults):
    path = "/cancel-retry.safetensors"
    faults.put(path, _file_bytes())
    source = remote.open_source(faults.url + path, retries=5, backoff=0.5, timeout=5.0, head_bytes=8)
    calls, waits = [], []

    class Recording(remote._Cancel):
        def wait(self, seconds):
            waits.append(seconds)
            return super().wait(seconds)

    cancel = Recording()

    class Failing:
        def get_into(self, *args):
            calls.append(args)
            cancel.set()   # the first failure of the load cancels it
            raise ConnectionResetError("reset")

    source._io = Failing()
    with pytest.raises(remote._Cancelled):
        source._fetch(8, 16, [(8, 16, memoryview(bytearray(8)))], cancel)
    assert len(calls) == 1 and waits == []
    with pytest.raises(remote._Cancelled):   # set before: no request at all
        source._fetch(8, 16, [(8, 16, memoryview(bytearray(8)))], cancel)
    assert len(calls) == 1


# --------------------------------------------------------------------------
# 6. uploads failing part-way: the multipart upload is aborted, the error is the original
# --------------------------------------------------------------------------

@pytest.fixture
def few_retries(monkeypatch):
    import s3fs

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    monkeypatch.setitem(remote.DEFAULTS, "part_size", 5 * 1024 * 1024)


def _options(s3, proxy):
    return {**s3.options, "client_kwargs": {**s3.options["client_kwargs"], "endpoint_url": proxy.endpoint},
            "config_kwargs": {"retries": {"max_attempts": 1}}}


def _save_through(s3, proxy, key):
    big = {"a": torch.arange(7 * 1024 * 1024 // 4, dtype=torch.float32)}   # 7 MiB: two parts
    url = f"s3://models/{key}"
    with pytest.raises(SafetensorIOError) as info:
        safetensors.serialize_file(safetensors.torch._flatten_as_ptr(big, []), url,
                                   storage_options=_options(s3, proxy))
    assert url in str(info.value)
    assert info.value.__cause__ is not None and not isinstance(info.value.__cause__, SafetensorError)
    return info.value


def _uploads_left(s3, key):
    return [u for u in s3.client().list_multipart_uploads(Bucket="models").get("Uploads", []) if u["Key"] == key]


def test_upload_failing_in_a_part_is_aborted(s3, few_retries):
    key = "fails-in-write.safetensors"
    with remote_servers.FailingProxy(s3.port, budget=1024 * 1024, after=64 * 1024) as proxy:
        _save_through(s3, proxy, key)
        assert proxy.broken.is_set()
    assert not _uploads_left(s3, key)
    assert s3.client().list_objects_v2(Bucket="models", Prefix=key).get("KeyCount", 0) == 0


def test_upload_failing_in_close_is_aborted(s3, few_retries):
    """The commit (CompleteMultipartUpload, sent by close()) fails: the upload
    is aborted all the same."""
    key = "fails-in-close.safetensors"
    with remote_servers.FailingProxy(s3.port, pattern=f"POST /models/{key}?uploadId=".encode()) as proxy:
        _save_through(s3, proxy, key)
        assert proxy.broken.is_set()
    assert not _uploads_left(s3, key)
    assert s3.client().list_objects_v2(Bucket="models", Prefix=key).get("KeyCount", 0) == 0


def test_abort_failing_too_keeps_the_original_error(s3, few_retries):
    key = "abort-fails.safetensors"
    with remote_servers.FailingProxy(s3.port, pattern=f"POST /models/{key}?uploadId=".encode(), after=0) as proxy:
        error = _save_through(s3, proxy, key)
    assert "upload failed" in str(error)
    if sys.version_info >= (3, 11):
        assert any("Discarding the unfinished upload failed" in note for note in error.__notes__)
    left = _uploads_left(s3, key)
    assert left   # the abort could not get through: the note says so
    for upload in left:
        s3.client().abort_multipart_upload(Bucket="models", Key=key, UploadId=upload["UploadId"])
