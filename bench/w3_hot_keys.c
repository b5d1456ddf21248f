/*
 * W3 hot keys: keys 0..15; 4 producers (producer p starts at key 4p) add in
 * a tight loop for 1 s while 2 workers get/done; then drain.  Adds/s over
 * the producers' time, gets/s over the whole run (the manual time).
 *
 * Nearly every add lands on a key that is queued or held already: this is
 * the coalescing path under contention, with workers competing for the
 * same few keys.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "bench.h"

#define W3_PRODUCERS 4
#define W3_WORKERS 2
#define W3_KEYS 16
#define W3_SECONDS 1.0

struct w3_run {
	kwq_t *q;
	atomic_bool stop;
	pthread_barrier_t start;
};

struct w3_thread {
	struct w3_run *run;
	unsigned first;
	uint64_t n; /* adds made, or items got */
	int err;
};

static void *w3_producer(void *arg)
{
	struct w3_thread *th = arg;
	struct w3_run *run = th->run;
	unsigned k = th->first;
	uint64_t n = 0;
	int err = 0;

	pthread_barrier_wait(&run->start);
	while (!atomic_load_explicit(&run->stop, memory_order_relaxed)) {
		err |= kwq_add(run->q, bench_keys[k].bytes, bench_keys[k].len);
		k = (k + 1) & (W3_KEYS - 1);
		n++;
	}
	th->n = n;
	th->err = err;
	return NULL;
}

static void *w3_worker(void *arg)
{
	struct w3_thread *th = arg;
	struct w3_run *run = th->run;
	kwq_item_t *it;
	uint64_t n = 0;
	int err;

	pthread_barrier_wait(&run->start);
	while ((err = kwq_get(run->q, &it)) == 0) {
		kwq_done(run->q, it);
		n++;
	}
	th->n = n;
	th->err = err == -ESHUTDOWN ? 0 : err;
	return NULL;
}

static void w3(kb_state *st, void *arg)
{
	const struct bench_row *row = arg;
	const int64_t duration = (int64_t)(bench_scaled_seconds(W3_SECONDS) * 1e9);
	double adds = 0, gets = 0, add_s = 0, all_s = 0;

	while (kb_keep_running(st)) {
		struct w3_run run;
		struct w3_thread th[W3_PRODUCERS + W3_WORKERS];
		pthread_t tid[W3_PRODUCERS + W3_WORKERS];
		int err = 0;

		run.q = bench_queue_new(st, row);
		if (run.q == NULL)
			return;
		atomic_init(&run.stop, false);
		pthread_barrier_init(&run.start, NULL, W3_PRODUCERS + W3_WORKERS + 1);
		for (unsigned i = 0; i < W3_PRODUCERS + W3_WORKERS; i++)
			th[i] = (struct w3_thread){ .run = &run,
						    .first = i < W3_PRODUCERS ? 4 * i : 0 };
		bench_spawn(tid, W3_PRODUCERS, w3_producer, th, sizeof th[0]);
		bench_spawn(tid + W3_PRODUCERS, W3_WORKERS, w3_worker, th + W3_PRODUCERS,
			    sizeof th[0]);

		pthread_barrier_wait(&run.start);
		int64_t t0 = bench_now_ns();
		struct timespec until = { .tv_sec = (t0 + duration) / 1000000000,
					  .tv_nsec = (t0 + duration) % 1000000000 };
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
			;
		atomic_store_explicit(&run.stop, true, memory_order_relaxed);
		bench_join(tid, W3_PRODUCERS);
		int64_t t1 = bench_now_ns();
		kwq_shutdown_drain(run.q);
		bench_join(tid + W3_PRODUCERS, W3_WORKERS);
		int64_t t2 = bench_now_ns();

		pthread_barrier_destroy(&run.start);
		kwq_free(run.q);
		for (unsigned i = 0; i < W3_PRODUCERS + W3_WORKERS; i++) {
			err |= th[i].err;
			if (i < W3_PRODUCERS)
				adds += (double)th[i].n;
			else
				gets += (double)th[i].n;
		}
		if (err != 0) {
			kb_skip(st, "an add or get failed");
			return;
		}
		add_s += (double)(t1 - t0) / 1e9;
		all_s += (double)(t2 - t0) / 1e9;
		kb_set_iteration_time(st, (double)(t2 - t0) / 1e9);
	}
	/* The two rates have different denominators, so both are computed
	 * here rather than left to Google Benchmark's one time. */
	kb_counter(st, "adds", adds / add_s, KB_PLAIN);
	kb_counter(st, "gets", gets / all_s, KB_PLAIN);
	bench_label(st, row->name);
}

void bench_register_w3(void)
{
	for (size_t r = 0; r < bench_nrows; r++) {
		if (!bench_row_available(&bench_rows[r]))
			continue;
		char name[64];
		snprintf(name, sizeof name, "W3_hot_keys/%s", bench_rows[r].name);
		bench_register_once(name, w3, (void *)&bench_rows[r]);
	}
}
