"""One handle for every byte source: the same reads over a local path and
over an http:// URL of the same file (nginx on 127.0.0.1) give identical
results, exception types and messages, and the handle is the same type.
A URL is a byte source under the C handle (safetensors.remote.open_source),
so every framework, device and slicing rule is the path's."""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(__file__))
import remote_servers  # noqa: E402
from conftest import WITH_S3  # noqa: E402

import safetensors.torch  # noqa: E402
from safetensors import remote, safe_open  # noqa: E402


def _tensors():
    gen = torch.Generator().manual_seed(2)
    return {
        "a": torch.randn(4, 5, generator=gen),
        "emb": torch.randn(300, 64, generator=gen).to(torch.bfloat16),
        "ids": torch.arange(17, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3, dtype=torch.float16),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
    }


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """(path, url) of the same file."""
    if remote_servers.nginx_binary() is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    root = tmp_path_factory.mktemp("www")
    (root / "m.safetensors").write_bytes(safetensors.torch.save(_tensors(), metadata={"k": "v"}))
    (root / "empty.safetensors").write_bytes(b"")
    with remote_servers.Nginx(str(root), str(tmp_path_factory.mktemp("nginx"))) as server:
        yield str(root / "m.safetensors"), f"{server.url}/m.safetensors"


def _outcome(call):
    """What a call gives, comparable across sources: a value or (type, message)."""
    try:
        return ("ok", call())
    except Exception as e:  # noqa: BLE001 - compared below
        return ("error", type(e), str(e))


def _same(got, want):
    assert got[0] == want[0], (got, want)
    if got[0] == "error":
        assert got[1:] == want[1:]
        return
    _assert_equal(got[1], want[1])


def _assert_equal(got, want):
    assert type(got) is type(want)
    if isinstance(want, dict):
        assert list(got) == list(want)
        for name in want:
            _assert_equal(got[name], want[name])
    elif isinstance(want, torch.Tensor):
        assert (got.dtype, got.shape, got.device) == (want.dtype, want.shape, want.device)
        if want.device.type != "meta":
            assert torch.equal(got, want)
    elif isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
    else:
        assert got == want


def _both(sources, framework, read, **kw):
    """read(handle) over the path and over the URL: the same outcome."""
    path, url = sources

    def over(target):
        def call():
            with safe_open(target, framework=framework, **kw) as f:
                return read(f)
        return _outcome(call)

    want = over(path)
    _same(over(url), want)
    return want


@pytest.mark.parametrize("framework", ["pt", "np"])
def test_names_metadata_and_tensors(sources, framework):
    _both(sources, framework, lambda f: f.keys())
    _both(sources, framework, lambda f: f.offset_keys())
    _both(sources, framework, lambda f: f.metadata())
    _both(sources, framework, lambda f: f.get_tensors())
    for name in _tensors():
        _both(sources, framework, lambda f: f.get_tensor(name))


@pytest.mark.parametrize("key", [
    np.s_[2:, -6], np.s_[2:, -5], np.s_[:, ::-2], np.s_["x"], np.s_[1], np.s_[..., 1:3], np.s_[None, 0],
    np.s_[::-1], np.s_[5], np.s_[1:3, 1:4:2], np.s_[[0, 3]],
])
@pytest.mark.parametrize("framework", ["pt", "np"])
def test_slices(sources, framework, key):
    want = _both(sources, framework, lambda f: f.get_slice("a")[key])
    if key in (np.s_[2:, -6], np.s_[5]):
        assert want[0] == "error" and issubclass(want[1], IndexError)


def test_strided_slice_of_a_large_tensor(sources):
    for key in (np.s_[::3], np.s_[10:200:7, 5:40], np.s_[::-5, ::2]):
        _both(sources, "pt", lambda f: f.get_slice("emb")[key])


@pytest.mark.parametrize("device", [0, "cuda:0", "meta", "bogus", "cpu", torch.device("cpu")])
@pytest.mark.parametrize("framework", ["pt", "np"])
def test_devices(sources, framework, device):
    _both(sources, framework, lambda f: f.get_tensor("a"), device=device)


def test_bad_arguments_and_closed_handle(sources):
    _both(sources, "pt", lambda f: f.get_tensor(3))
    _both(sources, "pt", lambda f: f.get_tensor("nope"))
    _both(sources, "pt", lambda f: f.get_slice("nope"))
    _both(sources, "nope", lambda f: f.keys())
    _both(sources, "pt", lambda f: f.keys(), backend="nope")

    def closed(f):
        f.__exit__(None, None, None)
        return [_outcome(call)[1:] for call in (f.keys, f.metadata, f.get_tensors, lambda: f.get_tensor("a"),
                                                lambda: f.get_slice("a"))]
    _both(sources, "pt", closed)


def test_empty_file(sources):
    """nginx answers the open's ranged GET of an empty file with 200 and no
    body: the same error as the empty local file."""
    path, url = (name.replace("m.safetensors", "empty.safetensors") for name in sources)
    _both((path, url), "pt", lambda f: f.keys())


def test_one_type(sources):
    path, url = sources
    with safe_open(path, framework="pt") as local, safe_open(url, framework="pt") as far:
        assert type(local) is type(far) is safe_open
        assert isinstance(far, safe_open)


def test_remote_arguments_are_refused_for_a_path(sources):
    path, url = sources
    with safe_open(url, framework="pt", chunk_size=64, concurrency=2, head_bytes=8, retries=0) as f:
        assert f.keys() == sorted(_tensors())
    with pytest.raises(ValueError, match="chunk_size is for URLs"):
        safe_open(path, framework="pt", chunk_size=64)
    with safe_open(path, framework="pt", storage_options=None) as f:   # what load_file passes
        assert f.keys() == sorted(_tensors())


def _count_read_many(monkeypatch):
    calls = []
    real = remote._Source.read_many

    def read_many(self, requests):
        calls.append([(offset, view.nbytes) for offset, view in requests])
        return real(self, requests)

    monkeypatch.setattr(remote._Source, "read_many", read_many)
    return calls


def test_one_read_many_for_every_tensor(sources, monkeypatch):
    path, url = sources
    data_bytes = os.path.getsize(path) - (8 + int.from_bytes(open(path, "rb").read(8), "little"))
    with safe_open(url, framework="pt", head_bytes=8) as f:
        calls = _count_read_many(monkeypatch)
        f.get_tensors()
        assert len(calls) == 1   # every tensor in one call, so its chunks run concurrently
        assert sum(n for _, n in calls[0]) == data_bytes
    calls.clear()
    safetensors.torch.load_file(url)
    assert [len(c) for c in calls[:2]] == [1, 1]   # the length prefix, the header
    assert len(calls) == 3 and sum(n for _, n in calls[2]) == data_bytes


def test_slice_reads_only_the_selected_bytes(sources, monkeypatch):
    path, url = sources
    with safe_open(url, framework="pt", head_bytes=8) as f:
        calls = _count_read_many(monkeypatch)
        f.get_slice("emb")[7]           # one row of 64 BF16
        f.get_slice("emb")[0:300:150]   # two rows far apart: each read alone, in one call
        f.get_slice("emb")[10:20:5]     # near: the span around them, as on a local pread file
    row, start = 128, calls[0][0][0] - 7 * 128
    assert calls == [[(start + 7 * row, row)], [(start, row), (start + 150 * row, row)],
                     [(start + 10 * row, 6 * row)]]


@WITH_S3
@pytest.mark.parametrize("framework", ["pt", "np"])
def test_every_source_gives_the_paths_outcomes(tmp_path, source, framework):
    """conftest.py's sources (S3 included): each read and each error is the
    local path's, value, exception type and message."""
    path = tmp_path / "m.safetensors"
    path.write_bytes(safetensors.torch.save(_tensors(), metadata={"k": "v"}))
    reads = [lambda f: f.keys(), lambda f: f.offset_keys(), lambda f: f.metadata(), lambda f: f.get_tensors(),
             lambda f: f.get_tensor("nope"), lambda f: f.get_slice("a").get_shape()]
    reads += [lambda f, name=name: f.get_tensor(name) for name in _tensors()]
    reads += [lambda f, key=key: f.get_slice("emb")[key]
              for key in (np.s_[7], np.s_[::-40, 3:9], np.s_[299:400], np.s_[300], np.s_[..., None, 1:5:2])]
    with safe_open(path, framework) as local, source.open(path, framework) as far:
        assert type(far) is type(local)
        for read in reads:
            _same(_outcome(lambda: read(far)), _outcome(lambda: read(local)))
    _same(_outcome(lambda: source.open(path, framework, device="bogus")),
          _outcome(lambda: safe_open(path, framework, device="bogus")))
