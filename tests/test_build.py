"""The portable build: without x86 SIMD (another architecture, or FASTDENSE_NO_SIMD) the header
must still compile; the kernels then never call the AVX2 code (fd_have_avx2_fma() is 0)."""
import pathlib
import shutil
import subprocess

import pytest

HEADER = pathlib.Path(__file__).resolve().parents[1] / "src" / "fastdense" / "_simd.h"


@pytest.mark.parametrize("flags", [["-DFASTDENSE_NO_SIMD"], []], ids=["no-simd", "x86"])
def test_simd_header_compiles_with_and_without_x86_simd(flags):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on this machine (the package's own build needs one)")
    result = subprocess.run([cc, "-fsyntax-only", "-Wall", "-Werror", "-pthread", *flags,
                             "-x", "c", str(HEADER)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
