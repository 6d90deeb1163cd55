/* float32 activations over whole arrays: 8-lane AVX2 versions of the scalar formulas in
 * fd_vecmath.h (same constants, same operations in the same order: same bits), and the dispatch
 * between them. */
#include "fd_vecmath.h"

#if FD_X86

/* exp for 8 floats, |x| <= 87.3 (the caller keeps the rest on the scalar path): Cody-Waite
 * range reduction x = n ln2 + r, |r| <= ln2/2, and a degree-6 polynomial; about 1 ulp. */
static FD_AVX2 inline __m256 fd_exp8(__m256 x)
{
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f);
    const __m256 ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, ln2_hi, x);
    r = _mm256_fnmadd_ps(n, ln2_lo, r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* out[j] := exp(x[j] - mx) for j < m (a softmax's numerators; x - mx <= 0 for the row's max mx):
 * fd_exp8 on 8 lanes at a time, expf for lanes outside [-87, 87] (where fd_exp8's scaling
 * would leave the normal range: exact zeros and denormals, overflow) or NaN. */
static FD_AVX2 void fd_exp_shifted_avx2(const float *x, float mx, float *out, int m)
{
    const __m256 vmx = _mm256_set1_ps(mx), lo = _mm256_set1_ps(-87.0f);
    int j, k;
    for (j = 0; j < m; j += 8) {
        const int n = (m - j < 8) ? m - j : 8;
        const __m256i mk = fd_tail_mask(n);
        const __m256 d = _mm256_sub_ps(fd_load_group(x + j, n, mk), vmx);
        /* not (-87 <= d <= 87): out of fd_exp8's range, or NaN (d > 0 cannot happen for a
         * row's max, but the guard costs nothing) */
        const int odd = _mm256_movemask_ps(_mm256_or_ps(
                            _mm256_cmp_ps(d, lo, _CMP_NGE_UQ),
                            _mm256_cmp_ps(d, _mm256_set1_ps(87.0f), _CMP_GT_OQ)))
                        & ((1 << n) - 1);
        float tmp[8];
        _mm256_storeu_ps(tmp, fd_exp8(_mm256_min_ps(_mm256_max_ps(d, lo), _mm256_set1_ps(87.0f))));
        for (k = 0; k < n; k++)
            out[j + k] = (odd & (1 << k)) ? expf(x[j + k] - mx) : tmp[k];
    }
}


/* z := f(z) in place, 8 floats at a time: the last group of fewer than 8 is loaded and stored
 * under a mask, and goes through the same f as every other, so an element's value does not
 * depend on its position (a row's values do not depend on the batch it is computed in). */
typedef __m256 (*fd_vec8_fn)(__m256 x);

static FD_AVX2_INLINE void fd_map_groups(float *z, ptrdiff_t size, fd_vec8_fn f)
{
    ptrdiff_t i;
    for (i = 0; i < size; i += 8) {
        const int n = (size - i < 8) ? (int)(size - i) : 8;
        const __m256i mk = fd_tail_mask(n);
        fd_store_group(z + i, n, mk, f(fd_load_group(z + i, n, mk)));
    }
}

/* sigmoid: the vector formula, except lanes with |x| > 80, which take the exact scalar path
 * (exact 0/1 limits, denormals). */
static FD_AVX2_INLINE __m256 fd_sigmoid8(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f), lim = _mm256_set1_ps(80.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 ax = _mm256_andnot_ps(sign, x);
    const int big = _mm256_movemask_ps(_mm256_cmp_ps(ax, lim, _CMP_GT_OQ));
    /* exp(-|x|) on |x| clamped to 80 (the clamped lanes are replaced below) */
    /* (min_ps returns its second operand when one is NaN: a NaN stays NaN) */
    const __m256 e = fd_exp8(_mm256_or_ps(_mm256_min_ps(lim, ax), sign));
    const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e));
    const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
    __m256 r = _mm256_blendv_ps(s, _mm256_mul_ps(e, s), neg);
    if (big) {
        float tmp[8], xs[8];
        int j;
        _mm256_storeu_ps(tmp, r);
        _mm256_storeu_ps(xs, x);
        for (j = 0; j < 8; j++)
            if (big & (1 << j))
                tmp[j] = fd_sigmoid1(xs[j]);
        r = _mm256_loadu_ps(tmp);
    }
    return r;
}

static FD_AVX2 void fd_sigmoid_avx2(float *z, ptrdiff_t size)
{
    fd_map_groups(z, size, fd_sigmoid8);
}

/* tanh: |x| < 0.625: x + x^3 P(x^2) (the Cephes tanhf polynomial); else 1 - 2 / (exp(2|x|) + 1)
 * with |x| clamped to 20 (tanh is 1 in float from 9.01), sign restored. About 1-2 ulp;
 * tanh(-0) = -0, +-Inf gives +-1, NaN stays NaN. */
static FD_AVX2_INLINE __m256 fd_tanh8(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
    const __m256 lim = _mm256_set1_ps(20.0f), small = _mm256_set1_ps(0.625f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 ax = _mm256_andnot_ps(sign, x);
    const __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(-5.70498872745e-3f);
    __m256 e, big, r;
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.06390887954e-2f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-5.37397155531e-2f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(1.33314422036e-1f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-3.33332819422e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, x2), x, x);
    /* (min_ps returns its second operand when one is NaN: a NaN stays NaN) */
    e = fd_exp8(_mm256_mul_ps(two, _mm256_min_ps(lim, ax)));
    big = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one)));
    r = _mm256_blendv_ps(big, p, _mm256_cmp_ps(ax, small, _CMP_LT_OQ));
    /* x's sign on both branches (tanh is odd; this keeps tanh(-0) = -0) */
    return _mm256_or_ps(_mm256_andnot_ps(sign, r), _mm256_and_ps(sign, x));
}

static FD_AVX2 void fd_tanh_avx2(float *z, ptrdiff_t size)
{
    fd_map_groups(z, size, fd_tanh8);
}

/* The backward pass of an activation from its output z (fd_grad1), 8 lanes at a time; every
 * element by the same expression, the tail of fewer than 8 included; dS may alias dZ. */

static FD_AVX2 inline __m256 fd_grad8(int kind, __m256 z, __m256 dz)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    switch (kind) {
    case FD_GRAD_SIGMOID: return _mm256_mul_ps(_mm256_mul_ps(dz, z), _mm256_sub_ps(one, z));
    case FD_GRAD_TANH: return _mm256_mul_ps(dz, _mm256_fnmadd_ps(z, z, one));
    default: return _mm256_and_ps(_mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_GT_OQ), dz);
    }
}

static FD_AVX2 void fd_act_grad_avx2(int kind, const float *z, const float *dz, float *ds,
                             ptrdiff_t size)
{
    ptrdiff_t i = 0;
    for (; i + 8 <= size; i += 8)
        _mm256_storeu_ps(ds + i, fd_grad8(kind, _mm256_loadu_ps(z + i), _mm256_loadu_ps(dz + i)));
    for (; i < size; i++)
        ds[i] = fd_grad1(kind, z[i], dz[i]);
}

#endif /* FD_X86 */

/* float32 activations in place (softmax's exp into out): 8 lanes at a time on AVX2, one element
 * at a time here; the same bits either way (see fd_exp1). */
void fd_sigmoid(float *z, ptrdiff_t size)
{
    ptrdiff_t i;
#if FD_X86
    if (fd_have_avx2_fma()) {
        fd_sigmoid_avx2(z, size);
        return;
    }
#endif
    for (i = 0; i < size; i++)
        z[i] = fd_sigmoid_v(z[i]);
}

void fd_tanh(float *z, ptrdiff_t size)
{
    ptrdiff_t i;
#if FD_X86
    if (fd_have_avx2_fma()) {
        fd_tanh_avx2(z, size);
        return;
    }
#endif
    for (i = 0; i < size; i++)
        z[i] = fd_tanh_v(z[i]);
}

void fd_exp_shifted(const float *x, float mx, float *out, int m)
{
    int j;
#if FD_X86
    if (fd_have_avx2_fma()) {
        fd_exp_shifted_avx2(x, mx, out, m);
        return;
    }
#endif
    for (j = 0; j < m; j++)
        out[j] = fd_exp_shifted1(x[j], mx);
}

void fd_act_grad(int kind, const float *z, const float *dz, float *ds, ptrdiff_t size)
{
    ptrdiff_t i;
#if FD_X86
    if (fd_have_avx2_fma()) {
        fd_act_grad_avx2(kind, z, dz, ds, size);
        return;
    }
#endif
    for (i = 0; i < size; i++)
        ds[i] = fd_grad1(kind, z[i], dz[i]);
}
