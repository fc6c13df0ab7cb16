"""Zero copy, shown not assumed (issue 2): large tensors point into a private
mapping of the file of their own (issue 9: arrays never alias each other),
copy-on-write, lifetimes, unaligned data, huge sparse files, many tensors."""

import gc
import json
import os
import struct

import numpy as np
import pytest

from safetensors import SafetensorError, safe_open

from conftest import build_bytes, mapped_ranges, ptr_in_mapping, rss_bytes

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")


def t(dtype, shape, offsets):
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


def np_ptr(a):
    return a.__array_interface__["data"][0]


@pytest.fixture
def three(mk):
    # each at least 64 KiB, the size from which tensors are mapped, not copied
    a = np.arange(20_000, dtype=np.float32)
    b = (np.arange(128 * 128, dtype=np.int64) * 7).reshape(128, 128)
    c = (np.arange(70_000) % 256).astype(np.uint8)
    path = mk.arrays({"a": a, "b": b, "c": c})
    return path, {"a": a, "b": b, "c": c}


def file_offsets(path):
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(n))
    return 8 + n, {k: v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}


# --------------------------------------------------------------------------
# numpy
# --------------------------------------------------------------------------

def test_numpy_pointer_inside_mapping(three):
    path, arrs = three
    start, offs = file_offsets(path)
    with safe_open(path, "np") as f:
        xs = {k: f.get_tensor(k) for k in arrs}
        assert mapped_ranges(path), "the file is not mapped"
        for k, x in xs.items():
            assert ptr_in_mapping(path, np_ptr(x), x.nbytes), k
            np.testing.assert_array_equal(x, arrs[k])
            # a mapping of its own, at the tensor's page of the file
            assert (np_ptr(x) - (start + offs[k])) % 4096 == 0
        # the same tensor twice: two private mappings, not the same memory
        again = f.get_tensor("b")
        assert ptr_in_mapping(path, np_ptr(again), again.nbytes)
        assert not np.shares_memory(again, xs["b"])


def test_numpy_writable_and_copy_on_write(three):
    path, arrs = three
    before = open(path, "rb").read()
    with safe_open(path, "np") as f:
        x = f.get_tensor("a")
        assert x.flags.writeable
        x[:] = -1.0
        x[3] = 42.0
        assert x[3] == 42.0
        # another handle sees the file, not our private write
        with safe_open(path, "np") as g:
            np.testing.assert_array_equal(g.get_tensor("a"), arrs["a"])
        with safe_open(path, "np", backend="pread") as g:
            np.testing.assert_array_equal(g.get_tensor("a"), arrs["a"])
    del x
    gc.collect()
    assert open(path, "rb").read() == before


def test_numpy_writes_visible_through_same_handle_are_private(three):
    # whether a second get_tensor sees the write is the implementation's choice;
    # the file never changes
    path, arrs = three
    before = open(path, "rb").read()
    f = safe_open(path, "np")
    y = f.get_tensor("c")
    y += 1
    f.__exit__(None, None, None)
    assert open(path, "rb").read() == before


def test_numpy_valid_after_exit_and_del(three):
    path, arrs = three
    f = safe_open(path, "np")
    xs = {k: f.get_tensor(k) for k in arrs}
    f.__exit__(None, None, None)
    gc.collect()
    for k in arrs:
        np.testing.assert_array_equal(xs[k], arrs[k])
    del f
    gc.collect()
    for k in arrs:
        np.testing.assert_array_equal(xs[k], arrs[k])
        assert ptr_in_mapping(path, np_ptr(xs[k]), xs[k].nbytes)
    # views of views keep it alive too
    v = xs["b"][2:5, ::2]
    del xs
    gc.collect()
    np.testing.assert_array_equal(v, arrs["b"][2:5, ::2])
    del v
    gc.collect()
    assert mapped_ranges(path) == [], "mapping leaked after the last array died"


def test_mapping_released_with_last_array(three):
    path, arrs = three
    with safe_open(path, "np") as f:
        x = f.get_tensor("b")
    assert mapped_ranges(path)
    del x
    gc.collect()
    assert mapped_ranges(path) == []


def test_mapping_released_on_exit_without_arrays(three):
    path, _ = three
    with safe_open(path, "np") as f:
        f.keys()
    gc.collect()
    assert mapped_ranges(path) == []


def test_one_mapping_per_handle_and_per_large_tensor(three, mk):
    path, arrs = three
    with safe_open(path, "np") as f:
        assert len(mapped_ranges(path)) <= 2  # the handle's (the kernel may split it)
        xs = [f.get_tensor(k) for k in arrs for _ in range(20)]
        assert len(mapped_ranges(path)) <= 2 + 60  # plus one per array handed out
    del xs
    gc.collect()
    assert mapped_ranges(path) == []
    small = mk.arrays({f"s{i}": np.full(16, i, np.float32) for i in range(200)})
    with safe_open(small, "np") as f:
        xs = [f.get_tensor(f"s{i}") for i in range(200)]
        assert len(mapped_ranges(small)) <= 2  # small tensors are copies
    assert mapped_ranges(small) == []
    assert [x[0] for x in xs] == list(range(200))


def test_numpy_scalars_and_empty(mk):
    data = struct.pack("<d", -0.5) + struct.pack("<i", 7)
    path = mk.header({"s": t("F64", [], [0, 8]), "i": t("I32", [], [8, 12]), "e": t("F32", [0, 4], [12, 12]),
                      "z": t("U8", [0], [12, 12])}, data)
    for backend in ("mmap", "pread"):
        with safe_open(path, "np", backend=backend) as f:
            s = f.get_tensor("s")
            assert isinstance(s, np.ndarray) and s.shape == () and s.dtype == np.float64
            assert s[()] == -0.5
            assert f.get_tensor("i")[()] == 7
            e = f.get_tensor("e")
            assert e.shape == (0, 4) and e.dtype == np.float32 and e.size == 0
            assert f.get_tensor("z").shape == (0,)
            s[()] = 3.0
            assert s[()] == 3.0


def test_numpy_pread_is_a_copy(three):
    path, arrs = three
    with safe_open(path, "np", backend="pread") as f:
        assert mapped_ranges(path) == []
        x = f.get_tensor("a")
        assert not ptr_in_mapping(path, np_ptr(x))
        assert x.flags.writeable
        np.testing.assert_array_equal(x, arrs["a"])
        x[0] = 5
        np.testing.assert_array_equal(f.get_tensor("a"), arrs["a"])


# --------------------------------------------------------------------------
# unaligned data
# --------------------------------------------------------------------------

@pytest.fixture
def unaligned(mk):
    # header of odd length: the data section starts at an odd file offset,
    # and a 1-byte tensor first makes the next ones odd relative to it too
    f32 = np.array([1.5, -2.25, 3.0, 1e30], np.float32)
    f64 = np.array([[np.pi, -1.0], [2.0, 1e-300]], np.float64)
    i16 = np.array([-1, 2, -3], np.int16)
    c64 = np.array([1 + 2j, -3j], np.complex64)
    entries = [("pad", "U8", [1], b"\x09"), ("f32", "F32", [4], f32.tobytes()), ("i16", "I16", [3], i16.tobytes()),
               ("f64", "F64", [2, 2], f64.tobytes()), ("c64", "C64", [2], c64.tobytes())]
    header, data = {}, bytearray()
    for name, dt, shape, raw in entries:
        header[name] = t(dt, shape, [len(data), len(data) + len(raw)])
        data += raw
    raw_header = json.dumps(header, separators=(",", ":")).encode()
    if len(raw_header) % 2 == 0:
        raw_header += b" "
    path = mk.header(raw_header, bytes(data), pad=False)
    with open(path, "rb") as fh:
        assert (8 + struct.unpack("<Q", fh.read(8))[0]) % 2 == 1
    return path, {"pad": np.array([9], np.uint8), "f32": f32, "i16": i16, "f64": f64, "c64": c64}


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_unaligned_numpy(unaligned, backend):
    path, arrs = unaligned
    with safe_open(path, "np", backend=backend) as f:
        for k, v in arrs.items():
            x = f.get_tensor(k)
            assert x.dtype == v.dtype
            np.testing.assert_array_equal(x, v)
            assert x.sum() == v.sum() or np.isnan(v.sum())
        s = f.get_slice("f64")
        np.testing.assert_array_equal(s[1:, :], arrs["f64"][1:, :])


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_unaligned_torch(unaligned, backend):
    torch = pytest.importorskip("torch")
    path, arrs = unaligned
    with safe_open(path, "pt", backend=backend) as f:
        for k, v in arrs.items():
            x = f.get_tensor(k)
            np.testing.assert_array_equal(x.numpy(), v)
            # arithmetic on the tensor works and is right
            assert torch.equal(x * 1, torch.from_numpy(v.copy()) * 1)
        s = f.get_slice("f32")
        np.testing.assert_array_equal(s[1:3].numpy(), arrs["f32"][1:3])


# --------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------

def test_torch_pointer_inside_mapping(three):
    torch = pytest.importorskip("torch")
    path, arrs = three
    _, offs = file_offsets(path)
    with safe_open(path, "pt") as f:
        xs = {k: f.get_tensor(k) for k in arrs}
        for k, x in xs.items():
            assert ptr_in_mapping(path, x.data_ptr(), x.numel() * x.element_size()), k
            np.testing.assert_array_equal(x.numpy(), arrs[k])
        again = f.get_tensor("b")
        assert ptr_in_mapping(path, again.data_ptr(), again.numel() * 8)
        assert again.data_ptr() != xs["b"].data_ptr()


def test_torch_writable_copy_on_write_and_lifetime(three):
    torch = pytest.importorskip("torch")
    path, arrs = three
    before = open(path, "rb").read()
    f = safe_open(path, "pt")
    x = f.get_tensor("a")
    y = f.get_tensor("b")
    x.mul_(2)
    x[0] = 99
    assert x[0].item() == 99
    f.__exit__(None, None, None)
    del f
    gc.collect()
    assert x[0].item() == 99 and x[1].item() == 2.0
    np.testing.assert_array_equal(y.numpy(), arrs["b"])
    assert open(path, "rb").read() == before
    with safe_open(path, "pt") as g:
        np.testing.assert_array_equal(g.get_tensor("a").numpy(), arrs["a"])
    z = y[1:3]
    del x, y
    gc.collect()
    np.testing.assert_array_equal(z.numpy(), arrs["b"][1:3])
    del z
    gc.collect()
    assert mapped_ranges(path) == []


def test_torch_scalars_and_empty(mk):
    torch = pytest.importorskip("torch")
    data = struct.pack("<d", -0.5)
    path = mk.header({"s": t("F64", [], [0, 8]), "e": t("F32", [0, 4], [8, 8]), "b": t("BOOL", [0], [8, 8])}, data)
    for backend in ("mmap", "pread"):
        with safe_open(path, "pt", backend=backend) as f:
            s = f.get_tensor("s")
            assert s.dim() == 0 and s.dtype == torch.float64 and s.item() == -0.5
            e = f.get_tensor("e")
            assert list(e.shape) == [0, 4] and e.dtype == torch.float32
            assert f.get_tensor("b").dtype == torch.bool


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_torch_and_numpy_same_values(three, backend):
    pytest.importorskip("torch")
    path, arrs = three
    with safe_open(path, "pt", backend=backend) as f, safe_open(path, "np", backend=backend) as g:
        for k in arrs:
            np.testing.assert_array_equal(f.get_tensor(k).numpy(), g.get_tensor(k))


# --------------------------------------------------------------------------
# huge sparse file
# --------------------------------------------------------------------------

HUGE = 64 << 30


@pytest.fixture
def huge(tmp_path):
    header = {"__metadata__": {"k": "v"}, "big": t("U8", [HUGE], [0, HUGE]),
              "m": t("F32", [1 << 14, 1 << 14], [HUGE, HUGE + (1 << 30)])}
    content = build_bytes(header)
    path = str(tmp_path / "huge.safetensors")
    with open(path, "wb") as fh:
        fh.write(content)
        try:
            fh.truncate(len(content) + HUGE + (1 << 30))
        except OSError as e:
            pytest.skip(f"filesystem refuses a sparse file: {e}")
    st = os.stat(path)
    if st.st_blocks * 512 > (1 << 24):
        os.unlink(path)
        pytest.skip("filesystem does not make sparse files")
    yield path
    os.unlink(path)


@pytest.mark.parametrize("backend", ["mmap", "pread"])
@pytest.mark.parametrize("fw", ["np", "pt"])
def test_huge_sparse_file(huge, backend, fw):
    if fw == "pt":
        pytest.importorskip("torch")
    rss0 = rss_bytes()
    with safe_open(huge, fw, backend=backend) as f:
        assert f.keys() == ["big", "m"]
        assert f.metadata() == {"k": "v"}
        s = f.get_slice("big")
        assert s.get_shape() == [HUGE]
        assert s.get_dtype() == "U8"
        head = np.asarray(s[:16])
        tail = np.asarray(s[HUGE - 16:])
        mid = np.asarray(s[HUGE // 2: HUGE // 2 + 4096])
        assert head.shape == (16,) and tail.shape == (16,) and mid.shape == (4096,)
        assert not head.any() and not tail.any() and not mid.any()
        m = f.get_slice("m")
        sub = np.asarray(m[-3:, 100:104])
        assert sub.shape == (3, 4) and sub.dtype == np.float32 and not sub.any()
        if backend == "mmap":
            # the full tensor is a lazy view: creating it costs nothing
            x = f.get_tensor("m")
            assert tuple(x.shape) == (1 << 14, 1 << 14)
            del x
    assert rss_bytes() - rss0 < (256 << 20)


# --------------------------------------------------------------------------
# many tensors
# --------------------------------------------------------------------------

def test_hundred_thousand_tensors(mk):
    n = 100_000
    parts = []
    for i in range(n):
        parts.append('"t%d":{"dtype":"U8","shape":[1],"data_offsets":[%d,%d]}' % (i, i, i + 1))
    raw = ("{" + ",".join(parts) + "}").encode()
    data = bytes(i % 251 for i in range(n))
    path = mk.header(raw, data)
    with safe_open(path, "np") as f:
        keys = f.keys()
        assert len(keys) == n
        assert keys == sorted("t%d" % i for i in range(n))
        ok = f.offset_keys()
        assert ok[:3] == ["t0", "t1", "t2"] and ok[-1] == "t99999" and len(ok) == n
        for i in (0, 1, 12345, 99999):
            assert f.get_tensor("t%d" % i).tolist() == [i % 251]
        with pytest.raises(SafetensorError):
            f.get_tensor("t100000")
