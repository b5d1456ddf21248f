/*
 * W1 cycle: one thread, 100,000 warm-up cycles, then 4,000,000 cycles of
 * add(key[i & 1023]), get, done.  One Google Benchmark iteration is one
 * cycle, so the reported time is the time per cycle.
 *
 * The floors run the same cycle through their transport (add, get).  The
 * named-queue case registers this same body (cases.h).
 */
#include <stdio.h>

#include "cases.h"

#define W1_WARMUP 100000
#define W1_CYCLES 4000000
#define W1_BATCH 1000 /* divides W1_CYCLES in every mode */

static struct tp_row rows[8];

static inline int cycle(struct tp *t, uint64_t i)
{
	tp_item it;
	int err = tp_add(t, &bench_keys[i & 1023]);
	if (err == 0)
		err = tp_get(t, &it);
	if (err == 0)
		tp_done(t, it);
	return err;
}

static void w1(kb_state *st, void *arg)
{
	const struct tp_row *row = arg;
	struct tp t;
	if (tp_open(&t, row, st) != 0)
		return;

	uint64_t i = 0;
	int err = 0;
	for (uint64_t n = bench_scaled(W1_WARMUP); i < n; i++)
		err |= cycle(&t, i);
	while (kb_keep_running_batch(st, W1_BATCH))
		for (unsigned j = 0; j < W1_BATCH; j++, i++)
			err |= cycle(&t, i);
	tp_free(&t);

	if (err != 0) {
		kb_skip(st, "an add or get failed");
		return;
	}
	/* Wall time per iteration is the figure; the rate is for the table. */
	kb_counter(st, "cycles", (double)(i - bench_scaled(W1_WARMUP)), KB_RATE);
	bench_label(st, row->name);
}

kb_case *bench_w1_register(const char *name, const struct tp_row *row)
{
	kb_case *c = kb_register(name, w1, (void *)row);
	kb_iterations(c, (int64_t)bench_scaled(W1_CYCLES));
	kb_real_time(c);
	return c;
}

void bench_register_w1(void)
{
	size_t n = tp_rows(rows);
	for (size_t r = 0; r < n; r++) {
		char name[64];
		snprintf(name, sizeof name, "W1_cycle/%s", rows[r].name);
		bench_w1_register(name, &rows[r]);
	}
}
