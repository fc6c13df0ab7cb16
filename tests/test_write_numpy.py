"""safetensors.numpy and the low-level writer: round trips, memory layouts,
byte order, TensorSpec / 0.7 dict inputs, file modes and failure safety
(the destination keeps its old content, no temporary file is left behind)."""

import fnmatch
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from safetensors import SafetensorError, TensorSpec, serialize, serialize_file
from safetensors.numpy import _is_little_endian, load, load_file, save, save_file

PLAIN = [np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.float16, np.int32, np.uint32, np.float32,
         np.int64, np.uint64, np.float64, np.complex64]
ML = ["bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "float8_e4m3fnuz", "float8_e5m2fnuz"]


def rand(dtype, shape, seed=0):
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    raw = np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8)
    if dt == np.bool_:
        raw %= 2
    return raw.view(dt).reshape(shape)


def header_of(data):
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n])


def listing(d):
    return sorted(os.listdir(d))


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", PLAIN, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3), (3, 0, 2), (1, 2, 1, 3)], ids=str)
def test_roundtrip_plain(dtype, shape, tmp_path):
    a = rand(dtype, shape, seed=len(shape))
    data = save({"a": a})
    out = load(data)
    assert out["a"].dtype == a.dtype and out["a"].shape == a.shape
    assert out["a"].tobytes() == a.tobytes()
    p = tmp_path / "a.safetensors"
    save_file({"a": a}, p)
    assert p.read_bytes() == data
    out2 = load_file(p)
    assert out2["a"].dtype == a.dtype and out2["a"].tobytes() == a.tobytes() and out2["a"].shape == a.shape


@pytest.mark.parametrize("name", ML)
def test_roundtrip_ml_dtypes(name, tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dt = np.dtype(getattr(ml_dtypes, name))
    a = np.frombuffer(bytes(range(1, 25)), dtype=dt).reshape(2, -1).copy()
    data = save({"x": a})
    out = load(data)
    assert out["x"].dtype == dt and out["x"].tobytes() == a.tobytes() and out["x"].shape == a.shape
    p = tmp_path / "x.safetensors"
    save_file({"x": a}, p)
    out2 = load_file(p)
    assert out2["x"].dtype == dt and out2["x"].tobytes() == a.tobytes()


def test_float4_ml_dtypes_rejected():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with pytest.raises(SafetensorError, match="Unknown dtype"):
        save({"x": np.zeros(4, dtype=ml_dtypes.float4_e2m1fn)})


def test_unsupported_dtypes_rejected():
    for arr in (np.zeros(2, np.complex128), np.zeros(2, "datetime64[s]"), np.array(["a"]), np.zeros(2, object)):
        with pytest.raises(SafetensorError, match="Unknown dtype"):
            save({"x": arr})


def test_load_writable_and_order(tmp_path):
    arrs = {"z": np.zeros(3, np.float32), "a": np.ones(2, np.int64), "m": np.arange(4, dtype=np.uint8)}
    data = save(arrs)
    out = load(data)
    assert list(out) == ["a", "z", "m"]  # file (offset) order
    out["a"][0] = 5
    assert out["a"][0] == 5


def test_numpy_scalar_values():
    out = load(save({"s": np.float32(1.5), "i": np.int64(-3)}))
    assert out["s"].shape == () and out["s"] == np.float32(1.5)
    assert out["i"].dtype == np.int64 and out["i"] == -3


def test_non_array_value():
    with pytest.raises(TypeError) as e:
        save({"a": np.zeros(1), "b": [1, 2]})
    assert str(e.value) == "Key `b` is invalid, expected numpy.ndarray but received <class 'list'>"
    assert isinstance(e.value, AttributeError)  # upstream raised AttributeError here


def test_not_a_dict():
    with pytest.raises(TypeError, match="Expected a dict"):
        save([np.zeros(1)])


def test_is_little_endian():
    assert _is_little_endian(np.zeros(1, "<f4"))
    assert not _is_little_endian(np.zeros(1, ">f4"))
    assert _is_little_endian(np.zeros(1, np.uint8))
    assert _is_little_endian(np.zeros(1, "=f4")) == (sys.byteorder == "little")


# ---------------------------------------------------------------------------
# memory layouts and byte order (upstream 0.8.0 #825 writes these wrong)
# ---------------------------------------------------------------------------

LAYOUTS = {
    "fortran": lambda a: np.asfortranarray(a),
    "transposed": lambda a: a.T,
    "strided": lambda a: a[::2, ::3],
    "negative": lambda a: a[::-1, ::-2],
    "column": lambda a: a[:, 1],
    "broadcast": lambda a: np.broadcast_to(a[:1], a.shape),
    "big_endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "big_endian_fortran": lambda a: np.asfortranarray(a.astype(a.dtype.newbyteorder(">"))),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.complex64, np.float64, np.uint8])
def test_layouts_written_in_c_order(layout, dtype, tmp_path):
    base = rand(dtype, (6, 9), seed=3)
    a = LAYOUTS[layout](base)
    expected_le = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"))
    data = save({"a": a})
    assert data[-expected_le.nbytes:] == expected_le.tobytes()
    assert header_of(data)["a"]["shape"] == list(a.shape)
    out = load(data)["a"]
    assert np.array_equal(out, a)
    assert out.dtype.byteorder in ("<", "=", "|")
    p = tmp_path / "l.safetensors"
    save_file({"a": a}, p)
    assert p.read_bytes() == data


def test_input_not_modified():
    a = np.asfortranarray(rand(np.float32, (3, 4)))
    b = a.astype(">f4")
    before = (a.copy(), b.copy())
    d = {"a": a, "b": b}
    save(d)
    assert list(d) == ["a", "b"] and d["a"] is a and d["b"] is b
    assert np.array_equal(a, before[0]) and np.array_equal(b, before[1]) and b.dtype.byteorder == ">"


# ---------------------------------------------------------------------------
# TensorSpec and the 0.7 dict form
# ---------------------------------------------------------------------------

def test_tensorspec_getters_and_repr():
    arr = np.zeros((2, 3), np.float32)
    s = TensorSpec(dtype="float32", shape=[2, 3], data_ptr=arr.ctypes.data, data_len=24)
    assert s.dtype == "F32" and s.shape == [2, 3] and s.data_ptr == arr.ctypes.data and s.data_len == 24
    assert repr(s) == f"TensorSpec(dtype='F32', shape=[2, 3], data_ptr={arr.ctypes.data}, data_len=24)"
    f4 = TensorSpec(dtype="float4_e2m1fn_x2", shape=[3, 2], data_ptr=arr.ctypes.data, data_len=6)
    assert f4.shape == [3, 4] and f4.dtype == "F4"
    with pytest.raises(TypeError):
        TensorSpec("float32", [2], arr.ctypes.data, 8)  # keyword-only


def test_tensorspec_unknown_dtype_message():
    with pytest.raises(SafetensorError) as e:
        TensorSpec(dtype="F32", shape=[1], data_ptr=0, data_len=4)
    assert str(e.value) == (
        'Unknown dtype "F32". Supported dtypes: bool, int8, uint8, int16, uint16, int32, uint32, int64, uint64,'
        " float16, float32, float64, bfloat16, float8_e4m3fn, float8_e4m3fnuz, float8_e5m2, float8_e5m2fnuz,"
        " float8_e8m0fnu, float4_e2m1fn_x2, complex64"
    )


def test_tensorspec_wrong_length():
    arr = np.zeros(4, np.float32)
    s = TensorSpec(dtype="float32", shape=[3], data_ptr=arr.ctypes.data, data_len=16)
    with pytest.raises(SafetensorError) as e:
        serialize({"a": s})
    assert str(e.value) == "Error while serializing: invalid shape, data type, or offset for tensor"


def test_dict_form_is_a_type_error_as_in_0_8_0(tmp_path):
    """0.8.0 removed the 0.7 dict form; its TypeError text, for both entry points."""
    text = "argument 'tensor_dict': 'dict' object is not an instance of 'TensorSpec'"
    for value in ({"dtype": "int16", "shape": [2, 3], "data": b"\0" * 12}, {"dtype": "int16", "shape": [1]}):
        with pytest.raises(TypeError) as e:
            serialize({"x": value})
        assert str(e.value) == text
        with pytest.raises(TypeError) as e:
            serialize_file({"x": value}, tmp_path / "d.safetensors")
        assert str(e.value) == text
        assert not (tmp_path / "d.safetensors").exists()


def test_serialize_metadata_must_be_str():
    arr = np.zeros(1, np.uint8)
    with pytest.raises(TypeError):
        save({"a": arr}, metadata={"k": 1})
    with pytest.raises(TypeError):
        save({"a": arr}, metadata={1: "v"})


def test_header_too_large():
    # > 100,000,000 bytes of header: refused on write too (docs/format.md §5.4)
    name = "n" * 1000
    arr = np.zeros(0, np.uint8)
    d = {f"{i:07d}{name}": arr for i in range(100_001)}
    with pytest.raises(SafetensorError) as e:
        save(d)
    assert str(e.value) == "Error while serializing: header too large"


# ---------------------------------------------------------------------------
# file modes
# ---------------------------------------------------------------------------

def test_new_file_mode_honours_umask(tmp_path):
    old = os.umask(0o027)
    try:
        p = tmp_path / "u.safetensors"
        save_file({"a": np.zeros(2)}, p)
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    finally:
        os.umask(old)
    old = os.umask(0o002)
    try:
        p2 = tmp_path / "v.safetensors"
        save_file({"a": np.zeros(2)}, p2)
        assert stat.S_IMODE(os.stat(p2).st_mode) == 0o664
    finally:
        os.umask(old)


def test_existing_file_mode_kept(tmp_path):
    p = tmp_path / "keep.safetensors"
    save_file({"a": np.zeros(2)}, p)
    os.chmod(p, 0o604)
    save_file({"b": np.ones(3)}, p)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o604
    assert list(load_file(p)) == ["b"]


def test_save_through_symlink_or_pathlike(tmp_path):
    p = tmp_path / "p.safetensors"
    save_file({"a": np.arange(3)}, os.fspath(p))
    save_file({"a": np.arange(4)}, p)
    assert load_file(p)["a"].shape == (4,)
    assert listing(tmp_path) == ["p.safetensors"]


# ---------------------------------------------------------------------------
# failure safety
# ---------------------------------------------------------------------------

OLD = {"old": np.arange(7, dtype=np.int32)}


def _old_file(tmp_path):
    p = tmp_path / "dest.safetensors"
    save_file(OLD, p)
    return p, p.read_bytes()


def test_exception_mid_save_leaves_old_file(tmp_path):
    p, before = _old_file(tmp_path)
    bad = {"a": np.zeros(3), "b": np.ones(2), "c": "not an array"}
    with pytest.raises(TypeError):
        save_file(bad, p)
    assert p.read_bytes() == before and listing(tmp_path) == ["dest.safetensors"]
    # an error found by the writer itself (bad dtype after good tensors)
    with pytest.raises(SafetensorError):
        save_file({"a": np.zeros(3), "z": np.zeros(2, np.complex128)}, p)
    assert p.read_bytes() == before and listing(tmp_path) == ["dest.safetensors"]
    # a data length mismatch found late
    arr = np.zeros(100, np.float32)
    specs = {"a": TensorSpec(dtype="float32", shape=[10], data_ptr=arr.ctypes.data, data_len=40),
             "b": TensorSpec(dtype="float32", shape=[10], data_ptr=arr.ctypes.data, data_len=41)}
    with pytest.raises(SafetensorError):
        serialize_file(specs, p)
    assert p.read_bytes() == before and listing(tmp_path) == ["dest.safetensors"]


def test_torch_exception_mid_save_leaves_old_file(tmp_path, torch):
    import safetensors.torch as st

    p, before = _old_file(tmp_path)
    with pytest.raises(ValueError):
        st.save_file({"a": torch.zeros(3), "b": torch.ones(2), "c": 5}, p)
    with pytest.raises(ValueError):
        st.save_file({"a": torch.zeros(3), "b": torch.zeros(3, 4).t()}, p)
    assert p.read_bytes() == before and listing(tmp_path) == ["dest.safetensors"]


def test_missing_directory(tmp_path):
    with pytest.raises((SafetensorError, OSError)):
        save_file({"a": np.zeros(1)}, tmp_path / "nope" / "x.safetensors")
    assert listing(tmp_path) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    p, before = _old_file(d)
    os.chmod(d, 0o555)
    try:
        with pytest.raises((SafetensorError, OSError)) as e:
            save_file({"a": np.zeros(10)}, p)
        assert "ermission" in str(e.value)
        assert p.read_bytes() == before and listing(d) == ["dest.safetensors"]
    finally:
        os.chmod(d, 0o755)


FSIZE_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np
    from safetensors import SafetensorError
    from safetensors.numpy import save_file
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    try:
        save_file({"big": np.ones(4 << 20, dtype=np.uint8), "small": np.zeros(3)}, sys.argv[1])
    except SafetensorError as e:
        print("SafetensorError:", e)
    except OSError as e:
        print("OSError:", e)
    else:
        print("NO ERROR")
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics")
def test_file_size_limit_full_disk(tmp_path):
    """A write that fails part way (EFBIG, like a full disk): works as root too."""
    p, before = _old_file(tmp_path)
    # Under the LeakSanitizer pass the child's exit-time leak scan cannot run
    # with a 1 MiB file-size limit (its tracer crashes): this child checks
    # EFBIG handling, the rest of the suite checks leaks.
    env = dict(os.environ)
    if "ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    r = subprocess.run([sys.executable, "-c", FSIZE_CHILD, str(p)], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "NO ERROR" not in r.stdout and ("SafetensorError" in r.stdout or "OSError" in r.stdout), r.stdout
    assert "too large" in r.stdout.lower(), r.stdout
    assert p.read_bytes() == before
    assert listing(tmp_path) == ["dest.safetensors"]


KILL_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from safetensors.numpy import save_file
    arrays = {f"t{i}": np.full(32 << 20, i, dtype=np.uint8) for i in range(int(sys.argv[2]))}
    print("ready", flush=True)
    save_file(arrays, sys.argv[1])
    print("done", flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX only")
def test_killed_mid_save_old_file_intact(tmp_path):
    p, before = _old_file(tmp_path)
    caught_mid_write = False
    for n_tensors in (8, 24):  # 256 MiB, then 768 MiB
        proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(p), str(n_tensors)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            deadline = time.time() + 60
            while time.time() < deadline:
                tmps = [n for n in os.listdir(tmp_path) if n != "dest.safetensors"]
                if tmps or proc.poll() is not None:
                    break
                time.sleep(0.0005)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                caught_mid_write = True
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        content = p.read_bytes()[:64]
        if caught_mid_write and proc.returncode == -signal.SIGKILL:
            # the destination is the old file, byte for byte
            assert p.read_bytes() == before
            # the only thing a kill may leave is the writer's temp file: .st-<pid>-<random>.tmp
            for n in os.listdir(tmp_path):
                if n != "dest.safetensors":
                    assert fnmatch.fnmatch(n, ".st-*.tmp"), n
                    os.unlink(tmp_path / n)
            break
        # the save finished before the kill: the new file is complete
        assert content != before[:64]
        assert len(load_file(p)) == n_tensors
        save_file(OLD, p)
        caught_mid_write = False
    assert caught_mid_write, "the writer was too fast to be killed mid-write"
    assert load_file(p)["old"].tolist() == list(range(7))


# ---------------------------------------------------------------------------
# flax / tensorflow / mlx modules (frameworks faked: only the save side's numpy
# conversion and the "caller's dict is not mutated" contract are checked here)
# ---------------------------------------------------------------------------

class _FakeTensor:
    def __init__(self, arr):
        self._arr = np.asarray(arr)

    def numpy(self):
        return self._arr

    def __array__(self, dtype=None, copy=None):
        return self._arr if dtype is None else self._arr.astype(dtype)


def _fake_frameworks(monkeypatch):
    import types

    made = []

    def wrap(v, *a, **k):
        made.append(v)
        return _FakeTensor(v)

    jax = types.ModuleType("jax")
    jnp = types.ModuleType("jax.numpy")
    jnp.array = wrap
    jax.numpy = jnp
    tf = types.ModuleType("tensorflow")
    tf.convert_to_tensor = wrap
    mlx = types.ModuleType("mlx")
    mx = types.ModuleType("mlx.core")
    mx.array = wrap
    mlx.core = mx
    for name, mod in {"jax": jax, "jax.numpy": jnp, "tensorflow": tf, "mlx": mlx, "mlx.core": mx}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return made


@pytest.mark.parametrize("modname", ["flax", "tensorflow", "mlx"])
def test_other_frameworks_roundtrip_without_mutation(modname, monkeypatch, tmp_path):
    import importlib

    _fake_frameworks(monkeypatch)
    mod = importlib.import_module(f"safetensors.{modname}")
    tensors = {"a": _FakeTensor(np.arange(6, dtype=np.float32).reshape(2, 3)),
               "b": _FakeTensor(np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)))}
    original = dict(tensors)
    data = mod.save(tensors, metadata={"format": modname})
    assert tensors == original and all(isinstance(v, _FakeTensor) for v in tensors.values())
    assert data == save({k: v.numpy() for k, v in tensors.items()}, metadata={"format": modname})
    p = tmp_path / "o.safetensors"
    mod.save_file(tensors, p)
    assert tensors == original
    # loading is tested against the real frameworks: tests/frameworks/
