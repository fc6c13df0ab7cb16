"""Arrays that do not alias (issue 9): every get_tensor / get_slice result
owns its memory alone on every framework and backend, large tensors stay
zero copy, a pread tensor pins little besides itself; and get_slice with
index arrays, masks and lists follows NumPy's semantics everywhere."""

from __future__ import annotations

import gc
import importlib.util
import mmap
import os
import subprocess
import sys

import numpy as np
import pytest

from safetensors import safe_open
from safetensors.numpy import save_file

from conftest import mapped_ranges, pagemap, pagemap_bit, pages_present, rss_bytes

BACKENDS = ["mmap", "pread"]
# framework -> module that must be importable
FRAMEWORK_MODULES = {"np": "numpy", "pt": "torch", "flax": "jax", "tf": "tensorflow", "mlx": "mlx",
                     "paddle": "paddle"}
FRAMEWORKS = [
    pytest.param(fw, marks=pytest.mark.skipif(importlib.util.find_spec(mod) is None, reason=f"{mod} absent"))
    for fw, mod in FRAMEWORK_MODULES.items()
]
MUTABLE = ["np", "pt"]  # frameworks whose arrays can be written in place


def as_numpy(x):
    return x.numpy() if hasattr(x, "numpy") and not isinstance(x, np.ndarray) else np.asarray(x)


@pytest.fixture(scope="module")
def arrays_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    arrays = {
        "small": rng.standard_normal((3, 5)).astype(np.float32),          # copied
        "large": rng.standard_normal((200, 300)).astype(np.float32),      # 240 KB: mapped
        "ints": rng.integers(-1000, 1000, (40, 7, 3)).astype(np.int16),
        "flags": rng.integers(0, 2, (6, 4)).astype(np.bool_),
    }
    path = tmp_path_factory.mktemp("independent") / "a.safetensors"
    save_file(arrays, path)
    return path, arrays


def _data_ptr(x):
    return x.data_ptr() if hasattr(x, "data_ptr") else x.__array_interface__["data"][0]


def _write(x, value):
    x[...] = value if isinstance(x, np.ndarray) else x.fill_(value)


@pytest.mark.parametrize("fw", MUTABLE)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["small", "large"])
def test_get_tensor_results_are_independent(arrays_file, fw, backend, name):
    if fw == "pt":
        pytest.importorskip("torch")
    path, arrays = arrays_file
    with safe_open(path, fw, backend=backend) as f:
        a = f.get_tensor(name)
        a *= 5
        b = f.get_tensor(name)
        np.testing.assert_array_equal(as_numpy(b), arrays[name])
        s = f.get_slice(name)[1:]
        c = f.get_slice(name)[1:]
        d = f.get_tensors()[name]
        for x in (s, d):
            x *= 3
        np.testing.assert_array_equal(as_numpy(c), arrays[name][1:])
        np.testing.assert_array_equal(as_numpy(f.get_tensors()[name]), arrays[name])
        np.testing.assert_array_equal(as_numpy(a), arrays[name] * 5)
    with open(path, "rb") as fh:
        assert fh.read() == open(path, "rb").read()  # and the file never changes


def test_upstream_example_numpy_fresh_each_time(arrays_file):
    path, arrays = arrays_file
    with safe_open(path, "np") as f:
        a = f.get_tensor("small")
        a *= 5
        np.testing.assert_array_equal(f.get_tensor("small"), arrays["small"])


def test_large_tensors_stay_zero_copy(arrays_file):
    path, arrays = arrays_file
    with safe_open(path, "np") as f:
        x = f.get_tensor("large")
        ptr = x.__array_interface__["data"][0]
        assert any(a <= ptr < b for a, b in mapped_ranges(path))


def test_many_small_tensors_add_one_mapping(tmp_path):
    """Issue 10: get_tensors makes small arrays views of one private mapping
    (tests/test_shared_storage.py); it lives exactly as long as they do."""
    n = 20_000
    path = tmp_path / "many.safetensors"
    save_file({f"p{i}": np.full(4, i, np.float32) for i in range(n)}, path)
    with safe_open(path, "np") as f:
        xs = f.get_tensors()
        assert len(mapped_ranges(path)) <= 2
    assert len(mapped_ranges(path)) == 1
    assert xs["p12345"][0] == 12345
    del xs
    gc.collect()
    assert mapped_ranges(path) == []


def test_pread_small_tensors_share_blocks_of_at_most_1_mib(tmp_path):
    """What a kept NumPy tensor pins is visible: its base holds one block."""
    path = tmp_path / "p.safetensors"
    arrays = {f"t{i:03d}": np.full(1000, i, np.float32) for i in range(600)}  # 2.4 MB of small tensors
    arrays["huge"] = np.ones(3 << 20, np.uint8)
    save_file(arrays, path)
    from safetensors.numpy import load_file
    loaded = load_file(path, backend="pread")
    blocks = {}
    for name, x in loaded.items():
        # the MappedBytes base: the block it keeps alive (its type aside)
        held = [r for r in gc.get_referents(x.base) if not isinstance(r, type)]
        assert len(held) <= 1
        for block in held:
            blocks[id(block)] = block.nbytes
    assert len(blocks) >= 3 and max(blocks.values()) <= 1 << 20
    for i in range(600):
        np.testing.assert_array_equal(loaded[f"t{i:03d}"], arrays[f"t{i:03d}"])


# --------------------------------------------------------------------------
# One private mapping per load_file / get_tensors call (issue 10)
# --------------------------------------------------------------------------

@pytest.fixture
def big_file(tmp_path):
    rng = np.random.default_rng(7)
    arrays = {
        "a": rng.standard_normal((1024, 3 * 1024)).astype(np.float32),  # 12 MB: half
        "small": np.arange(10, dtype=np.float32),
        "b": rng.standard_normal((1024, 3 * 1024)).astype(np.float32),  # the other half
        "c": np.arange(40_000, dtype=np.int64),  # 320 KB: large, own exporter
    }
    path = tmp_path / "big.safetensors"
    save_file(arrays, path)
    return path, arrays


def private_copies(addr, nbytes):
    """How many pages of [addr, addr + nbytes) are anonymous: private copies made by writes
    (bit 61 clear: not a page of the file's page cache)."""
    entries = pagemap(addr, nbytes)
    return int((pagemap_bit(entries, 63) & (np.uint64(1) - pagemap_bit(entries, 61))).sum())


def test_torch_load_file_values_and_independence(big_file):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    path, arrays = big_file
    first = load_file(path)
    second = load_file(path)
    for name, want in arrays.items():
        np.testing.assert_array_equal(first[name].numpy(), want)
    first["a"].fill_(1.0)
    first["small"].fill_(2.0)
    first["c"].add_(3)
    np.testing.assert_array_equal(second["a"].numpy(), arrays["a"])
    np.testing.assert_array_equal(second["small"].numpy(), arrays["small"])
    np.testing.assert_array_equal(first["b"].numpy(), arrays["b"])
    np.testing.assert_array_equal(load_file(path)["c"].numpy(), arrays["c"])
    assert torch.equal(first["c"], torch.from_numpy(arrays["c"] + 3))
    with safe_open(path, "np") as f:  # the file never changes
        assert f.get_tensor("a").tobytes() == arrays["a"].tobytes()


@pytest.mark.parametrize("fw", MUTABLE)
def test_load_file_stays_lazy(big_file, fw):
    """Nothing maps a loaded tensor's pages in before it is read (no thread does it behind the
    caller's back: issue 20 removed torch's background populator)."""
    lib = pytest.importorskip({"np": "safetensors.numpy", "pt": "safetensors.torch"}[fw])
    path, arrays = big_file
    x = lib.load_file(path)["b"]
    assert pages_present(_data_ptr(x), arrays["b"].nbytes) == 0
    np.testing.assert_array_equal(as_numpy(x)[:2], arrays["b"][:2])


@pytest.mark.parametrize("fw", MUTABLE)
def test_dying_tensor_gives_its_pages_back(big_file, fw):
    if fw == "pt":
        pytest.importorskip("torch")
    path, arrays = big_file
    with safe_open(path, fw) as f:
        loaded = f.get_tensors()
    a = loaded.pop("a")
    addr = _data_ptr(a)
    nbytes = arrays["a"].nbytes
    _write(a, 5)  # private copies of every page
    assert private_copies(addr, nbytes) >= nbytes // mmap.PAGESIZE - 1
    del a
    gc.collect()
    # the mapping lives on for the other tensors, but a's pages are given back
    assert mapped_ranges(path)
    assert pages_present(addr + mmap.PAGESIZE, nbytes - 2 * mmap.PAGESIZE) == 0
    np.testing.assert_array_equal(as_numpy(loaded["b"]), arrays["b"])
    del loaded
    gc.collect()
    assert mapped_ranges(path) == []  # the last tensor unmaps it


# Run in a fresh interpreter: what earlier tests did to this process's malloc
# (a raised mmap threshold, a grown heap) decides where a 64 MiB buffer lands.
_PINS_LITTLE = """
import gc, sys
import numpy as np
from safetensors.numpy import save_file

def anonymous_mapped_bytes():
    # Address space of anonymous mappings. Unlike RSS it does not move with page
    # reclaim or other processes: glibc serves each allocation above 32 MiB with
    # its own mmap and unmaps it on free, so a large buffer shows here exactly
    # while it lives.
    total = 0
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 6:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                total += end - start
    return total

fw, path, big = sys.argv[1], sys.argv[2], 64 << 20
save_file({"tiny": np.arange(10, dtype=np.float32), "huge": np.ones(big // 4, np.float32)}, path)
if fw == "pt":
    from safetensors.torch import load_file as load
else:
    from safetensors.numpy import load_file as load
gc.collect()
before = anonymous_mapped_bytes()
loaded = load(path, backend="pread")
read = anonymous_mapped_bytes() - before
tiny = loaded["tiny"]
del loaded
gc.collect()
kept = anonymous_mapped_bytes() - before
assert np.array_equal(np.asarray(tiny), np.arange(10, dtype=np.float32))
print(read, kept)
"""


@pytest.mark.parametrize("fw", MUTABLE)
def test_pread_kept_small_tensor_pins_little(tmp_path, fw):
    if fw == "pt":
        pytest.importorskip("torch")
    child = subprocess.run([sys.executable, "-c", _PINS_LITTLE, fw, str(tmp_path / "p.safetensors")],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    read, kept = map(int, child.stdout.split())
    assert read >= 64 << 20  # the huge tensor was read
    # What stays is the tiny tensor and at most one small block, not the 64 MiB.
    # (AddressSanitizer quarantines freed memory, so its mappings stay;
    # test_pread_small_tensors_share_blocks_of_at_most_1_mib checks the structure.)
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):
        assert kept < 16 << 20


# ---------------------------------------------------------------- advanced indexing

def _keys(torch):
    keys = [
        np.array([1, 0, 2]),
        (slice(None), np.array([4, 0])),
        np.array([[0, 1], [2, 1]]),
        [2, 0],
        [True, False, True],
        np.array([True, False, True]),
        (np.array([0, 2]), np.array([1, 3])),
        (Ellipsis, np.array([-1, 0])),
        (np.array([0, 1]), slice(None, None, -1)),
        (None, np.array([1])),
        (np.array([1]),),
        np.array([], dtype=np.int64),
        (1, [0, 2]),
    ]
    if torch is not None:
        keys += [torch.tensor([1, 0]), (slice(None), torch.tensor([3, 3, 0])),
                 torch.tensor([True, False, True]), torch.tensor([2]), (torch.tensor([0, 1]), 2)]
    return keys


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_advanced_indexing_matches_numpy(arrays_file, fw, backend):
    torch = None
    if importlib.util.find_spec("torch") is not None:
        import torch
    path, arrays = arrays_file
    with safe_open(path, fw, backend=backend) as f:
        for name in ("small", "large", "ints"):
            s = f.get_slice(name)
            for key in _keys(torch):
                np_key = tuple(k.numpy() if hasattr(k, "numpy") and not isinstance(k, np.ndarray) else k
                               for k in key) if isinstance(key, tuple) else (
                    key.numpy() if hasattr(key, "numpy") and not isinstance(key, np.ndarray) else key)
                try:
                    expected = arrays[name][np_key]
                except IndexError:  # NumPy refuses it: so do we, with NumPy's error
                    with pytest.raises(IndexError):
                        s[key]
                    continue
                got = as_numpy(s[key])
                assert got.shape == expected.shape, (name, key)
                np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("fw", MUTABLE)
@pytest.mark.parametrize("backend", BACKENDS)
def test_advanced_results_are_independent_and_typed(arrays_file, fw, backend):
    if fw == "pt":
        torch = pytest.importorskip("torch")
    path, arrays = arrays_file
    with safe_open(path, fw, backend=backend) as f:
        a = f.get_slice("flags")[np.array([0, 2])]
        if fw == "pt":
            assert a.dtype == torch.bool
        else:
            assert a.dtype == np.bool_
        b = f.get_slice("large")[[0, 1]]
        b *= 0
        np.testing.assert_array_equal(as_numpy(f.get_slice("large")[[0, 1]]), arrays["large"][[0, 1]])


def test_mask_of_wrong_shape_is_numpys_error(arrays_file):
    path, _ = arrays_file
    with safe_open(path, "np") as f:
        with pytest.raises(IndexError):
            f.get_slice("small")[np.array([True, False])]
        with pytest.raises(IndexError):
            f.get_slice("small")[np.array([7])]
