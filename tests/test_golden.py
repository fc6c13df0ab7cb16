"""Byte-exact writer output: the reference files of docs/format.md §8, and the files that
upstream safetensors 0.8.0 wrote for the cases in tests/fixtures/upstream_write/
(regenerate with tests/fixtures/make_upstream_write_fixtures.py, see its header)."""

import json
import os
import struct
import sys

import numpy as np
import pytest

import safetensors
from safetensors import serialize, serialize_file
from safetensors.numpy import load as np_load
from safetensors.numpy import save as np_save
from safetensors.numpy import save_file as np_save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures", "upstream_write")
sys.path.insert(0, os.path.join(HERE, "fixtures"))
from make_upstream_write_fixtures import NUMPY_ML, build_input  # noqa: E402

with open(os.path.join(FIX, "manifest.json"), encoding="utf-8") as _f:
    MANIFEST = json.load(_f)
CASES = MANIFEST["cases"]


def split(data: bytes):
    (n,) = struct.unpack("<Q", data[:8])
    return n, data[8:8 + n], data[8 + n:]


# ---------------------------------------------------------------------------
# docs/format.md §8 reference files
# ---------------------------------------------------------------------------

def test_numpy_single_int32():
    out = np_save({"test": np.zeros((2, 2), dtype=np.int32)})
    header = b'{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}'
    assert len(header) == 60
    assert out == b"@\x00\x00\x00\x00\x00\x00\x00" + header + b"    " + b"\x00" * 16


def test_numpy_metadata_framework():
    out = np_save({"test1": np.zeros((2, 2), dtype=np.int32)}, metadata={"framework": "pt"})
    header = b'{"__metadata__":{"framework":"pt"},"test1":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}'
    assert len(header) == 95
    assert out == b"`\x00\x00\x00\x00\x00\x00\x00" + header + b" " + b"\x00" * 16


def test_numpy_two_tensors_order_independent():
    a = np.zeros((2, 2), dtype=np.int32)
    b = np.zeros((2, 2), dtype=np.float16)
    header = (b'{"test1":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]},'
              b'"test2":{"dtype":"F16","shape":[2,2],"data_offsets":[16,24]}}')
    expected = b"\x80\x00\x00\x00\x00\x00\x00\x00" + header + b" " * 6 + b"\x00" * 24
    assert len(header) + 6 == 128
    assert np_save({"test1": a, "test2": b}) == expected
    assert np_save({"test2": b, "test1": a}) == expected


def test_attn0_f32_no_padding():
    out = np_save({"attn.0": np.arange(6, dtype=np.float32).reshape(1, 2, 3)})
    n, header, data = split(out)
    assert n == 64 and len(header) == 64 and not header.endswith(b" ")
    assert header == b'{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}'
    assert data.hex() == "000000000000803f000000400000404000008040" + "0000a040"


def test_attn0_4d_seven_spaces():
    out = np_save({"attn0": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)})
    n, header, _ = split(out)
    assert n == 72 and header.endswith(b" " * 7) and not header.endswith(b" " * 8)


def test_f4_one_byte():
    torch = pytest.importorskip("torch")
    import safetensors.torch as st

    t = torch.tensor([[0x21]], dtype=torch.uint8).view(torch.float4_e2m1fn_x2)  # packed shape [1,1]
    out = st.save({"attn.0": t})
    n, header, data = split(out)
    assert header == b'{"attn.0":{"dtype":"F4","shape":[1,2],"data_offsets":[0,1]}}    '
    assert n == 64 and data == b"\x21"


def test_f4_via_tensorspec():
    buf = bytearray(b"\x21")
    import ctypes

    addr = ctypes.addressof((ctypes.c_char * 1).from_buffer(buf))
    spec = safetensors.TensorSpec(dtype="float4_e2m1fn_x2", shape=[1, 1], data_ptr=addr, data_len=1)
    out = serialize({"attn.0": spec})
    assert out[8:8 + 64] == b'{"attn.0":{"dtype":"F4","shape":[1,2],"data_offsets":[0,1]}}    '
    assert out[-1:] == b"\x21"


def test_bf16_values():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    arr = np.array([[2.25, 1], [1, 1]], dtype=ml_dtypes.bfloat16)
    out = np_save({"a": arr})
    n, header, data = split(out)
    assert n == 64
    assert data.hex() == "1040803f803f803f"


def test_bf16_values_torch():
    torch = pytest.importorskip("torch")
    import safetensors.torch as st

    out = st.save({"a": torch.tensor([[2.25, 1], [1, 1]], dtype=torch.bfloat16)})
    assert split(out)[2].hex() == "1040803f803f803f"


def test_c64_last_bytes():
    arr = np.zeros((2, 2), dtype=np.complex64)
    arr[1, 1] = -1 + 1j
    out = np_save({"c": arr})
    assert out[-8:] == bytes.fromhex("000080bf0000803f")
    assert b'"dtype":"C64"' in out


def test_empty_file():
    assert np_save({}) == bytes.fromhex("08000000000000007b7d202020202020")


def test_empty_with_metadata():
    out = np_save({}, metadata={"framework": "pt"})
    assert out == b"(\x00\x00\x00\x00\x00\x00\x00" + b'{"__metadata__":{"framework":"pt"}}' + b" " * 5


def test_empty_with_empty_metadata_is_readable():
    # upstream 0.8.0 writes `{},"__metadata__":{}}` here (unreadable); we don't.
    out = np_save({}, metadata={})
    n, header, data = split(out)
    assert header.rstrip(b" ") == b'{"__metadata__":{}}'
    assert data == b""
    assert np_load(out) == {}


def test_metadata_keys_deterministic():
    md = {f"k{i}": str(i) for i in range(20)}
    first = np_save({"a": np.zeros(2)}, metadata=md)
    for _ in range(3):
        assert np_save({"a": np.zeros(2)}, metadata=dict(md)) == first
    header = json.loads(split(first)[1])
    assert header["__metadata__"] == md
    assert list(header)[0] == "__metadata__"


def test_name_order_codepoints():
    names = ["é", "b", "aa", "a.9", "a.10", "a", "B"]
    out = np_save({n: np.zeros(1, dtype=np.uint8) for n in names})
    header = json.loads(split(out)[1])
    assert list(header) == ["B", "a", "a.10", "a.9", "aa", "b", "é"]


def test_dtype_order_descending():
    out = np_save({
        "a": np.zeros(1, np.bool_), "b": np.zeros(1, np.uint8), "c": np.zeros(1, np.float32),
        "d": np.zeros(1, np.uint64), "e": np.zeros(1, np.int16), "f": np.zeros(1, np.complex64),
    })
    header = json.loads(split(out)[1])
    assert [header[k]["dtype"] for k in header] == ["U64", "C64", "F32", "I16", "U8", "BOOL"]


def test_json_escaping():
    out = np_save({'q"\\\n\t\r\b\f\x00\x1f\x7f/é\U0001F600': np.zeros(1, np.uint8)})
    header = split(out)[1].rstrip(b" ")
    expected_name = b'q\\"\\\\\\n\\t\\r\\b\\f\\u0000\\u001f\x7f/' + "é\U0001F600".encode()
    assert header == b'{"' + expected_name + b'":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'


# ---------------------------------------------------------------------------
# upstream fixtures
# ---------------------------------------------------------------------------

def _needs(case):
    if case["framework"] == "torch":
        pytest.importorskip("torch")
    if any(t["dtype"] in NUMPY_ML for t in case["tensors"]) and case["framework"] == "numpy":
        pytest.importorskip("ml_dtypes")


def _fixture_bytes(case):
    with open(os.path.join(FIX, case["file"]), "rb") as f:
        return f.read()


def test_fixtures_small():
    total = sum(os.path.getsize(os.path.join(FIX, n)) for n in os.listdir(FIX))
    assert total < 200_000
    assert len(CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_save_matches_upstream(case):
    _needs(case)
    inputs = build_input(case["framework"], case["tensors"])
    if case["framework"] == "numpy":
        import safetensors.numpy as mod
    else:
        import safetensors.torch as mod
    expected = _fixture_bytes(case)
    assert mod.save(inputs, metadata=case["metadata"]) == expected
    assert mod.save(dict(reversed(list(inputs.items()))), metadata=case["metadata"]) == expected


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_save_file_matches_upstream(case, tmp_path):
    _needs(case)
    inputs = build_input(case["framework"], case["tensors"])
    if case["framework"] == "numpy":
        import safetensors.numpy as mod
    else:
        import safetensors.torch as mod
    p = tmp_path / "out.safetensors"
    mod.save_file(inputs, p, metadata=case["metadata"])
    assert p.read_bytes() == _fixture_bytes(case)


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_upstream_fixture_loads_back(case, tmp_path):
    _needs(case)
    inputs = build_input(case["framework"], case["tensors"])
    data = _fixture_bytes(case)
    if case["framework"] == "numpy":
        import safetensors.numpy as mod

        loaded = mod.load(data)
        assert set(loaded) == set(inputs)
        for k, v in inputs.items():
            assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
            assert loaded[k].tobytes() == v.tobytes()
    else:
        import torch

        import safetensors.torch as mod

        for loaded in (mod.load(data), _load_file_bytes(mod, data, tmp_path)):
            assert set(loaded) == set(inputs)
            for k, v in inputs.items():
                assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape, k
                assert torch.equal(loaded[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8)), k


def _load_file_bytes(mod, data, tmp_path):
    p = tmp_path / "in.safetensors"
    p.write_bytes(data)
    return mod.load_file(p)


def test_tensorspec_and_numpy_save_agree(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    spec = safetensors.TensorSpec(dtype="float32", shape=[3, 4], data_ptr=arr.ctypes.data, data_len=arr.nbytes)
    via_spec = serialize({"x": spec})
    assert via_spec == np_save({"x": arr})
    p = tmp_path / "f.safetensors"
    serialize_file({"x": spec}, p)
    assert p.read_bytes() == via_spec
    np_save_file({"x": arr}, str(p))
    assert p.read_bytes() == via_spec
