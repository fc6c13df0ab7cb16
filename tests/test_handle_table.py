"""The handle's private table and reader: ``_table()`` (every tensor in file
order, absolute file offsets) and ``_read_into(offset, buffer)``, on which
the CLI and ``load_distributed`` build instead of re-reading the header."""

import json
import os

import numpy as np
import pytest

from safetensors import SafetensorError, safe_open
from safetensors._safetensors_rust import SafetensorIOError

torch = pytest.importorskip("torch")

BACKENDS = ["mmap", "pread"]

# Several dtypes, F4 (two values a byte) and empty tensors, in the file order wanted.
ENTRIES = [
    ("w", "F32", [3, 5], bytes(range(60))),
    ("empty", "BF16", [0, 4], b""),
    ("f4", "F4", [3, 4], bytes([0x21, 0x43, 0x65, 0x87, 0xA9, 0xCB])),
    ("i", "I64", [2], bytes(range(100, 116))),
    ("scalar", "U8", [], b"\x07"),
    ("none", "F16", [0], b""),
    ("b", "BOOL", [2, 2], b"\x00\x01\x01\x00"),
]


@pytest.fixture
def path(mk):
    return mk.tensors(ENTRIES, metadata={"format": "pt"})


def _header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return 8 + n, json.loads(f.read(n))


@pytest.mark.parametrize("backend", BACKENDS)
def test_table_is_the_header_in_file_order(path, backend):
    start, header = _header(path)
    with safe_open(path, "pt", backend=backend) as f:
        table = f._table()
        assert [row[0] for row in table] == f.offset_keys() == [e[0] for e in ENTRIES]
    for name, dtype, shape, begin, end in table:
        info = header[name]
        assert (dtype, shape) == (info["dtype"], info["shape"])
        assert (begin - start, end - start) == tuple(info["data_offsets"])
    assert table[-1][4] == os.path.getsize(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_into_gives_every_tensors_bytes(path, backend):
    with safe_open(path, "pt", backend=backend) as f:
        for (name, _, _, begin, end), entry in zip(f._table(), ENTRIES):
            into = bytearray(end - begin)
            f._read_into(begin, into)
            assert bytes(into) == entry[3], name
            t = f.get_tensor(name)
            assert bytes(into) == t.contiguous().view(-1).view(torch.uint8).numpy().tobytes(), name
        # A torch tensor through a memoryview of it, and a NumPy array.
        begin, end = f._table()[0][3:]
        out = torch.zeros(end - begin, dtype=torch.uint8)
        f._read_into(begin, memoryview(out.numpy()))
        assert out.numpy().tobytes() == ENTRIES[0][3]
        arr = np.zeros(end - begin + 8, np.uint8)
        f._read_into(0, arr)
        assert arr[:8].tobytes() == (begin - 8).to_bytes(8, "little")


def test_empty_file_has_an_empty_table(mk):
    path = mk.tensors([])
    with safe_open(path, "pt") as f:
        assert f._table() == []
        f._read_into(os.path.getsize(path), bytearray(0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_into_errors(path, backend):
    size = os.path.getsize(path)
    with safe_open(path, "pt", backend=backend) as f:
        with pytest.raises(SafetensorError, match=f"read of 2 bytes at offset {size - 1} is outside the file"):
            f._read_into(size - 1, bytearray(2))
        with pytest.raises(SafetensorError, match="outside the file"):
            f._read_into(size + 1, bytearray(0))
        with pytest.raises(ValueError, match="must not be negative"):
            f._read_into(-1, bytearray(1))
        with pytest.raises(TypeError, match="read-write bytes-like object"):
            f._read_into(0, b"12")
        with pytest.raises(TypeError):
            f._read_into(0, np.zeros((4, 4), np.uint8)[:, ::2])   # not contiguous
    for method, args in (("_table", ()), ("_read_into", (0, bytearray(1)))):
        with pytest.raises(SafetensorError, match="File is closed"):
            getattr(f, method)(*args)


def test_read_into_a_file_cut_short_is_an_io_error(path):
    with safe_open(path, "pt", backend="pread") as f:
        begin, end = f._table()[0][3:]
        os.truncate(path, begin + 4)
        with pytest.raises(SafetensorIOError) as info:
            f._read_into(begin, bytearray(end - begin))
    assert isinstance(info.value, OSError)
