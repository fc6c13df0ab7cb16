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
