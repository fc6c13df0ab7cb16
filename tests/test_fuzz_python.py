"""Python-level fuzzing of the reader (hypothesis over mutated files).

Every input must either load or raise one of the documented exception types
(SafetensorError, OSError, IndexError, ValueError, TypeError); any other
exception fails, and a crash kills the test run.

Profiles: default 300 examples per test; HYPOTHESIS_PROFILE=fuzz for a long
run (20,000 examples per test), e.g.

    HYPOTHESIS_PROFILE=fuzz pytest tests/test_fuzz_python.py
"""

from __future__ import annotations

import json
import os
import struct
import tempfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

try:  # registers bfloat16 / float8 with numpy, as users would have it
    import ml_dtypes  # noqa: F401
except ImportError:  # pragma: no cover
    pass

from safetensors import SafetensorError, deserialize, safe_open  # noqa: E402

_COMMON = dict(deadline=None, derandomize=False, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
settings.register_profile("st_default", max_examples=300, **_COMMON)
settings.register_profile("fuzz", max_examples=20_000, **_COMMON)
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "st_default")
_PROFILE = _PROFILE if _PROFILE in ("st_default", "fuzz") else "st_default"
_SETTINGS = settings.get_profile(_PROFILE)

ALLOWED = (SafetensorError, OSError, IndexError, ValueError, TypeError)

BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
        "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16,
        "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64,
        "F64": 64, "I64": 64, "U64": 64}


def _frame(header: bytes, data: bytes = b"") -> bytes:
    header = header + b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def _file(tensors, metadata=None) -> bytes:
    head, data = {}, bytearray()
    if metadata is not None:
        head["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        size = n * BITS[dtype] // 8
        raw = bytes((i * 7 + len(name)) & 0x7F for i in range(size))
        if dtype == "BOOL":
            raw = bytes(b & 1 for b in raw)
        head[name] = {"dtype": dtype, "shape": list(shape),
                      "data_offsets": [len(data), len(data) + size]}
        data += raw
    return _frame(json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode(),
                  bytes(data))


BASES = [
    _file([]),
    _file([], {"format": "pt"}),
    _file([("a", "F32", [2, 3])]),
    _file([("w", "F64", [4]), ("b", "I32", [2, 2]), ("s", "U8", [])]),
    _file([("x", "F16", [3, 1, 2]), ("e", "F32", [0, 4]), ("z", "I64", [1])],
          {"k": "v", "\u00e9": "\n"}),
    _file([("m", "BOOL", [5]), ("q", "I8", [2, 2]), ("u", "U16", [3])]),
    _file([("c", "C64", [2]), ("bf", "BF16", [2, 2])]),
    _file([("f4", "F4", [2, 4]), ("f8", "F8_E4M3", [3])]),
    _file([(f"layer.{i}", "F32", [i % 3 + 1, 2]) for i in range(8)]),
]

TOKENS = [b'"F32"', b'"F64"', b'"I32"', b'"U8"', b'"BOOL"', b'"F4"', b'"F6_E2M3"',
          b'"BF16"', b'"C64"', b'"F8_E4M3"', b'"F128"', b'"dtype"', b'"shape"',
          b'"data_offsets"', b'"__metadata__"', b"[", b"]", b"{", b"}", b",", b":",
          b"0", b"1", b"-1", b"2", b"4", b"8", b"1.0", b"1e3", b"01",
          b"18446744073709551615", b"18446744073709551616", b"9223372036854775807",
          b"4294967296", b"null", b"true", b'""', b"[]", b"{}", b'"\\u0000"', b'"\\ud800"',
          b" ", b"\x00", b"\xff"]
LENGTH_VALUES = [0, 1, 7, 8, 100_000_000, 100_000_001, 2**31, 2**32, 2**63, 2**64 - 1]


@st.composite
def mutation(draw, size):
    kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "length",
                                 "token", "extend"]))
    pos = draw(st.integers(0, max(size, 1)))
    if kind == "flip":
        return (kind, pos, draw(st.integers(0, 7)))
    if kind == "set":
        return (kind, pos, draw(st.integers(0, 255)))
    if kind == "insert":
        return (kind, pos, draw(st.binary(min_size=1, max_size=16) | st.sampled_from(TOKENS)))
    if kind == "delete":
        return (kind, pos, draw(st.integers(1, 16)))
    if kind == "truncate":
        return (kind, pos, None)
    if kind == "length":
        return (kind, None, draw(st.sampled_from(LENGTH_VALUES)
                                 | st.integers(0, 2**64 - 1)
                                 | st.integers(-16, 16)))
    if kind == "extend":
        return (kind, None, draw(st.binary(min_size=1, max_size=16)))
    return (kind, draw(st.sampled_from(TOKENS)), draw(st.sampled_from(TOKENS)))


def apply(blob: bytes, mut) -> bytes:
    kind, a, b = mut
    buf = bytearray(blob)
    if kind == "flip" and buf:
        buf[a % len(buf)] ^= 1 << b
    elif kind == "set" and buf:
        buf[a % len(buf)] = b
    elif kind == "insert":
        buf[a:a] = b
    elif kind == "delete":
        del buf[a:a + b]
    elif kind == "truncate":
        del buf[a:]
    elif kind == "extend":
        buf += b
    elif kind == "length" and len(buf) >= 8:
        old = struct.unpack("<Q", bytes(buf[:8]))[0]
        new = b if b >= 16 or b < -16 or b in LENGTH_VALUES else old + b
        buf[:8] = struct.pack("<Q", new % 2**64)
    elif kind == "token":
        i = buf.find(a, 8)
        if i >= 0:
            buf[i:i + len(a)] = b
    return bytes(buf)


@st.composite
def mutated_file(draw):
    blob = draw(st.sampled_from(BASES))
    for _ in range(draw(st.integers(1, 6))):
        blob = apply(blob, draw(mutation(len(blob))))
    return blob


INDEXES = [(), slice(None), 0, -1, slice(0, 1), (slice(None), 0), (0, 0),
           slice(1, None), (slice(None), slice(None), slice(None))]


def _try(fn, *args):
    try:
        return fn(*args)
    except ALLOWED:
        return None


def exercise(path: str, blob: bytes):
    for backend in ("mmap", "pread"):
        try:
            f = safe_open(path, "np", backend=backend)
        except ALLOWED:
            continue
        with f:
            keys = _try(f.keys) or []
            assert isinstance(keys, list)
            _try(f.metadata)
            for k in keys[:8]:
                t = _try(f.get_tensor, k)
                if t is not None:
                    assert isinstance(t, np.ndarray)
                sl = _try(f.get_slice, k)
                if sl is None:
                    continue
                shape = _try(sl.get_shape)
                _try(sl.get_dtype)
                for idx in INDEXES:
                    r = _try(sl.__getitem__, idx)
                    if r is not None and t is not None and shape is not None:
                        # a slice must agree with numpy indexing of the whole tensor
                        try:
                            # the trailing "..." keeps a view even when every axis is
                            # indexed: a NumPy scalar would normalise a BOOL byte 0x03
                            # to 0x01, and the bytes compared below would differ
                            want = t[(*idx, ...) if isinstance(idx, tuple) else (idx, ...)]
                        except IndexError:
                            continue
                        assert np.asarray(r).tobytes() == np.asarray(want).tobytes(), (k, idx)
            _try(f.get_tensor, "\0no such tensor")
    try:
        out = deserialize(blob)
    except ALLOWED:
        return
    assert isinstance(out, list)
    for name, info in out:
        assert isinstance(name, str)
        assert set(info) >= {"shape", "dtype", "data"}


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="st-fuzz-") as d:
        yield os.path.join(d, "input.safetensors")


def _write(path, blob):
    # a new inode each time: handles from the previous example never see it
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(blob)
    os.replace(tmp, path)


def test_bases_load(scratch):
    for blob in BASES:
        _write(scratch, blob)
        with safe_open(scratch, "np") as f:
            for k in f.keys():
                if f.get_slice(k).get_dtype() in ("F4", "F8_E4M3"):
                    continue
                f.get_tensor(k)
        deserialize(blob)


@_SETTINGS
@given(mutated_file())
def test_mutated_files(scratch, blob):
    _write(scratch, blob)
    exercise(scratch, blob)


@_SETTINGS
@given(st.binary(max_size=512))
def test_random_bytes(scratch, blob):
    _write(scratch, blob)
    exercise(scratch, blob)


@st.composite
def random_header(draw):
    """Structurally plausible headers with hostile values."""
    ints = st.integers(0, 16) | st.sampled_from([2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64])
    n = draw(st.integers(0, 4))
    head = {}
    if draw(st.booleans()):
        head["__metadata__"] = draw(st.none() | st.dictionaries(st.text(max_size=4),
                                                                 st.text(max_size=4),
                                                                 max_size=3))
    for i in range(n):
        entry = {"dtype": draw(st.sampled_from(sorted(BITS) + ["F128", "f32", ""])),
                 "shape": draw(st.lists(ints, max_size=4)),
                 "data_offsets": draw(st.lists(ints, min_size=2, max_size=2)
                                      | st.lists(ints, max_size=3))}
        if draw(st.booleans()):
            del entry[draw(st.sampled_from(sorted(entry)))]
        head[draw(st.text(max_size=6))] = entry
    text = json.dumps(head, separators=(",", ":")).encode()
    return _frame(text, draw(st.binary(max_size=64)))


@_SETTINGS
@given(random_header())
def test_random_headers(scratch, blob):
    _write(scratch, blob)
    exercise(scratch, blob)
