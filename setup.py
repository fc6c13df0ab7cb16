"""Builds the one extension, safetensors._safetensors_c, from csrc/.

Knobs (environment variables, "1" to enable):
  SAFETENSORS_SANITIZE  ASan + UBSan, -O0 -g3 (run with LD_PRELOAD of libasan: .ci/sanitize.sh)
  SAFETENSORS_DEBUG     -O0 -g3, for a debugger. The C code has no assert(): every
                        invariant that input can break is checked in all builds and
                        reported as an error; NDEBUG is undefined, so an assert() added for
                        a developer fires in this build.
  SAFETENSORS_WERROR    warnings are errors (`make test` and `make ci` build with it)
"""
import glob
import os
import re

import numpy
from setuptools import Extension, setup


def flag(name):
    return os.environ.get(name, "") not in ("", "0")


core = sorted(glob.glob("csrc/core/*.c"))
binding = sorted(glob.glob("csrc/binding/*.c"))
compile_args = ["-std=c11", "-pthread", "-Wall", "-Wextra", "-Wno-unused-parameter",
                "-Wno-missing-field-initializers", "-fvisibility=hidden"]
link_args = ["-pthread"]

def project_version():
    """pyproject.toml's [project].version, the one place the version is written
    (the extension's __version__ is compiled from it). A regex, not tomllib,
    which Python 3.10 lacks."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyproject.toml"),
              encoding="utf-8") as f:
        return re.search(r'^version = "([^"]+)"$', f.read(), re.M).group(1)


macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
          ("ST_VERSION", '"%s"' % project_version())]

if flag("SAFETENSORS_DEBUG") or flag("SAFETENSORS_SANITIZE"):
    compile_args += ["-O0", "-g3", "-UNDEBUG"]
else:
    compile_args += ["-O2"]
if flag("SAFETENSORS_SANITIZE"):
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
           "-fno-sanitize-recover=undefined"]
    compile_args += san
    link_args += san
if flag("SAFETENSORS_WERROR"):
    compile_args += ["-Werror"]

setup(
    ext_modules=[
        Extension(
            "safetensors._safetensors_c",
            sources=core + binding,
            depends=glob.glob("csrc/core/*.h") + glob.glob("csrc/binding/*.h"),
            include_dirs=["csrc/core", "csrc/binding", numpy.get_include()],
            define_macros=macros,
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ]
)
