/* A dense layer's products cut in two along its inputs and shared by the threads: the jobs, their
 * units and the order threads take them in (see fd_layer.h); the finiteness check of an input. */
#include "fd_layer.h"

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

int fd_half(int k)
{
    /* at a multiple of 16: the first half of k's blocks of 16, rounded up */
    const int blocks = (k + FD_NR - 1) / FD_NR;
    return k < FD_HALF_MIN ? k : ((blocks + 1) / 2) * FD_NR;
}

enum { FD_OP_FWD, FD_OP_DW, FD_OP_DX, FD_OP_DXT };

/* The panel holding column c (a multiple of 16) of a k-row W stored as FD_PANELS. */
static inline float *fd_panel(const float *W, int k, int c)
{
    return (float *)W + (ptrdiff_t)(c / FD_NR) * k * FD_NR;
}

#define FD_DW_ROWS 48  /* rows of W per unit of a weight-gradient job (a multiple of FD_MR) */

/* A job is cut into units: blocks of 16 output columns of each half (FWD, DX; FD_MC rows for a
 * forward product of a larger batch) or blocks of FD_DW_ROWS rows of W (DW). Each unit's
 * arithmetic is fixed, so which thread runs it does not change any result. A thread first takes
 * the units of its own half (its half of W stays in its cache), then helps with the other half's:
 * the two cores of a shared machine are seldom equally fast (here one often runs 30% slower while
 * its sibling serves another guest), and a fixed 50/50 split would make the faster one wait. */
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
static void fd_dw_dense(const fd_job *j, int r0, int r1, int m)  /* (its first m columns) */
{
    int c;
    if (j->ldw != FD_PANELS) {
        fd_gemm_cols(r0, r1, j->n, m, j->alpha, j->rows, j->dS, j->m, j->beta, j->C, j->ldw);
        return;
    }
    for (c = 0; c < m; c += FD_NR)
        fd_gemm_cols(r0, r1, j->n, (m - c < FD_NR) ? m - c : FD_NR, j->alpha, j->rows,
                     j->dS + c, j->m, j->beta, fd_panel(j->C, j->k, c), FD_NR);
}

/* The sparse weight gradient's tiles take the column blocks of FD_NR (and a last one of more than
 * 8); a last block of at most 8 columns (a 100-unit layer's 4) runs after them over all the rows
 * at once, in fd_tiles_cols_narrow's blocks of 24 rows with their own lists of rows: per 6-row
 * tile it used a quarter of its lanes and listed the tile's rows a second time (the seed net's
 * step spent 7% of its time there). */
static void fd_dw_sparse(const fd_job *j, int r0, int r1)
{
    const int panels = (j->ldw == FD_PANELS), narrow = j->m % FD_NR;
    const int m = (narrow > 0 && narrow <= 8) ? j->m - narrow : j->m;  /* the tiles' columns */
    /* blocks of 32 columns on the wide AVX-512 tile (two loads of dS and 12 FMAs for the six
     * rows' broadcasts, where two 16-column tiles broadcast each row twice), of 16 elsewhere */
    const int wc = panels ? FD_NR : fd_block_cols();
    int pl[FD_MAX_ROWS];
    int i, c, dense_from = -1;
    for (i = r0; i < r1; ) {
        const int mr = fd_rows6(r1 - i);
        const int np = fd_nonzero_rows(j->rows, j->n, i, mr, pl);
        /* a list that skips few rows costs more than it saves: such tiles run with the dense
         * product, several at a time (the widest tiles) */
        if (np * 8 > j->n * 7) {
            if (dense_from < 0)
                dense_from = i;
            i += mr;
            continue;
        }
        if (dense_from >= 0) {
            fd_dw_dense(j, dense_from, i, m);
            dense_from = -1;
        }
        for (c = 0; c < m; c += wc) {
            const int nr = (m - c < wc) ? m - c : wc;
            float *C = panels ? fd_panel(j->C, j->k, c) + (ptrdiff_t)i * FD_NR
                              : j->C + (ptrdiff_t)i * j->ldw + c;
            if (nr > FD_NR)
                fd_tile_wide(mr, nr, np, j->rows, FD_A_COLS, i, j->dS + c, j->m, C, j->ldw,
                             j->alpha, j->beta, 0, pl);
            else
                fd_tile(mr, nr, np, j->rows, FD_A_COLS, i, j->dS + c, j->m, C,
                        panels ? FD_NR : j->ldw, j->alpha, j->beta, 0, pl);
        }
        i += mr;
    }
    if (dense_from >= 0)
        fd_dw_dense(j, dense_from, r1, m);
    if (m < j->m)
        fd_tiles_cols_narrow(r0, r1, narrow, j->n, j->rows, j->dS + m, j->m,
                             panels ? fd_panel(j->C, j->k, m) : j->C + m,
                             panels ? FD_NR : j->ldw, j->alpha, j->beta, 1);
}

static void fd_job_unit(const fd_job *j, int h, int u)
{
    const int lo = h ? j->s : 0, hi = h ? j->k : j->s;
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
        else
            fd_dw_dense(j, r0, r1, j->m);
        break;
    }
    case FD_OP_DXT: {
        /* dX^T rows r0..r1 (= rows of W) := W[r0:r1, :] @ dS^T, stored into dX transposed */
        const int r0 = lo + u * FD_DW_ROWS, r1 = (hi - r0 < FD_DW_ROWS) ? hi : r0 + FD_DW_ROWS;
        const float *wrows[FD_DW_ROWS];
        int r, ib, pc, i;
        for (r = r0; r < r1; r++)
            wrows[r - r0] = j->W + (ptrdiff_t)r * j->ldw;
        /* blocks of 16 batch rows (32 on the wide AVX-512 tile; dS^T's rows are padded to a
         * multiple of 16, so a block's columns are always whole vectors) */
        const int wb = fd_block_cols();
        for (ib = 0; ib < j->n; ib += wb) {
            const int nb = (j->n - ib < wb) ? j->n - ib : wb;
            const int nw = (j->n16 - ib < wb) ? j->n16 - ib : wb;
            for (pc = 0; pc < j->m; pc += FD_KC) {
                const int kc = (j->m - pc < FD_KC) ? j->m - pc : FD_KC;
                for (i = 0; i < r1 - r0; ) {
                    const int mr = (nw > FD_NR) ? fd_wide_rows(r1 - r0 - i, FD_A_ROWS)
                                                : fd_tile_rows(r1 - r0 - i);
                    const float *B = j->dS + (ptrdiff_t)pc * j->n16 + ib;
                    float *C = j->C + (ptrdiff_t)ib * j->k + r0 + i;
                    if (nw > FD_NR)
                        fd_tile_wide(mr, nw, kc, wrows + i, FD_A_ROWS, pc, B, j->n16, C, j->k,
                                     1.0f, pc == 0 ? 0.0f : 1.0f, nb, NULL);
                    else
                        fd_tile(mr, FD_NR, kc, wrows + i, FD_A_ROWS, pc, B, j->n16, C, j->k,
                                1.0f, pc == 0 ? 0.0f : 1.0f, nb, NULL);
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
    /* (32 columns for a forward product on the wide AVX-512 tile; the panel layout and the
     * packed input gradient work 16 columns at a time, and finer units balance the threads) */
    j->width = (j->n < 8) ? 1 << 30
               : (j->op == FD_OP_FWD && j->ldw != FD_PANELS) ? fd_block_cols() : FD_NR;
    for (h = 0; h < 2; h++) {
        const int lo = h ? j->s : 0, hi = h ? j->k : j->s;
        if (lo >= hi)
            j->units[h] = 0;
        else if (j->op == FD_OP_FWD && j->n > FD_MC)
            j->units[h] = (j->n + FD_MC - 1) / FD_MC;
        else if (j->op == FD_OP_FWD)
            j->units[h] = j->n >= 8 ? (j->m + j->width - 1) / j->width : 1;
        else if (j->op == FD_OP_DW || j->op == FD_OP_DXT)
            j->units[h] = (hi - lo + FD_DW_ROWS - 1) / FD_DW_ROWS;
        else
            j->units[h] = j->n >= 8 ? (hi - lo + j->width - 1) / j->width : 1;
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

/* Rows r0..r1 of the forward product's sum: Z = (Z0 + Z1) + b where the depth was cut (split),
 * Z = Z0 + b otherwise; b may be NULL. */
void fd_combine_rows(float *Z, const float *part, const float *b, int r0, int r1, int m,
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

/* Z(n x m) := A(n x k) @ W(k x m) + b, A given by `rows` or, when rows is NULL, contiguous at A;
 * W's rows are ldw floats apart; b may be NULL. part: scratch of n x m floats, used when k is
 * cut: then Z = (Z0 + Z1) + b. n <= FD_MAX_ROWS.
 * combine = 0 leaves the two partial sums in Z and part (the caller combines them with
 * fd_combine_rows, e.g. row block by row block on two threads). */
void fd_forward(int n, int k, int m, const float *const *rows, const float *A,
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

/* The OR over x[0 .. n) of each element's exponent plus one exponent unit: an all-ones exponent
 * (Inf or NaN) carries into the sign bit, so the sign bit of the result says whether any is. */
static inline uint32_t fd_nonfinite_bits32(const float *x, size_t n)
{
    const uint32_t *u = (const uint32_t *)x;
    uint32_t b = 0;
    size_t i;
    for (i = 0; i < n; i++)
        b |= (u[i] & 0x7F800000u) + 0x00800000u;
    return b;
}

static inline uint64_t fd_nonfinite_bits64(const double *x, size_t n)
{
    const uint64_t *u = (const uint64_t *)x;
    uint64_t b = 0;
    size_t i;
    for (i = 0; i < n; i++)
        b |= (u[i] & 0x7FF0000000000000ull) + 0x0010000000000000ull;
    return b;
}

#if FD_X86
/* The same loops compiled for AVX2: on one thread 36 GB/s, where the baseline build's 16-byte
 * steps checked 9 GB/s (the float and double forms differ in their types and constants only) */
static FD_AVX2_NOINLINE uint32_t fd_nonfinite_bits32_avx2(const float *x, size_t n)
{
    return fd_nonfinite_bits32(x, n);
}

static FD_AVX2_NOINLINE uint64_t fd_nonfinite_bits64_avx2(const double *x, size_t n)
{
    return fd_nonfinite_bits64(x, n);
}
#endif

/* 1 when none of x[0 .. n) is Inf or NaN (wide: doubles, else floats). */
static int fd_finite(const void *x, size_t n, int wide)
{
#if FD_X86
    if (fd_have_avx2_fma())
        return wide ? !(fd_nonfinite_bits64_avx2((const double *)x, n) >> 63)
                    : !(fd_nonfinite_bits32_avx2((const float *)x, n) >> 31);
#endif
    return wide ? !(fd_nonfinite_bits64((const double *)x, n) >> 63)
                : !(fd_nonfinite_bits32((const float *)x, n) >> 31);
}

/* dW(k x m) := alpha * A^T @ dS + beta * dW, A (n x k) given by rows or contiguous at A; dW's
 * rows are ldw floats apart. sparse: skip the input rows that are zero in a whole block (same
 * bits: a zero row adds exact zeros); used only when dS is finite (0 * Inf is NaN). */
static void fd_weight_grad_job(fd_job *j, int n, int k, int m, float alpha, float beta,
                               const float *const *rows, const float *dS, float *dW,
                               ptrdiff_t ldw, int sparse)
{
    fd_job_init(j, FD_OP_DW, n, k, m, rows, NULL, ldw, dW);
    j->alpha = alpha; j->beta = beta; j->dS = dS;
    j->sparse = sparse && fd_finite(dS, (size_t)n * m, 0);
}

void fd_weight_grad(int n, int k, int m, float alpha, float beta,
                    const float *const *rows, const float *A, const float *dS, float *dW,
                    ptrdiff_t ldw, int threads, int sparse)
{
    const float *buf[FD_MAX_ROWS];
    fd_job j;
    fd_weight_grad_job(&j, n, k, m, alpha, beta, fd_row_ptrs(rows, A, k, n, buf), dS, dW, ldw,
                       sparse);
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
    int t, h, spins = 0;
    fd_take_units(&jj->dw, own, &jj->half[own].done);
    fd_take_units(&jj->dw, 1 - own, &jj->half[1 - own].done);
    for (t = 0; t < 2; t++) {
        h = t ? 1 - own : own;
        if (atomic_load_explicit(&jj->fwd.half[h].next, memory_order_relaxed) >= jj->fwd.units[h])
            continue;
        while (atomic_load_explicit(&jj->half[h].done, memory_order_acquire) < jj->dw.units[h])
            fd_wait_step(&spins);
        fd_take_units(&jj->fwd, h, NULL);
    }
}

void fd_weight_grad_then_forward(int n, int k, int m, float alpha,
                                 const float *const *rows, const float *dS, float *W,
                                 ptrdiff_t ldw, int n1, const float *const *rows1,
                                 float *Z, float *part, int threads, int sparse)
{
    fd_job2 jj;
    fd_weight_grad_job(&jj.dw, n, k, m, alpha, 1.0f, rows, dS, W, ldw, sparse);
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
void fd_input_grad(int n, int m, int k, const float *dS, const float *W, ptrdiff_t ldw,
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
    j->bad[part] = !fd_finite((const char *)j->p + lo * (j->wide ? 8 : 4), hi - lo, j->wide);
}

int fd_all_finite(const void *p, size_t n, int wide, int threads)
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
