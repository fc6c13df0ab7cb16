"""get_slice(name)[idx] against NumPy's own indexing on the same data.

Random index forms (ints, negative ints, slices with random start/stop/step
incl. negative steps and out-of-range bounds, Ellipsis, None, tuples) on
random shapes of up to 4 dimensions, for framework np and pt, both backends,
on a local path and over http (conftest's `source`; S3 for a few).
"""

import gc
import random

import numpy as np
import pytest

from safetensors import SafetensorError, safe_open

from conftest import build_bytes, np_to_entry, ptr_in_mapping, tensors_layout

FRAMEWORKS = ["np", "pt"]
BACKENDS = ["mmap", "pread"]
# Both backends on a path, one over http: a URL reads as the pread backend
# whatever backend says (test_read_api's test_backends_equal has both there).
SOURCE_BACKENDS = pytest.mark.parametrize("source,backend", [("path", "mmap"), ("path", "pread"), ("http", "pread")],
                                          indirect=["source"])

DTYPES = [np.float32, np.float64, np.int16, np.uint8, np.bool_, np.complex64, np.float16, np.int64]


def make_array(rng, shape, dtype):
    n = int(np.prod(shape))
    if dtype == np.bool_:
        return (rng.integers(0, 2, n) == 1).reshape(shape)
    if dtype in (np.float32, np.float64, np.float16):
        return rng.standard_normal(n).astype(dtype).reshape(shape)
    if dtype == np.complex64:
        return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype).reshape(shape)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True).reshape(shape)


@pytest.fixture(scope="module")
def sliced_file(tmp_path_factory):
    rng = np.random.default_rng(1234)
    arrays = {}
    shapes = [(), (0,), (5,), (1,), (7, 3), (4, 0, 2), (3, 4, 5), (2, 3, 4, 5), (6, 1, 3, 2), (1, 1, 1, 1),
              (9, 2), (3, 5, 0), (2, 6, 3, 4)]
    for i, shape in enumerate(shapes):
        dtype = DTYPES[i % len(DTYPES)]
        arrays[f"t{i}"] = make_array(rng, shape, dtype)
    # extra random shapes
    for i in range(len(shapes), len(shapes) + 12):
        ndim = int(rng.integers(1, 5))
        shape = tuple(int(d) for d in rng.integers(0, 7, ndim))
        arrays[f"t{i}"] = make_array(rng, shape, DTYPES[i % len(DTYPES)])
    # rows far enough apart that a URL's source reads them with gaps between
    arrays["wide"] = make_array(rng, (300, 96), np.float32)
    path = tmp_path_factory.mktemp("slicing") / "s.safetensors"
    header, data = tensors_layout([np_to_entry(k, v) for k, v in arrays.items()])
    path.write_bytes(build_bytes(header, data))
    return str(path), arrays


def rand_int(r, dim, allow_oob=True):
    if dim == 0 or (allow_oob and r.random() < 0.08):
        return r.choice([dim, dim + r.randint(0, 3), -dim - 1 - r.randint(0, 3)])
    return r.randint(-dim, dim - 1)


def rand_bound(r, dim):
    c = r.random()
    if c < 0.25:
        return None
    if c < 0.85:
        return r.randint(-dim, dim)
    return r.randint(-dim - 5, dim + 5)


def rand_slice(r, dim):
    step = r.choice([None, None, 1, 2, 3, -1, -1, -2, -3, 5, -7])
    return slice(rand_bound(r, dim), rand_bound(r, dim), step)


def rand_index(r, shape):
    """A random index (tuple or single component) for an array of `shape`."""
    ndim = len(shape)
    # how many dims the index consumes (sometimes fewer than ndim, rarely one more)
    consume = r.randint(0, ndim)
    if r.random() < 0.04:
        consume = ndim + 1
    use_ellipsis = r.random() < 0.3 and consume <= ndim
    dims = list(shape) + [1]
    # place components with dims: with an Ellipsis, the tail components are
    # aligned to the end of the shape
    out = []
    if use_ellipsis:
        split = r.randint(0, consume)
        head = list(range(split))
        tail = list(range(ndim - (consume - split), ndim))
        for i in head:
            out.append(rand_component(r, shape[i]))
        out.append(Ellipsis)
        for i in tail:
            out.append(rand_component(r, shape[i]))
    else:
        for i in range(consume):
            out.append(rand_component(r, dims[i] if i < ndim else 1))
    # sprinkle None
    for _ in range(r.choice([0, 0, 0, 1, 2])):
        out.insert(r.randint(0, len(out)), None)
    if len(out) == 1 and r.random() < 0.5:
        return out[0]
    return tuple(out)


def rand_component(r, dim):
    return rand_int(r, dim) if r.random() < 0.35 else rand_slice(r, dim)


def to_numpy(x):
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        return x.numpy()
    return np.asarray(x)


def check_one(s, arr, idx, fw):
    try:
        expected = arr[idx]
    except IndexError:
        with pytest.raises(IndexError):
            s[idx]
        return
    got = s[idx]
    if fw == "pt":
        import torch
        assert isinstance(got, torch.Tensor), (idx, type(got))
    else:
        assert isinstance(got, np.ndarray), (idx, type(got))
    got = to_numpy(got)
    expected = np.asarray(expected)
    assert got.shape == expected.shape, (idx, got.shape, expected.shape)
    assert got.dtype == expected.dtype, (idx, got.dtype, expected.dtype)
    assert np.array_equal(got, expected), idx


@SOURCE_BACKENDS
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_random_indexing_matches_numpy(sliced_file, fw, backend, source):
    if fw == "pt":
        pytest.importorskip("torch")
    path, arrays = sliced_file
    r = random.Random(f"{fw}-{backend}")
    with source.open(path, fw, backend=backend) as f:
        for name, arr in arrays.items():
            if name == "wide":   # test_explicit_indexing's
                continue
            s = f.get_slice(name)
            assert s.get_shape() == list(arr.shape)
            for _ in range(120):
                idx = rand_index(r, arr.shape)
                check_one(s, arr, idx, fw)


EXPLICIT = [
    (), Ellipsis, slice(None), 0, -1, 1, slice(1, 3), slice(None, None, 2), slice(None, None, -1),
    slice(-2, None), slice(None, -1), slice(3, 1), slice(3, 1, -1), slice(-100, 100), slice(100, None),
    slice(None, None, -3), slice(-1, -100, -2), (0, 0), (-1, -1), (slice(None), 1), (Ellipsis, 0),
    (Ellipsis, -1), (0, Ellipsis), (None,), (None, 0), (0, None, slice(None, None, -1)),
    (slice(1, None), slice(None, 2)), (Ellipsis, None), (None, Ellipsis, None), (1, 2, 3),
    (slice(None), slice(None), slice(None, None, 2)), (0, slice(4, 0, -2), Ellipsis),
]


@SOURCE_BACKENDS
@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("idx", EXPLICIT, ids=[repr(i) for i in EXPLICIT])
def test_explicit_indexing(sliced_file, fw, backend, idx, source):
    if fw == "pt":
        pytest.importorskip("torch")
    path, arrays = sliced_file
    with source.open(path, fw, backend=backend) as f:
        for name in ["t2", "t4", "t6", "t7", "wide"]:  # (5,), (7,3), (3,4,5), (2,3,4,5), (300,96)
            check_one(f.get_slice(name), arrays[name], idx, fw)


@SOURCE_BACKENDS
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_scalar_tensor_indexing(sliced_file, fw, backend, source):
    if fw == "pt":
        pytest.importorskip("torch")
    path, arrays = sliced_file
    arr = arrays["t0"]
    assert arr.shape == ()
    with source.open(path, fw, backend=backend) as f:
        s = f.get_slice("t0")
        assert s.get_shape() == []
        for idx in [(), Ellipsis, None, (None, None), (Ellipsis, None)]:
            check_one(s, arr, idx, fw)
        for idx in [0, slice(None), (0,)]:
            with pytest.raises(IndexError):
                s[idx]


@SOURCE_BACKENDS
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_out_of_range_int(sliced_file, fw, backend, source):
    if fw == "pt":
        pytest.importorskip("torch")
    path, arrays = sliced_file
    with source.open(path, fw, backend=backend) as f:
        s = f.get_slice("t4")  # (7, 3)
        for idx in [7, -8, (0, 3), (0, -4), (Ellipsis, 3), 2**40, -(2**40)]:
            with pytest.raises(IndexError) as ei:
                s[idx]
            assert isinstance(ei.value, SafetensorError), type(ei.value).__mro__


@SOURCE_BACKENDS
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_too_many_indices(sliced_file, fw, backend, source):
    if fw == "pt":
        pytest.importorskip("torch")
    path, arrays = sliced_file
    with source.open(path, fw, backend=backend) as f:
        s = f.get_slice("t4")  # (7, 3)
        for idx in [(0, 0, 0), (slice(None), slice(None), slice(None)), (0, Ellipsis, 0, 0)]:
            with pytest.raises(IndexError):
                s[idx]


@SOURCE_BACKENDS
def test_two_ellipsis_rejected(sliced_file, backend, source):
    # numpy semantics (torch itself tolerates several Ellipsis; not asserted there)
    path, _ = sliced_file
    with source.open(path, "np", backend=backend) as f:
        with pytest.raises((IndexError, SafetensorError, ValueError, TypeError)):
            f.get_slice("t6")[..., 0, ...]


@SOURCE_BACKENDS
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_step_zero(sliced_file, fw, backend, source):
    if fw == "pt":
        pytest.importorskip("torch")
    path, _ = sliced_file
    with source.open(path, fw, backend=backend) as f:
        s = f.get_slice("t4")
        with pytest.raises((ValueError, SafetensorError)):
            s[::0]
        with pytest.raises((ValueError, SafetensorError)):
            s[:, 1:2:0]


@SOURCE_BACKENDS
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bad_index_types(sliced_file, fw, backend, source):
    if fw == "pt":
        pytest.importorskip("torch")
    path, _ = sliced_file
    with source.open(path, fw, backend=backend) as f:
        s = f.get_slice("t4")
        for idx in [1.5, (0, 1.0), (slice(None), "x")] + (["a"] if fw == "np" else []):
            with pytest.raises((TypeError, IndexError, SafetensorError)):
                s[idx]


@SOURCE_BACKENDS
def test_torch_list_indexing_with_ellipsis(sliced_file, backend, torch, source):
    path, arrays = sliced_file
    arr = arrays["t6"]  # (3, 4, 5)
    with source.open(path, "pt", backend=backend) as f:
        s = f.get_slice("t6")
        got = s[[0, 2], ...]
        assert isinstance(got, torch.Tensor)
        np.testing.assert_array_equal(got.numpy(), arr[[0, 2], ...])
        np.testing.assert_array_equal(s[..., [1, 3]].numpy(), arr[..., [1, 3]])


@SOURCE_BACKENDS
def test_torch_slice_then_device_cpu(sliced_file, backend, torch, source):
    path, arrays = sliced_file
    with source.open(path, "pt", device="cpu", backend=backend) as f:
        x = f.get_slice("t7")[1, :, ::2]
        assert x.device.type == "cpu"
        np.testing.assert_array_equal(x.numpy(), arrays["t7"][1, :, ::2])


def test_numpy_mmap_slice_is_independent(sliced_file):   # mmap specifics: local file only
    path, arrays = sliced_file
    with safe_open(path, "np") as f:
        full = f.get_tensor("t7")  # (2, 3, 4, 5)
        s = f.get_slice("t7")
        for idx in [slice(1, 2), (0, slice(None), slice(1, 3)), (Ellipsis, slice(None, None, 2)),
                    (1, slice(None, None, -1))]:
            v = s[idx]
            np.testing.assert_array_equal(v, arrays["t7"][idx])
            assert not np.shares_memory(v, full), idx
    del full, v
    gc.collect()


@pytest.mark.parametrize("fw", ["np", "pt"])
def test_mmap_large_slice_is_a_private_view(mk, fw):
    """A large selection is a view of a private mapping of its own (zero copy).
    Local file only (a mapping), as the next test."""
    if fw == "pt":
        pytest.importorskip("torch")
    big = np.arange(256 * 512, dtype=np.float32).reshape(256, 512)
    path = mk.arrays({"big": big})
    with safe_open(path, fw) as f:
        s = f.get_slice("big")
        idx = (slice(1, None), slice(None, None, -2 if fw == "np" else 2))  # torch.flip copies
        v, w = s[idx], s[idx]
        ptr = v.__array_interface__["data"][0] if fw == "np" else v.data_ptr()
        assert ptr_in_mapping(path, ptr)
        v[...] = 0  # writing one changes no other
        np.testing.assert_array_equal(np.asarray(w), big[idx])
        np.testing.assert_array_equal(np.asarray(f.get_tensor("big")), big)


def test_slice_is_writable_and_private(sliced_file):
    path, arrays = sliced_file
    before = open(path, "rb").read()
    with safe_open(path, "np") as f:
        v = f.get_slice("t7")[0]
        v[...] = 0
    with safe_open(path, "np") as f:
        np.testing.assert_array_equal(f.get_tensor("t7"), arrays["t7"])
    assert open(path, "rb").read() == before


@SOURCE_BACKENDS
def test_slice_survives_close(sliced_file, backend, source):
    path, arrays = sliced_file
    f = source.open(path, "np", backend=backend)
    s = f.get_slice("t6")
    v = s[1:]
    f.__exit__(None, None, None)
    gc.collect()
    np.testing.assert_array_equal(v, arrays["t6"][1:])
