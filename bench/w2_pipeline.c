/*
 * W2 pipeline: C workers loop get/done until get reports shutdown; P
 * producers, producer p starts at key index p*K/P and adds M keys cycling
 * through the K keys; after all producers finish, drain.  The clock runs
 * from the producers' start to the workers' exit.  P*M is 16,000,000 for
 * K = 64 and 3,200,000 for K = 100000.  (P,C) in {(1,1),(2,2),(4,4),(8,8)}.
 *
 * Reports adds/s (P*M over the wall time) and gets/s: a design that starves
 * its workers coalesces more adds, so it is judged on both.
 *
 * The case starts its own P + C threads (P and C are not Google
 * Benchmark's thread count) and times them itself.  bench_w2_run() is the
 * body, which the priority mix and the named-queue case run too (cases.h).
 */
#include <stdio.h>

#include "cases.h"

#define W2_MAX_THREADS 8

struct w2_run;

struct w2_thread {
	struct w2_run *run;
	uint64_t first, count; /* producer: first key index, adds to make */
	uint64_t got;          /* worker: successful gets */
	int err;
};

struct w2_run {
	struct tp t;
	uint64_t nkeys;
	pthread_barrier_t start;
};

/* The producer's loop, inlined into one function per mix so that W2's own
 * loop carries no test of the mix. */
static inline __attribute__((always_inline)) void w2_produce(struct w2_thread *th,
							     enum w2_mix mix)
{
	struct kwq_add_opts prio10 = KWQ_ADD_OPTS_INIT;
	prio10.priority = 10;
	struct w2_run *run = th->run;
	uint64_t k = th->first;
	unsigned until_prio = 0; /* W2_PRIO10: adds before the next priority 10 */
	int err = 0;

	pthread_barrier_wait(&run->start);
	for (uint64_t n = th->count; n > 0; n--) {
		const struct bench_key *key = &bench_keys[k];
		if (mix == W2_PRIO10 && until_prio-- == 0) {
			until_prio = 9;
			err |= kwq_add_with(run->t.q, key->bytes, key->len, &prio10);
		} else {
			err |= tp_add(&run->t, key);
		}
		if (++k == run->nkeys)
			k = 0;
	}
	th->err = err;
}

static void *w2_producer(void *arg)
{
	w2_produce(arg, W2_PLAIN);
	return NULL;
}

static void *w2_producer_prio10(void *arg)
{
	w2_produce(arg, W2_PRIO10);
	return NULL;
}

static void *w2_worker(void *arg)
{
	struct w2_thread *th = arg;
	struct w2_run *run = th->run;
	uint64_t got = 0;
	tp_item it;
	int err;

	pthread_barrier_wait(&run->start);
	while ((err = tp_get(&run->t, &it)) == 0) {
		tp_done(&run->t, it);
		got++;
	}
	th->got = got;
	th->err = err == -ESHUTDOWN ? 0 : err;
	return NULL;
}

void bench_w2_run(kb_state *st, const struct tp_row *row, unsigned P, unsigned C, uint64_t K,
		  enum w2_mix mix)
{
	const uint64_t total = bench_scaled(K == 64 ? 16000000 : 3200000);
	const uint64_t M = total / P;
	uint64_t adds = 0, gets = 0;

	if (mix != W2_PLAIN && row->kind != TP_KWQ) {
		kb_skip(st, "priorities are kwq's: no floor runs them");
		return;
	}

	while (kb_keep_running(st)) {
		struct w2_run run = { .nkeys = K };
		struct w2_thread th[2 * W2_MAX_THREADS] = { { 0 } };
		pthread_t tid[2 * W2_MAX_THREADS];
		int err = 0;

		if (tp_open(&run.t, row, st) != 0)
			return;
		pthread_barrier_init(&run.start, NULL, P + C + 1);
		for (unsigned p = 0; p < P; p++)
			th[p] = (struct w2_thread){ .run = &run, .first = p * K / P, .count = M };
		for (unsigned c = 0; c < C; c++)
			th[P + c].run = &run;
		bench_spawn(tid, P, mix == W2_PLAIN ? w2_producer : w2_producer_prio10, th,
			    sizeof th[0]);
		bench_spawn(tid + P, C, w2_worker, th + P, sizeof th[0]);

		pthread_barrier_wait(&run.start);
		int64_t t0 = bench_now_ns();
		bench_join(tid, P);
		tp_close(&run.t);
		bench_join(tid + P, C);
		int64_t t1 = bench_now_ns();

		pthread_barrier_destroy(&run.start);
		tp_free(&run.t);
		for (unsigned i = 0; i < P + C; i++) {
			err |= th[i].err;
			gets += th[i].got;
		}
		if (err != 0) {
			kb_skip(st, "an add or get failed");
			return;
		}
		adds += (uint64_t)P * M;
		kb_set_iteration_time(st, (double)(t1 - t0) / 1e9);
	}
	kb_counter(st, "adds", (double)adds, KB_RATE);
	kb_counter(st, "gets", (double)gets, KB_RATE);
	bench_label(st, row->name);
}

static void w2(kb_state *st, void *arg)
{
	bench_w2_run(st, arg, (unsigned)kb_arg(st, 0), (unsigned)kb_arg(st, 1),
		     (uint64_t)kb_arg(st, 2), W2_PLAIN);
}

static struct tp_row rows[8];

void bench_register_w2(void)
{
	static const int64_t pc[] = { 1, 2, 4, 8 };
	static const int64_t ks[] = { 64, 100000 };
	static const char *const names[] = { "P", "C", "K" };
	const int cpus = bench_cpus();
	size_t n = tp_rows(rows);

	for (size_t r = 0; r < n; r++) {
		char name[64];
		snprintf(name, sizeof name, "W2_pipeline/%s", rows[r].name);
		kb_case *c = bench_register_once(name, w2, &rows[r]);
		kb_arg_names(c, 3, names);
		for (size_t k = 0; k < sizeof ks / sizeof ks[0]; k++) {
			for (size_t i = 0; i < sizeof pc / sizeof pc[0]; i++) {
				/* ck_ring stalls when a thread is preempted
				 * mid-operation (DESIGN.md section 2). */
				if (rows[r].kind == TP_CK_RING && 2 * pc[i] > cpus)
					continue;
				kb_args(c, 3, (const int64_t[]){ pc[i], pc[i], ks[k] });
			}
		}
	}
}
