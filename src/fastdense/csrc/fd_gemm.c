/* Small-matrix float32 GEMM: the AVX2/FMA micro-kernels, the portable C kernels with the same
 * arithmetic, the dispatch between them, and the products built on them (see fd_gemm.h). */
#include "fd_gemm.h"

#if defined(__GNUC__)
#define FD_UNROLL13 _Pragma("GCC unroll 13")
#else
#define FD_UNROLL13
#endif

#if FD_X86

/* One MR x NR tile (MR <= 6, NR <= 16) over a depth of kc:
 *   C(r, j) := alpha * sum_{p < kc} A(r, p) * B(p, j) + beta * C(r, j)
 * with A(r, p) = rp[r][off + p] (FD_A_ROWS) or rp[p][off + r] (FD_A_COLS). Every element is one
 * chain of FMAs over p from zero, then alpha and beta: the same arithmetic whatever the tile's
 * shape or position, which is what keeps results independent of batch size and thread count. */
static FD_AVX2_INLINE void fd_tile_body(int mr, int nr, int kc, const float *const *rp, int mode,
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
            for (r = 0; r < mr; r++) {
                _mm256_storeu_ps(tmp[r], acc[r][0]);
                _mm256_storeu_ps(tmp[r] + 8, acc[r][1]);
            }
            fd_store_transposed(&tmp[0][0], FD_NR, mr, tstore, C, ldc, alpha, beta);
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
FD_AVX2_NOINLINE void fd_tile_full(int mr, int kc, const float *const *rp, int mode,
                                   ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C,
                                   ptrdiff_t ldc, float alpha, float beta, int tstore,
                                   const int *pl)
{
    fd_tile_body(mr, FD_NR, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl, 1);
}

FD_AVX2_NOINLINE void fd_tile_masked(int mr, int nr, int kc, const float *const *rp, int mode,
                                     ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C,
                                     ptrdiff_t ldc, float alpha, float beta, int tstore,
                                     const int *pl)
{
    fd_tile_body(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl, 0);
}

/* The narrow tile for a last column block of at most 8 columns (m = 100 leaves 4): up to 8 rows
 * by one 8-float vector, so the masked lanes waste half as much as in the 16-wide tile. Same
 * per-element arithmetic as fd_tile. */
static FD_AVX2 void fd_tile8_avx2(int mr, int nr, int kc, const float *const *rp, int mode,
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
FD_AVX2 int fd_nonzero_rows_avx2(const float *const *rp, int n, int i, int w, int *pl)
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
static FD_AVX2 void fd_cols_narrow_avx2(int i0, int i1, int nr, int kc, const float *const *rp,
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
static FD_AVX2 void fd_sgemv_row_avx2(int k0, int k1, int m, float alpha, const float *a,
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
FD_UNROLL13
            for (v = 0; v < FD_RV; v++)
                acc[v] = _mm256_setzero_ps();
/* NV whole vectors, then (TAIL, a constant) the overlapping one */
#define FD_ROWPASS(NV, TAIL)                                                               \
            for (p = pc; p < pc + kc; p++) {                                               \
                const __m256 x = _mm256_broadcast_ss(a + p);                               \
                const float *bp = B + p * ldb + jc;                                        \
                FD_UNROLL13                                                                \
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
FD_UNROLL13
            for (v = 0; v < FD_RV; v++)
                if (v == nfull)
                    rt = acc[v];
            rt = _mm256_mul_ps(va, rt);
            if (tail && b != 0.0f)
                rt = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + jc + to), rt);
FD_UNROLL13
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

/* One tile: mr <= 8 rows by nr <= 16 columns, A read as in fd_tile (pl: FD_A_COLS only, the
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

void fd_tile_c(int mr, int nr, int kc, const float *const *rp, int mode, ptrdiff_t off,
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
int fd_nonzero_rows_c(const float *const *rp, int n, int i, int w, int *pl)
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

/* The dispatch of the kernels the products below call (fd_tile and fd_nonzero_rows: fd_gemm.h):
 * AVX2 when compiled in and the CPU has it, else portable; same arguments, same bits.
 * fd_tile8: up to 8 rows by up to 8 columns. */
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

void fd_tiles_cols_narrow(int i0, int i1, int nr, int kc, const float *const *rp,
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

/* Output rows i0..i1 of one column block (nr columns, depth kc starting at `off` in A's depth):
 * the 12x16 (AVX-512) or 6x16 tile, or the 8x8 one when the block has 8 columns or fewer. A is read as in fd_tile:
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
        const int mr = (step == FD_MR) ? fd_tile_rows(i1 - i) : ((i1 - i < step) ? i1 - i : step);
        const float *const *rp = (mode == FD_A_ROWS) ? rows + i : rows + off;
        const ptrdiff_t o = (mode == FD_A_ROWS) ? off : i;
        if (nr <= 8)
            fd_tile8(mr, nr, kc, rp, mode, o, B, ldb, C + i * ldc, ldc, alpha, beta);
        else
            fd_tile(mr, nr, kc, rp, mode, o, B, ldb, C + i * ldc, ldc, alpha, beta, 0, NULL);
        i += mr;
    }
}

/* As fd_tiles, for a block of up to 32 columns (fd_block_cols): the wide AVX-512 tile for more
 * than 16, else fd_tiles. */
static void fd_tiles_block(int i0, int i1, int nr, int kc, const float *const *rows, int mode,
                           int off, const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                           float alpha, float beta)
{
    int i;
    if (nr <= FD_NR) {
        fd_tiles(i0, i1, nr, kc, rows, mode, off, B, ldb, C, ldc, alpha, beta);
        return;
    }
    for (i = i0; i < i1; ) {
        const int mr = fd_wide_rows(i1 - i, mode);
        fd_tile_wide(mr, nr, kc, (mode == FD_A_ROWS) ? rows + i : rows + off, mode,
                     (mode == FD_A_ROWS) ? off : i, B, ldb, C + i * ldc, ldc, alpha, beta, 0,
                     NULL);
        i += mr;
    }
}

/* C(n x m) := alpha * A[:, k0:k1] @ B[k0:k1, :] + beta * C, A(i, p) = rows[i][p]. */
void fd_gemm_rows(int n, int k0, int k1, int m, float alpha, const float *const *rows,
                  const float *B, ptrdiff_t ldb, float beta, float *C, ptrdiff_t ldc)
{
    const int wc = fd_block_cols();
    int ib, jc, pc;
    if (n == 1) {
        fd_sgemv_row(k0, k1, m, alpha, rows[0], B, ldb, beta, C);
        return;
    }
    /* Blocks of FD_MC rows, so that a block's inputs stay in L2 while every column panel of B
     * passes over them (a large batch would otherwise be re-read from memory once per panel). */
    for (ib = 0; ib < n; ib += FD_MC) {
        const int ie = (n - ib < FD_MC) ? n : ib + FD_MC;
        for (jc = 0; jc < m; jc += wc) {
            const int nr = (m - jc < wc) ? m - jc : wc;
            for (pc = k0; pc < k1; pc += FD_KC) {
                const int kc = (k1 - pc < FD_KC) ? k1 - pc : FD_KC;
                const float b = (pc == k0) ? beta : 1.0f;
                fd_tiles_block(ib, ie, nr, kc, rows, FD_A_ROWS, pc, B + pc * ldb + jc, ldb,
                               C + jc, ldc, alpha, b);
            }
        }
    }
}

/* Rows r0..r1 of C(k x m) := alpha * A^T @ B + beta * C with A (n x k) given by its rows:
 * C(i, j) = alpha * sum_{p < n} rows[p][i] * B(p, j) + beta * C(i, j). The weight gradient. */
void fd_gemm_cols(int r0, int r1, int n, int m, float alpha, const float *const *rows,
                  const float *B, ptrdiff_t ldb, float beta, float *C, ptrdiff_t ldc)
{
    const int wc = fd_block_cols();
    int jc, pc;
    for (jc = 0; jc < m; jc += wc) {
        const int nr = (m - jc < wc) ? m - jc : wc;
        for (pc = 0; pc < n; pc += FD_KC) {
            const int kc = (n - pc < FD_KC) ? n - pc : FD_KC;
            const float b = (pc == 0) ? beta : 1.0f;
            fd_tiles_block(r0, r1, nr, kc, rows, FD_A_COLS, pc, B + pc * ldb + jc, ldb, C + jc,
                           ldc, alpha, b);
        }
    }
}

/* Columns c0..c1 of C(n x k) := A(n x m) @ B(k x m)^T, A(i, p) = rows[i][p]. B's rows are packed
 * 16 at a time into a contiguous panel (the transposition a BLAS would do in its packing step). */
void fd_gemm_nt(int n, int m, int c0, int c1, const float *const *rows, const float *B,
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
            for (ic = 0; ic < n; ) {
                const int mr = fd_tile_rows(n - ic);
                fd_tile(mr, nr, kc, rows + ic, FD_A_ROWS, pc, panel, FD_NR,
                        C + ic * ldc + jc, ldc, 1.0f, pc == 0 ? 0.0f : 1.0f, 0, NULL);
                ic += mr;
            }
        }
    }
}
