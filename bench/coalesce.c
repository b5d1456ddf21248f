/*
 * Producers-only coalesce: P producers add the same 16 keys (producer p
 * starts at key 16p/P) to a queue nobody gets from.  The keys are queued
 * before the clock starts, so every timed add coalesces: the figure is the
 * cross-core limit of adds that change nothing, which is what a hot key
 * costs a design (the cache line or lock it must touch to learn that).
 *
 * Runs on Google Benchmark's own threads (P = its thread count) for its
 * own iteration count; one iteration is one add.
 */
#include <stdio.h>

#include "bench.h"

#define CO_KEYS 16

struct co_case {
	const struct bench_row *row;
	kwq_t *q; /* written by thread 0 before the loop: the loop's start
	             is a barrier for all threads, and so is its end */
};

static struct co_case cases[8];

static void coalesce(kb_state *st, void *arg)
{
	struct co_case *cc = arg;
	const int P = kb_thread_count(st), p = kb_thread_index(st);
	unsigned k = (unsigned)(CO_KEYS * p / P);
	int err = 0;

	if (p == 0) {
		cc->q = bench_queue_new(st, cc->row);
		for (unsigned i = 0; cc->q != NULL && i < CO_KEYS; i++)
			err |= kwq_add(cc->q, bench_keys[i].bytes, bench_keys[i].len);
	}
	/* Every thread must enter the loop, or the others wait for it. */
	while (kb_keep_running_batch(st, CO_KEYS)) {
		if (cc->q == NULL)
			continue;
		for (unsigned i = 0; i < CO_KEYS; i++) {
			err |= kwq_add(cc->q, bench_keys[k].bytes, bench_keys[k].len);
			k = (k + 1) & (CO_KEYS - 1);
		}
	}
	if (p == 0) {
		if (cc->q != NULL && kwq_len(cc->q) != CO_KEYS)
			err = -1;
		kwq_free(cc->q);
		cc->q = NULL;
	}
	if (err != 0) {
		kb_skip(st, "an add failed, or an add did not coalesce");
		return;
	}
	kb_counter(st, "adds", (double)kb_iterations_done(st), KB_RATE);
	bench_label(st, cc->row->name);
}

void bench_register_coalesce(void)
{
	for (size_t r = 0; r < bench_nrows; r++) {
		if (!bench_row_available(&bench_rows[r]))
			continue;
		char name[64];
		snprintf(name, sizeof name, "coalesce/%s", bench_rows[r].name);
		cases[r].row = &bench_rows[r];
		kb_case *c = kb_register(name, coalesce, &cases[r]);
		for (int P = 1; P <= 8; P *= 2)
			kb_threads(c, P);
		kb_real_time(c);
		if (bench_mode != BENCH_FULL)
			kb_min_time(c, bench_scaled_seconds(0.5));
	}
}
