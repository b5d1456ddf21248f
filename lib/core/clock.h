/* clock.h - the clocks' internals. */
#ifndef KWQ_CORE_CLOCK_H
#define KWQ_CORE_CLOCK_H

#include <stdatomic.h>
#include <stdint.h>

struct kwq_clock {
	_Atomic int64_t now; /* fake time; only ever moves forward */
};

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t kwq__mono_now(void);

/* a + b clamped to [INT64_MIN, INT64_MAX]. */
static inline int64_t kwq__sat_add(int64_t a, int64_t b)
{
	int64_t r;
	if (__builtin_add_overflow(a, b, &r))
		return b > 0 ? INT64_MAX : INT64_MIN;
	return r;
}

#endif
