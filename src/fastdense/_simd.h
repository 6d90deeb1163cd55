/* The C kernels of fastdense: small-matrix float32 GEMM, vectorised activations, the worker pool
 * and a dense layer's products shared between threads. This header only declares them (with the
 * few helpers that must inline: per-element formulas, per-tile dispatch, counters); each concern
 * is compiled from its own unit in csrc/ and linked into the extension (setup.py).
 *
 * Why: on the shapes of small dense networks (32-row batches, one-row predictions) a general BLAS
 * spends much of its time packing and dispatching; a register-blocked AVX2/FMA micro-kernel that
 * keeps the weight panel in L1 runs closer to the core's peak. Functions compiled for AVX2+FMA
 * or AVX-512 carry a `target` attribute and are only called after a run-time CPU check, so one
 * wheel built for baseline x86-64 runs everywhere: without AVX2/FMA (or off x86)
 * `fd_have_avx2_fma()` is 0 and the portable C kernels, with the same bits, run instead.
 *
 * All matrices are row-major. The tile routine computes, for an MR x NR block,
 *     C := alpha * sum_p A(i, p) * B(p, j) + beta * C
 * where A is read through row pointers (broadcast element by element, so a batch can be read in
 * place from the caller's array, in any row order) and B(p, j) = B[p * ldb + j] (rows contiguous:
 * loaded 8 floats at a time). The layer-level products are cut in two along the layer's inputs
 * so that two threads can share them (see fd_half).
 */
#ifndef FASTDENSE_SIMD_H
#define FASTDENSE_SIMD_H

/* The C kernels, by concern: each unit csrc/fd_X.c with its header csrc/fd_X.h
 *   fd_cpu      includes, the run-time choice of the kernels' level (fd_cpu_flag)
 *   fd_vecmath  sigmoid, tanh, softmax's exp and activation gradients (AVX2 and scalar)
 *   fd_gemm     tile constants, the GEMM micro-kernels (AVX2 and portable C), products;
 *               fd_gemm512.c: the AVX-512 tiles, declared in fd_gemm.h
 *   fd_threads  the worker pool (fd_run) and the caller's floating-point modes
 *   fd_layer    a dense layer's products cut between threads; the finiteness check
 *   fd_packed   the packed GEMM of training batches over FD_MAX_ROWS rows
 *   fd_optim    the float32 Adam update, vectorised */
#include "csrc/fd_cpu.h"
#include "csrc/fd_vecmath.h"
#include "csrc/fd_gemm.h"
#include "csrc/fd_threads.h"
#include "csrc/fd_layer.h"
#include "csrc/fd_packed.h"
#include "csrc/fd_optim.h"

#endif /* FASTDENSE_SIMD_H */
