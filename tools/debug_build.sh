#!/usr/bin/env bash
# Runs the test suite against a FASTDENSE_DEBUG=1 build of fastdense._kernels: Cython's bounds,
# wraparound and initialized checks on, -O0 -g (see setup.py), so an out-of-range index in a
# kernel raises IndexError instead of reading or writing past a buffer.
#
#   tools/debug_build.sh              # the whole suite (tests/)
#   tools/debug_build.sh tests/test_kernels.py      # any pytest arguments
#
# The .c file is regenerated (CYTHON_FORCE_REGEN=1) because the Cython directives change, and the
# normal extension is ALWAYS rebuilt afterwards. Exit status: pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

rebuild_normal() {
    echo "== tools/debug_build.sh: rebuilding the normal extension" >&2
    CYTHON_FORCE_REGEN=1 FASTDENSE_SANITIZE=0 FASTDENSE_DEBUG=0 \
        "$PYTHON" setup.py -q build_ext --inplace --force >/dev/null
}
trap rebuild_normal EXIT

echo "== tools/debug_build.sh: building with FASTDENSE_DEBUG=1" >&2
CYTHON_FORCE_REGEN=1 FASTDENSE_DEBUG=1 "$PYTHON" setup.py -q build_ext --inplace --force >/dev/null
if ! grep -q "__Pyx_RaiseBufferIndexError" src/fastdense/_kernels.c; then
    echo "tools/debug_build.sh: the generated C has no bounds checks; is FASTDENSE_DEBUG honoured?" >&2
    exit 2
fi

status=0
"$PYTHON" -m pytest -p no:cacheprovider -q "${@:-tests}" || status=$?
echo "== tools/debug_build.sh: pytest exit status $status" >&2
exit "$status"
