/* Build-wide definitions of the C kernels: includes, the tile constants, the run-time choice of
 * the AVX2 kernels, and the AVX2 group loads/stores shared by the GEMM and the vector maths. */
#ifndef FASTDENSE_FD_BASE_H
#define FASTDENSE_FD_BASE_H


#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

/* The AVX2/FMA kernels are compiled in for x86-64 with GCC or Clang (each such function carries
 * a `target` attribute and runs only after the CPU check), and with MSVC, which compiles AVX2
 * intrinsics without flags (written for it, not compiled here: no MSVC on this project's
 * machines; see docs/design.md). */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(FASTDENSE_NO_SIMD)
#define FD_X86 1
#include <immintrin.h>
#define FD_AVX2 __attribute__((target("avx2,fma")))
#define FD_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline
#define FD_AVX2_NOINLINE __attribute__((target("avx2,fma"), noinline))
#elif defined(_MSC_VER) && defined(_M_X64) && !defined(FASTDENSE_NO_SIMD)
#define FD_X86 1
#include <immintrin.h>
#include <intrin.h>
#define FD_AVX2
#define FD_AVX2_INLINE __forceinline
#define FD_AVX2_NOINLINE __declspec(noinline)
#else
#define FD_X86 0
#endif

#if defined(__GNUC__)
#define FD_UNROLL13 _Pragma("GCC unroll 13")
#else
#define FD_UNROLL13
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

#if FD_X86 && !defined(__GNUC__)
/* AVX2 and FMA in the CPU (CPUID leaves 1 and 7), and the YMM state enabled by the OS (XGETBV). */
static int fd_cpuid_avx2_fma(void)
{
    int r[4];
    __cpuid(r, 0);
    if (r[0] < 7)
        return 0;
    __cpuid(r, 1);
    if (!((r[2] >> 12) & 1) || !((r[2] >> 27) & 1) || !((r[2] >> 28) & 1))  /* FMA, OSXSAVE, AVX */
        return 0;
    if ((_xgetbv(0) & 6) != 6)
        return 0;
    __cpuidex(r, 7, 0);
    return (r[1] >> 5) & 1;  /* AVX2 */
}
#endif

static int fd_have_avx2_fma(void)
{
#if FD_X86
    if (fd_cpu_flag < 0) {
#if defined(__GNUC__)
        __builtin_cpu_init();
        fd_cpu_flag = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
        fd_cpu_flag = fd_cpuid_avx2_fma();
#endif
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

static FD_AVX2 inline __m256i fd_tail_mask(int n)
{
    /* lanes 0..n-1 set, n in 0..8 */
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

/* A group of n <= 8 floats: a plain load or store for a full group, under the mask mk (the first
 * n lanes) for the last one of an array (a masked store is microcoded on AMD: only when needed). */
static FD_AVX2 inline __m256 fd_load_group(const float *p, int n, __m256i mk)
{
    return (n == 8) ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mk);
}

static FD_AVX2 inline void fd_store_group(float *p, int n, __m256i mk, __m256 v)
{
    if (n == 8)
        _mm256_storeu_ps(p, v);
    else
        _mm256_maskstore_ps(p, mk, v);
}
#endif /* FD_X86 */

#endif /* FASTDENSE_FD_BASE_H */
