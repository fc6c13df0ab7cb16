"""The extension declares Py_MOD_PER_INTERPRETER_GIL_SUPPORTED (module.c): it
must import and work in an isolated sub-interpreter (its own GIL, extension
checks on), where a module with process-wide Python state would be refused or
crash. CPython 3.13 and later (the matrix stage of 3.13 runs it). NumPy and
torch do not load in such interpreters (nor does safe_open, which imports its
framework at open), so the checks use deserialize, which needs neither.
"""

import subprocess
import sys
import textwrap

import pytest

# 3.12 has them too, but its isolated interpreters abort in the standard
# library alone (3.12.1: `import hashlib` or `import http.client` there ends in
# "free(): invalid pointer"), so the check starts at 3.13.
if sys.version_info < (3, 13):
    pytest.skip("isolated sub-interpreters that load the standard library need CPython 3.13+",
                allow_module_level=True)

CHILD = textwrap.dedent(
    """
    import sys
    import _interpreters as interpreters
    code = '''
    import json, struct
    from safetensors import SafetensorError, deserialize
    data = bytes(range(24))
    header = json.dumps({"__metadata__": {"k": "v"},
                         "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                         "b": {"dtype": "U8", "shape": [4], "data_offsets": [24, 28]}}).encode()
    header += b" " * (-len(header) % 8)
    blob = struct.pack("<Q", len(header)) + header + data + data[:4]
    names = [name for name, _ in deserialize(blob)]
    assert names == ["a", "b"], names
    assert dict(deserialize(blob))["a"]["data"] == data
    try:
        deserialize(b"junk")
    except SafetensorError:
        pass
    else:
        raise AssertionError("junk was accepted")
    '''
    for _ in range(2):   # a second interpreter: the module's state is per interpreter
        interp = interpreters.create()
        try:
            failure = interpreters.run_string(interp, code)
        finally:
            interpreters.destroy(interp)
        if failure is not None:
            raise SystemExit(f"sub-interpreter failed: {failure}")
    print("ok")
    """
)


def test_works_in_isolated_subinterpreters():
    result = subprocess.run([sys.executable, "-c", CHILD],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr
