"""The stage scripts on a machine that lacks a system tool (.ci/lib.sh missing_tool): a SKIP
(exit 77) with a note saying how to get it, nothing installed; under CI=true an attempt to
install it with apt-get, and a failure where that cannot work. And .ci/stage.sh's temporary
directory: TMPDIR=build/tmp/NAME, removed after a stage unless it failed.

The scripts run with a PATH of nothing but bash and dirname: no clang, clang-format, apt-get,
sudo or id, so not even the CI=true case can change the machine."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = [(".ci/format.sh", [], "clang-format-14"), (".ci/fuzz.sh", ["1"], "clang")]


def _run_bare(tmp_path, script, args, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        os.symlink(shutil.which(tool, path="/usr/bin:/bin"), bin_dir / tool)
    return subprocess.run([str(bin_dir / "bash"), os.path.join(ROOT, script), *args], capture_output=True,
                          text=True, env={"PATH": str(bin_dir), "HOME": str(tmp_path), **env}, timeout=60)


@pytest.mark.parametrize("script, args, package", MISSING)
def test_a_missing_tool_is_a_skip_with_a_note(tmp_path, script, args, package):
    p = _run_bare(tmp_path, script, args)
    assert p.returncode == 77, p.stdout + p.stderr
    note = [line for line in p.stdout.splitlines() if line.startswith("note: ")]
    assert len(note) == 1 and "missing, stage skipped: `make deps` installs it" in note[0], p.stdout
    assert note[0].endswith(f"(or: sudo apt-get install {package})")


@pytest.mark.parametrize("script, args, package", MISSING)
def test_under_ci_a_missing_tool_is_installed_or_fails(tmp_path, script, args, package):
    p = _run_bare(tmp_path, script, args, CI="true")
    assert p.returncode not in (0, 77), p.stdout + p.stderr
    assert f"missing: installing {package} with apt-get (CI=true)" in p.stdout
    assert "command not found" in p.stderr    # sudo (no id: not known to be root), not on PATH


def test_a_stage_has_its_own_temporary_directory(tmp_path):
    # The system's tools, whatever PATH the suite runs with (the wheels stage's has no awk), and
    # none of the sanitizer stage's preloads (they are for Python, not for awk and sed).
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "STAGE_LOGS": str(tmp_path / "logs"),
           "STAGE_KEEP_GOING": "0"}
    stage = os.path.join(ROOT, ".ci", "stage.sh")
    body = 'echo "note: tmp $TMPDIR"; touch "$TMPDIR/file"; exit {}'
    skipped = subprocess.run([stage, "selftest-tmp", "bash", "-c", body.format(77)], capture_output=True, text=True,
                             env=env, timeout=60)
    assert skipped.returncode == 0, skipped.stdout
    assert skipped.stdout.startswith("[SKIP] selftest-tmp ")
    tmp = skipped.stdout.split("note: tmp ")[1].split()[0]
    assert tmp.endswith(os.path.join("", "build", "tmp", "selftest-tmp")) and not os.path.exists(tmp)

    failed = subprocess.run([stage, "selftest-tmp", "bash", "-c", body.format(3)], capture_output=True, text=True,
                            env=env, timeout=60)
    try:
        assert failed.returncode == 3, failed.stdout
        assert "its temporary files are kept in build/tmp/selftest-tmp" in failed.stdout
        assert os.path.exists(os.path.join(tmp, "file"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
