# cython: language_level=3
"""Compiled kernels of fastdense.

Design
------
* One call is one unit of arithmetic on buffers the caller hands in: a layer's forward pass, a loss
  and its gradient, an optimizer step, or -- the fast path -- many whole training steps of a network
  (`train_steps`) so that Python is visited once per chunk of batches rather than once per batch.
* Python allocates and validates (`fastdense/_engine.py`); the training kernels never allocate
  (inference over several batches on two threads allocates the second thread's workspace once
  per call; the test-facing `dense_forward` and `dense_backward` their scratch), never touch Python
  objects inside `with nogil:`, and assume what validation guarantees: C-contiguous buffers of one
  float type, finite inputs, labels in range, sizes < 2**31.
* float32 and float64 come from one source through Cython's fused type `floating`.
* float32 products of up to FD_MAX_ROWS rows run on the micro-kernels of `_simd.h`: AVX-512 or
  AVX2/FMA where compiled in and the CPU has it (chosen at run time), else portable C kernels with
  the same arithmetic (same bits); in training, larger ones on the packed GEMM (fd_gemm_packed,
  same contract); the rest (float64, and float32 outside a Trainer) go to the BLAS shipped with
  SciPy (`scipy.linalg.cython_blas`). Our arrays
  are row-major and BLAS is column-major, so the row-major `C = A @ B` is issued as the column-major
  `C^T = B^T @ A^T` by swapping the operands: no copies, no transposes.
* Threading: every public function releases the GIL for its arithmetic. During `fit` the products
  of a layer and the middle of each step are shared with worker threads (`fd_run` in
  `_simd.h`); a call that finds the worker busy (another Python thread training) runs both parts
  itself. The split never changes a result, so concurrent calls on distinct output buffers are
  safe and give the bits a lone call would.
* A network is described by a `plan`, one row per op (see `PLAN_*` below), and a flat parameter
  vector `params` into which every kernel and bias is a view; gradients live in a twin vector, so an
  optimizer step is one pass over one array.

The plain-NumPy twin of every public function is `fastdense/_reference.py`: same names, same
signatures, same results; it is the test oracle and the readable specification.
"""
from cython cimport floating
from libc.math cimport (exp, expf, log, logf, log1p, log1pf, expm1, expm1f, tanh, tanhf,
                        erf, erff, sqrt, sqrtf, fabs, fabsf, pow, isfinite, cos, sin)
from libc.string cimport memcpy, memset
from libc.stdlib cimport calloc, malloc, free, realloc
from libc.stdint cimport uint64_t
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_GetName

# BLAS comes from SciPy's `cython_blas` capsules. They are read from the extension module loaded
# by file, so `import fastdense` does not pay for importing all of `scipy.linalg` (~0.3 s).
ctypedef void (*sgemm_t)(char*, char*, int*, int*, int*, float*, float*, int*, float*, int*,
                         float*, float*, int*) noexcept nogil
ctypedef void (*dgemm_t)(char*, char*, int*, int*, int*, double*, double*, int*, double*, int*,
                         double*, double*, int*) noexcept nogil
cdef sgemm_t sgemm
cdef dgemm_t dgemm


def _scipy_cython_blas():
    import glob
    import importlib.machinery
    import importlib.util
    import os

    try:
        spec = importlib.util.find_spec("scipy")
        folder = os.path.join(os.path.dirname(spec.origin), "linalg")
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            paths = glob.glob(os.path.join(folder, "cython_blas" + suffix))
            if paths:
                name = "scipy.linalg.cython_blas"
                loader = importlib.machinery.ExtensionFileLoader(name, paths[0])
                module = importlib.util.module_from_spec(
                    importlib.util.spec_from_file_location(name, paths[0], loader=loader))
                loader.exec_module(module)
                return module
    except Exception:
        pass
    import scipy.linalg.cython_blas as module  # the regular (slower) route
    return module


cdef void* _capsule_pointer(object capsule) except NULL:
    return PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))


_blas_module = _scipy_cython_blas()
sgemm = <sgemm_t>_capsule_pointer(_blas_module.__pyx_capi__["sgemm"])
dgemm = <dgemm_t>_capsule_pointer(_blas_module.__pyx_capi__["dgemm"])

cdef extern from "_simd.h" nogil:
    int fd_have_avx2_fma()
    int fd_have_avx512()
    void fd_set_simd(int level)
    void fd_sigmoid(float* z, Py_ssize_t size)
    void fd_exp_shifted(const float* x, float mx, float* out, int m)
    void fd_tanh(float* z, Py_ssize_t size)
    enum: FD_GRAD_SIGMOID, FD_GRAD_TANH, FD_GRAD_RELU
    void fd_act_grad(int kind, const float* z, const float* dz, float* ds, Py_ssize_t size)
    int FD_PANELS
    ctypedef struct fd_counter:
        pass
    void fd_counter_set(fd_counter* c, int v)
    int fd_counter_next(fd_counter* c)
    enum: FD_MAX_ROWS
    void fd_forward(int n, int k, int m, const float* const* rows, const float* A,
                    const float* W, Py_ssize_t ldw, const float* b, float* Z, float* part,
                    int threads, int combine)
    void fd_combine_rows(float* Z, const float* part, const float* b, int r0, int r1, int m,
                         int split)
    int fd_half(int k)
    ctypedef void (*fd_task_fn)(void* arg, int part) noexcept nogil
    void fd_run(fd_task_fn fn, void* arg, int nparts)
    enum: FD_MAX_THREADS
    void fd_weight_grad(int n, int k, int m, float alpha, float beta, const float* const* rows,
                        const float* A, const float* dS, float* dW, Py_ssize_t ldw, int threads,
                        int sparse)
    void fd_input_grad(int n, int m, int k, const float* dS, const float* W, Py_ssize_t ldw,
                       float* dX, int threads, float* scratch)
    void fd_weight_grad_then_forward(int n, int k, int m, float alpha, const float* const* rows,
                                     const float* dS, float* W, Py_ssize_t ldw, int n1,
                                     const float* const* rows1, float* Z, float* part,
                                     int threads, int sparse)
    int fd_all_finite(const void* p, size_t n, int wide, int threads)
    void fd_adam(float* p, const float* g, float* m, float* v, Py_ssize_t i0, Py_ssize_t i1,
                 float alpha, double c1, double c2, float eps)
    ctypedef struct fd_epilogue:
        float alpha, beta
        const float* bias
        int relu
        float* bsum
        float bsum_lr
        const float* gate
        Py_ssize_t ldgate
        float* panels
        int panels_only
    int FD_PREPACKED
    void fd_gemm_packed(int n, int k, int m, int ta, const float* A, Py_ssize_t lda, int tb,
                        const float* B, Py_ssize_t ldb, const fd_epilogue* e, float* C,
                        Py_ssize_t ldc, int threads, float* work)
    size_t fd_packed_floats(int k, int m, int threads)
    size_t fd_packed_panel_floats(int k, int m)
    void fd_pack_weight_rows(const float* W, int k, int m, int r0, int r1, float* panels)

# The engine's options, per Trainer (or per call): passed down, never kept in module globals.
cdef struct _Opts:
    int threads          # threads for a layer's cut products (1 .. FD_MAX_THREADS; same bits)
    int own_rows         # float32 products of at most this many batch rows (<= FD_MAX_ROWS) run
                         # on fastdense's own micro-kernels, larger ones on the packed GEMM when
                         # `pack` is set (training), else on BLAS
    bint sparse          # weight gradients skip all-zero input rows (same bits)
    bint transposed_dx   # input gradients as dX^T = W @ dS^T where scratch is given (same bits)
    float* pack          # float32 products over own_rows rows: the packed GEMM's work area
                         # (fd_gemm_packed; a Trainer's), or NULL: BLAS


cdef inline _Opts _opts(int threads) noexcept nogil:
    cdef _Opts o
    o.threads = threads
    o.own_rows = FD_MAX_ROWS
    o.sparse = True
    o.transposed_dx = True
    o.pack = NULL
    return o


# A dense layer's products of at least this many multiply-adds are cut between the threads, each
# taking units of one half of the layer's inputs (fd_forward and friends in _simd.h); the halves
# are computed the same way by one thread, so results are bit-identical whatever the thread count.
cdef long long _split_min = 1 << 19
# The split middle of a training step (_middle_part) only when the layers after the first hold
# at most this many weights in all (see Trainer._derive).
cdef Py_ssize_t MID_MAX_LATER_WEIGHTS = 32768


cdef inline bint _own(const _Opts* o, int n) noexcept nogil:
    # the own kernels: AVX2 where the CPU has it, the portable C kernels otherwise (same bits)
    return n <= o.own_rows


cdef inline int _threads(const _Opts* o, int n, int k, int m) noexcept nogil:
    return o.threads if n > 1 and <long long>n * k * m >= _split_min else 1

# ---------------------------------------------------------------------------------------------
# Codes shared with Python. The kinds (ACT_*, LOSS_*, METRIC_*, OPT_*, OP_*) are declared once, in
# fastdense/_kinds.py; setup.py generates their enums into _kinds.pxi (with _KIND_CODES and
# ACT_NEEDS_PRE). The layouts below are the kernels' own.
# ---------------------------------------------------------------------------------------------
include "_kinds.pxi"

cdef enum:
    # optimizer hyper-parameter vector `hp` (float64), one layout for every optimizer
    HP_MOMENTUM, HP_BETA_1, HP_BETA_2, HP_EPSILON, HP_RHO, HP_CENTERED, HP_WEIGHT_DECAY,
    HP_CLIPVALUE, HP_GLOBAL_CLIPNORM, N_HP

cdef enum:
    # plan: one int64 row per op (the kinds after OP_DROPOUT: see _norm_forward)
    # PLAN_PART: scratch (batch x widest layer) for the second half of a cut forward product
    # PLAN_P2, PLAN_P3: two more parameter offsets (moving mean/variance, adapted mean/variance);
    # PLAN_F0, PLAN_F1: two float64 arguments stored by their bits (epsilon, scale, offset)
    PLAN_KIND, PLAN_N_IN, PLAN_N_OUT, PLAN_ACT, PLAN_W, PLAN_B, PLAN_Z, PLAN_S, PLAN_MASK,
    PLAN_PART, PLAN_P2, PLAN_P3, PLAN_F0, PLAN_F1, N_PLAN

cdef enum:
    # workspace layout of `train_steps`: gathered x, y, sample weights; the two delta buffers
    # LAY_W0: room for a copy of the first layer's weights, 16-column panels (-1: none)
    # LAY_MID: two halves' partial weight gradients of the layers after the first (-1: none)
    LAY_X, LAY_Y, LAY_SW, LAY_D0, LAY_D1, LAY_W0, LAY_MID, N_LAY

# `reg` rows (float64, one per op): kernel l1, kernel l2, bias l1, bias l2 for dense ops;
# [0] = rate for dropout ops; for the normalization/noise ops see _norm_forward.

# The same codes for Python (fastdense/_engine.py and friends), by name.
CODES = {
    **_KIND_CODES,
    "HP_MOMENTUM": HP_MOMENTUM, "HP_BETA_1": HP_BETA_1, "HP_BETA_2": HP_BETA_2,
    "HP_EPSILON": HP_EPSILON, "HP_RHO": HP_RHO, "HP_CENTERED": HP_CENTERED,
    "HP_WEIGHT_DECAY": HP_WEIGHT_DECAY, "HP_CLIPVALUE": HP_CLIPVALUE,
    "HP_GLOBAL_CLIPNORM": HP_GLOBAL_CLIPNORM, "N_HP": N_HP,
    "PLAN_P2": PLAN_P2, "PLAN_P3": PLAN_P3, "PLAN_F0": PLAN_F0, "PLAN_F1": PLAN_F1,
    "PLAN_KIND": PLAN_KIND, "PLAN_N_IN": PLAN_N_IN, "PLAN_N_OUT": PLAN_N_OUT,
    "PLAN_ACT": PLAN_ACT, "PLAN_W": PLAN_W, "PLAN_B": PLAN_B, "PLAN_Z": PLAN_Z,
    "PLAN_S": PLAN_S, "PLAN_MASK": PLAN_MASK, "PLAN_PART": PLAN_PART, "N_PLAN": N_PLAN,
    "LAY_X": LAY_X, "LAY_Y": LAY_Y, "LAY_SW": LAY_SW, "LAY_D0": LAY_D0, "LAY_D1": LAY_D1,
    "LAY_W0": LAY_W0, "LAY_MID": LAY_MID,
    "N_LAY": N_LAY, "MAX_OWN_ROWS": FD_MAX_ROWS,
}

cdef double SELU_ALPHA = 1.6732632423543772
cdef double SELU_SCALE = 1.0507009873554805
cdef double LEAKY_SLOPE = 0.2
cdef double CLIP_EPS = 1e-7
cdef double INV_SQRT2 = 0.7071067811865476
cdef double INV_SQRT_2PI = 0.3989422804014327


# ---------------------------------------------------------------------------------------------
# Scalar maths in the buffer's own precision.
# ---------------------------------------------------------------------------------------------
cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)

cdef inline floating _log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)

cdef inline floating _log1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)

cdef inline void _exp_shift(const floating* x, floating mx, floating* out,
                            Py_ssize_t m) noexcept nogil:
    """out[j] := exp(x[j] - mx), j < m (out may be x); float32 by fd_exp_shifted (see _simd.h)."""
    cdef Py_ssize_t j
    if floating is float:
        fd_exp_shifted(x, mx, out, <int>m)
        return
    for j in range(m):
        out[j] = _exp(x[j] - mx)


cdef inline floating _expm1(floating x) noexcept nogil:
    if floating is float:
        return expm1f(x)
    else:
        return expm1(x)

cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)

cdef inline floating _erf(floating x) noexcept nogil:
    if floating is float:
        return erff(x)
    else:
        return erf(x)

cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)

cdef inline floating _abs(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)

cdef inline floating _sigmoid(floating x) noexcept nogil:
    # Two branches so that exp never overflows: exact 0/1 limits for |x| up to 1e4 and beyond.
    cdef floating e
    if x >= 0:
        return 1 / (1 + _exp(-x))
    e = _exp(x)
    return e / (1 + e)


# ---------------------------------------------------------------------------------------------
# Row-major BLAS products.
# ---------------------------------------------------------------------------------------------
cdef inline fd_epilogue _epilogue(float alpha, float beta, const float* bias,
                                  bint relu) noexcept nogil:
    """The packed GEMM's treatment of each sum (fd_epilogue in csrc/fd_packed.h)."""
    cdef fd_epilogue e
    e.alpha, e.beta, e.bias, e.relu = alpha, beta, bias, relu
    e.bsum, e.bsum_lr = NULL, 0
    e.gate, e.ldgate = NULL, 0
    e.panels, e.panels_only = NULL, 0
    return e


cdef inline void _gemm(char ta, char tb, int m, int n, int k, floating alpha, const floating* A,
                       int lda, const floating* B, int ldb, floating beta, floating* C,
                       int ldc) noexcept nogil:
    """Column-major C := alpha*op(A)@op(B) + beta*C."""
    if floating is float:
        sgemm(&ta, &tb, &m, &n, &k, &alpha, <float*>A, &lda, <float*>B, &ldb, &beta, C, &ldc)
    else:
        dgemm(&ta, &tb, &m, &n, &k, &alpha, <double*>A, &lda, <double*>B, &ldb, &beta, C, &ldc)


# ---------------------------------------------------------------------------------------------
# Activations: forward in place, backward through the output (and the pre-activation if needed).
#
# One block per activation of fastdense/_kinds.py's ACTIVATIONS: `_<name>_forward(Z, n, m)`,
# Z := act(Z) in place, and beside it `_<name>_backward(S, Z, dZ, dS, n, m)`, dS := dZ * act'(S)
# written through the output Z = act(S) (S, the pre-activation, is read only by the activations
# the table marks `needs_pre`); dS may alias dZ. Z is (n, m) row-major. At the kinks these are
# TF's values: relu'(0) = 0, leaky_relu'(0) = 0.2, hard_sigmoid'(-3) = hard_sigmoid'(3) = 0.
# `_act_forward` / `_act_backward` below pick the block by code, once per call (per layer and
# batch): each block's loop is plain code, never an indirect call per element.
# ---------------------------------------------------------------------------------------------
cdef inline void _linear_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    pass

cdef inline void _linear_backward(const floating* S, const floating* Z, const floating* dZ,
                                  floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    if dS != dZ:
        memcpy(dS, dZ, n * m * sizeof(floating))


cdef inline void _softmax_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    # over each row, shifted by the row's maximum
    cdef Py_ssize_t i, j
    cdef floating mx, s
    cdef floating* row
    for i in range(n):
        row = Z + i * m
        mx = row[0]
        for j in range(1, m):
            if row[j] > mx:
                mx = row[j]
        _exp_shift(row, mx, row, m)
        s = 0
        for j in range(m):
            s += row[j]
        s = 1 / s
        for j in range(m):
            row[j] *= s

cdef inline void _softmax_backward(const floating* S, const floating* Z, const floating* dZ,
                                   floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    # the Jacobian-vector product z * (dz - <dz, z>), row by row
    cdef Py_ssize_t i, j
    cdef floating s
    for i in range(n):
        s = 0
        for j in range(m):
            s += dZ[i * m + j] * Z[i * m + j]
        for j in range(m):
            dS[i * m + j] = Z[i * m + j] * (dZ[i * m + j] - s)


cdef inline void _sigmoid_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    if floating is float:
        fd_sigmoid(Z, n * m)
        return
    for i in range(n * m):
        Z[i] = _sigmoid(Z[i])

cdef inline void _sigmoid_backward(const floating* S, const floating* Z, const floating* dZ,
                                   floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating z
    if floating is float:
        fd_act_grad(FD_GRAD_SIGMOID, Z, dZ, dS, n * m)
        return
    for i in range(n * m):
        z = Z[i]
        dS[i] = dZ[i] * z * (1 - z)


cdef inline void _tanh_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    if floating is float:
        fd_tanh(Z, n * m)
        return
    for i in range(n * m):
        Z[i] = _tanh(Z[i])

cdef inline void _tanh_backward(const floating* S, const floating* Z, const floating* dZ,
                                floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating z
    if floating is float:
        fd_act_grad(FD_GRAD_TANH, Z, dZ, dS, n * m)
        return
    for i in range(n * m):
        z = Z[i]
        dS[i] = dZ[i] * (1 - z * z)


cdef inline void _relu_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n * m):
        Z[i] = Z[i] if Z[i] > 0 else 0

cdef inline void _relu_backward(const floating* S, const floating* Z, const floating* dZ,
                                floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    if floating is float:
        fd_act_grad(FD_GRAD_RELU, Z, dZ, dS, n * m)
        return
    for i in range(n * m):
        dS[i] = dZ[i] if Z[i] > 0 else 0


cdef inline void _elu_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating x
    for i in range(n * m):
        x = Z[i]
        Z[i] = x if x > 0 else _expm1(x)

cdef inline void _elu_backward(const floating* S, const floating* Z, const floating* dZ,
                               floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating z
    for i in range(n * m):
        z = Z[i]
        dS[i] = dZ[i] if z > 0 else dZ[i] * (z + 1)


cdef inline void _selu_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating x
    for i in range(n * m):
        x = Z[i]
        Z[i] = <floating>SELU_SCALE * (x if x > 0 else <floating>SELU_ALPHA * _expm1(x))

cdef inline void _selu_backward(const floating* S, const floating* Z, const floating* dZ,
                                floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating z
    for i in range(n * m):
        z = Z[i]
        dS[i] = dZ[i] * (<floating>SELU_SCALE if z > 0
                         else z + <floating>(SELU_SCALE * SELU_ALPHA))


cdef inline void _softplus_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating x
    for i in range(n * m):
        x = Z[i]
        Z[i] = _log1p(_exp(-_abs(x))) + (x if x > 0 else 0)

cdef inline void _softplus_backward(const floating* S, const floating* Z, const floating* dZ,
                                    floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    # sigmoid(s) = 1 - exp(-softplus(s))
    cdef Py_ssize_t i
    for i in range(n * m):
        dS[i] = -dZ[i] * _expm1(-Z[i])


cdef inline void _softsign_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n * m):
        Z[i] = Z[i] / (1 + _abs(Z[i]))

cdef inline void _softsign_backward(const floating* S, const floating* Z, const floating* dZ,
                                    floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    # 1 / (1 + |s|)^2 = (1 - |z|)^2
    cdef Py_ssize_t i
    cdef floating g
    for i in range(n * m):
        g = 1 - _abs(Z[i])
        dS[i] = dZ[i] * g * g


cdef inline void _swish_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n * m):
        Z[i] = Z[i] * _sigmoid(Z[i])

cdef inline void _swish_backward(const floating* S, const floating* Z, const floating* dZ,
                                 floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating x, s
    for i in range(n * m):
        x = S[i]
        s = _sigmoid(x)
        dS[i] = dZ[i] * s * (1 + x * (1 - s))


cdef inline void _gelu_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    # the exact erf form, as Keras's default (approximate=False)
    cdef Py_ssize_t i
    cdef floating x
    for i in range(n * m):
        x = Z[i]
        Z[i] = <floating>0.5 * x * (1 + _erf(x * <floating>INV_SQRT2))

cdef inline void _gelu_backward(const floating* S, const floating* Z, const floating* dZ,
                                floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating x
    for i in range(n * m):
        x = S[i]
        dS[i] = dZ[i] * (<floating>0.5 * (1 + _erf(x * <floating>INV_SQRT2))
                         + x * <floating>INV_SQRT_2PI * _exp(<floating>-0.5 * x * x))


cdef inline void _leaky_relu_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n * m):
        Z[i] = Z[i] if Z[i] > 0 else <floating>LEAKY_SLOPE * Z[i]

cdef inline void _leaky_relu_backward(const floating* S, const floating* Z, const floating* dZ,
                                      floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n * m):
        dS[i] = dZ[i] if Z[i] > 0 else <floating>LEAKY_SLOPE * dZ[i]


cdef inline void _hard_sigmoid_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    # Keras 3: relu6(x + 3) / 6, computed as clip(x / 6 + 0.5, 0, 1)
    cdef Py_ssize_t i
    cdef floating x
    for i in range(n * m):
        x = Z[i] / 6 + <floating>0.5
        Z[i] = 0 if x < 0 else (1 if x > 1 else x)

cdef inline void _hard_sigmoid_backward(const floating* S, const floating* Z, const floating* dZ,
                                        floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating z
    for i in range(n * m):
        z = Z[i]
        dS[i] = dZ[i] / 6 if (z > 0 and z < 1) else 0


cdef inline void _exponential_forward(floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n * m):
        Z[i] = _exp(Z[i])

cdef inline void _exponential_backward(const floating* S, const floating* Z, const floating* dZ,
                                       floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n * m):
        dS[i] = dZ[i] * Z[i]


cdef void _act_forward(int act, floating* Z, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """Z := act(Z) in place, Z is (n, m) row-major; softmax is over each row."""
    if act == ACT_LINEAR: _linear_forward(Z, n, m)
    elif act == ACT_SIGMOID: _sigmoid_forward(Z, n, m)
    elif act == ACT_SOFTMAX: _softmax_forward(Z, n, m)
    elif act == ACT_TANH: _tanh_forward(Z, n, m)
    elif act == ACT_RELU: _relu_forward(Z, n, m)
    elif act == ACT_ELU: _elu_forward(Z, n, m)
    elif act == ACT_SELU: _selu_forward(Z, n, m)
    elif act == ACT_SOFTPLUS: _softplus_forward(Z, n, m)
    elif act == ACT_SOFTSIGN: _softsign_forward(Z, n, m)
    elif act == ACT_SWISH: _swish_forward(Z, n, m)
    elif act == ACT_GELU: _gelu_forward(Z, n, m)
    elif act == ACT_LEAKY_RELU: _leaky_relu_forward(Z, n, m)
    elif act == ACT_HARD_SIGMOID: _hard_sigmoid_forward(Z, n, m)
    elif act == ACT_EXPONENTIAL: _exponential_forward(Z, n, m)


cdef void _act_backward(int act, const floating* S, const floating* Z, const floating* dZ,
                        floating* dS, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """dS := dZ * act'(S), written through the output Z where possible; dS may alias dZ.

    S (the pre-activation) is read only for the activations _kinds.py marks `needs_pre`.
    """
    if act == ACT_LINEAR: _linear_backward(S, Z, dZ, dS, n, m)
    elif act == ACT_SIGMOID: _sigmoid_backward(S, Z, dZ, dS, n, m)
    elif act == ACT_SOFTMAX: _softmax_backward(S, Z, dZ, dS, n, m)
    elif act == ACT_TANH: _tanh_backward(S, Z, dZ, dS, n, m)
    elif act == ACT_RELU: _relu_backward(S, Z, dZ, dS, n, m)
    elif act == ACT_ELU: _elu_backward(S, Z, dZ, dS, n, m)
    elif act == ACT_SELU: _selu_backward(S, Z, dZ, dS, n, m)
    elif act == ACT_SOFTPLUS: _softplus_backward(S, Z, dZ, dS, n, m)
    elif act == ACT_SOFTSIGN: _softsign_backward(S, Z, dZ, dS, n, m)
    elif act == ACT_SWISH: _swish_backward(S, Z, dZ, dS, n, m)
    elif act == ACT_GELU: _gelu_backward(S, Z, dZ, dS, n, m)
    elif act == ACT_LEAKY_RELU: _leaky_relu_backward(S, Z, dZ, dS, n, m)
    elif act == ACT_HARD_SIGMOID: _hard_sigmoid_backward(S, Z, dZ, dS, n, m)
    elif act == ACT_EXPONENTIAL: _exponential_backward(S, Z, dZ, dS, n, m)


# ---------------------------------------------------------------------------------------------
# Dense layer.
# ---------------------------------------------------------------------------------------------
cdef struct _Panels:
    # A training step's deltas handed between packed products as panels (fd_epilogue's panels),
    # never written row-major: each is read by the packed products of one layer only.
    const float* dS     # this layer's delta as panels (its weight and input gradients read
                        # them instead of dS), or NULL
    float* dX           # the input gradient goes there as panels instead of into dX, or NULL


cdef inline bint _on_packed(const _Opts* o, int n) noexcept nogil:
    """Whether float32 training products over n batch rows run on the packed GEMM."""
    return not _own(o, n) and o.pack != NULL


cdef inline void _dense_forward(const _Opts* o, const floating** rows, const floating* X, const floating* W,
                                int ldw, const floating* b, int act, floating* Z, floating* S,
                                floating* part, int n, int n_in, int n_out,
                                bint epilogue=True, const float* Wp=NULL) noexcept nogil:
    """Z := act(X @ W + b); S := X @ W + b when S is not NULL. b may be NULL (no bias).

    X (n, n_in) is given by its row pointers `rows` or, when rows is NULL, contiguous at X; the
    packed and BLAS paths (batches over the own_rows option; float64) need X. W's rows are ldw apart
    (n_out, more, or FD_PANELS for train_steps' copy). part: n x n_out scratch. With epilogue False
    (own kernels only) the two partial sums are left in Z and part, without bias or activation
    (train_steps finishes them row block by row block: see _middle_part). Wp (packed GEMM only,
    or NULL): W as the product's panels of op(B), written by the last optimizer pass
    (_opt_range_panels).
    """
    cdef Py_ssize_t i, j
    cdef floating* row
    cdef fd_epilogue ep
    if floating is float and _own(o, n):
        fd_forward(n, n_in, n_out, <const float**>rows, X, W, ldw, b, Z, part,
                   _threads(o, n, n_in, n_out), 1 if epilogue else 0)
        if not epilogue:
            return
    elif floating is float and o.pack != NULL:
        # the bias, and relu when no pre-activation is kept, on the product's registers
        ep = _epilogue(1, 0, b, act == ACT_RELU and S == NULL)
        fd_gemm_packed(n, n_in, n_out, 0, X, n_in, FD_PREPACKED if Wp != NULL else 0,
                       Wp if Wp != NULL else <const float*>W, ldw, &ep, Z, n_out, o.threads,
                       o.pack)
        if ep.relu:
            return
    else:
        _gemm(c'N', c'N', n_out, n, n_in, <floating>1, W, ldw, X, n_in, <floating>0, Z, n_out)
        if b != NULL:
            for i in range(n):
                row = Z + i * n_out
                for j in range(n_out):
                    row[j] += b[j]
    if S != NULL:
        memcpy(S, Z, n * n_out * sizeof(floating))
    _act_forward(act, Z, n, n_out)


cdef inline void _bias_grad(const floating* dS, floating* db, int n, int n_out,
                            floating sgd_lr) noexcept nogil:
    """db := column sums of dS (n x n_out), or with sgd_lr > 0 the SGD update b -= sgd_lr * sums
    (db points at b). Each column summed in row order i = 0, 1, ...; row by row, up to 1024
    columns at a time, so that the inner loop runs along contiguous memory and vectorises."""
    cdef Py_ssize_t i, j, j0 = 0, jn
    cdef floating colsum[1024]
    while j0 < n_out:
        jn = n_out - j0 if n_out - j0 < 1024 else 1024
        for j in range(jn):
            colsum[j] = 0
        for i in range(n):
            for j in range(jn):
                colsum[j] += dS[i * n_out + j0 + j]
        for j in range(jn):
            if sgd_lr > 0:
                db[j0 + j] -= sgd_lr * colsum[j]
            else:
                db[j0 + j] = colsum[j]
        j0 += jn


cdef inline void _dense_backward(const _Opts* o, const floating** rows, const floating* X, floating* W,
                                 int ldw, const floating* dS, floating* dW, floating* db,
                                 floating* dX, int n, int n_in, int n_out,
                                 floating sgd_lr, floating* scratch=NULL,
                                 const floating* gate=NULL,
                                 const _Panels* pn=NULL) noexcept nogil:
    """dX := dS @ W^T (if dX; gated by the relu before, see _dense_input_grad); then
    dW := X^T @ dS and db := column sums of dS (if db).

    scratch (own kernels; n_out x round_up(n, 16) floats, or NULL): lets dX be computed as
    dX^T = W @ dS^T, same bits, without packing W^T (fd_input_grad).

    With sgd_lr > 0 the SGD update is folded into the weight-gradient product instead:
    W -= sgd_lr * X^T @ dS and b -= sgd_lr * sums (dW, db point at W, b). dX is computed first,
    from the weights before the update. X as in _dense_forward; W and dW rows are ldw apart.
    pn (packed products only, or NULL): dS read as panels, dX written as panels only (_Panels).
    """
    cdef floating alpha = -sgd_lr if sgd_lr > 0 else <floating>1
    cdef floating beta = <floating>1 if sgd_lr > 0 else <floating>0
    cdef fd_epilogue ep
    cdef const float* dSp = pn.dS if pn != NULL else NULL  # dS's panels, from its product
    if dX != NULL:
        _dense_input_grad(o, W, ldw, dS, dX, n, n_in, n_out, scratch, gate, pn)
    if floating is float and _own(o, n):
        fd_weight_grad(n, n_in, n_out, alpha, beta, <const float**>rows, X, dS, dW, ldw,
                       _threads(o, n, n_in, n_out), o.sparse)
    elif floating is float and o.pack != NULL:
        ep = _epilogue(alpha, beta, NULL, False)
        if db != NULL:  # the bias gradient (or update) from the packed panels of dS
            ep.bsum, ep.bsum_lr = db, sgd_lr
        fd_gemm_packed(n_in, n, n_out, 1, X, n_in, FD_PREPACKED if dSp != NULL else 0,
                       dSp if dSp != NULL else <const float*>dS, n_out, &ep, dW, ldw, o.threads,
                       o.pack)
        return
    else:
        _gemm(c'N', c'T', n_out, n_in, n, alpha, dS, n_out, X, n_in, beta, dW, ldw)
    if db != NULL:
        _bias_grad(dS, db, n, n_out, sgd_lr)


# ---------------------------------------------------------------------------------------------
# Losses: value and gradient; metrics.
# ---------------------------------------------------------------------------------------------
cdef double _loss_grad(int code, const floating* L, const floating* Y, const floating* sw,
                       floating* dL, Py_ssize_t n, Py_ssize_t m, double scale) noexcept nogil:
    """Returns sum_i w_i * loss_i; writes dL := scale * w_i * d loss_i / dL (dL may be NULL).

    L is what the loss reads: probabilities/values, or logits for the *_LOGITS codes. Sparse labels
    arrive as class indices stored in Y's float type, one per row (Y is (n, 1)).
    """
    cdef Py_ssize_t i, j, c = 0
    cdef double total = 0, li, w, mx, se, lse, sy, p, yv, d, s, o, e, eps = CLIP_EPS
    cdef floating ebuf[64]
    cdef const floating* row
    cdef const floating* yrow
    cdef floating* drow
    for i in range(n):
        row = L + i * m
        w = 1.0 if sw == NULL else <double>sw[i]
        drow = NULL if dL == NULL else dL + i * m
        li = 0
        if code == LOSS_MSE or code == LOSS_MAE:
            yrow = Y + i * m
            for j in range(m):
                d = <double>row[j] - <double>yrow[j]
                if code == LOSS_MSE:
                    li += d * d
                    if drow != NULL:
                        drow[j] = <floating>(2 * d * w * scale / m)
                else:
                    li += fabs(d)
                    if drow != NULL:
                        drow[j] = <floating>((1 if d > 0 else (-1 if d < 0 else 0)) * w * scale / m)
            li /= m
        elif code == LOSS_CCE_LOGITS or code == LOSS_SCCE_LOGITS:
            mx = row[0]
            for j in range(1, m):
                if row[j] > mx:
                    mx = row[j]
            se = 0
            if m <= 64:
                # in the model's float type, as Keras does; kept for the gradient below
                _exp_shift(row, <floating>mx, ebuf, m)
                for j in range(m):
                    se += ebuf[j]
            else:
                for j in range(m):
                    e = _exp(row[j] - <floating>mx)
                    if j < 64:
                        ebuf[j] = <floating>e
                    se += e
            lse = mx + log(se)
            if code == LOSS_CCE_LOGITS:
                yrow = Y + i * m
                for j in range(m):
                    li += <double>yrow[j] * (lse - <double>row[j])
            else:
                c = <Py_ssize_t>Y[i]
                li = lse - <double>row[c]
            if drow != NULL:
                for j in range(m):
                    p = ebuf[j] / se if j < 64 else exp(<double>row[j] - lse)
                    if code == LOSS_CCE_LOGITS:
                        yv = Y[i * m + j]
                    else:
                        yv = 1.0 if j == <Py_ssize_t>Y[i] else 0.0
                    drow[j] = <floating>((p - yv) * w * scale)
        elif code == LOSS_CCE or code == LOSS_SCCE:
            # Keras: normalise the rows to sum 1, clip to [eps, 1-eps], -sum(y log p). The gradient
            # is zero where clipping is active, as for a clip in an autodiff graph.
            s = 0
            for j in range(m):
                s += row[j]
            if code == LOSS_SCCE:
                c = <Py_ssize_t>Y[i]
            sy = 0
            for j in range(m):
                yv = (1.0 if j == c else 0.0) if code == LOSS_SCCE else <double>Y[i * m + j]
                p = row[j] / s
                o = eps if p < eps else (1 - eps if p > 1 - eps else p)
                li -= yv * log(o)
                # g_j = dloss/dp_j; the normalisation is folded in below.
                d = 0.0 if (p < eps or p > 1 - eps) else -yv / o
                if drow != NULL:
                    drow[j] = <floating>d
                sy += d * p
            if drow != NULL:
                for j in range(m):
                    drow[j] = <floating>((<double>drow[j] - sy) / s * w * scale)
        elif code == LOSS_BCE:
            # Keras 3: clip to [eps, 1 - eps], then -(y log o + (1 - y) log(1 - o)); no gradient
            # where the clip is active.
            yrow = Y + i * m
            for j in range(m):
                yv = yrow[j]
                o = row[j]
                o = eps if o < eps else (1 - eps if o > 1 - eps else o)
                li -= yv * log(o) + (1 - yv) * log(1 - o)
                if drow != NULL:
                    if row[j] < eps or row[j] > 1 - eps:
                        drow[j] = 0
                    else:
                        drow[j] = <floating>((-yv / o + (1 - yv) / (1 - o)) * w * scale / m)
            li /= m
        elif code == LOSS_BCE_LOGITS:
            yrow = Y + i * m
            for j in range(m):
                yv = yrow[j]
                o = row[j]
                li += (o if o > 0 else 0) - o * yv + log1p(exp(-fabs(o)))
                if drow != NULL:
                    p = 1 / (1 + exp(-o)) if o >= 0 else exp(o) / (1 + exp(o))
                    drow[j] = <floating>((p - yv) * w * scale / m)
            li /= m
        total += w * li
    return total


cdef inline Py_ssize_t _argmax(const floating* row, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t j, best = 0
    for j in range(1, m):
        if row[j] > row[best]:
            best = j
    return best


cdef void _metrics(const Py_ssize_t* codes, Py_ssize_t n_metrics, const floating* Z,
                   const floating* Y, const floating* sw, Py_ssize_t n, Py_ssize_t m,
                   Py_ssize_t y_m, double* acc) noexcept nogil:
    """acc[2k] += sum_i w_i * metric_k(i); acc[2k+1] += sum_i w_i."""
    cdef Py_ssize_t i, j, k
    cdef double v, w, d
    cdef const floating* row
    cdef const floating* yrow
    for k in range(n_metrics):
        for i in range(n):
            row = Z + i * m
            yrow = Y + i * y_m
            w = 1.0 if sw == NULL else <double>sw[i]
            v = 0
            if codes[k] == METRIC_CATEGORICAL_ACCURACY:
                v = 1.0 if _argmax(row, m) == _argmax(yrow, m) else 0.0
            elif codes[k] == METRIC_SPARSE_CATEGORICAL_ACCURACY:
                v = 1.0 if _argmax(row, m) == <Py_ssize_t>yrow[0] else 0.0
            elif codes[k] == METRIC_BINARY_ACCURACY:
                # Keras 3 compares y_true itself with the thresholded prediction. (Python refuses
                # y narrower than the output for this metric; the index guard keeps a direct
                # call from reading past a row.)
                for j in range(m):
                    v += 1.0 if <double>yrow[j if y_m == m else 0] == (1.0 if row[j] > 0.5 else 0.0) else 0.0
                v /= m
            elif codes[k] == METRIC_MSE or codes[k] == METRIC_MAE:
                for j in range(m):
                    d = <double>row[j] - <double>yrow[j if y_m == m else 0]
                    v += d * d if codes[k] == METRIC_MSE else fabs(d)
                v /= m
            acc[2 * k] += w * v
            acc[2 * k + 1] += w


# ---------------------------------------------------------------------------------------------
# Optimizer step over the flat parameter vector.
# ---------------------------------------------------------------------------------------------
cdef double _clip_scale(const double* hp, const floating* G, Py_ssize_t n) noexcept nogil:
    """The factor global_clipnorm / ||G|| when the norm is over the limit, else 1 (the norm
    summed in float64, in index order)."""
    cdef Py_ssize_t i
    cdef double gn = 0
    if hp[HP_GLOBAL_CLIPNORM] <= 0:
        return 1.0
    for i in range(n):
        gn += <double>G[i] * <double>G[i]
    gn = sqrt(gn)
    return hp[HP_GLOBAL_CLIPNORM] / gn if gn > hp[HP_GLOBAL_CLIPNORM] else 1.0


cdef void _opt_step(int code, const double* hp, double lr, long long step, floating* P,
                    floating* G, floating* state, Py_ssize_t n) noexcept nogil:
    """One Keras 3 update of every parameter; `step` is the number of updates already applied."""
    _opt_range(code, hp, lr, step, P, G, state, n, 0, n, _clip_scale(hp, G, n))


cdef void _opt_range(int code, const double* hp, double lr, long long step, floating* P,
                     floating* G, floating* state, Py_ssize_t n, Py_ssize_t i0, Py_ssize_t i1,
                     double clip) noexcept nogil:
    """Elements i0..i1 of one update of n parameters (slots k * n apart in state); clip: the
    global-norm factor (_clip_scale), applied to G first when not 1. Every element's arithmetic
    is its own, so cutting [0, n) into ranges (threads) does not change a bit."""
    cdef Py_ssize_t i
    cdef floating g, wd = <floating>(hp[HP_WEIGHT_DECAY] * lr), flr = <floating>lr
    cdef floating mom = <floating>hp[HP_MOMENTUM], eps = <floating>hp[HP_EPSILON]
    cdef floating b1 = <floating>hp[HP_BETA_1], b2 = <floating>hp[HP_BETA_2]
    cdef floating rho = <floating>hp[HP_RHO], alpha, denom
    cdef floating clipv = <floating>hp[HP_CLIPVALUE]
    cdef double t
    cdef floating* m1 = state
    cdef floating* m2 = state + n
    cdef floating* m3 = state + 2 * n
    if clip != 1.0:
        g = <floating>clip
        for i in range(i0, i1):
            G[i] *= g
    if clipv > 0:
        for i in range(i0, i1):
            G[i] = -clipv if G[i] < -clipv else (clipv if G[i] > clipv else G[i])
    if wd != 0:
        for i in range(i0, i1):
            P[i] -= P[i] * wd
    if code == OPT_SGD:
        for i in range(i0, i1):
            P[i] -= flr * G[i]
    elif code == OPT_SGD_MOMENTUM:
        for i in range(i0, i1):
            m1[i] = -G[i] * flr + m1[i] * mom
            P[i] += m1[i]
    elif code == OPT_SGD_NESTEROV:
        for i in range(i0, i1):
            m1[i] = -G[i] * flr + m1[i] * mom
            P[i] += -G[i] * flr + m1[i] * mom
    elif code == OPT_ADAM:
        t = <double>(step + 1)
        alpha = <floating>(lr * sqrt(1 - pow(hp[HP_BETA_2], t)) / (1 - pow(hp[HP_BETA_1], t)))
        if floating is float:
            # vectorised in C, with this loop's roundings (fd_optim.h)
            fd_adam(P, G, m1, m2, i0, i1, alpha, 1.0 - <double>b1, 1.0 - <double>b2, eps)
            return
        for i in range(i0, i1):
            g = G[i]
            m1[i] += (g - m1[i]) * (1 - b1)
            m2[i] += (g * g - m2[i]) * (1 - b2)
            P[i] -= m1[i] * alpha / (_sqrt(m2[i]) + eps)
    elif code == OPT_RMSPROP:
        for i in range(i0, i1):
            g = G[i]
            m1[i] = rho * m1[i] + (1 - rho) * g * g
            if hp[HP_CENTERED] != 0:
                m3[i] = rho * m3[i] + (1 - rho) * g
                denom = m1[i] - m3[i] * m3[i] + eps
            else:
                denom = m1[i] + eps
            g = flr * g / _sqrt(denom)
            if mom > 0:
                m2[i] = mom * m2[i] + g
                P[i] -= m2[i]
            else:
                P[i] -= g
    elif code == OPT_ADAGRAD:
        for i in range(i0, i1):
            g = G[i]
            m1[i] += g * g
            P[i] -= flr * g / _sqrt(m1[i] + eps)



# An update of many parameters on several threads: each takes one contiguous range (same bits:
# every element's arithmetic is its own). The global-norm factor is taken first, in one pass.
cdef struct _OptJob:
    int code
    const double* hp
    double lr
    long long step
    void* P                     # float* or double* (wide), like G and state
    void* G
    void* state
    Py_ssize_t n
    double clip
    int parts
    bint wide
    Py_ssize_t n_ops
    float** wpan                # float only: per op, where its updated weights go as panels
    const Py_ssize_t* plan      # (or NULL: nowhere; see _opt_range_panels)


cdef inline Py_ssize_t _panel_block(Py_ssize_t n_out) noexcept nogil:
    """Parameters of a block of weight rows that _opt_range_panels updates then packs: about
    32 KiB, so that the rows are still in L1 when they are packed."""
    return max(1, 8192 // n_out) * n_out


cdef Py_ssize_t _panel_op(const _OptJob* j, Py_ssize_t i) noexcept nogil:
    """The op with panels whose weights hold parameter i, or -1."""
    cdef Py_ssize_t l
    cdef const Py_ssize_t* row
    for l in range(j.n_ops):
        row = j.plan + l * N_PLAN
        if j.wpan[l] != NULL and row[PLAN_W] <= i < row[PLAN_W] + row[PLAN_N_IN] * row[PLAN_N_OUT]:
            return l
    return -1


cdef inline Py_ssize_t _block_up(const _OptJob* j, Py_ssize_t l, Py_ssize_t i) noexcept nogil:
    """i rounded up to the start of a row block (_panel_block) of op l's weights, at most their
    end."""
    cdef const Py_ssize_t* row = j.plan + l * N_PLAN
    cdef Py_ssize_t off = row[PLAN_W], blk = _panel_block(row[PLAN_N_OUT])
    return min(off + (i - off + blk - 1) // blk * blk, off + row[PLAN_N_IN] * row[PLAN_N_OUT])


cdef Py_ssize_t _block_cut(const _OptJob* j, Py_ssize_t i) noexcept nogil:
    """i moved up to the start of the next row block when it falls inside the weights of an op
    with panels, so that parts of an update cut there own whole blocks."""
    cdef Py_ssize_t l = _panel_op(j, i)
    return _block_up(j, l, i) if l >= 0 else i


cdef void _opt_range_panels(const _OptJob* j, Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    """_opt_range over [i0, i1) (cut at whole row blocks, _block_cut), a block of an op's
    weight rows at a time where the op has panels, each block packed into them right after its
    update (fd_pack_weight_rows): the next step's forward product takes them instead of packing
    the weights itself. Same bits as one _opt_range: every element's arithmetic is its own."""
    cdef Py_ssize_t pos = i0, end, l, hit, off, n_out
    cdef const Py_ssize_t* row
    while pos < i1:
        hit = _panel_op(j, pos)
        if hit >= 0:  # to the end of pos's block
            end = min(i1, _block_up(j, hit, pos + 1))
        else:  # to the start of the next weights with panels
            end = i1
            for l in range(j.n_ops):
                off = j.plan[l * N_PLAN + PLAN_W]
                if j.wpan[l] != NULL and pos < off < end:
                    end = off
        _opt_range(j.code, j.hp, j.lr, j.step, <float*>j.P, <float*>j.G, <float*>j.state, j.n,
                   pos, end, j.clip)
        if hit >= 0:
            row = j.plan + hit * N_PLAN
            off, n_out = row[PLAN_W], row[PLAN_N_OUT]
            fd_pack_weight_rows(<float*>j.P + off, <int>row[PLAN_N_IN], <int>n_out,
                                <int>((pos - off) // n_out), <int>((end - off) // n_out),
                                j.wpan[hit])
        pos = end


cdef void _opt_part(void* arg, int part) noexcept nogil:
    cdef _OptJob* j = <_OptJob*>arg
    cdef Py_ssize_t i0 = j.n * part // j.parts, i1 = j.n * (part + 1) // j.parts
    if j.wide:
        _opt_range(j.code, j.hp, j.lr, j.step, <double*>j.P, <double*>j.G, <double*>j.state,
                   j.n, i0, i1, j.clip)
    elif j.wpan != NULL:
        _opt_range_panels(j, _block_cut(j, i0), _block_cut(j, i1))
    else:
        _opt_range(j.code, j.hp, j.lr, j.step, <float*>j.P, <float*>j.G, <float*>j.state, j.n,
                   i0, i1, j.clip)


cdef void _opt_step_threads(int threads, int code, const double* hp, double lr, long long step,
                            floating* P, floating* G, floating* state, Py_ssize_t n,
                            const Py_ssize_t* plan=NULL, Py_ssize_t n_ops=0,
                            float** wpan=NULL) noexcept nogil:
    """_opt_step, its elements cut between up to `threads` threads (ranges of at least 32,768
    parameters: below that a hand-off costs more than it saves). wpan (float only, or NULL):
    per op of the plan (n_ops rows), where its updated weights go as panels, or NULL."""
    cdef _OptJob j
    j.parts = <int>max(1, min(<Py_ssize_t>threads, n // 32768))
    j.code, j.hp, j.lr, j.step, j.n = code, hp, lr, step, n
    j.P, j.G, j.state = P, G, state
    j.clip = _clip_scale(hp, G, n)
    j.wide = floating is double
    j.plan, j.n_ops, j.wpan = plan, n_ops, wpan if floating is float else NULL
    if j.parts == 1:
        _opt_part(&j, 0)
    else:
        fd_run(_opt_part, &j, j.parts)

# ---------------------------------------------------------------------------------------------
# Dropout randomness: splitmix64, one 64-bit state carried across calls by the caller.
# ---------------------------------------------------------------------------------------------
cdef inline uint64_t _splitmix64(uint64_t* state) noexcept nogil:
    state[0] += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline double _normal_pair(uint64_t* state, double* second) noexcept nogil:
    """Two independent standard normal draws (Box-Muller on two splitmix64 uniforms)."""
    # u1 in (0, 1] (log never sees 0), u2 in [0, 1)
    cdef double u1 = (<double>(_splitmix64(state) >> 11) + 1.0) * (1.0 / 9007199254740992.0)
    cdef double u2 = <double>(_splitmix64(state) >> 11) * (1.0 / 9007199254740992.0)
    cdef double r = sqrt(-2.0 * log(u1)), t = 6.283185307179586 * u2
    second[0] = r * sin(t)
    return r * cos(t)


cdef inline void _normals(uint64_t* state, floating* out, Py_ssize_t size, double mean,
                          double stddev) noexcept nogil:
    """out[i] := mean + stddev * N(0, 1), drawn in order on this thread (same bits for a seed)."""
    cdef Py_ssize_t i = 0
    cdef double z1
    while i < size:
        out[i] = <floating>(mean + stddev * _normal_pair(state, &z1))
        if i + 1 < size:
            out[i + 1] = <floating>(mean + stddev * z1)
        i += 2


cdef inline double _plan_float(const Py_ssize_t* row, int col) noexcept nogil:
    """A float64 argument the plan stores by its bits (PLAN_F0, PLAN_F1)."""
    cdef double v
    memcpy(&v, &row[col], sizeof(double))
    return v


cdef void _dense_input_grad(const _Opts* o, const floating* W, int ldw, const floating* dS,
                            floating* dX, int n, int n_in, int n_out, floating* scratch,
                            const floating* gate, const _Panels* pn=NULL) noexcept nogil:
    """dX := dS @ W^T, W's rows ldw apart (a dense layer's input gradient). gate (or NULL): the
    output of a relu just before the layer (n x n_in); then dX := (gate > 0) ? dX : 0 takes that
    relu's gradient too, in the packed product's epilogue rather than a pass of its own (same
    bits). scratch: see _dense_backward. pn (packed products only, or NULL): dS read as panels,
    dX written as panels only (_Panels)."""
    cdef fd_epilogue ep
    cdef const float* dSp = pn.dS if pn != NULL else NULL
    if floating is float and _own(o, n):
        fd_input_grad(n, n_out, n_in, dS, W, ldw, dX, _threads(o, n, n_out, n_in),
                      <float*>scratch if o.transposed_dx else NULL)
    elif floating is float and o.pack != NULL:
        ep = _epilogue(1, 0, NULL, False)
        ep.gate, ep.ldgate = gate, n_in
        if pn != NULL and pn.dX != NULL:
            ep.panels, ep.panels_only = pn.dX, True
        fd_gemm_packed(n, n_out, n_in, FD_PREPACKED if dSp != NULL else 0,
                       dSp if dSp != NULL else <const float*>dS, n_out, 1, W, ldw, &ep, dX,
                       n_in, o.threads, o.pack)
        return
    else:
        _gemm(c'T', c'N', n_in, n, n_out, <floating>1, W, ldw, dS, n_out, <floating>0, dX, n_in)
    if gate != NULL:
        _relu_backward(<const floating*>NULL, gate, dX, dX, n, n_in)


# ---------------------------------------------------------------------------------------------
# Normalization and noise ops (Keras's BatchNormalization, LayerNormalization, Normalization,
# Rescaling, GaussianNoise, GaussianDropout), on a batch A (n x m) into Z, per plan row:
#   PLAN_W, PLAN_B: gamma, beta (-1: none) -- BATCHNORM, LAYERNORM
#   PLAN_P2, PLAN_P3: moving mean, moving variance (BATCHNORM); mean, variance (NORMALIZE)
#   PLAN_F0: epsilon (BATCHNORM, LAYERNORM) or scale (RESCALE); PLAN_F1: offset (RESCALE)
#   PLAN_S (training): the normalized input xhat (BATCHNORM, LAYERNORM), the multiplier
#     (GAUSS_DROPOUT)
#   PLAN_MASK (training): scratch -- BATCHNORM: 3m (1/std, two column sums); LAYERNORM: n + 2m
#   reg (training only): [0] momentum (BATCHNORM) / stddev (GAUSS_*), [1] 1 for a BATCHNORM
#     that runs in inference mode while training (trainable=False, as in Keras), [2] 1 when
#     gamma and beta are trainable (their offsets then lie in the gradient vector's range)
# Statistics are summed in float64. The noise ops are the identity at inference.
#
# One block per kind (fastdense/_kinds.py's LAYER_OPS after OP_DROPOUT): `_<kind>_forward` and
# beside it `_<kind>_backward`, with the signatures of _norm_forward / _norm_backward (at the end
# of this section), which pick the block by the row's kind.
# ---------------------------------------------------------------------------------------------
cdef inline floating _norm_divisor(floating variance) noexcept nogil:
    cdef floating g = _sqrt(variance)
    return g if g > <floating>1e-7 else <floating>1e-7


cdef inline void _mean_var(const floating* a, Py_ssize_t count, Py_ssize_t stride,
                           double* mean, double* var) noexcept nogil:
    """Mean and biased variance of a[0], a[stride], ... (count values), summed in float64:
    BatchNormalization's per column (stride = width), LayerNormalization's per row (stride 1)."""
    cdef Py_ssize_t t
    cdef double s = 0, d = 0
    for t in range(count):
        s += a[t * stride]
    s /= count
    for t in range(count):
        d += (a[t * stride] - s) * (a[t * stride] - s)
    mean[0] = s
    var[0] = d / count


cdef inline floating* _at(floating* base, Py_ssize_t offset) noexcept nogil:
    """base + offset, or NULL for a plan's -1 (absent)."""
    return base + offset if offset >= 0 else NULL


cdef inline void _affine_grads(const Py_ssize_t* row, floating* P, floating* G,
                               const floating* dgamma, const floating* dbeta, Py_ssize_t m,
                               floating sgd_lr, bint trainable) noexcept nogil:
    """gamma's and beta's gradients into G, or the plain SGD update into P (see _norm_backward).
    Offsets are in G's range only for trainable weights (the model lays those out first)."""
    cdef Py_ssize_t j
    cdef floating* dst
    cdef int part
    cdef Py_ssize_t off
    for part in range(2):
        off = row[PLAN_W] if part == 0 else row[PLAN_B]
        if off < 0 or not trainable:
            continue
        for j in range(m):
            if sgd_lr > 0:
                P[off + j] -= sgd_lr * (dgamma[j] if part == 0 else dbeta[j])
            else:
                G[off + j] = dgamma[j] if part == 0 else dbeta[j]


# -- BatchNormalization: per column; in training, batch statistics and moving ones updated
cdef inline void _batchnorm_forward(const Py_ssize_t* row, const double* reg, floating* P,
                                    const floating* A, floating* Z, floating* work, int n,
                                    uint64_t* rng) noexcept nogil:
    # Keras: moving = moving * momentum + batch * (1 - momentum)
    cdef Py_ssize_t m = row[PLAN_N_OUT], i, j
    cdef const floating* gamma = _at(P, row[PLAN_W])
    cdef const floating* beta = _at(P, row[PLAN_B])
    cdef floating* Xh = _at(work, row[PLAN_S]) if reg != NULL else NULL
    cdef floating* aux = _at(work, row[PLAN_MASK]) if reg != NULL else NULL
    cdef floating* mm = P + row[PLAN_P2]
    cdef floating* mv = P + row[PLAN_P3]
    cdef floating inv, mu, g, b, mom, one_m
    cdef double s, d, eps = _plan_float(row, PLAN_F0)
    cdef bint train_stats = reg != NULL and reg[1] == 0
    for j in range(m):
        if train_stats:
            _mean_var(A + j, n, m, &s, &d)
            mom = <floating>reg[0]
            one_m = <floating>(1.0 - reg[0])
            mm[j] = mm[j] * mom + <floating>s * one_m
            mv[j] = mv[j] * mom + <floating>d * one_m
            mu = <floating>s
            inv = <floating>(1.0 / sqrt(d + eps))
        else:
            mu = mm[j]
            inv = <floating>(1.0 / sqrt(<double>mv[j] + eps))
        if aux != NULL:
            aux[j] = inv
        g = gamma[j] if gamma != NULL else 1
        b = beta[j] if beta != NULL else 0
        for i in range(n):
            if Xh != NULL:
                Xh[i * m + j] = (A[i * m + j] - mu) * inv
                Z[i * m + j] = Xh[i * m + j] * g + b
            else:
                Z[i * m + j] = (A[i * m + j] - mu) * (inv * g) + b

cdef inline void _batchnorm_backward(const Py_ssize_t* row, const double* reg, floating* P,
                                     floating* G, floating* work, floating* D, int n,
                                     bint want_dx, floating sgd_lr) noexcept nogil:
    cdef Py_ssize_t m = row[PLAN_N_OUT], i, j
    cdef floating* gamma = _at(P, row[PLAN_W])
    cdef floating* Xh = _at(work, row[PLAN_S])
    cdef floating* aux = _at(work, row[PLAN_MASK])
    cdef floating* s1 = aux + m
    cdef floating* s2 = aux + 2 * m
    cdef floating g
    cdef double a, b
    cdef bint frozen_stats = reg[1] != 0
    for j in range(m):
        a = 0
        b = 0
        for i in range(n):
            a += D[i * m + j]
            b += <double>D[i * m + j] * Xh[i * m + j]
        s1[j] = <floating>a
        s2[j] = <floating>b
    if want_dx:
        for j in range(m):
            g = (gamma[j] if gamma != NULL else 1) * aux[j]
            if frozen_stats:  # statistics are constants: an affine map
                for i in range(n):
                    D[i * m + j] = D[i * m + j] * g
            else:
                g = g / n
                for i in range(n):
                    D[i * m + j] = g * (n * D[i * m + j] - s1[j] - Xh[i * m + j] * s2[j])
    _affine_grads(row, P, G, s2, s1, m, sgd_lr, reg[2] != 0)


# -- LayerNormalization: per row
cdef inline void _layernorm_forward(const Py_ssize_t* row, const double* reg, floating* P,
                                    const floating* A, floating* Z, floating* work, int n,
                                    uint64_t* rng) noexcept nogil:
    cdef Py_ssize_t m = row[PLAN_N_OUT], i, j
    cdef const floating* gamma = _at(P, row[PLAN_W])
    cdef const floating* beta = _at(P, row[PLAN_B])
    cdef floating* Xh = _at(work, row[PLAN_S]) if reg != NULL else NULL
    cdef floating* aux = _at(work, row[PLAN_MASK]) if reg != NULL else NULL
    cdef floating inv, mu, g
    cdef double s, d, eps = _plan_float(row, PLAN_F0)
    for i in range(n):
        _mean_var(A + i * m, m, 1, &s, &d)
        mu = <floating>s
        inv = <floating>(1.0 / sqrt(d + eps))
        if aux != NULL:
            aux[i] = inv
        for j in range(m):
            g = (A[i * m + j] - mu) * inv
            if Xh != NULL:
                Xh[i * m + j] = g
            Z[i * m + j] = g * (gamma[j] if gamma != NULL else 1) + (
                beta[j] if beta != NULL else 0)

cdef inline void _layernorm_backward(const Py_ssize_t* row, const double* reg, floating* P,
                                     floating* G, floating* work, floating* D, int n,
                                     bint want_dx, floating sgd_lr) noexcept nogil:
    cdef Py_ssize_t m = row[PLAN_N_OUT], i, j
    cdef floating* gamma = _at(P, row[PLAN_W])
    cdef floating* Xh = _at(work, row[PLAN_S])
    cdef floating* aux = _at(work, row[PLAN_MASK])
    cdef floating* s1 = aux + n
    cdef floating* s2 = aux + n + m
    cdef floating g
    cdef double a, b, inv
    for j in range(m):
        s1[j] = 0
        s2[j] = 0
    for i in range(n):
        for j in range(m):
            s1[j] += D[i * m + j]
            s2[j] += D[i * m + j] * Xh[i * m + j]
    if want_dx:
        for i in range(n):
            a = 0
            b = 0
            for j in range(m):
                g = D[i * m + j] * (gamma[j] if gamma != NULL else 1)
                a += g
                b += <double>g * Xh[i * m + j]
            inv = <double>aux[i] / m
            for j in range(m):
                g = D[i * m + j] * (gamma[j] if gamma != NULL else 1)
                D[i * m + j] = <floating>(inv * (m * <double>g - a - Xh[i * m + j] * b))
    _affine_grads(row, P, G, s2, s1, m, sgd_lr, reg[2] != 0)


# -- Normalization (adapted mean and variance)
cdef inline void _normalize_forward(const Py_ssize_t* row, const double* reg, floating* P,
                                    const floating* A, floating* Z, floating* work, int n,
                                    uint64_t* rng) noexcept nogil:
    # Keras: (x - mean) / max(sqrt(variance), epsilon()), epsilon() = 1e-7
    cdef Py_ssize_t m = row[PLAN_N_OUT], i, j
    cdef floating* mm = P + row[PLAN_P2]
    cdef floating* mv = P + row[PLAN_P3]
    for i in range(n):
        for j in range(m):
            Z[i * m + j] = (A[i * m + j] - mm[j]) / _norm_divisor(mv[j])

cdef inline void _normalize_backward(const Py_ssize_t* row, const double* reg, floating* P,
                                     floating* G, floating* work, floating* D, int n,
                                     bint want_dx, floating sgd_lr) noexcept nogil:
    cdef Py_ssize_t m = row[PLAN_N_OUT], i, j
    if want_dx:
        for i in range(n):
            for j in range(m):
                D[i * m + j] = D[i * m + j] / _norm_divisor(P[row[PLAN_P3] + j])


# -- Rescaling: x * scale + offset
cdef inline void _rescale_forward(const Py_ssize_t* row, const double* reg, floating* P,
                                  const floating* A, floating* Z, floating* work, int n,
                                  uint64_t* rng) noexcept nogil:
    cdef Py_ssize_t i, size = <Py_ssize_t>n * row[PLAN_N_OUT]
    cdef floating sc = <floating>_plan_float(row, PLAN_F0)
    cdef floating off = <floating>_plan_float(row, PLAN_F1)
    for i in range(size):
        Z[i] = A[i] * sc + off

cdef inline void _rescale_backward(const Py_ssize_t* row, const double* reg, floating* P,
                                   floating* G, floating* work, floating* D, int n,
                                   bint want_dx, floating sgd_lr) noexcept nogil:
    cdef Py_ssize_t i, size = <Py_ssize_t>n * row[PLAN_N_OUT]
    cdef floating sc
    if want_dx:
        sc = <floating>_plan_float(row, PLAN_F0)
        for i in range(size):
            D[i] = D[i] * sc


# -- GaussianNoise: x + N(0, stddev) in training
cdef inline void _gauss_noise_forward(const Py_ssize_t* row, const double* reg, floating* P,
                                      const floating* A, floating* Z, floating* work, int n,
                                      uint64_t* rng) noexcept nogil:
    cdef Py_ssize_t i, size = <Py_ssize_t>n * row[PLAN_N_OUT]
    if reg != NULL and reg[0] > 0:
        _normals(rng, Z, size, 0.0, reg[0])
        for i in range(size):
            Z[i] = A[i] + Z[i]
    else:
        memcpy(Z, A, size * sizeof(floating))

cdef inline void _gauss_noise_backward(const Py_ssize_t* row, const double* reg, floating* P,
                                       floating* G, floating* work, floating* D, int n,
                                       bint want_dx, floating sgd_lr) noexcept nogil:
    pass  # the identity's gradient


# -- GaussianDropout: x * N(1, stddev) in training, the multiplier kept for the backward pass
cdef inline void _gauss_dropout_forward(const Py_ssize_t* row, const double* reg, floating* P,
                                        const floating* A, floating* Z, floating* work, int n,
                                        uint64_t* rng) noexcept nogil:
    cdef Py_ssize_t i, size = <Py_ssize_t>n * row[PLAN_N_OUT]
    cdef floating* Xh = _at(work, row[PLAN_S]) if reg != NULL else NULL
    if reg != NULL and reg[0] > 0:
        _normals(rng, Xh, size, 1.0, reg[0])
        for i in range(size):
            Z[i] = A[i] * Xh[i]
    else:
        memcpy(Z, A, size * sizeof(floating))

cdef inline void _gauss_dropout_backward(const Py_ssize_t* row, const double* reg, floating* P,
                                         floating* G, floating* work, floating* D, int n,
                                         bint want_dx, floating sgd_lr) noexcept nogil:
    cdef Py_ssize_t i, size = <Py_ssize_t>n * row[PLAN_N_OUT]
    cdef floating* Xh = _at(work, row[PLAN_S])
    if want_dx and reg[0] > 0:
        for i in range(size):
            D[i] = D[i] * Xh[i]


cdef void _norm_forward(const Py_ssize_t* row, const double* reg, floating* P, const floating* A,
                        floating* Z, floating* work, int n, uint64_t* rng) noexcept nogil:
    """One op forward; reg is NULL at inference. BATCHNORM in training updates the moving
    statistics in P."""
    cdef int kind = <int>row[PLAN_KIND]
    if kind == OP_BATCHNORM: _batchnorm_forward(row, reg, P, A, Z, work, n, rng)
    elif kind == OP_LAYERNORM: _layernorm_forward(row, reg, P, A, Z, work, n, rng)
    elif kind == OP_NORMALIZE: _normalize_forward(row, reg, P, A, Z, work, n, rng)
    elif kind == OP_RESCALE: _rescale_forward(row, reg, P, A, Z, work, n, rng)
    elif kind == OP_GAUSS_NOISE: _gauss_noise_forward(row, reg, P, A, Z, work, n, rng)
    elif kind == OP_GAUSS_DROPOUT: _gauss_dropout_forward(row, reg, P, A, Z, work, n, rng)


cdef void _norm_backward(const Py_ssize_t* row, const double* reg, floating* P, floating* G,
                         floating* work, floating* D, int n, bint want_dx,
                         floating sgd_lr) noexcept nogil:
    """One op backward, D (n x m) in place: d loss/d output -> d loss/d input (when want_dx).
    Gradients of gamma and beta go to G at their offsets, or with sgd_lr > 0 straight into the
    parameters (P -= sgd_lr * grad, after D used the old values). Only trainable gamma/beta
    reach here with an offset in G's range: a frozen layer's are read, never written."""
    cdef int kind = <int>row[PLAN_KIND]
    if kind == OP_BATCHNORM: _batchnorm_backward(row, reg, P, G, work, D, n, want_dx, sgd_lr)
    elif kind == OP_LAYERNORM: _layernorm_backward(row, reg, P, G, work, D, n, want_dx, sgd_lr)
    elif kind == OP_NORMALIZE: _normalize_backward(row, reg, P, G, work, D, n, want_dx, sgd_lr)
    elif kind == OP_RESCALE: _rescale_backward(row, reg, P, G, work, D, n, want_dx, sgd_lr)
    elif kind == OP_GAUSS_NOISE:
        _gauss_noise_backward(row, reg, P, G, work, D, n, want_dx, sgd_lr)
    elif kind == OP_GAUSS_DROPOUT:
        _gauss_dropout_backward(row, reg, P, G, work, D, n, want_dx, sgd_lr)


# ---------------------------------------------------------------------------------------------
# The network: forward pass, training steps, evaluation.
# ---------------------------------------------------------------------------------------------
cdef void _op_forward(const _Opts* o, const Py_ssize_t* row, const double* reg_row,
                      const floating* P, const floating** rows, const floating* A,
                      floating* work, Py_ssize_t r0, int n, uint64_t* rng, const floating* Wl,
                      int ldw, floating* part, bint epilogue,
                      const float* Wp=NULL) noexcept nogil:
    """One op of the plan on a block of n rows, r0 the block's first row in the batch: reads the
    block's input at A (contiguous) or, for a dense first op, through `rows`; writes the block's
    rows of the op's output (work + row[PLAN_Z]) and of its saved pre-activation or mask.

    reg_row: the op's `reg` row, NULL at inference (dropout and noise are then the identity).
    Wl, ldw: a dense op's weights (NULL: its own, row-major); part: a dense op's product scratch;
    Wp: its weights as panels too, or NULL (see _dense_forward).
    epilogue False: a dense op's two partial sums are left unfinished (train_steps' split middle
    finishes them). The normalization ops read the whole batch (r0 is 0 for them)."""
    cdef int kind = <int>row[PLAN_KIND], n_in = <int>row[PLAN_N_IN], n_out = <int>row[PLAN_N_OUT]
    cdef Py_ssize_t i, size = <Py_ssize_t>n * n_out
    cdef floating* Z = work + row[PLAN_Z] + r0 * n_out
    cdef floating* S = NULL if row[PLAN_S] < 0 else work + row[PLAN_S] + r0 * n_out
    cdef floating* M
    cdef floating keep_scale
    cdef double rate
    if kind == OP_DENSE or kind == OP_DENSE_FROZEN:
        _dense_forward(o, rows, A, Wl if Wl != NULL else P + row[PLAN_W],
                       ldw if Wl != NULL else n_out,
                       NULL if row[PLAN_B] < 0 else P + row[PLAN_B], <int>row[PLAN_ACT], Z, S,
                       part, n, n_in, n_out, epilogue, Wp)
    elif kind == OP_ACTIVATION:
        memcpy(Z, A, size * sizeof(floating))
        if S != NULL:
            memcpy(S, A, size * sizeof(floating))
        _act_forward(<int>row[PLAN_ACT], Z, n, n_out)
    elif kind == OP_DROPOUT:
        rate = reg_row[0] if reg_row != NULL else 0.0
        if rate > 0:
            M = work + row[PLAN_MASK] + r0 * n_out
            keep_scale = <floating>(1.0 / (1.0 - rate))
            for i in range(size):
                # 53 random bits -> uniform [0, 1)
                if <double>(_splitmix64(rng) >> 11) * (1.0 / 9007199254740992.0) < rate:
                    M[i] = 0
                else:
                    M[i] = keep_scale
                Z[i] = A[i] * M[i]
        else:
            memcpy(Z, A, size * sizeof(floating))
    else:
        _norm_forward(row, reg_row, <floating*>P, A, Z, work, n, rng)


cdef const floating* _net_forward(const _Opts* o, const Py_ssize_t* plan, Py_ssize_t n_ops,
                                  const floating* P, const floating** rows, const floating* A,
                                  floating* work, int n, uint64_t* rng, const double* reg,
                                  const floating* W0=NULL, int ldw0=0,
                                  float** wpan=NULL) noexcept nogil:
    """Runs every op on the batch (n rows); returns a pointer to the last op's output.

    plan: n_ops rows of N_PLAN (row-major); reg: n_ops rows of 4 when training, NULL at inference.
    The batch is contiguous at A, or given by its row pointers `rows` (then A is NULL and the first
    op is dense on the own kernels: see Trainer). W0, when given, replaces the first op's weights
    (the training copy: rows ldw0 apart, or panels when ldw0 is FD_PANELS). wpan (or NULL): per
    op, its weights as the packed GEMM's panels, or NULL (see _dense_forward).
    """
    cdef Py_ssize_t l
    cdef const Py_ssize_t* row
    for l in range(n_ops):
        row = plan + l * N_PLAN
        _op_forward(o, row, reg + l * 4 if reg != NULL else NULL, P, rows if l == 0 else NULL,
                    A, work, 0, n, rng, W0 if l == 0 else NULL, ldw0, work + row[PLAN_PART],
                    True, wpan[l] if wpan != NULL else NULL)
        A = work + row[PLAN_Z]
    return A


cdef double _reg_loss_grad(const Py_ssize_t[:, ::1] plan, const double[:, ::1] reg,
                           const floating* P, floating* G, bint want_grad) noexcept nogil:
    """Sum of the l1/l2 penalties of every dense op; adds their gradients into G if asked."""
    cdef Py_ssize_t l, i, off, size
    cdef double total = 0, l1, l2, w
    cdef int part
    for l in range(plan.shape[0]):
        if plan[l, PLAN_KIND] != OP_DENSE:
            continue
        for part in range(2):
            l1 = reg[l, 2 * part]
            l2 = reg[l, 2 * part + 1]
            if l1 == 0 and l2 == 0:
                continue
            if part == 0:
                off = plan[l, PLAN_W]
                size = plan[l, PLAN_N_IN] * plan[l, PLAN_N_OUT]
            else:
                off = plan[l, PLAN_B]
                if off < 0:
                    continue
                size = plan[l, PLAN_N_OUT]
            for i in range(off, off + size):
                w = P[i]
                total += l1 * fabs(w) + l2 * w * w
                if want_grad:
                    G[i] += <floating>(l1 * (1 if w > 0 else (-1 if w < 0 else 0)) + 2 * l2 * w)
    return total


cdef bint _has_penalty(const Py_ssize_t[:, ::1] plan, const double[:, ::1] reg) noexcept nogil:
    cdef Py_ssize_t l
    for l in range(plan.shape[0]):
        if plan[l, PLAN_KIND] == OP_DENSE and (reg[l, 0] != 0 or reg[l, 1] != 0 or
                                               reg[l, 2] != 0 or reg[l, 3] != 0):
            return True
    return False


cdef inline const floating* _rows(const floating* src, Py_ssize_t width, const Py_ssize_t* order,
                                  Py_ssize_t start, int n, floating* buf) noexcept nogil:
    """Rows start..start+n of src, gathered through `order` into buf when order is given."""
    cdef Py_ssize_t i
    if order == NULL:
        return src + start * width
    for i in range(n):
        memcpy(buf + i * width, src + order[start + i] * width, width * sizeof(floating))
    return buf


# ---------------------------------------------------------------------------------------------
# Training: one step path.
#
# A step is: forward (every op), loss and metrics on the pre-update outputs, backward (every op,
# last first), the optimizer update. It runs in one of two shapes, which share the per-op helpers
# below (_op_forward, _loss_block, _op_backward):
#   whole: every op over the whole batch, each product cut along its inputs between the threads;
#   split: the first layer's products over the whole batch, cut along its inputs as above, and
#     the middle (the first layer's bias and activation, the later layers forward and back, the
#     loss, the metrics) cut into two blocks of rows, one per thread (_middle_part). Every row's
#     arithmetic is its own; the sums over rows (the later layers' weight and bias gradients, the
#     loss, the metrics) are taken per block and added block 0 + block 1, so the results do not
#     depend on the thread count. Done whole, that middle would run on one thread while the
#     other waits.
# Plain SGD with nothing that needs the whole gradient first (clipping, decay, penalties) folds
# its update into the weight-gradient products (sgd_lr > 0) and skips the separate pass.
# ---------------------------------------------------------------------------------------------
cdef struct _Step:
    _Opts o
    const Py_ssize_t* plan      # n_ops x N_PLAN, row-major
    const double* reg           # n_ops x 4
    Py_ssize_t n_ops
    void* P                     # parameters (floating*: float or double, like every void* here)
    void* G                     # the gradient vector
    void* W                     # workspace
    const void** rows0          # the batch's rows, read in place (NULL: contiguous at A0)
    const void* A0
    void* W0                    # the first layer's training copy (NULL: none), rows ldw0 apart
    int ldw0
    const void* Yb              # the batch's targets and sample weights (NULL: none)
    const void* swb
    void* D0                    # delta buffers: block b uses rows from D0 + r0 * maxw on
    void* D1
    Py_ssize_t maxw
    int n
    int h                       # split: block 0 is rows [0, h), block 1 rows [h, n)
    int loss_code
    bint fused                  # the loss reads the last op's pre-activation
    const Py_ssize_t* metrics
    Py_ssize_t n_metrics
    Py_ssize_t y_w
    uint64_t* rng
    double sgd_lr               # > 0: the SGD update folded into the products
    float* dpan[2]              # packed steps: deltas as panels, op l's in dpan[l % 2] (or NULL:
                                # none; see _delta_panels)
    float** wpan                # packed steps with an optimizer pass: per op, its weights as
                                # panels (NULL: none; see _opt_range_panels)
    # split only
    bint split0                 # the first layer's product was cut along its inputs
    void* Dfin                  # n x (first layer's width): its delta, both blocks' rows
    void* part2                 # per block (b * p2stride on): the later layers' product scratch
    Py_ssize_t p2stride
    void* partials              # per block (b * psize on): later layers' dW and db, last first
    Py_ssize_t psize
    double* hstats              # per block (b * n_stats on): loss sum, metric sums
    Py_ssize_t n_stats


cdef double _loss_block(const _Step* c, Py_ssize_t r0, int nh, floating* D,
                        double* msums) noexcept nogil:
    """Loss and metrics of rows [r0, r0 + nh): returns the block's loss sum, adds its metric
    sums into msums, and writes the loss gradient (scaled by the whole batch's size) into D.
    compile() metrics are not sample-weighted in Keras 3 (only weighted_metrics are)."""
    cdef const Py_ssize_t* row = c.plan + (c.n_ops - 1) * N_PLAN
    cdef Py_ssize_t out_w = row[PLAN_N_OUT]
    cdef const floating* Z = <const floating*>c.W + row[PLAN_Z] + r0 * out_w
    cdef const floating* L = <const floating*>c.W + row[PLAN_S] + r0 * out_w if c.fused else Z
    cdef const floating* Y = <const floating*>c.Yb + r0 * c.y_w
    cdef const floating* sw = <const floating*>c.swb + r0 if c.swb != NULL else NULL
    cdef double loss = _loss_grad(c.loss_code, L, Y, sw, D, nh, out_w, 1.0 / c.n)
    _metrics(c.metrics, c.n_metrics, Z, Y, <const floating*>NULL, nh, out_w, c.y_w, msums)
    return loss


cdef inline bint _relu_gates(const _Step* c, Py_ssize_t l) noexcept nogil:
    """Whether op l's input gradient carries the gradient of op l-1's relu (both dense ops): the
    input-gradient product gates it (_dense_input_grad), and op l-1 skips its own pass."""
    cdef const Py_ssize_t* row
    cdef const Py_ssize_t* prev
    if l <= 0 or l >= c.n_ops:
        return False
    row = c.plan + l * N_PLAN
    prev = row - N_PLAN
    return ((row[PLAN_KIND] == OP_DENSE or row[PLAN_KIND] == OP_DENSE_FROZEN) and
            (prev[PLAN_KIND] == OP_DENSE or prev[PLAN_KIND] == OP_DENSE_FROZEN) and
            prev[PLAN_ACT] == ACT_RELU)


cdef inline bint _delta_panels(const _Step* c, Py_ssize_t l, int n) noexcept nogil:
    """Whether op l's delta reaches it as panels (in c.dpan[l % 2]) instead of row-major: on the
    packed GEMM, op l a trainable dense op whose relu's gradient op l+1's input-gradient product
    takes (_relu_gates), so that the delta that product writes is op l's whole delta, read by
    op l's two products only; its weight gradient then skips packing it."""
    return (c.dpan[0] != NULL and _on_packed(&c.o, n) and _relu_gates(c, l + 1) and
            c.plan[l * N_PLAN + PLAN_KIND] == OP_DENSE)


cdef bint _op_backward(const _Step* c, const _Opts* o, Py_ssize_t l, Py_ssize_t r0, int nh,
                       floating* D, floating* D2, floating* dW, floating* db, floating lr,
                       floating* part) noexcept nogil:
    """Op l backward on rows [r0, r0 + nh): D (the block's rows) holds dLoss/d(output of op l),
    or of its pre-activation for a fused last op. A dense op writes its weight and bias gradients
    into dW and db (lr > 0: applies the SGD update there instead) and, when an op is before it,
    its input gradient into D2. Returns True when the input gradient is in D2 (swap the buffers).
    part: product scratch."""
    cdef const Py_ssize_t* row = c.plan + l * N_PLAN
    cdef int kind = <int>row[PLAN_KIND], n_in = <int>row[PLAN_N_IN], n_out = <int>row[PLAN_N_OUT]
    cdef int act = <int>row[PLAN_ACT]
    cdef floating* W = <floating*>c.W
    cdef floating* P = <floating*>c.P
    cdef const floating* A = (<const floating*>c.A0 if l == 0 else
                              W + c.plan[(l - 1) * N_PLAN + PLAN_Z] + r0 * n_in)
    cdef floating* S = W + row[PLAN_S] + r0 * n_out if row[PLAN_S] >= 0 else NULL
    cdef floating* Z = W + row[PLAN_Z] + r0 * n_out
    cdef bint act_grad = not (l == c.n_ops - 1 and c.fused) and not _relu_gates(c, l + 1)
    cdef const floating* gate = A if _relu_gates(c, l) else NULL
    cdef bint first_copy = l == 0 and c.W0 != NULL
    cdef Py_ssize_t i
    cdef _Panels pn
    pn.dS = c.dpan[l % 2] if floating is float and _delta_panels(c, l, nh) else NULL
    pn.dX = c.dpan[(l - 1) % 2] if floating is float and l > 0 and _delta_panels(c, l - 1, nh) \
        else NULL
    if kind == OP_DENSE:
        if act_grad:
            _act_backward(act, S, Z, D, D, nh, n_out)
        _dense_backward(o, <const floating**>c.rows0 if l == 0 else NULL, A,
                        <floating*>c.W0 if first_copy else P + row[PLAN_W],
                        c.ldw0 if first_copy else n_out, D, dW, db, D2 if l > 0 else NULL,
                        nh, n_in, n_out, lr, part, gate, &pn)
        return l > 0
    if kind == OP_ACTIVATION:
        if act_grad:
            _act_backward(act, A, Z, D, D, nh, n_out)
    elif kind == OP_DROPOUT:
        if c.reg[l * 4] > 0:
            for i in range(<Py_ssize_t>nh * n_out):
                D[i] *= W[row[PLAN_MASK] + r0 * n_out + i]
    elif kind == OP_DENSE_FROZEN:
        # no weight gradient: only the input's (if an op is before it)
        if act_grad:
            _act_backward(act, S, Z, D, D, nh, n_out)
        if l > 0:
            _dense_input_grad(o, P + row[PLAN_W], n_out, D, D2, nh, n_in, n_out, part, gate, &pn)
            return True
    else:
        _norm_backward(row, c.reg + l * 4, P, <floating*>c.G, W, D, nh, l > 0, lr)
    return False


cdef void _middle_part(void* arg, int part) noexcept nogil:
    """Block `part` of the split middle (see above): the first layer's bias and activation, the
    later ops forward and back on the block's rows, their weight gradients into the block's
    partials, the first layer's delta into Dfin. Float only: the split runs on the own kernels."""
    cdef const _Step* c = <const _Step*>arg
    cdef int r0 = 0 if part == 0 else c.h
    cdef int r1 = c.h if part == 0 else c.n
    cdef int nh = r1 - r0, n_out
    cdef Py_ssize_t l, i, off = 0, last = c.n_ops - 1
    cdef const Py_ssize_t* row = c.plan
    cdef float* W = <float*>c.W
    cdef const float* P = <const float*>c.P
    cdef float* D = <float*>c.D0 + r0 * c.maxw
    cdef float* D2 = <float*>c.D1 + r0 * c.maxw
    cdef float* tmp
    cdef float* pw = <float*>c.partials + part * c.psize
    cdef float* scratch = <float*>c.part2 + part * c.p2stride
    cdef float* Z
    cdef float* Dfin = <float*>c.Dfin + r0 * row[PLAN_N_OUT]
    cdef double* hs = c.hstats + part * c.n_stats
    cdef _Opts one = c.o
    one.threads = 1  # the two blocks are the threads' work
    for i in range(c.n_stats):
        hs[i] = 0
    if nh <= 0:
        memset(pw, 0, c.psize * sizeof(float))
        return
    # the first layer: sum of the two partial products, bias, activation
    n_out = <int>row[PLAN_N_OUT]
    Z = W + row[PLAN_Z]
    fd_combine_rows(Z, W + row[PLAN_PART], P + row[PLAN_B] if row[PLAN_B] >= 0 else NULL,
                    r0, r1, n_out, c.split0)
    if row[PLAN_S] >= 0:
        memcpy(W + row[PLAN_S] + r0 * n_out, Z + r0 * n_out, nh * n_out * sizeof(float))
    _act_forward(<int>row[PLAN_ACT], Z + r0 * n_out, nh, n_out)
    # the later ops forward, the loss and metrics, the later ops backward
    for l in range(1, c.n_ops):
        row = c.plan + l * N_PLAN
        _op_forward(&one, row, NULL, P, NULL,
                    W + c.plan[(l - 1) * N_PLAN + PLAN_Z] + r0 * row[PLAN_N_IN], W, r0, nh,
                    NULL, NULL, 0, scratch, True)
    hs[0] = _loss_block(c, r0, nh, D, hs + 1)
    for l in range(last, 0, -1):
        row = c.plan + l * N_PLAN
        if _op_backward(c, &one, l, r0, nh, D, D2, pw + off,
                        pw + off + row[PLAN_N_IN] * row[PLAN_N_OUT] if row[PLAN_B] >= 0 else NULL,
                        <float>0, scratch):
            tmp = D
            D = D2
            D2 = tmp
        if row[PLAN_KIND] == OP_DENSE:
            off += row[PLAN_N_IN] * row[PLAN_N_OUT] + (row[PLAN_N_OUT] if row[PLAN_B] >= 0 else 0)
    # the first layer's activation, backward (unless op 1's product took it), into the shared
    # n x width buffer (its weight gradient is cut along its inputs and reads all rows)
    row = c.plan
    memcpy(Dfin, D, nh * n_out * sizeof(float))
    if not _relu_gates(c, 1):
        _act_backward(<int>row[PLAN_ACT],
                      W + row[PLAN_S] + r0 * n_out if row[PLAN_S] >= 0 else NULL,
                      W + row[PLAN_Z] + r0 * n_out, Dfin, Dfin, nh, n_out)


cdef void _sum_partials(const _Step* c) noexcept nogil:
    """The later layers' gradients from the split middle's two partials, block 0 + block 1: into
    G, or, with the SGD update folded in, applied to the parameters."""
    cdef Py_ssize_t l, i, off = 0, msize
    cdef const Py_ssize_t* row
    cdef const float* p0
    cdef const float* p1
    cdef float* dst
    cdef float lr = <float>c.sgd_lr
    cdef float* base = <float*>(c.P if c.sgd_lr > 0 else c.G)
    cdef int n_out
    for l in range(c.n_ops - 1, 0, -1):
        row = c.plan + l * N_PLAN
        if row[PLAN_KIND] != OP_DENSE:
            continue
        n_out = <int>row[PLAN_N_OUT]
        msize = row[PLAN_N_IN] * n_out
        p0 = <const float*>c.partials + off
        p1 = <const float*>c.partials + c.psize + off
        dst = base + row[PLAN_W]
        if lr > 0:
            for i in range(msize):
                dst[i] += -lr * (p0[i] + p1[i])
        else:
            for i in range(msize):
                dst[i] = p0[i] + p1[i]
        if row[PLAN_B] >= 0:
            dst = base + row[PLAN_B]
            if lr > 0:
                for i in range(n_out):
                    dst[i] -= lr * (p0[msize + i] + p1[msize + i])
            else:
                for i in range(n_out):
                    dst[i] = p0[msize + i] + p1[msize + i]
            msize += n_out
        off += msize


cdef inline void _row_ptrs(const floating* src, Py_ssize_t width, const Py_ssize_t* order,
                          Py_ssize_t start, int n, const floating** out) noexcept nogil:
    """Pointers to rows start..start+n of src, through `order` when given."""
    cdef int i
    for i in range(n):
        out[i] = src + (order[start + i] if order != NULL else start + i) * width


cdef void _copy_weights(floating* W, floating* Wc, Py_ssize_t k, int m, int ldc,
                        bint into_copy) noexcept nogil:
    """Between row-major W (k x m) and the training copy Wc: rows ldc apart (padding zeroed), or
    16-column panels when ldc is FD_PANELS (see _simd.h). into_copy: W -> Wc, else Wc -> W."""
    cdef Py_ssize_t r, c, w, step = 16 if ldc == FD_PANELS else m
    cdef Py_ssize_t width = 16 if ldc == FD_PANELS else ldc
    cdef floating* dst
    for r in range(k):
        c = 0
        while c < m:
            # a panel's row, or the whole padded row
            dst = Wc + (c // 16) * k * 16 + r * 16 if ldc == FD_PANELS else Wc + r * ldc
            w = m - c if m - c < step else step
            if into_copy:
                memcpy(dst, W + r * m + c, w * sizeof(floating))
                memset(dst + w, 0, (width - w) * sizeof(floating))
            else:
                memcpy(W + r * m + c, dst, w * sizeof(floating))
            c += step



cdef void _first_layer_grad(const _Step* c, int n1, const float** rows1) noexcept nogil:
    """The split step's first-layer weight and bias gradients over all rows, cut along its inputs
    (with the SGD update folded in: the update). n1 > 0 (plain SGD): the next batch's first
    product, its rows at rows1, joins the same job and reads the updated weights (see
    fd_weight_grad_then_forward in _simd.h)."""
    cdef const Py_ssize_t* row = c.plan
    cdef int n_in = <int>row[PLAN_N_IN], n_out = <int>row[PLAN_N_OUT]
    cdef float* W = <float*>c.W
    cdef float lr = <float>c.sgd_lr
    cdef float* Gl = <float*>(c.P if c.sgd_lr > 0 else c.G)
    cdef float* Wl = <float*>c.W0 if c.W0 != NULL else <float*>c.P + row[PLAN_W]
    cdef int ldw = c.ldw0 if c.W0 != NULL else n_out
    cdef const float* Dfin = <const float*>c.Dfin
    if n1 > 0:
        fd_weight_grad_then_forward(c.n, n_in, n_out, -lr, <const float**>c.rows0, Dfin, Wl, ldw,
                                    n1, rows1, W + row[PLAN_Z], W + row[PLAN_PART],
                                    _threads(&c.o, c.n, n_in, n_out), c.o.sparse)
        if row[PLAN_B] >= 0:
            _bias_grad(Dfin, Gl + row[PLAN_B], c.n, n_out, lr)
    else:
        _dense_backward(&c.o, <const float**>c.rows0, <const float*>NULL, Wl, ldw, Dfin,
                        Wl if c.W0 != NULL else Gl + row[PLAN_W],
                        NULL if row[PLAN_B] < 0 else Gl + row[PLAN_B], <float*>NULL, c.n, n_in,
                        n_out, lr)


cdef struct _Area:
    # memory a Trainer keeps across runs, grown when a run needs more (_grow)
    float* p
    size_t floats


cdef float* _grow(_Area* a, size_t need, str what) except? NULL:
    """a's memory, grown to at least `need` floats (contents not kept)."""
    cdef float* grown
    if need > a.floats:
        grown = <float*>realloc(a.p, need * sizeof(float))
        if grown == NULL:
            raise MemoryError(f"{what} ({need * sizeof(float)} bytes)")
        a.p, a.floats = grown, need
    return a.p


cdef inline float* _aligned(float* p) noexcept nogil:
    """p rounded up to 64 bytes (the packed kernels' 64-byte loads then never straddle two
    cache lines)."""
    return <float*>((<size_t>p + 63) // 64 * 64)


cdef class Trainer:
    """The compiled training state of one `fit` (for one batch size): the network's plan, its
    workspace and gradient buffer, the loss, metrics and optimizer settings, the dropout
    generator and the engine's options, checked and derived once; `run` trains over a range of
    samples (one call per chunk of batches).

    Args:
        plan, reg, layout: the network (see PLAN_*, reg, LAY_*; `_engine.Plan` builds them).
        work: the workspace (`Plan.workspace`); grads: the gradient buffer, as long as the
            trainable part of the parameters; both of the model's float type.
        batch_size: the plan's batch size (the largest batch `run` may take).
        loss_code, fused_logits: the loss reads the last op's pre-activation when fused_logits.
        metrics: metric codes; opt_code, hp: the optimizer and its hyper-parameters (HP_*).
        rng: (1,) uint64, the dropout generator's state, advanced in place.
    Options (each on by default; tests switch them off to check they give the same bits):
        sparse: weight gradients skip all-zero input rows.
        transposed_dx: input gradients as dX^T = W @ dS^T (no packing of W^T).
        pad_first, panels: train the first layer's weights in an aligned copy, as 16-column
            panels (or padded rows), when its width is not a multiple of 16. panels=None (the
            default): panels where the tiles are 16 columns wide, padded rows on AVX-512.
        split_middle: cut the middle of each step into two row blocks (see `_middle_part`).
        merge_next: plain SGD runs the next batch's first product in the weight-gradient job.
        own_rows: products with at most this many batch rows run on the own kernels, larger
            ones on the packed GEMM (0 .. MAX_OWN_ROWS).
        packed: float32 products over own_rows rows on the packed GEMM (`fd_gemm_packed`; off:
            BLAS, whose bits depend on its own thread count).
        delta_panels: on the packed GEMM, a relu layer's delta passes from the input-gradient
            product that makes it to its two products as panels (see _delta_panels).
        weight_panels: on the packed GEMM, an optimizer's pass (all but plain SGD, which updates
            in the products) writes the weights as the panels the next step's forward products
            take (see _opt_range_panels).
    """
    cdef readonly object work, grads, rng
    cdef const Py_ssize_t[:, ::1] plan
    cdef const double[:, ::1] reg
    cdef const Py_ssize_t[::1] layout
    cdef const Py_ssize_t[::1] metrics
    cdef const double[::1] hp
    cdef int loss_code, opt_code, batch_size, ldpad
    cdef Py_ssize_t maxw, psize
    cdef bint fused, penalized, fuse_sgd, in_place, split, merge_next, packed, delta_panels
    cdef bint weight_panels
    cdef _Opts o
    cdef _Area pack             # the packed GEMM's work area (see _pack_area)
    cdef _Area dpanels          # two deltas as panels (_Step.dpan; see _panel_area), each
    cdef size_t dpanel_floats   # ... this many floats
    cdef _Area wpanels          # the weights as panels (_Step.wpan; see _weight_panel_area)
    cdef float** wpan           # per op: its panels in wpanels, or NULL

    def __init__(self, plan, reg, layout, work, grads, int batch_size, int loss_code,
                 bint fused_logits, metrics, int opt_code, hp, rng, *, bint sparse=True,
                 bint transposed_dx=True, bint pad_first=True, panels=None,
                 bint split_middle=True, bint merge_next=True, int own_rows=FD_MAX_ROWS,
                 bint packed=True, bint delta_panels=True, bint weight_panels=True):
        self.plan = plan
        self.reg = reg
        _check_plan(self.plan, self.reg)
        self.layout = layout
        self.metrics = metrics
        self.hp = hp
        if self.layout.shape[0] != N_LAY or self.hp.shape[0] != N_HP or len(rng) != 1:
            raise ValueError(f"layout must have {N_LAY} entries, hp {N_HP} and rng 1; received "
                             f"{self.layout.shape[0]}, {self.hp.shape[0]}, {len(rng)}")
        if self.metrics.shape[0] > 64:
            raise ValueError(f"at most 64 metrics; received {self.metrics.shape[0]}")
        self.work, self.grads, self.rng = work, grads, rng
        self.batch_size, self.loss_code, self.fused = batch_size, loss_code, fused_logits
        self.opt_code = opt_code
        self.o = _opts(1)
        self.o.sparse, self.o.transposed_dx = sparse, transposed_dx
        self.o.own_rows = max(0, min(own_rows, FD_MAX_ROWS))
        self.merge_next = merge_next
        # float32 batches over own_rows: the packed GEMM (its area sized per thread count in run)
        self.pack.p, self.pack.floats = NULL, 0
        self.dpanels.p, self.dpanels.floats = NULL, 0
        self.wpanels.p, self.wpanels.floats = NULL, 0
        self.wpan = <float**>calloc(self.plan.shape[0], sizeof(float*))
        if self.wpan == NULL:
            raise MemoryError("the weights' panel pointers")
        self.packed = packed and work.dtype.itemsize == 4 and batch_size > self.o.own_rows
        self.delta_panels = delta_panels
        self.weight_panels = weight_panels
        self._derive(work.dtype.itemsize == 4, pad_first, panels, split_middle)

    def __dealloc__(self):
        free(self.pack.p)
        free(self.dpanels.p)
        free(self.wpanels.p)
        free(self.wpan)

    cdef float* _pack_area(self, int threads) except? NULL:
        """The packed GEMM's work area for `threads` threads: enough for the widest of the
        plan's dense products at this batch size (forward, input and weight gradients)."""
        cdef Py_ssize_t l, k, m, bs = self.batch_size
        cdef size_t need = 0
        for l in range(self.plan.shape[0]):
            if self.plan[l, PLAN_KIND] == OP_DENSE or self.plan[l, PLAN_KIND] == OP_DENSE_FROZEN:
                k, m = self.plan[l, PLAN_N_IN], self.plan[l, PLAN_N_OUT]
                need = max(need, fd_packed_floats(<int>k, <int>m, threads),
                           fd_packed_floats(<int>m, <int>k, threads),
                           fd_packed_floats(<int>bs, <int>m, threads))
        return _grow(&self.pack, need, "the packed products' work area")

    cdef float* _panel_area(self) except? NULL:
        """Room for two deltas as panels (_Step.dpan), each as wide as the widest trainable
        dense op's output at this batch size, 64-byte aligned."""
        cdef Py_ssize_t l
        cdef size_t need = 0
        for l in range(self.plan.shape[0]):
            if self.plan[l, PLAN_KIND] == OP_DENSE:
                need = max(need, fd_packed_panel_floats(self.batch_size,
                                                        <int>self.plan[l, PLAN_N_OUT]))
        self.dpanel_floats = need
        return _aligned(_grow(&self.dpanels, 2 * need + 16, "the deltas' panels"))

    cdef float** _weight_panel_area(self) except NULL:
        """Per op, room for its weights as the packed GEMM's panels of op(B) (trainable dense
        ops; NULL for the others), each 64-byte aligned."""
        cdef Py_ssize_t l, n_ops = self.plan.shape[0]
        cdef size_t need = 16
        cdef float* area
        for l in range(n_ops):
            if self.plan[l, PLAN_KIND] == OP_DENSE:
                need += fd_packed_panel_floats(<int>self.plan[l, PLAN_N_IN],
                                               <int>self.plan[l, PLAN_N_OUT])
        area = _aligned(_grow(&self.wpanels, need, "the weights' panels"))
        for l in range(n_ops):
            self.wpan[l] = NULL
            if self.plan[l, PLAN_KIND] == OP_DENSE:
                self.wpan[l] = area
                area += fd_packed_panel_floats(<int>self.plan[l, PLAN_N_IN],
                                               <int>self.plan[l, PLAN_N_OUT])
        return self.wpan

    cdef _derive(self, bint f32, bint pad_first, object panels, bint split_middle):
        """The step's shape for this network and these settings."""
        cdef bint panels_set = panels is not None
        cdef Py_ssize_t l, n_ops = self.plan.shape[0], later = 0
        cdef int n_out0 = <int>self.plan[0, PLAN_N_OUT]
        self.penalized = _has_penalty(self.plan, self.reg)
        self.fuse_sgd = (self.opt_code == OPT_SGD and self.hp[HP_WEIGHT_DECAY] == 0
                         and self.hp[HP_CLIPVALUE] == 0 and self.hp[HP_GLOBAL_CLIPNORM] == 0
                         and not self.penalized)
        # On the own kernels the first dense layer reads the batch's rows where they are (through
        # `order`), with no gathered copy. BLAS (and a first op that is not dense) needs the copy.
        self.in_place = (f32 and self.batch_size <= self.o.own_rows
                         and self.plan[0, PLAN_KIND] == OP_DENSE)
        # The first layer's weights, when its width is not a multiple of 16 floats (64 bytes)
        # and plain SGD updates them in place: trained in a copy laid out as 16-column panels
        # (FD_PANELS in _simd.h), so that every 16-float load or store of the micro-kernels is
        # one whole cache line and a panel's rows follow each other in memory (a 100-unit
        # layer's 400-byte rows made a third of them straddle two lines). Copied back at the end
        # of each run. Same arithmetic for every element: the bits the row-major weights get.
        # On AVX-512 padded rows instead (_aligned_layout; panels=None, the default).
        self.ldpad = 0
        if (self.in_place and self.fuse_sgd and self.layout[LAY_W0] >= 0 and n_out0 % 16 != 0
                and pad_first):
            self.ldpad = (FD_PANELS if panels else (n_out0 + 15) // 16 * 16) if panels_set \
                else _aligned_layout(n_out0)
        # The middle cut by rows when the first layer reads the batch in place and every later
        # op is dense or an activation (dropout masks are drawn in order) ...
        self.split = (self.in_place and n_ops >= 2 and self.layout[LAY_MID] >= 0
                      and split_middle)
        for l in range(1, n_ops):
            if self.plan[l, PLAN_KIND] == OP_DENSE:
                later += self.plan[l, PLAN_N_IN] * self.plan[l, PLAN_N_OUT]
            elif self.plan[l, PLAN_KIND] != OP_ACTIVATION:
                self.split = False
        # ... and only for small later layers: each block writes its own partial weight
        # gradient, which is then added into the weights, so a big later layer (784-512-512-10:
        # 512 x 512) would move three times its weights through memory every step (45% slower
        # there, paired A/B), while the whole-batch path cuts its products along the inputs.
        if later > MID_MAX_LATER_WEIGHTS:
            self.split = False
        # the widest op (the delta buffers' row stride in the split middle) and one block's
        # partial gradients of the later dense layers (weights and biases)
        self.maxw = self.plan[0, PLAN_N_IN]
        self.psize = 0
        for l in range(n_ops):
            self.maxw = max(self.maxw, self.plan[l, PLAN_N_OUT])
            if l > 0 and self.plan[l, PLAN_KIND] == OP_DENSE:
                self.psize += self.plan[l, PLAN_N_IN] * self.plan[l, PLAN_N_OUT] + (
                    self.plan[l, PLAN_N_OUT] if self.plan[l, PLAN_B] >= 0 else 0)

    def run(self, floating[::1] params, floating[::1] state, const floating[:, ::1] X,
            const floating[:, ::1] Y, const floating[::1] sw, const Py_ssize_t[::1] order,
            Py_ssize_t start, Py_ssize_t stop, const double[::1] lrs, long long step,
            double[::1] stats, int threads=1):
        """Runs the training steps over samples start..stop (in batches of batch_size).

        For every batch: forward, loss and metrics on the pre-update outputs, backward, one
        optimizer update with learning rate lrs[k] for the k-th batch of this call.

        # INOUT params, state: parameters (trainable first), optimizer slots.
        # IN    X (n, n_in), Y (n, y_width), sw (n,) or empty, order (n,) permutation or empty;
        #       lrs (one per batch); step: updates so far; threads: 1 .. 64 (same bits for any).
        # INOUT stats: [0] += sum of batch_loss * batch_n, [1] += samples, [2] += batches,
        #       [3 + 2k], [4 + 2k] metric k numerator/denominator; [last] = 1 if a loss was not
        #       finite.

        Returns the number of batches run; it stops after the first batch whose loss is not
        finite (that batch's update is not applied).
        """
        cdef floating[::1] work = self.work
        cdef floating[::1] grads = self.grads
        cdef uint64_t[::1] rng = self.rng
        cdef Py_ssize_t n_ops = self.plan.shape[0], last = n_ops - 1, l, i
        cdef Py_ssize_t n_in0 = X.shape[1], n_metrics = self.metrics.shape[0]
        cdef Py_ssize_t pos, done = 0, n_batches = (stop - start + self.batch_size - 1) // max(
            self.batch_size, 1)
        cdef int n, n1, bs = self.batch_size, n_out0 = <int>self.plan[0, PLAN_N_OUT]
        cdef floating* P = &params[0]
        cdef floating* W = &work[0]
        cdef floating* G = &grads[0] if grads.shape[0] > 0 else NULL
        cdef floating* D
        cdef floating* D2
        cdef floating* tmp
        cdef floating* Gl
        cdef floating* dW
        cdef floating* Wpad = NULL
        cdef const Py_ssize_t* ordp = &order[0] if order.shape[0] > 0 else NULL
        cdef const floating* rows0[FD_MAX_ROWS]
        cdef const floating* rows1[FD_MAX_ROWS]  # the next batch's, when its product ran early
        cdef bint fwd_ready = False, bad = False
        cdef bint wpan_ready = False  # the last step's update wrote c.wpan
        cdef double loss = 0
        cdef double hst[2 * (1 + 2 * 64)]
        cdef _Step c
        if X.shape[0] < stop or Y.shape[0] < stop or start < 0 or (
                sw.shape[0] > 0 and sw.shape[0] < stop) or (ordp != NULL and order.shape[0] < stop):
            raise ValueError(f"start..stop ({start}..{stop}) outside the data ({X.shape[0]} rows)")
        if lrs.shape[0] < n_batches or stats.shape[0] < 4 + 2 * n_metrics:
            raise ValueError(f"lrs needs {n_batches} rates and stats {4 + 2 * n_metrics} slots; "
                             f"received {lrs.shape[0]}, {stats.shape[0]}")
        if self.fuse_sgd:
            for i in range(n_batches):
                if not lrs[i] > 0:
                    raise ValueError(f"learning rates must be > 0; received {lrs[i]}")
        c.o = self.o
        c.o.threads = max(1, min(threads, FD_MAX_THREADS))
        self._fill(&c, P, G, W, Y.shape[1], hst)
        if self.packed:
            c.o.pack = self._pack_area(c.o.threads)
        if self.packed and self.delta_panels:
            c.dpan[0] = self._panel_area()
            c.dpan[1] = c.dpan[0] + self.dpanel_floats
        if self.packed and not self.fuse_sgd and self.weight_panels:
            c.wpan = self._weight_panel_area()
        c.D0 = W + self.layout[LAY_D0]
        c.D1 = W + self.layout[LAY_D1]
        c.rng = &rng[0]
        if self.ldpad != 0:
            Wpad = W + self.layout[LAY_W0]
            Wpad = Wpad + ((64 - (<size_t>Wpad) % 64) % 64) // sizeof(floating)
            c.W0 = Wpad
        with nogil:
            if Wpad != NULL:
                _copy_weights(P + self.plan[0, PLAN_W], Wpad, n_in0, n_out0, self.ldpad, True)
            pos = start
            while pos < stop:
                n = <int>(bs if stop - pos > bs else stop - pos)
                c.n = n
                c.sgd_lr = lrs[done] if self.fuse_sgd else 0
                if self.in_place:
                    if fwd_ready:
                        memcpy(rows0, rows1, n * sizeof(floating*))
                    else:
                        _row_ptrs(&X[0, 0], n_in0, ordp, pos, n, rows0)
                    c.rows0 = <const void**>rows0
                    c.A0 = NULL
                else:
                    c.A0 = _rows(&X[0, 0], n_in0, ordp, pos, n, W + self.layout[LAY_X])
                c.Yb = _rows(&Y[0, 0], Y.shape[1], ordp, pos, n, W + self.layout[LAY_Y])
                c.swb = _rows(&sw[0], 1, ordp, pos, n, W + self.layout[LAY_SW]) \
                    if sw.shape[0] > 0 else NULL
                D = <floating*>c.D0
                D2 = <floating*>c.D1
                if self.split:
                    if not fwd_ready:
                        _op_forward(&c.o, &self.plan[0, 0], &self.reg[0, 0], P, rows0, NULL, W,
                                    0, n, c.rng, Wpad, self.ldpad,
                                    W + self.plan[0, PLAN_PART], False)
                    fwd_ready = False
                    # two blocks of rows whatever the thread count (their sums, added in a
                    # fixed order, are part of the result's bits)
                    c.h = n // 2
                    if c.o.threads > 1:
                        fd_run(_middle_part, &c, 2)
                    else:
                        _middle_part(&c, 0)
                        _middle_part(&c, 1)
                    loss = (hst[0] + hst[c.n_stats]) / n
                    for i in range(2 * n_metrics):
                        stats[3 + i] += hst[1 + i] + hst[c.n_stats + 1 + i]
                else:
                    _net_forward(&c.o, &self.plan[0, 0], n_ops, P, rows0 if self.in_place
                                 else NULL, <const floating*>c.A0, W, n, c.rng, &self.reg[0, 0],
                                 Wpad, self.ldpad, c.wpan if wpan_ready else NULL)
                    loss = _loss_block(&c, 0, n, D, &stats[3]) / n
                # Without penalties the loss is complete here; check it before the backward
                # pass, which applies a fused SGD update. With penalties (never fused) the one
                # penalty pass below adds both the loss term and the gradient, checked before the
                # update.
                if not self.penalized and not isfinite(loss):
                    bad = True
                    break
                if self.split and floating is float:
                    _sum_partials(&c)
                    # with plain SGD the next batch's first product joins the first layer's
                    # weight-gradient job (see _first_layer_grad)
                    n1 = 0
                    if self.fuse_sgd and self.merge_next and pos + n < stop:
                        n1 = <int>(bs if stop - pos - n > bs else stop - pos - n)
                        _row_ptrs(&X[0, 0], n_in0, ordp, pos + n, n1, rows1)
                    _first_layer_grad(&c, n1, <const float**>rows1)
                    fwd_ready = n1 > 0
                else:
                    Gl = P if c.sgd_lr > 0 else G
                    for l in range(last, -1, -1):
                        if self.plan[l, PLAN_KIND] != OP_DENSE:
                            dW = NULL
                        elif l == 0 and Wpad != NULL:
                            dW = Wpad
                        else:
                            dW = Gl + self.plan[l, PLAN_W]
                        if _op_backward(&c, &c.o, l, 0, n, D, D2, dW,
                                        Gl + self.plan[l, PLAN_B] if self.plan[l, PLAN_B] >= 0
                                        else NULL, <floating>c.sgd_lr,
                                        W + self.plan[l, PLAN_PART]):
                            tmp = D
                            D = D2
                            D2 = tmp
                if not self.fuse_sgd:
                    if self.penalized:
                        loss += _reg_loss_grad(self.plan, self.reg, P, G, True)
                        if not isfinite(loss):
                            bad = True
                            break
                    _opt_step_threads(c.o.threads, self.opt_code, &self.hp[0], lrs[done],
                                      step + done, P, G,
                                      &state[0] if state.shape[0] > 0 else NULL, grads.shape[0],
                                      &self.plan[0, 0], n_ops, c.wpan)
                    wpan_ready = c.wpan != NULL
                stats[0] += loss * n
                stats[1] += n
                stats[2] += 1
                done += 1
                pos += n
            if bad:
                # the failing batch is counted (its loss is reported), its update not applied
                stats[stats.shape[0] - 1] = 1
                stats[0] += loss * n
                stats[1] += n
                stats[2] += 1
                done += 1
            if Wpad != NULL:
                _copy_weights(P + self.plan[0, PLAN_W], Wpad, n_in0, n_out0, self.ldpad, False)
        return done

    cdef void _fill(self, _Step* c, void* P, void* G, void* W, Py_ssize_t y_w,
                    double* hst):
        """The step context's fields that stay the same for every batch of a run."""
        cdef Py_ssize_t n_ops = self.plan.shape[0]
        cdef Py_ssize_t B = self.batch_size, n_out0 = self.plan[0, PLAN_N_OUT]
        c.plan = &self.plan[0, 0]
        c.reg = &self.reg[0, 0]
        c.n_ops = n_ops
        c.P, c.G, c.W = P, G, W
        c.rows0 = NULL
        c.A0 = NULL
        c.W0 = NULL
        c.ldw0 = self.ldpad
        c.loss_code, c.fused, c.y_w = self.loss_code, self.fused, y_w
        c.metrics = &self.metrics[0] if self.metrics.shape[0] > 0 else NULL
        c.n_metrics = self.metrics.shape[0]
        c.rng = NULL
        c.dpan[0] = c.dpan[1] = NULL
        c.wpan = NULL
        c.hstats = hst
        c.n_stats = 1 + 2 * c.n_metrics
        c.split0 = fd_half(<int>self.plan[0, PLAN_N_IN]) < self.plan[0, PLAN_N_IN]
        c.maxw = self.maxw
        c.psize = self.psize
        # the split middle's region (float: it runs on the own kernels only)
        if self.split:
            c.partials = <float*>W + self.layout[LAY_MID]
            c.Dfin = <float*>c.partials + 2 * c.psize
            c.part2 = <float*>c.Dfin + B * n_out0
            c.p2stride = (B + 15) // 16 * 16 * c.maxw


def train_steps(params, grads, state, plan, reg, layout, work, X, Y, sw, order, start, stop,
                batch_size, loss_code, fused_logits, metrics, opt_code, hp, lrs, step, rng,
                stats):
    """`Trainer(...).run(...)` in one call, on one thread, with the default options: the twin of
    `_reference.train_steps` for the tests (fit keeps one Trainer per fit). Returns the number of
    batches run."""
    return Trainer(plan, reg, layout, work, grads, batch_size, loss_code, fused_logits, metrics,
                   opt_code, hp, rng).run(params, state, X, Y, sw, order, start, stop, lrs, step,
                                          stats)


# ---------------------------------------------------------------------------------------------
# Inference over many batches on two threads: one hand-off per call, after which both threads
# take whole batches from a shared counter (a thread slowed down by another process simply takes
# fewer), each with its own workspace. A batch's rows get the same arithmetic on either thread;
# evaluate_steps keeps each batch's loss and metric sums in its own slot and adds the slots in
# batch order, so the results do not depend on the thread count or on who ran what.
# ---------------------------------------------------------------------------------------------
cdef struct _Pair:
    const Py_ssize_t* plan
    Py_ssize_t n_ops
    const float* P
    float* work[FD_MAX_THREADS]  # one workspace per thread
    int threads
    const float* X
    Py_ssize_t n_in0
    Py_ssize_t start
    Py_ssize_t stop
    int batch_size
    int n_batches
    fd_counter next             # the next batch to take
    float* out                  # forward: the outputs (n x out_w); NULL when evaluating
    Py_ssize_t out_w
    const float* Y
    Py_ssize_t y_w
    const float* sw
    int loss_code
    bint fused
    const Py_ssize_t* metrics
    Py_ssize_t n_metrics
    double reg_total
    double* slots               # evaluate: per batch, its loss then its metric sums
    Py_ssize_t n_slot           # 1 + 2 * n_metrics
    float* W0                   # the first layer's weights, aligned (_inference_panels), or NULL
    int ld0                     # W0's layout


cdef double _eval_batch(const _Opts* o, const Py_ssize_t* plan, Py_ssize_t n_ops, const floating* P,
                        const floating* X, floating* work, int n, const floating* Y,
                        Py_ssize_t y_w, const floating* sw, int loss_code, bint fused,
                        const Py_ssize_t* metrics, Py_ssize_t n_metrics,
                        double reg_total, double* msums, const floating* W0,
                        int ld0) noexcept nogil:
    """One evaluation batch (n rows at X, Y, sw): returns its mean loss (plus the penalty
    reg_total) and adds its metric sums into msums. W0, ld0: see _inference_panels."""
    cdef Py_ssize_t last = (n_ops - 1) * N_PLAN, out_w = plan[last + PLAN_N_OUT]
    cdef const floating* Zl = _net_forward(o, plan, n_ops, P, <const floating**>NULL, X, work, n,
                                           NULL, NULL, W0, ld0)
    cdef const floating* Ll = work + plan[last + PLAN_S] if fused else Zl
    cdef double loss = _loss_grad(loss_code, Ll, Y, sw, <floating*>NULL, n, out_w, 1.0) / n
    _metrics(metrics, n_metrics, Zl, Y, <const floating*>NULL, n, out_w, y_w, msums)
    return loss + reg_total


cdef void _pair_part(void* arg, int part) noexcept nogil:
    cdef _Pair* c = <_Pair*>arg
    cdef int b, n
    cdef Py_ssize_t pos, i
    cdef const float* Zl
    cdef double* st
    cdef _Opts one = _opts(1)  # the threads share the batches
    while True:
        b = fd_counter_next(&c.next)
        if b >= c.n_batches:
            return
        pos = c.start + <Py_ssize_t>b * c.batch_size
        n = <int>(c.batch_size if c.stop - pos > c.batch_size else c.stop - pos)
        if c.out != NULL:
            Zl = _net_forward(&one, c.plan, c.n_ops, c.P, <const float**>NULL,
                              c.X + pos * c.n_in0, c.work[part], n, NULL, NULL, c.W0, c.ld0)
            memcpy(c.out + pos * c.out_w, Zl, <Py_ssize_t>n * c.out_w * sizeof(float))
            continue
        st = c.slots + <Py_ssize_t>b * c.n_slot
        for i in range(2 * c.n_metrics):
            st[1 + i] = 0
        st[0] = _eval_batch(&one, c.plan, c.n_ops, c.P, c.X + pos * c.n_in0, c.work[part], n,
                            c.Y + pos * c.y_w, c.y_w, c.sw + pos if c.sw != NULL else NULL,
                            c.loss_code, c.fused, c.metrics, c.n_metrics, c.reg_total, st + 1,
                            c.W0, c.ld0)


cdef inline void _add_batch(double* stats, Py_ssize_t n_stats, const double* st, int n,
                            Py_ssize_t n_metrics) noexcept nogil:
    """One batch's loss (st[0]) and metric sums (st[1:]) into evaluate_steps' totals."""
    cdef Py_ssize_t i
    if not isfinite(st[0]):
        stats[n_stats - 1] = 1
    stats[0] += st[0] * n
    stats[1] += n
    stats[2] += 1
    for i in range(2 * n_metrics):
        stats[3 + i] += st[1 + i]


cdef inline int _aligned_layout(Py_ssize_t m) noexcept nogil:
    """The layout of an aligned copy of a first layer's weights (m columns; see _copy_weights):
    16-column panels where the tiles are 16 columns wide, rows padded to a multiple of 16
    floats on AVX-512, whose wide 32-column tile the panels rule out (there, 14% faster
    training and 10% faster inference on the seed net)."""
    return <int>((m + 15) // 16 * 16) if fd_have_avx512() else FD_PANELS


cdef float* _inference_panels(const Py_ssize_t* plan, const float* P, Py_ssize_t rows,
                              int* ld) noexcept nogil:
    """For inference over many rows: a copy of the first dense layer's weights in the aligned
    layout (_aligned_layout, written to *ld), when its width is not a multiple of 16; NULL
    otherwise (or when the copy would not pay, or allocation fails). Row-major rows of such a
    layer (a 100-unit layer's are 400 bytes) straddle cache lines, and the tiles' depth chunk
    then spans twice the lines an aligned copy does. Every element's arithmetic is the same:
    same bits. The caller frees it."""
    cdef Py_ssize_t k = plan[PLAN_N_IN], m = plan[PLAN_N_OUT]
    cdef float* W0
    ld[0] = 0
    if plan[PLAN_KIND] != OP_DENSE or m % 16 == 0 or rows < 256:
        return NULL
    W0 = <float*>malloc(((m + 15) // 16 * 16) * k * sizeof(float))
    if W0 != NULL:
        ld[0] = _aligned_layout(m)
        _copy_weights(<float*>(P + plan[PLAN_W]), W0, k, <int>m, ld[0], True)
    return W0


cdef bint _pair_setup(_Pair* c, int threads, Py_ssize_t start, Py_ssize_t stop, int batch_size,
                      const Py_ssize_t* plan, Py_ssize_t n_ops, const float* P, float* work,
                      Py_ssize_t work_size, const float* X, Py_ssize_t n_in0,
                      Py_ssize_t n_slot, float* W0, int ld0) noexcept nogil:
    """Fills the common fields and allocates the second workspace (and, with n_slot > 0, the
    per-batch slots); False when one thread will do (a single batch, one thread, no own kernels)
    or an allocation failed. The caller frees with _pair_free. W0, ld0: the caller's aligned
    copy of the first layer's weights and its layout (_inference_panels), or NULL."""
    cdef Py_ssize_t n_batches = (stop - start + batch_size - 1) // batch_size
    cdef int t
    cdef bint failed = False
    if threads > n_batches:
        threads = <int>n_batches  # a thread with no batch to take would only cost a hand-off
    if threads > FD_MAX_THREADS:
        threads = FD_MAX_THREADS
    if threads < 2 or n_batches > 2147483647:
        return False
    c.threads = threads
    c.work[0] = work
    for t in range(1, threads):
        c.work[t] = <float*>malloc(work_size * sizeof(float))
        failed = failed or c.work[t] == NULL
    c.slots = <double*>malloc(n_batches * n_slot * sizeof(double)) if n_slot > 0 else NULL
    if failed or (n_slot > 0 and c.slots == NULL):
        _pair_free(c)
        return False
    c.plan = plan
    c.n_ops = n_ops
    c.P = P
    c.X = X
    c.n_in0 = n_in0
    c.start = start
    c.stop = stop
    c.batch_size = batch_size
    c.n_batches = <int>n_batches
    fd_counter_set(&c.next, 0)
    c.out = NULL
    c.out_w = plan[(n_ops - 1) * N_PLAN + PLAN_N_OUT]
    c.Y = NULL
    c.y_w = 0
    c.sw = NULL
    c.metrics = NULL
    c.n_metrics = 0
    c.reg_total = 0
    c.n_slot = n_slot
    c.W0 = W0
    c.ld0 = ld0
    return True


cdef inline void _pair_free(_Pair* c) noexcept nogil:
    cdef int t
    for t in range(1, c.threads):
        free(c.work[t])
    free(c.slots)


cdef inline void _check_plan(const Py_ssize_t[:, ::1] plan, const double[:, ::1] reg):
    """The kernels read plan and reg through raw pointers with these row lengths."""
    if plan.shape[1] != N_PLAN or (reg is not None and (reg.shape[0] != plan.shape[0]
                                                        or reg.shape[1] != 4)):
        raise ValueError(f"plan must be (n_ops, {N_PLAN}) and reg (n_ops, 4); received "
                         f"plan ({plan.shape[0]}, {plan.shape[1]}), reg "
                         f"{None if reg is None else (reg.shape[0], reg.shape[1])}")


def forward(floating[::1] params, const Py_ssize_t[:, ::1] plan, floating[::1] work,
            const floating[:, ::1] X, floating[:, ::1] out, int batch_size, int threads=1):
    """out := network(X), computed batch_size rows at a time (inference: dropout off); with
    threads > 1 and more than one batch, the threads share the batches (same results).

    # IN  params, plan, X (n, n_in)   # INOUT work (one batch of activations)   # OUT out (n, n_out)
    """
    cdef Py_ssize_t n_total = X.shape[0], pos = 0, n_in0 = X.shape[1], n_ops = plan.shape[0]
    cdef Py_ssize_t out_w = out.shape[1]
    cdef int n
    cdef const floating* Zl
    cdef _Pair pc
    cdef floating* W0 = NULL
    cdef int ld0 = 0
    cdef _Opts o = _opts(max(1, min(threads, FD_MAX_THREADS)))
    _check_plan(plan, None)
    with nogil:
        if floating is float:
            W0 = <floating*>_inference_panels(&plan[0, 0], &params[0], n_total, &ld0)
        if floating is float and n_total > 0 and _pair_setup(
                &pc, threads, 0, n_total, batch_size, &plan[0, 0], n_ops, &params[0],
                &work[0], work.shape[0], &X[0, 0], n_in0, 0, <float*>W0, ld0):
            pc.out = &out[0, 0]
            fd_run(_pair_part, &pc, pc.threads)
            _pair_free(&pc)
            pos = n_total
        while pos < n_total:
            n = <int>(batch_size if n_total - pos > batch_size else n_total - pos)
            Zl = _net_forward(&o, &plan[0, 0], n_ops, &params[0], NULL, &X[pos, 0], &work[0], n,
                              NULL, NULL, W0, ld0)
            memcpy(&out[pos, 0], Zl, <Py_ssize_t>n * out_w * sizeof(floating))
            pos += n
        free(W0)


def evaluate_steps(floating[::1] params, const Py_ssize_t[:, ::1] plan, const double[:, ::1] reg,
                   floating[::1] work, const floating[:, ::1] X, const floating[:, ::1] Y,
                   const floating[::1] sw, Py_ssize_t start, Py_ssize_t stop, int batch_size,
                   int loss_code, bint fused_logits, const Py_ssize_t[::1] metrics,
                   double[::1] stats, int threads=1):
    """Loss and metrics of the network on samples start..stop, batch by batch, no update; with
    threads > 1, the threads share the batches (same results: sums added in batch order).

    # INOUT stats: same layout as in `train_steps`. Returns the number of batches.
    """
    cdef Py_ssize_t pos = start, n_ops = plan.shape[0], done = 0, i
    cdef Py_ssize_t y_w = Y.shape[1], n_metrics = metrics.shape[0]
    cdef Py_ssize_t n_stats = stats.shape[0]
    cdef int n
    cdef double reg_total
    cdef double st[1 + 2 * 64]
    cdef bint has_sw = sw.shape[0] > 0
    cdef _Pair pc
    cdef bint own_sums = n_metrics <= 64   # else (never in practice) straight into stats
    cdef double* msums = &st[1] if own_sums else &stats[3]
    cdef floating* W0 = NULL
    cdef int ld0 = 0
    cdef _Opts o = _opts(max(1, min(threads, FD_MAX_THREADS)))
    _check_plan(plan, reg)
    with nogil:
        reg_total = _reg_loss_grad(plan, reg, &params[0], <floating*>NULL, False)
        if floating is float:
            W0 = <floating*>_inference_panels(&plan[0, 0], &params[0], stop - start, &ld0)
        if floating is float and own_sums and stop > start and _pair_setup(
                &pc, threads, start, stop, batch_size, &plan[0, 0], n_ops, &params[0],
                &work[0], work.shape[0], &X[0, 0], X.shape[1], 1 + 2 * n_metrics, <float*>W0,
                ld0):
            pc.Y = &Y[0, 0]
            pc.y_w = y_w
            pc.sw = &sw[0] if has_sw else NULL
            pc.loss_code = loss_code
            pc.fused = fused_logits
            pc.metrics = &metrics[0] if n_metrics > 0 else NULL
            pc.n_metrics = n_metrics
            pc.reg_total = reg_total
            fd_run(_pair_part, &pc, pc.threads)
            for i in range(pc.n_batches):
                pos = start + i * batch_size
                _add_batch(&stats[0], n_stats, pc.slots + i * pc.n_slot,
                           <int>(batch_size if stop - pos > batch_size else stop - pos),
                           n_metrics)
            done = pc.n_batches
            _pair_free(&pc)
            pos = stop
        while pos < stop:
            n = <int>(batch_size if stop - pos > batch_size else stop - pos)
            # each batch's metric sums on their own, then added: as the two-thread path does
            for i in range(2 * n_metrics if own_sums else 0):
                st[1 + i] = 0
            st[0] = _eval_batch(&o, &plan[0, 0], n_ops, &params[0], &X[pos, 0], &work[0], n,
                                &Y[pos, 0], y_w, &sw[pos] if has_sw else NULL, loss_code,
                                fused_logits, &metrics[0] if n_metrics > 0 else NULL, n_metrics,
                                reg_total, msums, W0, ld0)
            _add_batch(&stats[0], n_stats, st, n, n_metrics if own_sums else 0)
            done += 1
            pos += n
        free(W0)
    return done


# ---------------------------------------------------------------------------------------------
# Single kernels, exposed for tests, benchmarks and the reference comparison.
# ---------------------------------------------------------------------------------------------
def dense_forward(const floating[:, ::1] X, const floating[:, ::1] W, const floating[::1] b,
                  int act, floating[:, ::1] Z, floating[:, ::1] S=None, int threads=1):
    """Z := act(X @ W + b); S := X @ W + b if S is given. b may be empty (no bias). threads:
    for a large product (same bits for any count).

    # IN X (n, n_in), W (n_in, n_out), b (n_out,) or (0,)   # OUT Z (n, n_out), S (n, n_out)
    """
    cdef int n = <int>X.shape[0], n_in = <int>X.shape[1], n_out = <int>W.shape[1]
    cdef floating* part = <floating*>malloc(max(<size_t>n * n_out, 1) * sizeof(floating))
    cdef _Opts o = _opts(max(1, min(threads, FD_MAX_THREADS)))
    if part == NULL:
        raise MemoryError()
    try:
        with nogil:
            _dense_forward(&o, NULL, &X[0, 0], &W[0, 0], n_out, &b[0] if b.shape[0] > 0 else NULL, act,
                           &Z[0, 0], &S[0, 0] if S is not None else NULL, part, n, n_in, n_out)
    finally:
        free(part)


def activation_backward(int act, const floating[:, ::1] S, const floating[:, ::1] Z,
                        const floating[:, ::1] dZ, floating[:, ::1] dS):
    """dS := dZ * act'(S), with Z = act(S). # IN S, Z, dZ (n, m)   # OUT dS (n, m)"""
    with nogil:
        _act_backward(act, &S[0, 0], &Z[0, 0], &dZ[0, 0], &dS[0, 0], Z.shape[0], Z.shape[1])


def dense_backward(const floating[:, ::1] X, const floating[:, ::1] W, const floating[:, ::1] dS,
                   floating[:, ::1] dW, floating[::1] db, floating[:, ::1] dX=None,
                   int threads=1, bint sparse=True):
    """dW := X^T @ dS; db := sum_rows(dS) (if db is not empty); dX := dS @ W^T (if dX is given).
    threads: for large products; sparse: skip all-zero input rows (same bits either way).

    # IN X (n, n_in), W (n_in, n_out), dS (n, n_out)   # OUT dW, db, dX
    """
    cdef int n = <int>X.shape[0], n_in = <int>X.shape[1], n_out = <int>W.shape[1]
    # scratch for the transposed input gradient (fd_input_grad), as train_steps has in its plan;
    # without it (allocation failed) the packed form gives the same bits
    cdef floating* scratch = NULL
    cdef _Opts o = _opts(max(1, min(threads, FD_MAX_THREADS)))
    o.sparse = sparse
    with nogil:
        if dX is not None:
            scratch = <floating*>malloc(<size_t>n_out * ((n + 15) // 16 * 16) * sizeof(floating))
        _dense_backward(&o, NULL, &X[0, 0], <floating*>&W[0, 0], n_out, &dS[0, 0], &dW[0, 0],
                        &db[0] if db.shape[0] > 0 else NULL,
                        &dX[0, 0] if dX is not None else NULL, n, n_in, n_out, <floating>0,
                        scratch)
        free(scratch)


def packed_gemm(const float[:, ::1] A, const float[:, ::1] B, float[:, ::1] C, bint ta=False,
                bint tb=False, float alpha=1, float beta=0, const float[::1] bias=None,
                bint relu=False, int threads=1, const float[:, ::1] gate=None,
                float[::1] bsum=None, float bsum_lr=0):
    """C := alpha * op(A) @ op(B) + beta * C (+ bias per column, then relu; then C := 0 where
    gate <= 0) on the packed GEMM (fd_gemm_packed), op(A) = A.T when ta, op(B) = B.T when tb;
    the training steps' products of batches over MAX_OWN_ROWS rows. bsum: op(B)'s column sums,
    or with bsum_lr > 0, bsum -= bsum_lr * those sums.

    # IN A, B (shapes matching C after the transposes), bias (C's columns), gate (C's shape)
    # INOUT C, bsum (C's columns)
    """
    cdef int n = <int>C.shape[0], m = <int>C.shape[1]
    cdef int k = <int>(A.shape[0] if ta else A.shape[1])
    cdef float* work
    cdef fd_epilogue ep = _epilogue(alpha, beta, &bias[0] if bias is not None else NULL, relu)
    if (A.shape[1] if ta else A.shape[0]) != n or (B.shape[0] if tb else B.shape[1]) != m or (
            B.shape[1] if tb else B.shape[0]) != k or n == 0 or m == 0 or k == 0 or (
            bias is not None and bias.shape[0] != m) or (
            gate is not None and (gate.shape[0] != n or gate.shape[1] != m)) or (
            bsum is not None and bsum.shape[0] != m):
        raise ValueError(f"shapes do not match: A {(A.shape[0], A.shape[1])}{' (T)' if ta else ''}, "
                         f"B {(B.shape[0], B.shape[1])}{' (T)' if tb else ''}, C {(C.shape[0], C.shape[1])}"
                         + (f", bias {bias.shape[0]}" if bias is not None else "")
                         + (f", gate {(gate.shape[0], gate.shape[1])}" if gate is not None else "")
                         + (f", bsum {bsum.shape[0]}" if bsum is not None else ""))
    if gate is not None:
        ep.gate, ep.ldgate = &gate[0, 0], m
    if bsum is not None:
        ep.bsum, ep.bsum_lr = &bsum[0], bsum_lr
    threads = max(1, min(threads, FD_MAX_THREADS))
    work = <float*>malloc(fd_packed_floats(k, m, threads) * sizeof(float))
    if work == NULL:
        raise MemoryError("packed_gemm's work area")
    with nogil:
        fd_gemm_packed(n, k, m, ta, &A[0, 0], A.shape[1], tb, &B[0, 0], B.shape[1], &ep,
                       &C[0, 0], m, threads, work)
    free(work)


def loss_grad(int code, const floating[:, ::1] L, const floating[:, ::1] Y,
              const floating[::1] sw, floating[:, ::1] dL=None):
    """Returns the batch loss sum_i w_i*loss_i / n; dL := d(batch loss)/dL if dL is given.

    # IN L (n, m) outputs or logits, Y (n, m) or (n, 1) for the sparse codes, sw (n,) or (0,)
    """
    cdef Py_ssize_t n = L.shape[0]
    cdef double total
    with nogil:
        total = _loss_grad(code, &L[0, 0], &Y[0, 0], &sw[0] if sw.shape[0] > 0 else NULL,
                           &dL[0, 0] if dL is not None else NULL, n, L.shape[1], 1.0 / n)
    return total / n


def metric_update(const Py_ssize_t[::1] codes, const floating[:, ::1] Z, const floating[:, ::1] Y,
                  const floating[::1] sw, double[::1] acc):
    """acc[2k] += sum_i w_i * metric_k(row i); acc[2k+1] += sum_i w_i.   # INOUT acc"""
    with nogil:
        _metrics(&codes[0], codes.shape[0], &Z[0, 0], &Y[0, 0],
                 &sw[0] if sw.shape[0] > 0 else NULL, Z.shape[0], Z.shape[1], Y.shape[1], &acc[0])


def optimizer_step(int code, const double[::1] hp, double lr, long long step,
                   floating[::1] params, floating[::1] grads, floating[::1] state):
    """One update of params from grads (clipped in place) and the optimizer slots in state.

    # IN hp (N_HP,), lr, step (updates so far)   # INOUT params, grads, state (k * n_params)
    """
    with nogil:
        _opt_step(code, &hp[0], lr, step, &params[0], &grads[0],
                  &state[0] if state.shape[0] > 0 else NULL, params.shape[0])


def activation_forward(int act, floating[:, ::1] Z):
    """Z := act(Z) in place (softmax over each row).   # INOUT Z (n, m)"""
    with nogil:
        _act_forward(act, &Z[0, 0], Z.shape[0], Z.shape[1])


def _set_simd(bint enabled, bint avx512=True):
    """Turns fastdense's vector kernels on (the best the CPU has: AVX-512, or AVX2 when avx512 is
    False) or off (the portable C kernels and scalar maths); for tests and benchmarks. Returns
    whether AVX2 or better is now in use. The one process-wide switch: which instructions the CPU
    runs is a property of the process (as NumPy's dispatch is), not of a model, and every choice
    gives the same bits."""
    fd_set_simd((2 if avx512 else 1) if enabled else 0)
    return bool(fd_have_avx2_fma())


def _simd_enabled():
    """Whether fastdense's AVX2/FMA kernels (or better) are in use on this CPU."""
    return bool(fd_have_avx2_fma())


def _simd_level():
    """The kernels in use: 0 portable C, 1 AVX2/FMA, 2 AVX-512 (the GEMM tile)."""
    return fd_have_avx2_fma()


def all_finite(const floating[:, ::1] X, int threads=1):
    """True when no element of X is NaN or +-Inf: one vectorisable pass over the bits, no
    temporary arrays (NumPy's isfinite(X).all() writes a boolean array as large as X); on two
    threads when `threads` > 1 and X is large."""
    cdef Py_ssize_t size = X.shape[0] * X.shape[1]
    cdef int ok
    if size == 0:
        return True
    with nogil:
        ok = fd_all_finite(<const void*>&X[0, 0], <size_t>size, 0 if floating is float else 1,
                           threads)
    return ok != 0
