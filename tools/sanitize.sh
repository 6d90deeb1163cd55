#!/usr/bin/env bash
# Runs the test suite against an AddressSanitizer + UBSan build of fastdense._kernels.
#
#   tools/sanitize.sh                 # the whole suite (tests/)
#   tools/sanitize.sh tests/test_validation.py -k nan   # any pytest arguments
#
# Builds the extension in place with FASTDENSE_SANITIZE=1 (see setup.py), runs pytest with the
# ASan runtime preloaded (a sanitized extension loaded into an uninstrumented python needs the
# runtime first in the library list), then ALWAYS rebuilds the normal extension, so the checkout
# is not left with a sanitizer build. While it runs, other processes importing fastdense from this
# checkout without the preload fail, so run it on a quiet checkout. Exit status: pytest's.
#
# ASAN_OPTIONS=detect_leaks=0: CPython keeps interned objects and module state alive at exit by
# design, which LeakSanitizer would report as leaks (tests/test_memory.py checks growth instead).
# allocator_may_return_null=1: a huge malloc returns NULL as glibc's does (libhdf5 asks for one
# when tests/test_saving.py feeds it corrupted files, and handles the NULL) instead of aborting.
# PYTHONMALLOC=malloc: bypass pymalloc's arenas so ASan sees every Python allocation.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
CC=${CC:-gcc}
export CC

rebuild_normal() {
    echo "== tools/sanitize.sh: rebuilding the normal extension" >&2
    CYTHON_FORCE_REGEN=1 FASTDENSE_SANITIZE=0 FASTDENSE_DEBUG=0 \
        "$PYTHON" setup.py -q build_ext --inplace --force >/dev/null
}
trap rebuild_normal EXIT

libasan=$("$CC" -print-file-name=libasan.so)
if [ ! -e "$libasan" ] || [ "$libasan" = "libasan.so" ]; then
    echo "tools/sanitize.sh: $CC has no libasan.so (install libasan / gcc's sanitizer runtime)" >&2
    exit 2
fi

# libstdc++ is preloaded too: ASan resolves its __cxa_throw interceptor at start-up, and a C++
# library loaded later (matplotlib's ft2font, via pybind11) would otherwise abort on its first throw
# with "CHECK failed: asan_interceptors.cpp ... real___cxa_throw".
preload="$libasan"
libstdcxx=$("$CC" -print-file-name=libstdc++.so)
[ "$libstdcxx" = "libstdc++.so" ] || preload="$preload $libstdcxx"

echo "== tools/sanitize.sh: building with FASTDENSE_SANITIZE=1 ($CC, preload $preload)" >&2
CYTHON_FORCE_REGEN=1 FASTDENSE_SANITIZE=1 "$PYTHON" setup.py -q build_ext --inplace --force >/dev/null

# --capture=sys: pytest then captures Python's sys.stdout/sys.stderr only, not fd 2, so a
# sanitizer report (written straight to fd 2 before the process stops) reaches the terminal
# instead of dying with pytest's capture file. Extra UBSAN_OPTIONS/ASAN_OPTIONS from the caller
# are appended and win, e.g. UBSAN_OPTIONS=halt_on_error=0 to list every UBSan finding in one run.
out=$(mktemp "${TMPDIR:-/tmp}/fastdense-sanitize.XXXXXX")
status=0
LD_PRELOAD="$preload" \
ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
PYTHONMALLOC=malloc \
    "$PYTHON" -m pytest -p no:cacheprovider --capture=sys -q "${@:-tests}" 2>&1 | tee "$out" \
    || status=$?
# With halt_on_error=0 UBSan reports and carries on, so the exit status alone can be 0.
reports=$(grep -c -E "runtime error:|ERROR: AddressSanitizer" "$out" || true)
rm -f "$out"
echo "== tools/sanitize.sh: pytest exit status $status, $reports sanitizer report(s)" >&2
[ "$reports" -eq 0 ] || [ "$status" -ne 0 ] || status=1
exit "$status"
