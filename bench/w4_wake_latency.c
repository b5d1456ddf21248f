/*
 * W4 wake latency: one worker: get, take t1, done, 20,000 times; the
 * producer takes t0 immediately before adding a fresh key, then busy-waits
 * 20 us.  p50/p90/p99 of t1 - t0, nearest rank over all samples, reported
 * in seconds.
 *
 * 20 us apart, most adds find the worker idle: this is the cost of waking
 * it (spinning, parking, the futex), which a pipeline pays on every lull.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define W4_SAMPLES 20000
#define W4_GAP_NS 20000

struct w4_run {
	kwq_t *q;
	uint64_t n;
	int64_t *t1;
	pthread_barrier_t start;
	int err;
};

static void *w4_worker(void *arg)
{
	struct w4_run *run = arg;
	kwq_item_t *it;

	pthread_barrier_wait(&run->start);
	for (uint64_t i = 0; i < run->n; i++) {
		int err = kwq_get(run->q, &it);
		if (err != 0) {
			run->err = err;
			return NULL;
		}
		run->t1[i] = bench_now_ns();
		/* Fresh keys, one worker, FIFO: the i-th get is key i. */
		size_t len;
		const void *key = kwq_item_key(it, &len);
		if (len != bench_keys[i].len || memcmp(key, bench_keys[i].bytes, len) != 0)
			run->err = -EPROTO;
		kwq_done(run->q, it);
	}
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least p% of samples <= it. */
static double percentile_s(const int64_t *sorted, uint64_t n, unsigned p)
{
	uint64_t rank = (p * n + 99) / 100;
	return (double)sorted[rank > 0 ? rank - 1 : 0] / 1e9;
}

static void w4(kb_state *st, void *arg)
{
	const struct bench_row *row = arg;
	const uint64_t n = bench_scaled(W4_SAMPLES);
	int64_t *t0 = malloc(n * sizeof *t0);
	int64_t *t1 = malloc(n * sizeof *t1);
	double p50 = 0, p90 = 0, p99 = 0;

	if (t0 == NULL || t1 == NULL) {
		kb_skip(st, "out of memory");
		goto out;
	}
	while (kb_keep_running(st)) {
		struct w4_run run = { .n = n, .t1 = t1 };
		pthread_t tid;

		run.q = bench_queue_new(st, row);
		if (run.q == NULL)
			goto out;
		pthread_barrier_init(&run.start, NULL, 2);
		bench_spawn(&tid, 1, w4_worker, &run, sizeof run);
		pthread_barrier_wait(&run.start);

		int64_t start = bench_now_ns();
		int err = 0;
		for (uint64_t i = 0; i < n; i++) {
			t0[i] = bench_now_ns();
			err |= kwq_add(run.q, bench_keys[i].bytes, bench_keys[i].len);
			int64_t until = bench_now_ns() + W4_GAP_NS;
			while (bench_now_ns() < until)
				bench_cpu_relax();
		}
		if (err != 0)
			kwq_shutdown(run.q); /* the worker would wait forever */
		bench_join(&tid, 1);
		int64_t end = bench_now_ns();
		pthread_barrier_destroy(&run.start);
		kwq_free(run.q);
		if (err != 0 || run.err != 0) {
			kb_skip(st, "an add or get failed, or a key came out of order");
			goto out;
		}

		for (uint64_t i = 0; i < n; i++)
			t0[i] = t1[i] - t0[i];
		qsort(t0, n, sizeof *t0, cmp_i64);
		p50 = percentile_s(t0, n, 50);
		p90 = percentile_s(t0, n, 90);
		p99 = percentile_s(t0, n, 99);
		kb_set_iteration_time(st, (double)(end - start) / 1e9);
	}
	kb_counter(st, "p50", p50, KB_PLAIN);
	kb_counter(st, "p90", p90, KB_PLAIN);
	kb_counter(st, "p99", p99, KB_PLAIN);
	bench_label(st, row->name);
out:
	free(t0);
	free(t1);
}

void bench_register_w4(void)
{
	for (size_t r = 0; r < bench_nrows; r++) {
		if (!bench_row_available(&bench_rows[r]))
			continue;
		char name[64];
		snprintf(name, sizeof name, "W4_wake_latency/%s", bench_rows[r].name);
		bench_register_once(name, w4, (void *)&bench_rows[r]);
	}
}
