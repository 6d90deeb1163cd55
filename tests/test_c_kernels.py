"""The C kernels' own unit tests (tests/c/test_kernels.c) on every kernel path this machine can
build: x86-64 with the best kernels the CPU has (AVX-512 or AVX2), the same binary capped at AVX2
and forced onto the portable kernels, a
-DFASTDENSE_NO_SIMD build, and an aarch64 build run under qemu-user (the path ARM users get), whose
compiled kernels must also use NEON's vector FMA (auto-vectorised from the portable C)."""
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "c" / "test_kernels.c"
INCLUDE = ROOT / "src" / "fastdense"
# the kernels' units, compiled with the test as the extension compiles them (setup.py)
KERNELS = sorted(str(p) for p in (INCLUDE / "csrc").glob("*.c"))
GEMM = INCLUDE / "csrc" / "fd_gemm.c"  # the micro-kernels, whose assembly the tests inspect
# The flags that matter from the extension's build (setup.py, CPython's -O3), so that the test
# binary compiles the kernels the way the extension does.
FLAGS = ["-O3", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function",
         "-ffp-contract=off", "-fno-math-errno", "-pthread", f"-I{INCLUDE}"]
X86 = platform.machine() in ("x86_64", "AMD64")


def _compile(cc, out, *extra):
    result = subprocess.run([cc, *FLAGS, *extra, str(SOURCE), *KERNELS, "-o", str(out), "-lm"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _run(cmd):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed, failed = map(int, re.search(r"(\d+) passed, (\d+) failed", result.stdout).groups())
    assert failed == 0 and passed > 100, result.stdout
    return result.stdout


@pytest.fixture(scope="module")
def cc():
    found = shutil.which("cc") or shutil.which("gcc")
    if found is None:
        pytest.skip("no C compiler on this machine (the package's own build needs one)")
    return found


@pytest.mark.parametrize("variant", ["default", "avx2-at-run-time", "portable-at-run-time",
                                     "no-simd-build"])
def test_c_kernels_native(cc, tmp_path, variant):
    exe = tmp_path / "test_kernels"
    _compile(cc, exe, *(["-DFASTDENSE_NO_SIMD"] if variant == "no-simd-build" else []))
    flag = {"portable-at-run-time": ["--portable"], "avx2-at-run-time": ["--avx2"]}
    out = _run([str(exe)] + flag.get(variant, []))
    if variant in ("portable-at-run-time", "no-simd-build"):
        assert "kernels: portable" in out
    elif variant == "avx2-at-run-time" and X86:
        assert "kernels: avx2" in out


def test_c_kernels_on_aarch64_under_qemu(tmp_path):
    cross, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if cross is None or qemu is None:
        pytest.skip("needs gcc-aarch64-linux-gnu and qemu-user (Debian packages; .ci/run "
                    "installs them)")
    exe = tmp_path / "test_kernels_aarch64"
    _compile(cross, exe, "-static")
    assert "kernels: portable" in _run([qemu, str(exe)])
    asm = tmp_path / "kernels_aarch64.s"
    subprocess.run([cross, *FLAGS, "-S", str(GEMM), "-o", str(asm)], check=True)
    # the portable tile's column loop, vectorised: 4-lane fused multiply-adds
    assert len(re.findall(r"\bfmla\s+v\d+\.4s", asm.read_text())) >= 16


def test_c_kernels_cross_compile_for_windows(tmp_path):
    """The Windows build of the kernels (Win32 threads, the AVX2 kernels and their dispatch),
    compiled and linked by MinGW-w64 (GCC for Windows), with and without x86 SIMD. Not run:
    under wine, MinGW's software fmaf is not fused (docs/design.md), so the binary's own
    reference disagrees with the hardware FMA of the AVX2 kernels."""
    cross = shutil.which("x86_64-w64-mingw32-gcc")
    if cross is None:
        pytest.skip("needs gcc-mingw-w64-x86-64 (a Debian package; .ci/run installs it)")
    for flags in ([], ["-DFASTDENSE_NO_SIMD"]):
        exe = tmp_path / "test_kernels.exe"
        _compile(cross, exe, "-static", *flags)
        assert exe.stat().st_size > 0


@pytest.mark.skipif(not X86, reason="x86-64 only: compiles the AVX2 kernels")
def test_x86_build_has_the_avx2_kernels(cc, tmp_path):
    asm = tmp_path / "kernels_x86.s"
    subprocess.run([cc, *FLAGS, "-S", str(GEMM), "-o", str(asm)], check=True)
    assert "vfmadd" in asm.read_text()
