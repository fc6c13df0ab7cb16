"""Every public module imports on its own, first, in a fresh interpreter.

The other tests share one interpreter and import ``safetensors.torch`` early,
so an import cycle between the package's modules (one that only breaks when
a particular module is imported first) would go unseen there.
"""

import importlib.util
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
