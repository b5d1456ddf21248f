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
 * Benchmark's thread count) and times them itself.
 */
#include <stdio.h>

#include "transport.h"

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

static void *w2_producer(void *arg)
{
	struct w2_thread *th = arg;
	struct w2_run *run = th->run;
	uint64_t k = th->first;
	int err = 0;

	pthread_barrier_wait(&run->start);
	for (uint64_t n = th->count; n > 0; n--) {
		err |= tp_add(&run->t, &bench_keys[k]);
		if (++k == run->nkeys)
			k = 0;
	}
	th->err = err;
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

static void w2(kb_state *st, void *arg)
{
	const struct tp_row *row = arg;
	const unsigned P = (unsigned)kb_arg(st, 0);
	const unsigned C = (unsigned)kb_arg(st, 1);
	const uint64_t K = (uint64_t)kb_arg(st, 2);
	const uint64_t total = bench_scaled(K == 64 ? 16000000 : 3200000);
	const uint64_t M = total / P;
	uint64_t adds = 0, gets = 0;

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
		bench_spawn(tid, P, w2_producer, th, sizeof th[0]);
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
