"""Every public module imports on its own, first, in a fresh interpreter.

The other tests share one interpreter and import ``safetensors.torch`` early,
so an import cycle between the package's modules (one that only breaks when
a particular module is imported first) would go unseen there.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

# module -> the framework it needs (skipped where that is not installed).
MODULES = {
    "safetensors": None,
    "safetensors.distributed": "torch",
    "safetensors.torch": "torch",
    "safetensors.remote": None,
    "safetensors.numpy": "numpy",
    "safetensors.cli": None,
    "safetensors.stream": None,
}


@pytest.mark.parametrize("module", list(MODULES))
def test_module_imports_first_in_a_fresh_interpreter(module):
    framework = MODULES[module]
    if framework is not None and importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    run = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"import {module} failed:\n{run.stderr[-3000:]}"


# Stand-ins for jax and paddle (not installed in the main test venv): enough
# for the conversions of safetensors.flax and safetensors.paddle on the CPU.
_FAKE_FRAMEWORKS = {
    "jax.py": "def device_put(array):\n    return ('jax', array.tolist())\n",
    "paddle.py": (
        "import types\n"
        "class Tensor:\n"
        "    def __init__(self, capsule):\n        self.capsule = capsule\n"
        "    def to(self, place):\n        return ('paddle', place)\n"
        "base = types.SimpleNamespace(core=types.SimpleNamespace(from_dlpack=lambda capsule: capsule))\n"
    ),
}

_FAKE_CHECK = """
import sys
import numpy as np
import safetensors
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

path = sys.argv[1] + "/t.safetensors"
save_file({"a": np.arange(3, dtype=np.float32)}, path)
assert "safetensors.flax" not in sys.modules and "jax" not in sys.modules
with safe_open(path, "jax") as f:   # only `safetensors` imported: the package's importer runs
    assert f.get_tensor("a") == ("jax", [0.0, 1.0, 2.0]), f.get_tensor("a")
assert "safetensors.flax" in sys.modules and "jax" in sys.modules
with safe_open(path, "paddle", device="cuda:1") as f:   # the device naming paddle registered
    assert f.get_tensor("a") == ("paddle", "gpu:1"), f.get_tensor("a")
called = []
safetensors._safetensors_c._set_framework_importer(called.append)
try:
    safe_open(path, "mlx")
except SafetensorError as e:
    assert str(e) == "framework mlx has no converter registered (importing safetensors.mlx registers it)", e
else:
    raise AssertionError("no error for a framework without a converter")
assert called == ["mlx"], called
print("ok")
"""


def test_framework_converters_are_registered_not_imported_by_c(tmp_path):
    # The extension imports no module of the package: safetensors/__init__.py
    # registers the importer and each framework module its converter.
    for name, text in _FAKE_FRAMEWORKS.items():
        (tmp_path / name).write_text(text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", _FAKE_CHECK, str(tmp_path)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
