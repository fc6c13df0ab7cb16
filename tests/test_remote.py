"""safe_open / load_file / save_file on URLs, against real servers on 127.0.0.1:
moto's S3 (server mode), nginx, and a fault-injecting HTTP server of ours
(tests/remote_servers.py). Skips only when fsspec/s3fs/moto/nginx are absent;
CI installs them (.ci/remote.sh)."""

import inspect
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
fsspec = pytest.importorskip("fsspec")

sys.path.insert(0, os.path.dirname(__file__))
import remote_servers  # noqa: E402
from remote_servers import assert_same as _assert_same, faults, s3  # noqa: E402,F401 - fixtures

import safetensors  # noqa: E402
import safetensors.numpy  # noqa: E402
import safetensors.torch  # noqa: E402
from safetensors import SafetensorError, safe_open  # noqa: E402
from safetensors.remote import RemoteObjectChangedError  # noqa: E402


def _tensors():
    gen = torch.Generator().manual_seed(0)
    return {
        "emb": torch.randn(64, 32, generator=gen).to(torch.bfloat16),
        "w": torch.randn(40, 24, generator=gen),
        "b": torch.arange(24, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3, dtype=torch.float16),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
    }


def _file_bytes(tensors=None, metadata=None):
    return safetensors.torch.save(tensors or _tensors(), metadata=metadata)


# --------------------------------------------------------------------------
# fixtures: servers
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    if remote_servers.nginx_binary() is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    root = tmp_path_factory.mktemp("www")
    with remote_servers.Nginx(str(root), str(tmp_path_factory.mktemp("nginx"))) as server:
        server.root_path = root
        yield server


def _put_s3(s3, key, data):
    s3.client().put_object(Bucket="models", Key=key, Body=data)
    return f"s3://models/{key}"


# --------------------------------------------------------------------------
# reading: S3 (moto)
# --------------------------------------------------------------------------

@pytest.fixture(params=[True, False], ids=["botocore", "s3fs"])
def direct(request):
    """Both S3 request paths: our botocore client and s3fs's (direct=False)."""
    return request.param


def test_s3_load_file_and_safe_open(s3, direct):
    tensors = _tensors()
    url = _put_s3(s3, "a.safetensors", _file_bytes(tensors, {"format": "pt"}))
    got = safetensors.torch.load_file(url, storage_options=s3.options)
    _assert_same(got, tensors)
    with safe_open(url, framework="pt", storage_options=s3.options, direct=direct, chunk_size=1000,
                   head_bytes=16) as f:
        _assert_same(f.get_tensors(), tensors)
        assert isinstance(f, safe_open)
        assert f.keys() == sorted(tensors)
        assert f.metadata() == {"format": "pt"}
        assert torch.equal(f.get_tensor("w"), tensors["w"])
        assert f.get_slice("emb").get_shape() == [64, 32]
        assert f.get_slice("emb").get_dtype() == "BF16"
        assert torch.equal(f.get_slice("emb")[3:9], tensors["emb"][3:9])
    with pytest.raises(SafetensorError, match="File is closed"):
        f.keys()


def test_s3_numpy_and_fsspec_file_object(s3):
    arrays = {"x": np.arange(100, dtype=np.float32).reshape(10, 10), "y": np.ones(7, dtype=np.uint8)}
    url = _put_s3(s3, "np.safetensors", safetensors.numpy.save(arrays))
    got = safetensors.numpy.load_file(url, storage_options=s3.options)
    assert list(got) == ["x", "y"] and np.array_equal(got["x"], arrays["x"])
    with fsspec.open(url, "rb", **s3.options) as handle:
        with safe_open(handle, framework="np") as f:
            assert np.array_equal(f.get_tensor("y"), arrays["y"])


def test_s3_missing_object_and_bucket(s3, direct):
    with pytest.raises(FileNotFoundError):
        safe_open("s3://models/nope.safetensors", framework="pt", storage_options=s3.options, direct=direct)
    with pytest.raises(FileNotFoundError):
        safetensors.torch.load_file("s3://no-such-bucket/x.safetensors", storage_options=s3.options)


def test_s3_object_replaced_after_open(s3, direct):
    url = _put_s3(s3, "moving.safetensors", _file_bytes())
    with safe_open(url, framework="pt", storage_options=s3.options, head_bytes=64, direct=direct) as f:
        _put_s3(s3, "moving.safetensors", _file_bytes({k: v + 1 if v.dtype != torch.bool else v
                                                       for k, v in _tensors().items()}))
        with pytest.raises(RemoteObjectChangedError, match="changed since it was opened"):
            f.get_tensor("w")


def test_s3_save_file_multipart(s3):
    big = {"a": torch.arange(3 * 1024 * 1024, dtype=torch.float32), "b": torch.ones(10, dtype=torch.bfloat16)}
    url = "s3://models/saved.safetensors"
    safetensors.serialize_file(safetensors.torch._flatten_as_ptr(big, []), url, {"k": "v"},
                               storage_options=s3.options)
    body = s3.client().get_object(Bucket="models", Key="saved.safetensors")["Body"].read()
    assert body == safetensors.torch.save(big, {"k": "v"})
    _assert_same(safetensors.torch.load_file(url, storage_options=s3.options), {"b": big["b"], "a": big["a"]})


@pytest.mark.parametrize("module", ["numpy", "torch", "flax", "tensorflow", "paddle", "mlx"])
def test_every_framework_save_file_and_load_file_take_storage_options(s3, module, tmp_path):
    mod = pytest.importorskip(f"safetensors.{module}")
    for fn in (mod.save_file, mod.load_file):
        assert inspect.signature(fn).parameters["storage_options"].kind is inspect.Parameter.KEYWORD_ONLY
    if module not in ("numpy", "torch"):   # the others run in their own venvs (.ci/frameworks.sh)
        return
    value = np.arange(6, dtype=np.float32) if module == "numpy" else torch.arange(6, dtype=torch.float32)
    url = f"s3://models/{module}-options.safetensors"
    mod.save_file({"x": value}, url, storage_options=s3.options)   # no environment: the options reach s3fs
    assert (mod.load_file(url, storage_options=s3.options)["x"] == value).all()
    with pytest.raises(ValueError, match="storage_options is for URLs"):
        mod.save_file({"x": value}, str(tmp_path / "local.safetensors"), storage_options=s3.options)
    assert not os.path.exists(tmp_path / "local.safetensors")


def test_s3_save_file_failure_leaves_nothing(s3, monkeypatch):
    import s3fs

    calls = {"n": 0}
    real_write = s3fs.core.S3File.write

    def failing_write(self, data):
        calls["n"] += 1
        if calls["n"] == 4:   # after at least one 5 MiB part went up
            raise ConnectionError("network went away")
        return real_write(self, data)

    monkeypatch.setattr(s3fs.core.S3File, "write", failing_write)
    monkeypatch.setitem(safetensors.remote.DEFAULTS, "part_size", 5 * 1024 * 1024)
    big = {"a": torch.arange(4 * 1024 * 1024, dtype=torch.float32)}
    with pytest.raises(ConnectionError):
        safetensors.serialize_file(safetensors.torch._flatten_as_ptr(big, []), "s3://models/broken.safetensors",
                                   storage_options=s3.options)
    assert calls["n"] == 4
    client = s3.client()
    listed = client.list_objects_v2(Bucket="models", Prefix="broken")
    assert listed.get("KeyCount", 0) == 0
    assert not client.list_multipart_uploads(Bucket="models").get("Uploads")


# --------------------------------------------------------------------------
# reading: nginx
# --------------------------------------------------------------------------

def test_nginx_http_load(nginx):
    tensors = _tensors()
    (nginx.root_path / "m.safetensors").write_bytes(_file_bytes(tensors))
    url = f"{nginx.url}/m.safetensors"
    _assert_same(safetensors.torch.load_file(url), tensors)
    # small chunks: many concurrent ranged GETs, coalesced across tensors
    with safe_open(url, framework="pt", chunk_size=100, concurrency=8, head_bytes=16) as f:
        _assert_same(f.get_tensors(), tensors)


def test_nginx_404_403(nginx):
    with pytest.raises(FileNotFoundError):
        safetensors.torch.load_file(f"{nginx.url}/missing.safetensors")
    forbidden = nginx.root_path / "forbidden"
    forbidden.mkdir(exist_ok=True)
    (forbidden / "x.safetensors").write_bytes(_file_bytes())
    with pytest.raises(PermissionError):
        safetensors.torch.load_file(f"{nginx.url}/forbidden/x.safetensors")


def test_nginx_object_replaced_mid_load(nginx):
    path = nginx.root_path / "swap.safetensors"
    path.write_bytes(_file_bytes())
    with safe_open(f"{nginx.url}/swap.safetensors", framework="pt", head_bytes=64) as f:
        other = _file_bytes({"w": torch.zeros(40, 24)})
        path.write_bytes(other + b" " * 10)   # new size -> new ETag
        with pytest.raises(RemoteObjectChangedError):
            f.get_tensor("w")


# --------------------------------------------------------------------------
# header: request budget and the local reader's rules
# --------------------------------------------------------------------------

def test_header_costs_at_most_two_ranged_reads(faults):
    data = _file_bytes()
    faults.put("/h.safetensors", data)
    url = faults.url + "/h.safetensors"
    with safe_open(url, framework="pt", head_bytes=4096) as f:
        f.keys(), f.metadata(), f.get_slice("w").get_shape()
        assert len(faults.gets("/h.safetensors")) == 1   # prefix + header in one read
        # that read is the open: size and ETag come with it, no HEAD request
        assert [r[0] for r in faults.requests if r[1] == "/h.safetensors"] == ["GET"]
    big_meta = {"k": "x" * 300_000}
    faults.put("/big.safetensors", _file_bytes(metadata=big_meta))
    with safe_open(faults.url + "/big.safetensors", framework="pt", head_bytes=4096) as f:
        assert f.metadata() == big_meta
        f.keys()
        gets = faults.gets("/big.safetensors")
        assert len(gets) == 2
        data_start = 8 + int.from_bytes(_file_bytes(metadata=big_meta)[:8], "little")
        assert int(gets[1][2].split("=")[1].split("-")[1]) == data_start - 1   # no tensor bytes


def _local_error(tmp_path, data):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(Exception) as info:
        with safe_open(str(path), framework="pt") as f:
            f.get_tensors()
    return info.value


HOSTILE = {
    "empty": b"",   # the open's ranged GET is answered 416
    "too_small": b"\x01\x00",
    "zip": b"PK\x03\x04" + b"\x00" * 60,   # the local reader names the format too
    "too_large": (10**9).to_bytes(8, "little") + b"{}",
    "bad_length": (100).to_bytes(8, "little") + b"{}      ",
    "bad_json": (8).to_bytes(8, "little") + b'{"a":1,}',
    "bad_utf8": (8).to_bytes(8, "little") + b'{"\xff":1} ',
    "incomplete": (72).to_bytes(8, "little") + b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'.ljust(72)
    + b"\x00" * 4,
    "overlap": (136).to_bytes(8, "little")
    + b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'.ljust(136)
    + b"\x00" * 4,
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_header_same_error_as_local(faults, tmp_path, case):
    data = HOSTILE[case]
    want = _local_error(tmp_path, data)
    faults.put(f"/hostile-{case}", data)
    with pytest.raises(type(want)) as got:
        with safe_open(f"{faults.url}/hostile-{case}", framework="pt", head_bytes=16) as f:
            f.get_tensors()
    assert str(got.value) == str(want)


# --------------------------------------------------------------------------
# slices: only the rows asked for
# --------------------------------------------------------------------------

@pytest.mark.parametrize("key", [
    np.s_[3:9], np.s_[5], np.s_[-1], np.s_[::7], np.s_[30:2:-3], np.s_[10:10], np.s_[2:5, 1:4],
    np.s_[..., 0], np.s_[:, None], np.s_[[0, 5]],
])
def test_get_slice_matches_local(faults, tmp_path, key):
    tensors = _tensors()
    data = _file_bytes(tensors)
    local = tmp_path / "l.safetensors"
    local.write_bytes(data)
    faults.put("/slice.safetensors", data)
    with safe_open(str(local), framework="pt") as lf:
        want = lf.get_slice("w")[key]
    with safe_open(faults.url + "/slice.safetensors", framework="pt", head_bytes=16) as f:
        before = len(faults.gets("/slice.safetensors"))
        got = f.get_slice("w")[key]
        new = faults.gets("/slice.safetensors")[before:]
    assert got.shape == want.shape and torch.equal(got, want)
    if key in (np.s_[5], np.s_[-1]):
        assert len(new) == 1
        first, last = (int(x) for x in new[0][2].split("=")[1].split("-"))
        assert last - first + 1 == 24 * 4   # one row of w


def test_get_slice_out_of_range(faults):
    faults.put("/s2.safetensors", _file_bytes())
    with safe_open(faults.url + "/s2.safetensors", framework="pt") as f:
        with pytest.raises(IndexError):
            f.get_slice("w")[40]
        with pytest.raises(SafetensorError, match="does not contain tensor"):
            f.get_slice("nope")


# --------------------------------------------------------------------------
# failures and retries
# --------------------------------------------------------------------------

@pytest.fixture
def _chunked():
    def open_(url, **kw):
        return safe_open(url, framework="pt", chunk_size=256, concurrency=4, head_bytes=16, backoff=0.001, **kw)
    return open_


def test_dropped_connections_are_retried(faults, _chunked):
    tensors = _tensors()
    faults.put("/drop.safetensors", _file_bytes(tensors), drop=3)
    with _chunked(faults.url + "/drop.safetensors") as f:
        _assert_same(f.get_tensors(), tensors)
    assert faults.faults["/drop.safetensors"]["drop"] == 0


def test_always_dropped_gives_oserror(faults, _chunked):
    faults.put("/dropall.safetensors", _file_bytes(), drop_all=True)
    with pytest.raises(OSError):
        with _chunked(faults.url + "/dropall.safetensors", retries=2) as f:
            f.get_tensors()


def test_truncated_body(faults, _chunked):
    faults.put("/trunc.safetensors", _file_bytes(), truncate=True)
    with pytest.raises(OSError, match="truncated|connection|Payload"):
        with _chunked(faults.url + "/trunc.safetensors", retries=1) as f:
            f.get_tensors()


def test_range_ignored_is_an_error(faults, _chunked):
    faults.put("/norange.safetensors", _file_bytes(), ignore_range=True)
    with pytest.raises(OSError):
        with _chunked(faults.url + "/norange.safetensors", retries=0) as f:
            f.get_tensors()


def test_stalled_server_times_out(faults, _chunked):
    faults.put("/stall.safetensors", _file_bytes(), stall=True)
    with pytest.raises(TimeoutError):
        with _chunked(faults.url + "/stall.safetensors", retries=1, timeout=0.3):
            pass


def test_http_403_404(faults):
    faults.put("/deny.safetensors", _file_bytes(), status=403)
    with pytest.raises(PermissionError):
        safetensors.torch.load_file(faults.url + "/deny.safetensors")
    with pytest.raises(FileNotFoundError):
        safetensors.torch.load_file(faults.url + "/absent.safetensors")


def test_object_replaced_mid_load(faults, _chunked):
    faults.put("/swap.safetensors", _file_bytes())
    with _chunked(faults.url + "/swap.safetensors") as f:
        faults.put("/swap.safetensors", _file_bytes({"w": torch.zeros(40, 24)}))
        with pytest.raises(RemoteObjectChangedError):
            f.get_tensors()


# --------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------

def test_paths_and_file_urls_stay_local(tmp_path):
    path = tmp_path / "l.safetensors"
    safetensors.torch.save_file(_tensors(), str(path))
    _assert_same(safetensors.torch.load_file(f"file://{path}"), _tensors())
    with safe_open(path, framework="pt") as f:
        assert isinstance(f, safe_open)
        assert type(f).__name__ == "safe_open"


def test_url_without_fsspec_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(ImportError, match="pip install fsspec"):
        safe_open("s3://bucket/key.safetensors", framework="pt")


def test_plain_http_needs_no_fsspec(faults, monkeypatch):
    tensors = _tensors()
    faults.put("/nofsspec.safetensors", _file_bytes(tensors))
    monkeypatch.setitem(sys.modules, "fsspec", None)
    _assert_same(safetensors.torch.load_file(faults.url + "/nofsspec.safetensors"), tensors)
    # http(s) has one request path: direct=False is for S3 only
    with safe_open(faults.url + "/nofsspec.safetensors", framework="pt", direct=False) as f:
        _assert_same(f.get_tensors(), tensors)


def test_http_storage_options(faults, monkeypatch):
    """storage_options headers go with every request (no fsspec involved);
    any other key (fsspec's http options) is refused, naming it."""
    path = "/options.safetensors"
    faults.put(path, _file_bytes())
    monkeypatch.setitem(sys.modules, "fsspec", None)
    options = {"headers": {"X-A": "1", "Authorization": "Basic dTpw"}}
    _assert_same(safetensors.torch.load_file(faults.url + path, storage_options=options), _tensors())
    seen = [h for m, p, h in faults.headers_seen if p == path]
    assert seen and all((h.get("X-A"), h.get("Authorization")) == ("1", "Basic dTpw") for h in seen)
    for bad in ({"headers": {}, "block_size": 5}, {"client_kwargs": {"auth": ("u", "p")}}):
        with pytest.raises(ValueError, match=next(k for k in bad if k != "headers")) as info:
            safe_open(faults.url + path, framework="pt", storage_options=bad)
        assert faults.url + path in str(info.value)


def test_framework_save_file_to_fsspec_file_and_url(s3, monkeypatch):
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "z": np.zeros(0, dtype=np.int16)}
    target = fsspec.open("s3://models/np-saved.safetensors", "wb", **s3.options)
    safetensors.numpy.save_file(arrays, target, metadata={"a": "b"})
    body = s3.client().get_object(Bucket="models", Key="np-saved.safetensors")["Body"].read()
    assert body == safetensors.numpy.save(arrays, metadata={"a": "b"})
    # the writers' alignment and digests (docs/integrity.md) reach a URL too
    options = {"alignment": 4096, "checksum": "sha256"}
    safetensors.numpy.save_file(arrays, fsspec.open("s3://models/np-aligned.safetensors", "wb", **s3.options),
                                metadata={"a": "b"}, **options)
    body = s3.client().get_object(Bucket="models", Key="np-aligned.safetensors")["Body"].read()
    assert body == safetensors.numpy.save(arrays, metadata={"a": "b"}, **options)
    # torch.save_file with a URL string: s3fs takes its settings from the environment
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    tensors = _tensors()
    safetensors.torch.save_file(tensors, "s3://models/pt-saved.safetensors")
    body = s3.client().get_object(Bucket="models", Key="pt-saved.safetensors")["Body"].read()
    assert body == safetensors.torch.save(tensors)
