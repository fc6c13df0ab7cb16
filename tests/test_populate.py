"""Issue 10: one private mapping per load_file / get_tensors call on the mmap
backend, populated on a second core for torch, and what a dying tensor gives
back (csrc/binding/tensor_views.c, st_private_map_populate in st_file.c).

Population is an optimisation: the tests check the bytes, the independence
of the results, the lifetime of the mapping, and, where the kernel says so,
which pages are mapped in. Nothing here depends on timing: waits poll a state
that must come about, with a generous bound."""

from __future__ import annotations

import gc
import mmap
import os
import time

import numpy as np
import pytest

from safetensors import safe_open
from safetensors.numpy import load_file as np_load_file
from safetensors.numpy import save_file

from conftest import mapped_ranges, pagemap, pagemap_bit, pages_present

PAGE = mmap.PAGESIZE
SIZE_MB = 24  # above the 8 MiB from which torch loads are populated


def private_copies(addr, nbytes):
    """How many of them are anonymous: private copies made by writes (bit 61
    clear: not a page of the file's page cache)."""
    entries = pagemap(addr, nbytes)
    return int((pagemap_bit(entries, 63) & (np.uint64(1) - pagemap_bit(entries, 61))).sum())


def file_pmd_mapped_kb(addr):
    """FilePmdMapped of the mapping that holds addr (/proc/self/smaps): its file pages that
    the kernel mapped with one huge entry per 2 MiB."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if not head.endswith(":"):  # a mapping's first line: start-end perms ...
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= addr < end
            elif inside and head == "FilePmdMapped:":
                return int(line.split()[1])
    return 0


def wait_until(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def all_cached(path):
    """Whether every page of the file is in the page cache (mincore)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    size = os.path.getsize(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as m:
        view = np.frombuffer(m, dtype=np.uint8)
        vec = ctypes.create_string_buffer((size + PAGE - 1) // PAGE)
        ok = libc.mincore(view.__array_interface__["data"][0], size, vec) == 0
        del view
    return ok and all(b & 1 for b in vec.raw)


@pytest.fixture
def big_file(tmp_path):
    rng = np.random.default_rng(7)
    arrays = {
        "a": rng.standard_normal((1024, 1024 * SIZE_MB // 8)).astype(np.float32),  # half
        "small": np.arange(10, dtype=np.float32),
        "b": rng.standard_normal((1024, 1024 * SIZE_MB // 8)).astype(np.float32),  # the other half
        "c": np.arange(40_000, dtype=np.int64),  # 320 KB: large, own exporter
    }
    path = tmp_path / "big.safetensors"
    save_file(arrays, path)
    return path, arrays


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


def test_torch_load_file_is_populated_from_the_end(big_file):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    path, arrays = big_file
    if not all_cached(path):
        pytest.skip("the fresh file was evicted from the page cache: nothing would be populated")
    loaded = load_file(path)
    last = loaded["b"]
    addr, nbytes = last.data_ptr(), last.numel() * last.element_size()
    if (os.cpu_count() or 1) < 2:
        # one core: no thread is started, nothing is mapped in before use
        assert pages_present(addr, nbytes) == 0
        return
    # the populator goes from the end towards the start, 2 MiB at a time:
    # the last tensor's pages come in without being read; where the kernel
    # maps the file's page cache with huge entries, it stops after the first
    # whole chunk (the reader's faults are cheap there)
    assert wait_until(lambda: pages_present(addr, nbytes) >= nbytes // PAGE - 1 or (
        file_pmd_mapped_kb(addr) > 0 and pages_present(addr, nbytes) >= (2 << 20) // PAGE))
    np.testing.assert_array_equal(last.numpy(), arrays["b"])
    assert torch.equal(loaded["a"][:3], torch.from_numpy(arrays["a"][:3]))


def test_numpy_load_file_stays_lazy(big_file):
    path, arrays = big_file
    loaded = np_load_file(path)
    x = loaded["b"]
    # no thread was started for NumPy: nothing is mapped in until it is read
    assert pages_present(x.__array_interface__["data"][0], x.nbytes) == 0
    np.testing.assert_array_equal(x[:2], arrays["b"][:2])


@pytest.mark.parametrize("fw", ["np", "pt"])
def test_dying_tensor_gives_its_pages_back(big_file, fw):
    if fw == "pt":
        pytest.importorskip("torch")
    path, arrays = big_file
    with safe_open(path, fw) as f:
        loaded = f.get_tensors()
    a = loaded.pop("a")
    addr = a.data_ptr() if fw == "pt" else a.__array_interface__["data"][0]
    nbytes = arrays["a"].nbytes
    if fw == "np":  # written: private copies of every page
        a[...] = 5
    else:
        a.fill_(5)
    assert private_copies(addr, nbytes) >= nbytes // PAGE - 1
    del a
    gc.collect()
    # the mapping lives on for the other tensors, but a's written pages are
    # freed (torch's populator may map the file's own pages in there again)
    assert mapped_ranges(path)
    assert private_copies(addr + PAGE, nbytes - 2 * PAGE) == 0
    if fw == "np":  # nothing populates NumPy loads: the range is empty
        assert pages_present(addr + PAGE, nbytes - 2 * PAGE) == 0
    np.testing.assert_array_equal(np.asarray(loaded["b"]), arrays["b"])
    del loaded
    gc.collect()
    # the last tensor unmaps it (a running populator unmaps once it stops)
    assert wait_until(lambda: mapped_ranges(path) == [])


def test_release_while_populating_many_times(big_file):
    pytest.importorskip("torch")
    from safetensors.torch import load_file

    path, arrays = big_file
    for i in range(30):
        loaded = load_file(path)
        if i % 3 == 0:
            np.testing.assert_array_equal(loaded["b"][-1].numpy(), arrays["b"][-1])
        del loaded
    gc.collect()
    assert wait_until(lambda: mapped_ranges(path) == [])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_reads_and_exits(big_file):
    pytest.importorskip("torch")
    from safetensors.torch import load_file

    path, arrays = big_file
    loaded = load_file(path)
    pid = os.fork()
    if pid == 0:  # the child has the mapping, not the populator thread
        ok = np.array_equal(loaded["b"].numpy(), arrays["b"])
        del loaded
        gc.collect()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    np.testing.assert_array_equal(loaded["a"][-1].numpy(), arrays["a"][-1])
