"""backend=None, the default: safe_open reads network, cluster and FUSE file systems with
pread and maps local files (csrc/core/st_storage.c), and a whole-file load of a mapped file
mostly not in the page cache reads it with pread instead of page faults (docs/design.md,
"Choosing how a file is read"). The decisions are tested through the pure rules (the f_type
table, the load rule) and end to end on this machine's local file systems; a cold load is
checked against the residency measured at that moment, never left to chance.
"""

from __future__ import annotations

import inspect
import os
import re

import numpy as np
import pytest

from safetensors import _safetensors_c, safe_open
from safetensors.numpy import load_file, save_file

# statfs(2) / linux/magic.h values, and the out-of-tree file systems' own.
REMOTE = {
    0x6969: "nfs", 0x517B: "smb", 0xFE534D42: "smb2", 0xFF534D42: "cifs", 0x00C36400: "ceph",
    0x0BD00BD0: "lustre", 0x47504653: "gpfs", 0x19830326: "beegfs", 0xAAD7AAEA: "panfs",
    0x01021997: "9p", 0x5346414F: "afs", 0x6B414653: "kafs", 0x73757245: "coda", 0x564C: "ncp",
    0x7461636F: "ocfs2", 0x01161970: "gfs2", 0x65735546: "fuse",
}
# ext4, tmpfs, xfs, btrfs, overlayfs, zfs, squashfs, ramfs, f2fs, bcachefs
LOCAL = [0xEF53, 0x01021994, 0x58465342, 0x9123683E, 0x794C7630, 0x2FC12FC1, 0x73717368,
         0x858458F6, 0xF2F52010, 0xCA451A4E]
REASON = re.compile(r"^local file system; whole-file load: (\d+)% of the file in the page cache$")


@pytest.mark.parametrize("magic", sorted(REMOTE), ids=[REMOTE[m] for m in sorted(REMOTE)])
def test_remote_file_systems_are_named(magic):
    assert _safetensors_c._fs_name(magic) == REMOTE[magic]
    # f_type is a C long: a magic above 0x7fffffff may come sign-extended.
    assert _safetensors_c._fs_name(magic | (0xFFFFFFFF << 32) if magic >> 31 else magic) == REMOTE[magic]


@pytest.mark.parametrize("magic", LOCAL, ids=hex)
def test_local_file_systems_have_no_name(magic):
    assert _safetensors_c._fs_name(magic) is None


def test_storage_kind_of_local_paths(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"")
    assert _safetensors_c._storage_kind(str(p)) is None
    assert _safetensors_c._storage_kind(p) is None
    with open(p, "rb") as f:
        assert _safetensors_c._storage_kind(f.fileno()) is None
    with pytest.raises(FileNotFoundError):
        _safetensors_c._storage_kind(str(tmp_path / "missing"))


def test_load_rule():
    gib = 1 << 30
    prefers = _safetensors_c._prefers_pread
    assert prefers(0.0, gib, 16 * gib) and prefers(0.49, gib, 16 * gib)
    assert not prefers(0.5, gib, 16 * gib) and not prefers(1.0, gib, 16 * gib)
    # The copy pread makes is held whole: not beyond half of memory.
    assert prefers(0.0, 8 * gib, 16 * gib) and not prefers(0.0, 8 * gib + 1, 16 * gib)
    assert prefers(0.0, 1 << 20) and not prefers(0.0, 1 << 62)  # this machine's memory


def arrays():
    rng = np.random.default_rng(5)
    return {"big": rng.standard_normal((512, 1024)).astype(np.float32),  # 2 MiB: parallel reads
            "half": rng.standard_normal(70000).astype(np.float16),
            "small": np.arange(7, dtype=np.int64), "empty": np.zeros((0, 3), np.uint8)}


def check_equal(got, ref):
    assert sorted(got) == sorted(ref)
    for k, v in ref.items():
        x = np.asarray(got[k])
        assert x.dtype == v.dtype and x.shape == v.shape and x.tobytes() == v.tobytes(), k


@pytest.mark.parametrize("where", ["tmp_path", "/dev/shm"])  # a disk (here ext4), a tmpfs
def test_local_file_is_mapped(tmp_path, where):
    import tempfile
    with tempfile.TemporaryDirectory(dir=tmp_path if where == "tmp_path" else where) as d:
        p = os.path.join(d, "m.safetensors")
        ref = arrays()
        save_file(ref, p)
        with safe_open(p, "np") as f:
            assert (f.backend, f.backend_reason) == ("mmap", "local file system")
            # Just written: every page is in the page cache, so the load keeps the mapping.
            assert f._resident() == 1.0
            got = f.get_tensors()
            assert f.backend == "mmap"
            assert REASON.match(f.backend_reason).group(1) == "100"
        check_equal(got, ref)
        assert isinstance(got["big"].base, _safetensors_c.MappedBytes)  # a view, not a copy


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_forced_backend(tmp_path, backend):
    p = str(tmp_path / "m.safetensors")
    ref = arrays()
    save_file(ref, p)
    with safe_open(p, "np", backend=backend) as f:
        assert (f.backend, f.backend_reason) == (backend, "chosen by the caller")
        assert (f._resident() is None) == (backend == "pread")
        check_equal(f.get_tensors(), ref)
        assert (f.backend, f.backend_reason) == (backend, "chosen by the caller")
    check_equal(load_file(p, backend=backend), ref)


def evict(path):
    """Drops the file's clean pages from the page cache (a no-op on tmpfs)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.parametrize("fw", ["np", "pt"])
def test_whole_file_load_follows_residency(tmp_path, fw):
    if fw == "pt":
        pytest.importorskip("torch")
    p = str(tmp_path / "m.safetensors")
    ref = arrays()
    save_file(ref, p)
    with safe_open(p, fw, backend="mmap") as f:
        warm = {k: np.asarray(v).copy() for k, v in f.get_tensors().items()}
    evict(p)
    with safe_open(p, fw) as f:
        before = f._resident()
        got = f.get_tensors()
        # The load measured again and recorded it (whole percents, rounded down).
        measured = int(REASON.match(f.backend_reason).group(1)) / 100
        nbytes = os.path.getsize(p)
        assert f.backend == ("pread" if _safetensors_c._prefers_pread(measured, nbytes) else "mmap")
        if before < 0.25:  # the eviction worked (not on tmpfs): nobody read the file since
            assert f.backend == "pread" and measured < 0.5
        else:
            assert f.backend == "mmap"
    check_equal(got, ref)
    check_equal(got, warm)
    if fw == "np":  # a view of the mapping, or memory of its own as backend="pread" gives
        assert isinstance(got["big"].base, _safetensors_c.MappedBytes) == (f.backend == "mmap")


def test_defaults_are_automatic():
    from safetensors import numpy as st_numpy
    params = [inspect.signature(st_numpy.load_file).parameters["backend"]]
    try:
        from safetensors import torch as st_torch
        params += [inspect.signature(st_torch.load_file).parameters["backend"],
                   inspect.signature(st_torch.load_model).parameters["backend"]]
    except ImportError:
        pass
    assert all(p.default is None for p in params)


@pytest.fixture
def fuse_mount(tmp_path):
    """A real FUSE mount (tests/fuse_server.py) serving tmp_path/src at tmp_path/mnt."""
    import subprocess
    import sys
    if os.geteuid() != 0 or not os.access("/dev/fuse", os.R_OK | os.W_OK):
        pytest.skip("mounting FUSE needs root and /dev/fuse")
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    server = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "fuse_server.py"),
                               str(src), str(mnt)], stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if line.startswith("cannot mount"):
        server.wait()
        pytest.skip(f"FUSE: {line.strip()} (a container without CAP_SYS_ADMIN)")
    assert line == "ready\n", line
    try:
        yield src, mnt
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_fuse_file_is_read_with_pread(fuse_mount):
    src, mnt = fuse_mount
    ref = arrays()
    save_file(ref, str(src / "m.safetensors"))
    p = str(mnt / "m.safetensors")
    assert _safetensors_c._storage_kind(p) == "fuse"
    with safe_open(p, "np") as f:
        assert (f.backend, f.backend_reason) == ("pread", "fuse: FUSE file system")
        assert f._resident() is None
        got = f.get_tensors()
        assert (f.backend, f.backend_reason) == ("pread", "fuse: FUSE file system")
    check_equal(got, ref)
    with safe_open(p, "np", backend="mmap") as f:  # forced: a mapping of the FUSE file
        assert (f.backend, f.backend_reason) == ("mmap", "chosen by the caller")
        check_equal({k: f.get_tensor(k) for k in f.keys()}, ref)
    check_equal(load_file(p), ref)


def test_url_is_read_through_its_source(tmp_path, source):
    p = tmp_path / "m.safetensors"
    ref = arrays()
    save_file(ref, str(p))
    with source.open(p, "np") as f:
        expected = ("mmap", "local file system") if source.kind == "path" else \
            ("pread", "read through a byte source")
        assert (f.backend, f.backend_reason) == expected
        check_equal(f.get_tensors(), ref)
