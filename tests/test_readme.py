"""The README's examples run as written, so they cannot rot.

Each ```python block of README.md runs as a script in a fresh process, in an empty
temporary directory. A block that imports torch is a torch user's example: it runs with
NumPy made unimportable, proving the README's claim that torch users do not need NumPy.
Every `make TARGET` the README mentions must be a target of the Makefile.
"""
import os
import re
import subprocess
import sys

import pytest

import safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
README = os.path.join(ROOT, "README.md")

# Runs the block as __main__ with `import numpy` failing as it would on a machine without it.
WITHOUT_NUMPY = ("import runpy, sys; sys.modules['numpy'] = None; "
                 "runpy.run_path(sys.argv[1], run_name='__main__')")


def readme_text():
    with open(README, encoding="utf-8") as f:
        return f.read()


def python_blocks():
    blocks = re.findall(r"^```python\n(.*?)^```", readme_text(), re.S | re.M)
    return [pytest.param(code, id=f"block{i}") for i, code in enumerate(blocks, 1)]


def test_readme_has_a_torch_and_a_numpy_example():
    codes = [p.values[0] for p in python_blocks()]
    assert any("import torch" in c and "numpy" not in c for c in codes)
    assert any("import numpy" in c and "torch" not in c for c in codes)


@pytest.mark.parametrize("code", python_blocks())
def test_readme_example_runs(code, tmp_path):
    uses_torch = re.search(r"^import torch|^from safetensors.torch", code, re.M)
    if uses_torch:
        pytest.importorskip("torch")
    if re.search(r"^import numpy|^from safetensors.numpy", code, re.M):
        pytest.importorskip("numpy")
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ)
    # the package under test, wherever it is imported from (in-tree build, or installed)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(safetensors.__file__))
    cmd = [sys.executable, "-c", WITHOUT_NUMPY, str(script)] if uses_torch else \
        [sys.executable, str(script)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"README example failed:\n{code}\n--- stderr:\n{proc.stderr}"


def test_readme_make_targets_exist():
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        rules = re.findall(r"^([a-z][a-z0-9 -]*):", f.read(), re.M)
    targets = {name for rule in rules for name in rule.split()}
    mentioned = set(re.findall(r"`make ([a-z][a-z0-9-]*)", readme_text()))
    mentioned |= set(re.findall(r"^make ([a-z][a-z0-9-]*)", readme_text(), re.M))
    assert {"bench", "test"} <= mentioned
    assert mentioned <= targets, f"README names make targets the Makefile lacks: {mentioned - targets}"
