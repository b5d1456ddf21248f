/*
 * clock.c - the monotonic clock and fake clocks.
 *
 * A fake clock is one atomic word.  Stepping is a CAS loop so that concurrent
 * steps add up and saturate instead of wrapping.  Relaxed ordering suffices:
 * the clock's value carries no other data with it.
 */
#include "clock.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "kwq.h"

int64_t kwq__mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t kwq_clock_now(const kwq_clock_t *c)
{
	if (c == NULL)
		return kwq__mono_now();
	return atomic_load_explicit(&((kwq_clock_t *)c)->now, memory_order_relaxed);
}

kwq_clock_t *kwq_clock_fake_new(int64_t start_ns)
{
	kwq_clock_t *c = malloc(sizeof *c);
	if (c == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	atomic_init(&c->now, start_ns);
	return c;
}

void kwq_clock_fake_step(kwq_clock_t *c, int64_t delta_ns)
{
	if (c == NULL || delta_ns <= 0)
		return;
	int64_t cur = atomic_load_explicit(&c->now, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&c->now, &cur,
			kwq__sat_add(cur, delta_ns), memory_order_relaxed,
			memory_order_relaxed))
		;
}

void kwq_clock_free(kwq_clock_t *c)
{
	free(c);
}
