/* The optimizer updates that run vectorised (defined in fd_optim.c). */
#ifndef FASTDENSE_FD_OPTIM_H
#define FASTDENSE_FD_OPTIM_H

#include "fd_cpu.h"

/* Elements i0..i1 of one Adam update (Keras 3's rule, float32), in place, with the roundings of
 * the float32 loop it replaces (_opt_range in _kernels.pyx):
 *   m = float(double(m) + double(g - m) * c1)      c1 = 1 - double(beta_1)
 *   v = float(double(v) + double(g * g - v) * c2)  c2 = 1 - double(beta_2)
 *   p = p - m * alpha / (sqrt(v) + eps)            (single precision)
 * Each element's operations are IEEE in that order (no FMA), so AVX-512 and the scalar loop
 * give the same bits. */
FD_HIDDEN void fd_adam(float *p, const float *g, float *m, float *v, ptrdiff_t i0, ptrdiff_t i1,
                       float alpha, double c1, double c2, float eps);

#endif /* FASTDENSE_FD_OPTIM_H */
