/*
 * Named-queue overhead: W1 and W2 (K = 100000, P = C = 4) on a queue named
 * "bench".  A queue keeps metrics only when it is named, so these figures
 * next to the unnamed W1 and W2 of the same run are the cost of the
 * metrics; before the metrics land, the two should be equal.  The cases
 * run W1's and W2's own bodies (cases.h); kwq rows only.
 */
#include <stdio.h>

#include "cases.h"

#define NAMED_QUEUE "bench"

static struct tp_row rows[8];

static void named_w2(kb_state *st, void *arg)
{
	bench_w2_run(st, arg, (unsigned)kb_arg(st, 0), (unsigned)kb_arg(st, 1),
		     (uint64_t)kb_arg(st, 2), W2_PLAIN);
}

void bench_register_named(void)
{
	static const char *const names[] = { "P", "C", "K" };
	size_t n = tp_kwq_rows(rows, NAMED_QUEUE);
	char name[64];

	for (size_t r = 0; r < n; r++) {
		snprintf(name, sizeof name, "named_W1/%s", rows[r].name);
		bench_w1_register(name, &rows[r]);
	}
	for (size_t r = 0; r < n; r++) {
		snprintf(name, sizeof name, "named_W2/%s", rows[r].name);
		kb_case *c = bench_register_once(name, named_w2, &rows[r]);
		kb_arg_names(c, 3, names);
		kb_args(c, 3, (const int64_t[]){ 4, 4, 100000 });
	}
}
