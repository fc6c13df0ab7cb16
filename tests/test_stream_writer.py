"""The streaming writer (safetensors.stream.StreamWriter): byte-identical to
save_file, any order and any thread, atomic, and clear errors."""
import gc
import os
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the matrix Pythons have NumPy only

import safetensors.numpy
import safetensors.torch
from safetensors import SafetensorError, safe_open
from safetensors.stream import StreamWriter, header_dtype


def _torch_tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "layers.0.weight": torch.randn(16, 8, generator=g),
        "layers.0.bias": torch.randn(16, generator=g).to(torch.bfloat16),
        "embed": torch.randint(0, 100, (4, 3), generator=g, dtype=torch.int64),
        "scalar": torch.tensor(3.5, dtype=torch.float16),
        "empty": torch.empty(0, 5, dtype=torch.int32),
        "mask": torch.tensor([True, False, True]),
        "fp8": torch.randn(6, generator=g).to(torch.float8_e4m3fn),
        # two F4 values per element: the file's shape doubles the last dim
        "fp4": torch.randint(0, 256, (3, 2), generator=g, dtype=torch.uint8).view(torch.float4_e2m1fn_x2),
    }


def _entries(directory):
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("metadata", [None, {}, {"format": "pt", "b": "x\n\"y\""}])
def test_torch_byte_identical_to_save_file(tmp_path, metadata):
    tensors = _torch_tensors()
    safetensors.torch.save_file(tensors, tmp_path / "one_shot.safetensors", metadata=metadata)
    declared = {k: v.to("meta") for k, v in tensors.items()}
    with StreamWriter(tmp_path / "streamed.safetensors", declared, metadata=metadata) as writer:
        for name in reversed(list(tensors)):  # any order
            writer.write(name, tensors[name])
    assert writer.closed
    one_shot = (tmp_path / "one_shot.safetensors").read_bytes()
    assert (tmp_path / "streamed.safetensors").read_bytes() == one_shot
    assert _entries(tmp_path) == ["one_shot.safetensors", "streamed.safetensors"]


def test_numpy_byte_identical_to_save_file(tmp_path):
    arrays = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.arange(5, dtype=">i4"),  # big-endian: written little-endian, as save_file does
        "c": np.asfortranarray(np.arange(6, dtype=np.uint16).reshape(2, 3)),  # not C-contiguous
        "d": np.float64(2.5),
    }
    safetensors.numpy.save_file(arrays, str(tmp_path / "one_shot.safetensors"))
    specs = {"a": ("F32", (3, 4)), "b": (np.int32, [5]), "c": arrays["c"], "d": ("float64", ())}
    with StreamWriter(str(tmp_path / "streamed.safetensors"), specs) as writer:
        for name, value in arrays.items():
            writer.write(name, value)
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "one_shot.safetensors").read_bytes()


def test_bytes_and_header_dtype(tmp_path):
    assert header_dtype(torch.bfloat16) == "BF16"
    assert header_dtype(np.dtype("<f2")) == "F16"
    assert header_dtype(np.uint8) == "U8"
    assert header_dtype("F8_E5M2") == "F8_E5M2"
    with pytest.raises(ValueError, match="unsupported dtype"):
        header_dtype("float128")
    with StreamWriter(tmp_path / "raw.safetensors", {"x": ("U8", (3,))}) as writer:
        writer.write("x", b"\x01\x02\x03")
    with safe_open(tmp_path / "raw.safetensors", "numpy") as f:
        assert f.get_tensor("x").tolist() == [1, 2, 3]


def test_threads(tmp_path):
    tensors = {f"t.{i}": torch.full((256,), float(i)) for i in range(64)}
    safetensors.torch.save_file(tensors, tmp_path / "one_shot.safetensors")
    writer = StreamWriter(tmp_path / "streamed.safetensors", tensors)
    names = list(tensors)
    errors = []

    def work(part):
        try:
            for name in names[part::4]:
                writer.write(name, tensors[name])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    writer.commit()
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "one_shot.safetensors").read_bytes()


def test_errors_are_clear(tmp_path):
    path = tmp_path / "out.safetensors"
    writer = StreamWriter(path, {"a": ("F32", (2, 2)), "b": ("I64", (3,))})
    with pytest.raises(SafetensorError, match=r"`a` was declared as F32 \[2, 2\] but the value written is F32 \[4\]"):
        writer.write("a", torch.zeros(4))
    with pytest.raises(SafetensorError, match="declared as F32 .* is F64"):
        writer.write("a", np.zeros((2, 2)))
    with pytest.raises(SafetensorError, match="`zz` was not declared"):
        writer.write("zz", torch.zeros(1))
    with pytest.raises(SafetensorError, match="16 bytes, but 3 bytes were given"):
        writer.write("a", b"abc")
    writer.write("a", torch.ones(2, 2))
    with pytest.raises(SafetensorError, match="`a` was already written"):
        writer.write("a", torch.ones(2, 2))
    with pytest.raises(SafetensorError, match=r"`b` was never written \(1 of 2"):
        writer.commit()
    assert writer.closed
    assert _entries(tmp_path) == []
    with pytest.raises(SafetensorError, match="already closed"):
        writer.write("b", torch.zeros(3, dtype=torch.int64))
    with pytest.raises(SafetensorError, match="declared twice"):
        StreamWriter(path, [("a", ("F32", (1,))), ("a", ("F32", (1,)))])
    with pytest.raises(FileNotFoundError):
        StreamWriter(tmp_path / "missing" / "x.safetensors", {"a": ("F32", (1,))})
    with pytest.raises(TypeError):
        StreamWriter(path, {"a": 3})
    assert _entries(tmp_path) == []


def test_exception_in_block_keeps_old_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old contents")
    with pytest.raises(RuntimeError, match="boom"):
        with StreamWriter(path, {"a": ("F32", (1,))}) as writer:
            writer.write("a", torch.ones(1))
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old contents"
    assert _entries(tmp_path) == ["model.safetensors"]


def test_abandoned_writer_leaves_nothing(tmp_path):
    writer = StreamWriter(tmp_path / "x.safetensors", {"a": ("F32", (1,))})
    writer.write("a", torch.ones(1))
    assert len(_entries(tmp_path)) == 1  # the temporary file
    del writer
    gc.collect()
    assert _entries(tmp_path) == []


def test_abort_then_commit(tmp_path):
    writer = StreamWriter(tmp_path / "x.safetensors", {"a": ("F32", (1,))})
    writer.abort()
    writer.abort()  # harmless
    with pytest.raises(SafetensorError, match="already closed"):
        writer.commit()
    assert _entries(tmp_path) == []


@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="memory limits measure ASan's shadow and quarantine, not ours (.ci/sanitize.sh)")
def test_peak_memory_is_about_one_tensor(tmp_path):
    """64 tensors of 4 MiB streamed under an address-space allowance of
    ~64 MiB more than the child had after setting up: the whole set (256 MiB)
    could never be held."""
    script = r"""
import resource, sys
import numpy as np
from safetensors.stream import StreamWriter
from safetensors import safe_open
n, size = 64, 1 << 20
path = sys.argv[1]
with open("/proc/self/status") as f:
    vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
limit = vm + 64 * 2**20
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
with StreamWriter(path, {f"t{i}": ("F32", (size,)) for i in range(n)}) as writer:
    for i in range(n):
        writer.write(f"t{i}", np.full(size, i, dtype=np.float32))
try:
    np.zeros(n * size, dtype=np.float32)  # the whole set does not fit
    print("allowance too large")
except MemoryError:
    pass
resource.setrlimit(resource.RLIMIT_AS, (soft, hard))  # mapping the result needs address space
with safe_open(path, "numpy") as f:
    assert float(f.get_slice("t63")[0:1][0]) == 63.0
print("ok")
"""
    # A fixed mmap threshold, so glibc returns freed blocks at once instead of caching a
    # varying number of them (see test_cli.test_convert_larger_than_memory_allowed).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "big.safetensors")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert (tmp_path / "big.safetensors").stat().st_size > 256 * 2**20


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors(tmp_path):
    tensors = {"a": torch.randn(64, 32, device="cuda"), "b": torch.arange(10, device="cuda")}
    safetensors.torch.save_file(tensors, tmp_path / "one_shot.safetensors")
    with StreamWriter(tmp_path / "streamed.safetensors", tensors) as writer:
        for name, value in tensors.items():
            writer.write(name, value)  # copied to the CPU one tensor at a time
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "one_shot.safetensors").read_bytes()


def test_destination_rules_are_save_files(tmp_path):
    """The streaming writer saves through the same staged file as save_file:
    a device is refused (never replaced by a regular file) and a path of any
    length the OS accepts saves (the temporary name does not lengthen it)."""
    with pytest.raises(OSError, match=r"not a regular file \(a character device\)"):
        StreamWriter("/dev/null", {"a": ("F32", [2])})
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)

    path = str(tmp_path)
    while 4090 - len(path) > 250:
        path = os.path.join(path, "d" * 200)
    os.makedirs(path)
    path = os.path.join(path, "f" * (4090 - len(path) - 1))
    assert len(path) == 4090
    with StreamWriter(path, {"a": ("I32", [3])}) as writer:
        writer.write("a", np.arange(3, dtype=np.int32))
    np.testing.assert_array_equal(safetensors.numpy.load_file(path)["a"], np.arange(3, dtype=np.int32))
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


# pwrite/pwrite64 of data starting with "HOLD" waits: it sends a byte on the pipe $GATE_ENTERED,
# then waits for one on $GATE_GO (no timing: the test decides when the write may go on).
_GATE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ssize_t gate(const char *name, int fd, const void *buf, size_t n, off_t off)
{
    ssize_t (*real)(int, const void *, size_t, off_t) =
        (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, name);
    char c = 0;
    if (n >= 4 && memcmp(buf, "HOLD", 4) == 0 && getenv("GATE_GO") != NULL &&
        (write(atoi(getenv("GATE_ENTERED")), &c, 1) != 1 || read(atoi(getenv("GATE_GO")), &c, 1) != 1))
        abort();
    return real(fd, buf, n, off);
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) { return gate("pwrite", fd, buf, n, off); }
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) { return gate("pwrite64", fd, buf, n, off); }
"""

_BLOCKED_WRITE = r"""
import os, sys, threading
from safetensors.stream import StreamWriter
path = sys.argv[1]
entered, go = os.pipe(), os.pipe()
os.environ.update(GATE_ENTERED=str(entered[1]), GATE_GO=str(go[0]))
boom = KeyError("boom")
try:
    with StreamWriter(path, {"a": ("U8", (4,)), "b": ("U8", (4,))}) as writer:
        thread = threading.Thread(target=writer.write, args=("a", b"HOLD"))
        thread.start()
        os.read(entered[0], 1)  # the thread is inside pwrite: its write is in flight
        raise boom
except BaseException as exc:
    print("raised:", exc is boom, repr(exc))
    print("notes:", getattr(exc, "__notes__", None))
    print("closed:", writer.closed)
finally:
    os.write(go[1], b"x")
    thread.join()
print("after:", sorted(os.listdir(os.path.dirname(path))))
print("contents:", open(path, "rb").read())
"""


def test_exception_in_block_wins_over_a_write_in_flight(tmp_path):
    """The with block raises while another thread is inside a write: the block's exception
    propagates (the writer's complaint is a note on 3.11+), the destination keeps its old
    contents, and the temporary file goes once that write ends."""
    CC = os.environ.get("CC", "cc")
    (tmp_path / "gate.c").write_text(_GATE)
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(tmp_path / "gate.so"), str(tmp_path / "gate.c"), "-ldl"],
                   check=True, capture_output=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"old")
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD"), str(tmp_path / "gate.so")]))
    result = subprocess.run([sys.executable, "-c", _BLOCKED_WRITE, str(out / "model.safetensors")],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "LD_PRELOAD": preload})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "raised: True KeyError('boom')"
    if sys.version_info >= (3, 11):
        assert "1 write(s) still in progress on other threads: the file is discarded when they end" in lines[1]
    assert lines[2:] == ["closed: True", "after: ['model.safetensors']", "contents: b'old'"]
    assert result.stderr == ""  # the writing thread's write itself succeeded
