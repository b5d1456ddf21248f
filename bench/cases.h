/*
 * cases.h - the bodies one case file lends to another, so that a variant of
 * a workload runs the workload's own code: the named-queue cases run W1 and
 * W2, the priority mix runs W2's pipeline.
 */
#ifndef KWQ_BENCH_CASES_H
#define KWQ_BENCH_CASES_H

#include "transport.h"

/* Register W1's cycle under name for row (its iterations, real time). */
kb_case *bench_w1_register(const char *name, const struct tp_row *row);

/* What a W2 run's producers add. */
enum w2_mix {
	W2_PLAIN,   /* every add is tp_add: kwq_add on a queue (W2 itself) */
	W2_PRIO10,  /* kwq rows only: a producer's i-th add (i from 0) is
	               kwq_add_with(priority 10) when i % 10 == 0, kwq_add
	               (priority 0) otherwise */
	W2_WAITS,   /* kwq rows only: W2 with 1,000 other keys ("bg/<i>")
	               waiting on kwq_add_after(1 h) before timing */
	W2_W7,      /* kwq rows only: W7, the controller steady state: the
	               queue is named "w7" with limiter exponential(1 ms, 1 s),
	               the 1,000 waits of W2_WAITS, and a worker's n-th get
	               (n from 1) fails when n % 16 == 0 (rate-limited retry,
	               then done), else succeeds (forget, then done),
	               both ended by kwq_finish */
	W2_W8,      /* kwq rows only: W8, batches: producers kwq_add_many of
	               32 consecutive keys, workers kwq_get_batch(32,
	               KWQ_FOREVER) and kwq_done_many */
};

/*
 * One W2 pipeline case: P producers, C workers, K keys, the workload's
 * fixed total of adds; the time and the adds/gets counters set on st.
 * Register it with bench_register_once(): one iteration is one pipeline.
 */
void bench_w2_run(kb_state *st, const struct tp_row *row, unsigned P, unsigned C, uint64_t K,
		  enum w2_mix mix);

#endif /* KWQ_BENCH_CASES_H */
