"""Files written by upstream safetensors 0.8.0 load identically with ours.

The fixtures and manifest.json come from tests/fixtures/make_upstream_read_fixtures.py
(run in a throwaway venv with the upstream package); the manifest holds what
upstream itself returned when reading them.
"""

import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest

from safetensors import deserialize, safe_open

HERE = os.path.dirname(os.path.abspath(__file__))
FIXDIR = os.path.join(HERE, "fixtures", "upstream_read")
with open(os.path.join(FIXDIR, "manifest.json"), encoding="utf-8") as _fh:
    MANIFEST = json.load(_fh)
FILES = MANIFEST["files"]
IDS = [f["file"] for f in FILES]

BACKENDS = ["mmap", "pread"]

ML_NAMES = {"BF16": "bfloat16", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
            "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz"}


def path_of(entry):
    return os.path.join(FIXDIR, entry["file"])


def to_index(spec):
    out = []
    for c in spec:
        if c[0] == "s":
            out.append(slice(c[1], c[2], c[3]))
        elif c[0] == "i":
            out.append(c[1])
        elif c[0] == "e":
            out.append(Ellipsis)
        elif c[0] == "n":
            out.append(None)
    return tuple(out)


def torch_bytes(t):
    import torch
    t = t.contiguous()
    if t.dim() == 0:
        t = t.reshape(1)
    return t.view(-1).view(torch.uint8).numpy().tobytes()


def test_manifest_sane():
    assert MANIFEST["upstream_version"].startswith("0.8.0")
    assert len(FILES) >= 7
    total = sum(os.path.getsize(os.path.join(FIXDIR, f)) for f in os.listdir(FIXDIR))
    assert total < 300_000


@pytest.mark.parametrize("entry", FILES, ids=IDS)
def test_fixture_unchanged(entry):
    with open(path_of(entry), "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == entry["sha256"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fw", ["np", "pt"])
@pytest.mark.parametrize("entry", FILES, ids=IDS)
def test_keys_and_metadata(entry, fw, backend):
    if fw == "pt":
        pytest.importorskip("torch")
    with safe_open(path_of(entry), fw, backend=backend) as f:
        assert f.keys() == entry["keys"]
        assert f.offset_keys() == entry["offset_keys"]
        assert f.metadata() == entry["metadata"]
        for name, info in entry["tensors"].items():
            s = f.get_slice(name)
            assert s.get_dtype() == info["dtype"], name
            assert s.get_shape() == info["shape"], name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("entry", FILES, ids=IDS)
def test_torch_tensors_identical(entry, backend):
    pytest.importorskip("torch")
    with safe_open(path_of(entry), "pt", backend=backend) as f:
        got = f.get_tensors()
        assert list(got) == entry["offset_keys"]
        for name, info in entry["tensors"].items():
            for t in (f.get_tensor(name), got[name]):
                assert str(t.dtype) == info["torch_dtype"], name
                assert list(t.shape) == info["torch_shape"], name
                assert torch_bytes(t).hex() == info["hex"], name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("entry", FILES, ids=IDS)
def test_numpy_arrays_identical(entry, backend):
    loadable = all(i["dtype"] in ML_NAMES or i.get("numpy_dtype") is not None for i in entry["tensors"].values())
    with safe_open(path_of(entry), "np", backend=backend) as f:
        got = None
        if loadable and (importlib.util.find_spec("ml_dtypes") or
                         not any(i["dtype"] in ML_NAMES for i in entry["tensors"].values())):
            got = f.get_tensors()
            assert list(got) == entry["offset_keys"]
        for name, info in entry["tensors"].items():
            if info.get("numpy_dtype") is not None:
                if info["dtype"] in ML_NAMES:
                    pytest.importorskip("ml_dtypes")
                x = f.get_tensor(name)
                assert isinstance(x, np.ndarray)
                assert str(x.dtype) == info["numpy_dtype"], name
                assert list(x.shape) == info["numpy_shape"], name
                assert x.tobytes().hex() == info["numpy_hex"], name
                if got is not None:
                    assert got[name].tobytes() == x.tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("entry", FILES, ids=IDS)
def test_numpy_ml_dtypes_where_upstream_fails(entry, backend):
    # upstream looks up numpy.float8_* and fails; ours uses ml_dtypes
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with safe_open(path_of(entry), "np", backend=backend) as f:
        for name, info in entry["tensors"].items():
            if info["dtype"] not in ML_NAMES:
                continue
            x = f.get_tensor(name)
            assert x.dtype == np.dtype(getattr(ml_dtypes, ML_NAMES[info["dtype"]])), name
            assert list(x.shape) == info["shape"], name
            assert x.tobytes().hex() == info["hex"], name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fw", ["np", "pt"])
def test_recorded_slices(fw, backend):
    if fw == "pt":
        pytest.importorskip("torch")
    entry = next(e for e in FILES if e["slices"])
    n = 0
    with safe_open(path_of(entry), fw, backend=backend) as f:
        for rec in entry["slices"]:
            info = entry["tensors"][rec["name"]]
            if fw == "np" and info.get("numpy_dtype") is None:
                if info["dtype"] not in ML_NAMES:
                    continue
                pytest.importorskip("ml_dtypes")
            x = f.get_slice(rec["name"])[to_index(rec["index"])]
            if fw == "pt":
                assert list(x.shape) == rec["shape"], rec
                assert torch_bytes(x).hex() == rec["hex"], rec
            else:
                x = np.asarray(x)
                assert list(x.shape) == rec["shape"], rec
                assert np.ascontiguousarray(x).tobytes().hex() == rec["hex"], rec
            n += 1
    assert n >= 30


@pytest.mark.parametrize("entry", FILES, ids=IDS)
def test_deserialize_identical(entry):
    with open(path_of(entry), "rb") as fh:
        content = fh.read()
    out = deserialize(content)
    got = sorted([[n, d["dtype"], d["shape"], bytes(d["data"]).hex()] for n, d in out])
    assert got == entry["deserialize"]
    for _, d in out:
        assert type(d["data"]) is bytearray
