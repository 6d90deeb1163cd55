/* Build-wide definitions of the C kernels: includes, the tile constants, the run-time choice of
 * the AVX2 kernels, and the AVX2 group loads/stores shared by the GEMM and the vector maths. */
#ifndef FASTDENSE_FD_BASE_H
#define FASTDENSE_FD_BASE_H


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
#endif /* FD_X86 */

#endif /* FASTDENSE_FD_BASE_H */
