"""The C core as an installed library: make install into a temporary prefix,
build examples/st_example.c against it with pkg-config (shared and static),
run it on files written by save_file, and check that only the API declared
in st_core.h is exported."""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from safetensors import safe_open
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CC = os.environ.get("CC", "cc")
# make, the compiler and the example are plain programs: under .ci/sanitize.sh they must not
# inherit the ASan runtime preloaded for the Python extension.
ENV = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS",
                                                         "LSAN_OPTIONS", "PYTHONMALLOC")}


def _pkg_config(prefix, *flags):
    """pkg-config's answer, or the same read from the .pc file where pkg-config is absent."""
    pc_dir = os.path.join(prefix, "lib", "pkgconfig")
    if shutil.which("pkg-config"):
        out = subprocess.run(["pkg-config", *flags, "safetensors-c"], capture_output=True, text=True, check=True,
                             env={**ENV, "PKG_CONFIG_PATH": pc_dir})
        return out.stdout.split()
    fields = {}
    for line in open(os.path.join(pc_dir, "safetensors-c.pc")):
        if "=" in line and ":" not in line.split("=")[0]:
            key, value = line.strip().split("=", 1)
            fields[key] = value
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    expand = lambda s: re.sub(r"\$\{(\w+)\}", lambda m: fields[m.group(1)], s)  # noqa: E731
    words = []
    if "--cflags" in flags:
        words += expand(fields["Cflags"]).split()
    if "--libs" in flags:
        words += expand(fields["Libs"]).split()
    return words


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("prefix"))
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "csrc"), "install", f"PREFIX={prefix}"], check=True,
                   capture_output=True, env=ENV)
    return prefix


def _build(prefix, out, static=False):
    source = os.path.join(ROOT, "examples", "st_example.c")
    if static:
        link = [os.path.join(prefix, "lib", "libsafetensors-c.a"), "-pthread", "-lm"]
    else:
        link = _pkg_config(prefix, "--libs") + [f"-Wl,-rpath,{prefix}/lib"]
    cmd = [CC, "-std=c11", "-Wall", "-Wextra", "-Werror", source, *_pkg_config(prefix, "--cflags"), *link, "-o", out]
    subprocess.run(cmd, check=True, capture_output=True, env=ENV)
    return out


def test_installed_layout(installed):
    lib = os.path.join(installed, "lib")
    header = open(os.path.join(os.path.dirname(__file__), "..", "csrc", "core", "st_core.h")).read()
    major = re.search(r"#define ST_API_VERSION_MAJOR (\d+)", header).group(1)
    minor = re.search(r"#define ST_API_VERSION_MINOR (\d+)", header).group(1)
    assert major == "2"  # 2.0 took st_alloc_fail_after (a test hook) out of the exported API
    for name in ("libsafetensors-c.a", "libsafetensors-c.so", f"libsafetensors-c.so.{major}",
                 f"libsafetensors-c.so.{major}.{minor}", "pkgconfig/safetensors-c.pc"):
        assert os.path.exists(os.path.join(lib, name)), name
    assert os.path.isfile(os.path.join(installed, "include", "safetensors-c", "st_core.h"))
    assert f"Version: {major}.{minor}" in open(os.path.join(lib, "pkgconfig", "safetensors-c.pc")).read()


def test_only_the_public_api_is_exported(installed):
    header = open(os.path.join(ROOT, "csrc", "core", "st_core.h")).read()
    declared = set(re.findall(r"\b(st_[a-z0-9_]+)\(", header))
    nm = subprocess.run(["nm", "-D", "--defined-only", os.path.join(installed, "lib", "libsafetensors-c.so")],
                        capture_output=True, text=True, check=True, env=ENV)
    exported = {line.split()[-1] for line in nm.stdout.splitlines() if line.split()[1] in "TDBRtdbrWV"}
    exported = {name for name in exported if not name.startswith("_")}
    assert exported == declared
    # internal helpers and test hooks stay hidden
    assert not {"st_hash", "st_json_init", "st_alloc_fail_after", "st_file_descriptors"} & exported


@pytest.mark.parametrize("static", [False, True], ids=["shared", "static"])
def test_example_program(installed, tmp_path, static):
    exe = _build(installed, str(tmp_path / "st_example"), static=static)
    path = tmp_path / "model.safetensors"
    save_file({"b": np.arange(5, dtype=np.int64), "a.weight": np.arange(12, dtype=np.float32).reshape(4, 3) / 2},
              path, metadata={"format": "pt"})

    listed = subprocess.run([exe, "list", str(path)], capture_output=True, text=True, check=True, env=ENV)
    assert listed.stdout.splitlines() == ["b I64 [5] 0 40", "a.weight F32 [4, 3] 40 88", "metadata format=pt"]

    read = subprocess.run([exe, "read", str(path), "a.weight"], capture_output=True, text=True, check=True, env=ENV)
    assert read.stdout.strip() == "a.weight F32 [4, 3] 48 bytes: 0 0.5 1 1.5 2 2.5 3 3.5"
    missing = subprocess.run([exe, "read", str(path), "nope"], capture_output=True, text=True, env=ENV)
    assert missing.returncode == 1 and "no tensor named nope" in missing.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:-1])
    broken = subprocess.run([exe, "list", str(bad)], capture_output=True, text=True, env=ENV)
    assert broken.returncode == 1 and "incomplete metadata, file not fully covered (MetadataIncompleteBuffer" in broken.stderr

    written = tmp_path / "written.safetensors"
    subprocess.run([exe, "write", str(written)], capture_output=True, text=True, check=True, env=ENV)
    expected = tmp_path / "expected.safetensors"
    save_file({"weight": np.array([[0.5, 1.5], [-2.0, 4.0]], np.float32), "ids": np.array([7, 8, 9], np.int64)}, expected,
              metadata={"format": "example"})
    assert written.read_bytes() == expected.read_bytes()
    with safe_open(written, "np") as f:
        assert f.get_tensor("ids").tolist() == [7, 8, 9]
