"""The writers' alignment and checksum options (issue 22, docs/integrity.md): every writer
(serialize, serialize_file, the framework modules, the streaming writer, `safetensors convert` and
`safetensors rewrite`) writes the same bytes for the same input and options; the default is
upstream's layout; digests cover the bytes as stored; upstream 0.8.0 itself reads every file."""
import hashlib
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import safetensors
import safetensors.numpy
from safetensors import SafetensorError, TensorSpec, checksums, safe_open
from safetensors._safetensors_c import _dtype_table
from safetensors.cli import describe_file, rewrite_file
from safetensors.stream import StreamWriter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALIGNMENTS = [1 << k for k in range(3, 13)]  # 8 .. 4096
ALGORITHMS = list(checksums.ALGORITHMS)
BITS = {code: bits for code, bits, *_ in _dtype_table()}


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "layers.0.weight": rng.standard_normal((16, 8)).astype(np.float32),
        "layers.0.bias": rng.standard_normal(16).astype(np.float16),
        "big_endian": np.arange(7, dtype=">i4"),  # written little-endian: the digest is of those bytes
        "fortran": np.asfortranarray(np.arange(6, dtype=np.uint16).reshape(2, 3)),
        "empty": np.zeros((0, 5), np.int64),
        "bytes": np.arange(3, dtype=np.uint8),
        "poids.é权重": np.float64(2.5),  # a unicode name, 0-d
    }


METADATA = {"format": "np", "auteur": "Zoë \u6743\u91cd \"quoted\"\n"}


def _split(blob):
    n = int.from_bytes(blob[:8], "little")
    return n, json.loads(blob[8:8 + n]), blob[8 + n:]


def _stream(path, arrays, order=None, **options):
    with StreamWriter(path, {k: (v.dtype, v.shape) for k, v in arrays.items()}, metadata=METADATA,
                      **options) as writer:
        for name in order or list(arrays):
            writer.write(name, arrays[name])


# ---------------------------------------------------------------- alignment


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_numpy_alignment_every_writer_same_bytes(tmp_path, alignment):
    arrays = _arrays()
    blob = safetensors.numpy.save(arrays, METADATA, alignment=alignment)
    n, header, data = _split(blob)
    assert (8 + n) % alignment == 0 and blob[8:8 + n].rstrip(b" ").endswith(b"}")
    assert len(blob[8:8 + n]) - len(blob[8:8 + n].rstrip(b" ")) < alignment  # the least padding that aligns
    for name, entry in header.items():  # each tensor at a multiple of its element size (the writer's order)
        if name != "__metadata__":
            assert entry["data_offsets"][0] % max(1, BITS[entry["dtype"]] // 8) == 0
    safetensors.numpy.save_file(arrays, tmp_path / "saved.safetensors", METADATA, alignment=alignment)
    _stream(tmp_path / "streamed.safetensors", arrays, order=sorted(arrays, reverse=True), alignment=alignment)
    assert (tmp_path / "saved.safetensors").read_bytes() == blob
    assert (tmp_path / "streamed.safetensors").read_bytes() == blob
    assert data == _split(safetensors.numpy.save(arrays, METADATA))[2]  # only the padding differs
    loaded = safetensors.numpy.load_file(tmp_path / "saved.safetensors")
    assert loaded.keys() == arrays.keys()
    for name, array in arrays.items():
        assert np.array_equal(loaded[name], array) and loaded[name].dtype == array.dtype.newbyteorder("<")
    assert describe_file(str(tmp_path / "saved.safetensors"))["alignment"] >= alignment


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_torch_alignment(tmp_path, alignment):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    tensors = {"w": torch.randn(5, 3), "b": torch.arange(7, dtype=torch.int16),
               "h": torch.ones(3, dtype=torch.bfloat16)}
    blob = safetensors.torch.save(tensors, {"format": "pt"}, alignment=alignment)
    assert (8 + _split(blob)[0]) % alignment == 0
    safetensors.torch.save_file(tensors, tmp_path / "t.safetensors", {"format": "pt"}, alignment=alignment)
    with StreamWriter(tmp_path / "s.safetensors", {k: v.to("meta") for k, v in tensors.items()},
                      metadata={"format": "pt"}, alignment=alignment) as writer:
        for name, tensor in tensors.items():
            writer.write(name, tensor)
    assert (tmp_path / "t.safetensors").read_bytes() == blob == (tmp_path / "s.safetensors").read_bytes()
    loaded = safetensors.torch.load(blob)
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_default_is_upstreams_layout():
    arrays = _arrays()
    blob = safetensors.numpy.save(arrays, METADATA)
    assert safetensors.numpy.save(arrays, METADATA, alignment=None) == blob
    assert safetensors.numpy.save(arrays, METADATA, alignment=8) == blob  # 8 is upstream's own padding
    assert safetensors.numpy.save(arrays, METADATA, alignment=None, checksum=None) == blob
    n = _split(blob)[0]
    assert n % 8 == 0 and len(blob[8:8 + n]) - len(blob[8:8 + n].rstrip(b" ")) < 8


BAD_ALIGNMENTS = [0, 1, 4, 12, 100, 8192, -8, 1 << 70]


@pytest.mark.parametrize("bad", BAD_ALIGNMENTS + [2.0, True, "64"])
def test_invalid_alignment_raises_and_writes_nothing(tmp_path, bad):
    arrays = _arrays()
    error = ValueError if isinstance(bad, int) and not isinstance(bad, bool) else TypeError
    message = "power of two from 8 to 4096" if error is ValueError else "alignment must be an int or None"
    with pytest.raises(error, match=message):
        safetensors.numpy.save(arrays, alignment=bad)
    with pytest.raises(error, match=message):
        safetensors.numpy.save_file(arrays, tmp_path / "x.safetensors", alignment=bad)
    with pytest.raises(error, match=message):
        _stream(tmp_path / "y.safetensors", arrays, alignment=bad)
    with pytest.raises(error, match=message):
        safetensors.serialize({}, alignment=bad)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad", ["md5", "SHA256", "", 256])
def test_invalid_checksum_raises_and_writes_nothing(tmp_path, bad):
    arrays = _arrays()
    with pytest.raises(ValueError, match="checksum must be one of 'sha256', 'xxh3_128' or None"):
        safetensors.numpy.save(arrays, checksum=bad)
    with pytest.raises(ValueError, match="checksum must be one of"):
        safetensors.numpy.save_file(arrays, tmp_path / "x.safetensors", checksum=bad)
    with pytest.raises(ValueError, match="checksum must be one of"):
        _stream(tmp_path / "y.safetensors", arrays, checksum=bad)
    assert os.listdir(tmp_path) == []


def test_numpy_integer_alignment_accepted():
    assert safetensors.numpy.save(_arrays(), alignment=np.int64(64)) == safetensors.numpy.save(_arrays(), alignment=64)


# ---------------------------------------------------------------- digests


def _digests_of(blob):
    """(metadata, {name: bytes as stored}, data section) of a file's bytes."""
    n, header, data = _split(blob)
    stored = {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items() if k != "__metadata__"}
    return header.get("__metadata__"), stored, data


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("alignment", [None, 64, 4096])
def test_digests_same_from_every_writer(tmp_path, algorithm, alignment):
    arrays = _arrays()
    options = {"alignment": alignment, "checksum": algorithm}
    blob = safetensors.numpy.save(arrays, METADATA, **options)
    metadata, stored, data = _digests_of(blob)
    found = checksums.recorded(metadata)
    assert found is not None and found[0] == algorithm
    _, tensor_digests, data_digest = found
    assert list(tensor_digests) == list(stored)  # file order
    for name, raw in stored.items():
        h = checksums.new_hasher(algorithm)
        h.update(raw)
        assert tensor_digests[name] == h.hexdigest()
    h = checksums.new_hasher(algorithm)
    h.update(data)
    assert data_digest == h.hexdigest()
    assert {k: v for k, v in metadata.items() if not k.startswith("safetensors.checksum")} == METADATA
    # the same bytes from every writer: save_file, the stream in file order, in reverse, from threads
    safetensors.numpy.save_file(arrays, tmp_path / "saved.safetensors", METADATA, **options)
    assert (tmp_path / "saved.safetensors").read_bytes() == blob
    for label, order in (("forward", list(stored)), ("reverse", list(stored)[::-1]), ("declared", None)):
        _stream(tmp_path / f"{label}.safetensors", arrays, order=order, **options)
        assert (tmp_path / f"{label}.safetensors").read_bytes() == blob, label
    declared = {k: (v.dtype, v.shape) for k, v in arrays.items()}
    with StreamWriter(tmp_path / "threads.safetensors", declared, metadata=METADATA, **options) as writer:
        threads = [threading.Thread(target=writer.write, args=(k, v)) for k, v in arrays.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert (tmp_path / "threads.safetensors").read_bytes() == blob
    # rewrite of the plain file adds the same digests; of the digest-carrying one changes nothing
    safetensors.numpy.save_file(arrays, tmp_path / "plain.safetensors", METADATA)
    rewrite_file(str(tmp_path / "plain.safetensors"), str(tmp_path / "rewritten.safetensors"), **options)
    assert (tmp_path / "rewritten.safetensors").read_bytes() == blob
    rewrite_file(str(tmp_path / "saved.safetensors"), str(tmp_path / "saved.safetensors"), alignment=alignment)
    assert (tmp_path / "saved.safetensors").read_bytes() == blob  # in place; "keep": recomputed, the same


def test_data_digest_is_sha256_of_the_data_section(tmp_path):
    path = tmp_path / "m.safetensors"
    safetensors.numpy.save_file(_arrays(), path, METADATA, checksum="sha256", alignment=256)
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    with safe_open(path, "np") as f:
        assert f.metadata()[checksums.KEY_DATA] == hashlib.sha256(blob[8 + n:]).hexdigest()


def test_serialize_with_tensor_specs_and_f4():
    """TensorSpec input (the core's own dtype names, F4 packing): the digests are of the bytes written."""
    packed = np.array([[0x21, 0x43], [0x65, 0x87]], np.uint8)
    words = np.arange(4, dtype=np.float32)
    specs = {"f4": TensorSpec(dtype="float4_e2m1fn_x2", shape=[2, 2], data_ptr=packed.ctypes.data, data_len=4),
             "w": TensorSpec(dtype="float32", shape=[4], data_ptr=words.ctypes.data, data_len=16)}
    blob = safetensors.serialize(specs, {"k": "v"}, checksum="sha256", alignment=32)
    metadata, stored, data = _digests_of(blob)
    assert _split(blob)[1]["f4"]["shape"] == [2, 4] and stored["f4"] == packed.tobytes()
    assert json.loads(metadata[checksums.KEY_TENSORS]) == {
        "w": hashlib.sha256(words.tobytes()).hexdigest(), "f4": hashlib.sha256(packed.tobytes()).hexdigest()}
    assert metadata[checksums.KEY_DATA] == hashlib.sha256(data).hexdigest()


def test_torch_digests_f4_bf16_and_cuda_free(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    tensors = {"h": torch.arange(6, dtype=torch.bfloat16), "e": torch.empty(0, 2), "i": torch.arange(3)}
    if hasattr(torch, "float4_e2m1fn_x2"):
        tensors["f4"] = torch.arange(6, dtype=torch.uint8).view(torch.float4_e2m1fn_x2).reshape(3, 2)
    blob = safetensors.torch.save(tensors, checksum="xxh3_128")
    metadata, stored, data = _digests_of(blob)
    recorded = checksums.recorded(metadata)[1]
    assert recorded == dict(zip(stored, checksums.digest_buffers("xxh3_128", list(stored.values()))))
    safetensors.torch.save_file(tensors, tmp_path / "t.safetensors", checksum="xxh3_128")
    assert (tmp_path / "t.safetensors").read_bytes() == blob
    safetensors.torch.save_model(torch.nn.Linear(3, 2), tmp_path / "m.safetensors", checksum="sha256", alignment=64)
    n, header, _ = _split((tmp_path / "m.safetensors").read_bytes())
    assert (8 + n) % 64 == 0 and checksums.recorded(header["__metadata__"])[0] == "sha256"


def test_existing_digest_keys_are_replaced():
    arrays = _arrays()
    stale = checksums.with_digests(METADATA, "sha256", ["x"], ["0" * 64], "0" * 64)
    fresh = safetensors.numpy.save(arrays, METADATA, checksum="xxh3_128")
    assert safetensors.numpy.save(arrays, stale, checksum="xxh3_128") == fresh


def test_no_tensors_and_empty_only(tmp_path):
    for arrays in ({}, {"e": np.zeros(0, np.float32)}):
        blob = safetensors.numpy.save(arrays, checksum="sha256", alignment=128)
        metadata, _, data = _digests_of(blob)
        assert data == b"" and metadata[checksums.KEY_DATA] == hashlib.sha256(b"").hexdigest()
        _stream(tmp_path / "s.safetensors", arrays, checksum="sha256", alignment=128)
        assert _split((tmp_path / "s.safetensors").read_bytes())[1]["__metadata__"] == {**metadata, **METADATA}


def test_stream_out_of_order_with_empty_tensors(tmp_path):
    """Tensors written out of file order are read back at commit, empty ones included."""
    arrays = {"a": np.zeros(0, np.float32), "b": np.zeros((3, 0), np.int8), "c": np.arange(3, dtype=np.uint8)}
    expected = safetensors.numpy.save(arrays, METADATA, checksum="sha256")
    order = list(_split(expected)[1])[1:]  # file order without __metadata__
    _stream(tmp_path / "s.safetensors", arrays, order=order[::-1], checksum="sha256")
    assert (tmp_path / "s.safetensors").read_bytes() == expected
    empty = {"a": arrays["a"], "b": arrays["b"]}
    _stream(tmp_path / "e.safetensors", empty, order=["b", "a"], checksum="sha256")
    assert (tmp_path / "e.safetensors").read_bytes() == safetensors.numpy.save(empty, METADATA, checksum="sha256")


def test_stream_failure_leaves_nothing(tmp_path):
    arrays = _arrays()
    declared = {k: (v.dtype, v.shape) for k, v in arrays.items()}
    writer = StreamWriter(tmp_path / "m.safetensors", declared, checksum="sha256")
    writer.write("bytes", arrays["bytes"])
    with pytest.raises(SafetensorError, match="was never written"):
        writer.commit()
    with pytest.raises(RuntimeError):
        with StreamWriter(tmp_path / "m.safetensors", declared, checksum="sha256") as writer:
            for name, array in arrays.items():
                writer.write(name, array)
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with StreamWriter(tmp_path / "m.safetensors", declared, checksum="sha256") as writer:
        for name, array in arrays.items():
            writer.write(name, array)
        with pytest.raises(SafetensorError, match="cannot be rewritten in place"):
            writer._writer._rewrite_metadata({"longer": "x"})  # the core refuses a header of another length
        writer.abort()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("algorithm, hex_length", [("sha256", 64), ("xxh3_128", 32)])
def test_header_growth_per_tensor(algorithm, hex_length):
    """What a digest costs in the header (docs/integrity.md): name + hex + 10 bytes per tensor (the
    JSON escapes of the quotes inside the metadata string), plus a fixed part, before padding."""
    def json_length(count, checksum):
        arrays = {f"t{i:05d}": np.zeros(1, np.float32) for i in range(count)}
        n, _, _ = _split(safetensors.numpy.save(arrays, checksum=checksum))
        return len(safetensors.numpy.save(arrays, checksum=checksum)[8:8 + n].rstrip(b" "))

    grow = [json_length(c, algorithm) - json_length(c, None) for c in (100, 200)]
    assert (grow[1] - grow[0]) / 100 == 6 + hex_length + 10  # names of 6 bytes
    # once: the three keys (162 / 132 bytes) and '"__metadata__":{},' (17), which these files lacked
    assert grow[0] - 100 * (6 + hex_length + 10) == {"sha256": 162, "xxh3_128": 132}[algorithm] + 17


# ---------------------------------------------------------------- upstream 0.8.0 reads them


def _upstream_python():
    """An interpreter whose `import safetensors` is upstream 0.8.0: $SAFETENSORS_UPSTREAM_PYTHON, the
    benchmark's venv (bench/common.py), or this interpreter with upstream's wheel unpacked into
    build/upstream-0.8.0 (by .ci/frameworks.sh, or here with pip download when it is not there)."""
    candidates = [os.environ.get("SAFETENSORS_UPSTREAM_PYTHON"),
                  os.path.join(REPO, "build", "bench", "venv-upstream", "bin", "python")]
    for python in filter(None, candidates):
        if os.path.exists(python):
            return [python], None
    unpacked = os.path.join(REPO, "build", "upstream-0.8.0")
    if not os.path.exists(os.path.join(unpacked, "safetensors", "__init__.py")):  # as .ci/frameworks.sh does
        download = os.path.join(REPO, "build", "dl")
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "safetensors==0.8.0",
                                  "-d", download], capture_output=True).returncode == 0
        wheels = [w for w in os.listdir(download) if w.startswith("safetensors-0.8.0-")] if fetched else []
        if wheels:
            import zipfile

            with zipfile.ZipFile(os.path.join(download, wheels[0])) as wheel:
                wheel.extractall(unpacked)
    if os.path.exists(os.path.join(unpacked, "safetensors", "__init__.py")):
        return [sys.executable], unpacked
    pytest.skip("upstream 0.8.0 is not here and pip could not download it: set SAFETENSORS_UPSTREAM_PYTHON, or "
                "run .ci/frameworks.sh or the benchmark once (they make build/upstream-0.8.0, build/bench/venv-upstream)")


UPSTREAM_READER = r"""
import hashlib, json, sys
if sys.argv[1] != "-":
    sys.path.insert(0, sys.argv[1])
import safetensors
assert safetensors.__version__ == "0.8.0" and not hasattr(safetensors, "_safetensors_c"), safetensors.__file__
out = {}
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        tensors = {name: [t["dtype"], t["shape"], hashlib.sha256(bytes(t["data"])).hexdigest()]
                   for name, t in safetensors.deserialize(f.read())}
    with safetensors.safe_open(path, "np") as f:
        out[path] = {"metadata": f.metadata(), "keys": sorted(f.keys()), "tensors": tensors}
print(json.dumps(out))
"""


def test_upstream_reads_aligned_and_digest_files(tmp_path):
    command, path_entry = _upstream_python()
    arrays = _arrays()
    files = []
    for alignment in [None] + ALIGNMENTS:
        for checksum in [None] + ALGORITHMS:
            if alignment is None and checksum is None:
                continue
            path = str(tmp_path / f"a{alignment}-{checksum}.safetensors")
            safetensors.numpy.save_file(arrays, path, METADATA, alignment=alignment, checksum=checksum)
            files.append(path)
    _stream(tmp_path / "streamed.safetensors", arrays, order=sorted(arrays), alignment=512, checksum="sha256")
    rewrite_file(files[0], str(tmp_path / "rewritten.safetensors"), alignment=4096, checksum="xxh3_128")
    files += [str(tmp_path / "streamed.safetensors"), str(tmp_path / "rewritten.safetensors")]
    result = subprocess.run(command + ["-c", UPSTREAM_READER, path_entry or "-", *files], capture_output=True,
                            text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    for path in files:
        with safe_open(path, "np") as f:
            ours = {"metadata": f.metadata(), "keys": sorted(f.keys())}
        _, stored, _ = _digests_of(open(path, "rb").read())
        assert seen[path]["metadata"] == ours["metadata"] and seen[path]["keys"] == ours["keys"] == sorted(arrays)
        assert {k: v[2] for k, v in seen[path]["tensors"].items()} == {
            k: hashlib.sha256(v).hexdigest() for k, v in stored.items()}
        assert {k: v[2] for k, v in seen[path]["tensors"].items()} == {
            k: hashlib.sha256(safetensors.numpy.save({"x": v})[-v.nbytes:] if v.nbytes else b"").hexdigest()
            for k, v in arrays.items()}  # the tensors' own little-endian bytes


# ---------------------------------------------------------------- the command line


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "safetensors", *map(str, args)], capture_output=True, text=True)


def test_cli_rewrite_and_inspect(tmp_path):
    arrays = _arrays()
    plain = tmp_path / "plain.safetensors"
    safetensors.numpy.save_file(arrays, plain, METADATA)
    out = tmp_path / "out.safetensors"
    result = _cli("rewrite", plain, out, "--alignment", "4096", "--checksum", "sha256")
    assert result.returncode == 0 and result.stdout == f"{out}\n", result.stderr
    assert out.read_bytes() == safetensors.numpy.save(arrays, METADATA, alignment=4096, checksum="sha256")
    result = _cli("inspect", out)
    assert f"(header 4096 bytes, data aligned to 4096)" in result.stdout
    info = json.loads(_cli("inspect", "--json", out, plain).stdout)
    assert [f["alignment"] for f in info["files"]] == [4096, describe_file(str(plain))["alignment"]]
    # in place, keeping the digests up to date; then removing them
    assert _cli("rewrite", "-q", out, out, "--alignment", "64").returncode == 0
    assert out.read_bytes() == safetensors.numpy.save(arrays, METADATA, alignment=64, checksum="sha256")
    assert _cli("rewrite", "-q", out, out, "--checksum", "none").returncode == 0
    assert out.read_bytes() == plain.read_bytes()
    bare = tmp_path / "bare.safetensors"  # digests were the only metadata: none is left, not {}
    safetensors.numpy.save_file(arrays, bare, checksum="xxh3_128")
    assert _cli("rewrite", "-q", bare, bare, "--checksum", "none").returncode == 0
    assert bare.read_bytes() == safetensors.numpy.save(arrays)
    bare.unlink()
    assert sorted(os.listdir(tmp_path)) == ["out.safetensors", "plain.safetensors"]


@pytest.mark.parametrize("args", [["--alignment", "12"], ["--alignment", "8192"], ["--alignment", "x"],
                                  ["--checksum", "md5"]])
def test_cli_rewrite_bad_options(tmp_path, args):
    safetensors.numpy.save_file(_arrays(), tmp_path / "p.safetensors")
    result = _cli("rewrite", tmp_path / "p.safetensors", tmp_path / "o.safetensors", *args)
    assert result.returncode == 2 and "invalid" in result.stderr
    assert not (tmp_path / "o.safetensors").exists()


def test_cli_rewrite_invalid_input(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"{}")
    result = _cli("rewrite", tmp_path / "bad.safetensors", tmp_path / "o.safetensors")
    assert result.returncode == 1 and result.stderr.startswith("safetensors rewrite: error: ")
    assert not (tmp_path / "o.safetensors").exists()


def test_cli_convert_options(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    tensors = {"w": torch.randn(4, 3), "b": torch.arange(5)}
    torch.save(tensors, tmp_path / "m.bin")
    out = tmp_path / "m.safetensors"
    result = _cli("convert", "-q", tmp_path / "m.bin", out, "--alignment", "128", "--checksum", "xxh3_128")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == safetensors.torch.save(tensors, {"format": "pt"}, alignment=128, checksum="xxh3_128")
    # a converted .safetensors input's digests are dropped (the tensors may change) unless asked for
    assert _cli("convert", "-q", out, tmp_path / "c.safetensors", "--dtype", "float16").returncode == 0
    with safe_open(tmp_path / "c.safetensors", "pt") as f:
        assert checksums.recorded(f.metadata()) is None and f.metadata() == {"format": "pt"}
