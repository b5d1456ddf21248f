/*
 * W6 rate-limited cycle: a queue with the default limiter, keys 0..1023,
 * one worker draining (get/done until shutdown); 1,000,000 times
 * add_rate_limited(k) then forget(k), k cycling through the 1024 keys.
 * One Google Benchmark iteration is one pair, so the reported time is ns
 * per pair.  Then the queue is shut down (kwq_shutdown: the delayed adds
 * still waiting are dropped) and the worker joined, outside the clock.
 *
 * This is a controller's retry bookkeeping: the limiter's per-key table
 * (a failure counted, then freed), its token bucket, and a delayed add per
 * call.  forget never refills the bucket: after its burst of 100 every
 * add waits longer than the last (10 a second), so the worker gets about
 * 100 items plus 10 per second of the run, and most adds land on a key
 * already waiting (the earlier ready time is kept).  That is the same work
 * the reference does; the "got" counter shows it.
 */
#include <errno.h>
#include <stdio.h>

#include "bench.h"

#define W6_PAIRS 1000000
#define W6_KEYS 1024
#define W6_BATCH 1000 /* divides W6_PAIRS in every mode */

struct w6_run {
	kwq_t *q;
	uint64_t got;
	pthread_barrier_t start;
	int err;
};

static void *w6_worker(void *arg)
{
	struct w6_run *run = arg;
	kwq_item_t *it;
	uint64_t got = 0;
	int err;

	pthread_barrier_wait(&run->start);
	while ((err = kwq_get(run->q, &it)) == 0) {
		kwq_done(run->q, it);
		got++;
	}
	run->got = got;
	run->err = err == -ESHUTDOWN ? 0 : err;
	return NULL;
}

static void w6(kb_state *st, void *arg)
{
	const struct bench_row *row = arg;
	struct w6_run run = { .got = 0 };
	pthread_t tid;

	run.q = bench_queue_new(st, row); /* NULL limiter: the default one */
	pthread_barrier_init(&run.start, NULL, 2);
	if (run.q != NULL) {
		bench_spawn(&tid, 1, w6_worker, &run, sizeof run);
		pthread_barrier_wait(&run.start);
	}

	uint64_t i = 0;
	int err = 0;
	/* Every case must enter the loop (Google Benchmark checks it). */
	while (kb_keep_running_batch(st, W6_BATCH)) {
		if (run.q == NULL)
			continue;
		for (unsigned j = 0; j < W6_BATCH; j++, i++) {
			const struct bench_key *k = &bench_keys[i & (W6_KEYS - 1)];
			err |= kwq_add_rate_limited(run.q, k->bytes, k->len);
			err |= kwq_forget(run.q, k->bytes, k->len);
		}
	}
	if (run.q == NULL)
		goto out;
	kwq_shutdown(run.q);
	bench_join(&tid, 1);
	kwq_free(run.q);

	if (err != 0 || run.err != 0) {
		kb_skip(st, "an add, forget or get failed");
		goto out;
	}
	/* Wall time per iteration is the figure; the rate is for the table. */
	kb_counter(st, "pairs", (double)i, KB_RATE);
	kb_counter(st, "got", (double)run.got, KB_PLAIN);
	bench_label(st, row->name);
out:
	pthread_barrier_destroy(&run.start);
}

void bench_register_w6(void)
{
	for (size_t r = 0; r < bench_nrows; r++) {
		if (!bench_row_available(&bench_rows[r]))
			continue;
		char name[64];
		snprintf(name, sizeof name, "W6_rate_limited/%s", bench_rows[r].name);
		kb_case *c = kb_register(name, w6, (void *)&bench_rows[r]);
		kb_iterations(c, (int64_t)bench_scaled(W6_PAIRS));
		kb_real_time(c);
	}
}
