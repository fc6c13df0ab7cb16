"""The pread backend's parallel reads (st_file_read_many): reads of 4 MiB or
more in all are split into contiguous pieces (4 to 16 MiB, about a 32nd of the
whole) that up to 8 threads take from one queue and each read in 1 MiB
chunks, and get_tensors allocates every destination before reading them all
at once. These tests check the bytes (tensors larger than a chunk or a piece,
sizes around the chunk, piece, block and parallel thresholds, empty tensors),
the independence of the returned arrays, and that a file shrinking after open
raises instead of handing out partial tensors.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

MIB = 1 << 20
CHUNK = MIB          # ST_READ_CHUNK in csrc/core/st_read.c
BLOCK_MAX = MIB      # STPY_BLOCK_MAX in csrc/binding/module.h
PARALLEL_MIN = 4 * MIB  # ST_PARALLEL_MIN in csrc/core/st_read.c
THREADS = 8          # ST_READ_THREADS in csrc/core/st_read.c: a piece is total // (4 * THREADS) ...
PIECE_MIN = 4 * MIB  # ... but at least ST_READ_PIECE_MIN


def random_u8(rng, n):
    return rng.integers(0, 256, size=n, dtype=np.uint8)


def boundary_mix(seed=0):
    """u8 tensors whose sizes sit on and around every threshold, in a shuffled
    order, so chunks, blocks and whole-tensor reads all meet their edges."""
    rng = np.random.default_rng(seed)
    sizes = [0, 1, 7, 4095, 4096, 65535, 65536, BLOCK_MAX - 1, BLOCK_MAX, BLOCK_MAX + 1,
             CHUNK * 2 - 1, CHUNK * 2, CHUNK * 2 + 1, PARALLEL_MIN - 1, PARALLEL_MIN,
             PARALLEL_MIN + 1, 0, 3, 5 * CHUNK + 12345, 100, 200]
    order = rng.permutation(len(sizes))
    return {f"t{i:02d}_{sizes[i]}": random_u8(rng, sizes[i]) for i in order}


def many_large(seed=1, n=24):
    """More tensors larger than a chunk than there are reader threads, with
    small ones between them."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        out[f"big{i:02d}"] = rng.standard_normal(int(rng.integers(CHUNK // 4, 3 * CHUNK // 4)) * 4
                                                 ).astype(np.float32).reshape(4, -1)
        out[f"small{i:02d}"] = rng.standard_normal(int(rng.integers(1, 300))).astype(np.float16)
    return out


def multi_chunk_pieces(seed=7):
    """About 200 MiB in all, so a piece is 6 MiB (several chunks): tensors on
    and around the piece size, one spanning many pieces, small ones between."""
    rng = np.random.default_rng(seed)
    sizes = [80 * MIB + 7, 6 * MIB - 1, 6 * MIB, 6 * MIB + 1, 0, 5, 12 * MIB + 5, 18 * MIB - 4095,
             CHUNK + 1, 17, 40 * MIB + 3, 8 * MIB, 22 * MIB + 1]
    assert sum(sizes) // (4 * THREADS) // CHUNK * CHUNK == 6 * MIB > PIECE_MIN
    order = rng.permutation(len(sizes))
    return {f"p{i:02d}_{sizes[i]}": random_u8(rng, sizes[i]) for i in order}


@pytest.mark.parametrize("make", [boundary_mix, many_large, multi_chunk_pieces],
                         ids=["boundary_mix", "many_large", "multi_chunk_pieces"])
@pytest.mark.parametrize("how", ["get_tensors", "get_tensor", "load_file"])
def test_pread_numpy_is_byte_exact(tmp_path, make, how):
    ref = make()
    p = str(tmp_path / "m.safetensors")
    save_file(ref, p)
    if how == "load_file":
        got = load_file(p, backend="pread")
    else:
        with safe_open(p, "np", backend="pread") as f:
            got = f.get_tensors() if how == "get_tensors" else {k: f.get_tensor(k) for k in f.keys()}
    assert sorted(got) == sorted(ref)
    for k, v in ref.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        assert got[k].tobytes() == v.tobytes(), k


def test_pread_torch_is_byte_exact_and_independent(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as torch_load, save_file as torch_save

    g = torch.Generator().manual_seed(2)
    ref = {}
    for i, n in enumerate([3 * CHUNK // 4, CHUNK, CHUNK // 2 + 1, 1, 17, 0, 2 * CHUNK + 3,
                           PARALLEL_MIN // 4, 5, PARALLEL_MIN // 4 + 1]):
        dtype = (torch.float32, torch.bfloat16, torch.int8)[i % 3]
        size = max(n // torch.empty(0, dtype=dtype).element_size(), 0)
        ref[f"w{i}"] = torch.randn(size, generator=g).to(dtype)
    p = str(tmp_path / "t.safetensors")
    torch_save(ref, p)
    got = torch_load(p, backend="pread")
    assert got.keys() == ref.keys()
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    # Writing every byte of one tensor moves none of the ones not yet written.
    names = [k for k in ref if got[k].numel()]
    for i, k in enumerate(names):
        got[k].view(-1).view(torch.uint8).fill_(0xA5)
        for later in names[i + 1:]:
            assert torch.equal(got[later], ref[later]), (k, later)


def test_pread_get_tensors_arrays_are_independent(tmp_path):
    ref = boundary_mix(seed=3)
    p = str(tmp_path / "i.safetensors")
    save_file(ref, p)
    with safe_open(p, "np", backend="pread") as f:
        got = f.get_tensors()
    names = [k for k in f_keys_in_offset_order(p) if ref[k].size]
    for i, k in enumerate(names):
        got[k][...] = 0xFF - ref[k]          # every byte of k changes
        for later in names[i + 1:]:           # ... and no not-yet-written tensor moved
            assert got[later].tobytes() == ref[later].tobytes(), (k, later)


def f_keys_in_offset_order(p):
    with safe_open(p, "np") as f:
        return f.offset_keys()


@pytest.mark.parametrize("cut_at", ["middle", "last_byte", "header_end"])
def test_pread_get_tensors_of_a_shrunk_file_raises(tmp_path, cut_at):
    ref = many_large(seed=4)
    p = str(tmp_path / "s.safetensors")
    save_file(ref, p)
    size = os.path.getsize(p)
    with open(p, "rb") as fh:
        header_end = 8 + int.from_bytes(fh.read(8), "little")
    cut = {"middle": size // 2, "last_byte": size - 1, "header_end": header_end}[cut_at]
    with safe_open(p, "np", backend="pread") as f:
        os.truncate(p, cut)
        with pytest.raises(SafetensorError) as info:
            f.get_tensors()
        assert isinstance(info.value, OSError)
        assert "shrank" in str(info.value)


def test_pread_multi_chunk_pieces_of_a_shrunk_file_raise(tmp_path):
    """The end falls inside a piece of several chunks: a later chunk of that
    piece fails, and the whole call raises."""
    ref = multi_chunk_pieces(seed=8)
    p = str(tmp_path / "m.safetensors")
    save_file(ref, p)
    with safe_open(p, "np", backend="pread") as f:
        os.truncate(p, os.path.getsize(p) - 3 * MIB // 2)
        with pytest.raises(SafetensorError, match="shrank"):
            f.get_tensors()


def test_pread_large_get_tensor_of_a_shrunk_file_raises(tmp_path):
    """One tensor read in parallel chunks: the chunk past the end fails and
    the whole call raises."""
    rng = np.random.default_rng(5)
    big = random_u8(rng, 3 * PARALLEL_MIN + 7)
    p = str(tmp_path / "b.safetensors")
    save_file({"big": big}, p)
    with safe_open(p, "np", backend="pread") as f:
        os.truncate(p, os.path.getsize(p) - PARALLEL_MIN)
        with pytest.raises(SafetensorError, match="shrank"):
            f.get_tensor("big")


def test_pread_file_grown_after_open_reads_what_the_header_says(tmp_path):
    ref = many_large(seed=6, n=6)
    p = str(tmp_path / "g.safetensors")
    save_file(ref, p)
    with safe_open(p, "np", backend="pread") as f:
        with open(p, "ab") as fh:
            fh.write(b"\x00" * (3 * MIB))
        got = f.get_tensors()
    for k, v in ref.items():
        assert got[k].tobytes() == v.tobytes(), k
