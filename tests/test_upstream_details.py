"""Drop-in details (issue 9): exception texts and types as upstream 0.8.0 has
them, paths of any length, refusing to replace non-regular files, and errors
that say what a file that is not safetensors looks like. The reading checks
run on a local path and over http (a few on S3): conftest.py's `source`."""

from __future__ import annotations

import importlib
import io
import os
import pickle
import socket
import stat
import tempfile
import zipfile

import numpy as np
import pytest

from safetensors import SafetensorError, safe_open, serialize, serialize_file
from safetensors import _safetensors_rust as safetensors_rust
from safetensors.numpy import load, load_file, save, save_file

from conftest import WITH_S3

FRAMEWORKS = ["np", "pt"]


def _framework(fw):
    if fw == "pt":
        pytest.importorskip("torch")
    return fw


# ---------------------------------------------------------------- opening


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_missing_file_message_is_upstreams(fw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        safe_open("notafile", _framework(fw))
    assert str(e.value) == "No such file or directory: notafile"
    assert e.value.errno == 2
    assert e.value.filename == "notafile"
    assert e.value.strerror == "No such file or directory"


@WITH_S3
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_missing_file_is_one_error_for_every_source(fw, tmp_path, source):
    """A missing URL is what a missing path is: the same type, text, errno, strerror, naming what was given."""
    target = source(tmp_path / "notafile")
    with pytest.raises(FileNotFoundError) as e:
        source.open(tmp_path / "notafile", _framework(fw))
    assert type(e.value) is safetensors_rust.FileNotFoundError
    assert str(e.value) == f"No such file or directory: {target}"
    assert (e.value.errno, e.value.strerror, e.value.filename) == (2, "No such file or directory", target)


def test_open_error_pickles_with_its_attributes(tmp_path, source):
    with pytest.raises(FileNotFoundError) as e:
        source.open(tmp_path / "absent", "np")
    again = pickle.loads(pickle.dumps(e.value))
    assert isinstance(again, FileNotFoundError)
    assert (str(again), again.errno, again.strerror, again.filename) == (
        str(e.value), e.value.errno, e.value.strerror, e.value.filename)


def test_directory_is_a_directory_error(tmp_path):
    # local file only: over http nginx answers 403 for a directory, S3's
    # HeadObject 404 for a prefix (docs/remote.md's failure table)
    with pytest.raises(IsADirectoryError) as e:
        safe_open(tmp_path, "np")
    assert str(e.value) == f"Is a directory: {tmp_path}"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_non_regular_file_keeps_the_reason(tmp_path):   # local file only
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), ("/dev/null", "a character device")):
        with pytest.raises(OSError) as e:
            safe_open(path, "np")
        assert str(e.value) == f"not a regular file ({kind}): {path}"
        assert "Invalid argument" not in str(e.value)
        assert e.value.filename == str(path)


def test_argument_type_messages_name_python_types(tmp_path, source):
    p = tmp_path / "a.safetensors"
    save_file({"a": np.zeros(2, np.float32)}, p)
    checks = [
        (lambda: source.open(p, 5), "argument 'framework': 'int' object is not an instance of 'str'"),
        (lambda: source.open(p, "np", backend=5), "argument 'backend': 'int' object is not an instance of 'str'"),
        (lambda: serialize([]), "argument 'tensor_dict': 'list' object is not an instance of 'dict'"),
    ]
    with source.open(p, "np") as f:
        checks.append((lambda: f.get_tensor(5), "argument 'name': 'int' object is not an instance of 'str'"))
        for call, text in checks:
            with pytest.raises(TypeError) as e:
                call()
            assert str(e.value) == text
            assert "PyString" not in str(e.value)


# ---------------------------------------------------------------- slices


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_out_of_range_index_text(fw, backend, tmp_path, source):
    p = tmp_path / "a.safetensors"
    save_file({"w": np.arange(10, dtype=np.float32).reshape(2, 5)}, p)
    with source.open(p, _framework(fw), backend=backend) as f:
        s = f.get_slice("w")
        for index, text in [
            ((slice(None), -6), "Invalid index -6 for dimension 1 of size 5"),
            ((slice(None), 5), "Invalid index 5 for dimension 1 of size 5"),
            ((2,), "Invalid index 2 for dimension 0 of size 2"),
            ((0, 2**70), f"Invalid index {2**70} for dimension 1 of size 5"),
            ((0, -(2**70)), f"Invalid index {-(2**70)} for dimension 1 of size 5"),
            ((Ellipsis, 2**64), f"Invalid index {2**64} for dimension 1 of size 5"),
        ]:
            with pytest.raises(SafetensorError) as e:
                s[index]
            assert str(e.value) == text


# ---------------------------------------------------------------- saving


def test_save_into_missing_directory_names_the_path(tmp_path):
    target = tmp_path / "nodir" / "x.safetensors"
    with pytest.raises(SafetensorError) as e:
        save_file({"a": np.zeros(2)}, target)
    assert str(e.value) == (
        "Error while serializing: I/O error: No such file or directory (os error 2) "
        f'at path "{target}"')
    assert isinstance(e.value, OSError) and e.value.errno == 2
    assert e.value.filename == str(target)


def test_pickled_io_error_keeps_attributes(tmp_path):
    with pytest.raises(SafetensorError) as e:
        save_file({"a": np.zeros(2)}, tmp_path / "nodir" / "x.safetensors")
    again = pickle.loads(pickle.dumps(e.value))
    assert type(again) is type(e.value)
    assert (str(again), again.errno, again.strerror, again.filename) == (
        str(e.value), e.value.errno, e.value.strerror, e.value.filename)
    assert again.strerror == "No such file or directory"


def _long_path(root, total):
    """A path of exactly `total` characters under root (components < NAME_MAX)."""
    path = str(root)
    while total - len(path) > 250:
        path = os.path.join(path, "d" * 200)
    os.makedirs(path, exist_ok=True)
    name_len = total - len(path) - 1
    assert 1 <= name_len <= 255
    return os.path.join(path, "f" * name_len)


@pytest.mark.parametrize("total", [4065, 4095])
def test_save_path_of_any_accepted_length(tmp_path, total):
    path = _long_path(tmp_path, total)
    assert len(path) == total
    arr = np.arange(6, dtype=np.int32)
    save_file({"a": arr}, path)
    np.testing.assert_array_equal(load_file(path)["a"], arr)
    save_file({"a": arr + 1}, path)  # replacing works too
    np.testing.assert_array_equal(load_file(path)["a"], arr + 1)
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


def _refused(path, kind):
    with pytest.raises(SafetensorError) as e:
        save_file({"a": np.zeros(2)}, path)
    assert str(e.value) == (
        f"Error while serializing: I/O error: not a regular file ({kind}) at path \"{path}\"")
    assert isinstance(e.value, OSError)


def test_save_refuses_a_character_device():
    _refused("/dev/null", "a character device")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_save_refuses_fifo_and_socket():
    with tempfile.TemporaryDirectory(dir="/tmp") as d:  # short: AF_UNIX paths are limited
        fifo = os.path.join(d, "fifo")
        os.mkfifo(fifo)
        _refused(fifo, "a FIFO")
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
        sock_path = os.path.join(d, "sock")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(sock_path)
            _refused(sock_path, "a socket")
            assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
        assert sorted(os.listdir(d)) == ["fifo", "sock"]  # no temporary left


def test_save_over_directory_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(SafetensorError, match="Is a directory"):
        save_file({"a": np.zeros(2)}, tmp_path / "d")


def test_save_through_symlink_replaces_the_link(tmp_path):
    """Documented in docs/differences.md: the rename replaces the link itself."""
    target = tmp_path / "target.safetensors"
    save_file({"a": np.zeros(2)}, target)
    before = target.read_bytes()
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    save_file({"a": np.ones(3)}, link)
    assert not link.is_symlink()
    np.testing.assert_array_equal(load_file(link)["a"], np.ones(3))
    assert target.read_bytes() == before
    # a link to something that is not a regular file is refused like the thing itself
    dev_link = tmp_path / "null"
    dev_link.symlink_to("/dev/null")
    with pytest.raises(SafetensorError, match=r"not a regular file \(a character device\)"):
        save_file({"a": np.zeros(2)}, dev_link)
    assert dev_link.is_symlink()


# ---------------------------------------------------------------- not safetensors


def _zip_bytes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return buf.getvalue()


FOREIGN = [
    ("zip", _zip_bytes(), "a zip archive, as torch.save writes"),
    ("pickle", pickle.dumps({"w": [1, 2, 3]}, protocol=2), "a Python pickle"),
    ("pickle5", pickle.dumps({"w": [1, 2, 3]}, protocol=5), "a Python pickle"),
    ("lfs", b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12345\n", "a git-lfs pointer"),
    ("html", b"\n  <!DOCTYPE html><html><body>Not found</body></html>", "an HTML page"),
    ("html2", b"<HTML><head></head></HTML>\n" * 3, "an HTML page"),
]


@pytest.mark.parametrize("name,content,looks_like", FOREIGN, ids=[f[0] for f in FOREIGN])
def test_foreign_files_say_what_they_look_like(tmp_path, name, content, looks_like, source):
    p = tmp_path / "model.safetensors"
    p.write_bytes(content)
    with pytest.raises(SafetensorError) as e:
        source.open(p, "np")
    text = str(e.value)
    assert text.startswith("Error while deserializing header: ")
    assert f"(the file looks like {looks_like}" in text
    with pytest.raises(SafetensorError) as e:
        load(content)
    assert str(e.value).startswith("Error while deserializing: ")
    assert f"(the file looks like {looks_like}" in str(e.value)


def test_torch_checkpoint_is_recognised(tmp_path, torch, source):
    p = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(2)}, p)
    with pytest.raises(SafetensorError, match="looks like a zip archive, as torch.save writes"):
        source.open(p, "pt")
    torch.save({"w": torch.zeros(2)}, p, _use_new_zipfile_serialization=False)
    with pytest.raises(SafetensorError, match="looks like a Python pickle"):
        source.open(p, "pt")


def test_real_safetensors_errors_unchanged(tmp_path, source):
    """A truncated safetensors file gets upstream's text alone."""
    data = save({"a": np.zeros(4, np.float32)})
    p = tmp_path / "t.safetensors"
    p.write_bytes(data[:-1])
    with pytest.raises(SafetensorError) as e:
        source.open(p, "np")
    assert "looks like" not in str(e.value)


# ---------------------------------------------------------------- help()


def test_public_names_have_useful_docstrings(tmp_path):
    import safetensors
    import safetensors.numpy as st_numpy

    p = tmp_path / "a.safetensors"
    save_file({"a": np.zeros(2)}, p)
    with safe_open(p, "np") as f:
        slice_type = type(f.get_slice("a"))
    names = [safetensors.safe_open, safetensors.serialize, safetensors.serialize_file,
             safetensors.deserialize, safetensors.TensorSpec, slice_type]
    names += [getattr(safetensors.safe_open, m) for m in
              ("keys", "offset_keys", "metadata", "get_tensor", "get_tensors", "get_slice")]
    names += [slice_type.get_shape, slice_type.get_dtype]
    names += [getattr(st_numpy, n) for n in st_numpy.__all__]
    if importlib_util_find("torch"):
        import safetensors.torch as st_torch
        names += [getattr(st_torch, n) for n in st_torch.__all__ if n != "safe_open"]
    # these import their framework only when loading: NumPy is all they need here
    for module in ("flax", "tensorflow", "mlx", "paddle"):
        framework_module = importlib.import_module(f"safetensors.{module}")
        assert framework_module.__all__ == ["save", "save_file", "load", "load_file"]
        for name in framework_module.__all__:
            function = getattr(framework_module, name)
            assert "Args:" in (function.__doc__ or ""), function
            names.append(function)
    for obj in names:
        doc = obj.__doc__ or ""
        assert "Example" in doc and ("Returns" in doc or "Raises" in doc), obj
    for exc in (safetensors.SafetensorError,):
        assert exc.__doc__


def importlib_util_find(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None
