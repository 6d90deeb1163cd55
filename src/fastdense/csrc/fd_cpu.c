/* The run-time choice of the AVX2 kernels (see fd_cpu.h). */
#include "fd_cpu.h"

int fd_cpu_flag = -1;

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

int fd_cpu_detect(void)
{
#if FD_X86
#if defined(__GNUC__)
    __builtin_cpu_init();
    fd_cpu_flag = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    fd_cpu_flag = fd_cpuid_avx2_fma();
#endif
#else
    fd_cpu_flag = 0;
#endif
    return fd_cpu_flag;
}

void fd_set_simd(int enabled)
{
    fd_cpu_flag = enabled ? -1 : 0;
    if (enabled)
        (void)fd_have_avx2_fma();
}
