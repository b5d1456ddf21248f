/*
 * Priority mix: W2's pipeline (bench_w2_run) at K = 100000, P = C = 4, with
 * a tenth of the adds at priority 10: a producer's i-th add (i from 0) is
 * kwq_add_with(priority 10) when i % 10 == 0 and kwq_add (priority 0)
 * otherwise.  K and every producer's first key are multiples of 10, so the
 * priority-10 adds are always the same tenth of the keys (those whose index
 * is a multiple of 10), as when a controller's urgent objects are a fixed
 * few.
 *
 * The same case with every add at priority 0 runs next to it (high:0; the
 * same adds as W2 itself): the report shows the ratio of the two, the cost
 * of a queue holding two priorities instead of one.  Reports adds/s and
 * gets/s, as W2.  kwq rows only: the floors have no priorities.
 */
#include <stdio.h>

#include "cases.h"

#define PM_P 4
#define PM_C 4
#define PM_K 100000

static struct tp_row rows[8];

static void prio_mix(kb_state *st, void *arg)
{
	bench_w2_run(st, arg, (unsigned)kb_arg(st, 0), (unsigned)kb_arg(st, 1),
		     (uint64_t)kb_arg(st, 2), kb_arg(st, 3) == 0 ? W2_PLAIN : W2_PRIO10);
}

void bench_register_prio_mix(void)
{
	static const char *const names[] = { "P", "C", "K", "high" };
	size_t n = tp_kwq_rows(rows, NULL);

	for (size_t r = 0; r < n; r++) {
		char name[64];
		snprintf(name, sizeof name, "prio_mix/%s", rows[r].name);
		kb_case *c = bench_register_once(name, prio_mix, &rows[r]);
		kb_arg_names(c, 4, names);
		/* high: the percentage of adds at priority 10 */
		kb_args(c, 4, (const int64_t[]){ PM_P, PM_C, PM_K, 0 });
		kb_args(c, 4, (const int64_t[]){ PM_P, PM_C, PM_K, 10 });
	}
}
