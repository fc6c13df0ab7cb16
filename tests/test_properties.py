"""Property tests (hypothesis): random names (unicode, empty, long), dtypes,
shapes (scalars, zero-size) and metadata.  save -> load gives back the same
values, dtypes and shapes; the bytes equal an independent model of upstream's
writer (docs/format.md §5: dtype-descending then name order, serde_json compact
escaping, metadata first, space padding to 8)."""

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import safetensors
from safetensors.numpy import load as np_load
from safetensors.numpy import load_file as np_load_file
from safetensors.numpy import save as np_save
from safetensors.numpy import save_file as np_save_file

# header code, enum index (docs/format.md §3), numpy dtype name, bits
DTYPES = [
    ("BOOL", 0, "bool", 8), ("U8", 4, "uint8", 8), ("I8", 5, "int8", 8), ("I16", 11, "int16", 16),
    ("U16", 12, "uint16", 16), ("F16", 13, "float16", 16), ("I32", 15, "int32", 32),
    ("U32", 16, "uint32", 32), ("F32", 17, "float32", 32), ("C64", 18, "complex64", 64),
    ("F64", 19, "float64", 64), ("I64", 20, "int64", 64), ("U64", 21, "uint64", 64),
]
ML_DTYPES = [
    ("BF16", 14, "bfloat16", 16), ("F8_E5M2", 6, "float8_e5m2", 8), ("F8_E4M3", 7, "float8_e4m3fn", 8),
    ("F8_E8M0", 8, "float8_e8m0fnu", 8), ("F8_E4M3FNUZ", 9, "float8_e4m3fnuz", 8),
    ("F8_E5M2FNUZ", 10, "float8_e5m2fnuz", 8),
]
try:
    import ml_dtypes

    ALL = DTYPES + ML_DTYPES
except ImportError:  # pragma: no cover
    ml_dtypes = None
    ALL = DTYPES
BY_NAME = {d[2]: d for d in ALL}


def np_dtype(name):
    if name in ("bfloat16",) or name.startswith("float8"):
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


# --------------------------------------------------------------------------
# independent model of the writer
# --------------------------------------------------------------------------

def json_str(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif o < 0x20:
            out.append("\\u%04x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def model_write(entries, metadata):
    """entries: {name: (code, index, shape, raw bytes)} -> the file's bytes."""
    order = sorted(entries, key=lambda n: (-entries[n][1], n))
    parts = []
    if metadata is not None:
        md = ",".join(json_str(k) + ":" + json_str(v) for k, v in metadata.items())
        parts.append('"__metadata__":{' + md + "}")
    off = 0
    data = bytearray()
    for n in order:
        code, _, shape, raw = entries[n]
        parts.append(
            json_str(n) + ':{"dtype":"' + code + '","shape":[' + ",".join(map(str, shape))
            + '],"data_offsets":[' + str(off) + "," + str(off + len(raw)) + "]}"
        )
        off += len(raw)
        data += raw
    header = ("{" + ",".join(parts) + "}").encode("utf-8")
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes(data)


# --------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------

names = st.one_of(
    st.text(max_size=12),
    st.just(""),
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=6),
    st.text(min_size=200, max_size=400),
    st.from_regex(r"[a-z]{1,4}(\.[0-9]{1,2}){0,3}", fullmatch=True),
).filter(lambda s: s != "__metadata__")

shapes = st.lists(st.integers(min_value=0, max_value=4), min_size=0, max_size=4)


@st.composite
def arrays(draw):
    name = draw(st.sampled_from(list(BY_NAME)))
    shape = draw(shapes)
    dt = np_dtype(name)
    n = int(np.prod(shape, dtype=np.int64))
    raw = draw(st.binary(min_size=n * dt.itemsize, max_size=n * dt.itemsize))
    a = np.frombuffer(raw, dtype=np.uint8)
    if name == "bool":
        a = a % 2
    return a.view(dt).reshape(shape).copy()


tensor_dicts = st.dictionaries(names, arrays(), max_size=8)
metadatas = st.one_of(st.none(), st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4))
small_metadatas = st.one_of(st.none(), st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=1))

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


def assert_same_arrays(got, want):
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        assert got[k].shape == v.shape, k
        assert got[k].tobytes() == v.tobytes(), k


# --------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------

@SETTINGS
@given(tensor_dicts, metadatas)
def test_numpy_roundtrip(tensors, metadata):
    data = np_save(tensors, metadata=metadata)
    assert_same_arrays(np_load(data), tensors)
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0
    header = json.loads(data[8:8 + n])
    if metadata is not None:
        assert list(header)[0] == "__metadata__" and header["__metadata__"] == metadata
    # order independence
    assert np_save(dict(reversed(list(tensors.items()))), metadata=metadata) == data


@SETTINGS
@given(tensor_dicts, small_metadatas)
def test_numpy_bytes_match_model(tensors, metadata):
    entries = {}
    for k, v in tensors.items():
        code, idx, _, _ = BY_NAME[v.dtype.name]
        entries[k] = (code, idx, list(v.shape), v.tobytes())
    assert np_save(tensors, metadata=metadata) == model_write(entries, metadata)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensors=tensor_dicts, metadata=metadatas)
def test_numpy_file_roundtrip(tmp_path_factory, tensors, metadata):
    p = tmp_path_factory.mktemp("prop") / "f.safetensors"
    np_save_file(tensors, p, metadata=metadata)
    assert p.read_bytes() == np_save(tensors, metadata=metadata)
    assert_same_arrays(np_load_file(p), tensors)
    with safetensors.safe_open(p, "np") as f:
        assert f.metadata() == metadata
        assert f.keys() == sorted(tensors)


@SETTINGS
@given(st.lists(st.sampled_from([d[2] for d in DTYPES]), min_size=1, max_size=4), shapes,
       st.sampled_from(["F", "T", "step", "neg", "be"]))
def test_numpy_any_layout(dtype_names, shape, layout):
    base = {}
    for i, name in enumerate(dtype_names):
        s = list(shape) + [i + 1, 3]
        base[f"t{i}"] = np.arange(int(np.prod(s)), dtype=np.int64).astype(name).reshape(s)
    views = {}
    for k, a in base.items():
        if layout == "F":
            views[k] = np.asfortranarray(a)
        elif layout == "T":
            views[k] = a.T
        elif layout == "step":
            views[k] = a[..., ::2]
        elif layout == "neg":
            views[k] = a[..., ::-1]
        else:
            views[k] = a.astype(a.dtype.newbyteorder(">")) if a.dtype.itemsize > 1 else a
    out = np_load(np_save(views))
    for k, v in views.items():
        assert out[k].shape == v.shape and np.array_equal(out[k], v)
        assert out[k].dtype == v.dtype.newbyteorder("<") or out[k].dtype == v.dtype


# --------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------

torch = None
try:
    import torch  # noqa: F811
except ImportError:  # pragma: no cover
    pass

TORCH_DTYPES = [
    "bool", "uint8", "int8", "int16", "uint16", "float16", "bfloat16", "int32", "uint32", "float32", "int64",
    "uint64", "float64", "complex64", "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "float8_e4m3fnuz",
    "float8_e5m2fnuz", "float4_e2m1fn_x2",
]
TORCH_CODES = {
    "bool": ("BOOL", 0), "uint8": ("U8", 4), "int8": ("I8", 5), "int16": ("I16", 11), "uint16": ("U16", 12),
    "float16": ("F16", 13), "bfloat16": ("BF16", 14), "int32": ("I32", 15), "uint32": ("U32", 16),
    "float32": ("F32", 17), "int64": ("I64", 20), "uint64": ("U64", 21), "float64": ("F64", 19),
    "complex64": ("C64", 18), "float8_e4m3fn": ("F8_E4M3", 7), "float8_e5m2": ("F8_E5M2", 6),
    "float8_e8m0fnu": ("F8_E8M0", 8), "float8_e4m3fnuz": ("F8_E4M3FNUZ", 9),
    "float8_e5m2fnuz": ("F8_E5M2FNUZ", 10), "float4_e2m1fn_x2": ("F4", 1),
}


@st.composite
def torch_tensors(draw):
    name = draw(st.sampled_from(TORCH_DTYPES))
    shape = draw(shapes)
    if name == "float4_e2m1fn_x2" and not shape:
        shape = [1]
    dt = getattr(torch, name)
    size = torch.empty((), dtype=dt).element_size()
    n = int(np.prod(shape, dtype=np.int64))
    raw = bytearray(draw(st.binary(min_size=n * size, max_size=n * size)))
    if name == "bool":
        raw = bytearray(b % 2 for b in raw)
    if not raw:
        return torch.empty(shape, dtype=dt)
    return torch.frombuffer(raw, dtype=torch.uint8).view(dt).reshape(shape).clone()


def _same_tensor(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)
    )


@pytest.mark.skipif(torch is None, reason="torch not installed")
@SETTINGS
@given(st.dictionaries(names, st.deferred(lambda: torch_tensors()), max_size=8), small_metadatas)
def test_torch_roundtrip_and_model(tensors, metadata):
    import safetensors.torch as stt

    data = stt.save(tensors, metadata=metadata)
    out = stt.load(data)
    assert set(out) == set(tensors)
    for k, v in tensors.items():
        assert _same_tensor(out[k], v), k
    entries = {}
    for k, v in tensors.items():
        dname = str(v.dtype).split(".")[-1]
        code, idx = TORCH_CODES[dname]
        shape = list(v.shape)
        if code == "F4":
            shape[-1] *= 2
        entries[k] = (code, idx, shape, bytes(v.reshape(-1).view(torch.uint8).numpy().tobytes()))
    assert data == model_write(entries, metadata)


@pytest.mark.skipif(torch is None, reason="torch not installed")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensors=st.dictionaries(names, st.deferred(lambda: torch_tensors()), max_size=6), metadata=metadatas)
def test_torch_file_roundtrip(tmp_path_factory, tensors, metadata):
    import safetensors.torch as stt

    p = tmp_path_factory.mktemp("tprop") / "t.safetensors"
    stt.save_file(tensors, p, metadata=metadata)
    out = stt.load_file(p)
    assert set(out) == set(tensors)
    for k, v in tensors.items():
        assert _same_tensor(out[k], v), k
    with safetensors.safe_open(p, "pt") as f:
        assert f.metadata() == metadata
