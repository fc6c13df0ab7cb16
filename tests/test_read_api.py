"""The Python read API of upstream 0.8.0 (docs/differences.md lists where we differ): safe_open and friends.

Tests taking `source` run on a local path and over http (S3 too where marked
WITH_S3) with the same assertions: conftest.py's byte sources."""

import gc
import importlib
import importlib.util
import os
import pathlib
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

import safetensors
from safetensors import SafetensorError, _safe_open_handle, deserialize, safe_open

from conftest import ALL_DTYPES, NUMPY_DTYPES, WITH_S3, build_bytes, nbytes_of, random_raw, tensor_entry as t


@pytest.fixture
def simple(mk):
    """Three tensors whose file order differs from name order, plus metadata."""
    rng = np.random.default_rng(0)
    b = rng.standard_normal((2, 3)).astype(np.float32)
    a = np.arange(5, dtype=np.int64) - 2
    c = np.array([[1, 0], [0, 1]], dtype=np.uint8)
    path = mk.arrays({"b": b, "c": c, "a": a}, metadata={"format": "pt", "x": "y"})
    return path, {"a": a, "b": b, "c": c}


# --------------------------------------------------------------------------
# exports
# --------------------------------------------------------------------------

def test_exports():
    for name in ["safe_open", "_safe_open_handle", "serialize", "serialize_file", "deserialize",
                 "TensorSpec", "SafetensorError", "__version__"]:
        assert hasattr(safetensors, name), name


def test_rust_module_reexports():
    rust = importlib.import_module("safetensors._safetensors_rust")
    assert rust.SafetensorError is SafetensorError
    assert rust.safe_open is safe_open
    assert rust.deserialize is deserialize
    for name in ["serialize", "serialize_file", "TensorSpec", "__version__", "_safe_open_handle"]:
        assert getattr(rust, name) is getattr(safetensors, name)


def test_version():
    # upstream's API level, then our build number; pyproject.toml is the one source
    import re
    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), encoding="utf-8") as f:
        written = re.search(r'^version = "([^"]+)"$', f.read(), re.M).group(1)
    assert re.fullmatch(r"0\.8\.0\+c\.[0-9]+", safetensors.__version__)
    assert safetensors.__version__ == written
    md = pytest.importorskip("importlib.metadata")
    try:
        v = md.version("safetensors")
    except md.PackageNotFoundError:
        pytest.skip("safetensors is not installed as a distribution")
    assert v == safetensors.__version__


def test_error_class():
    assert issubclass(SafetensorError, Exception)
    mod = importlib.import_module(SafetensorError.__module__)
    assert getattr(mod, SafetensorError.__name__) is SafetensorError
    e = SafetensorError("boom")
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is SafetensorError
    assert str(e2) == "boom"
    assert e2.args == ("boom",)


@WITH_S3
def test_raised_error_is_picklable(mk, source):
    path = mk.raw(b"\x00")
    with pytest.raises(SafetensorError) as ei:
        source.open(path, "np")
    e2 = pickle.loads(pickle.dumps(ei.value))
    assert type(e2) is SafetensorError
    assert str(e2) == "Error while deserializing header: header too small"


# --------------------------------------------------------------------------
# filename forms, open failures (the pathlib and os.PathLike forms: local file only)
# --------------------------------------------------------------------------

def test_filename_str_and_pathlib(simple):
    path, arrs = simple
    for fn in (path, pathlib.Path(path)):
        with safe_open(fn, "np") as f:
            np.testing.assert_array_equal(f.get_tensor("a"), arrs["a"])


def test_filename_bytes_or_pathlike(simple):
    path, arrs = simple

    class P:
        def __fspath__(self):
            return path

    with safe_open(P(), "np") as f:
        assert f.keys() == ["a", "b", "c"]


def test_missing_file(tmp_path, source):
    p = str(tmp_path / "does-not-exist.safetensors")
    with pytest.raises(FileNotFoundError) as ei:
        source.open(p, "np")
    assert "does-not-exist.safetensors" in str(ei.value)


def test_missing_file_pathlib(tmp_path):
    p = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError) as ei:
        safe_open(p, "pt" if importlib.util.find_spec("torch") else "np")
    assert "nope.safetensors" in str(ei.value)


def test_permission_denied(simple, source):
    path, _ = simple
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    os.chmod(path, 0)
    try:
        with pytest.raises(PermissionError) as ei:
            source.open(path, "np")
        assert os.path.basename(path) in str(ei.value)
    finally:
        os.chmod(path, 0o644)


def test_directory(tmp_path, source):
    with pytest.raises(OSError) as ei:
        source.open(str(tmp_path), "np")
    assert not isinstance(ei.value, FileNotFoundError) or True  # any OSError subclass is fine
    assert isinstance(ei.value, OSError)


def test_open_error_is_not_safetensor_error_for_missing(tmp_path, source):
    with pytest.raises(FileNotFoundError) as ei:
        source.open(str(tmp_path / "x"), "np")
    assert not isinstance(ei.value, SafetensorError)


# --------------------------------------------------------------------------
# framework
# --------------------------------------------------------------------------

@pytest.mark.parametrize("fw", ["np", "numpy"])
def test_framework_numpy(simple, fw, source):
    path, arrs = simple
    with source.open(path, fw) as f:
        x = f.get_tensor("b")
        assert type(x) is np.ndarray
        np.testing.assert_array_equal(x, arrs["b"])


@pytest.mark.parametrize("fw", ["pt", "torch", "pytorch"])
def test_framework_torch(simple, fw, torch, source):
    path, arrs = simple
    with source.open(path, fw) as f:
        x = f.get_tensor("b")
        assert isinstance(x, torch.Tensor)
        assert x.dtype == torch.float32
        assert x.device.type == "cpu"
        np.testing.assert_array_equal(x.numpy(), arrs["b"])


@pytest.mark.parametrize("fw,mod", [("tf", "tensorflow"), ("tensorflow", "tensorflow"), ("jax", "jax"),
                                    ("flax", "jax"), ("mlx", "mlx"), ("paddle", "paddle")])
def test_other_frameworks_if_installed(simple, fw, mod):   # a local file (another process)
    if importlib.util.find_spec(mod) is None:
        pytest.skip(f"{mod} not installed")
    path, arrs = simple
    # A process of its own: tensorflow and paddle crash in one process.
    code = ("import sys, numpy as np; from safetensors import safe_open\n"
            "with safe_open(sys.argv[1], sys.argv[2]) as f: print(np.asarray(f.get_tensor('b')).tolist())")
    out = subprocess.run([sys.executable, "-c", code, str(path), fw], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == str(arrs["b"].tolist())


@pytest.mark.parametrize("fw", ["xx", "PT", "Numpy", "", "torch ", "np\x00"])
def test_invalid_framework(simple, fw, source):
    path, _ = simple
    with pytest.raises(SafetensorError) as ei:
        source.open(path, fw)
    assert str(ei.value) == f"framework {fw} is invalid"


def test_invalid_framework_checked_before_import(simple, source):
    # an invalid name must be a SafetensorError, never ImportError/ModuleNotFoundError
    path, _ = simple
    with pytest.raises(SafetensorError):
        source.open(path, "tensorflowx")


@pytest.mark.parametrize("fw", [None, 1, b"np"])
def test_framework_wrong_type(simple, fw, source):
    path, _ = simple
    with pytest.raises(TypeError):
        source.open(path, fw)


def test_keyword_arguments(simple, source):
    path, arrs = simple
    with safe_open(filename=source(path), framework="np", device="cpu", backend="pread", **source.options) as f:
        np.testing.assert_array_equal(f.get_tensor("c"), arrs["c"])
    with pytest.raises(TypeError):
        source.open(path, "np", "cpu", "pread")  # backend is keyword-only


# --------------------------------------------------------------------------
# device
# --------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["cpu", None])
@pytest.mark.parametrize("fw", ["np", "pt"])
def test_device_cpu_forms(simple, device, fw, source):
    if fw == "pt":
        pytest.importorskip("torch")
    path, arrs = simple
    with source.open(path, fw, device=device) as f:
        x = f.get_tensor("a")
        np.testing.assert_array_equal(np.asarray(x), arrs["a"])
    with source.open(path, fw, device) as f:
        assert f.keys() == ["a", "b", "c"]


@pytest.mark.parametrize("device", ["cuda:x", "cuda:", "xpu:-"])
def test_device_bad_index_value_error(simple, device, source):
    path, _ = simple
    with pytest.raises(ValueError):
        source.open(path, "pt" if importlib.util.find_spec("torch") else "np", device=device)


@pytest.mark.parametrize("device", ["cuda:0:1", "gpu", "foo", "CPU", "cuda0", "cpu:0", "cpu\x00"])
def test_device_invalid_string(simple, device, source):
    path, _ = simple
    with pytest.raises(SafetensorError) as ei:
        source.open(path, "np", device=device)
    assert str(ei.value) == f"device {device} is invalid"


def test_device_invalid_objects(simple, source):
    path, _ = simple
    with pytest.raises(SafetensorError) as ei:
        source.open(path, "np", device=-1)
    assert str(ei.value) == "device -1 is invalid"
    with pytest.raises(SafetensorError) as ei:
        source.open(path, "np", device=1.5)
    assert str(ei.value) == "device 1.5 is invalid"


def test_device_torch_device_object(simple, torch, source):
    path, _ = simple
    # upstream rejects torch.device objects with SafetensorError("device {repr} is invalid");
    # accepting a cpu torch.device is an allowed improvement, but then it must work
    try:
        f = source.open(path, "pt", device=torch.device("cpu"))
    except SafetensorError as e:
        assert str(e) == f"device {torch.device('cpu')!r} is invalid"
    else:
        with f:
            x = f.get_tensor("a")
            assert x.device.type == "cpu"
            assert x.tolist() == [-2, -1, 0, 1, 2]


def test_device_mps_index(simple, source):
    path, _ = simple
    with pytest.raises(SafetensorError) as ei:
        source.open(path, "np", device="mps:1")
    assert str(ei.value) == "device mps:1 is invalid: only mps or mps:0 is supported"


@pytest.mark.parametrize("device,shown", [("cuda:0", "cuda:0"), ("cuda", "cuda:0"), ("cuda:3", "cuda:3"),
                                          ("mps", "mps"), ("mps:0", "mps"), ("npu:1", "npu:1"), ("xpu", "xpu:0"),
                                          ("xla:2", "xla:2"), ("hpu", "hpu:0"), ("mlu:0", "mlu:0"),
                                          ("musa", "musa:0"), (0, "0"), (2, "2")])
def test_device_not_supported_for_numpy(simple, device, shown, source):
    path, _ = simple
    for fw in ("np", "numpy"):
        with pytest.raises(SafetensorError) as ei:
            source.open(path, fw, device=device)
        assert str(ei.value) == f"Device {shown} is not supported for framework numpy"


# --------------------------------------------------------------------------
# backend
# --------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["mmap", "pread"])
@pytest.mark.parametrize("fw", ["np", "pt"])
def test_backends_equal(simple, backend, fw, source):
    if fw == "pt":
        pytest.importorskip("torch")
    path, arrs = simple
    with source.open(path, fw, backend=backend) as f:
        for k, v in arrs.items():
            x = f.get_tensor(k)
            np.testing.assert_array_equal(np.asarray(x), v)
            assert np.asarray(x).dtype == v.dtype


@pytest.mark.parametrize("backend", ["MMAP", "foo", "", "mmap ", "\u00e9"])
def test_backend_invalid(simple, backend, source):
    path, _ = simple
    with pytest.raises(SafetensorError) as ei:
        source.open(path, "np", backend=backend)
    assert str(ei.value) == f'backend "{backend}" is invalid (expected one of: "mmap", "pread")'


# upstream quotes the name Rust-Debug style: NUL as \0, '"' as \"
@pytest.mark.parametrize("backend,shown", [("mmap\x00", '"mmap\\0"'), ("pread\x00x", '"pread\\0x"'),
                                           ('a"b', '"a\\"b"')])
def test_backend_invalid_escaped(simple, backend, shown, source):
    path, _ = simple
    with pytest.raises(SafetensorError) as ei:
        source.open(path, "np", backend=backend)
    assert str(ei.value) == f'backend {shown} is invalid (expected one of: "mmap", "pread")'


# --------------------------------------------------------------------------
# handle methods
# --------------------------------------------------------------------------

def test_context_manager(simple, source):
    path, _ = simple
    f = source.open(path, "np")
    assert f.__enter__() is f
    assert not f.__exit__(None, None, None)
    with pytest.raises(SafetensorError, match="^File is closed$"):
        f.keys()


def test_exception_propagates_through_with(simple, source):
    path, _ = simple
    with pytest.raises(KeyError):
        with source.open(path, "np") as f:
            raise KeyError("x")
    with pytest.raises(SafetensorError, match="^File is closed$"):
        f.keys()


def test_usable_without_with(simple, source):
    path, arrs = simple
    f = source.open(path, "np")
    assert f.keys() == ["a", "b", "c"]
    np.testing.assert_array_equal(f.get_tensor("c"), arrs["c"])
    f.__exit__(None, None, None)
    with pytest.raises(SafetensorError):
        f.get_tensor("c")


def test_keys_sorted_offset_keys_file_order(mk, source):
    names = ["b", "a.9", "\u00e9", "B", "a.10", "aa", "a"]
    tensors = [(n, "U8", [1], bytes([i])) for i, n in enumerate(names)]
    path = mk.tensors(tensors)
    with source.open(path, "np") as f:
        assert f.keys() == ["B", "a", "a.10", "a.9", "aa", "b", "\u00e9"]
        assert f.offset_keys() == names
        k = f.keys()
        k.append("zzz")
        assert f.keys() == sorted(names)  # a new list each call
        for i, n in enumerate(names):
            assert f.get_tensor(n).tolist() == [i]


def test_keys_code_point_order_astral(mk, source):
    # UTF-16 order would put U+1F600 before U+FF5E; code point order does not
    names = ["\U0001f600", "\uff5e", "z"]
    path = mk.tensors([(n, "U8", [0], b"") for n in names])
    with source.open(path, "np") as f:
        assert f.keys() == ["z", "\uff5e", "\U0001f600"]


def test_metadata(simple, mk, source):
    path, _ = simple
    with source.open(path, "np") as f:
        md = f.metadata()
        assert md == {"format": "pt", "x": "y"}
        md["new"] = "1"
        assert f.metadata() == {"format": "pt", "x": "y"}
    path2 = mk.tensors([("a", "U8", [1], b"\x00")])
    with source.open(path2, "np") as f:
        assert f.metadata() is None


@WITH_S3
def test_get_tensors_offset_order(simple, source):
    path, arrs = simple
    with source.open(path, "np") as f:
        d = f.get_tensors()
        assert isinstance(d, dict)
        assert list(d) == ["b", "c", "a"]
        for k, v in arrs.items():
            np.testing.assert_array_equal(d[k], v)


def test_get_tensors_torch(simple, torch, source):
    path, arrs = simple
    with source.open(path, "pt") as f:
        d = f.get_tensors()
        assert list(d) == ["b", "c", "a"]
        assert d["a"].dtype == torch.int64
        for k, v in arrs.items():
            np.testing.assert_array_equal(d[k].numpy(), v)


def test_get_slice_meta(simple, source):
    path, arrs = simple
    with source.open(path, "np") as f:
        s = f.get_slice("b")
        assert s.get_shape() == [2, 3]
        assert isinstance(s.get_shape(), list)
        assert s.get_dtype() == "F32"
        assert f.get_slice("a").get_dtype() == "I64"
        np.testing.assert_array_equal(s[:], arrs["b"])


def test_unknown_tensor(simple, source):
    path, _ = simple
    for fw in ["np"] + (["pt"] if importlib.util.find_spec("torch") else []):
        with source.open(path, fw) as f:
            with pytest.raises(SafetensorError) as ei:
                f.get_tensor("nope")
            assert str(ei.value) == "File does not contain tensor nope"
            with pytest.raises(SafetensorError) as ei:
                f.get_slice("n\u00e9pe")
            assert str(ei.value) == "File does not contain tensor n\u00e9pe"


@WITH_S3
def test_closed_every_method(simple, source):
    path, _ = simple
    f = source.open(path, "np")
    f.__exit__(None, None, None)
    calls = [lambda: f.keys(), lambda: f.offset_keys(), lambda: f.metadata(),
             lambda: f.get_tensor("a"), lambda: f.get_tensors(), lambda: f.get_slice("a"),
             lambda: f.get_tensor("nope")]
    for c in calls:
        with pytest.raises(SafetensorError) as ei:
            c()
        assert str(ei.value) == "File is closed"


def test_closed_twice_is_harmless(simple, source):
    path, _ = simple
    f = source.open(path, "np")
    f.__exit__(None, None, None)
    f.__exit__(None, None, None)
    with pytest.raises(SafetensorError, match="^File is closed$"):
        f.offset_keys()


def test_many_handles_same_file(simple, source):
    path, arrs = simple
    hs = [source.open(path, "np", backend=("mmap", "pread")[i % 2]) for i in range(50)]
    for h in hs:
        np.testing.assert_array_equal(h.get_tensor("b"), arrs["b"])
    for h in hs:
        h.__exit__(None, None, None)


def test_handle_collected_without_exit(simple, source):
    path, arrs = simple
    for _ in range(200):
        f = source.open(path, "np")
        x = f.get_tensor("b")
        del f
    gc.collect()
    np.testing.assert_array_equal(x, arrs["b"])


def test_file_replaced_after_open(simple, mk):
    # the handle keeps reading the file it opened, even if the path is replaced
    # (local file only: a replaced URL is RemoteObjectChangedError, tests/test_remote.py)
    path, arrs = simple
    f = safe_open(path, "np")
    other = mk.arrays({"a": np.zeros(5, dtype=np.int64)})
    os.replace(other, path)
    np.testing.assert_array_equal(f.get_tensor("a"), arrs["a"])
    f.__exit__(None, None, None)


# --------------------------------------------------------------------------
# _safe_open_handle (a local file object)
# --------------------------------------------------------------------------

def test_safe_open_handle(simple):
    path, arrs = simple
    with open(path, "rb") as fobj:
        with _safe_open_handle(fobj, "np") as f:
            assert f.keys() == ["a", "b", "c"]
            assert f.metadata() == {"format": "pt", "x": "y"}
            np.testing.assert_array_equal(f.get_tensor("b"), arrs["b"])
    with open(path, "rb") as fobj:
        with _safe_open_handle(fobj, "np", backend="pread") as f:
            np.testing.assert_array_equal(f.get_tensor("a"), arrs["a"])


def test_safe_open_handle_torch(simple):
    pytest.importorskip("torch")
    path, arrs = simple
    with open(path, "rb") as fobj:
        with _safe_open_handle(fobj, "pt", device="cpu") as f:
            np.testing.assert_array_equal(f.get_tensor("b").numpy(), arrs["b"])


def test_safe_open_handle_errors(simple):
    path, _ = simple
    with open(path, "rb") as fobj:
        with pytest.raises(SafetensorError):
            _safe_open_handle(fobj, "nope")
    with pytest.raises(TypeError, match="file object with fileno"):
        _safe_open_handle(path, "np")


# --------------------------------------------------------------------------
# deserialize
# --------------------------------------------------------------------------

def test_deserialize(simple):
    path, arrs = simple
    content = open(path, "rb").read()
    out = deserialize(content)
    assert isinstance(out, list)
    d = {}
    for item in out:
        assert isinstance(item, tuple) and len(item) == 2
        name, info = item
        assert set(info) == {"shape", "dtype", "data"}
        assert type(info["data"]) is bytearray
        assert isinstance(info["shape"], list)
        d[name] = info
    assert set(d) == {"a", "b", "c"}
    assert d["b"]["dtype"] == "F32" and d["b"]["shape"] == [2, 3]
    assert bytes(d["b"]["data"]) == arrs["b"].tobytes()
    assert d["a"]["dtype"] == "I64" and bytes(d["a"]["data"]) == arrs["a"].tobytes()
    assert d["c"]["dtype"] == "U8" and bytes(d["c"]["data"]) == arrs["c"].tobytes()
    # copies: mutating one result does not affect another call
    d["b"]["data"][0] ^= 0xFF
    again = dict(deserialize(content))
    assert bytes(again["b"]["data"]) == arrs["b"].tobytes()


def test_deserialize_empty_and_scalar():
    content = build_bytes({"s": t("F32", [], [0, 4]), "e": t("I32", [0, 2], [4, 4])}, struct.pack("<f", 1.5))
    d = dict(deserialize(content))
    assert d["s"] == {"shape": [], "dtype": "F32", "data": bytearray(struct.pack("<f", 1.5))}
    assert d["e"] == {"shape": [0, 2], "dtype": "I32", "data": bytearray()}


def test_deserialize_error_prefix():
    with pytest.raises(SafetensorError) as ei:
        deserialize(b"\x01")
    assert str(ei.value) == "Error while deserializing: header too small"


def test_deserialize_wrong_type():
    with pytest.raises(TypeError):
        deserialize("not bytes")
    with pytest.raises(TypeError):
        deserialize(None)


# --------------------------------------------------------------------------
# dtypes: torch
# --------------------------------------------------------------------------

TORCH_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "I16": "int16", "U16": "uint16", "F16": "float16", "BF16": "bfloat16", "I32": "int32",
    "U32": "uint32", "F32": "float32", "C64": "complex64", "F64": "float64", "I64": "int64",
    "U64": "uint64", "F4": "float4_e2m1fn_x2",
}


@pytest.fixture
def all_dtypes_file(mk):
    rng = np.random.default_rng(1)
    entries = []
    for dt in ALL_DTYPES:
        if dt in ("F6_E2M3", "F6_E3M2"):
            continue
        shape = [3, 4]
        entries.append((dt, dt, shape, random_raw(rng, dt, shape)))
    return mk.tensors(entries), {e[0]: e for e in entries}


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_torch_all_dtypes(all_dtypes_file, backend, torch, source):
    path, entries = all_dtypes_file
    with source.open(path, "pt", backend=backend) as f:
        for name, (_, dt, shape, raw) in entries.items():
            x = f.get_tensor(name)
            assert x.dtype == getattr(torch, TORCH_NAMES[dt]), dt
            exp_shape = shape[:-1] + [shape[-1] // 2] if dt == "F4" else shape
            assert list(x.shape) == exp_shape, dt
            assert x.is_contiguous()
            assert bytes(x.contiguous().view(-1).view(torch.uint8).numpy().tobytes()) == raw, dt


@WITH_S3
def test_torch_values(mk, torch, source):
    vals = {
        "F32": (np.array([1.5, -2.0, 3.25], np.float32), torch.float32),
        "F16": (np.array([1.5, -2.0, 65504], np.float16), torch.float16),
        "I64": (np.array([-(2**63), 2**63 - 1, 0], np.int64), torch.int64),
        "U64": (np.array([2**64 - 1, 0, 5], np.uint64), torch.uint64),
        "U32": (np.array([2**32 - 1, 0, 5], np.uint32), torch.uint32),
        "U16": (np.array([65535, 0, 5], np.uint16), torch.uint16),
        "C64": (np.array([1 + 2j, -1j, 3], np.complex64), torch.complex64),
        "BOOL": (np.array([True, False, True]), torch.bool),
    }
    path = mk.tensors([(k, k, [3], v.tobytes()) for k, (v, _) in vals.items()])
    with source.open(path, "pt") as f:
        for k, (v, tdt) in vals.items():
            x = f.get_tensor(k)
            assert x.dtype == tdt
            if tdt in (torch.uint16, torch.uint32, torch.uint64):
                assert x.tolist() == v.tolist()
            else:
                np.testing.assert_array_equal(x.numpy(), v)


def test_torch_bf16_fp8_values(mk, torch, source):
    bf = torch.tensor([2.25, 1.0, -3.0], dtype=torch.bfloat16)
    f8 = torch.tensor([0.5, -448.0, 1.0], dtype=torch.float8_e4m3fn)
    f5 = torch.tensor([0.5, -2.0, 1.0], dtype=torch.float8_e5m2)
    em = torch.tensor([0.5, 2.0, 1024.0], dtype=torch.float8_e8m0fnu)
    raw = lambda x: x.view(torch.uint8).numpy().tobytes()
    path = mk.tensors([("bf", "BF16", [3], raw(bf)), ("f8", "F8_E4M3", [3], raw(f8)),
                       ("f5", "F8_E5M2", [3], raw(f5)), ("em", "F8_E8M0", [3], raw(em))])
    with source.open(path, "pt") as f:
        assert torch.equal(f.get_tensor("bf"), bf)
        assert f.get_tensor("f8").float().tolist() == [0.5, -448.0, 1.0]
        assert f.get_tensor("f5").float().tolist() == [0.5, -2.0, 1.0]
        assert f.get_tensor("em").float().tolist() == [0.5, 2.0, 1024.0]


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_torch_f4_shapes(mk, backend, torch, source):
    path = mk.tensors([("a", "F4", [2, 6], bytes(range(6))), ("b", "F4", [4], b"\x12\x34"),
                       ("e", "F4", [3, 0], b"")])
    with source.open(path, "pt", backend=backend) as f:
        a = f.get_tensor("a")
        assert a.dtype == torch.float4_e2m1fn_x2 and list(a.shape) == [2, 3]
        assert a.view(torch.uint8).numpy().tobytes() == bytes(range(6))
        assert list(f.get_tensor("b").shape) == [2]
        assert f.get_slice("a").get_shape() == [2, 6]


@pytest.mark.parametrize("fw", ["np", "pt"])
@pytest.mark.parametrize("dt", ["F6_E2M3", "F6_E3M2"])
def test_f6_not_loadable(mk, fw, dt, source):
    if fw == "pt":
        pytest.importorskip("torch")
    path = mk.tensors([("a", dt, [4], bytes(3))])
    with source.open(path, fw) as f:
        assert f.get_slice("a").get_dtype() == dt
        with pytest.raises(SafetensorError) as ei:
            f.get_tensor("a")
        assert dt in str(ei.value)


# --------------------------------------------------------------------------
# dtypes: numpy
# --------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_numpy_plain_dtypes(all_dtypes_file, backend, source):
    path, entries = all_dtypes_file
    with source.open(path, "np", backend=backend) as f:
        for dt, npdt in NUMPY_DTYPES.items():
            _, _, shape, raw = entries[dt]
            x = f.get_tensor(dt)
            assert type(x) is np.ndarray
            assert x.dtype == np.dtype(npdt), dt
            assert list(x.shape) == shape
            assert x.flags.c_contiguous
            assert x.tobytes() == raw


def test_numpy_values(mk, source):
    arrs = {"f": np.array([[1.5, -2], [np.inf, np.nan]], np.float32),
            "c": np.array([1 + 2j, 3 - 4j], np.complex64),
            "b": np.array([True, False]),
            "u64": np.array([2**64 - 1], np.uint64)}
    path = mk.arrays(arrs)
    with source.open(path, "np") as f:
        for k, v in arrs.items():
            np.testing.assert_array_equal(f.get_tensor(k), v)


ML_NAMES = {"BF16": "bfloat16", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
            "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz"}


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_numpy_ml_dtypes(all_dtypes_file, backend, source):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    path, entries = all_dtypes_file
    with source.open(path, "np", backend=backend) as f:
        for dt, mlname in ML_NAMES.items():
            _, _, shape, raw = entries[dt]
            x = f.get_tensor(dt)
            assert x.dtype == np.dtype(getattr(ml_dtypes, mlname)), dt
            assert list(x.shape) == shape
            assert x.tobytes() == raw


def test_numpy_bf16_values(mk, source):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    path = mk.tensors([("a", "BF16", [2, 2], bytes.fromhex("1040803f803f803f"))])
    with source.open(path, "np") as f:
        x = f.get_tensor("a")
        assert x.dtype == np.dtype(ml_dtypes.bfloat16)
        assert x.astype(np.float32).tolist() == [[2.25, 1.0], [1.0, 1.0]]
