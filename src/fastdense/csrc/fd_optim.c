/* The optimizer updates that run vectorised (see fd_optim.h). Adam's update was a tenth of a
 * 784-512-512-10 training step at batch 256, its Cython loop 4 lanes wide (SSE, the baseline
 * x86-64 build). */
#include "fd_optim.h"

static void fd_adam_c(float *p, const float *g, float *m, float *v, ptrdiff_t i0, ptrdiff_t i1,
                      float alpha, double c1, double c2, float eps)
{
    ptrdiff_t i;
    for (i = i0; i < i1; i++) {
        const float gi = g[i];
        m[i] = (float)((double)m[i] + (double)(gi - m[i]) * c1);
        v[i] = (float)((double)v[i] + (double)(gi * gi - v[i]) * c2);
        p[i] -= m[i] * alpha / (sqrtf(v[i]) + eps);
    }
}

#if FD_X86
/* 8 lanes of the moment update: a = float(double(a) + double(d) * c) */
static FD_AVX512_INLINE __m256 fd_moment8(__m256 a, __m256 d, __m512d c)
{
    return _mm512_cvtpd_ps(_mm512_add_pd(_mm512_cvtps_pd(a),
                                         _mm512_mul_pd(_mm512_cvtps_pd(d), c)));
}

static FD_AVX512_NOINLINE void fd_adam_avx512(float *p, const float *g, float *m, float *v,
                                              ptrdiff_t i0, ptrdiff_t i1, float alpha,
                                              double c1, double c2, float eps)
{
    const __m256 va = _mm256_set1_ps(alpha), ve = _mm256_set1_ps(eps);
    const __m512d v1 = _mm512_set1_pd(c1), v2 = _mm512_set1_pd(c2);
    ptrdiff_t i = i0;
    for (; i + 8 <= i1; i += 8) {
        const __m256 gi = _mm256_loadu_ps(g + i);
        const __m256 mo = _mm256_loadu_ps(m + i), vo = _mm256_loadu_ps(v + i);
        const __m256 mi = fd_moment8(mo, _mm256_sub_ps(gi, mo), v1);
        const __m256 vi = fd_moment8(vo, _mm256_sub_ps(_mm256_mul_ps(gi, gi), vo), v2);
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(p + i, _mm256_sub_ps(_mm256_loadu_ps(p + i),
                                              _mm256_div_ps(_mm256_mul_ps(mi, va),
                                                            _mm256_add_ps(_mm256_sqrt_ps(vi),
                                                                          ve))));
    }
    fd_adam_c(p, g, m, v, i, i1, alpha, c1, c2, eps);
}
#endif

void fd_adam(float *p, const float *g, float *m, float *v, ptrdiff_t i0, ptrdiff_t i1,
             float alpha, double c1, double c2, float eps)
{
#if FD_X86
    if (fd_have_avx512()) {
        fd_adam_avx512(p, g, m, v, i0, i1, alpha, c1, c2, eps);
        return;
    }
#endif
    fd_adam_c(p, g, m, v, i0, i1, alpha, c1, c2, eps);
}
