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
 * where A is read through row pointers (broadcast element by element, so a batch can be read in
 * place from the caller's array, in any row order) and B(p, j) = B[p * ldb + j] (rows contiguous:
 * loaded 8 floats at a time). At the end: the layer-level products, cut in two along the layer's
 * inputs so that two threads can share them (see fd_half).
 */
#ifndef FASTDENSE_SIMD_H
#define FASTDENSE_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(FASTDENSE_NO_SIMD)
#define FD_X86 1
#include <immintrin.h>
#else
#define FD_X86 0
#endif

#define FD_MR 6    /* rows of a register tile */
#define FD_NR 16   /* columns of a register tile: two 8-float vectors */
#define FD_KC 256  /* depth of a B panel kept in L1: 256 x 16 floats = 16 KiB */
#define FD_MC 66   /* rows of A kept in L2 while the panels of B pass (a multiple of FD_MR) */
#define FD_MR8 8   /* rows of the narrow tile (a last block of at most 8 columns) */

/* How a tile reads A: FD_A_ROWS: A(i, p) = rows[i][p] (a batch given by its row pointers: the
 * forward product and dS @ W^T); FD_A_COLS: A(i, p) = rows[p][i] (the same batch transposed: the
 * weight gradient X^T @ dS). Row pointers let the first layer read a shuffled batch straight from
 * the caller's array, with no gathered copy. */
#define FD_A_ROWS 0
#define FD_A_COLS 1
#define FD_MAX_ROWS 256  /* largest batch the own kernels take (pointer arrays on the stack) */

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

/* ------------------------------------------------------------------------------------------------
 * float32 activations, one element at a time, with the arithmetic of the 8-lane AVX2 versions
 * below: the same constants, the same operations in the same order, fmaf where they fuse. So the
 * portable path gives the AVX2 path's bits (in the default round-to-nearest mode), and every
 * platform computes sigmoid, tanh and softmax's exp alike.
 * ------------------------------------------------------------------------------------------------ */

static inline float fd_bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* exp(x) for |x| <= 87.3, not NaN: x = n ln2 + r (Cody-Waite, |r| <= ln2/2), a degree-6
 * polynomial in r, times 2^n built in the exponent bits; about 1 ulp. */
static inline float fd_exp1(float x)
{
    const float n = nearbyintf(x * 1.44269504088896341f);
    float r = fmaf(-n, 0.693359375f, x);
    float p = 1.9875691500e-4f;
    r = fmaf(-n, -2.12194440e-4f, r);
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r + 1.0f);
    return p * fd_bits_float((uint32_t)((int)n + 127) << 23);
}

/* min(lim, a) as the vector min does it: a when either is NaN */
static inline float fd_min_lim(float lim, float a)
{
    return (lim < a) ? lim : a;
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

/* sigmoid: 1 / (1 + exp(-|x|)), times exp(-|x|) for x < 0; |x| > 80 takes fd_sigmoid1 (exact
 * limits, denormals). */
static inline float fd_sigmoid_v(float x)
{
    const float ax = fabsf(x);
    float e, s;
    if (ax > 80.0f)
        return fd_sigmoid1(x);
    if (x != x)
        return x;
    e = fd_exp1(-fd_min_lim(80.0f, ax));
    s = 1.0f / (1.0f + e);
    return (x < 0.0f) ? e * s : s;
}

/* tanh: |x| < 0.625: x + x^3 P(x^2) (the Cephes tanhf polynomial); else 1 - 2 / (exp(2|x|) + 1)
 * with |x| clamped to 20 (tanh is 1 in float from 9.01); x's sign on both branches, so
 * tanh(-0) = -0. About 1-2 ulp; +-Inf gives +-1, NaN stays NaN. */
static inline float fd_tanh_v(float x)
{
    const float ax = fabsf(x), x2 = x * x;
    float p = -5.70498872745e-3f, r;
    if (x != x)
        return x;
    p = fmaf(p, x2, 2.06390887954e-2f);
    p = fmaf(p, x2, -5.37397155531e-2f);
    p = fmaf(p, x2, 1.33314422036e-1f);
    p = fmaf(p, x2, -3.33332819422e-1f);
    p = fmaf(p * x2, x, x);
    if (ax < 0.625f)
        r = p;
    else
        r = 1.0f - 2.0f / (fd_exp1(2.0f * fd_min_lim(20.0f, ax)) + 1.0f);
    return copysignf(fabsf(r), x);
}

/* exp(d), d = x - mx <= 0 for a softmax row's max mx: fd_exp1 on [-87, 87], expf elsewhere
 * (exact zeros and denormals) and for NaN. */
static inline float fd_exp_shifted1(float x, float mx)
{
    const float d = x - mx;
    if (!(d >= -87.0f) || d > 87.0f)
        return expf(x - mx);
    return fd_exp1(d);
}

/* The backward pass of an activation from its output z, dS := dZ * act'(.), for
 *   FD_GRAD_SIGMOID: (dZ * z) * (1 - z), rounded in that order;
 *   FD_GRAD_TANH:    dZ * (1 - z * z), with 1 - z * z as one fused operation;
 *   FD_GRAD_RELU:    dZ where z > 0, else +0 (relu'(0) = 0 as in Keras; NaN z gives 0). */
enum { FD_GRAD_SIGMOID, FD_GRAD_TANH, FD_GRAD_RELU };

static inline float fd_grad1(int kind, float z, float dz)
{
    return (kind == FD_GRAD_SIGMOID) ? (dz * z) * (1.0f - z)
         : (kind == FD_GRAD_TANH) ? dz * fmaf(-z, z, 1.0f)
         : (z > 0.0f ? dz : 0.0f);
}

#if FD_X86

__attribute__((target("avx2,fma")))
static inline __m256i fd_tail_mask(int n)
{
    /* lanes 0..n-1 set, n in 0..8 */
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

/* A group of n <= 8 floats: a plain load or store for a full group, under the mask mk (the first
 * n lanes) for the last one of an array (a masked store is microcoded on AMD: only when needed). */
__attribute__((target("avx2,fma")))
static inline __m256 fd_load_group(const float *p, int n, __m256i mk)
{
    return (n == 8) ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mk);
}

__attribute__((target("avx2,fma")))
static inline void fd_store_group(float *p, int n, __m256i mk, __m256 v)
{
    if (n == 8)
        _mm256_storeu_ps(p, v);
    else
        _mm256_maskstore_ps(p, mk, v);
}


/* One MR x NR tile (MR <= 6, NR <= 16) over a depth of kc:
 *   C(r, j) := alpha * sum_{p < kc} A(r, p) * B(p, j) + beta * C(r, j)
 * with A(r, p) = rp[r][off + p] (FD_A_ROWS) or rp[p][off + r] (FD_A_COLS). Every element is one
 * chain of FMAs over p from zero, then alpha and beta: the same arithmetic whatever the tile's
 * shape or position, which is what keeps results independent of batch size and thread count. */
__attribute__((target("avx2,fma"), always_inline))
static inline void fd_tile_body(int mr, int nr, int kc, const float *const *rp, int mode,
                                ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C,
                                ptrdiff_t ldc, float alpha, float beta, int tstore,
                                const int *pl, const int full)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    const __m256i m0 = fd_tail_mask(nr >= 8 ? 8 : nr);
    const __m256i m1 = fd_tail_mask(nr >= 16 ? 8 : (nr > 8 ? nr - 8 : 0));
    const float *a0 = NULL, *a1 = NULL, *a2 = NULL, *a3 = NULL, *a4 = NULL, *a5 = NULL;
    int p, t;

    if (mode == FD_A_ROWS) {
        a0 = rp[0] + off;
        a1 = mr > 1 ? rp[1] + off : a0;
        a2 = mr > 2 ? rp[2] + off : a0;
        a3 = mr > 3 ? rp[3] + off : a0;
        a4 = mr > 4 ? rp[4] + off : a0;
        a5 = mr > 5 ? rp[5] + off : a0;
    }

#define FD_ROW(src, c0, c1)                                                    \
    {                                                                          \
        const __m256 a = _mm256_broadcast_ss(src);                             \
        c0 = _mm256_fmadd_ps(a, b0, c0);                                       \
        c1 = _mm256_fmadd_ps(a, b1, c1);                                       \
    }
#define FD_LOAD_B                                                              \
    const float *bp = B + p * ldb;                                             \
    __m256 b0, b1;                                                             \
    if (full) {                                                                \
        b0 = _mm256_loadu_ps(bp);                                              \
        b1 = _mm256_loadu_ps(bp + 8);                                          \
    } else {                                                                   \
        b0 = _mm256_maskload_ps(bp, m0);                                       \
        b1 = _mm256_maskload_ps(bp + 8, m1);                                   \
    }
/* the full/masked choice outside the loops: gcc kept it inside, a compare and branch per step */
#define FD_LOAD_BF                                                             \
    const float *bp = B + p * ldb;                                             \
    const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
#define FD_LOAD_BM                                                             \
    const float *bp = B + p * ldb;                                             \
    const __m256 b0 = _mm256_maskload_ps(bp, m0), b1 = _mm256_maskload_ps(bp + 8, m1);
#define FD_LOOP_R(ROWS)                                                        \
    if (full) { for (p = 0; p < kc; p++) { FD_LOAD_BF ROWS } }                 \
    else { for (p = 0; p < kc; p++) { FD_LOAD_BM ROWS } }
#define FD_LOOP_C(ROWS)                                                        \
    if (pl != NULL) {                                                          \
        if (full) { for (t = 0; t < kc; t++) { p = pl[t]; { const float *q = rp[p] + off; FD_LOAD_BF ROWS } } } \
        else { for (t = 0; t < kc; t++) { p = pl[t]; { const float *q = rp[p] + off; FD_LOAD_BM ROWS } } } \
    } else if (full) { for (p = 0; p < kc; p++) { const float *q = rp[p] + off; FD_LOAD_BF ROWS } } \
    else { for (p = 0; p < kc; p++) { const float *q = rp[p] + off; FD_LOAD_BM ROWS } }
#define FD_R6 FD_ROW(a0 + p, c00, c01) FD_ROW(a1 + p, c10, c11) FD_ROW(a2 + p, c20, c21) \
              FD_ROW(a3 + p, c30, c31) FD_ROW(a4 + p, c40, c41) FD_ROW(a5 + p, c50, c51)
#define FD_R5 FD_ROW(a0 + p, c00, c01) FD_ROW(a1 + p, c10, c11) FD_ROW(a2 + p, c20, c21) \
              FD_ROW(a3 + p, c30, c31) FD_ROW(a4 + p, c40, c41)
#define FD_R4 FD_ROW(a0 + p, c00, c01) FD_ROW(a1 + p, c10, c11) FD_ROW(a2 + p, c20, c21) \
              FD_ROW(a3 + p, c30, c31)
#define FD_R3 FD_ROW(a0 + p, c00, c01) FD_ROW(a1 + p, c10, c11) FD_ROW(a2 + p, c20, c21)
#define FD_R2 FD_ROW(a0 + p, c00, c01) FD_ROW(a1 + p, c10, c11)
#define FD_R1 FD_ROW(a0 + p, c00, c01)
#define FD_C6 FD_ROW(q, c00, c01) FD_ROW(q + 1, c10, c11) FD_ROW(q + 2, c20, c21) \
              FD_ROW(q + 3, c30, c31) FD_ROW(q + 4, c40, c41) FD_ROW(q + 5, c50, c51)
#define FD_C5 FD_ROW(q, c00, c01) FD_ROW(q + 1, c10, c11) FD_ROW(q + 2, c20, c21) \
              FD_ROW(q + 3, c30, c31) FD_ROW(q + 4, c40, c41)
#define FD_C4 FD_ROW(q, c00, c01) FD_ROW(q + 1, c10, c11) FD_ROW(q + 2, c20, c21) \
              FD_ROW(q + 3, c30, c31)
#define FD_C3 FD_ROW(q, c00, c01) FD_ROW(q + 1, c10, c11) FD_ROW(q + 2, c20, c21)
#define FD_C2 FD_ROW(q, c00, c01) FD_ROW(q + 1, c10, c11)
#define FD_C1 FD_ROW(q, c00, c01)

    if (mode == FD_A_ROWS) {
        switch (mr) {
        case 6: FD_LOOP_R(FD_R6) break;
        case 5: FD_LOOP_R(FD_R5) break;
        case 4: FD_LOOP_R(FD_R4) break;
        case 3: FD_LOOP_R(FD_R3) break;
        case 2: FD_LOOP_R(FD_R2) break;
        default: FD_LOOP_R(FD_R1) break;
        }
    } else {
        switch (mr) {
        case 6: FD_LOOP_C(FD_C6) break;
        case 5: FD_LOOP_C(FD_C5) break;
        case 4: FD_LOOP_C(FD_C4) break;
        case 3: FD_LOOP_C(FD_C3) break;
        case 2: FD_LOOP_C(FD_C2) break;
        default: FD_LOOP_C(FD_C1) break;
        }
    }
#undef FD_R6
#undef FD_R5
#undef FD_R4
#undef FD_R3
#undef FD_R2
#undef FD_R1
#undef FD_C6
#undef FD_C5
#undef FD_C4
#undef FD_C3
#undef FD_C2
#undef FD_C1
#undef FD_LOOP_R
#undef FD_LOOP_C
#undef FD_LOAD_B
#undef FD_LOAD_BF
#undef FD_LOAD_BM
#undef FD_ROW

    {
        const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
        __m256 acc[FD_MR][2];
        int r;
        acc[0][0] = c00; acc[0][1] = c01; acc[1][0] = c10; acc[1][1] = c11;
        acc[2][0] = c20; acc[2][1] = c21; acc[3][0] = c30; acc[3][1] = c31;
        acc[4][0] = c40; acc[4][1] = c41; acc[5][0] = c50; acc[5][1] = c51;
        if (tstore > 0) {
            /* C stored transposed, its first tstore columns: element (r, j) at C[j * ldc + r]
             * (see fd_input_grad). Rounded as below: alpha * acc, then fma(beta, C, .). */
            float tmp[FD_MR][FD_NR];
            int jj;
            for (r = 0; r < mr; r++) {
                _mm256_storeu_ps(tmp[r], acc[r][0]);
                _mm256_storeu_ps(tmp[r] + 8, acc[r][1]);
            }
            for (jj = 0; jj < tstore; jj++) {
                float *cc = C + jj * ldc;
                for (r = 0; r < mr; r++) {
                    const float v = alpha * tmp[r][jj];
                    cc[r] = (beta != 0.0f) ? fmaf(beta, cc[r], v) : v;
                }
            }
            return;
        }
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

/* The tile's two instances: all 16 columns, and fewer under masks. One function served both:
 * the masks then stayed live through the 16-column loop and gcc kept one row's accumulators on
 * the stack, a store and a reload in every step of the chain (a third of the forward product's
 * time went to that one instruction). */
__attribute__((target("avx2,fma"), noinline))
static void fd_tile_full(int mr, int kc, const float *const *rp, int mode, ptrdiff_t off,
                         const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                         float beta, int tstore, const int *pl)
{
    fd_tile_body(mr, FD_NR, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl, 1);
}

__attribute__((target("avx2,fma"), noinline))
static void fd_tile_masked(int mr, int nr, int kc, const float *const *rp, int mode,
                           ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                           float alpha, float beta, int tstore, const int *pl)
{
    fd_tile_body(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl, 0);
}

static void fd_tile_avx2(int mr, int nr, int kc, const float *const *rp, int mode,
                         ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                         float alpha, float beta, int tstore, const int *pl)
{
    if (nr == FD_NR)
        fd_tile_full(mr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl);
    else
        fd_tile_masked(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl);
}

/* The narrow tile for a last column block of at most 8 columns (m = 100 leaves 4): up to 8 rows
 * by one 8-float vector, so the masked lanes waste half as much as in the 16-wide tile. Same
 * per-element arithmetic as fd_tile. */
__attribute__((target("avx2,fma")))
static void fd_tile8_avx2(int mr, int nr, int kc, const float *const *rp, int mode,
                          ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                          float alpha, float beta)
{
    /* The accumulators are plain locals, copied into acc[] only after the loop: taking their
     * addresses made the compiler keep them on the stack, one store per FMA (3.6x slower). */
    __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps(), c2 = _mm256_setzero_ps();
    __m256 c3 = _mm256_setzero_ps(), c4 = _mm256_setzero_ps(), c5 = _mm256_setzero_ps();
    __m256 c6 = _mm256_setzero_ps(), c7 = _mm256_setzero_ps();
    __m256 acc[FD_MR8];
    const __m256i mk = fd_tail_mask(nr);
    int p, r;
#define FD_F(src, c) c = _mm256_fmadd_ps(_mm256_broadcast_ss(src), b, c);
    if (mode == FD_A_ROWS && mr == FD_MR8) {
        const float *a0 = rp[0] + off, *a1 = rp[1] + off, *a2 = rp[2] + off, *a3 = rp[3] + off;
        const float *a4 = rp[4] + off, *a5 = rp[5] + off, *a6 = rp[6] + off, *a7 = rp[7] + off;
        for (p = 0; p < kc; p++) {
            const __m256 b = _mm256_maskload_ps(B + p * ldb, mk);
            FD_F(a0 + p, c0) FD_F(a1 + p, c1) FD_F(a2 + p, c2) FD_F(a3 + p, c3)
            FD_F(a4 + p, c4) FD_F(a5 + p, c5) FD_F(a6 + p, c6) FD_F(a7 + p, c7)
        }
    } else if (mode == FD_A_COLS && mr == FD_MR8) {
        for (p = 0; p < kc; p++) {
            const __m256 b = _mm256_maskload_ps(B + p * ldb, mk);
            const float *q = rp[p] + off;
            FD_F(q, c0) FD_F(q + 1, c1) FD_F(q + 2, c2) FD_F(q + 3, c3)
            FD_F(q + 4, c4) FD_F(q + 5, c5) FD_F(q + 6, c6) FD_F(q + 7, c7)
        }
    }
    acc[0] = c0; acc[1] = c1; acc[2] = c2; acc[3] = c3;
    acc[4] = c4; acc[5] = c5; acc[6] = c6; acc[7] = c7;
    if (mr != FD_MR8) {
        /* a partial block of rows (the last rows of a batch): one row at a time */
        for (r = 0; r < mr; r++) {
            __m256 c = _mm256_setzero_ps();
            for (p = 0; p < kc; p++) {
                const __m256 b = _mm256_maskload_ps(B + p * ldb, mk);
                const float *src = (mode == FD_A_ROWS) ? rp[r] + off + p : rp[p] + off + r;
                FD_F(src, c)
            }
            acc[r] = c;
        }
    }
#undef FD_F
    {
        const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
        for (r = 0; r < mr; r++) {
            float *cr = C + r * ldc;
            __m256 v = _mm256_mul_ps(va, acc[r]);
            if (beta != 0.0f)
                v = _mm256_fmadd_ps(vb, _mm256_maskload_ps(cr, mk), v);
            _mm256_maskstore_ps(cr, mk, v);
        }
    }
}

/* The rows p < n whose elements rp[p][i .. i + w) are not all zero (+0 or -0), in order, into
 * pl; returns their count. w <= 24. A zero of A adds nothing to a chain of FMAs (see
 * fd_dw_sparse), so a tile of a weight gradient needs only these rows. */
__attribute__((target("avx2,fma")))
static int fd_nonzero_rows_avx2(const float *const *rp, int n, int i, int w, int *pl)
{
    const __m256i bits = _mm256_set1_epi32(0x7fffffff);
    const int tail = w - ((w - 1) / 8) * 8;
    const __m256i mk = fd_tail_mask(tail);
    int p, c, np = 0;
    for (p = 0; p < n; p++) {
        const float *x = rp[p] + i;
        __m256i v = _mm256_castps_si256(_mm256_maskload_ps(x + (w - tail), mk));
        for (c = 0; c + 8 < w; c += 8)
            v = _mm256_or_si256(v, _mm256_castps_si256(_mm256_loadu_ps(x + c)));
        pl[np] = p;
        np += !_mm256_testz_si256(v, bits);
    }
    return np;
}

/* The narrow block of a weight gradient (FD_A_COLS, at most 8 columns: the last 4 of a 100-unit
 * layer), with the vectors along the rows of C instead of its columns: A(i, p) = rp[p][i] is
 * contiguous in i, so 8 rows of C take one load of A, and each of up to 4 columns of B is one
 * broadcast. Blocks of 24 rows x 4 columns (12 accumulators), every lane used, where fd_tile8
 * left half of its lanes idle on 4 columns. Each element is the same chain of FMAs over p as in
 * fd_tile (fma(A, B, c) from zero, then alpha and beta, rounded alike): bit-identical results. */
__attribute__((target("avx2,fma")))
static void fd_cols_narrow_avx2(int i0, int i1, int nr, int kc, const float *const *rp,
                               const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                               float alpha, float beta, int sparse)
{
    int i, j0, p, j, r, t, np;
    int pl[FD_MAX_ROWS];
    for (i = i0; i < i1; i += 24) {
        const int rows = (i1 - i < 24) ? i1 - i : 24;
        if (sparse)
            np = fd_nonzero_rows_avx2(rp, kc, i, rows, pl);
        else
            for (np = 0; np < kc; np++)
                pl[np] = np;
        for (j0 = 0; j0 < nr; j0 += 4) {
            const int nc = (nr - j0 < 4) ? nr - j0 : 4;
            const __m256i mk0 = fd_tail_mask(rows >= 8 ? 8 : rows);
            const __m256i mk1 = fd_tail_mask(rows >= 16 ? 8 : (rows > 8 ? rows - 8 : 0));
            const __m256i mk2 = fd_tail_mask(rows >= 24 ? 8 : (rows > 16 ? rows - 16 : 0));
            __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c03 = c00;
            __m256 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
            __m256 c20 = c00, c21 = c00, c22 = c00, c23 = c00;
            float tmp[4][24];
#define FD_COLV(j, b, x0, x1, x2, k0, k1, k2)                                  \
            {                                                                  \
                const __m256 b = _mm256_broadcast_ss(bp + (j));                \
                k0 = _mm256_fmadd_ps(x0, b, k0);                               \
                k1 = _mm256_fmadd_ps(x1, b, k1);                               \
                k2 = _mm256_fmadd_ps(x2, b, k2);                               \
            }
            if (rows == 24 && nc == 4) {
                for (t = 0; t < np; t++) {
                    const float *x = rp[p = pl[t]] + i, *bp = B + p * ldb + j0;
                    const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);
                    const __m256 x2 = _mm256_loadu_ps(x + 16);
                    FD_COLV(0, b0, x0, x1, x2, c00, c10, c20)
                    FD_COLV(1, b1, x0, x1, x2, c01, c11, c21)
                    FD_COLV(2, b2, x0, x1, x2, c02, c12, c22)
                    FD_COLV(3, b3, x0, x1, x2, c03, c13, c23)
                }
            } else {
                for (t = 0; t < np; t++) {
                    const float *x = rp[p = pl[t]] + i, *bp = B + p * ldb + j0;
                    const __m256 x0 = _mm256_maskload_ps(x, mk0);
                    const __m256 x1 = _mm256_maskload_ps(x + 8, mk1);
                    const __m256 x2 = _mm256_maskload_ps(x + 16, mk2);
                    FD_COLV(0, b0, x0, x1, x2, c00, c10, c20)
                    if (nc > 1) FD_COLV(1, b1, x0, x1, x2, c01, c11, c21)
                    if (nc > 2) FD_COLV(2, b2, x0, x1, x2, c02, c12, c22)
                    if (nc > 3) FD_COLV(3, b3, x0, x1, x2, c03, c13, c23)
                }
            }
#undef FD_COLV
            _mm256_storeu_ps(tmp[0], c00); _mm256_storeu_ps(tmp[0] + 8, c10);
            _mm256_storeu_ps(tmp[0] + 16, c20);
            _mm256_storeu_ps(tmp[1], c01); _mm256_storeu_ps(tmp[1] + 8, c11);
            _mm256_storeu_ps(tmp[1] + 16, c21);
            _mm256_storeu_ps(tmp[2], c02); _mm256_storeu_ps(tmp[2] + 8, c12);
            _mm256_storeu_ps(tmp[2] + 16, c22);
            _mm256_storeu_ps(tmp[3], c03); _mm256_storeu_ps(tmp[3] + 8, c13);
            _mm256_storeu_ps(tmp[3] + 16, c23);
            for (r = 0; r < rows; r++) {
                float *cr = C + (ptrdiff_t)(i + r) * ldc + j0;
                for (j = 0; j < nc; j++) {
                    const float v = alpha * tmp[j][r];
                    cr[j] = (beta != 0.0f) ? fmaf(beta, cr[j], v) : v;
                }
            }
        }
    }
}

/* One row: c(1 x m) := alpha * a[k0:k1] @ B[k0:k1, :] + beta * c, up to 104 columns (13 vectors,
 * 13 accumulators) per pass, so that a layer of up to 104 units reads each row of B once, in
 * memory order (a one-row product is bound by reading B). Same depth chunks (FD_KC from k0) and
 * the same final arithmetic as fd_tile, so a row computed here is bit-identical to the same row
 * computed inside a larger batch. */
#define FD_RV 13
__attribute__((target("avx2,fma")))
static void fd_sgemv_row_avx2(int k0, int k1, int m, float alpha, const float *a,
                              const float *B, ptrdiff_t ldb, float beta, float *c)
{
    int jc, pc, p, v;
    for (jc = 0; jc < m; jc += 8 * FD_RV) {
        const int nr = (m - jc < 8 * FD_RV) ? m - jc : 8 * FD_RV;
        const int nfull = nr / 8, rem = nr % 8;
        /* Leftover columns (rem) of a block of at least 8: one more vector, loaded whole from
         * the last 8 columns (overlapping the previous one: its overlapped lanes repeat the same
         * chains, so they get the same bits). No masks: with 13 accumulators, a mask and the
         * masked load's register made gcc keep accumulators on the stack. */
        const int tail = (rem > 0 && nfull > 0), to = nr - 8;
        const __m256i mk = fd_tail_mask(rem);
        for (pc = k0; pc < k1; pc += FD_KC) {
            const int kc = (k1 - pc < FD_KC) ? k1 - pc : FD_KC;
            const float b = (pc == k0) ? beta : 1.0f;
            const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(b);
            __m256 acc[FD_RV], rt = _mm256_setzero_ps();
            /* Every index into acc is a constant after unrolling (one case per count of vectors
             * below, unrolled loops here): an index known only at run time made gcc keep acc in
             * memory, 13 stores in every step of the depth loop. */
#pragma GCC unroll 13
            for (v = 0; v < FD_RV; v++)
                acc[v] = _mm256_setzero_ps();
/* NV whole vectors, then (TAIL, a constant) the overlapping one */
#define FD_ROWPASS(NV, TAIL)                                                               \
            for (p = pc; p < pc + kc; p++) {                                               \
                const __m256 x = _mm256_broadcast_ss(a + p);                               \
                const float *bp = B + p * ldb + jc;                                        \
                _Pragma("GCC unroll 13")                                                   \
                for (v = 0; v < (NV); v++)                                                 \
                    acc[v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 8 * v), acc[v]);      \
                if (TAIL)                                                                  \
                    acc[(NV) % FD_RV] = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + to),       \
                                                        acc[(NV) % FD_RV]);                \
            }
            if (nfull == 0) {
                for (p = pc; p < pc + kc; p++)
                    acc[0] = _mm256_fmadd_ps(_mm256_broadcast_ss(a + p),
                                             _mm256_maskload_ps(B + p * ldb + jc, mk), acc[0]);
            } else if (!tail) {
                switch (nfull) {
                case 13: FD_ROWPASS(13, 0) break;
                case 12: FD_ROWPASS(12, 0) break;
                case 11: FD_ROWPASS(11, 0) break;
                case 10: FD_ROWPASS(10, 0) break;
                case 9: FD_ROWPASS(9, 0) break;
                case 8: FD_ROWPASS(8, 0) break;
                case 7: FD_ROWPASS(7, 0) break;
                case 6: FD_ROWPASS(6, 0) break;
                case 5: FD_ROWPASS(5, 0) break;
                case 4: FD_ROWPASS(4, 0) break;
                case 3: FD_ROWPASS(3, 0) break;
                case 2: FD_ROWPASS(2, 0) break;
                default: FD_ROWPASS(1, 0) break;
                }
            } else {
                switch (nfull) {
                case 12: FD_ROWPASS(12, 1) break;
                case 11: FD_ROWPASS(11, 1) break;
                case 10: FD_ROWPASS(10, 1) break;
                case 9: FD_ROWPASS(9, 1) break;
                case 8: FD_ROWPASS(8, 1) break;
                case 7: FD_ROWPASS(7, 1) break;
                case 6: FD_ROWPASS(6, 1) break;
                case 5: FD_ROWPASS(5, 1) break;
                case 4: FD_ROWPASS(4, 1) break;
                case 3: FD_ROWPASS(3, 1) break;
                case 2: FD_ROWPASS(2, 1) break;
                default: FD_ROWPASS(1, 1) break;
                }
            }
#undef FD_ROWPASS
            if (nfull == 0) {
                __m256 r = _mm256_mul_ps(va, acc[0]);
                if (b != 0.0f)
                    r = _mm256_fmadd_ps(vb, _mm256_maskload_ps(c + jc, mk), r);
                _mm256_maskstore_ps(c + jc, mk, r);
                continue;
            }
            /* the overlapping vector's C is read before any store, and stored last */
#pragma GCC unroll 13
            for (v = 0; v < FD_RV; v++)
                if (v == nfull)
                    rt = acc[v];
            rt = _mm256_mul_ps(va, rt);
            if (tail && b != 0.0f)
                rt = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + jc + to), rt);
#pragma GCC unroll 13
            for (v = 0; v < FD_RV; v++) {
                if (v < nfull) {
                    __m256 r = _mm256_mul_ps(va, acc[v]);
                    if (b != 0.0f)
                        r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + jc + 8 * v), r);
                    _mm256_storeu_ps(c + jc + 8 * v, r);
                }
            }
            if (tail)
                _mm256_storeu_ps(c + jc + to, rt);
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

/* out[j] := exp(x[j] - mx) for j < m (a softmax's numerators; x - mx <= 0 for the row's max mx):
 * fd_exp8 on 8 lanes at a time, expf for lanes outside [-87, 87] (where fd_exp8's scaling
 * would leave the normal range: exact zeros and denormals, overflow) or NaN. */
__attribute__((target("avx2,fma")))
static void fd_exp_shifted_avx2(const float *x, float mx, float *out, int m)
{
    const __m256 vmx = _mm256_set1_ps(mx), lo = _mm256_set1_ps(-87.0f);
    int j, k;
    for (j = 0; j < m; j += 8) {
        const int n = (m - j < 8) ? m - j : 8;
        const __m256i mk = fd_tail_mask(n);
        const __m256 d = _mm256_sub_ps(fd_load_group(x + j, n, mk), vmx);
        /* not (-87 <= d <= 87): out of fd_exp8's range, or NaN (d > 0 cannot happen for a
         * row's max, but the guard costs nothing) */
        const int odd = _mm256_movemask_ps(_mm256_or_ps(
                            _mm256_cmp_ps(d, lo, _CMP_NGE_UQ),
                            _mm256_cmp_ps(d, _mm256_set1_ps(87.0f), _CMP_GT_OQ)))
                        & ((1 << n) - 1);
        float tmp[8];
        _mm256_storeu_ps(tmp, fd_exp8(_mm256_min_ps(_mm256_max_ps(d, lo), _mm256_set1_ps(87.0f))));
        for (k = 0; k < n; k++)
            out[j + k] = (odd & (1 << k)) ? expf(x[j + k] - mx) : tmp[k];
    }
}


/* z := f(z) in place, 8 floats at a time: the last group of fewer than 8 is loaded and stored
 * under a mask, and goes through the same f as every other, so an element's value does not
 * depend on its position (a row's values do not depend on the batch it is computed in). */
typedef __m256 (*fd_vec8_fn)(__m256 x);

__attribute__((target("avx2,fma"), always_inline))
static inline void fd_map_groups(float *z, ptrdiff_t size, fd_vec8_fn f)
{
    ptrdiff_t i;
    for (i = 0; i < size; i += 8) {
        const int n = (size - i < 8) ? (int)(size - i) : 8;
        const __m256i mk = fd_tail_mask(n);
        fd_store_group(z + i, n, mk, f(fd_load_group(z + i, n, mk)));
    }
}

/* sigmoid: the vector formula, except lanes with |x| > 80, which take the exact scalar path
 * (exact 0/1 limits, denormals). */
__attribute__((target("avx2,fma"), always_inline))
static inline __m256 fd_sigmoid8(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f), lim = _mm256_set1_ps(80.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 ax = _mm256_andnot_ps(sign, x);
    const int big = _mm256_movemask_ps(_mm256_cmp_ps(ax, lim, _CMP_GT_OQ));
    /* exp(-|x|) on |x| clamped to 80 (the clamped lanes are replaced below) */
    /* (min_ps returns its second operand when one is NaN: a NaN stays NaN) */
    const __m256 e = fd_exp8(_mm256_or_ps(_mm256_min_ps(lim, ax), sign));
    const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e));
    const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
    __m256 r = _mm256_blendv_ps(s, _mm256_mul_ps(e, s), neg);
    if (big) {
        float tmp[8], xs[8];
        int j;
        _mm256_storeu_ps(tmp, r);
        _mm256_storeu_ps(xs, x);
        for (j = 0; j < 8; j++)
            if (big & (1 << j))
                tmp[j] = fd_sigmoid1(xs[j]);
        r = _mm256_loadu_ps(tmp);
    }
    return r;
}

__attribute__((target("avx2,fma")))
static void fd_sigmoid_avx2(float *z, ptrdiff_t size)
{
    fd_map_groups(z, size, fd_sigmoid8);
}

/* tanh: |x| < 0.625: x + x^3 P(x^2) (the Cephes tanhf polynomial); else 1 - 2 / (exp(2|x|) + 1)
 * with |x| clamped to 20 (tanh is 1 in float from 9.01), sign restored. About 1-2 ulp;
 * tanh(-0) = -0, +-Inf gives +-1, NaN stays NaN. */
__attribute__((target("avx2,fma"), always_inline))
static inline __m256 fd_tanh8(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
    const __m256 lim = _mm256_set1_ps(20.0f), small = _mm256_set1_ps(0.625f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 ax = _mm256_andnot_ps(sign, x);
    const __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(-5.70498872745e-3f);
    __m256 e, big, r;
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.06390887954e-2f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-5.37397155531e-2f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(1.33314422036e-1f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-3.33332819422e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, x2), x, x);
    /* (min_ps returns its second operand when one is NaN: a NaN stays NaN) */
    e = fd_exp8(_mm256_mul_ps(two, _mm256_min_ps(lim, ax)));
    big = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one)));
    r = _mm256_blendv_ps(big, p, _mm256_cmp_ps(ax, small, _CMP_LT_OQ));
    /* x's sign on both branches (tanh is odd; this keeps tanh(-0) = -0) */
    return _mm256_or_ps(_mm256_andnot_ps(sign, r), _mm256_and_ps(sign, x));
}

__attribute__((target("avx2,fma")))
static void fd_tanh_avx2(float *z, ptrdiff_t size)
{
    fd_map_groups(z, size, fd_tanh8);
}

/* The backward pass of an activation from its output z (fd_grad1), 8 lanes at a time; every
 * element by the same expression, the tail of fewer than 8 included; dS may alias dZ. */

__attribute__((target("avx2,fma")))
static inline __m256 fd_grad8(int kind, __m256 z, __m256 dz)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    switch (kind) {
    case FD_GRAD_SIGMOID: return _mm256_mul_ps(_mm256_mul_ps(dz, z), _mm256_sub_ps(one, z));
    case FD_GRAD_TANH: return _mm256_mul_ps(dz, _mm256_fnmadd_ps(z, z, one));
    default: return _mm256_and_ps(_mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_GT_OQ), dz);
    }
}

__attribute__((target("avx2,fma")))
static void fd_act_grad_avx2(int kind, const float *z, const float *dz, float *ds,
                             ptrdiff_t size)
{
    ptrdiff_t i = 0;
    for (; i + 8 <= size; i += 8)
        _mm256_storeu_ps(ds + i, fd_grad8(kind, _mm256_loadu_ps(z + i), _mm256_loadu_ps(dz + i)));
    for (; i < size; i++)
        ds[i] = fd_grad1(kind, z[i], dz[i]);
}

#endif /* FD_X86 */

/* ------------------------------------------------------------------------------------------------
 * The portable micro-kernels: plain C with the arithmetic contract of the AVX2 ones.
 *
 * Used where the AVX2 kernels are not compiled in (other architectures, MSVC, FASTDENSE_NO_SIMD)
 * or the CPU lacks AVX2/FMA. Every element of C is the same chain as in fd_tile: acc = 0, then
 * acc = fmaf(A(r, p), B(p, j), acc) for each p of the depth chunk in order, then v = alpha * acc
 * and C = fmaf(beta, C, v) (C = v when beta is 0). fmaf rounds once, like the vector FMA, so these
 * kernels give the AVX2 kernels' bits, and a row's result never depends on the batch around it or
 * on the thread that computed it. The inner loops run over a fixed width of columns with no
 * dependence between them, so compilers vectorise them (NEON fmla on aarch64, where FMA is part
 * of the base architecture; with no hardware FMA, fmaf is a library call: correct but slow).
 * ------------------------------------------------------------------------------------------------ */

#define FD_TILE_ROWS_MAX FD_MR8  /* the portable tile takes the 6-row and the 8-row tiles' shapes */

/* One tile: mr <= 8 rows by nr <= 16 columns, A read as in fd_tile_avx2 (pl: FD_A_COLS only, the
 * list of depth indices to run over, kc of them; NULL for 0..kc-1). tstore > 0: C transposed, its
 * first tstore columns, element (r, j) at C[j * ldc + r]. */
static inline void fd_tile_c_body(int mr, int nr, int kc, const float *const *rp, int mode,
                                  ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C,
                                  ptrdiff_t ldc, float alpha, float beta, int tstore,
                                  const int *pl)
{
    float acc[FD_TILE_ROWS_MAX][FD_NR];
    int r, j, t;
    for (r = 0; r < mr; r++)
        for (j = 0; j < FD_NR; j++)
            acc[r][j] = 0.0f;
    for (t = 0; t < kc; t++) {
        const int p = (pl != NULL) ? pl[t] : t;
        const float *restrict bp = B + (ptrdiff_t)p * ldb;
        for (r = 0; r < mr; r++) {
            const float a = (mode == FD_A_ROWS) ? rp[r][off + p] : rp[p][off + r];
            float *restrict ar = acc[r];
            for (j = 0; j < nr; j++)
                ar[j] = fmaf(a, bp[j], ar[j]);
        }
    }
    for (r = 0; r < mr; r++)
        for (j = 0; j < (tstore > 0 ? tstore : nr); j++) {
            float *cp = (tstore > 0) ? C + (ptrdiff_t)j * ldc + r : C + (ptrdiff_t)r * ldc + j;
            const float v = alpha * acc[r][j];
            *cp = (beta != 0.0f) ? fmaf(beta, *cp, v) : v;
        }
}

static void fd_tile_c(int mr, int nr, int kc, const float *const *rp, int mode, ptrdiff_t off,
                      const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                      float beta, int tstore, const int *pl)
{
    /* the full width as a constant: the compiler then unrolls and vectorises the column loop */
    if (nr == FD_NR)
        fd_tile_c_body(mr, FD_NR, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl);
    else
        fd_tile_c_body(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl);
}

/* The rows p < n whose rp[p][i .. i + w) are not all zero (+0 or -0), in order; their count. */
static int fd_nonzero_rows_c(const float *const *rp, int n, int i, int w, int *pl)
{
    int p, c, np = 0;
    for (p = 0; p < n; p++) {
        const float *x = rp[p] + i;
        uint32_t bits = 0;
        for (c = 0; c < w; c++) {
            uint32_t u;
            memcpy(&u, x + c, sizeof u);
            bits |= u & 0x7fffffffu;
        }
        pl[np] = p;
        np += (bits != 0);
    }
    return np;
}

/* One row: c(1 x m) := alpha * a[k0:k1] @ B[k0:k1, :] + beta * c, in depth chunks of FD_KC from
 * k0 like fd_gemm_rows, so a row computed here has the bits of the same row inside a batch. */
#define FD_ROW_COLS 64  /* columns per pass: the accumulators stay in registers or L1 */
static void fd_sgemv_row_c(int k0, int k1, int m, float alpha, const float *a, const float *B,
                           ptrdiff_t ldb, float beta, float *c)
{
    float acc[FD_ROW_COLS];
    int jc, pc, p, j;
    for (jc = 0; jc < m; jc += FD_ROW_COLS) {
        const int nr = (m - jc < FD_ROW_COLS) ? m - jc : FD_ROW_COLS;
        for (pc = k0; pc < k1; pc += FD_KC) {
            const int pe = (k1 - pc < FD_KC) ? k1 : pc + FD_KC;
            const float b = (pc == k0) ? beta : 1.0f;
            for (j = 0; j < nr; j++)
                acc[j] = 0.0f;
            for (p = pc; p < pe; p++) {
                const float x = a[p];
                const float *restrict bp = B + (ptrdiff_t)p * ldb + jc;
                for (j = 0; j < nr; j++)
                    acc[j] = fmaf(x, bp[j], acc[j]);
            }
            for (j = 0; j < nr; j++) {
                const float v = alpha * acc[j];
                c[jc + j] = (b != 0.0f) ? fmaf(b, c[jc + j], v) : v;
            }
        }
    }
}

/* The narrow block of a weight gradient (FD_A_COLS, nr <= 8 columns), rows i0..i1 of C: 6-row
 * tiles, each over the rows of A that are not all zero when `sparse` (see fd_dw_sparse). */
static void fd_cols_narrow_c(int i0, int i1, int nr, int kc, const float *const *rp,
                             const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                             float beta, int sparse)
{
    int pl[FD_MAX_ROWS];
    int i;
    for (i = i0; i < i1; i += FD_MR) {
        const int mr = (i1 - i < FD_MR) ? i1 - i : FD_MR;
        const int np = sparse ? fd_nonzero_rows_c(rp, kc, i, mr, pl) : kc;
        fd_tile_c(mr, nr, np, rp, FD_A_COLS, i, B, ldb, C + (ptrdiff_t)i * ldc, ldc, alpha, beta,
                  0, sparse ? pl : NULL);
    }
}

/* The kernels the products below call: AVX2 when compiled in and the CPU has it, else portable.
 * Same arguments and the same bits either way. */
static void fd_tile(int mr, int nr, int kc, const float *const *rp, int mode, ptrdiff_t off,
                    const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                    float beta, int tstore, const int *pl)
{
#if FD_X86
    if (fd_have_avx2_fma()) {
        fd_tile_avx2(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl);
        return;
    }
#endif
    fd_tile_c(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl);
}

/* up to 8 rows by up to 8 columns */
static void fd_tile8(int mr, int nr, int kc, const float *const *rp, int mode, ptrdiff_t off,
                     const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                     float beta)
{
#if FD_X86
    if (fd_have_avx2_fma()) {
        fd_tile8_avx2(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta);
        return;
    }
#endif
    fd_tile_c(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, 0, NULL);
}

static int fd_nonzero_rows(const float *const *rp, int n, int i, int w, int *pl)
{
#if FD_X86
    if (fd_have_avx2_fma())
        return fd_nonzero_rows_avx2(rp, n, i, w, pl);
#endif
    return fd_nonzero_rows_c(rp, n, i, w, pl);
}

static void fd_tiles_cols_narrow(int i0, int i1, int nr, int kc, const float *const *rp,
                                 const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                                 float alpha, float beta, int sparse)
{
#if FD_X86
    if (fd_have_avx2_fma()) {
        fd_cols_narrow_avx2(i0, i1, nr, kc, rp, B, ldb, C, ldc, alpha, beta, sparse);
        return;
    }
#endif
    fd_cols_narrow_c(i0, i1, nr, kc, rp, B, ldb, C, ldc, alpha, beta, sparse);
}

static void fd_sgemv_row(int k0, int k1, int m, float alpha, const float *a, const float *B,
                         ptrdiff_t ldb, float beta, float *c)
{
#if FD_X86
    if (fd_have_avx2_fma()) {
        fd_sgemv_row_avx2(k0, k1, m, alpha, a, B, ldb, beta, c);
        return;
    }
#endif
    fd_sgemv_row_c(k0, k1, m, alpha, a, B, ldb, beta, c);
}

/* float32 activations in place (softmax's exp into out): 8 lanes at a time on AVX2, one element
 * at a time here; the same bits either way (see fd_exp1). */
static void fd_sigmoid(float *z, ptrdiff_t size)
{
    ptrdiff_t i;
#if FD_X86
    if (fd_have_avx2_fma()) {
        fd_sigmoid_avx2(z, size);
        return;
    }
#endif
    for (i = 0; i < size; i++)
        z[i] = fd_sigmoid_v(z[i]);
}

static void fd_tanh(float *z, ptrdiff_t size)
{
    ptrdiff_t i;
#if FD_X86
    if (fd_have_avx2_fma()) {
        fd_tanh_avx2(z, size);
        return;
    }
#endif
    for (i = 0; i < size; i++)
        z[i] = fd_tanh_v(z[i]);
}

static void fd_exp_shifted(const float *x, float mx, float *out, int m)
{
    int j;
#if FD_X86
    if (fd_have_avx2_fma()) {
        fd_exp_shifted_avx2(x, mx, out, m);
        return;
    }
#endif
    for (j = 0; j < m; j++)
        out[j] = fd_exp_shifted1(x[j], mx);
}

static void fd_act_grad(int kind, const float *z, const float *dz, float *ds, ptrdiff_t size)
{
    ptrdiff_t i;
#if FD_X86
    if (fd_have_avx2_fma()) {
        fd_act_grad_avx2(kind, z, dz, ds, size);
        return;
    }
#endif
    for (i = 0; i < size; i++)
        ds[i] = fd_grad1(kind, z[i], dz[i]);
}

/* Rows of the next 6-row tile when `left` rows remain: 6, but a remainder of 1 or 2 rows ends as
 * 4 + 3 or 4 + 4 instead (a tile of 1 or 2 rows has too few independent FMA chains, 2 or 4, to
 * keep both FMA units busy). */
static inline int fd_rows6(int left)
{
    return (left < FD_MR) ? left : (left == 7 || left == 8) ? 4 : FD_MR;
}

/* Output rows i0..i1 of one column block (nr columns, depth kc starting at `off` in A's depth):
 * the 6x16 tile, or the 8x8 one when the block has 8 columns or fewer. A is read as in fd_tile:
 * FD_A_ROWS from rows[i] + off, FD_A_COLS from rows[off + p] + i. C points at the block's column. */
static void fd_tiles(int i0, int i1, int nr, int kc, const float *const *rows, int mode, int off,
                     const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                     float beta)
{
    const int step = (nr <= 8) ? FD_MR8 : FD_MR;
    int i;
    if (mode == FD_A_COLS && nr <= 8) {
        fd_tiles_cols_narrow(i0, i1, nr, kc, rows + off, B, ldb, C, ldc, alpha, beta, 0);
        return;
    }
    for (i = i0; i < i1; ) {
        const int mr = (step == FD_MR) ? fd_rows6(i1 - i) : ((i1 - i < step) ? i1 - i : step);
        const float *const *rp = (mode == FD_A_ROWS) ? rows + i : rows + off;
        const ptrdiff_t o = (mode == FD_A_ROWS) ? off : i;
        if (nr <= 8)
            fd_tile8(mr, nr, kc, rp, mode, o, B, ldb, C + i * ldc, ldc, alpha, beta);
        else
            fd_tile(mr, nr, kc, rp, mode, o, B, ldb, C + i * ldc, ldc, alpha, beta, 0, NULL);
        i += mr;
    }
}

/* C(n x m) := alpha * A[:, k0:k1] @ B[k0:k1, :] + beta * C, A(i, p) = rows[i][p]. */
static void fd_gemm_rows(int n, int k0, int k1, int m, float alpha, const float *const *rows,
                         const float *B, ptrdiff_t ldb, float beta, float *C, ptrdiff_t ldc)
{
    int ib, jc, pc;
    if (n == 1) {
        fd_sgemv_row(k0, k1, m, alpha, rows[0], B, ldb, beta, C);
        return;
    }
    /* Blocks of FD_MC rows, so that a block's inputs stay in L2 while every column panel of B
     * passes over them (a large batch would otherwise be re-read from memory once per panel). */
    for (ib = 0; ib < n; ib += FD_MC) {
        const int ie = (n - ib < FD_MC) ? n : ib + FD_MC;
        for (jc = 0; jc < m; jc += FD_NR) {
            const int nr = (m - jc < FD_NR) ? m - jc : FD_NR;
            for (pc = k0; pc < k1; pc += FD_KC) {
                const int kc = (k1 - pc < FD_KC) ? k1 - pc : FD_KC;
                const float b = (pc == k0) ? beta : 1.0f;
                fd_tiles(ib, ie, nr, kc, rows, FD_A_ROWS, pc, B + pc * ldb + jc, ldb, C + jc,
                         ldc, alpha, b);
            }
        }
    }
}

/* Rows r0..r1 of C(k x m) := alpha * A^T @ B + beta * C with A (n x k) given by its rows:
 * C(i, j) = alpha * sum_{p < n} rows[p][i] * B(p, j) + beta * C(i, j). The weight gradient. */
static void fd_gemm_cols(int r0, int r1, int n, int m, float alpha, const float *const *rows,
                         const float *B, ptrdiff_t ldb, float beta, float *C, ptrdiff_t ldc)
{
    int jc, pc;
    for (jc = 0; jc < m; jc += FD_NR) {
        const int nr = (m - jc < FD_NR) ? m - jc : FD_NR;
        for (pc = 0; pc < n; pc += FD_KC) {
            const int kc = (n - pc < FD_KC) ? n - pc : FD_KC;
            const float b = (pc == 0) ? beta : 1.0f;
            fd_tiles(r0, r1, nr, kc, rows, FD_A_COLS, pc, B + pc * ldb + jc, ldb, C + jc, ldc,
                     alpha, b);
        }
    }
}

/* Columns c0..c1 of C(n x k) := A(n x m) @ B(k x m)^T, A(i, p) = rows[i][p]. B's rows are packed
 * 16 at a time into a contiguous panel (the transposition a BLAS would do in its packing step). */
static void fd_gemm_nt(int n, int m, int c0, int c1, const float *const *rows, const float *B,
                       ptrdiff_t ldb, float *C, ptrdiff_t ldc)
{
    float panel[FD_KC * FD_NR];
    int jc, pc, ic, p, j;
    for (jc = c0; jc < c1; jc += FD_NR) {
        const int nr = (c1 - jc < FD_NR) ? c1 - jc : FD_NR;
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
                fd_tile(mr, nr, kc, rows + ic, FD_A_ROWS, pc, panel, FD_NR,
                        C + ic * ldc + jc, ldc, 1.0f, pc == 0 ? 0.0f : 1.0f, 0, NULL);
            }
        }
    }
}


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

/* The floating-point control modes (rounding, flush-to-zero, denormals-are-zero) of the calling
 * thread, to be given to the worker with each job: x86-64's MXCSR control bits (its low six bits
 * are sticky exception flags, left alone), aarch64's FPCR. Elsewhere nothing is copied (see
 * docs/design.md's platform table). */
#if defined(__GNUC__) && defined(__x86_64__)
#include <xmmintrin.h>
typedef unsigned fd_fpmode;
static inline fd_fpmode fd_fpmode_get(void) { return _mm_getcsr() & ~0x3Fu; }
static inline void fd_fpmode_set(fd_fpmode m)
{
    if ((_mm_getcsr() & ~0x3Fu) != m)
        _mm_setcsr((_mm_getcsr() & 0x3Fu) | m);
}
#elif defined(__GNUC__) && defined(__aarch64__)
typedef uint64_t fd_fpmode;
static inline fd_fpmode fd_fpmode_get(void)
{
    uint64_t v;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
    return v;
}
static inline void fd_fpmode_set(fd_fpmode m)
{
    if (fd_fpmode_get() != m)
        __asm__ __volatile__("msr fpcr, %0" : : "r"(m));
}
#else
typedef unsigned fd_fpmode;
static inline fd_fpmode fd_fpmode_get(void) { return 0; }
static inline void fd_fpmode_set(fd_fpmode m) { (void)m; }
#endif

typedef void (*fd_task_fn)(void *arg, int part);

/* ------------------------------------------------------------------------------------------------
 * The worker threads. A job is fn(arg, part) for part = 0 .. nparts-1: part 0 on the caller,
 * part p on worker p (started on first use, at most FD_MAX_THREADS - 1 of them). A part's work
 * never depends on which thread runs it (the jobs take units from shared counters, or fixed
 * blocks), so one thread running every part gives the same results. After a job a worker that
 * took part spins for up to FD_SPIN_SECONDS waiting for the next one (a training step issues a
 * job every few tens of microseconds, far less than a futex wake-up costs), then sleeps on a
 * condition variable; a worker left out of a job goes back to sleep at once, so an idle process,
 * or one running on fewer threads than it started, does not keep cores busy. One job at a time:
 * a caller that finds the pool busy (another Python thread training) runs every part itself.
 * After fork() the child starts new workers.
 * ------------------------------------------------------------------------------------------------ */
#define FD_MAX_THREADS 64

static pthread_mutex_t fd_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t fd_pool_sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fd_pool_wake = PTHREAD_COND_INITIALIZER;
/* The current job's ticket: (jobs posted so far) * 256 + its number of parts, in one atomic word,
 * so a worker never pairs one job's count with another's parts. fn, arg and the modes are written
 * before the ticket is published and stay until the job is done. */
static atomic_ullong fd_pool_ticket;
static atomic_int fd_pool_done;       /* parts of the current job finished by workers */
static atomic_int fd_pool_sleeping;   /* workers waiting on fd_pool_wake */
static fd_task_fn fd_pool_fn;
static void *fd_pool_arg;
static fd_fpmode fd_pool_fpmode;  /* the caller's control modes for the current job */
static int fd_pool_workers;       /* workers started */
/* The ticket when each worker was started (before the job it was started for is posted): its
 * first `seen`. A worker that read the ticket itself when it first ran could read the new job's
 * and wait for the next one forever. */
static unsigned long long fd_pool_born[FD_MAX_THREADS];
static int fd_pool_atfork_registered;

static inline void fd_cpu_relax(void)
{
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static double fd_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *fd_pool_worker(void *index)
{
    const int part = (int)(intptr_t)index;
    unsigned long long seen = fd_pool_born[part];
    int took_part = 0;
    for (;;) {
        double t0 = fd_now();
        int k = 0;
        while (took_part && atomic_load_explicit(&fd_pool_ticket, memory_order_acquire) == seen) {
            fd_cpu_relax();
            if (++k == 256) {
                k = 0;
                if (fd_now() - t0 > FD_SPIN_SECONDS)
                    break;
            }
        }
        if (atomic_load_explicit(&fd_pool_ticket, memory_order_acquire) == seen) {
            pthread_mutex_lock(&fd_pool_sleep_lock);
            atomic_fetch_add(&fd_pool_sleeping, 1);
            while (atomic_load(&fd_pool_ticket) == seen)
                pthread_cond_wait(&fd_pool_wake, &fd_pool_sleep_lock);
            atomic_fetch_sub(&fd_pool_sleeping, 1);
            pthread_mutex_unlock(&fd_pool_sleep_lock);
        }
        seen = atomic_load_explicit(&fd_pool_ticket, memory_order_acquire);
        took_part = part < (int)(seen & 255u);
        if (!took_part)
            continue;
        /* The caller's rounding and flush-to-zero modes: a thread inherits them only when it is
         * created, and a library loaded later (one built with -ffast-math, say) may have turned
         * flush-to-zero on in the caller since: every part of a job must round alike. */
        fd_fpmode_set(fd_pool_fpmode);
        fd_pool_fn(fd_pool_arg, part);
        atomic_fetch_add_explicit(&fd_pool_done, 1, memory_order_release);
    }
    return NULL;
}

static void fd_pool_after_fork_child(void)
{
    /* The workers did not survive the fork; the locks may have been held by another thread. */
    pthread_mutex_init(&fd_pool_lock, NULL);
    pthread_mutex_init(&fd_pool_sleep_lock, NULL);
    pthread_cond_init(&fd_pool_wake, NULL);
    atomic_store(&fd_pool_ticket, 0);
    atomic_store(&fd_pool_done, 0);
    atomic_store(&fd_pool_sleeping, 0);
    fd_pool_workers = 0;
}

/* Starts workers until there are n - 1 (fewer if the system refuses); returns how many parts
 * can run at once (workers + the caller). Called with fd_pool_lock held. */
static int fd_pool_grow(int n)
{
    if (!fd_pool_atfork_registered) {
        pthread_atfork(NULL, NULL, fd_pool_after_fork_child);
        fd_pool_atfork_registered = 1;
    }
    while (fd_pool_workers < n - 1) {
        pthread_t tid;
        pthread_attr_t attr;
        int ok;
        fd_pool_born[fd_pool_workers + 1] = atomic_load(&fd_pool_ticket);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        ok = pthread_create(&tid, &attr, fd_pool_worker,
                            (void *)(intptr_t)(fd_pool_workers + 1)) == 0;
        pthread_attr_destroy(&attr);
        if (!ok)
            break;
        fd_pool_workers++;
    }
    return fd_pool_workers + 1;
}

/* Runs fn(arg, p) for p = 0 .. nparts-1, part 0 on the calling thread and the others on the
 * workers; returns when all are done. Parts without a thread (the pool busy with another
 * caller's job, or workers that could not be started) run here, after part 0. */
static void fd_run(fd_task_fn fn, void *arg, int nparts)
{
    int p, running, spins = 0;
    if (nparts > FD_MAX_THREADS)
        nparts = FD_MAX_THREADS;
    if (nparts < 2 || pthread_mutex_trylock(&fd_pool_lock) != 0) {
        for (p = 0; p < nparts || p == 0; p++)
            fn(arg, p);
        return;
    }
    running = fd_pool_grow(nparts);
    if (running > nparts)
        running = nparts;
    fd_pool_fn = fn;
    fd_pool_arg = arg;
    fd_pool_fpmode = fd_fpmode_get();
    atomic_store_explicit(&fd_pool_done, 0, memory_order_relaxed);
    atomic_store_explicit(&fd_pool_ticket,
                          ((atomic_load(&fd_pool_ticket) >> 8) + 1) << 8 | (unsigned)running,
                          memory_order_release);
    /* Checked under the workers' sleep lock: a worker tests the ticket under the same lock before it
     * waits, so either it sees the new job or we see it asleep and wake it (no lost wake-up). */
    pthread_mutex_lock(&fd_pool_sleep_lock);
    if (atomic_load(&fd_pool_sleeping) > 0)
        pthread_cond_broadcast(&fd_pool_wake);
    pthread_mutex_unlock(&fd_pool_sleep_lock);
    fn(arg, 0);
    for (p = running; p < nparts; p++)
        fn(arg, p);
    while (atomic_load_explicit(&fd_pool_done, memory_order_acquire) != running - 1) {
        fd_cpu_relax();
        if (++spins == 4096) {  /* a worker lost its core: let it run */
            spins = 0;
            sched_yield();
        }
    }
    pthread_mutex_unlock(&fd_pool_lock);
}

/* A counter threads take work items from (whole inference batches: see _kernels.pyx). */
typedef struct { atomic_int v; } fd_counter;

static inline void fd_counter_set(fd_counter *c, int v) { atomic_store(&c->v, v); }

static inline int fd_counter_next(fd_counter *c)
{
    return atomic_fetch_add_explicit(&c->v, 1, memory_order_relaxed);
}

static int fd_split_point(int cols)
{
    const int blocks = (cols + FD_NR - 1) / FD_NR;
    return ((blocks + 1) / 2) * FD_NR;
}

/* ------------------------------------------------------------------------------------------------
 * The products of a dense layer, cut in two along its input features.
 *
 * A layer with k inputs is cut at s = fd_half(k): the forward product is computed as two partial
 * sums over the depth ranges [0, s) and [s, k), added at the end; the weight gradient and the
 * input gradient are cut at the same s (rows of W, columns of dX). With two threads each one owns
 * one half of the weights for the whole step: it reads only its half of the batch's columns and
 * writes only its rows of W, so neither the batch nor the weights move between cores; only the
 * small partial output and dS cross (n x m each). With one thread the same two halves are computed
 * one after the other: every result is bit-identical whatever the thread count.
 * ------------------------------------------------------------------------------------------------ */
#define FD_HALF_MIN 64   /* narrower inputs are not cut */

static int fd_half(int k)
{
    return k < FD_HALF_MIN ? k : fd_split_point(k);
}

enum { FD_OP_FWD, FD_OP_DW, FD_OP_DX, FD_OP_DXT };

/* A value of ldw meaning: W (k x m) is stored as 16-column panels, each k x 16 and contiguous,
 * element (p, j) at W[(j / 16) * k * 16 + p * 16 + j % 16]. train_steps trains the first layer's
 * weights in this layout (plain SGD): the tiles then read and update W one 64-byte line per row
 * of a panel, in address order, where row-major W has them 400+ bytes apart. The forward product
 * and the weight gradient take it; the input gradient does not (the first layer has none). */
#define FD_PANELS (-16)

/* The panel holding column c (a multiple of 16) of a k-row W stored as FD_PANELS. */
static inline float *fd_panel(const float *W, int k, int c)
{
    return (float *)W + (ptrdiff_t)(c / FD_NR) * k * FD_NR;
}

#define FD_DW_ROWS 48  /* rows of W per unit of a weight-gradient job (a multiple of FD_MR) */

/* A job is cut into units: blocks of 16 output columns of each half (FWD, DX; FD_MC rows for a
 * forward product of a larger batch) or blocks of FD_DW_ROWS rows of W (DW). Each unit's
 * arithmetic is fixed, so which thread runs it does not change any result. A thread first takes the units of its own half (its half of W stays in its
 * cache), then helps with the other half's: the two cores of a shared machine are seldom equally
 * fast (here one often runs 30% slower while its sibling serves another guest), and a fixed
 * 50/50 split would make the faster one wait. */
typedef struct {
    int op, n, k, m, s;
    float alpha, beta;
    const float *const *rows;  /* FWD, DW: the layer's input rows (n); DX: dS's rows (n) */
    const float *W;            /* FWD, DX: the weights (k x m, rows ldw apart) */
    ptrdiff_t ldw;             /* distance between rows of W (FWD, DX) or of dW (DW) */
    const float *dS;           /* DW: (n x m); DXT: dS^T, (m x n16), columns n.. zero */
    int n16;                   /* DXT: n rounded up to 16 */
    float *C, *C1;             /* FWD: partial sums of halves 0 and 1 (n x m); DW: dW (k x m);
                                  DX: dX (n x k) */
    int sparse;                /* DW: skip the zeros of A (see fd_dw_sparse) */
    int units[2];              /* units in each half */
    int width;                 /* FWD, DX: output columns per unit */
    struct { atomic_int next; char pad[60]; } half[2];  /* next unit to take, one line each */
} fd_job;

/* Columns c0..c0+nc of a forward partial product over the depth k0..k1, for n rows, into C
 * (row stride m): W row-major (rows ldw apart) or in panels (FD_PANELS), a panel at a time. */
static void fd_forward_cols(int n, int k0, int k1, int c0, int nc, const float *const *rows,
                            const fd_job *j, float *C)
{
    int c;
    if (j->ldw != FD_PANELS) {
        fd_gemm_rows(n, k0, k1, nc, 1.0f, rows, j->W + c0, j->ldw, 0.0f, C, j->m);
        return;
    }
    for (c = c0; c < c0 + nc; c += FD_NR)
        fd_gemm_rows(n, k0, k1, (c0 + nc - c < FD_NR) ? c0 + nc - c : FD_NR, 1.0f, rows,
                     fd_panel(j->W, j->k, c), FD_NR, 0.0f, C + (c - c0), j->m);
}

/* Rows r0..r1 of a weight gradient, dW = alpha * A^T @ dS + beta * dW, skipping the zeros of A:
 * each 6-row tile's chain of FMAs over the batch rows p runs only over the rows whose A(p, i..i+6)
 * are not all zero. A skipped term is fma(0, dS, c) = c + (+-0) = c, so the results are the dense
 * product's bits (dS finite, checked by the caller; only the sign of an exact zero sum can
 * differ). Inputs such as images are about half zeros, so a third of the weight gradient's FMAs
 * are skipped for a list of rows built per tile. */
static void fd_dw_sparse(const fd_job *j, int r0, int r1)
{
    const int panels = (j->ldw == FD_PANELS), narrow = j->m % FD_NR;
    int pl[FD_MAX_ROWS];
    int i, c;
    for (i = r0; i < r1; ) {
        const int mr = fd_rows6(r1 - i);
        const int np = fd_nonzero_rows(j->rows, j->n, i, mr, pl);
        /* a list that skips few rows costs more than it saves: the plain loop then */
        const int dense = np * 8 > j->n * 7;
        for (c = 0; c + FD_NR <= j->m || (c < j->m && narrow > 8); c += FD_NR) {
            const int nr = (j->m - c < FD_NR) ? j->m - c : FD_NR;
            float *C = panels ? fd_panel(j->C, j->k, c) + (ptrdiff_t)i * FD_NR
                              : j->C + (ptrdiff_t)i * j->ldw + c;
            fd_tile(mr, nr, dense ? j->n : np, j->rows, FD_A_COLS, i, j->dS + c, j->m, C,
                    panels ? FD_NR : j->ldw, j->alpha, j->beta, 0, dense ? NULL : pl);
        }
        i += mr;
    }
    if (narrow > 0 && narrow <= 8) {
        c = j->m - narrow;
        fd_tiles_cols_narrow(r0, r1, narrow, j->n, j->rows, j->dS + c, j->m,
                             panels ? fd_panel(j->C, j->k, c) : j->C + c,
                             panels ? FD_NR : j->ldw, j->alpha, j->beta, 1);
    }
}

static void fd_job_unit(const fd_job *j, int h, int u)
{
    const int lo = h ? j->s : 0, hi = h ? j->k : j->s;
    const int panels = (j->ldw == FD_PANELS);
    int c;
    switch (j->op) {
    case FD_OP_FWD:
        if (j->n > FD_MC) {
            /* a large batch: blocks of rows, each kept in L2 while all of W's panels pass */
            const int r0 = u * FD_MC, nr = (j->n - r0 < FD_MC) ? j->n - r0 : FD_MC;
            fd_forward_cols(nr, lo, hi, 0, j->m, j->rows + r0, j,
                            (h ? j->C1 : j->C) + (ptrdiff_t)r0 * j->m);
        } else {
            const int c0 = u * j->width, nc = (j->m - c0 < j->width) ? j->m - c0 : j->width;
            fd_forward_cols(j->n, lo, hi, c0, nc, j->rows, j, (h ? j->C1 : j->C) + c0);
        }
        break;
    case FD_OP_DW: {
        const int r0 = lo + u * FD_DW_ROWS, r1 = (hi - r0 < FD_DW_ROWS) ? hi : r0 + FD_DW_ROWS;
        if (j->sparse)
            fd_dw_sparse(j, r0, r1);
        else if (!panels)
            fd_gemm_cols(r0, r1, j->n, j->m, j->alpha, j->rows, j->dS, j->m, j->beta, j->C,
                         j->ldw);
        else
            for (c = 0; c < j->m; c += FD_NR)
                fd_gemm_cols(r0, r1, j->n, (j->m - c < FD_NR) ? j->m - c : FD_NR, j->alpha,
                             j->rows, j->dS + c, j->m, j->beta, fd_panel(j->C, j->k, c),
                             FD_NR);
        break;
    }
    case FD_OP_DXT: {
        /* dX^T rows r0..r1 (= rows of W) := W[r0:r1, :] @ dS^T, stored into dX transposed */
        const int r0 = lo + u * FD_DW_ROWS, r1 = (hi - r0 < FD_DW_ROWS) ? hi : r0 + FD_DW_ROWS;
        const float *wrows[FD_DW_ROWS];
        int r, ib, pc, i;
        for (r = r0; r < r1; r++)
            wrows[r - r0] = j->W + (ptrdiff_t)r * j->ldw;
        for (ib = 0; ib < j->n; ib += FD_NR) {
            const int nb = (j->n - ib < FD_NR) ? j->n - ib : FD_NR;
            for (pc = 0; pc < j->m; pc += FD_KC) {
                const int kc = (j->m - pc < FD_KC) ? j->m - pc : FD_KC;
                for (i = 0; i < r1 - r0; ) {
                    const int mr = fd_rows6(r1 - r0 - i);
                    fd_tile(mr, FD_NR, kc, wrows + i, FD_A_ROWS, pc,
                            j->dS + (ptrdiff_t)pc * j->n16 + ib, j->n16,
                            j->C + (ptrdiff_t)ib * j->k + r0 + i, j->k, 1.0f,
                            pc == 0 ? 0.0f : 1.0f, nb, NULL);
                    i += mr;
                }
            }
        }
        break;
    }
    default: {
        const int c0 = lo + u * j->width, c1 = (hi - c0 < j->width) ? hi : c0 + j->width;
        fd_gemm_nt(j->n, j->m, c0, c1, j->rows, j->W, j->ldw, j->C, j->k);
        break;
    }
    }
}

/* Runs the units of half h that no thread has taken yet; each one done adds 1 to *done when
 * done is given. */
static void fd_take_units(fd_job *j, int h, atomic_int *done)
{
    int u;
    while ((u = atomic_fetch_add_explicit(&j->half[h].next, 1, memory_order_relaxed))
           < j->units[h]) {
        fd_job_unit(j, h, u);
        if (done != NULL)
            atomic_fetch_add_explicit(done, 1, memory_order_release);
    }
}

/* Part p of a job: the units of half p % 2 first (with two threads each keeps its half of W in
 * its cache), then the other half's. */
static void fd_job_part(void *arg, int part)
{
    fd_job *j = (fd_job *)arg;
    fd_take_units(j, part & 1, NULL);
    fd_take_units(j, 1 - (part & 1), NULL);
}

static void fd_job_units(fd_job *j)
{
    int h;
    /* 16-column units; a few rows are not worth cutting that finely (the one-row kernel works
     * on 64 columns at a time) */
    j->width = (j->n >= 8) ? FD_NR : 1 << 30;
    for (h = 0; h < 2; h++) {
        const int lo = h ? j->s : 0, hi = h ? j->k : j->s;
        if (lo >= hi)
            j->units[h] = 0;
        else if (j->op == FD_OP_FWD && j->n > FD_MC)
            j->units[h] = (j->n + FD_MC - 1) / FD_MC;
        else if (j->op == FD_OP_FWD)
            j->units[h] = j->n >= 8 ? (j->m + FD_NR - 1) / FD_NR : 1;
        else if (j->op == FD_OP_DW || j->op == FD_OP_DXT)
            j->units[h] = (hi - lo + FD_DW_ROWS - 1) / FD_DW_ROWS;
        else
            j->units[h] = j->n >= 8 ? (hi - lo + FD_NR - 1) / FD_NR : 1;
        atomic_init(&j->half[h].next, 0);
    }
}

/* No more threads than units: a thread with nothing to take would only cost a hand-off. */
static int fd_threads_for(int threads, int units)
{
    return threads < units ? threads : units;
}

static void fd_run_job(fd_job *j, int threads)
{
    fd_job_units(j);
    fd_run(fd_job_part, j, fd_threads_for(threads, j->units[0] + j->units[1]));
}

/* Row pointers of a contiguous (n x ld) matrix, or `rows` itself when given. */
static const float *const *fd_row_ptrs(const float *const *rows, const float *A, ptrdiff_t ld,
                                       int n, const float **buf)
{
    int i;
    if (rows != NULL)
        return rows;
    for (i = 0; i < n; i++)
        buf[i] = A + i * ld;
    return buf;
}

/* Z(n x m) := A(n x k) @ W(k x m) + b, A given by `rows` or, when rows is NULL, contiguous at A;
 * W's rows are ldw floats apart; b may be NULL. part: scratch of n x m floats, used when k is
 * cut: then Z = (Z0 + Z1) + b. n <= FD_MAX_ROWS. */
/* Rows r0..r1 of the forward product's sum: Z = (Z0 + Z1) + b where the depth was cut (split),
 * Z = Z0 + b otherwise; b may be NULL. */
static void fd_combine_rows(float *Z, const float *part, const float *b, int r0, int r1, int m,
                            int split)
{
    int i, c;
    for (i = r0; i < r1; i++) {
        float *z = Z + (ptrdiff_t)i * m;
        const float *q = part + (ptrdiff_t)i * m;
        if (split && b != NULL)
            for (c = 0; c < m; c++)
                z[c] = (z[c] + q[c]) + b[c];
        else if (split)
            for (c = 0; c < m; c++)
                z[c] += q[c];
        else if (b != NULL)
            for (c = 0; c < m; c++)
                z[c] += b[c];
    }
}

/* The fields every job sets: op on a k-input, m-output layer's product over n rows, cut at
 * fd_half(k), writing C (rows ldw apart where the op says so); the rest cleared. */
static void fd_job_init(fd_job *j, int op, int n, int k, int m, const float *const *rows,
                        const float *W, ptrdiff_t ldw, float *C)
{
    j->op = op; j->n = n; j->k = k; j->m = m; j->s = fd_half(k); j->alpha = 1.0f;
    j->beta = 0.0f; j->rows = rows; j->W = W; j->ldw = ldw; j->dS = NULL; j->n16 = 0;
    j->C = C; j->C1 = NULL; j->sparse = 0;
}

static void fd_forward_job(fd_job *j, int n, int k, int m, const float *const *rows,
                           const float *W, ptrdiff_t ldw, float *Z, float *part)
{
    fd_job_init(j, FD_OP_FWD, n, k, m, rows, W, ldw, Z);
    j->C1 = part;
}

/* combine = 0 leaves the two partial sums in Z and part (the caller combines them with
 * fd_combine_rows, e.g. row block by row block on two threads). */
static void fd_forward(int n, int k, int m, const float *const *rows, const float *A,
                       const float *W, ptrdiff_t ldw, const float *b, float *Z, float *part,
                       int threads, int combine)
{
    const float *buf[FD_MAX_ROWS];
    fd_job j;
    fd_forward_job(&j, n, k, m, fd_row_ptrs(rows, A, k, n, buf), W, ldw, Z, part);
    fd_run_job(&j, threads);
    if (combine)
        fd_combine_rows(Z, part, b, 0, n, m, j.s < k);
}

static int fd_sparse_dw = 1;

/* 1 when none of x[0 .. n) is Inf or NaN. */
static int fd_finite32(const float *x, size_t n)
{
    const uint32_t *u = (const uint32_t *)x;
    uint32_t b = 0;
    size_t i;
    /* an all-ones exponent plus one exponent unit carries into the sign bit */
    for (i = 0; i < n; i++)
        b |= (u[i] & 0x7F800000u) + 0x00800000u;
    return (b & 0x80000000u) == 0;
}

/* dW(k x m) := alpha * A^T @ dS + beta * dW, A (n x k) given by rows or contiguous at A; dW's
 * rows are ldw floats apart. */
static void fd_weight_grad_job(fd_job *j, int n, int k, int m, float alpha, float beta,
                               const float *const *rows, const float *dS, float *dW,
                               ptrdiff_t ldw)
{
    fd_job_init(j, FD_OP_DW, n, k, m, rows, NULL, ldw, dW);
    j->alpha = alpha; j->beta = beta; j->dS = dS;
    j->sparse = fd_sparse_dw && fd_finite32(dS, (size_t)n * m);
}

static void fd_weight_grad(int n, int k, int m, float alpha, float beta,
                           const float *const *rows, const float *A, const float *dS, float *dW,
                           ptrdiff_t ldw, int threads)
{
    const float *buf[FD_MAX_ROWS];
    fd_job j;
    fd_weight_grad_job(&j, n, k, m, alpha, beta, fd_row_ptrs(rows, A, k, n, buf), dS, dW, ldw);
    fd_run_job(&j, threads);
}

/* A plain SGD step's weight gradient for one batch (W -= lr * A^T @ dS, lr = -alpha, in place)
 * and the next batch's forward partial sums through the updated W, as one job: the hand-off
 * between them is gone. Both products are cut along the inputs at the same point, so the rows
 * of W a half's forward units read are the rows that half's weight-gradient units write; a half's
 * forward units start once all its weight-gradient units are done (whoever ran them), so each
 * forward unit reads the updated weights and every result has the bits of the two jobs run one
 * after the other. */
typedef struct {
    fd_job dw, fwd;
    struct { atomic_int done; char pad[60]; } half[2];  /* weight-gradient units finished */
} fd_job2;

static void fd_job2_part(void *arg, int part)
{
    fd_job2 *jj = (fd_job2 *)arg;
    const int own = part & 1;
    int t, h;
    fd_take_units(&jj->dw, own, &jj->half[own].done);
    fd_take_units(&jj->dw, 1 - own, &jj->half[1 - own].done);
    for (t = 0; t < 2; t++) {
        h = t ? 1 - own : own;
        if (atomic_load_explicit(&jj->fwd.half[h].next, memory_order_relaxed) >= jj->fwd.units[h])
            continue;
        while (atomic_load_explicit(&jj->half[h].done, memory_order_acquire) < jj->dw.units[h])
            fd_cpu_relax();
        fd_take_units(&jj->fwd, h, NULL);
    }
}

static void fd_weight_grad_then_forward(int n, int k, int m, float alpha,
                                        const float *const *rows, const float *dS, float *W,
                                        ptrdiff_t ldw, int n1, const float *const *rows1,
                                        float *Z, float *part, int threads)
{
    fd_job2 jj;
    fd_weight_grad_job(&jj.dw, n, k, m, alpha, 1.0f, rows, dS, W, ldw);
    fd_forward_job(&jj.fwd, n1, k, m, rows1, W, ldw, Z, part);
    fd_job_units(&jj.dw);
    fd_job_units(&jj.fwd);
    atomic_init(&jj.half[0].done, 0);
    atomic_init(&jj.half[1].done, 0);
    fd_run(fd_job2_part, &jj,
           fd_threads_for(threads, jj.dw.units[0] + jj.dw.units[1] + jj.fwd.units[0]
                                   + jj.fwd.units[1]));
}

/* dX(n x k) := dS(n x m) @ W(k x m)^T, W's rows ldw floats apart. With `scratch` (at least
 * m x round_up(n, 16) floats) it is computed transposed, dX^T = W @ dS^T: the tiles read W's rows
 * in place and only the small dS is transposed, where the plain form packs all of W^T (a 512 x 512
 * layer's megabyte) on every call; each element gets the same chain of FMAs either way, so the
 * same bits. */
static void fd_input_grad(int n, int m, int k, const float *dS, const float *W, ptrdiff_t ldw,
                          float *dX, int threads, float *scratch)
{
    const float *buf[FD_MAX_ROWS];
    fd_job j;
    if (scratch != NULL) {
        const int n16 = (n + FD_NR - 1) / FD_NR * FD_NR;
        int i, p;
        for (p = 0; p < m; p++) {
            float *row = scratch + (ptrdiff_t)p * n16;
            for (i = 0; i < n; i++)
                row[i] = dS[(ptrdiff_t)i * m + p];
            for (; i < n16; i++)
                row[i] = 0.0f;
        }
        fd_job_init(&j, FD_OP_DXT, n, k, m, NULL, W, ldw, dX);
        j.dS = scratch; j.n16 = n16;
        fd_run_job(&j, threads);
        return;
    }
    fd_job_init(&j, FD_OP_DX, n, k, m, fd_row_ptrs(NULL, dS, m, n, buf), W, ldw, dX);
    fd_run_job(&j, threads);
}

/* ------------------------------------------------------------------------------------------------
 * Finiteness of an input array, one pass over the bits, split over the threads when large: the
 * check reads every byte of x once per fit() call and is bound by memory bandwidth, which several
 * cores share better than one uses.
 * ------------------------------------------------------------------------------------------------ */

typedef struct {
    const void *p;
    size_t n;
    int wide;            /* 1: float64, 0: float32 */
    int parts;
    uint64_t bad[FD_MAX_THREADS];
} fd_finite_job;

static void fd_finite_part(void *arg, int part)
{
    fd_finite_job *j = (fd_finite_job *)arg;
    const size_t lo = j->n / j->parts * part;
    const size_t hi = (part == j->parts - 1) ? j->n : lo + j->n / j->parts;
    size_t i;
    /* An all-ones exponent (Inf or NaN) plus one exponent unit carries into the sign bit. */
    if (j->wide) {
        const uint64_t *u = (const uint64_t *)j->p;
        uint64_t b = 0;
        for (i = lo; i < hi; i++)
            b |= (u[i] & 0x7FF0000000000000ull) + 0x0010000000000000ull;
        j->bad[part] = b & 0x8000000000000000ull;
    } else
        j->bad[part] = !fd_finite32((const float *)j->p + lo, hi - lo);
}

static int fd_all_finite(const void *p, size_t n, int wide, int threads)
{
    fd_finite_job j;
    int part;
    j.p = p; j.n = n; j.wide = wide;
    /* a part of at least 2^19 elements: smaller ones cost more in hand-offs than they save */
    j.parts = (int)(n >> 19) < threads ? (int)(n >> 19) : threads;
    if (j.parts < 1)
        j.parts = 1;
    if (j.parts > FD_MAX_THREADS)
        j.parts = FD_MAX_THREADS;
    fd_run(fd_finite_part, &j, j.parts);
    for (part = 0; part < j.parts; part++)
        if (j.bad[part])
            return 0;
    return 1;
}

#endif /* FASTDENSE_SIMD_H */
