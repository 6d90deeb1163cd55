/* The worker pool behind fd_run (see fd_threads.h): its only copy of the pool's state. */
#include "fd_threads.h"

/* The few thread primitives the pool needs: POSIX threads, or Win32's (slim reader/writer locks,
 * condition variables, _beginthreadex) on Windows, where MinGW-w64 compiles this file in CI's
 * cross-compile check and MSVC needs C11 atomics (/experimental:c11atomics, untested here). */
#if defined(_WIN32)
#include <windows.h>
#include <process.h>
typedef SRWLOCK fd_mutex;
typedef CONDITION_VARIABLE fd_cond;
#define FD_MUTEX_INIT SRWLOCK_INIT
#define FD_COND_INIT CONDITION_VARIABLE_INIT
static inline void fd_mutex_lock(fd_mutex *m) { AcquireSRWLockExclusive(m); }
static inline int fd_mutex_trylock(fd_mutex *m) { return TryAcquireSRWLockExclusive(m) != 0; }
static inline void fd_mutex_unlock(fd_mutex *m) { ReleaseSRWLockExclusive(m); }
static inline void fd_cond_wait(fd_cond *c, fd_mutex *m) { SleepConditionVariableSRW(c, m, INFINITE, 0); }
static inline void fd_cond_broadcast(fd_cond *c) { WakeAllConditionVariable(c); }
static inline void fd_yield(void) { SwitchToThread(); }
static double fd_now(void)
{
    LARGE_INTEGER f, t;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&t);
    return (double)t.QuadPart / (double)f.QuadPart;
}
#else
#include <pthread.h>
#include <sched.h>
#include <time.h>
typedef pthread_mutex_t fd_mutex;
typedef pthread_cond_t fd_cond;
#define FD_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define FD_COND_INIT PTHREAD_COND_INITIALIZER
static inline void fd_mutex_lock(fd_mutex *m) { pthread_mutex_lock(m); }
static inline int fd_mutex_trylock(fd_mutex *m) { return pthread_mutex_trylock(m) == 0; }
static inline void fd_mutex_unlock(fd_mutex *m) { pthread_mutex_unlock(m); }
static inline void fd_cond_wait(fd_cond *c, fd_mutex *m) { pthread_cond_wait(c, m); }
static inline void fd_cond_broadcast(fd_cond *c) { pthread_cond_broadcast(c); }
static inline void fd_yield(void) { sched_yield(); }
static double fd_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
#endif

#define FD_SPIN_SECONDS 2e-3

/* ------------------------------------------------------------------------------------------------
 * The worker threads. A job is fn(arg, part) for part = 0 .. nparts-1: part 0 on the caller,
 * part p on worker p (started on first use, at most FD_MAX_THREADS - 1 of them). A part's work
 * never depends on which thread runs it (the jobs take units from shared counters, or fixed
 * blocks), so one thread running every part gives the same results. After a job a worker that
 * took part spins for up to FD_SPIN_SECONDS waiting for the next one (a training step issues a
 * job every few tens of microseconds, far less than a futex wake-up costs), then sleeps on a
 * condition variable; a worker left out of a job goes back to sleep at once, so an idle process,
 * or one running on fewer threads than it started, does not keep cores busy. One job at a time:
 * a caller that finds the pool busy (another Python thread training) runs every part itself.
 * After fork() the child starts new workers.
 * ------------------------------------------------------------------------------------------------ */

static fd_mutex fd_pool_lock = FD_MUTEX_INIT;
static fd_mutex fd_pool_sleep_lock = FD_MUTEX_INIT;
static fd_cond fd_pool_wake = FD_COND_INIT;
/* The current job's ticket: (jobs posted so far) * 256 + its number of parts, in one atomic word,
 * so a worker never pairs one job's count with another's parts. fn, arg and the modes are written
 * before the ticket is published and stay until the job is done. */
static atomic_ullong fd_pool_ticket;
static atomic_int fd_pool_done;       /* parts of the current job finished by workers */
static atomic_int fd_pool_sleeping;   /* workers waiting on fd_pool_wake */
static fd_task_fn fd_pool_fn;
static void *fd_pool_arg;
static fd_fpmode fd_pool_fpmode;  /* the caller's control modes for the current job */
static int fd_pool_workers;       /* workers started */
/* The ticket when each worker was started (before the job it was started for is posted): its
 * first `seen`. A worker that read the ticket itself when it first ran could read the new job's
 * and wait for the next one forever. */
static unsigned long long fd_pool_born[FD_MAX_THREADS];

static void fd_pool_work(int part)
{
    unsigned long long seen = fd_pool_born[part];
    int took_part = 0;
    for (;;) {
        double t0 = fd_now();
        int k = 0;
        while (took_part && atomic_load_explicit(&fd_pool_ticket, memory_order_acquire) == seen) {
            fd_cpu_relax();
            if (++k == 256) {
                k = 0;
                if (fd_now() - t0 > FD_SPIN_SECONDS)
                    break;
            }
        }
        if (atomic_load_explicit(&fd_pool_ticket, memory_order_acquire) == seen) {
            fd_mutex_lock(&fd_pool_sleep_lock);
            atomic_fetch_add(&fd_pool_sleeping, 1);
            while (atomic_load(&fd_pool_ticket) == seen)
                fd_cond_wait(&fd_pool_wake, &fd_pool_sleep_lock);
            atomic_fetch_sub(&fd_pool_sleeping, 1);
            fd_mutex_unlock(&fd_pool_sleep_lock);
        }
        seen = atomic_load_explicit(&fd_pool_ticket, memory_order_acquire);
        took_part = part < (int)(seen & 255u);
        if (!took_part)
            continue;
        /* The caller's rounding and flush-to-zero modes: a thread inherits them only when it is
         * created, and a library loaded later (one built with -ffast-math, say) may have turned
         * flush-to-zero on in the caller since: every part of a job must round alike. */
        fd_fpmode_set(fd_pool_fpmode);
        fd_pool_fn(fd_pool_arg, part);
        atomic_fetch_add_explicit(&fd_pool_done, 1, memory_order_release);
    }
}

/* Starts worker `part`, detached; 0 when the system refuses. */
#if defined(_WIN32)
static unsigned __stdcall fd_pool_worker(void *part)
{
    fd_pool_work((int)(intptr_t)part);
    return 0;
}

static int fd_thread_start(int part)
{
    HANDLE h = (HANDLE)_beginthreadex(NULL, 0, fd_pool_worker, (void *)(intptr_t)part, 0, NULL);
    if (h == 0)
        return 0;
    CloseHandle(h);
    return 1;
}
#else
static void *fd_pool_worker(void *part)
{
    fd_pool_work((int)(intptr_t)part);
    return NULL;
}

static int fd_pool_atfork_registered;

static void fd_pool_after_fork_child(void)
{
    /* The workers did not survive the fork; the locks may have been held by another thread. */
    pthread_mutex_init(&fd_pool_lock, NULL);
    pthread_mutex_init(&fd_pool_sleep_lock, NULL);
    pthread_cond_init(&fd_pool_wake, NULL);
    atomic_store(&fd_pool_ticket, 0);
    atomic_store(&fd_pool_done, 0);
    atomic_store(&fd_pool_sleeping, 0);
    fd_pool_workers = 0;
}

static int fd_thread_start(int part)
{
    pthread_t tid;
    pthread_attr_t attr;
    int ok;
    if (!fd_pool_atfork_registered) {
        pthread_atfork(NULL, NULL, fd_pool_after_fork_child);
        fd_pool_atfork_registered = 1;
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ok = pthread_create(&tid, &attr, fd_pool_worker, (void *)(intptr_t)part) == 0;
    pthread_attr_destroy(&attr);
    return ok;
}
#endif

/* Starts workers until there are n - 1 (fewer if the system refuses); returns how many parts
 * can run at once (workers + the caller). Called with fd_pool_lock held. */
static int fd_pool_grow(int n)
{
    while (fd_pool_workers < n - 1) {
        fd_pool_born[fd_pool_workers + 1] = atomic_load(&fd_pool_ticket);
        if (!fd_thread_start(fd_pool_workers + 1))
            break;
        fd_pool_workers++;
    }
    return fd_pool_workers + 1;
}

void fd_wait_step(int *spins)
{
    fd_cpu_relax();
    if (++*spins == 4096) {
        *spins = 0;
        fd_yield();
    }
}

/* Runs fn(arg, p) for p = 0 .. nparts-1, part 0 on the calling thread and the others on the
 * workers; returns when all are done. Parts without a thread (the pool busy with another
 * caller's job, or workers that could not be started) run here, after part 0. */
void fd_run(fd_task_fn fn, void *arg, int nparts)
{
    int p, running, spins = 0;
    if (nparts > FD_MAX_THREADS)
        nparts = FD_MAX_THREADS;
    if (nparts < 2 || !fd_mutex_trylock(&fd_pool_lock)) {
        for (p = 0; p < nparts || p == 0; p++)
            fn(arg, p);
        return;
    }
    running = fd_pool_grow(nparts);
    if (running > nparts)
        running = nparts;
    fd_pool_fn = fn;
    fd_pool_arg = arg;
    fd_pool_fpmode = fd_fpmode_get();
    atomic_store_explicit(&fd_pool_done, 0, memory_order_relaxed);
    atomic_store_explicit(&fd_pool_ticket,
                          ((atomic_load(&fd_pool_ticket) >> 8) + 1) << 8 | (unsigned)running,
                          memory_order_release);
    /* Checked under the workers' sleep lock: a worker tests the ticket under the same lock before it
     * waits, so either it sees the new job or we see it asleep and wake it (no lost wake-up). */
    fd_mutex_lock(&fd_pool_sleep_lock);
    if (atomic_load(&fd_pool_sleeping) > 0)
        fd_cond_broadcast(&fd_pool_wake);
    fd_mutex_unlock(&fd_pool_sleep_lock);
    fn(arg, 0);
    for (p = running; p < nparts; p++)
        fn(arg, p);
    while (atomic_load_explicit(&fd_pool_done, memory_order_acquire) != running - 1)
        fd_wait_step(&spins);
    fd_mutex_unlock(&fd_pool_lock);
}
