/* Unit tests of the C kernels (declared in src/fastdense/_simd.h, defined in the units of
 * src/fastdense/csrc/, linked with this file), without Python: built natively (with and without
 * the x86 SIMD kernels) and cross-compiled for aarch64 and run under qemu-user by
 * tests/test_c_kernels.py.
 *
 * The arithmetic contract is written out here a second time, as naive loops: a forward product
 * Z = A @ W is cut along the depth at s = fd_half(k); each half's element is, per depth chunk of
 * FD_KC from the half's start, a chain acc = fmaf(a, w, acc) from zero, scaled by alpha and added
 * to the previous chunks' value with fmaf(beta, C, v); the halves are added, then the bias. Every
 * kernel path (AVX2 or portable, one or two threads, one row or a batch, with or without skipping
 * zeros) must give exactly these bits; and the bits must be close to a double-precision product.
 *
 * Output: one line per failure, then "N passed, N failed". Exit status 1 on any failure. */
#include "_simd.h"

#include <stdio.h>
#include <stdlib.h>

static int n_pass, n_fail;

static void check(int ok, const char *what, int a, int b, int c)
{
    if (ok) {
        n_pass++;
    } else {
        n_fail++;
        printf("FAILED: %s (%d, %d, %d)\n", what, a, b, c);
    }
}

static uint32_t rng_state = 12345u;

static float urand(void)  /* in [-1, 1), with a third of the values exactly zero */
{
    rng_state = rng_state * 1664525u + 1013904223u;
    if ((rng_state >> 8) % 3 == 0)
        return 0.0f;
    return (float)((rng_state >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

static int same_bits(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* the contract's chain over depth [lo, hi) for element (i, j) of A (n x k) @ W (k x m) */
static float chain(const float *A, const float *W, int k, int m, int i, int j, int lo, int hi)
{
    float c = 0.0f;
    int pc, p;
    for (pc = lo; pc < hi; pc += FD_KC) {
        const int pe = (hi - pc < FD_KC) ? hi : pc + FD_KC;
        float acc = 0.0f;
        for (p = pc; p < pe; p++)
            acc = fmaf(A[(size_t)i * k + p], W[(size_t)p * m + j], acc);
        c = (pc == lo) ? 1.0f * acc : fmaf(1.0f, c, 1.0f * acc);
    }
    return c;
}

static void forward_reference(const float *A, const float *W, const float *b, int n, int k,
                              int m, float *Z)
{
    const int s = fd_half(k);
    int i, j;
    for (i = 0; i < n; i++)
        for (j = 0; j < m; j++) {
            float z = chain(A, W, k, m, i, j, 0, s);
            if (s < k)
                z = z + chain(A, W, k, m, i, j, s, k);
            Z[(size_t)i * m + j] = z + b[j];
        }
}

static int close_to_double(const float *A, const float *W, const float *b, const float *Z, int n,
                           int k, int m)
{
    int i, j, p;
    for (i = 0; i < n; i++)
        for (j = 0; j < m; j++) {
            double z = b[j], mag = fabs(b[j]);
            for (p = 0; p < k; p++) {
                z += (double)A[(size_t)i * k + p] * W[(size_t)p * m + j];
                mag += fabs((double)A[(size_t)i * k + p] * W[(size_t)p * m + j]);
            }
            if (fabs(Z[(size_t)i * m + j] - z) > 1e-6 * mag + 1e-30)
                return 0;
        }
    return 1;
}

static void test_forward(int n, int k, int m)
{
    float *A = malloc(sizeof(float) * (size_t)n * k), *W = malloc(sizeof(float) * (size_t)k * m);
    float *b = malloc(sizeof(float) * m), *ref = malloc(sizeof(float) * (size_t)n * m);
    float *Z = malloc(sizeof(float) * (size_t)n * m), *part = malloc(sizeof(float) * (size_t)n * m);
    float *row = malloc(sizeof(float) * m), *rpart = malloc(sizeof(float) * m);
    int i, t, ok = 1;
    for (i = 0; i < n * k; i++) A[i] = urand();
    for (i = 0; i < k * m; i++) W[i] = urand();
    for (i = 0; i < m; i++) b[i] = urand();
    forward_reference(A, W, b, n, k, m, ref);
    check(close_to_double(A, W, b, ref, n, k, m), "forward reference close to double", n, k, m);
    for (t = 1; t <= 4; t++) {
        fd_forward(n, k, m, NULL, A, W, m, b, Z, part, t, 1);
        check(same_bits(Z, ref, (size_t)n * m), "forward has the contract's bits", n, k, m);
    }
    for (i = 0; i < n; i++) {  /* each row alone: the bits it has inside the batch */
        fd_forward(1, k, m, NULL, A + (size_t)i * k, W, m, b, row, rpart, 1, 1);
        ok &= same_bits(row, ref + (size_t)i * m, m);
    }
    check(ok, "one row alone has its bits in the batch", n, k, m);
    free(A); free(W); free(b); free(ref); free(Z); free(part); free(row); free(rpart);
}

/* dW = alpha * A^T @ dS + beta * dW (one depth chunk: n <= FD_KC) and dX = dS @ W^T */
static void test_gradients(int n, int k, int m)
{
    const float alpha = -0.125f, beta = 1.0f;
    float *A = malloc(sizeof(float) * (size_t)n * k), *dS = malloc(sizeof(float) * (size_t)n * m);
    float *W = malloc(sizeof(float) * (size_t)k * m), *dW = malloc(sizeof(float) * (size_t)k * m);
    float *ref = malloc(sizeof(float) * (size_t)k * m);
    float *dX = malloc(sizeof(float) * (size_t)n * k), *dX2 = malloc(sizeof(float) * (size_t)n * k);
    float *refx = malloc(sizeof(float) * (size_t)n * k);
    float *scratch = malloc(sizeof(float) * (size_t)m * ((n + 15) / 16 * 16));
    int i, j, p, t, sparse, ok;
    for (i = 0; i < n * k; i++) A[i] = urand();
    for (i = 0; i < n * m; i++) dS[i] = urand();
    for (i = 0; i < k * m; i++) W[i] = urand();
    for (i = 0; i < k; i++)
        for (j = 0; j < m; j++) {
            float acc = 0.0f;
            for (p = 0; p < n; p++)
                acc = fmaf(A[(size_t)p * k + i], dS[(size_t)p * m + j], acc);
            ref[(size_t)i * m + j] = fmaf(beta, W[(size_t)i * m + j], alpha * acc);
        }
    for (sparse = 0; sparse <= 1; sparse++)
        for (t = 1; t <= 4; t++) {
            memcpy(dW, W, sizeof(float) * (size_t)k * m);
            fd_weight_grad(n, k, m, alpha, beta, NULL, A, dS, dW, m, t, sparse);
            check(same_bits(dW, ref, (size_t)k * m), "weight gradient has the contract's bits",
                  n, k, m);
        }
    for (i = 0; i < n; i++)  /* dX(i, j) over depth m, cut at fd_half(k) only along k: one chain */
        for (j = 0; j < k; j++) {
            float acc = 0.0f, c = 0.0f;
            int pc;
            for (pc = 0; pc < m; pc += FD_KC) {
                const int pe = (m - pc < FD_KC) ? m : pc + FD_KC;
                acc = 0.0f;
                for (p = pc; p < pe; p++)
                    acc = fmaf(dS[(size_t)i * m + p], W[(size_t)j * m + p], acc);
                c = (pc == 0) ? 1.0f * acc : fmaf(1.0f, c, 1.0f * acc);
            }
            refx[(size_t)i * k + j] = c;
        }
    ok = 1;
    for (t = 1; t <= 4; t++) {
        fd_input_grad(n, m, k, dS, W, m, dX, t, NULL);
        fd_input_grad(n, m, k, dS, W, m, dX2, t, scratch);
        ok &= same_bits(dX, refx, (size_t)n * k) && same_bits(dX2, refx, (size_t)n * k);
    }
    check(ok, "input gradient (plain and transposed) has the contract's bits", n, k, m);
    free(A); free(dS); free(W); free(dW); free(ref); free(dX); free(dX2); free(refx); free(scratch);
}

static double ulps(float got, double exact)
{
    const float e = (float)exact;
    const float unit = nextafterf(fabsf(e), INFINITY) - fabsf(e);
    return fabs((double)got - exact) / (unit > 0 ? unit : 1e-45);
}

static void test_activations(void)
{
    enum { N = 20001 };
    static float x[N], z[N];
    double worst_s = 0, worst_t = 0, worst_e = 0;
    int i;
    for (i = 0; i < N; i++)
        x[i] = -12.0f + 24.0f * (float)i / (N - 1);
    memcpy(z, x, sizeof x);
    fd_sigmoid(z, N);
    for (i = 0; i < N; i++) {
        const double u = ulps(z[i], 1.0 / (1.0 + exp(-(double)x[i])));
        worst_s = u > worst_s ? u : worst_s;
    }
    memcpy(z, x, sizeof x);
    fd_tanh(z, N);
    for (i = 0; i < N; i++) {
        const double u = ulps(z[i], tanh((double)x[i]));
        worst_t = u > worst_t ? u : worst_t;
    }
    fd_exp_shifted(x, 12.0f, z, N);
    for (i = 0; i < N; i++) {
        const double u = ulps(z[i], exp((double)x[i] - 12.0));
        worst_e = u > worst_e ? u : worst_e;
    }
    check(worst_s <= 3, "sigmoid within 3 ulp", (int)worst_s, 0, 0);
    check(worst_t <= 2, "tanh within 2 ulp", (int)worst_t, 0, 0);
    /* exp(x - 12) down to exp(-24): the reduction's float ln2_lo costs ~0.5 ulp per unit of n */
    check(worst_e <= 32, "exp within 32 ulp", (int)worst_e, 0, 0);
    {
        float s[6] = {-0.0f, INFINITY, -INFINITY, NAN, 100.0f, -100.0f};
        fd_tanh(s, 6);
        check(s[0] == 0 && signbit(s[0]) && s[1] == 1 && s[2] == -1 && isnan(s[3]) && s[4] == 1
              && s[5] == -1, "tanh special values", 0, 0, 0);
        float g[4] = {-200.0f, 200.0f, NAN, -90.0f};
        fd_sigmoid(g, 4);
        check(g[0] == 0 && g[1] == 1 && isnan(g[2]) && g[3] > 0 && g[3] < 1e-38f,
              "sigmoid limits and denormals", 0, 0, 0);
    }
}

/* fd_run: every part runs exactly once, whatever the number of parts and the workers started
 * before (a job of fewer parts than workers leaves the others out). */
typedef struct { atomic_int count[FD_MAX_THREADS]; } fd_count_job;

static void count_part(void *arg, int part)
{
    atomic_fetch_add(&((fd_count_job *)arg)->count[part], 1);
}

static void test_run_parts(void)
{
    static const int sizes[] = {1, 2, 5, 3, 8, 2, 1, 6, 64, 4};
    size_t s;
    int rep, p, ok = 1;
    for (rep = 0; rep < 50; rep++)
        for (s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            fd_count_job j;
            for (p = 0; p < FD_MAX_THREADS; p++)
                atomic_init(&j.count[p], 0);
            fd_run(count_part, &j, sizes[s]);
            for (p = 0; p < FD_MAX_THREADS; p++)
                ok &= atomic_load(&j.count[p]) == (p < sizes[s]);
        }
    check(ok, "fd_run runs each part once", 0, 0, 0);
}

/* On x86 with AVX2: the 8-lane activations and their portable copies give the same bits. */
static void test_activations_avx2_vs_portable(void)
{
    enum { N = 4099 };
    static float x[N], a[3][N], b[3][N];
    const int level = fd_have_avx2_fma();  /* the level the run started with (--avx2 caps it) */
    int i, v;
    for (i = 0; i < N; i++)
        x[i] = (i % 7 == 0) ? -95.0f + (float)i * 0.05f : 40.0f * urand();
    for (v = 0; v < 2; v++) {
        float (*out)[N] = v ? b : a;
        fd_set_simd(v == 0 ? level : 0);
        memcpy(out[0], x, sizeof x);
        fd_sigmoid(out[0], N);
        memcpy(out[1], x, sizeof x);
        fd_tanh(out[1], N);
        fd_exp_shifted(x, 30.0f, out[2], N);
    }
    fd_set_simd(level);
    check(same_bits(a[0], b[0], N) && same_bits(a[1], b[1], N) && same_bits(a[2], b[2], N),
          "activations: the AVX2 and portable bits agree", 0, 0, 0);
}

/* The worker thread must run each job in the caller's floating-point control modes (here
 * flush-to-zero, turned on after the worker started): both parts of a job produce a denormal. */
typedef struct { volatile float in; float out[4]; } fd_ftz_job;

static void ftz_part(void *arg, int part)
{
    fd_ftz_job *j = (fd_ftz_job *)arg;
    j->out[part] = j->in * 1e-30f;
}

static void test_worker_control_modes(void)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__aarch64__))
    fd_ftz_job j;
    const fd_fpmode before = fd_fpmode_get();
#if defined(__x86_64__)
    const fd_fpmode ftz = before | 0x8040u;           /* MXCSR FTZ + DAZ */
#else
    const fd_fpmode ftz = before | ((uint64_t)1 << 24);  /* FPCR.FZ */
#endif
    j.in = 1e-10f;
    fd_run(ftz_part, &j, 4);                         /* starts the workers, modes as before */
    check(j.out[0] > 0 && j.out[1] > 0 && j.out[2] > 0 && j.out[3] > 0,
          "denormals without flush-to-zero", 0, 0, 0);
    fd_fpmode_set(ftz);
    fd_run(ftz_part, &j, 4);
    fd_fpmode_set(before);
    check(j.out[0] == 0 && j.out[1] == 0 && j.out[2] == 0 && j.out[3] == 0,
          "the workers take the caller's flush-to-zero", 0, 0, 0);
#endif
}

/* fd_gemm_packed against its contract, bit for bit: each element one chain of FMAs over the
 * whole depth from zero, then alpha * acc and fma(beta, C, .) (a weight gradient with SGD), or
 * + bias and relu (a forward product), or the gate of a relu's output (an input gradient), for
 * the four transposes, with 1 and 3 threads (rows cut between them); and the column sums of
 * op(B), each over the depth in order from zero, stored or applied as an SGD update. */
static void test_packed(int n, int k, int m)
{
    float *A = malloc(sizeof(float) * n * k), *B = malloc(sizeof(float) * k * m);
    float *C0 = malloc(sizeof(float) * n * m), *C = malloc(sizeof(float) * n * m);
    float *ref = malloc(sizeof(float) * n * m), *bias = malloc(sizeof(float) * m);
    float *gate = malloc(sizeof(float) * n * (m + 3)), *sums = malloc(sizeof(float) * m);
    float *sums0 = malloc(sizeof(float) * m), *sums_ref = malloc(sizeof(float) * m);
    float *work = malloc(sizeof(float) * fd_packed_floats(k, m, 3));
    fd_epilogue eps[3] = {{-0.5f, 1.0f, NULL, 0, sums, 0.25f, NULL, 0, NULL, 0},
                          {1.0f, 0.0f, bias, 1, NULL, 0.0f, NULL, 0, NULL, 0},
                          {1.0f, 0.0f, NULL, 0, sums, 0.0f, gate, m + 3, NULL, 0}};
    int ta, tb, t, i, j, p, v;
    size_t x;
    for (x = 0; x < (size_t)n * k; x++) A[x] = urand();
    for (x = 0; x < (size_t)k * m; x++) B[x] = urand();
    for (x = 0; x < (size_t)n * m; x++) C0[x] = urand();
    for (x = 0; x < (size_t)n * (m + 3); x++) gate[x] = urand();  /* a third exactly zero */
    for (j = 0; j < m; j++) bias[j] = urand();
    for (j = 0; j < m; j++) sums0[j] = urand();
    for (v = 0; v < 3; v++)
        for (ta = 0; ta < 2; ta++)
            for (tb = 0; tb < 2; tb++) {
                const fd_epilogue *e = &eps[v];
                const ptrdiff_t lda = ta ? n : k, ldb = tb ? k : m;
                for (i = 0; i < n; i++)
                    for (j = 0; j < m; j++) {
                        float acc = 0.0f, z;
                        for (p = 0; p < k; p++)
                            acc = fmaf(ta ? A[(size_t)p * n + i] : A[(size_t)i * k + p],
                                       tb ? B[(size_t)j * k + p] : B[(size_t)p * m + j], acc);
                        z = e->alpha * acc;
                        if (e->beta != 0.0f)
                            z = fmaf(e->beta, C0[(size_t)i * m + j], z);
                        if (e->bias != NULL)
                            z = z + e->bias[j];
                        if (e->relu && !(z > 0.0f))
                            z = 0.0f;
                        if (e->gate != NULL && !(e->gate[(size_t)i * e->ldgate + j] > 0.0f))
                            z = 0.0f;
                        ref[(size_t)i * m + j] = z;
                    }
                for (j = 0; j < m; j++) {
                    float s = 0.0f;
                    for (p = 0; p < k; p++)
                        s += tb ? B[(size_t)j * k + p] : B[(size_t)p * m + j];
                    sums_ref[j] = (e->bsum_lr > 0.0f) ? sums0[j] - e->bsum_lr * s : s;
                }
                for (t = 1; t <= 3; t += 2) {
                    memcpy(C, C0, sizeof(float) * n * m);
                    memcpy(sums, sums0, sizeof(float) * m);
                    fd_gemm_packed(n, k, m, ta, A, lda, tb, B, ldb, e, C, m, t, work);
                    check(same_bits(C, ref, (size_t)n * m),
                          "packed GEMM has the contract's bits", n, k, m);
                    check(e->bsum == NULL || same_bits(sums, sums_ref, (size_t)m),
                          "packed GEMM's column sums of op(B) have the contract's bits", n, k, m);
                }
            }
    free(A); free(B); free(C0); free(C); free(ref); free(bias); free(gate); free(sums);
    free(sums0); free(sums_ref); free(work);
}

/* An epilogue's panels: C written as panels for later products (an input gradient's delta, for
 * the layer before's weight and input gradients) is the same C, zero-padded; a product taking
 * them as op(B) or as op(A) (FD_PREPACKED) gives the bits, and the column sums of op(B), of
 * taking C itself; with panels_only C is left alone. And B's panels written by rows
 * (fd_pack_weight_rows) serve as op(B) the same. */
static void test_packed_panels(int n, int k, int m, int k2)
{
    const size_t pf = fd_packed_panel_floats(n, m);
    const int width = (int)(pf / (size_t)n);  /* m rounded up to whole panels */
    const int nr = (m > 16 && fd_have_avx512()) ? 32 : 16;  /* the panels' width */
    float *A = malloc(sizeof(float) * n * k), *B = malloc(sizeof(float) * k * m);
    float *gate = malloc(sizeof(float) * n * m), *C = malloc(sizeof(float) * n * m);
    float *C2 = malloc(sizeof(float) * n * m), *P = malloc(sizeof(float) * pf);
    float *A2 = malloc(sizeof(float) * n * k2), *D = malloc(sizeof(float) * k2 * m);
    float *D2 = malloc(sizeof(float) * k2 * m), *s1 = malloc(sizeof(float) * m);
    float *s2 = malloc(sizeof(float) * m), *B3 = malloc(sizeof(float) * m * k2);
    float *E = malloc(sizeof(float) * n * k2), *E2 = malloc(sizeof(float) * n * k2);
    const size_t w1 = fd_packed_floats(k, m, 3), w2 = fd_packed_floats(n, m, 3) +
                                                     fd_packed_floats(m, k2, 3);
    float *work = malloc(sizeof(float) * (w1 > w2 ? w1 : w2));
    fd_epilogue e = {1.0f, 0.0f, NULL, 0, NULL, 0.0f, gate, m, NULL, 0};
    fd_epilogue sgd = {-0.5f, 1.0f, NULL, 0, NULL, 0.25f, NULL, 0, NULL, 0};
    const fd_epilogue e0 = {1.0f, 0.0f, NULL, 0, NULL, 0.0f, NULL, 0, NULL, 0};
    int t, only, i, j, held, zero_pad;
    size_t x;
    for (x = 0; x < (size_t)n * k; x++) A[x] = urand();
    for (x = 0; x < (size_t)k * m; x++) B[x] = urand();
    for (x = 0; x < (size_t)n * m; x++) gate[x] = urand();
    for (x = 0; x < (size_t)n * k2; x++) A2[x] = urand();
    for (x = 0; x < (size_t)m * k2; x++) B3[x] = urand();
    check(pf % (size_t)n == 0 && width % nr == 0 && width >= m && width < m + nr,
          "the panels are whole panels of n steps", n, k, m);
    fd_gemm_packed(n, k, m, 0, A, k, 0, B, m, &e, C, m, 1, work);  /* C without panels */
    {   /* B's panels written in two pieces of rows (an optimizer's pass), then taken as op(B) */
        float *Pw = malloc(sizeof(float) * fd_packed_panel_floats(k, m));
        fd_pack_weight_rows(B, k, m, 0, k / 2, Pw);
        fd_pack_weight_rows(B, k, m, k / 2, k, Pw);
        fd_gemm_packed(n, k, m, 0, A, k, FD_PREPACKED, Pw, 0, &e, C2, m, 3, work);
        check(same_bits(C, C2, (size_t)n * m), "weights packed by rows give packing's bits", n,
              k, m);
        free(Pw);
    }
    for (t = 1; t <= 3; t += 2)
        for (only = 0; only < 2; only++) {
            for (x = 0; x < (size_t)n * m; x++) C2[x] = -7.0f;
            for (x = 0; x < pf; x++) P[x] = -7.0f;
            e.panels = P;
            e.panels_only = only;
            fd_gemm_packed(n, k, m, 0, A, k, 0, B, m, &e, C2, m, t, work);
            e.panels = NULL;
            e.panels_only = 0;
            if (only) {
                for (x = 0; x < (size_t)n * m && C2[x] == -7.0f; x++) ;
                check(x == (size_t)n * m, "panels_only leaves C alone", n, k, m);
            } else
                check(same_bits(C, C2, (size_t)n * m), "C is the same with panels", n, k, m);
            held = zero_pad = 1;  /* panel q: columns q*nr.., n steps of nr floats */
            for (i = 0; i < n; i++)
                for (j = 0; j < width; j++) {
                    const float v = P[(size_t)(j / nr) * n * nr + (size_t)i * nr + j % nr];
                    if (j < m && memcmp(&v, &C[(size_t)i * m + j], sizeof v) != 0)
                        held = 0;
                    if (j >= m && !(v == 0.0f))
                        zero_pad = 0;
                }
            check(held, "the panels hold C", n, k, m);
            check(zero_pad, "the panels are zero past C's columns", n, k, m);
            /* a weight gradient's shape: D (k2 x m) = A2^T C, with the SGD epilogue and the bias
             * update from C's column sums */
            for (x = 0; x < (size_t)k2 * m; x++) D[x] = D2[x] = (float)(x % 7) - 3.0f;
            for (j = 0; j < m; j++) s1[j] = s2[j] = (float)j;
            sgd.bsum = s1;
            fd_gemm_packed(k2, n, m, 1, A2, k2, 0, C, m, &sgd, D, m, t, work);
            sgd.bsum = s2;
            fd_gemm_packed(k2, n, m, 1, A2, k2, FD_PREPACKED, P, 0, &sgd, D2, m, t, work);
            check(same_bits(D, D2, (size_t)k2 * m), "prepacked panels give packing's bits",
                  k2, n, m);
            check(same_bits(s1, s2, (size_t)m), "prepacked panels give packing's sums", k2, n, m);
            /* an input gradient's shape: E (n x k2) = C B3, C taken as op(A) */
            fd_gemm_packed(n, m, k2, 0, C, m, 0, B3, k2, &e0, E, k2, t, work);
            fd_gemm_packed(n, m, k2, FD_PREPACKED, P, 0, 0, B3, k2, &e0, E2, k2, t, work);
            check(same_bits(E, E2, (size_t)n * k2), "panels as op(A) give packing's bits", n, m,
                  k2);
        }
    free(A); free(B); free(gate); free(C); free(C2); free(P); free(A2); free(D); free(D2);
    free(s1); free(s2); free(B3); free(E); free(E2); free(work);
}

int main(int argc, char **argv)
{
    static const int shapes[][3] = {
        {1, 1, 1}, {1, 5, 3}, {1, 784, 100}, {1, 300, 130}, {3, 7, 16}, {7, 25, 5},
        {8, 64, 17}, {9, 13, 9}, {32, 784, 100}, {33, 100, 20}, {32, 600, 10}, {67, 70, 40},
        {200, 50, 12}, {256, 130, 24},
    };
    size_t s;
    if (argc > 1 && strcmp(argv[1], "--portable") == 0)
        fd_set_simd(0);  /* x86: the portable kernels even where AVX2 is there */
    if (argc > 1 && strcmp(argv[1], "--avx2") == 0)
        fd_set_simd(1);  /* x86: AVX2 even where AVX-512 is there */
    for (s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        test_forward(shapes[s][0], shapes[s][1], shapes[s][2]);
        test_gradients(shapes[s][0], shapes[s][1], shapes[s][2]);
    }
    test_packed(1, 1, 1);
    test_packed(13, 7, 33);
    test_packed(25, 40, 17);
    test_packed(300, 64, 70);
    test_packed(40, 30, 10);  /* at most 16 columns: the 16-column tile on AVX-512 */
    test_packed(29, 50, 16);
    test_packed_panels(37, 20, 70, 45);
    test_packed_panels(50, 9, 10, 13);  /* at most 16 columns */
    test_packed_panels(1, 3, 33, 1);
    test_packed_panels(30, 5, 100, 40);  /* panels of op(A) in several chunks, the last short */
    test_run_parts();
    test_activations();
    if (fd_have_avx2_fma())
        test_activations_avx2_vs_portable();
    test_worker_control_modes();
    printf("kernels: %s\n", fd_have_avx512() ? "avx512" : fd_have_avx2_fma() ? "avx2" : "portable");
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
