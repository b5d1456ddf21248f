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

#define W8_BATCH 32

/* W8's producer: kwq_add_many of W8_BATCH consecutive keys (cycling). */
static void *w8_producer(void *arg)
{
	struct w2_thread *th = arg;
	struct w2_run *run = th->run;
	struct kwq_key_ref refs[W8_BATCH];
	uint64_t k = th->first;
	int err = 0;

	pthread_barrier_wait(&run->start);
	for (uint64_t n = th->count; n > 0;) {
		size_t b = n < W8_BATCH ? (size_t)n : W8_BATCH;
		for (size_t i = 0; i < b; i++) {
			refs[i] = (struct kwq_key_ref){ bench_keys[k].bytes, bench_keys[k].len };
			if (++k == run->nkeys)
				k = 0;
		}
		if (kwq_add_many(run->t.q, refs, b, NULL) != (int)b)
			err = -1;
		n -= b;
	}
	th->err = err;
	return NULL;
}

/* W8's worker: kwq_get_batch(W8_BATCH, KWQ_FOREVER), kwq_done_many. */
static void *w8_worker(void *arg)
{
	struct w2_thread *th = arg;
	struct w2_run *run = th->run;
	kwq_item_t *items[W8_BATCH];
	uint64_t got = 0;
	int n;

	pthread_barrier_wait(&run->start);
	while ((n = kwq_get_batch(run->t.q, items, W8_BATCH, KWQ_FOREVER)) > 0) {
		kwq_done_many(run->t.q, items, (size_t)n);
		got += (uint64_t)n;
	}
	th->got = got;
	th->err = n == -ESHUTDOWN ? 0 : n;
	return NULL;
}

/*
 * W7's worker: the controller's loop, ended by kwq_finish: KWQ_RETRY (a
 * rate-limited retry, then done) or KWQ_OK (forget, then done).
 */
static void *w7_worker(void *arg)
{
	struct w2_thread *th = arg;
	struct w2_run *run = th->run;
	kwq_t *q = run->t.q;
	uint64_t got = 0;
	kwq_item_t *it;
	int err;

	pthread_barrier_wait(&run->start);
	while ((err = kwq_get(q, &it)) == 0) {
		int rc = kwq_finish(q, it, ++got % 16 == 0 ? KWQ_RETRY : KWQ_OK, 0);
		if (rc != 0 && rc != -ESHUTDOWN)
			th->err = rc;
	}
	th->got = got;
	if (err != -ESHUTDOWN)
		th->err = err;
	return NULL;
}

#define BG_WAITS 1000

/* The 1,000 waits of W2_WAITS and W7, made before timing. */
static int w2_background(kwq_t *q)
{
	for (int i = 0; i < BG_WAITS; i++) {
		char key[16];
		int n = snprintf(key, sizeof key, "bg/%d", i);
		int rc = kwq_add_after(q, key, (size_t)n, 3600 * INT64_C(1000000000));
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* W7's queue: named "w7", exponential(1 ms, 1 s). */
static int w7_open(struct tp *t, const struct tp_row *row, kb_state *st)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = row->kwq->impl;
	cfg.name = "w7";
	cfg.limiter = kwq_limiter_exponential(1000000, 1000000000);
	t->kind = TP_KWQ;
	t->q = cfg.limiter != NULL ? kwq_new(&cfg) : NULL;
	if (t->q == NULL) {
		kb_skip(st, "kwq_new(w7) failed");
		return -1;
	}
	return 0;
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

		if ((mix == W2_W7 ? w7_open(&run.t, row, st) : tp_open(&run.t, row, st)) != 0)
			return;
		if ((mix == W2_WAITS || mix == W2_W7) && w2_background(run.t.q) != 0) {
			tp_free(&run.t);
			kb_skip(st, "the background waits failed");
			return;
		}
		pthread_barrier_init(&run.start, NULL, P + C + 1);
		for (unsigned p = 0; p < P; p++)
			th[p] = (struct w2_thread){ .run = &run, .first = p * K / P, .count = M };
		for (unsigned c = 0; c < C; c++)
			th[P + c].run = &run;
		bench_spawn(tid, P, mix == W2_PRIO10 ? w2_producer_prio10
				    : mix == W2_W8 ? w8_producer : w2_producer, th, sizeof th[0]);
		bench_spawn(tid + P, C, mix == W2_W7 ? w7_worker
				    : mix == W2_W8 ? w8_worker : w2_worker, th + P, sizeof th[0]);

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
static struct tp_row kwq_rows[8];   /* W2_waits and W7 */
static struct tp_row named_rows[8]; /* named_W2_waits */

static void w2_waits(kb_state *st, void *arg)
{
	bench_w2_run(st, arg, (unsigned)kb_arg(st, 0), (unsigned)kb_arg(st, 1),
		     (uint64_t)kb_arg(st, 2), W2_WAITS);
}

static void w7(kb_state *st, void *arg)
{
	bench_w2_run(st, arg, (unsigned)kb_arg(st, 0), (unsigned)kb_arg(st, 1),
		     (uint64_t)kb_arg(st, 2), W2_W7);
}

static void w8(kb_state *st, void *arg)
{
	bench_w2_run(st, arg, (unsigned)kb_arg(st, 0), (unsigned)kb_arg(st, 1),
		     (uint64_t)kb_arg(st, 2), W2_W8);
}

/*
 * W2 with 1,000 waits pending (unnamed, and named "bench" as named_W2),
 * at K = 100000 and the (P,C) of W7; W7 at (1,1), (4,4), (8,8).  kwq rows.
 */
void bench_register_w7(void)
{
	static const int64_t pc[] = { 1, 4, 8 };
	static const char *const names[] = { "P", "C", "K" };
	size_t n = tp_kwq_rows(kwq_rows, NULL);
	size_t nn = tp_kwq_rows(named_rows, "bench");
	char name[64];

	for (size_t r = 0; r < n; r++) {
		snprintf(name, sizeof name, "W2_waits/%s", kwq_rows[r].name);
		kb_case *c = bench_register_once(name, w2_waits, &kwq_rows[r]);
		kb_arg_names(c, 3, names);
		for (size_t i = 0; i < sizeof pc / sizeof pc[0]; i++)
			kb_args(c, 3, (const int64_t[]){ pc[i], pc[i], 100000 });
	}
	for (size_t r = 0; r < nn; r++) {
		snprintf(name, sizeof name, "named_W2_waits/%s", named_rows[r].name);
		kb_case *c = bench_register_once(name, w2_waits, &named_rows[r]);
		kb_arg_names(c, 3, names);
		kb_args(c, 3, (const int64_t[]){ 4, 4, 100000 });
	}
	/* W8 at the (P,C) of W2, K = 100000 */
	for (size_t r = 0; r < n; r++) {
		snprintf(name, sizeof name, "W8_batches/%s", kwq_rows[r].name);
		kb_case *c = bench_register_once(name, w8, &kwq_rows[r]);
		kb_arg_names(c, 3, names);
		for (int64_t p = 1; p <= 8; p *= 2)
			kb_args(c, 3, (const int64_t[]){ p, p, 100000 });
	}
	for (size_t r = 0; r < n; r++) {
		snprintf(name, sizeof name, "W7_controller/%s", kwq_rows[r].name);
		kb_case *c = bench_register_once(name, w7, &kwq_rows[r]);
		kb_arg_names(c, 3, names);
		for (size_t i = 0; i < sizeof pc / sizeof pc[0]; i++)
			kb_args(c, 3, (const int64_t[]){ pc[i], pc[i], 100000 });
	}
}

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
				 * mid-operation (lib/sharded/ring.h). */
				if (rows[r].kind == TP_CK_RING && 2 * pc[i] > cpus)
					continue;
				kb_args(c, 3, (const int64_t[]){ pc[i], pc[i], ks[k] });
			}
		}
	}
}
