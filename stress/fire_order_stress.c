/*
 * fire_order_stress.c - delayed adds fire in (ready time, call) order, even
 * when the clock moves while the timer thread is awake.
 *
 *   fire_order_stress ROW [--seconds S]
 *
 * Rounds on one queue with a fake clock, from one thread:
 *
 *   kwq_add_after(late, 2 ns)     wakes the timer thread
 *   spin 0..64 us                 sweeps the moment below across the
 *                                 timer's pass over its inbox
 *   kwq_add_after(early, 1 ns)
 *   kwq_clock_fake_step(10 ns)    both are due
 *
 * Both calls returned before the step, so the step makes both due at once
 * and the contract's order (earliest ready time first) is the only answer:
 * the next two gets return early, then late.  A timer that takes its inbox,
 * then reads the clock, fires late alone when the step lands between the
 * two (early is still in the inbox), and early after it.
 *
 * Exit status 0 when every round got early first, 1 otherwise.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "row.h"

#define SEC 1000000000LL

static int get_one(kwq_t *q, char *c)
{
	kwq_item_t *it;
	int rc = kwq_get_timeout(q, &it, 5 * SEC);
	if (rc != 0)
		return rc;
	size_t len;
	const void *k = kwq_item_key(it, &len);
	*c = len == 1 ? *(const char *)k : '?';
	return kwq_done(q, it);
}

int main(int argc, char **argv)
{
	enum kwq_impl impl;
	double seconds = 4;

	if (!stress_row_args(argc, argv, &impl, &seconds))
		return 2;

	kwq_clock_t *clock = kwq_clock_fake_new(1);
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = impl;
	cfg.clock = clock;
	kwq_t *q = clock ? kwq_new(&cfg) : NULL;
	if (q == NULL) {
		perror("kwq_new");
		return 1;
	}

	const int64_t end = stress_now_ns() + (int64_t)(seconds * SEC);
	long rounds = 0, wrong = 0, lost = 0;
	uint32_t x = 2463534242u;
	while (stress_now_ns() < end && lost == 0) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		int rc1 = kwq_add_after(q, "L", 1, 2);
		int64_t until = stress_now_ns() + (x & 65535);
		while (stress_now_ns() < until)
			;
		int rc2 = kwq_add_after(q, "E", 1, 1);
		kwq_clock_fake_step(clock, 10);
		if (rc1 != 0 || rc2 != 0) {
			fprintf(stderr, "add_after: %d %d\n", rc1, rc2);
			return 1;
		}
		char a = 0, b = 0;
		if (get_one(q, &a) != 0 || get_one(q, &b) != 0) {
			lost++;
			break;
		}
		if (a != 'E' || b != 'L') {
			if (wrong < 5)
				fprintf(stderr, "round %ld: got %c then %c, want E then L\n",
					rounds, a, b);
			wrong++;
		}
		rounds++;
	}
	printf("%s: %ld rounds, %ld out of order, %ld not handed out within 5 s\n",
	       argv[1], rounds, wrong, lost);
	kwq_free(q);
	kwq_clock_free(clock);
	return wrong || lost ? 1 : 0;
}
