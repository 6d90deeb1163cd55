/* The run-time choice of the AVX2 and AVX-512 kernels (see fd_cpu.h). */
#include "fd_cpu.h"

int fd_cpu_flag = -1;
static int fd_cpu_cap = 2;  /* the highest level fd_set_simd allows */

#if FD_X86 && !defined(__GNUC__)
/* The level (fd_cpu.h) from CPUID leaves 1 and 7 and the register state the OS saves (XGETBV). */
static int fd_cpuid_level(void)
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
    if (!((r[1] >> 5) & 1))  /* AVX2 */
        return 0;
    /* AVX-512F (leaf 7 EBX bit 16) and the OS saving the opmask and ZMM state */
    return (((r[1] >> 16) & 1) && (_xgetbv(0) & 0xE6) == 0xE6) ? 2 : 1;
}
#endif

int fd_cpu_detect(void)
{
#if FD_X86
#if defined(__GNUC__)
    int level;
    __builtin_cpu_init();
    /* (GCC's check includes the OS saving the registers' state) */
    level = !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 0
            : __builtin_cpu_supports("avx512f") ? 2 : 1;
#else
    int level = fd_cpuid_level();
#endif
    fd_cpu_flag = level < fd_cpu_cap ? level : fd_cpu_cap;
#else
    fd_cpu_flag = 0;
#endif
    return fd_cpu_flag;
}

void fd_set_simd(int level)
{
    fd_cpu_cap = level < 0 ? 0 : (level > 2 ? 2 : level);
    (void)fd_cpu_detect();
}
