"""The type stubs (safetensors/*.pyi) checked with mypy (issue 9): a sample of
user code must pass, a sample with mistakes must be reported line by line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is not installed (CI installs it)")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(__file__).resolve().parent / "typing"


def run_mypy(sample: Path, cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MYPYPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--show-error-codes", "--cache-dir", str(cache),
         "--no-color-output", str(sample)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_good_sample_type_checks(tmp_path):
    result = run_mypy(SAMPLES / "good.py", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bad_sample_reports_every_mistake(tmp_path):
    sample = SAMPLES / "bad.py"
    expected = {i for i, line in enumerate(sample.read_text().splitlines(), 1) if "# E:" in line}
    assert len(expected) >= 10
    result = run_mypy(sample, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    reported = {int(m.group(1)) for m in re.finditer(r"bad\.py:(\d+): error:", result.stdout)}
    assert reported == expected, result.stdout
