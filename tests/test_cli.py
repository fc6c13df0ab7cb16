"""The command line, run as a subprocess (python -m safetensors ...)."""
import hashlib
import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")  # the matrix Pythons have NumPy only

from safetensors import safe_open
from safetensors.torch import load_file, save_file


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "safetensors", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


@pytest.fixture
def model_file(tmp_path):
    tensors = {"b": torch.arange(5), "a.weight": torch.ones(4, 3), "c": torch.zeros(2, dtype=torch.bfloat16)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    return path


@pytest.fixture
def checkpoint(tmp_path):
    """A transformers-like pickle: tied embeddings, a non-tensor entry."""
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(10, 4, generator=g)
    state = {"emb.weight": emb, "lm_head.weight": emb, "layer.weight": torch.randn(100, 100, generator=g),
             "layer.bias": torch.randn(100, generator=g), "position_ids": torch.arange(7)}
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("command", [[], ["inspect"], ["verify"], ["convert"], ["diff"]])
def test_help(command):
    result = run(*command, "--help")
    assert result.returncode == 0
    assert "usage: safetensors" in result.stdout


def test_console_script():
    """pyproject's [project.scripts] entry, installed next to the interpreter by `pip install -e .`."""
    script = os.path.join(os.path.dirname(sys.executable), "safetensors")
    result = subprocess.run([script, "inspect", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: safetensors inspect" in result.stdout


def test_usage_error_exit_code():
    assert run().returncode == 2
    assert run("frobnicate").returncode == 2


def test_inspect(model_file):
    result = run("inspect", model_file)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["name", "dtype", "shape", "bytes", "offset"]
    # file order: I64 first (dtype index descending), then F32, then BF16
    assert lines[2].split() == ["b", "I64", "[5]", "40", "216"]
    assert lines[3].split() == ["a.weight", "F32", "[4,", "3]", "48", "256"]
    assert "parameters: 19" in result.stdout
    assert "format: pt" in result.stdout

    result = run("inspect", "--json", model_file)
    data = json.loads(result.stdout)
    assert data["parameters"] == 19 and data["bytes"] == 92
    assert data["totals_by_dtype"]["F32"] == {"tensors": 1, "parameters": 12, "bytes": 48}
    tensors = {t["name"]: t for t in data["files"][0]["tensors"]}
    assert tensors["c"]["offset"] == 304 and tensors["c"]["data_offsets"] == [88, 92]
    raw = model_file.read_bytes()
    assert raw[tensors["a.weight"]["offset"]:tensors["a.weight"]["offset"] + 48] == torch.ones(12).numpy().tobytes()
    assert data["files"][0]["metadata"] == {"format": "pt"}


def test_inspect_bad_file(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x05" + b"\x00" * 7 + b"{}")
    result = run("inspect", tmp_path / "bad.safetensors")
    assert result.returncode == 1
    assert result.stderr.startswith("safetensors inspect: error: ")
    assert "Traceback" not in result.stderr
    assert run("inspect", tmp_path / "missing.safetensors").returncode == 1


def test_verify(model_file, tmp_path):
    result = run("verify", "--hash", model_file)
    assert result.returncode == 0, result.stdout
    data_start = 8 + int.from_bytes(model_file.read_bytes()[:8], "little")
    assert hashlib.sha256(model_file.read_bytes()[data_start:]).hexdigest() in result.stdout

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(model_file.read_bytes()[:-1])
    result = run("verify", model_file, truncated, tmp_path / "missing.safetensors")
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert "incomplete metadata, file not fully covered" in errors[0]
    assert "missing.safetensors: No such file" in errors[1]
    assert run("verify", "-q", model_file).stdout == ""


def test_verify_directory_without_files(model_file, tmp_path):
    """An empty directory is one problem; the other paths are still verified."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("verify", empty, model_file)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"ok: {model_file} (3 tensors, no checksums recorded)", f"error: {empty}: no .safetensors file or index in this directory"]


def test_convert_matches_save_model(checkpoint, tmp_path):
    path, state = checkpoint
    out = tmp_path / "model.safetensors"
    result = run("convert", path, out)
    assert result.returncode == 0, result.stderr
    # as save_model: the tied weight is written once, the other name goes in the metadata
    expected = {k: v for k, v in state.items() if k != "lm_head.weight"}
    save_file(expected, tmp_path / "expected.safetensors", metadata={"format": "pt", "lm_head.weight": "emb.weight"})
    assert out.read_bytes() == (tmp_path / "expected.safetensors").read_bytes()


def test_convert_sharded_as_transformers(checkpoint, tmp_path):
    path, state = checkpoint
    out = tmp_path / "sharded"
    result = run("convert", path, out, "--max-shard-size", "20KB", "--dtype", "bfloat16")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    # layer.weight (20,000 bytes in BF16) fits the 20 KB limit exactly: shard 1 holds
    # emb.weight, then layer.weight overflows it and starts shard 2, layer.bias shard 3.
    names = sorted(os.listdir(out))
    assert names == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                     "model-00003-of-00003.safetensors", "model.safetensors.index.json"]
    index_text = (out / "model.safetensors.index.json").read_text()
    index = json.loads(index_text)
    assert index_text == json.dumps(index, indent=2, sort_keys=True) + "\n"
    assert index["weight_map"] == {
        "emb.weight": "model-00001-of-00003.safetensors",
        "layer.weight": "model-00002-of-00003.safetensors",
        "layer.bias": "model-00003-of-00003.safetensors",
        "position_ids": "model-00003-of-00003.safetensors",
    }
    assert index["metadata"] == {"total_size": 40 * 2 + 10000 * 2 + 100 * 2 + 7 * 8}
    loaded = {}
    for shard in set(index["weight_map"].values()):
        loaded.update(load_file(out / shard))
    assert loaded["layer.weight"].dtype == torch.bfloat16
    assert torch.equal(loaded["layer.weight"], state["layer.weight"].to(torch.bfloat16))
    assert torch.equal(loaded["position_ids"], state["position_ids"])  # integers are not cast
    assert run("verify", out).returncode == 0
    # inspect reads the index
    data = json.loads(run("inspect", "--json", out / "model.safetensors.index.json").stdout)
    assert len(data["files"]) == 3 and data["bytes"] == index["metadata"]["total_size"]


def test_verify_sharded_problems(checkpoint, tmp_path):
    path, _ = checkpoint
    out = tmp_path / "sharded"
    assert run("convert", path, out, "--max-shard-size", "20KB", "--dtype", "bfloat16").returncode == 0
    index_path = out / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["ghost"] = "model-00001-of-00003.safetensors"   # listed, not in the file
    del index["weight_map"]["layer.bias"]                                # in a file, not listed
    index_path.write_text(json.dumps(index))
    # shard 2 replaced: emb.weight twice, layer.weight gone
    save_file({"emb.weight": torch.zeros(1)}, out / "model-00002-of-00003.safetensors")
    result = run("verify", index_path)
    assert result.returncode == 1
    errors = sorted(line for line in result.stdout.splitlines() if line.startswith("error:"))
    assert len(errors) == 4, result.stdout
    assert any("'ghost' is mapped to model-00001-of-00003.safetensors but is not in that file" in e for e in errors)
    assert any("holds tensor 'layer.bias', which the index does not list" in e for e in errors)
    assert any("'emb.weight' is in 2 shards" in e for e in errors)
    assert any("'layer.weight' is mapped to model-00002-of-00003.safetensors but is not in that file" in e
               for e in errors)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_convert_refuses_code_execution(tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({"weight": torch.zeros(2), "payload": Evil()}, path)
    result = run("convert", path, tmp_path / "out.safetensors")
    assert result.returncode == 1
    assert "refusing to convert" in result.stderr and "weights_only=True" in result.stderr
    assert "pwned" not in result.stdout
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="memory limits measure ASan's shadow and quarantine, not ours (.ci/sanitize.sh)")
def test_convert_larger_than_memory_allowed(tmp_path):
    """384 MiB of tensors converted (cast to bfloat16 and sharded) while the
    process may allocate only 32 MiB beyond what it held once the source was
    opened (a 100 MB shard would not fit): torch.load(mmap=True) maps the file (its pages are page cache,
    not process memory) and the streaming writer holds one tensor at a time.
    RLIMIT_DATA counts every private writable mapping and the heap, so a
    conversion that gathered the tensors (or even one shard of them) fails."""
    source = tmp_path / "big.bin"
    torch.save({f"layers.{i}.weight": torch.full((1024, 2048), float(i)) for i in range(48)}, source)
    assert source.stat().st_size > 384 * 2**20
    script = r"""
import resource, sys
import torch
from safetensors import cli
torch.set_num_threads(1)
state_dict, metadata = cli.load_source(sys.argv[1])
with open("/proc/self/status") as f:
    data = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmData:"))
limit = data + 32 * 2**20
resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
try:
    bytearray(64 * 2**20)
    sys.exit("the allowance is not enforced")
except MemoryError:
    pass
cli.convert_state_dict(state_dict, sys.argv[2], max_shard_size=cli.parse_size("100MB"), dtype="bfloat16")
print("ok")
"""
    out = tmp_path / "out"
    # A fixed mmap threshold: glibc otherwise raises it after the first free and then keeps
    # a varying number of freed 4 MiB blocks on its heap (measured: 4 to 48 MiB from run to
    # run), which would make the limit test the allocator's caching rather than the writer.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    result = subprocess.run([sys.executable, "-c", script, str(source), str(out)], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 3  # 192 MiB of BF16 in 100 MB shards
    assert index["metadata"]["total_size"] == 48 * 1024 * 2048 * 2
    shard = out / index["weight_map"]["layers.47.weight"]
    with safe_open(shard, "pt") as f:
        assert f.get_slice("layers.47.weight")[0, :2].tolist() == [47.0, 47.0]
    os.unlink(source)


def test_diff(model_file, tmp_path):
    result = run("diff", model_file, model_file)
    assert result.returncode == 0 and "no differences (3 tensors compared)" in result.stdout
    other = tmp_path / "other.safetensors"
    save_file({"b": torch.arange(5), "a.weight": torch.ones(4, 3) + 0.5, "d": torch.zeros(1),
               "c": torch.zeros(3, dtype=torch.bfloat16)}, other)
    result = run("diff", model_file, other)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"only in {other}: d",
        "values differ: a.weight: 12 of 12 values differ (max abs diff 0.5)",
        "shape differs: c: [2] vs [3]",
    ]
    result = run("diff", model_file, other, "--atol", "0.5")
    assert "a.weight" not in result.stdout
    result = run("diff", "--metadata", model_file, other)
    assert "metadata differs: format: 'pt' vs None" in result.stdout


def test_progress_bar_on_a_terminal(checkpoint, tmp_path):
    pytest.importorskip("tqdm")
    import fcntl
    import pty
    import struct
    import termios

    path, _ = checkpoint
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # tqdm draws nothing at 0 columns
    try:
        result = subprocess.run([sys.executable, "-m", "safetensors", "convert", "-q", str(path),
                                 str(tmp_path / "out.safetensors")], stderr=slave, stdout=subprocess.PIPE)
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO once the terminal is drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert result.returncode == 0
    assert b"\rconvert:" in shown and b"%|" in shown  # tqdm's bar, redrawn in place


def test_convert_safetensors_input(model_file, tmp_path):
    """A .safetensors source is memory-mapped; without --dtype or sharding the copy is identical."""
    out = tmp_path / "copy.safetensors"
    assert run("convert", "-q", model_file, out).returncode == 0
    assert out.read_bytes() == model_file.read_bytes()
    result = run("convert", "-q", model_file, tmp_path / "f32", "--dtype", "float32", "--max-shard-size", "50B")
    assert result.returncode == 0, result.stderr
    assert run("diff", "--no-values", model_file, tmp_path / "f32" / "model.safetensors.index.json").stdout == \
        "dtype differs: c: BF16 vs F32\n"


# --------------------------------------------------------------------------
# failures, escaping, index shard names, every dtype in diff
# --------------------------------------------------------------------------

from safetensors import cli  # noqa: E402
from safetensors._safetensors_c import _dtype_table  # noqa: E402
from safetensors.stream import StreamWriter  # noqa: E402


def _failure_cases(tmp_path, model_file):
    (tmp_path / "bad.safetensors").write_bytes(b"\x05" + b"\x00" * 7 + b"{}")
    (tmp_path / "bad.index.json").write_text("{not json")
    (tmp_path / "a_file").write_text("x")
    with StreamWriter(tmp_path / "f6.safetensors", {"t": ("F6_E2M3", (4,))}) as writer:
        writer.write("t", b"\x01\x02\x03")
    return {
        "convert an invalid file": ["convert", tmp_path / "bad.safetensors", tmp_path / "o.safetensors"],
        "convert a missing file": ["convert", tmp_path / "missing.safetensors", tmp_path / "o.safetensors"],
        "convert F6 (no torch type)": ["convert", tmp_path / "f6.safetensors", tmp_path / "o.safetensors"],
        "convert into a missing folder": ["convert", model_file, tmp_path / "missing" / "o.safetensors"],
        "convert shards into a file": ["convert", model_file, tmp_path / "a_file", "--max-shard-size", "1KB"],
        "inspect a bad index": ["inspect", tmp_path / "bad.index.json"],
        "inspect a folder": ["inspect", tmp_path],
        "diff an invalid file": ["diff", model_file, tmp_path / "bad.safetensors"],
        "diff a missing file": ["diff", tmp_path / "missing.safetensors", model_file],
    }


@pytest.mark.parametrize("case", ["convert an invalid file", "convert a missing file", "convert F6 (no torch type)",
                                  "convert into a missing folder", "convert shards into a file",
                                  "inspect a bad index", "inspect a folder", "diff an invalid file",
                                  "diff a missing file"])
def test_failure_is_one_line(case, tmp_path, model_file, capsys):
    """Every failure caused by the input is one line on stderr and EXIT_FAILED, never a traceback
    (an exception escaping main would fail this test)."""
    argv = _failure_cases(tmp_path, model_file)[case]
    assert cli.main([str(a) for a in argv]) == cli.EXIT_FAILED == 1
    err = capsys.readouterr().err
    assert err.startswith(f"safetensors {argv[0]}: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "o.safetensors").exists()


def test_failure_is_one_line_as_a_program(tmp_path, model_file):
    result = run("convert", model_file, tmp_path / "missing" / "o.safetensors")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"safetensors convert: error: {tmp_path / 'missing' / 'o.safetensors'}: " \
                            "No such file or directory\n"


def test_printable():
    assert cli.printable("layers.0.weight") == "layers.0.weight"
    assert cli.printable("poids_é_权重") == "poids_é_权重"  # letters are kept
    assert cli.printable("a\nb\rc\td\x1b[31me\x7f\u202ef\udcff") == "a\\nb\\rc\\td\\x1b[31me\\x7f\\u202ef\\udcff"
    assert cli.printable(cli.printable("x\x1by")) == "x\\x1by"  # idempotent


EVIL = "w\nok: forged line\x1b[2J\x1b]0;title\x07"


def test_names_are_printed_escaped(tmp_path):
    """A tensor name, a metadata value or a path cannot forge output lines or reach the terminal raw."""
    folder = tmp_path / "dir\x1b[31m"
    folder.mkdir()
    a, b = folder / "a.safetensors", folder / "b.safetensors"
    save_file({EVIL: torch.zeros(2), "é": torch.zeros(1)}, a, metadata={"k\x1b": "v\nforged: x"})
    save_file({EVIL: torch.ones(2), "é": torch.zeros(1)}, b)
    for argv in (["inspect", a], ["diff", "--metadata", a, b], ["verify", a, folder / "bad\nname.safetensors"]):
        result = run(*argv)
        assert "\x1b" not in result.stdout + result.stderr and "\x07" not in result.stdout, argv
        assert not any(line.startswith("ok: forged") for line in result.stdout.splitlines()), argv
        assert "Traceback" not in result.stderr
    result = run("inspect", a)
    assert "w\\nok: forged line\\x1b[2J\\x1b]0;title\\x07" in result.stdout
    assert "  k\\x1b: v\\nforged: x" in result.stdout.splitlines()
    assert "é" in result.stdout and "dir\\x1b[31m" in result.stdout
    result = run("diff", a, b)
    assert result.stdout.splitlines() == [
        "values differ: w\\nok: forged line\\x1b[2J\\x1b]0;title\\x07: 2 of 2 values differ (max abs diff 1)"]
    # JSON output carries the exact names, and stays valid JSON
    data = json.loads(run("inspect", "--json", a).stdout)
    assert {t["name"] for t in data["files"][0]["tensors"]} == {EVIL, "é"}
    assert data["files"][0]["metadata"] == {"k\x1b": "v\nforged: x"}


@pytest.fixture
def escaping_index(tmp_path):
    """model/ holds an index whose shards try to leave the folder; outside.safetensors is a valid file
    the index must not reach."""
    save_file({"secret": torch.arange(3)}, tmp_path / "outside.safetensors")
    model = tmp_path / "model"
    model.mkdir()
    save_file({"w": torch.zeros(2)}, model / "inside.safetensors")
    os.symlink(tmp_path / "outside.safetensors", model / "link.safetensors")
    os.symlink(tmp_path, model / "up")

    def index(shard):
        path = model / "model.safetensors.index.json"
        path.write_text(json.dumps({"weight_map": {"w": "inside.safetensors", "secret": shard}}))
        return path
    return index, str(tmp_path / "outside.safetensors")


@pytest.mark.parametrize("command", ["inspect", "diff", "verify"])
@pytest.mark.parametrize("shard", ["../outside.safetensors", "ABSOLUTE", "link.safetensors",
                                   "up/outside.safetensors", "../../../../../../../etc/passwd", "sub/../../x"])
def test_index_shards_stay_in_the_index_folder(escaping_index, command, shard, capsys):
    index, outside = escaping_index
    shard = outside if shard == "ABSOLUTE" else shard
    path = str(index(shard))
    argv = {"inspect": ["inspect", path], "diff": ["diff", path, path], "verify": ["verify", path]}[command]
    assert cli.main(argv) == cli.EXIT_FAILED
    out, err = capsys.readouterr()
    message = f"shard name {shard!r} leads outside the index's folder: refused"
    assert message in (out if command == "verify" else err)
    assert "secret" not in out


def test_index_shards_inside_the_folder(tmp_path):
    """Sub-folders, links within the folder, and the huggingface_hub cache layout (index and shards
    are links to ../../blobs/<hash>) are inside."""
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    save_file({"a": torch.zeros(2)}, blobs / "1111")
    save_file({"b": torch.ones(2)}, blobs / "2222")
    (blobs / "3333").write_text(json.dumps({"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}))
    for name, blob in [("model-1.safetensors", "1111"), ("model-2.safetensors", "2222"),
                       ("model.safetensors.index.json", "3333")]:
        os.symlink(os.path.join("..", "..", "blobs", blob), snapshot / name)
    index = snapshot / "model.safetensors.index.json"
    assert run("verify", index).returncode == 0
    assert json.loads(run("inspect", "--json", index).stdout)["parameters"] == 4
    assert run("diff", index, index).returncode == 0

    (tmp_path / "plain" / "sub").mkdir(parents=True)
    save_file({"a": torch.zeros(2)}, tmp_path / "plain" / "sub" / "a.safetensors")
    os.symlink("sub/a.safetensors", tmp_path / "plain" / "b.safetensors")
    index = tmp_path / "plain" / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "sub/a.safetensors"}}))
    assert run("verify", index).returncode == 0
    index.write_text(json.dumps({"weight_map": {"a": "b.safetensors"}, "metadata": [1]}))  # odd metadata: ignored
    result = run("verify", index)
    assert (result.returncode, result.stderr) == (0, "")


_DTYPES = [(code, bits) for code, bits, *_ in _dtype_table()]


@pytest.mark.parametrize("framework", ["pt", "numpy"])
@pytest.mark.parametrize("dtype,bits", _DTYPES, ids=[code for code, _ in _DTYPES])
def test_diff_every_dtype(dtype, bits, framework, tmp_path, monkeypatch, capsys):
    """One file per dtype: diff never raises, finds a one-byte change, and finds none between equal files.
    F4/F6 (no NumPy or torch type) are compared byte for byte."""
    if framework == "numpy":
        monkeypatch.setitem(sys.modules, "torch", None)  # diff then compares with NumPy (and ml_dtypes)
    nbytes = 8 * bits // 8  # 8 values
    paths = []
    for name, data in (("a", bytes(nbytes)), ("b", b"\x01" + bytes(nbytes - 1))):
        paths.append(str(tmp_path / f"{name}.safetensors"))
        with StreamWriter(paths[-1], {"t": (dtype, (2, 4))}) as writer:
            writer.write("t", data)
    assert cli.main(["diff", paths[0], paths[0]]) == cli.EXIT_OK
    assert capsys.readouterr().out == "no differences (1 tensors compared)\n"
    assert cli.main(["diff", paths[0], paths[1]]) == cli.EXIT_FAILED
    out, err = capsys.readouterr()
    if bits < 8:
        assert out == f"values differ: t: 1 of {nbytes} bytes differ ({dtype}, compared byte for byte)\n"
    else:
        assert out.startswith("values differ: t: 1 of 8 values differ"), out
    assert err == ""


def test_diff_without_a_type_for_the_dtype(tmp_path):
    """NumPy without ml_dtypes has no BF16: diff compares those tensors byte for byte."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"t": torch.zeros(4, dtype=torch.bfloat16)}, a)
    save_file({"t": torch.tensor([0, 1, 0, 2], dtype=torch.bfloat16)}, b)  # 1.0 is 80 3f, 2.0 is 00 40
    script = ("import sys; sys.modules['torch'] = sys.modules['ml_dtypes'] = None; "
              "from safetensors.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", script, "diff", str(a), str(b)], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout == "values differ: t: 3 of 8 bytes differ (BF16, compared byte for byte)\n"
