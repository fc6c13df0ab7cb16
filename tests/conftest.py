"""Shared helpers for the read-path tests.

Files are built byte by byte here (never with our own writer), so the reader
tests do not depend on the writer being correct.

Layout (docs/format.md §1): 8-byte little-endian N, N bytes of header JSON, data.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from typing import Iterable

import numpy as np
import pytest

# Under .ci/sanitize.sh's LeakSanitizer pass only this process checks for
# leaks at exit: the processes the tests start (CLI runs, distributed ranks)
# get these options instead. LSan's stop-the-world tracer now and then
# crashes at exit in a process with threads ("Tracer caught signal 11",
# google/sanitizers#1353), and one such child fails its test by chance.
# ASan read ASAN_OPTIONS when this process started, so changing it here only
# reaches children.
if "SANITIZE_CHILD_ASAN_OPTIONS" in os.environ:
    os.environ["ASAN_OPTIONS"] = os.environ["SANITIZE_CHILD_ASAN_OPTIONS"]

# Header dtype -> (numpy dtype for raw data generation or None, bits per element)
DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}
ALL_DTYPES = list(DTYPE_BITS)  # upstream enum order

# Header dtype -> plain numpy dtype (those numpy knows without ml_dtypes)
NUMPY_DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16,
    "U16": np.uint16, "F16": np.float16, "I32": np.int32, "U32": np.uint32,
    "F32": np.float32, "C64": np.complex64, "F64": np.float64, "I64": np.int64,
    "U64": np.uint64,
}

HEADER_PREFIX = "Error while deserializing header: "
DESERIALIZE_PREFIX = "Error while deserializing: "
MISALIGNED = ("The slice is slicing for subbytes dtypes, and the slice does not end up at a "
              "byte boundary, this is invalid.")


def tensor_entry(dtype: str, shape, offsets) -> dict:
    """One header entry: {"dtype", "shape", "data_offsets"}."""
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


@pytest.fixture
def torch():
    """The torch module; the test is skipped where torch is not installed."""
    return pytest.importorskip("torch")


def nbytes_of(dtype: str, shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    bits = n * DTYPE_BITS[dtype]
    assert bits % 8 == 0
    return bits // 8


def header_bytes(header, *, pad: bool = True, pad_to: int = 8) -> bytes:
    """Header dict -> compact JSON bytes (UTF-8, non-ASCII raw), space padded."""
    if isinstance(header, (bytes, bytearray)):
        raw = bytes(header)
    elif isinstance(header, str):
        raw = header.encode("utf-8")
    else:
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if pad and len(raw) % pad_to:
        raw += b" " * (pad_to - len(raw) % pad_to)
    return raw


def build_bytes(header, data: bytes = b"", *, pad: bool = True, n: int | None = None,
                pad_to: int = 8) -> bytes:
    """Whole file content. `header`: dict, str or raw bytes (raw bytes/str are not
    padded unless pad=True and they are not already a multiple of pad_to).
    `n` overrides the length field (the real header bytes are still written)."""
    hb = header_bytes(header, pad=pad, pad_to=pad_to)
    length = len(hb) if n is None else n
    return struct.pack("<Q", length) + hb + bytes(data)


def write_bytes(path, content: bytes):
    with open(path, "wb") as f:
        f.write(content)
    return path


def tensors_layout(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, data_bytes) in the file order wanted.
    Returns (header dict, data bytes) with consecutive offsets in that order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = bytearray()
    for name, dtype, shape, raw in tensors:
        raw = bytes(raw)
        assert len(raw) == nbytes_of(dtype, shape), (name, dtype, shape, len(raw))
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, bytes(data)


def np_to_entry(name, arr: np.ndarray):
    """(name, dtype, shape, raw) for a numpy array of a plain dtype."""
    rev = {np.dtype(v): k for k, v in NUMPY_DTYPES.items()}
    dt = rev[np.dtype(arr.dtype.str.replace(">", "<"))]
    little = np.ascontiguousarray(arr).astype(np.dtype(arr.dtype.str.replace(">", "<")))
    return (name, dt, list(arr.shape), little.tobytes())


def random_raw(rng: np.random.Generator, dtype: str, shape) -> bytes:
    """Random bytes valid for a dtype (BOOL gets 0/1)."""
    n = nbytes_of(dtype, shape)
    if dtype == "BOOL":
        return rng.integers(0, 2, size=n, dtype=np.uint8).tobytes()
    return rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()


class FileMaker:
    """Writes safetensors files under a tmp dir."""

    def __init__(self, root):
        self.root = root
        self.count = 0

    def _path(self, name=None):
        self.count += 1
        return os.path.join(str(self.root), name or f"f{self.count}.safetensors")

    def raw(self, content: bytes, name=None) -> str:
        return write_bytes(self._path(name), content)

    def header(self, header, data: bytes = b"", name=None, **kw) -> str:
        return self.raw(build_bytes(header, data, **kw), name)

    def tensors(self, tensors, metadata=None, name=None, **kw) -> str:
        header, data = tensors_layout(tensors, metadata)
        return self.header(header, data, name=name, **kw)

    def arrays(self, arrays: dict, metadata=None, name=None) -> str:
        return self.tensors([np_to_entry(k, v) for k, v in arrays.items()], metadata, name)


@pytest.fixture
def mk(tmp_path):
    return FileMaker(tmp_path)


def mapped_ranges(path):
    """[(start, end)] of this process's mappings of `path` (Linux /proc/self/maps)."""
    real = os.path.realpath(str(path))
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.rstrip("\n").split(None, 5)
            if len(parts) == 6 and parts[5] == real:
                a, b = parts[0].split("-")
                out.append((int(a, 16), int(b, 16)))
    return out


def ptr_in_mapping(path, ptr, size=1):
    return any(a <= ptr and ptr + max(size, 1) <= b for a, b in mapped_ranges(path))


def pagemap(addr, nbytes):
    """This process's /proc/self/pagemap entries for the pages of [addr, addr + nbytes)."""
    page = mmap.PAGESIZE
    first, last = addr // page, (addr + nbytes - 1) // page
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(first * 8)
        raw = f.read((last - first + 1) * 8)
    return np.frombuffer(raw, dtype="<u8")


def pagemap_bit(entries, n):
    return (entries >> np.uint64(n)) & np.uint64(1)


def pages_present(addr, nbytes):
    """How many pages of [addr, addr + nbytes) are mapped in (pagemap bit 63)."""
    return int(pagemap_bit(pagemap(addr, nbytes), 63).sum())


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# --------------------------------------------------------------------------
# byte sources: the same file as a local path, an http:// URL (nginx) and an
# s3:// URL (moto's S3 server), so the read tests run on each of them
# --------------------------------------------------------------------------
# A test that takes `source` runs once per source; source(path) turns a file
# it wrote (anywhere under pytest's base temporary directory) into what
# safe_open takes for that source, source.open(path, ...) is safe_open on it
# (with the storage_options S3 needs). `source` covers "path" and "http";
# @WITH_S3 adds "s3" where S3 exercises something of its own (its error
# mapping, its client), kept to a few tests for the suite's time. The servers
# start once per session, on the first test that needs one, and stop at its
# end (`source` itself is per test: a parametrized session fixture would make
# pytest regroup the tests of every module by source); without nginx, or moto/s3fs, that source skips (nginx:
# `make deps`; moto and s3fs: .ci/remote.sh, the stage before pytest in `make test` and `make ci`). Tests that are about
# a local file itself (mmap mappings, descriptors, permissions, replacing the
# file, writing) take no `source`: they say "local file only" where they are.

SOURCES = ["path", "http"]
WITH_S3 = pytest.mark.parametrize("source", ["path", "http", "s3"], indirect=True)


class Source:
    """One kind of byte source; source(path) -> what safe_open takes."""

    def __init__(self, kind, to_target, options=None):
        self.kind, self._to_target, self.options = kind, to_target, options or {}

    def __call__(self, path):
        return self._to_target(os.fspath(path))

    def open(self, filename, *args, **kwargs):
        from safetensors import safe_open

        return safe_open(self(filename), *args, **self.options, **kwargs)


@pytest.fixture(scope="session")
def _nginx_base_url(tmp_path_factory):
    """nginx serving pytest's base temporary directory: the base URL."""
    import remote_servers

    if remote_servers.nginx_binary() is None:
        pytest.skip("nginx is not installed (make deps, or apt-get install nginx-light)")
    root = tmp_path_factory.getbasetemp()
    with remote_servers.Nginx(str(root), str(tmp_path_factory.mktemp("nginx-prefix"))) as server:
        yield server.url


@pytest.fixture(scope="session")
def _moto_s3():
    for module in ("s3fs", "moto.server", "flask", "boto3"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install s3fs 'moto[server]'; "
                                           "CI: .ci/remote.sh)")
    import remote_servers

    with remote_servers.MotoS3() as server:
        server.s3 = server.client()
        server.s3.create_bucket(Bucket="sources")
        yield server


@pytest.fixture(params=SOURCES)
def source(request, tmp_path_factory):
    from urllib.parse import quote

    if request.param == "path":
        return Source("path", lambda path: path)
    root = os.path.realpath(tmp_path_factory.getbasetemp())

    def key(path):
        real = os.path.realpath(path)
        assert real.startswith(root + os.sep), f"{path} is not under pytest's base temporary directory"
        return quote(os.path.relpath(real, root))

    if request.param == "http":
        url = request.getfixturevalue("_nginx_base_url")
        return Source("http", lambda path: f"{url}/{key(path)}", {"head_bytes": 8})
    s3 = request.getfixturevalue("_moto_s3")

    def upload(path):
        if os.path.exists(path):   # else a missing key
            with open(path, "rb") as f:
                s3.s3.put_object(Bucket="sources", Key=key(path), Body=f.read())
        return f"s3://sources/{key(path)}"

    return Source("s3", upload, {"storage_options": s3.options, "head_bytes": 8})
