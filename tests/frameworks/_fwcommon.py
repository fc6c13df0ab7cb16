"""What the per-framework test files share (each file runs in its own process:
see .ci/frameworks.sh; TensorFlow and paddle crash when imported together).

The test files import their framework with pytest.importorskip: in the main
test venv, which has none of them, they skip; .ci/frameworks.sh installs each
framework in its own venv and runs its file there, where nothing skips.
"""

import os
import struct
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures", "upstream_frameworks")
sys.path.insert(0, FIXTURES)
from make_fixtures import (  # noqa: E402
    KINDS,
    MODULES,
    PLAIN,
    UPSTREAM_DTYPES,
    numpy_cases,
    numpy_dtype,
    to_framework,
)

from safetensors import safe_open  # noqa: E402
from safetensors import numpy as st_numpy  # noqa: E402

# Pairs that crash when imported into one process (an upstream packaging clash).
_CLASHES = {"tensorflow": "paddle", "paddle": "tensorflow"}

__all__ = ["KINDS", "MODULES", "PLAIN", "UPSTREAM_DTYPES", "numpy_cases", "numpy_dtype", "to_framework"]


def import_framework(name):
    """The framework module; skips when absent or when its clashing peer is loaded."""
    other = _CLASHES.get(name)
    if other is not None and other in sys.modules:
        pytest.skip(f"{other} is already imported in this process; run each framework's tests in its own "
                    "process (.ci/frameworks.sh)")
    return pytest.importorskip(name)


def fixture_path(fw):
    return os.path.join(FIXTURES, f"{fw}.safetensors")


def data_start(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return 8 + n


def write_at_alignment(path, arrays, modulo):
    """Writes ``arrays`` (ours, NumPy writer) so the data section starts at
    ``modulo`` mod 64 in the file, hence in any page-aligned mapping of it."""
    for pad in range(80):
        st_numpy.save_file(arrays, path, metadata={"pad": "x" * pad})
        if data_start(path) % 64 == modulo:
            return
    raise AssertionError(f"no padding puts the data at {modulo} mod 64")


def misaligning_metadata(arrays):
    """Metadata with which the default layout puts ``arrays``' data section off 64 bytes."""
    for pad in range(80):
        metadata = {"pad": "x" * pad}
        blob = st_numpy.save(arrays, metadata=metadata)
        if (8 + int.from_bytes(blob[:8], "little")) % 64:
            return metadata
    raise AssertionError("every padding aligns the data")


# Tensors whose sizes are multiples of 64 bytes (so with alignment=64 every one starts aligned),
# large enough (64 KiB) to be read through the file's mapping.
ALIGNED_SHAPES = {"float32": (128, 128), "int64": (8192,), "bfloat16": (256, 128), "uint8": (256, 256)}


def check_alignment_64_loads_zero_copy(module, from_numpy, to_numpy, address, tmp_path, unaddressable=lambda t: False):
    """``module.save_file(alignment=64)`` (docs/integrity.md): every tensor of 64-byte multiples
    loads mapped, not copied (``address(t)`` lies in the file's mapping, unless ``unaddressable(t)``
    says this framework cannot show it), where the default layout of the same tensors and
    metadata would put the data off 64 bytes; the bytes are the saved ones."""
    arrays = {f"t_{d}": np.arange(int(np.prod(s)), dtype=np.float32).astype(numpy_dtype(d)).reshape(s)
              for d, s in ALIGNED_SHAPES.items()}
    metadata = misaligning_metadata(arrays)
    path = str(tmp_path / "a.safetensors")
    module.save_file({k: from_numpy(v) for k, v in arrays.items()}, path, metadata=metadata, alignment=64)
    assert data_start(path) % 64 == 0
    for name, loaded in module.load_file(path).items():
        if not unaddressable(loaded):
            assert mapped(path, address(loaded)), f"{name} was copied"
        assert to_numpy(loaded).tobytes() == arrays[name].tobytes()


def mapped(path, address):
    """Whether ``address`` lies in a mapping of the file ``path`` in this process."""
    target = os.path.realpath(path)
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == target:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if start <= address < end:
                    return True
    return False


def assert_same(to_numpy, loaded, expected):
    """Same names (in any order), dtypes, shapes and bytes."""
    assert sorted(loaded) == sorted(expected)
    for k, want in expected.items():
        got = to_numpy(loaded[k])
        assert got.dtype == want.dtype, (k, got.dtype, want.dtype)
        assert got.shape == want.shape, (k, got.shape, want.shape)
        assert got.tobytes() == want.tobytes(), k


def all_cases(fw, dtypes):
    return numpy_cases(fw, dtypes, kinds=tuple(KINDS))


def check_roundtrip(module, fw, to_numpy, dtype, tmp_path):
    """save/load, save_file/load_file (both backends) and safe_open.get_tensor."""
    arrays = all_cases(fw, [dtype])
    tensors = {k: to_framework(fw, v) for k, v in arrays.items()}
    data = module.save(tensors, metadata={"k": "v"})
    assert data == st_numpy.save(arrays, metadata={"k": "v"})
    assert_same(to_numpy, module.load(data), arrays)
    path = str(tmp_path / "t.safetensors")
    module.save_file(tensors, path)
    for backend in ("mmap", "pread"):
        assert_same(to_numpy, module.load_file(path, backend=backend), arrays)
        with safe_open(path, framework=fw, backend=backend) as f:
            assert_same(to_numpy, {k: f.get_tensor(k) for k in f.keys()}, arrays)


SLICES = [
    (slice(None, None, -1),),
    (slice(None), slice(None, None, 2)),
    (slice(3, None, -2), slice(None, None, -1)),
    (1, slice(None, None, -3)),
    (slice(-1, -4, -1), slice(1, 3), slice(4, 0, -2)),
    (Ellipsis, slice(None, None, -2)),
]


def check_slices(fw, to_numpy, dtype, tmp_path):
    array = np.arange(60, dtype=np.float32).reshape(3, 4, 5).astype(numpy_dtype(dtype))
    path = str(tmp_path / "s.safetensors")
    st_numpy.save_file({"a": array}, path)
    for backend in ("mmap", "pread"):
        with safe_open(path, framework=fw, backend=backend) as f:
            sl = f.get_slice("a")
            for index in SLICES:
                got = to_numpy(sl[index])
                want = array[index]
                assert got.dtype == want.dtype and got.shape == want.shape, index
                assert got.tobytes() == np.ascontiguousarray(want).tobytes(), (backend, index)


def check_upstream_fixture(module, fw, to_numpy, tmp_path):
    """Upstream 0.8.0's file loads, and we write the same bytes from the same tensors."""
    path = fixture_path(fw)
    arrays = numpy_cases(fw)
    assert_same(to_numpy, module.load_file(path), arrays)
    with safe_open(path, framework=fw) as f:
        assert f.metadata() == {"format": fw}
    tensors = {k: to_framework(fw, v) for k, v in arrays.items()}
    with open(path, "rb") as f:
        upstream = f.read()
    assert module.save(tensors, metadata={"format": fw}) == upstream
    ours = tmp_path / "ours.safetensors"
    module.save_file(tensors, ours, metadata={"format": fw})
    assert ours.read_bytes() == upstream
