"""Every code example of README.md and docs/*.md runs as written, so none can rot.

What is run: each fenced block whose language is

* ``python``: the block as a script, ``python example.py``;
* ``sh`` (or ``bash``): the block as a ``bash -e`` script;
* ``console``: a terminal session; its ``$ `` lines are the commands (run as one
  ``bash -e`` script), the other lines are their output, shown for the reader and not
  compared (it holds sizes, digests and timings that differ from run to run).

Other languages are not run: ``c`` blocks are fragments of ``examples/st_example.c`` (which
docs/c-api.md's console block compiles and runs, and tests/test_c_library.py tests), and
``text`` is output, formats and records of measurements.

How: one test per block, in a fresh process, in a temporary directory of the page (blocks of
a page run in page order in the same directory, as a reader following the page would: an
earlier block's files are there for a later one, and selecting one block runs the page's
earlier ones first). The directory holds links to the repository's ``Makefile``, ``csrc`` and
``examples`` (the commands are run from a checkout), and the placeholder files the page says
it works on, made by the page's recipe below (``PLACEHOLDERS``). ``HOME`` is a directory of
the page's, so ``make install PREFIX=$HOME/.local`` installs there; ``PATH`` starts with this
Python's ``bin`` (``python`` and ``safetensors`` are the environment's under test).
docs/remote.md's example runs against moto's S3 and nginx on 127.0.0.1 (tests/remote_servers.py),
with the environment variables it names.

A block that cannot run here says why in an HTML comment right before it, which this test
reports as the skip reason: ``<!-- docs-test: skip (REASON) -->``, or
``<!-- docs-test: needs cuda -->`` (skipped without a CUDA device). ``<!-- docs-test: exit N -->``
says the block's last command exits with status N (``verify`` finding problems, ``diff``
finding differences).
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

import safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PAGES = ["README.md"] + sorted(os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs"))
                               if name.endswith(".md"))
RUN = {"python", "sh", "bash", "console"}
FENCE = re.compile(r"^```([\w-]*)\s*$")
MARKER = re.compile(r"^<!-- docs-test: (.*) -->$")
LINKED = ("Makefile", "csrc", "examples")
BUILDS = re.compile(r"^(\$ )?(make|cc) ", re.M)  # a block that builds C code
SANITIZER_ENV = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "PYTHONMALLOC")
# README's torch example claims torch users need no NumPy: it runs with `import numpy` failing.
WITHOUT_NUMPY = ("import runpy, sys; sys.modules['numpy'] = None; "
                 "runpy.run_path(sys.argv[1], run_name='__main__')")


def blocks(page):
    """[(language, code, marker or None, line)] of a page's fenced blocks, in page order."""
    found, lines, i = [], open(os.path.join(ROOT, page), encoding="utf-8").read().split("\n"), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, before = i, [line for line in lines[:i] if line.strip()]
        marker = MARKER.match(before[-1]) if before else None
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        found.append((m.group(1), "\n".join(lines[i + 1:end]) + "\n", marker and marker.group(1), start + 1))
        i = end + 1
    return found


def runnable(page):
    return [(n, lang, code, marker, line) for n, (lang, code, marker, line) in enumerate(blocks(page))
            if lang in RUN]


CASES = [pytest.param(page, n, id=f"{page}:{line}") for page in PAGES for n, _, _, _, line in runnable(page)]


def test_every_block_has_a_language():
    """An unlabelled block would be neither run nor declared output: every fence says what it holds."""
    unlabelled = [f"{page}:{line}" for page in PAGES for lang, _, _, line in blocks(page) if not lang]
    assert not unlabelled, f"blocks without a language (python, sh, console, c, text): {unlabelled}"


def test_markers_are_known_and_placed():
    """Every marker is one of the three, right before a block that is run (else it would do nothing)."""
    for page in PAGES:
        text = open(os.path.join(ROOT, page), encoding="utf-8").read()
        placed = [(lang, marker, line) for lang, _, marker, line in blocks(page) if marker is not None]
        assert len(placed) == len(re.findall(r"<!-- docs-test:", text)), f"{page}: a marker not before a block"
        for lang, marker, line in placed:
            assert lang in RUN, f"{page}:{line}: a marker on a {lang} block, which is not run"
            assert re.fullmatch(r"skip \(.+\)|needs cuda|exit \d+", marker), f"{page}:{line}: {marker}"


# ---- placeholder files, per page: what each page says it works on -----------------------------

def _cli_model(path, bf16=True):
    """docs/cli.md's model.safetensors: b I64 [5], a.weight F32 [4, 3], c BF16 [2] (docs/c-api.md's: no c)."""
    import numpy as np
    from safetensors.numpy import save_file

    tensors = {"b": np.arange(5, dtype=np.int64), "a.weight": np.arange(12, dtype=np.float32).reshape(4, 3) / 2}
    if bf16:
        import ml_dtypes

        tensors["c"] = np.zeros(2, dtype=ml_dtypes.bfloat16)
    save_file(tensors, path, metadata={"format": "pt"})


def _torch_bin(path):
    """pytorch_model.bin, GPT-2's names (docs/integrity.md reads wte.weight of what it converts);
    without torch none (the blocks that convert it are skipped)."""
    try:
        import torch
    except ModuleNotFoundError:
        return

    torch.save({"wte.weight": torch.randn(16, 8), "h.0.attn.c_attn.weight": torch.randn(8, 24)}, path)


def _shards(folder, count=2):
    """A sharded checkpoint: model-0000K-of-0000N.safetensors and model.safetensors.index.json."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    os.makedirs(folder, exist_ok=True)
    names = ["embed.weight", "layers.0.q_proj.weight", "layers.0.o_proj.weight", "norm.weight"]
    weight_map = {}
    for i, name in enumerate(names):
        shard = f"model-{i % count + 1:05d}-of-{count:05d}.safetensors"
        weight_map[name] = shard
    for k in range(count):
        shard = f"model-{k + 1:05d}-of-{count:05d}.safetensors"
        save_file({n: np.full((8, 4) if n != "norm.weight" else (4,), k, np.float32)
                   for n, s in weight_map.items() if s == shard}, os.path.join(folder, shard))
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)


def _cli(cwd):
    _cli_model("model.safetensors")
    _shards("shards")
    import numpy as np
    from safetensors.numpy import save_file

    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    save_file({"a.weight": a, "c": np.zeros(2, np.float32)}, "a.safetensors")
    save_file({"a.weight": a + 0.5, "c": np.zeros(3, np.float32), "d": np.ones(1, np.float32)}, "b.safetensors")
    _torch_bin("pytorch_model.bin")


def _integrity(cwd):
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"wte.weight": np.ones((8, 4), np.float32), "h.0.attn.c_attn.weight": np.ones((4, 4), np.float32)},
              "model.safetensors", checksum="sha256")
    save_file({"h.0.attn.c_attn.weight": np.ones((4, 4), np.float32)}, "corrupt.safetensors", checksum="sha256")
    with open("corrupt.safetensors", "r+b") as f:    # a flipped byte in the last tensor
        f.seek(-1, os.SEEK_END)
        f.write(b"\x01")
    save_file({"x": np.zeros(3, np.float32)}, "plain.safetensors")
    _torch_bin("pytorch_model.bin")


def _checkpoints(cwd):
    _shards(os.path.join("path", "to", "model"))


def _distributed(cwd):
    _shards(".")


PLACEHOLDERS = {
    os.path.join("docs", "cli.md"): _cli,
    os.path.join("docs", "c-api.md"): lambda cwd: _cli_model("model.safetensors", bf16=False),
    os.path.join("docs", "integrity.md"): _integrity,
    os.path.join("docs", "checkpoints.md"): _checkpoints,
    os.path.join("docs", "distributed.md"): _distributed,
}


def _remote_env(request, tmp_path_factory):
    """docs/remote.md: s3://models/model-00001.safetensors on moto (S3_ENDPOINT_URL, AWS_* credentials)
    and MODEL_URL served by nginx."""
    import numpy as np
    from safetensors.numpy import save, save_file

    moto = request.getfixturevalue("_moto_s3")
    base = request.getfixturevalue("_nginx_base_url")
    if "models" not in [b["Name"] for b in moto.s3.list_buckets()["Buckets"]]:
        moto.s3.create_bucket(Bucket="models")
    moto.s3.put_object(Bucket="models", Key="model-00001.safetensors", Body=save(
        {"lm_head.weight": np.ones((2048, 4), np.float32), "model.norm.weight": np.ones(4, np.float32)}))
    save_file({"w": np.arange(6, dtype=np.float32)}, "model.safetensors")
    root = os.path.realpath(tmp_path_factory.getbasetemp())
    url = f"{base}/{os.path.relpath(os.path.realpath('model.safetensors'), root)}"
    return {"S3_ENDPOINT_URL": moto.endpoint, "MODEL_URL": url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


# ---- running ---------------------------------------------------------------------------------

_pages = {}  # page -> {"dir", "env", "done": set of block numbers run}


def _page_state(page, request, tmp_path_factory):
    state = _pages.get(page)
    if state is None:
        cwd = tmp_path_factory.mktemp(re.sub(r"\W", "-", page))
        for name in LINKED:
            os.symlink(os.path.join(ROOT, name), cwd / name)
        os.makedirs(cwd / "home")
        env = dict(os.environ, HOME=str(cwd / "home"),
                   PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
                   PYTHONPATH=os.path.dirname(os.path.dirname(safetensors.__file__)))
        old = os.getcwd()
        os.chdir(cwd)
        try:
            if page in PLACEHOLDERS:
                PLACEHOLDERS[page](cwd)
            if page == os.path.join("docs", "remote.md"):
                env.update(_remote_env(request, tmp_path_factory))
        finally:
            os.chdir(old)
        state = _pages[page] = {"dir": cwd, "env": env, "done": set()}
    return state


def _skip_reason(lang, code, marker):
    if marker and marker.startswith("skip"):
        return marker[len("skip ("):-1]
    if marker == "needs cuda":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            return "needs a CUDA device"
    if re.search(r"^\s*(import torch|from safetensors\.(torch|stream) )|safetensors convert|framework=\"pt\"",
                 code, re.M):
        pytest.importorskip("torch")
    if BUILDS.search(code) and not (shutil.which("cc") and shutil.which("make")):
        return "needs a C compiler (cc) and make, not on PATH here"
    return None


def _run(page, lang, code, marker, line, state):
    cwd, env = state["dir"], state["env"]
    if lang == "python":
        script = cwd / f"block-{line}.py"
        script.write_text(code, encoding="utf-8")
        torch_only = page == "README.md" and "import torch" in code and "numpy" not in code
        cmd = [sys.executable, "-c", WITHOUT_NUMPY, str(script)] if torch_only else [sys.executable, str(script)]
    else:
        if lang == "console":
            code = "\n".join(cmd[2:] for cmd in code.split("\n") if cmd.startswith("$ ")) + "\n"
        cmd = ["bash", "-e", "-c", code]
        if BUILDS.search(code):  # make, cc and what they build: not under the ASan runtime that
            env = {k: v for k, v in env.items() if k not in SANITIZER_ENV}  # .ci/sanitize.sh preloads
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    expected = int(marker.split()[1]) if marker and marker.startswith("exit") else 0
    assert proc.returncode == expected, (
        f"{page}:{line}: exit status {proc.returncode}, expected {expected}\n{code}\n"
        f"--- stdout:\n{proc.stdout[-3000:]}\n--- stderr:\n{proc.stderr[-3000:]}")


@pytest.mark.parametrize("page, n", CASES)
def test_doc_example(page, n, request, tmp_path_factory):
    todo = {k: (lang, code, marker, line) for k, lang, code, marker, line in runnable(page)}
    lang, code, marker, line = todo[n]
    reason = _skip_reason(lang, code, marker)
    if reason:
        pytest.skip(f"{page}:{line}: {reason}")
    if page == os.path.join("docs", "remote.md"):
        for module in ("s3fs", "moto.server", "flask", "boto3"):
            pytest.importorskip(module, reason=f"{module} is not installed (CI: .ci/remote.sh)")
    state = _page_state(page, request, tmp_path_factory)
    for k in sorted(todo):   # the page's earlier blocks first, as a reader runs them
        if k < n and k not in state["done"] and not _skip_reason(*todo[k][:3]):
            _run(page, *todo[k], state)
            state["done"].add(k)
    _run(page, lang, code, marker, line, state)
    state["done"].add(n)
