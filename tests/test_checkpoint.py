"""Whole checkpoints through one handle (safetensors.checkpoint) and prefetch
(safetensors.prefetch): the index's weight_map honoured, names routed to
their files, read plans read in the background within a budget.

Checkpoints here are written with NumPy by the writer under test elsewhere
(tests/test_write_numpy.py); values are distinct per tensor so a tensor
routed to the wrong file cannot pass."""
import gc
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file
from safetensors.plans import Replicate, Shard

INDEX = "model.safetensors.index.json"


def shard_name(k, n=4):
    return f"model-{k + 1:05d}-of-{n:05d}.safetensors"


def tensors_of(k):
    """Shard k's tensors: distinct values, a few shapes and dtypes."""
    return {f"layers.{k}.w": (np.arange(64 * 16, dtype=np.float32) + 1000 * k).reshape(64, 16),
            f"layers.{k}.b": np.arange(16, dtype=np.int64) - k,
            f"layers.{k}.norm": np.full((3, 5, 7), k, dtype=np.float16)}


def write_checkpoint(folder, shards=4, index=True, extra=None, weight_map_edit=None, metadata=None):
    """A checkpoint of `shards` files (and an index unless index=False); extra:
    {shard: {name: array}} written into a shard but not listed in the index.
    Returns {name: array} of what the index lists."""
    os.makedirs(folder, exist_ok=True)
    listed, weight_map = {}, {}
    for k in range(shards):
        tensors = tensors_of(k)
        listed.update(tensors)
        weight_map.update({n: shard_name(k, shards) for n in tensors})
        save_file({**tensors, **(extra or {}).get(k, {})}, os.path.join(folder, shard_name(k, shards)),
                  metadata={"format": "np", "shard": str(k)})
    if weight_map_edit:
        weight_map_edit(weight_map)
    if index:
        with open(os.path.join(folder, INDEX), "w") as f:
            json.dump({"metadata": metadata or {"total_size": 1234}, "weight_map": weight_map}, f)
    return listed


def equal(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


# ---------------------------------------------------------------- the index


def test_index_leaves_out_a_tensor_present_in_a_file(tmp_path):
    listed = write_checkpoint(tmp_path, extra={2: {"stray": np.ones(3, np.float32)}})
    with safe_open(tmp_path, "np") as f:
        assert f.keys() == sorted(listed)
        assert "stray" not in f.offset_keys() and "stray" not in f.get_tensors()
        with pytest.raises(SafetensorError, match="^File does not contain tensor stray$"):
            f.get_tensor("stray")
        with pytest.raises(SafetensorError, match="^File does not contain tensor stray$"):
            f.get_slice("stray")


def test_index_names_a_tensor_its_file_lacks(tmp_path):
    write_checkpoint(tmp_path, weight_map_edit=lambda wm: wm.update({"ghost": shard_name(1)}))
    with pytest.raises(SafetensorError, match=r"names tensor 'ghost' in .*model-00002-of-00004\.safetensors, "
                                              "which does not contain it"):
        safe_open(tmp_path / INDEX, "np")


@pytest.mark.parametrize("index", [True, False])
def test_a_tensor_in_two_files(tmp_path, index):
    write_checkpoint(tmp_path, index=index, extra={3: {"layers.0.b": np.zeros(16, np.int64)}})
    with pytest.raises(SafetensorError, match=r"tensor 'layers\.0\.b' is in both .*00001-of-00004.* and "
                                              r".*00004-of-00004"):
        safe_open(tmp_path, "np")


def test_unlisted_duplicates_are_invisible_not_errors(tmp_path):
    write_checkpoint(tmp_path, extra={0: {"stray": np.ones(1)}, 1: {"stray": np.zeros(1)}})
    with safe_open(tmp_path, "np") as f:
        assert "stray" not in f.keys()


def test_shard_names_cannot_leave_the_folder(tmp_path):
    write_checkpoint(tmp_path / "ck", weight_map_edit=lambda wm: wm.update({"layers.0.w": "../outside.safetensors"}))
    with pytest.raises(ValueError, match="leads outside the index's folder"):
        safe_open(tmp_path / "ck" / INDEX, "np")


def test_ambiguous_and_empty_folders(tmp_path):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(IsADirectoryError, match=f"^Is a directory: {tmp_path / 'empty'}$"):   # as upstream
        safe_open(tmp_path / "empty", "np")
    write_checkpoint(tmp_path / "two", index=False)
    for name in ("a.safetensors.index.json", "b.safetensors.index.json"):
        (tmp_path / "two" / name).write_text("{}")
    with pytest.raises(ValueError, match="several indexes"):
        safe_open(tmp_path / "two", "np")


# ---------------------------------------------------------------- reading through the handle


def check_handle(f, listed, files):
    """Everything the handle answers, against the arrays written and the files' own handles."""
    assert f.keys() == sorted(listed)
    order = []
    for path in files:
        with safe_open(path, "np") as one:
            order += [n for n in one.offset_keys() if n in listed]
    assert f.offset_keys() == order
    for name in reversed(order):
        assert equal(f.get_tensor(name), listed[name])
        assert f.get_slice(name).get_shape() == list(listed[name].shape)
    assert equal(f.get_slice("layers.2.w")[3:9, ::-3], listed["layers.2.w"][3:9, ::-3])
    everything = f.get_tensors()
    assert list(everything) == order and all(equal(everything[n], listed[n]) for n in order)


def test_keys_metadata_and_reads_through_an_index(tmp_path, source):
    listed = write_checkpoint(tmp_path, metadata={"total_size": 1234, "note": "index"})
    files = [tmp_path / shard_name(k) for k in range(4)]
    with source.open(tmp_path / INDEX, "np") as f:
        assert f.files == [source(p) for p in files]
        check_handle(f, listed, files)
        # the files' metadata in file order (the last shard's "shard" wins), then the index's
        assert f.metadata() == {"format": "np", "shard": "3", "total_size": "1234", "note": "index"}


@pytest.mark.parametrize("form", ["folder", "folder without index", "list"])
def test_folder_and_list(tmp_path, form):
    listed = write_checkpoint(tmp_path, index=form == "folder")
    files = [tmp_path / shard_name(k) for k in range(4)]
    with safe_open(files if form == "list" else tmp_path, "np") as f:
        assert f.files == [str(p) for p in files]
        check_handle(f, listed, files)
        assert f.metadata() == ({"format": "np", "shard": "3", "total_size": "1234"} if form == "folder"
                                else {"format": "np", "shard": "3"})


def test_closed_and_wrong_arguments(tmp_path):
    write_checkpoint(tmp_path)
    f = safe_open(tmp_path, "np")
    with pytest.raises(TypeError):
        f.get_tensor(3)
    f.close()
    for call in (f.keys, f.metadata, lambda: f.get_tensor("layers.0.w"), f.get_tensors, f.prefetch):
        with pytest.raises(SafetensorError, match="^File is closed$"):
            call()
    with pytest.raises(ValueError, match="listed twice"):
        safe_open([tmp_path / shard_name(0)] * 2, "np")
    with pytest.raises(ValueError, match="storage_options is for URLs"):
        safe_open(tmp_path / INDEX, "np", storage_options={})


def file_order(listed):
    return [n for k in range(4) for n in sorted(listed) if n.startswith(f"layers.{k}.")]


def test_load_file_of_an_index(tmp_path, source):   # an index path, and an index URL
    listed = write_checkpoint(tmp_path)
    loaded = load_file(source(tmp_path / INDEX))
    assert sorted(loaded) == sorted(listed) and all(equal(loaded[n], listed[n]) for n in listed)


def test_load_file_of_a_folder(tmp_path):
    listed = write_checkpoint(tmp_path)
    loaded = load_file(tmp_path)
    with safe_open(tmp_path, "np") as f:
        assert list(loaded) == f.offset_keys()
    assert sorted(loaded) == sorted(listed) and all(equal(loaded[n], listed[n]) for n in listed)


def test_torch_load_file_of_a_checkpoint(tmp_path, torch):
    from safetensors.torch import load_file as torch_load_file

    listed = write_checkpoint(tmp_path)
    loaded = torch_load_file(tmp_path / INDEX)
    assert sorted(loaded) == sorted(listed)
    assert all(np.array_equal(loaded[n].numpy(), listed[n]) for n in listed)


# ---------------------------------------------------------------- prefetch


def reader_of(f):
    """The prefetch reader of a handle (private: the tests wait on it)."""
    return f._prefetch


# The tests below open with backend="pread" (or a URL): whole tensors are then read ahead.
# On a mapped file mostly in the page cache (every file a test has just written) they are
# left to get_tensor's views:


def test_prefetch_leaves_a_cached_mapped_file_to_views(tmp_path):
    listed = write_checkpoint(tmp_path)
    with safe_open(tmp_path, "np", backend="mmap") as f:
        assert all(h._resident() > 0.5 for h in f._handles)   # just written
        f.prefetch({"layers.1.w": Replicate(), "layers.2.w": Shard(0)}, world_size=2)
        assert [j.name for j in reader_of(f)._order] == ["layers.2.w"]   # a Shard's part is still read
        assert equal(f.get_tensor("layers.1.w"), listed["layers.1.w"])
        assert equal(f.get_slice("layers.2.w")[:32], listed["layers.2.w"][:32])


@pytest.mark.parametrize("budget", [None, 1])   # 1: smaller than any tensor, read one at a time
def test_prefetch_out_of_order(tmp_path, source, budget):
    listed = write_checkpoint(tmp_path)
    with source.open(tmp_path / INDEX, "np", backend="pread") as f:
        f.prefetch(budget=budget)
        held = []
        for name in reversed(f.keys()):
            assert equal(f.get_tensor(name), listed[name])
            held.append(reader_of(f)._held)
        if budget == 1:   # never more than one tensor read ahead
            assert max(held) <= max(a.nbytes for a in listed.values())
        # taken once: a second get_tensor reads as usual
        assert equal(f.get_tensor("layers.1.w"), listed["layers.1.w"])


def test_prefetch_of_one_file_and_plans(tmp_path):
    listed = write_checkpoint(tmp_path)
    path = tmp_path / shard_name(1)
    with safe_open(path, "np", backend="pread") as f:
        f.prefetch(["layers.1.w"])
        reader = reader_of(f)
        assert [j.name for j in reader._order] == ["layers.1.w"]
        assert equal(f.get_tensor("layers.1.w"), listed["layers.1.w"])
        assert equal(f.get_tensor("layers.1.b"), listed["layers.1.b"])   # not planned: as usual
        f.prefetch({"layers.1.b": Replicate(), "layers.1.norm": None})
        assert reader_of(f) is not reader and not reader._thread.is_alive()   # the earlier one closed
        assert [j.name for j in reader_of(f)._order] == ["layers.1.b"]
        f.prefetch(lambda name, shape, dtype: Replicate() if dtype == "F16" else None)
        assert [j.name for j in reader_of(f)._order] == ["layers.1.norm"]
        with pytest.raises(SafetensorError, match="does not contain tensor.*'nope'"):
            f.prefetch({"nope": Replicate()})
        for bad in ({"budget": 0}, {"rank": 2, "world_size": 2}, {"world_size": 0}):
            with pytest.raises(ValueError):
                f.prefetch(**bad)
        with pytest.raises(TypeError):
            f.prefetch("layers.1.w")
        with pytest.raises(TypeError, match="must be Replicate"):
            f.prefetch({"layers.1.w": "all"})


@pytest.mark.parametrize("world_size", [1, 3])
def test_prefetch_shards(tmp_path, source, world_size):
    listed = write_checkpoint(tmp_path)
    with source.open(tmp_path / INDEX, "np", backend="pread") as f:
        for rank in range(world_size):
            f.prefetch({"layers.0.w": Shard(0), "layers.2.w": Shard(-1), "layers.3.norm": Shard(1)},
                       rank=rank, world_size=world_size)
            for name, dim in (("layers.0.w", 0), ("layers.2.w", 1), ("layers.3.norm", 1)):
                full = listed[name]
                n = full.shape[dim]
                lo = rank * (n // world_size) + min(rank, n % world_size)
                hi = lo + n // world_size + (rank < n % world_size)
                index = (slice(None),) * dim + (slice(lo, hi),)
                sliced = f.get_slice(name)
                assert sliced.get_shape() == list(full.shape) and sliced.get_dtype() == str(f.get_slice(name).get_dtype())
                assert equal(sliced[index], full[index])
                assert equal(sliced[index], full[index])   # again: read as get_slice does
                assert equal(f.get_slice(name)[1:2], full[1:2])   # another index
            # a Shard's tensor is not handed out whole by get_tensor's prefetch
            assert equal(f.get_tensor("layers.0.w"), listed["layers.0.w"])


def test_prefetch_failing_read_names_the_tensor(tmp_path):
    listed = write_checkpoint(tmp_path)
    with safe_open(tmp_path, "np", backend="pread") as f:
        last = tmp_path / shard_name(3)
        os.truncate(last, os.path.getsize(last) - 8)   # the last shard's last tensor is cut short
        f.prefetch(budget=1 << 30)
        reader = reader_of(f)
        reader._thread.join()   # everything attempted in the background
        failed = f.offset_keys()[-1]
        with pytest.raises(SafetensorError, match=f"prefetching tensor {failed}: .*end of file"):
            f.get_tensor(failed)
        for name in f.offset_keys()[:-3]:   # the other shards' tensors arrive
            assert equal(f.get_tensor(name), listed[name])


def test_prefetch_close_in_the_middle_frees_what_was_not_taken(tmp_path):
    write_checkpoint(tmp_path)
    f = safe_open(tmp_path, "np", backend="pread")
    f.prefetch(budget=1)   # one tensor ahead: the reader waits for the caller
    reader = reader_of(f)
    f.get_tensor(f.offset_keys()[0])
    f.close()
    assert not reader._thread.is_alive()
    assert reader._held == 0 and all(j.result is None for j in reader._order)
    with pytest.raises(SafetensorError, match="^File is closed$"):
        f.get_tensor("layers.0.w")


def test_prefetch_stops_when_the_handle_is_dropped(tmp_path):
    write_checkpoint(tmp_path)
    f = safe_open(tmp_path / shard_name(0), "np", backend="pread")
    f.prefetch(budget=1)
    reader = reader_of(f)
    del f
    gc.collect()
    reader._thread.join(60)
    assert not reader._thread.is_alive() and reader._cancelled


def test_prefetch_from_two_threads(tmp_path, source):
    listed = write_checkpoint(tmp_path)
    got, errors = {}, []
    with source.open(tmp_path / INDEX, "np", backend="pread") as f:
        f.prefetch(budget=4096)
        names = f.keys()

        def take(part):
            try:
                for name in part:
                    got[name] = f.get_tensor(name)
            except BaseException as exc:   # reported below
                errors.append(exc)

        threads = [threading.Thread(target=take, args=(names[k::2],)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert sorted(got) == sorted(listed) and all(equal(got[n], listed[n]) for n in listed)


MEMORY_CHILD = r"""
import os, resource, sys
from safetensors import safe_open
path, budget, take = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "take"
def data_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmData:"):
            return int(line.split()[1])
f = safe_open(path, "np", backend="pread")
names = f.offset_keys()
# Room for a 32 MiB budget, one tensor being handed out (16 MiB) and 48 MiB of slack:
# threads' stacks and the allocator's arenas. The file holds 8 x 16 MiB.
limit = (data_kb() << 10) + (32 << 20) + (16 << 20) + (48 << 20)
resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.RLIM_INFINITY))
f.prefetch(budget=budget)
if take:
    for name in names:
        t = f.get_tensor(name)
        assert t.shape == (4 << 20,) and float(t[0]) == float(names.index(name)), name
        del t
else:
    f._prefetch._thread.join()
    f.get_tensor(names[-1])
print("ok")
"""


def test_prefetch_memory_is_the_budget_plus_what_was_taken(tmp_path):
    """Under a data limit of the budget plus one tensor (and slack), a plan of
    8 tensors of 16 MiB each loads when the caller takes them in turn; the same
    plan with an unlimited budget and a caller that takes nothing runs out."""
    path = tmp_path / "big.safetensors"
    save_file({f"t{i}": np.full(4 << 20, i, dtype=np.float32) for i in range(8)}, path)
    # Under AddressSanitizer (.ci/sanitize.sh) freed memory waits in a quarantine that would
    # count against the limit: none in the child (harmless without ASan).
    asan = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=0",
                                  "thread_local_quarantine_size_kb=0"]))
    run = lambda budget, take: subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(path), str(budget), take],
                                              capture_output=True, text=True, env=dict(os.environ, ASAN_OPTIONS=asan))
    ok = run(32 << 20, "take")
    assert ok.returncode == 0 and ok.stdout.strip() == "ok", ok.stderr[-2000:]
    over = run(1 << 40, "hold")
    assert over.returncode != 0 and "Unable to allocate" in over.stderr, over.stderr[-2000:]


def test_load_distributed_takes_the_same_plans_and_sources(tmp_path, torch):
    """One group of one: load_distributed reads a folder and an index with the plans of
    prefetch (the same Replicate and Shard, names accepted)."""
    from safetensors import distributed, plans
    from safetensors.torch import load_distributed

    assert distributed.Replicate is plans.Replicate and distributed.Shard is plans.Shard
    listed = write_checkpoint(tmp_path, extra={1: {"stray": np.ones(2, np.float32)}})
    for source in (tmp_path, tmp_path / INDEX):
        loaded = load_distributed(source, ["layers.0.w", "layers.3.b"], default=None)
        assert sorted(loaded) == ["layers.0.w", "layers.3.b"]
        assert np.array_equal(loaded["layers.0.w"].numpy(), listed["layers.0.w"])
        loaded = load_distributed(source, {"layers.2.w": Shard(1)})
        assert "stray" not in loaded and sorted(loaded) == sorted(listed)
