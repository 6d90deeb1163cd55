"""Build logic only: the compiled kernels. Metadata lives in pyproject.toml.

Environment switches:
  FASTDENSE_DEBUG=1     bounds/wraparound checks on, -O0 -g (run the test-suite with it too)
  FASTDENSE_ANNOTATE=1  write Cython's HTML annotation next to the .pyx
  FASTDENSE_SANITIZE=1  build with AddressSanitizer + UBSan (see tools/sanitize.sh)
"""
import glob
import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTDENSE_DEBUG", "0") == "1"
SANITIZE = os.environ.get("FASTDENSE_SANITIZE", "0") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

# CPython's own flags already carry -O3; appending -O2 would override it. No -march=native and
# no -ffast-math: wheels must run on any x86-64 CPU and keep IEEE NaN/Inf semantics.
extra_compile = []
extra_link = []
if sys.platform == "win32":
    # MSVC: C11 with its atomics (the worker pool); AVX2 intrinsics need no flag. Untested here.
    extra_compile += ["/std:c11", "/experimental:c11atomics"]
else:
    # -ffp-contract=off: no fused multiply-add unless the source asks for one (fmaf, intrinsics),
    # so scalar arithmetic rounds alike on every target (GCC fuses a*b+c on aarch64 by default).
    extra_compile += ["-fno-math-errno", "-ffp-contract=off", "-Wno-unused-function"]
    if DEBUG:
        extra_compile += ["-O0", "-g"]
    # the worker threads are pthreads (src/fastdense/csrc/fd_threads.c)
    extra_compile.append("-pthread")
    extra_link.append("-pthread")
    if SANITIZE:
        extra_compile += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
        extra_link += ["-fsanitize=address,undefined"]

# The kinds' codes (activations, losses, ...) are declared once, in src/fastdense/_kinds.py; the
# enums the kernels include (_kinds.pxi, not committed) are generated from it here.
import runpy  # noqa: E402

runpy.run_path("src/fastdense/_kinds.py")["write_pxi"]("src/fastdense/_kinds.pxi")

# The C kernels, one unit per concern (src/fastdense/csrc/*.c, declared in _simd.h), compiled and
# linked into the extension beside the Cython module.
extensions = [
    Extension(
        "fastdense._kernels",
        ["src/fastdense/_kernels.pyx", *sorted(glob.glob("src/fastdense/csrc/*.c"))],
        include_dirs=["src/fastdense"],
        depends=["src/fastdense/_simd.h", *sorted(glob.glob("src/fastdense/csrc/*.h"))],
        extra_compile_args=extra_compile,
        extra_link_args=extra_link,
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=os.environ.get("FASTDENSE_ANNOTATE", "0") == "1",
    ),
)
