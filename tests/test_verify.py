"""safe_open(..., verify=True), load_file(..., verify=True) and ``safetensors verify`` against the
digests a file records (docs/integrity.md).

Files with digests are made here from any valid file: the data section is kept byte for byte and
the digests (safetensors.checksums' format) are added to its ``__metadata__``, so tensors the
writers cannot make (F4) are covered too.
"""
import importlib.util
import json
import os

import numpy as np
import pytest

from safetensors import SafetensorError, checksums, safe_open
from safetensors.cli import main as cli_main
from safetensors.numpy import load_file, save_file

ALGORITHMS = ["sha256", pytest.param("xxh3_128", marks=pytest.mark.skipif(
    importlib.util.find_spec("xxhash") is None, reason="xxhash is not installed"))]


def add_checksums(path, algorithm="sha256"):
    """Rewrites ``path`` with the digests of its tensors and data section in its metadata (data unchanged)."""
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
    metadata = header.pop("__metadata__", None)
    names = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    digests = checksums.digest_buffers(algorithm, [data[slice(*header[k]["data_offsets"])] for k in names])
    data_digest = checksums.digest_buffers(algorithm, [data])[0]
    header = {"__metadata__": checksums.with_digests(metadata, algorithm, names, digests, data_digest), **header}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + data)
    return path


def layout(path):
    """{name: (absolute begin, end)}."""
    with safe_open(path, "np") as f:
        return {row[0]: (row[3], row[4]) for row in f._table()}


def flipped(path, offset, to=None):
    """A copy of ``path`` with the byte at ``offset`` changed."""
    raw = bytearray(open(path, "rb").read())
    raw[offset] = raw[offset] ^ 0x01 if to is None else to
    out = f"{path}.flip{offset}.safetensors"
    with open(out, "wb") as f:
        f.write(raw)
    return out


def arrays():
    """Small tensors that share a read block, one of 64 KiB+ (a private mapping), one of 5 MiB
    (several chunks, threads), an empty one, in a mixed order."""
    rng = np.random.default_rng(0)
    return {
        "big": rng.standard_normal((1280, 1024)).astype(np.float32),
        "empty": np.zeros((0, 3), np.int16),
        "mid": rng.integers(0, 255, (300, 300), dtype=np.uint8),
        "small.a": np.arange(7, dtype=np.float64),
        "small.b": np.arange(12, dtype=np.int32).reshape(3, 4),
        "z": rng.standard_normal(40000).astype(np.float16),
    }


@pytest.fixture(params=ALGORITHMS)
def algorithm(request):
    return request.param


@pytest.fixture
def model(tmp_path, algorithm):
    path = str(tmp_path / "model.safetensors")
    save_file(arrays(), path, metadata={"format": "np"})
    return add_checksums(path, algorithm)


def _readers(path, backend):
    """(what, call) pairs, each reading tensor `name` (or all) through one verifying path."""
    def load(name):
        return load_file(path, backend=backend, verify=True)

    def get_tensor(name):
        with safe_open(path, "np", backend=backend, verify=True) as f:
            return f.get_tensor(name)

    def get_slice(name):
        with safe_open(path, "np", backend=backend, verify=True) as f:
            return f.get_slice(name)[:1]

    def checkpoint(name):
        with safe_open([path], "np", backend=backend, verify=True) as f:
            return f.get_tensor(name)

    def prefetch(name):
        with safe_open(path, "np", backend=backend, verify=True) as f:
            f.prefetch()
            return f.get_tensor(name)

    def torch_load(name):
        pytest.importorskip("torch")
        from safetensors.torch import load_file as torch_load_file
        return torch_load_file(path, backend=backend, verify=True)

    return [load, get_tensor, get_slice, checkpoint, prefetch, torch_load]


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_clean_file_loads_the_same(model, backend):
    want = arrays()
    got = load_file(model, backend=backend, verify=True)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    with safe_open(model, "np", backend=backend, verify=True) as f:
        for name in want:
            np.testing.assert_array_equal(f.get_tensor(name), want[name])
            np.testing.assert_array_equal(f.get_slice(name)[...], want[name])


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_a_flipped_byte_in_each_tensor_is_detected(model, backend):
    """Every verifying read path refuses each tensor with one byte changed, naming it and the
    file; nothing is returned."""
    for name, (begin, end) in layout(model).items():
        if begin == end:
            continue
        for where in (begin, end - 1):
            bad = flipped(model, where)
            for read in _readers(bad, backend):
                with pytest.raises(SafetensorError) as info:
                    read(name)
                message = str(info.value)
                assert bad in message and repr(name) in message, (read.__name__, message)
                assert "checksum mismatch" in message
            os.remove(bad)


def test_only_the_tensor_read_is_checked(model):
    """get_tensor of a good tensor of a file with another bad one works; verify is per tensor."""
    spans = layout(model)
    bad = flipped(model, spans["big"][0] + 5)
    with safe_open(bad, "np", verify=True) as f:
        np.testing.assert_array_equal(f.get_tensor("mid"), arrays()["mid"])
        np.testing.assert_array_equal(f.get_slice("small.a")[2:], arrays()["small.a"][2:])
        with pytest.raises(SafetensorError, match="'big'"):
            f.get_slice("big")[0]


def test_without_verify_nothing_is_checked(model):
    bad = flipped(model, layout(model)["big"][0])
    assert load_file(bad)["big"].shape == (1280, 1024)


def test_checkpoint_directory_and_index(tmp_path, algorithm):
    """The checkpoint handle passes verify to every file's handle."""
    a, b = str(tmp_path / "model-1.safetensors"), str(tmp_path / "model-2.safetensors")
    save_file({"x": np.ones(100, np.float32)}, a)
    save_file({"y": np.arange(100, dtype=np.float32)}, b)
    add_checksums(a, algorithm)
    add_checksums(b, algorithm)
    with safe_open(str(tmp_path), "np", verify=True) as f:
        assert f.get_tensor("y")[5] == 5
    raw = bytearray(open(b, "rb").read())
    raw[-1] ^= 0x40
    open(b, "wb").write(raw)
    with safe_open(str(tmp_path), "np", verify=True) as f:
        assert f.get_tensor("x")[0] == 1
        with pytest.raises(SafetensorError, match=f"{b}.*'y'"):
            f.get_tensor("y")
        with pytest.raises(SafetensorError, match="'y'"):
            f.get_tensors()


def test_file_without_checksums(tmp_path):
    path = str(tmp_path / "plain.safetensors")
    save_file({"x": np.ones(3)}, path)
    for open_it in (lambda: safe_open(path, "np", verify=True), lambda: load_file(path, verify=True),
                    lambda: safe_open([path], "np", verify=True)):
        with pytest.raises(SafetensorError, match=f"{path}: verify=True, but the file records no checksums"):
            open_it()
    with safe_open(path, "np", verify=False) as f:   # verify=False is the default
        assert f.get_tensor("x").tolist() == [1, 1, 1]


def test_header_and_metadata_flips(model, algorithm):
    """A changed digest names its tensor; a malformed one or an unknown algorithm fails at open;
    a changed name has no digest; a changed metadata value the digests do not cover is not seen
    (the digests cover the tensors' bytes, not the header: docs/integrity.md)."""
    raw = open(model, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = raw[8:8 + n]
    metadata = json.loads(header)["__metadata__"]
    digest = json.loads(metadata[checksums.KEY_TENSORS])["mid"]
    at = 8 + header.index(digest.encode())
    changed = flipped(model, at, ord("0") if digest[0] != "0" else ord("1"))
    with safe_open(changed, "np", verify=True) as f:
        f.get_tensor("big")
        with pytest.raises(SafetensorError, match="'mid'"):
            f.get_tensor("mid")
    with pytest.raises(SafetensorError, match="malformed checksums"):
        safe_open(flipped(model, at, ord("g")), "np", verify=True)
    at = 8 + header.index(f'"{algorithm}"'.encode()) + 1
    with pytest.raises(SafetensorError, match="unknown checksum algorithm"):
        safe_open(flipped(model, at, ord("X")), "np", verify=True)
    at = 8 + header.index(b'"mid":{')  # the tensor's own key, not the one in the digests' JSON
    with pytest.raises(SafetensorError, match="no checksum for tensor 'nid'"):
        safe_open(flipped(model, at + 1, ord("n")), "np", verify=True)
    at = 8 + header.index(b'"format":"np"') + len('"format":"')
    with safe_open(flipped(model, at, ord("q")), "np", verify=True) as f:
        assert f.metadata()["format"] == "qp"
        f.get_tensors()


def test_empty_f4_and_big_endian(mk, tmp_path, algorithm):
    """Digests are of the bytes as stored: an F4 tensor's packed bytes, a big-endian array's
    little-endian ones."""
    f4 = mk.header({"q": {"dtype": "F4", "shape": [3, 2], "data_offsets": [0, 3]},
                    "e": {"dtype": "F4", "shape": [0, 2], "data_offsets": [3, 3]}}, b"\x21\x43\x65")
    add_checksums(f4, algorithm)
    with safe_open(f4, "np", verify=True) as f:   # NumPy has no F4: the bytes are checked on slicing
        assert f.get_slice("q").get_dtype() == "F4"
    torch = pytest.importorskip("torch")
    if hasattr(torch, "float4_e2m1fn_x2"):
        from safetensors.torch import load_file as torch_load_file
        for backend in ("mmap", "pread"):
            got = torch_load_file(f4, backend=backend, verify=True)
            assert got["q"].view(torch.uint8).flatten().tolist() == [0x21, 0x43, 0x65]
        with pytest.raises(SafetensorError, match="'q'"):
            torch_load_file(flipped(f4, os.path.getsize(f4) - 2), verify=True)
    big = str(tmp_path / "big_endian.safetensors")
    want = np.arange(1000, dtype=np.float32).reshape(10, 100)
    save_file({"b": want.astype(">f4"), "empty": np.zeros(0, ">i8")}, big)
    add_checksums(big, algorithm)
    for backend in ("mmap", "pread"):
        got = load_file(big, backend=backend, verify=True)
        np.testing.assert_array_equal(got["b"], want)
        assert got["empty"].shape == (0,)


def test_slice_checks_its_tensor_once_per_handle(model, monkeypatch):
    made = []
    new_hasher = checksums.new_hasher
    monkeypatch.setattr(checksums, "new_hasher", lambda algorithm: made.append(1) or new_hasher(algorithm))
    with safe_open(model, "np", verify=True) as f:
        before = len(made)
        s = f.get_slice("big")
        s[0]
        s[1:3, ::2]
        f.get_slice("big")[5]
        assert len(made) - before == 1
    with safe_open(model, "np", verify=True) as f:   # another handle checks again
        before = len(made)
        f.get_slice("big")[0]
        assert len(made) - before == 1


class Boom(Exception):
    pass


def _no_read_thread_left():
    """Whether none of the core's read threads (named "st-read", csrc/core/st_read.c) is left
    in this process; a thread joined may take the kernel a moment to reap, hence the wait,
    which ends at once in the normal case. Other threads (an earlier test's daemon, a
    library's pool) do not count."""
    import time

    def read_threads():
        names = []
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/comm") as comm:
                    names.append(comm.read().strip())
            except OSError:   # gone meanwhile
                pass
        return names.count("st-read")

    deadline = time.monotonic() + 10
    while read_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return read_threads() == 0


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_an_error_in_the_hasher_stops_the_read(tmp_path, monkeypatch, backend):
    """A hasher raising mid-read: its own exception, no tensor, and no read thread left running."""
    path = str(tmp_path / "many.safetensors")
    save_file({f"t{i}": np.full(3 << 18, i, np.uint8) for i in range(12)}, path)   # 12 x 768 KiB
    add_checksums(path)
    calls = []

    class Failing:
        def __init__(self):
            self.inner = checksums.hashlib.sha256()

        def update(self, data):
            calls.append(len(data))
            if len(calls) == 5:
                raise Boom("hasher failed")
            self.inner.update(data)

        def hexdigest(self):
            return self.inner.hexdigest()

    with safe_open(path, "np", backend=backend, verify=True) as f:
        monkeypatch.setattr(checksums, "new_hasher", lambda algorithm: Failing())
        with pytest.raises(Boom):
            f._read_tensors(f.keys())   # the parallel read (pread_tensors.c), on either backend
        assert len(calls) == 5   # every thread stopped at its next chunk: no update after the failure
        assert _no_read_thread_left()
        calls.clear()
        with pytest.raises(Boom):
            f.get_tensors()
        assert _no_read_thread_left()
        monkeypatch.undo()
        assert sorted(f.get_tensors()) == sorted(f"t{i}" for i in range(12))


def test_cli_names_every_failing_tensor(model, capsys, algorithm):
    spans = layout(model)
    bad = flipped(model, spans["mid"][0])
    bad = flipped(bad, spans["z"][1] - 1)
    assert cli_main(["verify", model]) == 0
    assert f"ok: {model} (6 tensors, {algorithm} checksums ok)" in capsys.readouterr().out
    assert cli_main(["verify", bad]) == 1
    out = capsys.readouterr().out.splitlines()   # tensors in file order, then the data section
    assert sorted(out[:2]) == [f"error: {bad}: tensor 'mid' fails its {algorithm} checksum",
                               f"error: {bad}: tensor 'z' fails its {algorithm} checksum"]
    assert out[2:] == [f"error: {bad}: the data section fails its {algorithm} checksum"]


def test_cli_each_tensor_flip_and_header(model, capsys, algorithm):
    for name, (begin, end) in layout(model).items():
        if begin < end:
            bad = flipped(model, (begin + end) // 2)
            assert cli_main(["verify", "-q", bad]) == 1
            assert f"error: {bad}: tensor {name!r} fails" in capsys.readouterr().out
            os.remove(bad)
    header = open(model, "rb").read()[:64]
    bad = flipped(model, header.index(b'"safetensors.checksum"') + 2)   # the key: no digests left
    assert cli_main(["verify", bad]) == 1   # its siblings' keys without it
    assert f"{bad}: unknown checksum algorithm None" in capsys.readouterr().out


def test_cli_without_checksums_and_sha256(tmp_path, capsys):
    import hashlib
    path = str(tmp_path / "plain.safetensors")
    save_file({"x": np.ones(3)}, path)
    assert cli_main(["verify", path]) == 0
    assert capsys.readouterr().out == f"ok: {path} (1 tensors, no checksums recorded)\n"
    assert cli_main(["verify", "--require-checksums", path]) == 1
    assert capsys.readouterr().out == f"error: {path}: no checksums recorded (--require-checksums)\n"
    assert cli_main(["verify", "--sha256", path]) == 0
    assert capsys.readouterr().out == f"{hashlib.sha256(open(path, 'rb').read()).hexdigest()}  {path}\n"


def test_remote_source(source, tmp_path, algorithm):
    """URLs (docs/remote.md): hashed as the byte source's reads arrive."""
    path = str(tmp_path / "remote.safetensors")
    save_file(arrays(), path)
    add_checksums(path, algorithm)
    with source.open(path, "np", verify=True) as f:
        got = f.get_tensors()
        np.testing.assert_array_equal(got["big"], arrays()["big"])
        np.testing.assert_array_equal(f.get_slice("mid")[3], arrays()["mid"][3])
    bad = flipped(path, layout(path)["small.b"][0] + 3)
    with source.open(bad, "np", verify=True) as f:
        np.testing.assert_array_equal(f.get_tensor("big"), arrays()["big"])
        for read in (f.get_tensors, lambda: f.get_tensor("small.b"), lambda: f.get_slice("small.b")[0]):
            with pytest.raises(SafetensorError, match="'small.b'"):
                read()
    plain = str(tmp_path / "plain_remote.safetensors")
    save_file({"x": np.ones(3)}, plain)
    with pytest.raises(SafetensorError, match="records no checksums"):
        source.open(plain, "np", verify=True)
