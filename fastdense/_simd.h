/* Small-matrix float32 GEMM and a vectorised sigmoid for fastdense's kernels.
 *
 * Why: on the shapes of small dense networks (32-row batches, one-row predictions) a general BLAS
 * spends much of its time packing and dispatching; a register-blocked AVX2/FMA micro-kernel that
 * keeps the weight panel in L1 runs closer to the core's peak. Functions compiled for AVX2+FMA
 * carry a `target` attribute and are only called after a run-time CPU check, so one wheel built
 * for baseline x86-64 runs everywhere: without AVX2/FMA (or off x86) `fd_have_avx2_fma()` is 0
 * and the caller uses BLAS and scalar maths instead.
 *
 * All matrices are row-major. The tile routine computes, for an MR x NR block,
 *     C := alpha * sum_p A(i, p) * B(p, j) + beta * C
 * where A(i, p) = A[i * a_rs + p * a_cs] (any strides: it is broadcast element by element) and
 * B(p, j) = B[p * ldb + j] (rows contiguous: loaded 8 floats at a time).
 */
#ifndef FASTDENSE_SIMD_H
#define FASTDENSE_SIMD_H

#include <stddef.h>
#include <math.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(FASTDENSE_NO_SIMD)
#define FD_X86 1
#include <immintrin.h>
#else
#define FD_X86 0
#endif

#define FD_MR 6    /* rows of a register tile */
#define FD_NR 16   /* columns of a register tile: two 8-float vectors */
#define FD_KC 256  /* depth of a B panel kept in L1: 256 x 16 floats = 16 KiB */

static int fd_cpu_flag = -1;

static int fd_have_avx2_fma(void)
{
#if FD_X86
    if (fd_cpu_flag < 0) {
        __builtin_cpu_init();
        fd_cpu_flag = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return fd_cpu_flag;
#else
    return 0;
#endif
}

/* Lets tests and benchmarks force the portable path: 0 = off, 1 = auto-detect. */
static void fd_set_simd(int enabled)
{
    fd_cpu_flag = enabled ? -1 : 0;
    if (enabled)
        (void)fd_have_avx2_fma();
}

#if FD_X86

__attribute__((target("avx2,fma")))
static inline __m256i fd_tail_mask(int n)
{
    /* lanes 0..n-1 set, n in 0..8 */
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

/* One MR x NR tile (MR <= 6, NR <= 16) over a depth of kc. */
__attribute__((target("avx2,fma")))
static void fd_tile(int mr, int nr, int kc, const float *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
                    const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                    float beta)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    const __m256i m0 = fd_tail_mask(nr >= 8 ? 8 : nr);
    const __m256i m1 = fd_tail_mask(nr >= 16 ? 8 : (nr > 8 ? nr - 8 : 0));
    const int full = (nr == FD_NR);
    int p;

#define FD_ROW(r, c0, c1)                                                      \
    {                                                                          \
        const __m256 a = _mm256_broadcast_ss(A + (r) * a_rs + p * a_cs);       \
        c0 = _mm256_fmadd_ps(a, b0, c0);                                       \
        c1 = _mm256_fmadd_ps(a, b1, c1);                                       \
    }
#define FD_LOOP(ROWS)                                                          \
    for (p = 0; p < kc; p++) {                                                 \
        const float *bp = B + p * ldb;                                         \
        __m256 b0, b1;                                                         \
        if (full) {                                                            \
            b0 = _mm256_loadu_ps(bp);                                          \
            b1 = _mm256_loadu_ps(bp + 8);                                      \
        } else {                                                               \
            b0 = _mm256_maskload_ps(bp, m0);                                   \
            b1 = _mm256_maskload_ps(bp + 8, m1);                               \
        }                                                                      \
        ROWS                                                                   \
    }

    switch (mr) {
    case 6: FD_LOOP(FD_ROW(0, c00, c01) FD_ROW(1, c10, c11) FD_ROW(2, c20, c21)
                    FD_ROW(3, c30, c31) FD_ROW(4, c40, c41) FD_ROW(5, c50, c51)) break;
    case 5: FD_LOOP(FD_ROW(0, c00, c01) FD_ROW(1, c10, c11) FD_ROW(2, c20, c21)
                    FD_ROW(3, c30, c31) FD_ROW(4, c40, c41)) break;
    case 4: FD_LOOP(FD_ROW(0, c00, c01) FD_ROW(1, c10, c11) FD_ROW(2, c20, c21)
                    FD_ROW(3, c30, c31)) break;
    case 3: FD_LOOP(FD_ROW(0, c00, c01) FD_ROW(1, c10, c11) FD_ROW(2, c20, c21)) break;
    case 2: FD_LOOP(FD_ROW(0, c00, c01) FD_ROW(1, c10, c11)) break;
    default: FD_LOOP(FD_ROW(0, c00, c01)) break;
    }
#undef FD_LOOP
#undef FD_ROW

    {
        const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
        __m256 acc[FD_MR][2];
        int r;
        acc[0][0] = c00; acc[0][1] = c01; acc[1][0] = c10; acc[1][1] = c11;
        acc[2][0] = c20; acc[2][1] = c21; acc[3][0] = c30; acc[3][1] = c31;
        acc[4][0] = c40; acc[4][1] = c41; acc[5][0] = c50; acc[5][1] = c51;
        for (r = 0; r < mr; r++) {
            float *cr = C + r * ldc;
            __m256 v0 = _mm256_mul_ps(va, acc[r][0]), v1 = _mm256_mul_ps(va, acc[r][1]);
            if (full) {
                if (beta != 0.0f) {
                    v0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr), v0);
                    v1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr + 8), v1);
                }
                _mm256_storeu_ps(cr, v0);
                _mm256_storeu_ps(cr + 8, v1);
            } else {
                if (beta != 0.0f) {
                    v0 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(cr, m0), v0);
                    v1 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(cr + 8, m1), v1);
                }
                _mm256_maskstore_ps(cr, m0, v0);
                _mm256_maskstore_ps(cr + 8, m1, v1);
            }
        }
    }
}

/* One row: c(1 x m) := alpha * a(1 x k) @ B(k x m) + beta * c, 64 columns at a time so that
 * eight independent accumulators hide the FMA latency (a 16-wide tile would wait on two). */
__attribute__((target("avx2,fma")))
static void fd_sgemv_row(int k, int m, float alpha, const float *a, ptrdiff_t a_cs,
                         const float *B, ptrdiff_t ldb, float beta, float *c)
{
    /* Same depth chunks (FD_KC) and the same final arithmetic as fd_tile, so a row computed
     * here is bit-identical to the same row computed inside a larger batch. */
    int jc, pc, p, v;
    for (jc = 0; jc < m; jc += 64) {
        const int nr = (m - jc < 64) ? m - jc : 64;
        const int nv = (nr + 7) / 8;
        __m256i mask[8];
        for (v = 0; v < 8; v++) {
            const int left = nr - 8 * v;
            mask[v] = fd_tail_mask(left >= 8 ? 8 : (left > 0 ? left : 0));
        }
        for (pc = 0; pc < k; pc += FD_KC) {
            const int kc = (k - pc < FD_KC) ? k - pc : FD_KC;
            const float b = (pc == 0) ? beta : 1.0f;
            __m256 acc[8];
            for (v = 0; v < 8; v++)
                acc[v] = _mm256_setzero_ps();
            if (nr == 64) {
                for (p = pc; p < pc + kc; p++) {
                    const __m256 x = _mm256_broadcast_ss(a + p * a_cs);
                    const float *bp = B + p * ldb + jc;
                    for (v = 0; v < 8; v++)
                        acc[v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 8 * v), acc[v]);
                }
            } else {
                for (p = pc; p < pc + kc; p++) {
                    const __m256 x = _mm256_broadcast_ss(a + p * a_cs);
                    const float *bp = B + p * ldb + jc;
                    for (v = 0; v < nv; v++)
                        acc[v] = _mm256_fmadd_ps(x, _mm256_maskload_ps(bp + 8 * v, mask[v]), acc[v]);
                }
            }
            for (v = 0; v < nv; v++) {
                __m256 r = _mm256_mul_ps(_mm256_set1_ps(alpha), acc[v]);
                if (b != 0.0f)
                    r = _mm256_fmadd_ps(_mm256_set1_ps(b), _mm256_maskload_ps(c + jc + 8 * v, mask[v]), r);
                _mm256_maskstore_ps(c + jc + 8 * v, mask[v], r);
            }
        }
    }
}

/* C(n x m) := alpha * A(n x k) @ B(k x m) + beta * C with A(i, p) = A[i*a_rs + p*a_cs]. */
__attribute__((target("avx2,fma")))
static void fd_sgemm(int n, int k, int m, float alpha, const float *A, ptrdiff_t a_rs,
                     ptrdiff_t a_cs, const float *B, ptrdiff_t ldb, float beta, float *C,
                     ptrdiff_t ldc)
{
    int jc, pc, ic;
    if (n == 1) {
        fd_sgemv_row(k, m, alpha, A, a_cs, B, ldb, beta, C);
        return;
    }
    for (jc = 0; jc < m; jc += FD_NR) {
        const int nr = (m - jc < FD_NR) ? m - jc : FD_NR;
        for (pc = 0; pc < k; pc += FD_KC) {
            const int kc = (k - pc < FD_KC) ? k - pc : FD_KC;
            const float b = (pc == 0) ? beta : 1.0f;
            for (ic = 0; ic < n; ic += FD_MR) {
                const int mr = (n - ic < FD_MR) ? n - ic : FD_MR;
                fd_tile(mr, nr, kc, A + ic * a_rs + pc * a_cs, a_rs, a_cs, B + pc * ldb + jc,
                        ldb, C + ic * ldc + jc, ldc, alpha, b);
            }
        }
    }
}

/* C(n x k) := A(n x m) @ B(k x m)^T. B's columns are packed 16 at a time into a contiguous
 * panel (the transposition a BLAS would do in its packing step). */
__attribute__((target("avx2,fma")))
static void fd_sgemm_nt(int n, int m, int k, const float *A, ptrdiff_t lda, const float *B,
                        ptrdiff_t ldb, float *C, ptrdiff_t ldc)
{
    float panel[FD_KC * FD_NR] __attribute__((aligned(32)));
    int jc, pc, ic, p, j;
    for (jc = 0; jc < k; jc += FD_NR) {
        const int nr = (k - jc < FD_NR) ? k - jc : FD_NR;
        for (pc = 0; pc < m; pc += FD_KC) {
            const int kc = (m - pc < FD_KC) ? m - pc : FD_KC;
            for (j = 0; j < nr; j++) {
                const float *src = B + (jc + j) * ldb + pc;
                for (p = 0; p < kc; p++)
                    panel[p * FD_NR + j] = src[p];
            }
            for (; j < FD_NR; j++)
                for (p = 0; p < kc; p++)
                    panel[p * FD_NR + j] = 0.0f;
            for (ic = 0; ic < n; ic += FD_MR) {
                const int mr = (n - ic < FD_MR) ? n - ic : FD_MR;
                fd_tile(mr, nr, kc, A + ic * lda + pc, lda, 1, panel, FD_NR,
                        C + ic * ldc + jc, ldc, 1.0f, pc == 0 ? 0.0f : 1.0f);
            }
        }
    }
}

/* exp for 8 floats, |x| <= 87.3 (the caller keeps the rest on the scalar path): Cody-Waite
 * range reduction x = n ln2 + r, |r| <= ln2/2, and a degree-6 polynomial; about 1 ulp. */
__attribute__((target("avx2,fma")))
static inline __m256 fd_exp8(__m256 x)
{
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f);
    const __m256 ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, ln2_hi, x);
    r = _mm256_fnmadd_ps(n, ln2_lo, r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline float fd_sigmoid1(float x)
{
    if (x >= 0.0f)
        return 1.0f / (1.0f + expf(-x));
    {
        const float e = expf(x);
        return e / (1.0f + e);
    }
}

/* z := sigmoid(z) in place; lanes with |z| > 80 take the exact scalar path (exact 0/1 limits). */
__attribute__((target("avx2,fma")))
static void fd_sigmoid_avx2(float *z, ptrdiff_t size)
{
    const __m256 one = _mm256_set1_ps(1.0f), lim = _mm256_set1_ps(80.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    ptrdiff_t i = 0;
    for (; i + 8 <= size; i += 8) {
        const __m256 x = _mm256_loadu_ps(z + i);
        const __m256 ax = _mm256_andnot_ps(sign, x);
        if (_mm256_movemask_ps(_mm256_cmp_ps(ax, lim, _CMP_GT_OQ))) {
            int j;
            for (j = 0; j < 8; j++)
                z[i + j] = fd_sigmoid1(z[i + j]);
            continue;
        }
        {
            const __m256 e = fd_exp8(_mm256_or_ps(ax, sign));   /* exp(-|x|) */
            const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e));
            const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
            _mm256_storeu_ps(z + i, _mm256_blendv_ps(s, _mm256_mul_ps(e, s), neg));
        }
    }
    for (; i < size; i++)
        z[i] = fd_sigmoid1(z[i]);
}

#else  /* no x86 SIMD: never called, since fd_have_avx2_fma() is 0 */

static void fd_sgemm(int n, int k, int m, float alpha, const float *A, ptrdiff_t a_rs,
                     ptrdiff_t a_cs, const float *B, ptrdiff_t ldb, float beta, float *C,
                     ptrdiff_t ldc)
{
    (void)n; (void)k; (void)m; (void)alpha; (void)A; (void)a_rs; (void)a_cs; (void)B;
    (void)ldb; (void)beta; (void)C; (void)ldc;
}
static void fd_sgemm_nt(int n, int m, int k, const float *A, ptrdiff_t lda, const float *B,
                        ptrdiff_t ldb, float *C, ptrdiff_t ldc)
{
    (void)n; (void)m; (void)k; (void)A; (void)lda; (void)B; (void)ldb; (void)C; (void)ldc;
}
static void fd_sigmoid_avx2(float *z, ptrdiff_t size) { (void)z; (void)size; }

#endif /* FD_X86 */

/* ------------------------------------------------------------------------------------------------
 * A second thread for split products.
 *
 * One worker thread, started on first use. After each job it spins for up to FD_SPIN_SECONDS
 * waiting for the next one (a training step issues a job every few tens of microseconds, far
 * less than a futex wake-up would cost), then sleeps on a condition variable, so an idle process
 * does not keep a core busy. One job at a time: a caller that finds the worker busy (another
 * Python thread training) runs both halves itself. After fork() the child starts a new worker.
 * ------------------------------------------------------------------------------------------------ */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <sched.h>

#define FD_SPIN_SECONDS 2e-3

typedef void (*fd_task_fn)(void *arg, int part);

static pthread_mutex_t fd_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t fd_pool_sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fd_pool_wake = PTHREAD_COND_INITIALIZER;
static atomic_uint fd_pool_seq;
static atomic_uint fd_pool_done;
static atomic_int fd_pool_sleeping;
static fd_task_fn fd_pool_fn;
static void *fd_pool_arg;
static int fd_pool_started;
static int fd_pool_atfork_registered;

static inline void fd_cpu_relax(void)
{
#if FD_X86
    _mm_pause();
#endif
}

static double fd_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *fd_pool_worker(void *unused)
{
    /* Jobs finished so far: equal to the job count when the worker is created (no job can be
     * pending then), so a job posted before this thread first runs is not missed. */
    unsigned seen = atomic_load(&fd_pool_done);
    (void)unused;
    for (;;) {
        double t0 = fd_now();
        int k = 0;
        while (atomic_load_explicit(&fd_pool_seq, memory_order_acquire) == seen) {
            fd_cpu_relax();
            if (++k == 256) {
                k = 0;
                if (fd_now() - t0 > FD_SPIN_SECONDS)
                    break;
            }
        }
        if (atomic_load_explicit(&fd_pool_seq, memory_order_acquire) == seen) {
            pthread_mutex_lock(&fd_pool_sleep_lock);
            atomic_store(&fd_pool_sleeping, 1);
            while (atomic_load(&fd_pool_seq) == seen)
                pthread_cond_wait(&fd_pool_wake, &fd_pool_sleep_lock);
            atomic_store(&fd_pool_sleeping, 0);
            pthread_mutex_unlock(&fd_pool_sleep_lock);
        }
        seen = atomic_load_explicit(&fd_pool_seq, memory_order_acquire);
        fd_pool_fn(fd_pool_arg, 1);
        atomic_store_explicit(&fd_pool_done, seen, memory_order_release);
    }
    return NULL;
}

static void fd_pool_after_fork_child(void)
{
    /* The worker did not survive the fork; the locks may have been held by another thread. */
    pthread_mutex_init(&fd_pool_lock, NULL);
    pthread_mutex_init(&fd_pool_sleep_lock, NULL);
    pthread_cond_init(&fd_pool_wake, NULL);
    atomic_store(&fd_pool_seq, 0);
    atomic_store(&fd_pool_done, 0);
    atomic_store(&fd_pool_sleeping, 0);
    fd_pool_started = 0;
}

/* Runs fn(arg, 0) on the calling thread and fn(arg, 1) on the worker; returns when both are done.
 * Runs both parts here when the worker is busy or cannot be started. */
static void fd_run2(fd_task_fn fn, void *arg)
{
    unsigned s;
    int spins = 0;
    if (pthread_mutex_trylock(&fd_pool_lock) != 0) {
        fn(arg, 0);
        fn(arg, 1);
        return;
    }
    if (!fd_pool_started) {
        pthread_t tid;
        pthread_attr_t attr;
        if (!fd_pool_atfork_registered) {
            pthread_atfork(NULL, NULL, fd_pool_after_fork_child);
            fd_pool_atfork_registered = 1;
        }
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&tid, &attr, fd_pool_worker, NULL) != 0) {
            pthread_attr_destroy(&attr);
            pthread_mutex_unlock(&fd_pool_lock);
            fn(arg, 0);
            fn(arg, 1);
            return;
        }
        pthread_attr_destroy(&attr);
        fd_pool_started = 1;
    }
    fd_pool_fn = fn;
    fd_pool_arg = arg;
    s = atomic_fetch_add(&fd_pool_seq, 1) + 1;
    /* Checked under the worker's sleep lock: the worker tests `seq` under the same lock before
     * it waits, so either it sees the new job or we see it asleep and wake it (no lost wake-up). */
    pthread_mutex_lock(&fd_pool_sleep_lock);
    if (atomic_load(&fd_pool_sleeping))
        pthread_cond_signal(&fd_pool_wake);
    pthread_mutex_unlock(&fd_pool_sleep_lock);
    fn(arg, 0);
    while (atomic_load_explicit(&fd_pool_done, memory_order_acquire) != s) {
        fd_cpu_relax();
        if (++spins == 4096) {  /* the worker lost its core: let it run */
            spins = 0;
            sched_yield();
        }
    }
    pthread_mutex_unlock(&fd_pool_lock);
}

/* Split products: part 0 computes output columns [0, split), part 1 the rest. Each output
 * element is computed by the same instructions as in the unsplit call (split is a multiple of
 * FD_NR, so the tiles are the same): the results are bit-identical. */
typedef struct {
    int n, k, m, split;
    float alpha, beta;
    const float *A, *B;
    ptrdiff_t a_rs, a_cs, ldb, ldc;
    float *C;
    int nt;  /* 0: fd_sgemm, 1: fd_sgemm_nt (then k is B's row count = output columns) */
} fd_split_job;

static void fd_split_part(void *p, int part)
{
    const fd_split_job *j = (const fd_split_job *)p;
    const int c0 = part ? j->split : 0;
    const int cols = part ? j->m - j->split : j->split;
    if (cols <= 0)
        return;
    if (j->nt)
        fd_sgemm_nt(j->n, j->k, cols, j->A, j->a_rs, j->B + (ptrdiff_t)c0 * j->ldb, j->ldb,
                    j->C + c0, j->ldc);
    else
        fd_sgemm(j->n, j->k, cols, j->alpha, j->A, j->a_rs, j->a_cs, j->B + c0, j->ldb, j->beta,
                 j->C + c0, j->ldc);
}

static int fd_split_point(int cols)
{
    const int blocks = (cols + FD_NR - 1) / FD_NR;
    return ((blocks + 1) / 2) * FD_NR;
}

/* fd_sgemm over two threads (split by output columns). */
static void fd_sgemm2(int n, int k, int m, float alpha, const float *A, ptrdiff_t a_rs,
                      ptrdiff_t a_cs, const float *B, ptrdiff_t ldb, float beta, float *C,
                      ptrdiff_t ldc)
{
    fd_split_job j;
    j.n = n; j.k = k; j.m = m; j.split = fd_split_point(m); j.alpha = alpha; j.beta = beta;
    j.A = A; j.B = B; j.a_rs = a_rs; j.a_cs = a_cs; j.ldb = ldb; j.ldc = ldc; j.C = C; j.nt = 0;
    fd_run2(fd_split_part, &j);
}

/* fd_sgemm_nt over two threads: C(n x k) := A(n x m) @ B(k x m)^T split by C's columns. */
static void fd_sgemm_nt2(int n, int m, int k, const float *A, ptrdiff_t lda, const float *B,
                         ptrdiff_t ldb, float *C, ptrdiff_t ldc)
{
    fd_split_job j;
    j.n = n; j.k = m; j.m = k; j.split = fd_split_point(k); j.alpha = 1.0f; j.beta = 0.0f;
    j.A = A; j.B = B; j.a_rs = lda; j.a_cs = 1; j.ldb = ldb; j.ldc = ldc; j.C = C; j.nt = 1;
    fd_run2(fd_split_part, &j);
}

#endif /* FASTDENSE_SIMD_H */
