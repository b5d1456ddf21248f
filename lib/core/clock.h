/* clock.h - the clocks' internals. */
#ifndef KWQ_CORE_CLOCK_H
#define KWQ_CORE_CLOCK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/*
 * Somebody sleeping until a fake clock moves (a queue's timer thread).
 * wake() is called, under the clock's lock, after every step.
 */
struct kwq__clock_waiter {
	struct kwq__clock_waiter *next;
	void (*wake)(struct kwq__clock_waiter *w);
};

struct kwq_clock {
	_Atomic int64_t now;      /* fake time; only ever moves forward */
	pthread_mutex_t lock;     /* guards waiters */
	struct kwq__clock_waiter *waiters;
};

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t kwq__mono_now(void);

void kwq__clock_watch(struct kwq_clock *c, struct kwq__clock_waiter *w);
void kwq__clock_unwatch(struct kwq_clock *c, struct kwq__clock_waiter *w);

/* a + b clamped to [INT64_MIN, INT64_MAX]. */
static inline int64_t kwq__sat_add(int64_t a, int64_t b)
{
	int64_t r;
	if (__builtin_add_overflow(a, b, &r))
		return b > 0 ? INT64_MAX : INT64_MIN;
	return r;
}

#endif
