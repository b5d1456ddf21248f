/*
 * W5 delayed adds: a queue with the default limiter; one worker gets and
 * finishes exactly 100,000 items; the producer calls add_after(key_i, 1 ms)
 * for 100,000 unique keys.  Reports calls/s (the producer's calls over its
 * own time) and the time from the first call until the worker got the last
 * item, in seconds.
 *
 * This is the path of every requeue with a backoff: the call's cost to the
 * caller (the hand-over to the timer thread), and how soon the timer thread
 * turns a stream of due items into queued ones.  The queue's first delayed
 * add starts its timer thread, inside the clock: that is part of what the
 * first call costs.
 *
 * One producer, one ready time per call on the monotonic clock: the items
 * come due in call order, so the worker checks that the i-th get is key i
 * (a memcmp of a short key, next to a get and a done).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

#define W5_ITEMS 100000
#define W5_DELAY_NS 1000000 /* 1 ms */

struct w5_run {
	kwq_t *q;
	uint64_t n;
	int64_t got_last; /* when the last get returned */
	pthread_barrier_t start;
	int err;
};

static void *w5_worker(void *arg)
{
	struct w5_run *run = arg;
	kwq_item_t *it;

	pthread_barrier_wait(&run->start);
	for (uint64_t i = 0; i < run->n; i++) {
		int err = kwq_get(run->q, &it);
		if (err != 0) {
			run->err = err;
			return NULL;
		}
		if (i + 1 == run->n)
			run->got_last = bench_now_ns();
		size_t len;
		const void *key = kwq_item_key(it, &len);
		if (len != bench_keys[i].len || memcmp(key, bench_keys[i].bytes, len) != 0)
			run->err = -EPROTO;
		kwq_done(run->q, it);
	}
	return NULL;
}

static void w5(kb_state *st, void *arg)
{
	const struct bench_row *row = arg;
	const uint64_t n = bench_scaled(W5_ITEMS);
	double calls_s = 0, all_s = 0;

	while (kb_keep_running(st)) {
		struct w5_run run = { .n = n };
		pthread_t tid;

		run.q = bench_queue_new(st, row); /* NULL limiter: the default one */
		if (run.q == NULL)
			return;
		pthread_barrier_init(&run.start, NULL, 2);
		bench_spawn(&tid, 1, w5_worker, &run, sizeof run);
		pthread_barrier_wait(&run.start);

		int err = 0;
		int64_t t0 = bench_now_ns();
		for (uint64_t i = 0; i < n; i++)
			err |= kwq_add_after(run.q, bench_keys[i].bytes, bench_keys[i].len,
					     W5_DELAY_NS);
		int64_t t1 = bench_now_ns();
		if (err != 0)
			kwq_shutdown(run.q); /* the worker would wait forever */
		bench_join(&tid, 1);
		pthread_barrier_destroy(&run.start);
		kwq_free(run.q);
		if (err != 0 || run.err != 0) {
			kb_skip(st, "an add or get failed, or a key came out of order");
			return;
		}
		calls_s += (double)(t1 - t0) / 1e9;
		all_s += (double)(run.got_last - t0) / 1e9;
		kb_set_iteration_time(st, (double)(run.got_last - t0) / 1e9);
	}
	/* Two figures over two different times: both computed here, as plain
	 * counters (Google Benchmark's one time is the second). */
	const double iters = (double)kb_iterations_done(st);
	kb_counter(st, "calls", (double)n * iters / calls_s, KB_PLAIN);
	kb_counter(st, "all_got_s", all_s / iters, KB_PLAIN);
	bench_label(st, row->name);
}

void bench_register_w5(void)
{
	for (size_t r = 0; r < bench_nrows; r++) {
		if (!bench_row_available(&bench_rows[r]))
			continue;
		char name[64];
		snprintf(name, sizeof name, "W5_delayed_adds/%s", bench_rows[r].name);
		bench_register_once(name, w5, (void *)&bench_rows[r]);
	}
}
