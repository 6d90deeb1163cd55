/* A dense layer's products cut in two along its inputs and shared by the threads, and the
 * finiteness check of an input (defined in fd_layer.c). Every result is bit-identical whatever
 * the thread count. */
#ifndef FASTDENSE_FD_LAYER_H
#define FASTDENSE_FD_LAYER_H

#include "fd_gemm.h"
#include "fd_threads.h"

/* A value of ldw meaning: W (k x m) is stored as 16-column panels, each k x 16 and contiguous,
 * element (p, j) at W[(j / 16) * k * 16 + p * 16 + j % 16]. The Trainer trains the first layer's
 * weights in this layout (plain SGD): the tiles then read and update W one 64-byte line per row
 * of a panel, in address order, where row-major W has them 400+ bytes apart. The forward product
 * and the weight gradient take it; the input gradient does not (the first layer has none). */
#define FD_PANELS (-16)

/* Where a layer of k inputs is cut: the products run as two halves over inputs [0, s) and
 * [s, k), s = fd_half(k) (s = k: not cut). */
FD_HIDDEN int fd_half(int k);

/* Z(n x m) := A(n x k) @ W(k x m) + b, A given by `rows` or, when rows is NULL, contiguous at A;
 * part: scratch of n x m floats for the second half's sum; combine = 0 leaves the two halves in
 * Z and part, for fd_combine_rows. n <= FD_MAX_ROWS. */
FD_HIDDEN void fd_forward(int n, int k, int m, const float *const *rows, const float *A,
                          const float *W, ptrdiff_t ldw, const float *b, float *Z, float *part,
                          int threads, int combine);

/* Rows r0..r1 of the forward product's sum: Z = (Z0 + Z1) + b where the depth was cut (split),
 * Z = Z0 + b otherwise; b may be NULL. */
FD_HIDDEN void fd_combine_rows(float *Z, const float *part, const float *b, int r0, int r1, int m,
                               int split);

/* dW(k x m) := alpha * A^T @ dS + beta * dW, A (n x k) given by rows or contiguous at A; sparse:
 * skip the input rows that are zero in a whole tile (same bits). */
FD_HIDDEN void fd_weight_grad(int n, int k, int m, float alpha, float beta,
                              const float *const *rows, const float *A, const float *dS,
                              float *dW, ptrdiff_t ldw, int threads, int sparse);

/* Plain SGD's W += alpha * A^T @ dS for one batch and the next batch's (n1 rows, rows1) forward
 * halves through the updated W, as one job: the bits of fd_weight_grad then fd_forward. */
FD_HIDDEN void fd_weight_grad_then_forward(int n, int k, int m, float alpha,
                                           const float *const *rows, const float *dS, float *W,
                                           ptrdiff_t ldw, int n1, const float *const *rows1,
                                           float *Z, float *part, int threads, int sparse);

/* dX(n x k) := dS(n x m) @ W(k x m)^T; with scratch (m x round_up(n, 16) floats) computed as
 * dX^T = W @ dS^T, same bits. */
FD_HIDDEN void fd_input_grad(int n, int m, int k, const float *dS, const float *W, ptrdiff_t ldw,
                             float *dX, int threads, float *scratch);

/* 1 when none of the n float32 (wide = 0) or float64 (wide = 1) values at p is Inf or NaN. */
FD_HIDDEN int fd_all_finite(const void *p, size_t n, int wide, int threads);

#endif /* FASTDENSE_FD_LAYER_H */
