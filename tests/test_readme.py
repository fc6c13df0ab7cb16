"""The README's promises: a torch and a NumPy example (tests/test_docs_examples.py runs them,
the torch one with NumPy unimportable), and every `make TARGET` it names is a Makefile target.
"""
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
README = os.path.join(ROOT, "README.md")


def readme_text():
    with open(README, encoding="utf-8") as f:
        return f.read()


def python_blocks():
    return re.findall(r"^```python\n(.*?)^```", readme_text(), re.S | re.M)


def test_readme_has_a_torch_and_a_numpy_example():
    codes = python_blocks()
    assert any("import torch" in c and "numpy" not in c for c in codes)
    assert any("import numpy" in c and "torch" not in c for c in codes)


def test_readme_make_targets_exist():
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        rules = re.findall(r"^([a-z][a-z0-9 -]*):", f.read(), re.M)
    targets = {name for rule in rules for name in rule.split()}
    mentioned = set(re.findall(r"`make ([a-z][a-z0-9-]*)", readme_text()))
    mentioned |= set(re.findall(r"^make ([a-z][a-z0-9-]*)", readme_text(), re.M))
    assert {"bench", "test"} <= mentioned
    assert mentioned <= targets, f"README names make targets the Makefile lacks: {mentioned - targets}"
