/* The AVX-512 tile: up to 12 rows by 16 columns, one 16-float vector per row.
 *
 * Same contract as the AVX2 and portable tiles (fd_gemm.h): every element of C is one chain of
 * FMAs over the depth from zero, then alpha * acc and fma(beta, C, .), so it gives their bits;
 * only more of it runs per instruction. Twelve accumulators and one load of B per step keep both
 * FMA units busy (six rows would leave FMA latency exposed: 6 chains for 2 units of 4 cycles).
 * Measured on a 2-core Sapphire Rapids KVM guest, one thread, data in L2 (CPU time): the forward
 * product's tile 110 -> 144 GFLOP/s, the weight gradient's 80 -> 114 GFLOP/s against the AVX2
 * tile. Compiled only for x86-64 GCC/Clang/MSVC and called only after the CPU check. */
#include "fd_gemm.h"

#if FD_X86

static FD_AVX512_INLINE void fd_tile512_body(int mr, int nr, int kc, const float *const *rp,
                                             int mode, ptrdiff_t off, const float *B,
                                             ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                                             float beta, int tstore, const int *pl,
                                             const int full)
{
    __m512 c[FD_MR512];
    const __mmask16 mk = (__mmask16)((nr >= 16) ? 0xFFFFu : ((1u << nr) - 1u));
    const float *a[FD_MR512];
    int p, t, r;
    for (r = 0; r < FD_MR512; r++)
        c[r] = _mm512_setzero_ps();
    if (mode == FD_A_ROWS)
        for (r = 0; r < FD_MR512; r++)
            a[r] = (r < mr ? rp[r] : rp[0]) + off;

/* one step of the depth for the tile's MR rows: B's row p, then each row's broadcast FMA */
#define FD_B512 const __m512 b = full ? _mm512_loadu_ps(B + p * ldb) \
                                      : _mm512_maskz_loadu_ps(mk, B + p * ldb);
#define FD_FMA512(src, acc) acc = _mm512_fmadd_ps(_mm512_set1_ps(*(src)), b, acc);
#define FD_ROWS12(S) S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7) S(8) S(9) S(10) S(11)
#define FD_SR(i) if (i < MR) FD_FMA512(a[i] + p, c[i])
#define FD_SC(i) if (i < MR) FD_FMA512(q + i, c[i])
#define FD_CASE_R(MRV) case MRV: { enum { MR = MRV };                                  \
        for (p = 0; p < kc; p++) { FD_B512 FD_ROWS12(FD_SR) } } break;
#define FD_CASE_C(MRV) case MRV: { enum { MR = MRV };                                  \
        if (pl != NULL) {                                                               \
            for (t = 0; t < kc; t++) { const float *q; p = pl[t]; q = rp[p] + off;      \
                                       { FD_B512 FD_ROWS12(FD_SC) } } }                 \
        else { for (p = 0; p < kc; p++) { const float *q = rp[p] + off;                 \
                                          FD_B512 FD_ROWS12(FD_SC) } } } break;
    if (mode == FD_A_ROWS) {
        switch (mr) {
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
#undef FD_FMA512
#undef FD_B512

    {
        const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
        if (tstore > 0) {
            /* C stored transposed, its first tstore columns (see fd_input_grad); rounded as
             * below: alpha * acc, then fma(beta, C, .) */
            float tmp[FD_MR512][FD_NR];
            int jj;
            for (r = 0; r < mr; r++)
                _mm512_storeu_ps(tmp[r], c[r]);
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
            __m512 v = _mm512_mul_ps(va, c[r]);
            if (beta != 0.0f)
                v = _mm512_fmadd_ps(vb, full ? _mm512_loadu_ps(cr)
                                             : _mm512_maskz_loadu_ps(mk, cr), v);
            if (full)
                _mm512_storeu_ps(cr, v);
            else
                _mm512_mask_storeu_ps(cr, mk, v);
        }
    }
}

/* all 16 columns, and fewer under a mask: two instances, as for the AVX2 tile */
FD_AVX512_NOINLINE void fd_tile512_full(int mr, int kc, const float *const *rp, int mode,
                                        ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C,
                                        ptrdiff_t ldc, float alpha, float beta, int tstore,
                                        const int *pl)
{
    fd_tile512_body(mr, FD_NR, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl, 1);
}

FD_AVX512_NOINLINE void fd_tile512_masked(int mr, int nr, int kc, const float *const *rp,
                                          int mode, ptrdiff_t off, const float *B, ptrdiff_t ldb,
                                          float *C, ptrdiff_t ldc, float alpha, float beta,
                                          int tstore, const int *pl)
{
    fd_tile512_body(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl, 0);
}

#endif /* FD_X86 */

#if FD_X86

/* The wide AVX-512 tile: up to 8 rows (FD_A_ROWS) or 12 rows (FD_A_COLS) by 17 to 32 columns,
 * two 16-float vectors per row. B's and C's 32 columns are contiguous (row-major, not panels).
 * Two loads of B feed 16 or 24 FMAs a step, where the 16-column tile's one load fed 12: measured
 * as above, 117 -> 184 GFLOP/s (8 x 32, rows) and 119 -> 186 GFLOP/s (12 x 32, columns) against
 * the 12 x 16 tile, ~75% of this core's measured AVX-512 FMA peak (246 GFLOP/s). Same contract,
 * same bits. */
static FD_AVX512_INLINE void fd_tile512w_body(int mr, int nr, int kc, const float *const *rp,
                                              int mode, ptrdiff_t off, const float *B,
                                              ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                                              float alpha, float beta, int tstore,
                                              const int *pl, const int full)
{
    __m512 c[2 * FD_MR512];
    const __mmask16 mk = (__mmask16)((nr >= 32) ? 0xFFFFu : ((1u << (nr - 16)) - 1u));
    const float *a[FD_MR512W];
    int p, t, r;
    for (r = 0; r < 2 * FD_MR512; r++)
        c[r] = _mm512_setzero_ps();
    if (mode == FD_A_ROWS)
        for (r = 0; r < FD_MR512W; r++)
            a[r] = (r < mr ? rp[r] : rp[0]) + off;

#define FD_B2 const float *bp = B + p * ldb;                                              \
              const __m512 b0 = _mm512_loadu_ps(bp);                                     \
              const __m512 b1 = full ? _mm512_loadu_ps(bp + 16)                          \
                                     : _mm512_maskz_loadu_ps(mk, bp + 16);
#define FD_FMA2(src, i) { const __m512 av = _mm512_set1_ps(*(src));                       \
                          c[2 * (i)] = _mm512_fmadd_ps(av, b0, c[2 * (i)]);              \
                          c[2 * (i) + 1] = _mm512_fmadd_ps(av, b1, c[2 * (i) + 1]); }
#define FD_ROWS8(S) S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7)
#define FD_ROWS12(S) FD_ROWS8(S) S(8) S(9) S(10) S(11)
#define FD_SR(i) if (i < MR) FD_FMA2(a[i] + p, i)
#define FD_SC(i) if (i < MR) FD_FMA2(q + i, i)
#define FD_CASE_R(MRV) case MRV: { enum { MR = MRV };                                  \
        for (p = 0; p < kc; p++) { FD_B2 FD_ROWS8(FD_SR) } } break;
#define FD_CASE_C(MRV) case MRV: { enum { MR = MRV };                                  \
        if (pl != NULL) {                                                               \
            for (t = 0; t < kc; t++) { const float *q; p = pl[t]; q = rp[p] + off;      \
                                       { FD_B2 FD_ROWS12(FD_SC) } } }                   \
        else { for (p = 0; p < kc; p++) { const float *q = rp[p] + off;                 \
                                          FD_B2 FD_ROWS12(FD_SC) } } } break;
    if (mode == FD_A_ROWS) {
        switch (mr) {
        FD_CASE_R(8) FD_CASE_R(7) FD_CASE_R(6) FD_CASE_R(5) FD_CASE_R(4) FD_CASE_R(3)
        FD_CASE_R(2)
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
#undef FD_ROWS8
#undef FD_FMA2
#undef FD_B2

    {
        const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
        if (tstore > 0) {
            /* C stored transposed, its first tstore columns; rounded as below */
            float tmp[FD_MR512][2 * FD_NR];
            int jj;
            for (r = 0; r < mr; r++) {
                _mm512_storeu_ps(tmp[r], c[2 * r]);
                _mm512_storeu_ps(tmp[r] + FD_NR, c[2 * r + 1]);
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
            __m512 v0 = _mm512_mul_ps(va, c[2 * r]), v1 = _mm512_mul_ps(va, c[2 * r + 1]);
            if (beta != 0.0f) {
                v0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr), v0);
                v1 = _mm512_fmadd_ps(vb, full ? _mm512_loadu_ps(cr + FD_NR)
                                              : _mm512_maskz_loadu_ps(mk, cr + FD_NR), v1);
            }
            _mm512_storeu_ps(cr, v0);
            if (full)
                _mm512_storeu_ps(cr + FD_NR, v1);
            else
                _mm512_mask_storeu_ps(cr + FD_NR, mk, v1);
        }
    }
}

FD_AVX512_NOINLINE void fd_tile512w_full(int mr, int kc, const float *const *rp, int mode,
                                         ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C,
                                         ptrdiff_t ldc, float alpha, float beta, int tstore,
                                         const int *pl)
{
    fd_tile512w_body(mr, 2 * FD_NR, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl,
                     1);
}

FD_AVX512_NOINLINE void fd_tile512w_masked(int mr, int nr, int kc, const float *const *rp,
                                           int mode, ptrdiff_t off, const float *B,
                                           ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                                           float beta, int tstore, const int *pl)
{
    fd_tile512w_body(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl, 0);
}

#endif /* FD_X86 */
