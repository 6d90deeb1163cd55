/* The packed GEMM (defined in fd_packed.c): the products of training batches larger than the
 * own kernels' row limit (FD_MAX_ROWS), where a product is big enough to pay for copying its
 * operands into the micro-kernel's order once. */
#ifndef FASTDENSE_FD_PACKED_H
#define FASTDENSE_FD_PACKED_H

#include "fd_cpu.h"

#define FD_PACK_MC 120  /* rows of A packed at a time (per thread): 120 x depth floats in L2 */

/* What a product does with each element's sum before storing it: v = alpha * acc, then
 * v = fma(beta, C, v) when beta != 0, v = v + bias[j] when bias is not NULL, v = max(v, 0)
 * (relu: NaN and -0 give +0, as fastdense's relu does) when relu is set, and last, with gate
 * set, v = (gate[i, j] > 0) ? v : +0: the gradient through a relu whose output is gate (as
 * fd_act_grad takes it), so that a layer's input gradient carries the relu before it.
 * And what it computes besides C: with bsum set, the column sums of op(B), each
 * over p = 0 .. k-1 in order from zero (a bias gradient: the sums of the delta's columns, in the
 * order fastdense's other paths take them), written to bsum, or with bsum_lr > 0 applied as
 * bsum[j] = bsum[j] - bsum_lr * sum (a bias's SGD update). They are taken from the packed
 * panels while those are still in cache, by whichever thread packed them.
 * And where C goes: with panels set, C is also written as the panels a later product of the
 * same width m takes as op(B) = C prepacked (tb == FD_PREPACKED; fd_packed_panel_floats(n, m)
 * floats), saving that product's packing pass over C; with panels_only set, only there (C is not
 * written and may be NULL; beta must be 0). */
typedef struct {
    float alpha, beta;
    const float *bias;  /* m floats, or NULL */
    int relu;
    float *bsum;        /* m floats, or NULL */
    float bsum_lr;
    const float *gate;  /* n x m, rows ldgate apart, or NULL */
    ptrdiff_t ldgate;
    float *panels;      /* fd_packed_panel_floats(n, m) floats, or NULL */
    int panels_only;
} fd_epilogue;

/* tb (or ta): B is already op(B)'s panels, as an epilogue's `panels` wrote them (ldb not read);
 * or A (n x k) is A's panels, as a product of k columns wrote them (lda not read) */
#define FD_PREPACKED 2

/* C(n x m) := epilogue(op(A) @ op(B)), row-major, C's rows ldc apart, where
 *   op(A)(i, p) = A[i * lda + p] (ta == 0) or A[p * lda + i] (ta == 1), i < n, p < k, or A
 *   holds A's panels (ta == FD_PREPACKED);
 *   op(B)(p, j) = B[p * ldb + j] (tb == 0) or B[j * ldb + p] (tb == 1), j < m; or B holds
 *   op(B)'s panels (tb == FD_PREPACKED, see fd_epilogue's panels).
 * Every element is one chain of FMAs over p = 0 .. k-1 from zero, then the epilogue: alpha and
 * beta as the own tiles round them (fd_gemm.h), the same at every SIMD level and for any number
 * of threads (up to `threads` share the rows of C). work: at least fd_packed_floats(k, m,
 * threads) floats. beta == 0: C is only written. */
FD_HIDDEN void fd_gemm_packed(int n, int k, int m, int ta, const float *A, ptrdiff_t lda, int tb,
                              const float *B, ptrdiff_t ldb, const fd_epilogue *e, float *C,
                              ptrdiff_t ldc, int threads, float *work);

/* Floats of work fd_gemm_packed needs for a product of depth k and m columns on `threads`
 * threads (any SIMD level). */
FD_HIDDEN size_t fd_packed_floats(int k, int m, int threads);

/* Floats of op(B)'s panels (k x m) at the SIMD level in use: an epilogue's `panels`. */
FD_HIDDEN size_t fd_packed_panel_floats(int k, int m);

/* Rows r0 .. r1-1 of W (k x m, row-major) into their steps of W's panels (fd_packed_panel_floats(k,
 * m) floats): what a product with op(B) = W takes prepacked, written piece by piece (by an
 * optimizer's pass, while the rows it just updated are in cache). */
FD_HIDDEN void fd_pack_weight_rows(const float *W, int k, int m, int r0, int r1, float *panels);

#endif /* FASTDENSE_FD_PACKED_H */
