/* Build-wide definitions of the C kernels: includes, which vector code the compiler builds, the
 * run-time choice of the AVX2 kernels, and the AVX2 group loads/stores shared by the GEMM and the
 * vector maths. The definitions are in fd_cpu.c. */
#ifndef FASTDENSE_FD_CPU_H
#define FASTDENSE_FD_CPU_H

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
#define FD_AVX512_INLINE __attribute__((target("avx512f,avx2,fma"), always_inline)) inline
#define FD_AVX512_NOINLINE __attribute__((target("avx512f,avx2,fma"), noinline))
#elif defined(_MSC_VER) && defined(_M_X64) && !defined(FASTDENSE_NO_SIMD)
#define FD_X86 1
#include <immintrin.h>
#include <intrin.h>
#define FD_AVX2
#define FD_AVX2_INLINE __forceinline
#define FD_AVX2_NOINLINE __declspec(noinline)
#define FD_AVX512_INLINE __forceinline
#define FD_AVX512_NOINLINE __declspec(noinline)
#else
#define FD_X86 0
#endif

/* The kernels' functions are shared between the units of the extension but not exported from
 * it (ELF targets; a Windows DLL exports only what it names). */
#if defined(__GNUC__) && !defined(_WIN32)
#define FD_HIDDEN __attribute__((visibility("hidden")))
#else
#define FD_HIDDEN
#endif

/* The kernels in use: -1 until the CPU is checked, then 0 (portable C), 1 (AVX2 and FMA) or 2
 * (AVX-512F too: the GEMM tile runs 16 lanes wide; the rest stays AVX2). All give the same bits.
 * Read inline by the dispatch before every tile (fd_gemm.h): one load, no call. */
extern FD_HIDDEN int fd_cpu_flag;

/* Checks the CPU (AVX2 and FMA, AVX-512F, and the OS saving the YMM/ZMM state), sets
 * fd_cpu_flag to the best level (capped by fd_set_simd) and returns it. */
FD_HIDDEN int fd_cpu_detect(void);

/* The level in use (see fd_cpu_flag): nonzero when the AVX2 kernels are compiled in and run. */
static inline int fd_have_avx2_fma(void)
{
#if FD_X86
    return fd_cpu_flag >= 0 ? fd_cpu_flag : fd_cpu_detect();
#else
    return 0;
#endif
}

/* 1 when the AVX-512 tile runs. */
static inline int fd_have_avx512(void)
{
    return fd_have_avx2_fma() >= 2;
}

/* Lets tests and benchmarks cap the level: 0 = portable, 1 = AVX2 at most, 2 = the best the CPU
 * has. */
FD_HIDDEN void fd_set_simd(int level);

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

#endif /* FASTDENSE_FD_CPU_H */
