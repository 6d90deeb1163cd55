/* The AVX-512 tiles. Same contract as the AVX2 and portable tiles (fd_gemm.h): every element of
 * C is one chain of FMAs over the depth from zero, then alpha * acc and fma(beta, C, .), so they
 * give those tiles' bits; only more of it runs per instruction.
 *
 * Two widths from one body: up to 12 rows by 16 columns (one vector per row; twelve accumulators
 * and one load of B per step, where six rows would leave FMA latency exposed), and the wide tile,
 * up to 8 rows (FD_A_ROWS) or 12 (FD_A_COLS) by 17 to 32 columns (two vectors per row, B's and
 * C's 32 columns contiguous), whose two loads of B feed 16 or 24 FMAs a step. Measured on a
 * 2-core Emerald Rapids KVM guest, one thread, data in L2 (CPU time): 117-119 GFLOP/s for the
 * 16-column tile, 184-186 GFLOP/s for the wide one, against 110 for the AVX2 6x16 tile and a
 * measured AVX-512 FMA peak of 246 per core. Compiled only for x86-64 GCC/Clang/MSVC and called
 * only after the CPU check. */
#include "fd_gemm.h"

#if FD_X86

/* wide: 0 (one vector a row, nr <= 16) or 1 (two, 17 <= nr <= 32), a constant in each instance;
 * full: every column (no mask). */
static FD_AVX512_INLINE void fd_tile512_body(int mr, int nr, int kc, const float *const *rp,
                                             int mode, ptrdiff_t off, const float *B,
                                             ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                                             float beta, int tstore, const int *pl,
                                             const int wide, const int full)
{
    __m512 c[2 * FD_MR512];
    /* the mask of the last vector of a row */
    const int last = wide ? nr - FD_NR : nr;
    const __mmask16 mk = (__mmask16)((last >= 16) ? 0xFFFFu : ((1u << last) - 1u));
    const float *a[FD_MR512];
    int p, t, r;
    for (r = 0; r < 2 * FD_MR512; r++)
        c[r] = _mm512_setzero_ps();
    if (mode == FD_A_ROWS)
        for (r = 0; r < FD_MR512; r++)
            a[r] = (r < mr ? rp[r] : rp[0]) + off;

/* one step of the depth: B's row p (one or two vectors), then each row's broadcast FMAs */
#define FD_B const float *bp = B + p * ldb;                                              \
            const __m512 b0 = (wide || full) ? _mm512_loadu_ps(bp)                       \
                                             : _mm512_maskz_loadu_ps(mk, bp);            \
            const __m512 b1 = !wide ? b0 : full ? _mm512_loadu_ps(bp + FD_NR)            \
                                                : _mm512_maskz_loadu_ps(mk, bp + FD_NR);
#define FD_FMA(src, i) { const __m512 av = _mm512_set1_ps(*(src));                        \
                         c[2 * (i)] = _mm512_fmadd_ps(av, b0, c[2 * (i)]);               \
                         if (wide) c[2 * (i) + 1] = _mm512_fmadd_ps(av, b1, c[2 * (i) + 1]); }
#define FD_ROWS12(S) S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7) S(8) S(9) S(10) S(11)
#define FD_SR(i) if (i < MR) FD_FMA(a[i] + p, i)
#define FD_SC(i) if (i < MR) FD_FMA(q + i, i)
#define FD_CASE_R(MRV) case MRV: { enum { MR = MRV };                                  \
        for (p = 0; p < kc; p++) { FD_B FD_ROWS12(FD_SR) } } break;
#define FD_CASE_C(MRV) case MRV: { enum { MR = MRV };                                  \
        if (pl != NULL) {                                                               \
            for (t = 0; t < kc; t++) { const float *q; p = pl[t]; q = rp[p] + off;      \
                                       { FD_B FD_ROWS12(FD_SC) } } }                    \
        else { for (p = 0; p < kc; p++) { const float *q = rp[p] + off;                 \
                                          FD_B FD_ROWS12(FD_SC) } } } break;
    if (mode == FD_A_ROWS) {
        switch (mr) {  /* (the wide tile takes at most FD_MR512W rows here) */
        FD_CASE_R(12) FD_CASE_R(11) FD_CASE_R(10) FD_CASE_R(9) FD_CASE_R(8) FD_CASE_R(7)
        FD_CASE_R(6) FD_CASE_R(5) FD_CASE_R(4) FD_CASE_R(3) FD_CASE_R(2)
        default: FD_CASE_R(1)
        }
    } else {
        switch (mr) {
        FD_CASE_C(12) FD_CASE_C(11) FD_CASE_C(10) FD_CASE_C(9) FD_CASE_C(8) FD_CASE_C(7)
        FD_CASE_C(6) FD_CASE_C(5) FD_CASE_C(4) FD_CASE_C(3) FD_CASE_C(2)
        default: FD_CASE_C(1)
        }
    }
#undef FD_CASE_C
#undef FD_CASE_R
#undef FD_SC
#undef FD_SR
#undef FD_ROWS12
#undef FD_FMA
#undef FD_B

    {
        const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
        if (tstore > 0) {
            float tmp[FD_MR512][2 * FD_NR];
            for (r = 0; r < mr; r++) {
                _mm512_storeu_ps(tmp[r], c[2 * r]);
                _mm512_storeu_ps(tmp[r] + FD_NR, c[2 * r + 1]);
            }
            fd_store_transposed(&tmp[0][0], 2 * FD_NR, mr, tstore, C, ldc, alpha, beta);
            return;
        }
        for (r = 0; r < mr; r++) {
            float *cr = C + r * ldc;
            __m512 v0 = _mm512_mul_ps(va, c[2 * r]), v1 = _mm512_mul_ps(va, c[2 * r + 1]);
            if (beta != 0.0f) {
                v0 = _mm512_fmadd_ps(vb, (wide || full) ? _mm512_loadu_ps(cr)
                                                        : _mm512_maskz_loadu_ps(mk, cr), v0);
                if (wide)
                    v1 = _mm512_fmadd_ps(vb, full ? _mm512_loadu_ps(cr + FD_NR)
                                                  : _mm512_maskz_loadu_ps(mk, cr + FD_NR), v1);
            }
            if (wide || full)
                _mm512_storeu_ps(cr, v0);
            else
                _mm512_mask_storeu_ps(cr, mk, v0);
            if (wide && full)
                _mm512_storeu_ps(cr + FD_NR, v1);
            else if (wide)
                _mm512_mask_storeu_ps(cr + FD_NR, mk, v1);
        }
    }
}

/* the four instances: 16 columns or fewer (masked), 32 or 17-31 (masked) */
FD_AVX512_NOINLINE void fd_tile512_full(int mr, int kc, const float *const *rp, int mode,
                                        ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C,
                                        ptrdiff_t ldc, float alpha, float beta, int tstore,
                                        const int *pl)
{
    fd_tile512_body(mr, FD_NR, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl, 0,
                    1);
}

FD_AVX512_NOINLINE void fd_tile512_masked(int mr, int nr, int kc, const float *const *rp,
                                          int mode, ptrdiff_t off, const float *B, ptrdiff_t ldb,
                                          float *C, ptrdiff_t ldc, float alpha, float beta,
                                          int tstore, const int *pl)
{
    fd_tile512_body(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl, 0, 0);
}

FD_AVX512_NOINLINE void fd_tile512w_full(int mr, int kc, const float *const *rp, int mode,
                                         ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C,
                                         ptrdiff_t ldc, float alpha, float beta, int tstore,
                                         const int *pl)
{
    fd_tile512_body(mr, 2 * FD_NR, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl,
                    1, 1);
}

FD_AVX512_NOINLINE void fd_tile512w_masked(int mr, int nr, int kc, const float *const *rp,
                                           int mode, ptrdiff_t off, const float *B,
                                           ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                                           float beta, int tstore, const int *pl)
{
    fd_tile512_body(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl, 1, 0);
}

#endif /* FD_X86 */
