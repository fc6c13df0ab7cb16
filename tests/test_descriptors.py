"""Open handles keep no descriptor each (issue 19): st_file's descriptors live
in a small process-wide cache (docs/design.md, "Descriptors"), so thousands of
handles open and read under a low RLIMIT_NOFILE, as upstream's mmap path does.
A handle whose descriptor was closed reopens the file by path and checks it is
still the file it opened.

Each case runs in a subprocess: it lowers the descriptor limit of the process.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

HANDLES = 3000
LIMIT = 1024


def run_py(code, timeout=300):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


FRAMEWORKS = ["np"] + (["pt"] if importlib.util.find_spec("torch") else [])


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_thousands_of_handles_under_a_low_limit(tmp_path, framework, backend):
    p = str(tmp_path / "a.safetensors")
    proc = run_py(f"""
        import resource
        import numpy as np
        from safetensors import safe_open
        from safetensors.numpy import save_file
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, hard))
        # "big" is 64 KiB or more: on mmap it is a private mapping of its own
        big = np.arange(1 << 15, dtype=np.float32).reshape(256, 128)
        small = np.arange(12, dtype=np.int16).reshape(3, 4)
        save_file({{"big": big, "small": small}}, {p!r})
        as_np = (lambda t: t.numpy()) if {framework!r} == "pt" else (lambda t: t)
        handles = [safe_open({p!r}, {framework!r}, backend={backend!r}) for _ in range({HANDLES})]
        for i, f in enumerate(handles):
            assert np.array_equal(as_np(f.get_tensor("big")), big), i
            assert np.array_equal(as_np(f.get_tensor("small")), small), i
            assert np.array_equal(as_np(f.get_slice("big")[i % 256:, ::3]), big[i % 256:, ::3]), i
            assert np.array_equal(as_np(f.get_slice("small")[1:, 2]), small[1:, 2]), i
        print("OK", len(handles))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["OK", str(HANDLES)]


@pytest.mark.parametrize("change", ["replace", "delete"])
def test_file_changed_under_an_evicted_descriptor(tmp_path, change):
    """A handle whose descriptor was evicted (200 handles opened after it)
    and whose file was then replaced (a new inode of the same size) or
    deleted: pread raises a clear error naming what happened, mmap keeps
    serving the file it opened from its whole-file mapping. Never the new
    file's data."""
    p, other = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    proc = run_py(f"""
        import os
        import numpy as np
        from safetensors import safe_open, SafetensorError
        from safetensors.numpy import save_file
        old = {{"big": np.full((128, 128), 1.0, np.float32), "small": np.arange(6, dtype=np.int8)}}
        new = {{"big": np.full((128, 128), 2.0, np.float32), "small": np.zeros(6, np.int8)}}
        save_file(old, {p!r})
        save_file(old, {other!r})
        handles = {{b: safe_open({p!r}, "np", backend=b) for b in ("mmap", "pread")}}
        crowd = [safe_open({other!r}, "np", backend=b) for b in ("mmap", "pread") for _ in range(100)]
        for f in crowd:                      # they are all used after the two
            f.get_tensor("small")
        if {change!r} == "replace":
            save_file(new, {p!r} + ".new")
            os.replace({p!r} + ".new", {p!r})
        else:
            os.unlink({p!r})
        f = handles["mmap"]
        for k in old:
            assert np.array_equal(f.get_tensor(k), old[k]), k
        assert np.array_equal(f.get_slice("big")[3:], old["big"][3:])
        f = handles["pread"]
        for read in (lambda: f.get_tensor("small"), lambda: f.get_slice("big")[1:]):
            try:
                got = read()
            except SafetensorError as e:
                assert isinstance(e, OSError), type(e)
                assert "changed after it was opened" in str(e), str(e)
                print("ERROR")
            else:
                print("DATA", got.ravel()[:4])
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ERROR", "ERROR"], proc.stdout
