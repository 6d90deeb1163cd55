/* The packed GEMM: the training products of large batches (fd_packed.h).
 *
 * The own tiles (fd_gemm.c) read A through row pointers and B in place, which suits the small
 * products of small batches; on a batch of 1024 rows, their weight-gradient units stream the
 * whole delta from memory once each. Here, as in BLIS and OpenBLAS, the operands are copied into
 * the micro-kernel's order first: op(B) into panels of NR columns (depth-major, NR floats a step),
 * shared by the threads, and op(A), per thread, into micro-panels of MR rows (MR floats a step),
 * FD_PACK_MC rows at a time so that a thread's block of it stays in its L2 while the panels of B
 * pass. The kernels prefetch both 16 steps ahead. Measured in a standalone harness on Emerald
 * Rapids, one thread, 1020 x 1024 x 1024 with the packing: 217 GFLOP/s without the prefetch,
 * 227 with it (92% of the core's FMA peak).
 *
 * The whole depth runs in one pass (no depth blocking): each element is one chain of FMAs from
 * zero, then alpha and beta as the tiles round (and the bias and relu a forward product may ask
 * for, in the registers rather than in a pass over the output), so the result is the same
 * whatever the geometry (12 x 32 on AVX-512, 12 x 16 there for products of at most 16 columns,
 * 6 x 16 on AVX2 and in portable C), the row cut between threads, or the zero padding of the edge
 * panels (never stored). */
#include "fd_packed.h"
#include "fd_threads.h"

#define FD_PF 16  /* prefetch distance, in steps of the depth */

/* ---- packing ------------------------------------------------------------------------------ */

/* k steps of w floats, ld apart at src, into steps of `width` floats at dst, zero past w. Plain
 * loops, not memcpy: a call per 48- to 128-byte step cost 5% of a product. */
static void fd_copy_steps(const float *src, ptrdiff_t ld, int k, int w, int width, float *dst)
{
    int p, j;
    for (p = 0; p < k; p++) {
        const float *s = src + (ptrdiff_t)p * ld;
        float *d = dst + (ptrdiff_t)p * width;
        if (w == width)
            for (j = 0; j < width; j++)
                d[j] = s[j];
        else
            for (j = 0; j < width; j++)
                d[j] = (j < w) ? s[j] : 0.0f;
    }
}

#if FD_X86
/* How many of a group's `lanes` lanes, the first at `start`, fall below n. */
static inline int fd_group_lanes(int n, int start, int lanes)
{
    return (n - start < 0) ? 0 : (n - start > lanes) ? lanes : n - start;
}

/* fd_pack_rows's gathers: each step's `width` floats as groups of 16 lanes (AVX-512) or 8 (AVX2),
 * one gather a group; a scalar transposition cost 6% of a product. Lane offsets are 32-bit
 * (checked by the caller). */
static FD_AVX512_NOINLINE void fd_pack_rows_512(const float *src, ptrdiff_t ld, int k, int rows,
                                                int width, float *dst)
{
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                             11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)ld));
    int p, g;
    for (g = 0; g * 16 < width; g++) {
        const int in = fd_group_lanes(rows, 16 * g, 16), out = fd_group_lanes(width, 16 * g, 16);
        const __mmask16 taken = (__mmask16)((1u << in) - 1u);   /* lanes read */
        const __mmask16 kept = (__mmask16)((1u << out) - 1u);   /* lanes stored */
        const float *s = src + (ptrdiff_t)16 * g * (in > 0 ? ld : 0);  /* (no row: not read) */
        for (p = 0; p < k; p++)
            _mm512_mask_storeu_ps(dst + (ptrdiff_t)p * width + 16 * g, kept,
                                  _mm512_mask_i32gather_ps(_mm512_setzero_ps(), taken, idx, s + p,
                                                           4));
    }
}

static FD_AVX2_NOINLINE void fd_pack_rows_avx2(const float *src, ptrdiff_t ld, int k, int rows,
                                               int width, float *dst)
{
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32((int)ld));
    int p, g;
    for (g = 0; g * 8 < width; g++) {
        const int in = fd_group_lanes(rows, 8 * g, 8), out = fd_group_lanes(width, 8 * g, 8);
        const __m256i taken = fd_tail_mask(in), kept = fd_tail_mask(out);  /* read, stored */
        const float *s = src + (ptrdiff_t)8 * g * (in > 0 ? ld : 0);  /* (no row: not read) */
        for (p = 0; p < k; p++)
            _mm256_maskstore_ps(dst + (ptrdiff_t)p * width + 8 * g, kept,
                                _mm256_mask_i32gather_ps(_mm256_setzero_ps(), s + p, idx,
                                                         _mm256_castsi256_ps(taken), 4));
    }
}
#endif

/* `rows` rows of k floats, ld apart at src, transposed into k steps of `width` floats at dst,
 * zero past `rows`: op(A) = A into a micro-panel, op(B) = B^T into a panel. */
static void fd_pack_rows(const float *src, ptrdiff_t ld, int k, int rows, int width, float *dst)
{
    int p0, pp, r;
#if FD_X86
    if (fd_have_avx512() && (ptrdiff_t)15 * ld < (1LL << 31)) {
        fd_pack_rows_512(src, ld, k, rows, width, dst);
        return;
    }
    if (fd_have_avx2_fma() && (ptrdiff_t)7 * ld < (1LL << 31)) {
        fd_pack_rows_avx2(src, ld, k, rows, width, dst);
        return;
    }
#endif
    /* 16 steps at a time, so that the rows read and the steps written stay in L1 (a whole row
     * at a time wrote a new line each float) */
    for (p0 = 0; p0 < k; p0 += 16) {
        const int pn = (k - p0 < 16) ? k - p0 : 16;
        for (r = 0; r < width; r++)
            for (pp = 0; pp < pn; pp++)
                dst[(ptrdiff_t)(p0 + pp) * width + r] =
                    (r < rows) ? src[(ptrdiff_t)r * ld + p0 + pp] : 0.0f;
    }
}

/* The first w column sums of a packed panel (k steps of nr floats), each over the steps in order
 * from zero, into out (lr == 0) or applied as out[j] -= lr * sum (fd_epilogue's bsum). */
static void fd_panel_sums(const float *panel, int k, int w, int nr, float lr, float *out)
{
    float s[32];
    int p, j;
    for (j = 0; j < nr; j++)
        s[j] = 0.0f;
    for (p = 0; p < k; p++)
        for (j = 0; j < nr; j++)
            s[j] += panel[(ptrdiff_t)p * nr + j];
    for (j = 0; j < w; j++)
        out[j] = (lr > 0.0f) ? out[j] - lr * s[j] : s[j];
}

/* Panel q of op(B) (k x m) into Bp: columns q*nr .. q*nr+nr-1 as k rows of nr floats, columns
 * past m zero; then its columns' sums when e asks for them. */
static void fd_pack_b(int tb, const float *B, ptrdiff_t ldb, int k, int m, int nr, int q,
                      const fd_epilogue *e, float *Bp)
{
    const int j0 = q * nr, w = (m - j0 < nr) ? m - j0 : nr;
    float *dst = Bp + (ptrdiff_t)q * k * nr;
    if (tb == 0)
        fd_copy_steps(B + j0, ldb, k, w, nr, dst);
    else if (tb == 1)
        fd_pack_rows(B + (ptrdiff_t)j0 * ldb, ldb, k, w, nr, dst);
    /* (FD_PREPACKED: the panel is there already; Bp is B) */
    if (e->bsum != NULL)
        fd_panel_sums(dst, k, w, nr, e->bsum_lr, e->bsum + j0);
}

static int fd_packed_nr(int m);

/* Rows i0 .. i0+rows-1 of op(A) (n x k) into one micro-panel Ap: k steps of mr floats, rows past
 * `rows` zero. */
static void fd_pack_a(int ta, const float *A, ptrdiff_t lda, int n, int k, int i0, int rows,
                      int mr, float *Ap)
{
    int p0, nra;
    if (ta == 0)
        fd_pack_rows(A + (ptrdiff_t)i0 * lda, lda, k, rows, mr, Ap);
    else if (ta == 1)
        fd_copy_steps(A + i0, lda, k, rows, mr, Ap);
    else  /* FD_PREPACKED: A's panels of nra columns, each n rows of nra floats */
        for (p0 = 0, nra = fd_packed_nr(k); p0 < k; p0 += nra)
            fd_pack_rows(A + (ptrdiff_t)p0 * n + (ptrdiff_t)i0 * nra, nra,
                         (k - p0 < nra) ? k - p0 : nra, rows, mr, Ap + (ptrdiff_t)p0 * mr);
}

/* ---- micro-kernels: C[0:rows, 0:cols] := epilogue(A B) over a depth of k -------------------
 * A is a micro-panel, MR floats a step and its steps `as` floats apart (MR when packed; A's lda
 * when op(A) = A^T is read in place), B a panel (NR floats a step); rows of the micro-panel past
 * `rows` and columns past `cols` are computed (from zeros) but not stored. b, g: the tile's
 * columns of the epilogue's bias, its tile of the gate (NULL: none). P: where the tile's rows go
 * in the epilogue's panels (nr floats a row, zero past `cols`), or NULL; C is not written when
 * the epilogue says panels_only. */

typedef void (*fd_packed_kernel)(int k, const float *Ap, ptrdiff_t as, const float *Bp,
                                 float *C, ptrdiff_t ldc, int rows, int cols,
                                 const fd_epilogue *e, const float *b, const float *g, float *P);

/* portable C, 6 x 16 (GCC vectorises the column loop into the target's FMA instructions) */
static void fd_packed_c(int k, const float *Ap, ptrdiff_t as, const float *Bp, float *C,
                        ptrdiff_t ldc, int rows, int cols, const fd_epilogue *e, const float *b,
                        const float *g, float *P)
{
    float acc[6][16];
    int p, r, j;
    for (r = 0; r < 6; r++)
        for (j = 0; j < 16; j++)
            acc[r][j] = 0.0f;
    for (p = 0; p < k; p++) {
        const float *b = Bp + (ptrdiff_t)p * 16;
        for (r = 0; r < 6; r++) {
            const float av = Ap[(ptrdiff_t)p * as + r];
            for (j = 0; j < 16; j++)
                acc[r][j] = fmaf(av, b[j], acc[r][j]);
        }
    }
    for (r = 0; r < rows; r++) {
        float *cr = e->panels_only ? NULL : C + (ptrdiff_t)r * ldc;
        for (j = 0; j < 16; j++) {
            float v = 0.0f;
            if (j < cols) {
                v = e->alpha * acc[r][j];
                if (e->beta != 0.0f)
                    v = fmaf(e->beta, C[(ptrdiff_t)r * ldc + j], v);
                if (b != NULL)
                    v = v + b[j];
                if (e->relu && !(v > 0.0f))
                    v = 0.0f;
                if (g != NULL && !(g[(ptrdiff_t)r * e->ldgate + j] > 0.0f))
                    v = 0.0f;
                if (cr != NULL)
                    cr[j] = v;
            }
            if (P != NULL)
                P[(ptrdiff_t)r * 16 + j] = v;
        }
    }
}

#if FD_X86
/* AVX2 and FMA, 6 x 16: twelve accumulators, two loads of B and six broadcasts a step. The
 * accumulators are named variables: as an array indexed by the run-time row count of the stores,
 * GCC kept them in memory and stored all twelve every step (35% slower). */
static FD_AVX2_NOINLINE void fd_packed_avx2(int k, const float *Ap, ptrdiff_t as,
                                            const float *Bp, float *C, ptrdiff_t ldc, int rows,
                                            int cols, const fd_epilogue *e, const float *b,
                                            const float *g, float *P)
{
    __m256 t[12];
    const int n0 = (cols < 8) ? cols : 8, n1 = (cols > 8) ? cols - 8 : 0;
    const __m256i k0 = fd_tail_mask(n0), k1 = fd_tail_mask(n1);
    const __m256 va = _mm256_set1_ps(e->alpha), vb = _mm256_set1_ps(e->beta);
    const __m256 zero = _mm256_setzero_ps();
    const __m256 bias0 = b ? fd_load_group(b, n0, k0) : zero;
    const __m256 bias1 = (b && n1 > 0) ? fd_load_group(b + 8, n1, k1) : zero;
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    ptrdiff_t p;
    int r;
    for (r = 0; r < rows; r++) {  /* C's lines on their way while the sum runs (fd_packed_512) */
        const float *out = e->panels_only ? P + (ptrdiff_t)r * 16 : C + (ptrdiff_t)r * ldc;
        _mm_prefetch((const char *)out, _MM_HINT_T0);
        _mm_prefetch((const char *)(out + 15), _MM_HINT_T0);
    }
    for (p = 0; p < k; p++) {
        const float *a = Ap + p * as;
        const __m256 b0 = _mm256_loadu_ps(Bp + p * 16), b1 = _mm256_loadu_ps(Bp + p * 16 + 8);
        __m256 av;
        _mm_prefetch((const char *)(Bp + (p + FD_PF) * 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(Ap + (p + FD_PF) * as), _MM_HINT_T0);
#define FD_ROW(i) av = _mm256_broadcast_ss(a + i);                                            \
                  c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0);                                  \
                  c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);
        FD_ROW(0) FD_ROW(1) FD_ROW(2) FD_ROW(3) FD_ROW(4) FD_ROW(5)
#undef FD_ROW
    }
    t[0] = c00; t[1] = c01; t[2] = c10; t[3] = c11; t[4] = c20; t[5] = c21;
    t[6] = c30; t[7] = c31; t[8] = c40; t[9] = c41; t[10] = c50; t[11] = c51;
    for (r = 0; r < rows; r++) {
        float *cr = e->panels_only ? NULL : C + (ptrdiff_t)r * ldc;
        __m256 v0 = _mm256_mul_ps(va, t[2 * r]), v1 = _mm256_mul_ps(va, t[2 * r + 1]);
        if (e->beta != 0.0f) {
            v0 = _mm256_fmadd_ps(vb, fd_load_group(cr, n0, k0), v0);
            if (n1 > 0)
                v1 = _mm256_fmadd_ps(vb, fd_load_group(cr + 8, n1, k1), v1);
        }
        if (b != NULL) {
            v0 = _mm256_add_ps(v0, bias0);
            v1 = _mm256_add_ps(v1, bias1);
        }
        if (e->relu) {  /* (max returns its second operand for NaN and for zeros) */
            v0 = _mm256_max_ps(v0, zero);
            v1 = _mm256_max_ps(v1, zero);
        }
        if (g != NULL) {
            const float *gr = g + (ptrdiff_t)r * e->ldgate;
            v0 = _mm256_and_ps(_mm256_cmp_ps(fd_load_group(gr, n0, k0), zero, _CMP_GT_OQ), v0);
            if (n1 > 0)
                v1 = _mm256_and_ps(_mm256_cmp_ps(fd_load_group(gr + 8, n1, k1), zero,
                                                 _CMP_GT_OQ), v1);
        }
        if (!e->panels_only) {
            fd_store_group(cr, n0, k0, v0);
            if (n1 > 0)
                fd_store_group(cr + 8, n1, k1, v1);
        }
        if (P != NULL) {  /* the whole panel row, zero past cols */
            _mm256_storeu_ps(P + (ptrdiff_t)r * 16, _mm256_and_ps(v0, _mm256_castsi256_ps(k0)));
            _mm256_storeu_ps(P + (ptrdiff_t)r * 16 + 8,
                             _mm256_and_ps(v1, _mm256_castsi256_ps(k1)));
        }
    }
}

/* AVX-512, 12 x 16h (h = 1 or 2 halves of 16 columns): 12h accumulators, h loads of B and
 * twelve broadcasts a step (32 vector registers hold them: GCC keeps the array in registers
 * here). Inlined into one function per width, so that h is a constant there. */
static FD_AVX512_INLINE void fd_packed_512_tile(const int h, int k, const float *Ap, ptrdiff_t as,
                                                const float *Bp, float *C, ptrdiff_t ldc,
                                                int rows, int cols, const fd_epilogue *e,
                                                const float *b, const float *g, float *P)
{
    __m512 c[24], t[24];
    const int nr = 16 * h;
    const int n0 = (cols < 16) ? cols : 16, n1 = (cols > 16) ? cols - 16 : 0;
    const __mmask16 k0 = (__mmask16)((n0 >= 16) ? 0xFFFFu : ((1u << n0) - 1u));
    const __mmask16 k1 = (__mmask16)((n1 >= 16) ? 0xFFFFu : ((1u << n1) - 1u));
    const __m512 va = _mm512_set1_ps(e->alpha), vb = _mm512_set1_ps(e->beta);
    const __m512 zero = _mm512_setzero_ps();
    const __m512 bias0 = b ? _mm512_maskz_loadu_ps(k0, b) : zero;
    const __m512 bias1 = (b && n1 > 0) ? _mm512_maskz_loadu_ps(k1, b + 16) : zero;
    ptrdiff_t p;
    int r, s;
    for (r = 0; r < 12 * h; r++)
        c[r] = _mm512_setzero_ps();
    for (r = 0; r < rows; r++) {  /* C's lines on their way while the sum runs: the stores
                                   * missed in cache (784-1024-1024-10's products at batch 1024,
                                   * two threads: 2% faster, a product of depth 10 a third) */
        const float *out = e->panels_only ? P + (ptrdiff_t)r * nr : C + (ptrdiff_t)r * ldc;
        _mm_prefetch((const char *)out, _MM_HINT_T0);
        if (h == 2)
            _mm_prefetch((const char *)(out + 16), _MM_HINT_T0);
    }
    for (p = 0; p < k; p++) {
        const __m512 b0 = _mm512_loadu_ps(Bp + p * nr);
        const __m512 b1 = (h == 2) ? _mm512_loadu_ps(Bp + p * nr + 16) : zero;
        for (s = 0; s < h; s++)
            _mm_prefetch((const char *)(Bp + (p + FD_PF) * nr + 16 * s), _MM_HINT_T0);
        _mm_prefetch((const char *)(Ap + (p + FD_PF) * as), _MM_HINT_T0);
        for (r = 0; r < 12; r++) {
            const __m512 av = _mm512_set1_ps(Ap[p * as + r]);
            c[h * r] = _mm512_fmadd_ps(av, b0, c[h * r]);
            if (h == 2)
                c[h * r + 1] = _mm512_fmadd_ps(av, b1, c[h * r + 1]);
        }
    }
    for (r = 0; r < 12 * h; r++)  /* (copied out for the run-time row count: fd_packed_avx2) */
        t[r] = c[r];
    for (r = 0; r < rows; r++) {
        float *cr = e->panels_only ? NULL : C + (ptrdiff_t)r * ldc;
        __m512 v0 = _mm512_mul_ps(va, t[h * r]), v1 = (h == 2) ? _mm512_mul_ps(va, t[h * r + 1])
                                                               : zero;
        if (e->beta != 0.0f) {
            v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k0, cr), v0);
            if (n1 > 0)
                v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k1, cr + 16), v1);
        }
        if (b != NULL) {
            v0 = _mm512_add_ps(v0, bias0);
            v1 = _mm512_add_ps(v1, bias1);
        }
        if (e->relu) {  /* (max returns its second operand for NaN and for zeros) */
            v0 = _mm512_max_ps(v0, zero);
            v1 = _mm512_max_ps(v1, zero);
        }
        if (g != NULL) {
            const float *gr = g + (ptrdiff_t)r * e->ldgate;
            v0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(k0, gr), zero,
                                                        _CMP_GT_OQ), v0);
            if (n1 > 0)
                v1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(k1, gr + 16),
                                                            zero, _CMP_GT_OQ), v1);
        }
        if (!e->panels_only) {
            _mm512_mask_storeu_ps(cr, k0, v0);
            if (n1 > 0)
                _mm512_mask_storeu_ps(cr + 16, k1, v1);
        }
        if (P != NULL) {  /* the whole panel row, zero past cols */
            _mm512_storeu_ps(P + (ptrdiff_t)r * nr, _mm512_maskz_mov_ps(k0, v0));
            if (h == 2)
                _mm512_storeu_ps(P + (ptrdiff_t)r * nr + 16, _mm512_maskz_mov_ps(k1, v1));
        }
    }
}

static FD_AVX512_NOINLINE void fd_packed_512(int k, const float *Ap, ptrdiff_t as,
                                             const float *Bp, float *C, ptrdiff_t ldc, int rows,
                                             int cols, const fd_epilogue *e, const float *b,
                                             const float *g, float *P)
{
    fd_packed_512_tile(2, k, Ap, as, Bp, C, ldc, rows, cols, e, b, g, P);
}

/* 12 x 16, for products of at most 16 columns (an output layer's): the 32-column tile would
 * spend most of its multiply-adds on the zero padding */
static FD_AVX512_NOINLINE void fd_packed_512_16(int k, const float *Ap, ptrdiff_t as,
                                                const float *Bp, float *C, ptrdiff_t ldc,
                                                int rows, int cols, const fd_epilogue *e,
                                                const float *b, const float *g, float *P)
{
    fd_packed_512_tile(1, k, Ap, as, Bp, C, ldc, rows, cols, e, b, g, P);
}
#endif

/* ---- the product, cut between threads -------------------------------------------------------- */

typedef struct {
    int n, k, m, ta, tb, mr, nr, parts, panels;
    const float *A, *B;
    ptrdiff_t lda, ldb, ldc;
    fd_epilogue e;
    float *C, *Bp, *Ap;     /* Ap: part p's block of A at Ap + p * FD_PACK_MC * k */
    fd_packed_kernel kernel;
    struct { fd_counter next; char pad[60]; } range[FD_MAX_THREADS];  /* next block, per part */
    fd_counter pack_next;   /* the next panel of B to pack */
    char pad[60];
    atomic_int packed;      /* panels packed */
} fd_packed_job;

/* Packs the panels of B that no part has taken yet, then waits until every panel is packed. A
 * part only waits for panels that running parts took (a part takes panels until none is left
 * before it waits), so it cannot wait on a part that has not started (fd_run may run parts one
 * after another on the caller). One job with this wait instead of two jobs: one hand-off less
 * per product, and the panels shared as the parts come. */
static void fd_packed_pack_b(fd_packed_job *j)
{
    int q, spins = 0;
    while ((q = fd_counter_next(&j->pack_next)) < j->panels) {
        fd_pack_b(j->tb, j->B, j->ldb, j->k, j->m, j->nr, q, &j->e, j->Bp);
        atomic_fetch_add_explicit(&j->packed, 1, memory_order_release);
    }
    while (atomic_load_explicit(&j->packed, memory_order_acquire) < j->panels)
        fd_wait_step(&spins);
}

/* Rows [i0, i1) of C: their rows of op(A) packed into Ap (in L2 while the panels of B pass; read
 * in place through row pointers instead, rows 4 KiB apart thrashed L1: 10% slower), then every
 * panel of B over them. */
static void fd_packed_block(const fd_packed_job *j, int i0, int i1, float *Ap)
{
    const int mr = j->mr;
    /* op(A) = A^T read in place where a full micro-panel's steps are already contiguous (mr
     * floats of a row of A, lda apart) and a single panel of B would use a packed copy once (an
     * output layer's weight gradient); the last, short micro-panel is packed (reading it in place
     * would run past A's rows) */
    const int in_place = (j->ta == 1 && j->panels == 1);
    int i, q;
    for (i = i0; i < i1; i += mr)
        if (!in_place || i1 - i < mr)
            fd_pack_a(j->ta, j->A, j->lda, j->n, j->k, i, (i1 - i < mr) ? i1 - i : mr, mr,
                      Ap + (ptrdiff_t)(i - i0) * j->k);
    for (q = 0; q < j->panels; q++) {
        const float *Bq = j->Bp + (ptrdiff_t)q * j->k * j->nr;
        const int cols = (j->m - q * j->nr < j->nr) ? j->m - q * j->nr : j->nr;
        /* panel q of the output's panels: n steps of nr floats */
        float *Pq = j->e.panels ? j->e.panels + (ptrdiff_t)q * j->n * j->nr : NULL;
        for (i = i0; i < i1; i += mr) {
            const int direct = in_place && i1 - i >= mr;
            j->kernel(j->k, direct ? j->A + i : Ap + (ptrdiff_t)(i - i0) * j->k,
                      direct ? j->lda : mr, Bq,
                      j->C ? j->C + (ptrdiff_t)i * j->ldc + (ptrdiff_t)q * j->nr : NULL, j->ldc,
                      (i1 - i < mr) ? i1 - i : mr, cols, &j->e,
                      j->e.bias ? j->e.bias + q * j->nr : NULL,
                      j->e.gate ? j->e.gate + (ptrdiff_t)i * j->e.ldgate + q * j->nr : NULL,
                      Pq ? Pq + (ptrdiff_t)i * j->nr : NULL);
        }
    }
}

/* Part r's range of rows: the micro-panels cut evenly between the parts. */
static void fd_packed_range(const fd_packed_job *j, int r, int *i0, int *i1)
{
    const int units = (j->n + j->mr - 1) / j->mr;
    *i0 = units * r / j->parts * j->mr;
    *i1 = units * (r + 1) / j->parts * j->mr;
    if (*i1 > j->n)
        *i1 = j->n;
}

/* A part helps pack B, then takes the blocks of its own range of rows, then helps with the
 * others' (a core of a shared machine often runs slower than its sibling, and an even split
 * would make the other wait). */
static void fd_packed_part(void *arg, int part)
{
    fd_packed_job *j = (fd_packed_job *)arg;
    float *Ap = j->Ap + (ptrdiff_t)part * FD_PACK_MC * j->k;
    int t, r, b, i0, i1;
    fd_packed_pack_b(j);
    for (t = 0; t < j->parts; t++) {
        r = (part + t) % j->parts;
        fd_packed_range(j, r, &i0, &i1);
        while ((b = fd_counter_next(&j->range[r].next)) * FD_PACK_MC < i1 - i0)
            fd_packed_block(j, i0 + b * FD_PACK_MC,
                            (i1 - i0 - b * FD_PACK_MC < FD_PACK_MC) ? i1
                                                                    : i0 + (b + 1) * FD_PACK_MC,
                            Ap);
    }
}

/* The panels' width (and the tile's) for a product of m columns: 32 on AVX-512 (16 for at most
 * 16 columns), 16 on AVX2 and in portable C. */
static int fd_packed_nr(int m)
{
#if FD_X86
    if (fd_have_avx512())
        return (m <= 16) ? 16 : 32;
#endif
    (void)m;
    return 16;
}

size_t fd_packed_panel_floats(int k, int m)
{
    const int nr = fd_packed_nr(m);
    return (size_t)(m + nr - 1) / (size_t)nr * (size_t)nr * (size_t)k;
}

void fd_pack_weight_rows(const float *W, int k, int m, int r0, int r1, float *panels)
{
    const int nr = fd_packed_nr(m);
    int j0;
    for (j0 = 0; j0 < m; j0 += nr)
        fd_copy_steps(W + (ptrdiff_t)r0 * m + j0, m, r1 - r0, (m - j0 < nr) ? m - j0 : nr, nr,
                      panels + (ptrdiff_t)j0 * k + (ptrdiff_t)r0 * nr);
}

size_t fd_packed_floats(int k, int m, int threads)
{
    /* the widest geometry's panels (32 columns), a block of A per thread, 64-byte alignment */
    return ((size_t)(m + 31) / 32 * 32 + (size_t)threads * FD_PACK_MC) * (size_t)k + 16;
}

void fd_gemm_packed(int n, int k, int m, int ta, const float *A, ptrdiff_t lda, int tb,
                    const float *B, ptrdiff_t ldb, const fd_epilogue *e, float *C,
                    ptrdiff_t ldc, int threads, float *work)
{
    fd_packed_job j;
    float *w = (float *)(((uintptr_t)work + 63) & ~(uintptr_t)63);
    int units, r;
    j.mr = 6; j.nr = fd_packed_nr(m); j.kernel = fd_packed_c;
#if FD_X86
    if (fd_have_avx512()) {
        j.mr = 12;
        j.kernel = (m <= 16) ? fd_packed_512_16 : fd_packed_512;
    } else if (fd_have_avx2_fma())
        j.kernel = fd_packed_avx2;
#endif
    j.n = n; j.k = k; j.m = m; j.ta = ta; j.tb = tb; j.A = A; j.B = B;
    j.lda = lda; j.ldb = ldb; j.ldc = ldc; j.e = *e; j.C = C;
    j.panels = (m + j.nr - 1) / j.nr;
    j.Bp = (tb == FD_PREPACKED) ? (float *)B : w;
    j.Ap = w + (size_t)j.panels * j.nr * k;
    units = (n + j.mr - 1) / j.mr;
    /* a part under 2^19 multiply-adds costs more in hand-offs than it saves */
    j.parts = threads;
    if ((long long)n * k * m < (1LL << 19) * (long long)threads)
        j.parts = (int)((long long)n * k * m >> 19);
    if (j.parts > units)
        j.parts = units;
    if (j.parts < 1)
        j.parts = 1;
    for (r = 0; r < j.parts; r++)
        fd_counter_set(&j.range[r].next, 0);
    fd_counter_set(&j.pack_next, 0);
    atomic_init(&j.packed, 0);
    if (j.parts == 1)
        fd_packed_part(&j, 0);
    else
        fd_run(fd_packed_part, &j, j.parts);
}
