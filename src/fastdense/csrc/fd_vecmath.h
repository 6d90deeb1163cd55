/* float32 activations: the scalar formulas (inline: the per-element contract), and the whole-array
 * functions of fd_vecmath.c (8-lane AVX2 versions with the same bits, and the dispatch). */
#ifndef FASTDENSE_FD_VECMATH_H
#define FASTDENSE_FD_VECMATH_H

#include "fd_cpu.h"

/* ------------------------------------------------------------------------------------------------
 * float32 activations, one element at a time, with the arithmetic of the 8-lane AVX2 versions in
 * fd_vecmath.c: the same constants, the same operations in the same order, fmaf where they fuse.
 * So the portable path gives the AVX2 path's bits (in the default round-to-nearest mode), and
 * every platform computes sigmoid, tanh and softmax's exp alike. Inline here: they run element by
 * element inside loops (and any unit may apply them to a single value).
 * ------------------------------------------------------------------------------------------------ */

static inline float fd_bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* exp(x) for |x| <= 87.3, not NaN: x = n ln2 + r (Cody-Waite, |r| <= ln2/2), a degree-6
 * polynomial in r, times 2^n built in the exponent bits; about 1 ulp. */
static inline float fd_exp1(float x)
{
    const float n = nearbyintf(x * 1.44269504088896341f);
    float r = fmaf(-n, 0.693359375f, x);
    float p = 1.9875691500e-4f;
    r = fmaf(-n, -2.12194440e-4f, r);
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r + 1.0f);
    return p * fd_bits_float((uint32_t)((int)n + 127) << 23);
}

/* min(lim, a) as the vector min does it: a when either is NaN */
static inline float fd_min_lim(float lim, float a)
{
    return (lim < a) ? lim : a;
}

static inline float fd_sigmoid1(float x)
{
    if (x >= 0.0f)
        return 1.0f / (1.0f + expf(-x));
    {
        const float e = expf(x);
        return e / (1.0f + e);
    }
}

/* sigmoid: 1 / (1 + exp(-|x|)), times exp(-|x|) for x < 0; |x| > 80 takes fd_sigmoid1 (exact
 * limits, denormals). */
static inline float fd_sigmoid_v(float x)
{
    const float ax = fabsf(x);
    float e, s;
    if (ax > 80.0f)
        return fd_sigmoid1(x);
    if (x != x)
        return x;
    e = fd_exp1(-fd_min_lim(80.0f, ax));
    s = 1.0f / (1.0f + e);
    return (x < 0.0f) ? e * s : s;
}

/* tanh: |x| < 0.625: x + x^3 P(x^2) (the Cephes tanhf polynomial); else 1 - 2 / (exp(2|x|) + 1)
 * with |x| clamped to 20 (tanh is 1 in float from 9.01); x's sign on both branches, so
 * tanh(-0) = -0. About 1-2 ulp; +-Inf gives +-1, NaN stays NaN. */
static inline float fd_tanh_v(float x)
{
    const float ax = fabsf(x), x2 = x * x;
    float p = -5.70498872745e-3f, r;
    if (x != x)
        return x;
    p = fmaf(p, x2, 2.06390887954e-2f);
    p = fmaf(p, x2, -5.37397155531e-2f);
    p = fmaf(p, x2, 1.33314422036e-1f);
    p = fmaf(p, x2, -3.33332819422e-1f);
    p = fmaf(p * x2, x, x);
    if (ax < 0.625f)
        r = p;
    else
        r = 1.0f - 2.0f / (fd_exp1(2.0f * fd_min_lim(20.0f, ax)) + 1.0f);
    return copysignf(fabsf(r), x);
}

/* exp(d), d = x - mx <= 0 for a softmax row's max mx: fd_exp1 on [-87, 87], expf elsewhere
 * (exact zeros and denormals) and for NaN. */
static inline float fd_exp_shifted1(float x, float mx)
{
    const float d = x - mx;
    if (!(d >= -87.0f) || d > 87.0f)
        return expf(x - mx);
    return fd_exp1(d);
}

/* The backward pass of an activation from its output z, dS := dZ * act'(.), for
 *   FD_GRAD_SIGMOID: (dZ * z) * (1 - z), rounded in that order;
 *   FD_GRAD_TANH:    dZ * (1 - z * z), with 1 - z * z as one fused operation;
 *   FD_GRAD_RELU:    dZ where z > 0, else +0 (relu'(0) = 0 as in Keras; NaN z gives 0). */
enum { FD_GRAD_SIGMOID, FD_GRAD_TANH, FD_GRAD_RELU };

static inline float fd_grad1(int kind, float z, float dz)
{
    return (kind == FD_GRAD_SIGMOID) ? (dz * z) * (1.0f - z)
         : (kind == FD_GRAD_TANH) ? dz * fmaf(-z, z, 1.0f)
         : (z > 0.0f ? dz : 0.0f);
}

/* float32 activations in place (softmax's exp into out): 8 lanes at a time on AVX2, one element
 * at a time with the formulas above; the same bits either way (see fd_exp1). */
FD_HIDDEN void fd_sigmoid(float *z, ptrdiff_t size);
FD_HIDDEN void fd_tanh(float *z, ptrdiff_t size);
/* out[j] := exp(x[j] - mx) for j < m (a softmax's numerators, mx the row's max) */
FD_HIDDEN void fd_exp_shifted(const float *x, float mx, float *out, int m);
/* ds := dz * act'(.) from the activation's output z (fd_grad1); ds may alias dz */
FD_HIDDEN void fd_act_grad(int kind, const float *z, const float *dz, float *ds, ptrdiff_t size);

#endif /* FASTDENSE_FD_VECMATH_H */
