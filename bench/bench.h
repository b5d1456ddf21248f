/*
 * bench.h - what the benchmark cases share: the implementation rows, the
 * keys, the run mode, clocks and thread helpers.
 *
 * The workloads are defined in docs/BENCHMARKS.md; those definitions are
 * used to measure other queues too, so the cases keep them exactly (only
 * --quick and --smoke scale the amount of work down, and say so in the
 * label of every run).
 */
#ifndef KWQ_BENCH_H
#define KWQ_BENCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kwq.h>

#include "shim.h"

/* ---- implementation rows ---------------------------------------------- */

/*
 * Every case runs once per row of bench_rows[] (bench.c), the one table of
 * implementations.  A row whose kwq_new() fails with ENOTSUP is not
 * registered, so a design that lands starts being measured without an edit
 * here.
 */
struct bench_row {
	const char *name;
	enum kwq_impl impl;
};

extern const struct bench_row bench_rows[];
extern const size_t bench_nrows;

/* Whether kwq_new() builds this row (probed once, before registration). */
bool bench_row_available(const struct bench_row *row);

/* A fresh, unnamed queue of the row's design; on failure kb_skip()s st. */
kwq_t *bench_queue_new(kb_state *st, const struct bench_row *row);

/* As bench_queue_new, named name (NULL: unnamed).  Only a named queue keeps
 * metrics: the named cases measure what that costs. */
kwq_t *bench_queue_new_named(kb_state *st, const struct bench_row *row, const char *name);

/* ---- keys ------------------------------------------------------------- */

struct bench_key {
	const char *bytes;
	size_t len;
};

/* The most keys an in-process case uses: W2 with K = 100000. */
#define BENCH_NKEYS 100000

/* bench_keys[i] is "ns/obj-<i>", built by bench_init() before any timing. */
extern const struct bench_key *bench_keys;

/* Build n keys "ns/obj-<i>" in one allocation; NULL on ENOMEM. */
struct bench_key *bench_keys_build(size_t n);

/* ---- run mode --------------------------------------------------------- */

enum bench_mode {
	BENCH_FULL,  /* the workloads as defined */
	BENCH_QUICK, /* a tenth of the work, one repetition: a first look */
	BENCH_SMOKE, /* a thousandth: checks that every case still runs */
};

extern enum bench_mode bench_mode;

/* The amount of work (count or seconds) to do in this mode. */
uint64_t bench_scaled(uint64_t full);
double bench_scaled_seconds(double full);

/* The run's label: the row, and the scale when it is not the full one. */
void bench_label(kb_state *st, const char *row);

/* Default registration: one iteration is one whole workload, timed by the
 * case itself (fresh queue, fixed amount of work). */
kb_case *bench_register_once(const char *name, kb_fn *fn, void *arg);

/* ---- time and threads -------------------------------------------------- */

int64_t bench_now_ns(void);

/* CPUs this process may run on (its affinity mask, not the machine's). */
int bench_cpus(void);

/* Short busy-wait politeness: the pause instruction where there is one. */
static inline void bench_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/*
 * Start n threads running fn(args + i * sz).  A harness that cannot start
 * its threads has nothing to measure: failure exits the process.  Cases
 * line their threads up on a barrier of their own so that the clock starts
 * when the last one is ready, not while the first ones are being created.
 */
void bench_spawn(pthread_t *tids, size_t n, void *(*fn)(void *), void *args, size_t sz);
void bench_join(pthread_t *tids, size_t n);

/* ---- cases ------------------------------------------------------------- */

void bench_register_w1(void);
void bench_register_w2(void);
void bench_register_w7(void);
void bench_register_w3(void);
void bench_register_w4(void);
void bench_register_w5(void);
void bench_register_w6(void);
void bench_register_prio_mix(void);
void bench_register_named(void);
void bench_register_coalesce(void);
void bench_register_memory(void);
void bench_register_idle(void);

/* The memory probe runs in a fresh process: main() hands it argv when the
 * first argument is BENCH_MEMORY_CHILD. */
#define BENCH_MEMORY_CHILD "--kwq-memory-child"
int bench_memory_child(int argc, char **argv);

#endif /* KWQ_BENCH_H */
