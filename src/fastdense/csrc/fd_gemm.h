/* Small-matrix float32 GEMM (defined in fd_gemm.c): the tile constants, the products a dense
 * layer's jobs call (fd_layer.c), and the per-tile kernels with their dispatch inline here, so a
 * job's loop over tiles calls the micro-kernel itself, as when everything was one unit. */
#ifndef FASTDENSE_FD_GEMM_H
#define FASTDENSE_FD_GEMM_H

#include "fd_cpu.h"

#define FD_MR 6    /* rows of a register tile */
#define FD_NR 16   /* columns of a register tile: two 8-float vectors */
#define FD_KC 256  /* depth of a B panel kept in L1: 256 x 16 floats = 16 KiB */
#define FD_MC 66   /* rows of A kept in L2 while the panels of B pass (a multiple of FD_MR) */
#define FD_MR8 8   /* rows of the narrow tile (a last block of at most 8 columns) */
#define FD_MR512 12  /* rows of the AVX-512 tile (one 16-float vector per row) */
#define FD_MR512W 8  /* rows (FD_A_ROWS; FD_A_COLS: FD_MR512) of the wide AVX-512 tile, 32 columns */

/* How a tile reads A: FD_A_ROWS: A(i, p) = rows[i][p] (a batch given by its row pointers: the
 * forward product and dS @ W^T); FD_A_COLS: A(i, p) = rows[p][i] (the same batch transposed: the
 * weight gradient X^T @ dS). Row pointers let the first layer read a shuffled batch straight from
 * the caller's array, with no gathered copy. */
#define FD_A_ROWS 0
#define FD_A_COLS 1
#define FD_MAX_ROWS 256  /* largest batch the own kernels take (pointer arrays on the stack) */


/* C(n x m) := alpha * A[:, k0:k1] @ B[k0:k1, :] + beta * C, A(i, p) = rows[i][p]. */
FD_HIDDEN void fd_gemm_rows(int n, int k0, int k1, int m, float alpha, const float *const *rows,
                            const float *B, ptrdiff_t ldb, float beta, float *C, ptrdiff_t ldc);

/* Rows r0..r1 of C(k x m) := alpha * A^T @ B + beta * C with A (n x k) given by its rows:
 * C(i, j) = alpha * sum_{p < n} rows[p][i] * B(p, j) + beta * C(i, j). The weight gradient. */
FD_HIDDEN void fd_gemm_cols(int r0, int r1, int n, int m, float alpha, const float *const *rows,
                            const float *B, ptrdiff_t ldb, float beta, float *C, ptrdiff_t ldc);

/* Columns c0..c1 of C(n x k) := A(n x m) @ B(k x m)^T, A(i, p) = rows[i][p]. */
FD_HIDDEN void fd_gemm_nt(int n, int m, int c0, int c1, const float *const *rows, const float *B,
                          ptrdiff_t ldb, float *C, ptrdiff_t ldc);

/* The narrow block of a weight gradient (A read as FD_A_COLS, nr <= 8 columns), rows i0..i1 of
 * C; sparse: each tile runs over the rows of A that are not all zero. */
FD_HIDDEN void fd_tiles_cols_narrow(int i0, int i1, int nr, int kc, const float *const *rp,
                                    const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                                    float alpha, float beta, int sparse);

/* One tile, mr <= 6 (AVX2) or 8 (portable) rows by nr <= 16 columns over a depth of kc:
 *   C(r, j) := alpha * sum_{p < kc} A(r, p) * B(p, j) + beta * C(r, j)
 * with A(r, p) = rp[r][off + p] (FD_A_ROWS) or rp[p][off + r] (FD_A_COLS; pl, when not NULL, the
 * kc depth indices to run over); tstore > 0: C transposed, its first tstore columns, element
 * (r, j) at C[j * ldc + r]. Every element is one chain of FMAs over p from zero, then alpha and
 * beta: the same bits whichever kernel, tile shape or thread computes it (fd_gemm.c). */
#if FD_X86
FD_HIDDEN void fd_tile_full(int mr, int kc, const float *const *rp, int mode, ptrdiff_t off,
                            const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                            float beta, int tstore, const int *pl);   /* AVX2, nr = 16 */
FD_HIDDEN void fd_tile_masked(int mr, int nr, int kc, const float *const *rp, int mode,
                              ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C,
                              ptrdiff_t ldc, float alpha, float beta, int tstore,
                              const int *pl);                         /* AVX2, nr < 16 */
FD_HIDDEN int fd_nonzero_rows_avx2(const float *const *rp, int n, int i, int w, int *pl);
/* AVX-512 (fd_gemm512.c): mr <= FD_MR512 rows */
FD_HIDDEN void fd_tile512_full(int mr, int kc, const float *const *rp, int mode, ptrdiff_t off,
                               const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                               float alpha, float beta, int tstore, const int *pl);
FD_HIDDEN void fd_tile512_masked(int mr, int nr, int kc, const float *const *rp, int mode,
                                 ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C,
                                 ptrdiff_t ldc, float alpha, float beta, int tstore,
                                 const int *pl);
/* the wide AVX-512 tile (fd_gemm512.c): 17 <= nr <= 32 columns, contiguous in B and C; mr <=
 * FD_MR512W rows for FD_A_ROWS, FD_MR512 for FD_A_COLS */
FD_HIDDEN void fd_tile512w_full(int mr, int kc, const float *const *rp, int mode, ptrdiff_t off,
                                const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                                float alpha, float beta, int tstore, const int *pl);
FD_HIDDEN void fd_tile512w_masked(int mr, int nr, int kc, const float *const *rp, int mode,
                                  ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C,
                                  ptrdiff_t ldc, float alpha, float beta, int tstore,
                                  const int *pl);
#endif
FD_HIDDEN void fd_tile_c(int mr, int nr, int kc, const float *const *rp, int mode, ptrdiff_t off,
                         const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                         float beta, int tstore, const int *pl);      /* portable */
/* The rows p < n whose elements rp[p][i .. i + w) are not all zero (+0 or -0), in order, into
 * pl; returns their count. w <= 24 (AVX2). */
FD_HIDDEN int fd_nonzero_rows_c(const float *const *rp, int n, int i, int w, int *pl);

/* The per-tile dispatch: AVX-512 or AVX2 when compiled in and the CPU has it, else portable;
 * same arguments and the same bits either way. Inline: called once per tile in the jobs' loops.
 * mr: at most fd_tile_rows(...)'s answer for the level in use. */
static inline void fd_tile(int mr, int nr, int kc, const float *const *rp, int mode,
                           ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                           float alpha, float beta, int tstore, const int *pl)
{
#if FD_X86
    if (fd_have_avx512()) {
        if (nr == FD_NR)
            fd_tile512_full(mr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl);
        else
            fd_tile512_masked(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore,
                              pl);
        return;
    }
    if (fd_have_avx2_fma()) {
        if (nr == FD_NR)
            fd_tile_full(mr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl);
        else
            fd_tile_masked(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl);
        return;
    }
#endif
    fd_tile_c(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl);
}

static inline int fd_nonzero_rows(const float *const *rp, int n, int i, int w, int *pl)
{
#if FD_X86
    if (fd_have_avx2_fma())
        return fd_nonzero_rows_avx2(rp, n, i, w, pl);
#endif
    return fd_nonzero_rows_c(rp, n, i, w, pl);
}

/* Rows of the next 6-row tile when `left` rows remain: 6, but a remainder of 1 or 2 rows ends as
 * 4 + 3 or 4 + 4 instead (a tile of 1 or 2 rows has too few independent FMA chains, 2 or 4, to
 * keep both FMA units busy). */
static inline int fd_rows6(int left)
{
    return (left < FD_MR) ? left : (left == 7 || left == 8) ? 4 : FD_MR;
}

/* A tile's accumulators stored transposed (see fd_input_grad): element (r, j) of the tile,
 * acc[r * lda + j], to C[j * ldc + r] for the first tstore columns, rounded as the tiles round:
 * alpha * acc, then fma(beta, C, .). */
static inline void fd_store_transposed(const float *acc, int lda, int mr, int tstore, float *C,
                                       ptrdiff_t ldc, float alpha, float beta)
{
    int r, j;
    for (j = 0; j < tstore; j++) {
        float *cc = C + j * ldc;
        for (r = 0; r < mr; r++) {
            const float v = alpha * acc[r * lda + j];
            cc[r] = (beta != 0.0f) ? fmaf(beta, cc[r], v) : v;
        }
    }
}

/* Columns of a block of the products' loops: 32 (two vectors) when the AVX-512 tiles run,
 * else 16. */
static inline int fd_block_cols(void)
{
#if FD_X86
    if (fd_have_avx512())
        return 2 * FD_NR;
#endif
    return FD_NR;
}

/* The wide tile, nr in 17..32 (only when fd_have_avx512()); rows as fd_wide_rows answers. */
static inline void fd_tile_wide(int mr, int nr, int kc, const float *const *rp, int mode,
                                ptrdiff_t off, const float *B, ptrdiff_t ldb, float *C,
                                ptrdiff_t ldc, float alpha, float beta, int tstore,
                                const int *pl)
{
#if FD_X86
    if (nr == 2 * FD_NR)
        fd_tile512w_full(mr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl);
    else
        fd_tile512w_masked(mr, nr, kc, rp, mode, off, B, ldb, C, ldc, alpha, beta, tstore, pl);
#else
    (void)mr; (void)nr; (void)kc; (void)rp; (void)mode; (void)off; (void)B; (void)ldb; (void)C;
    (void)ldc; (void)alpha; (void)beta; (void)tstore; (void)pl;
#endif
}

/* Rows of the next wide tile when `left` rows remain (a remainder of 1 or 2 ends as two tiles
 * of about half instead). */
static inline int fd_wide_rows(int left, int mode)
{
    const int most = (mode == FD_A_ROWS) ? FD_MR512W : FD_MR512;
    return (left <= most) ? left : (left <= most + 2) ? (left + 1) / 2 : most;
}

/* Rows of the next tile of a 16-column block when `left` rows remain: 12 on the AVX-512 tile
 * (a remainder of 1 or 2 rows ends as 7 + 6 or 7 + 7 instead), else as fd_rows6. */
static inline int fd_tile_rows(int left)
{
#if FD_X86
    if (fd_have_avx512())
        return (left <= FD_MR512) ? left : (left == 13 || left == 14) ? 7 : FD_MR512;
#endif
    return fd_rows6(left);
}

#endif /* FASTDENSE_FD_GEMM_H */
