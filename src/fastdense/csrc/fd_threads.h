/* The worker threads: the floating-point modes handed to workers, the pool's entry point (fd_run,
 * defined with the pool in fd_threads.c), the spin-wait hint and shared counters. */
#ifndef FASTDENSE_FD_THREADS_H
#define FASTDENSE_FD_THREADS_H

#include "fd_cpu.h"

#include <stdatomic.h>

/* The floating-point control modes (rounding, flush-to-zero, denormals-are-zero) of the calling
 * thread, to be given to the worker with each job: x86-64's MXCSR control bits (its low six bits
 * are sticky exception flags, left alone), aarch64's FPCR. Elsewhere nothing is copied (see
 * docs/design.md's platform table). */
#if (defined(__GNUC__) && defined(__x86_64__)) || defined(_M_X64)
#include <xmmintrin.h>
typedef unsigned fd_fpmode;
static inline fd_fpmode fd_fpmode_get(void) { return _mm_getcsr() & ~0x3Fu; }
static inline void fd_fpmode_set(fd_fpmode m)
{
    if ((_mm_getcsr() & ~0x3Fu) != m)
        _mm_setcsr((_mm_getcsr() & 0x3Fu) | m);
}
#elif defined(__GNUC__) && defined(__aarch64__)
typedef uint64_t fd_fpmode;
static inline fd_fpmode fd_fpmode_get(void)
{
    uint64_t v;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
    return v;
}
static inline void fd_fpmode_set(fd_fpmode m)
{
    if (fd_fpmode_get() != m)
        __asm__ __volatile__("msr fpcr, %0" : : "r"(m));
}
#else
typedef unsigned fd_fpmode;
static inline fd_fpmode fd_fpmode_get(void) { return 0; }
static inline void fd_fpmode_set(fd_fpmode m) { (void)m; }
#endif

#define FD_MAX_THREADS 64  /* the caller plus up to 63 workers */

typedef void (*fd_task_fn)(void *arg, int part);

/* Runs fn(arg, p) for p = 0 .. nparts-1, part 0 on the calling thread and the others on the
 * workers; returns when all are done. Parts without a thread (the pool busy with another
 * caller's job, or workers that could not be started) run on the caller, after part 0. A part's
 * work must not depend on the thread that runs it (see fd_threads.c). */
FD_HIDDEN void fd_run(fd_task_fn fn, void *arg, int nparts);

/* The pause in a spin-wait loop (inline: it runs once per iteration). */
static inline void fd_cpu_relax(void)
{
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__ __volatile__("yield");
#elif defined(_M_X64)
    _mm_pause();
#endif
}

/* One step of a wait for other threads: the spin-wait pause, and every 4096 steps a yield of
 * the core (a thread waited for may have lost its core to another process: let it run).
 * *spins: the caller's step count, zero at the start of the wait. */
FD_HIDDEN void fd_wait_step(int *spins);

/* A counter threads take work items from (whole inference batches: see _kernels.pyx). */
typedef struct { atomic_int v; } fd_counter;

static inline void fd_counter_set(fd_counter *c, int v) { atomic_store(&c->v, v); }

static inline int fd_counter_next(fd_counter *c)
{
    return atomic_fetch_add_explicit(&c->v, 1, memory_order_relaxed);
}

#endif /* FASTDENSE_FD_THREADS_H */
