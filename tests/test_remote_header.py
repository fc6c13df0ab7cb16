"""Remote reading's header checks and uploading's layout, without any server
(a URL read through the byte source is fsspec's memory://): the header rules
must give exactly what the local reader gives, the layout exactly what
serialize writes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import safetensors.numpy
from safetensors import SafetensorError, TensorSpec, _safetensors_c as c, deserialize, safe_open

fsspec = pytest.importorskip("fsspec")  # memory:// URLs; the remote stage installs it


def _remote_open(data: bytes):
    """safe_open on data as a memory:// URL, through safetensors.remote's byte source."""
    with fsspec.filesystem("memory").open("/remote_header.safetensors", "wb") as f:
        f.write(data)
    return safe_open("memory://remote_header.safetensors", framework="np")


def _local_result(tmp_path, data: bytes):
    path = tmp_path / "f.safetensors"
    path.write_bytes(data)
    try:
        with safe_open(str(path), framework="np") as f:
            return ("ok", f.offset_keys(), f.metadata())
    except Exception as e:  # noqa: BLE001 - compared below
        return ("error", type(e), str(e))


def _remote_result(data: bytes):
    try:
        with _remote_open(data) as f:
            return ("ok", f.offset_keys(), f.metadata())
    except Exception as e:  # noqa: BLE001
        return ("error", type(e), str(e))


def test_parse_valid_file():
    arrays = {"b": np.ones((2, 3), np.float32), "a": np.arange(5, dtype=np.int8)}
    data = safetensors.numpy.save(arrays, metadata={"k": "v"})
    start = 8 + int.from_bytes(data[:8], "little")
    with _remote_open(data) as f:
        assert f._source is not None and f._source.size == len(data)
        assert f.metadata() == {"k": "v"}
        assert f._table() == [("b", "F32", [2, 3], start, start + 24), ("a", "I8", [5], start + 24, start + 29)]
    assert f._source is None


@pytest.mark.parametrize("data", [
    b"", b"\x00" * 7, (2**63).to_bytes(8, "little"), (10).to_bytes(8, "little") + b"{}",
    (2).to_bytes(8, "little") + b"[]", (2).to_bytes(8, "little") + b"{}",
    (6).to_bytes(8, "little") + b'{"a":}',
    (60).to_bytes(8, "little") + b'{"a":{"dtype":"X","shape":[1],"data_offsets":[0,1]}}'.ljust(60) + b"\x00",
])
def test_errors_match_local(tmp_path, data):
    assert _remote_result(data) == _local_result(tmp_path, data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 64))
def test_random_headers_match_local(tmp_path_factory, body, extra):
    data = len(body).to_bytes(8, "little") + body + b"\x00" * extra
    assert _remote_result(data) == _local_result(tmp_path_factory.mktemp("h"), data)


def test_write_layout_matches_serialize():
    arrays = {"x": np.zeros((3, 4), np.float16), "y": np.ones(7, np.int64), "z": np.zeros(0, np.uint8)}
    data = safetensors.numpy.save(arrays, metadata={"m": "1"})
    entries = [(k, TensorSpec(dtype=v.dtype.name, shape=list(v.shape), data_ptr=0, data_len=0).dtype,
                list(v.shape), v.nbytes) for k, v in arrays.items()]
    header, order = c._write_layout(entries, {"m": "1"})
    assert data.startswith(header) and len(header) == 8 + int.from_bytes(data[:8], "little")
    assert [entries[i][0] for i in order] == [name for name, _ in deserialize(data)]


def test_write_layout_rejects_wrong_length_and_dtype():
    with pytest.raises(SafetensorError, match="invalid shape, data type, or offset"):
        c._write_layout([("x", "F32", [2], 7)], None)
    with pytest.raises(SafetensorError, match="Unknown dtype"):
        c._write_layout([("x", "F33", [2], 8)], None)
    with pytest.raises(TypeError):
        c._write_layout([("x", "F32", [2], 8)], {"k": 1})
