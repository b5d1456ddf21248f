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

/*
 * The metrics clock: what a named queue's metrics time their durations
 * with.  A fake clock reads as itself; the monotonic one (c == NULL) reads
 * the CPU's time-stamp counter scaled to nanoseconds where the kernel keeps
 * its own time with that counter (its clocksource is "tsc": it found the
 * counter invariant and synchronized across CPUs), and CLOCK_MONOTONIC
 * elsewhere.  A counter read is about a third of a clock_gettime on the
 * machines measured (results/), and a named queue reads the clock on every
 * add, get and done.
 *
 * Scaled reads are CLOCK_MONOTONIC at calibration plus the ticks since,
 * times the rate measured then (about a millisecond, once per process, in
 * kwq__metrics_clock_init): within a few parts in 10^5 of CLOCK_MONOTONIC's
 * rate, and never adjusted by NTP.  Only differences of its values mean
 * anything, and only between values of this clock: every timestamp the
 * metrics compare comes from it.
 */
__extension__ typedef unsigned __int128 kwq__u128;

struct kwq__tsc_scale {
	_Atomic int on;       /* set once by init (CLK.T1) */
	uint64_t tsc0;        /* counter at calibration */
	int64_t ns0;          /* CLOCK_MONOTONIC then */
	uint64_t mult;        /* ns per tick, 32.32 fixed point */
};
extern struct kwq__tsc_scale kwq__tsc;

/* Calibrate the counter, once per process (later calls wait for the
 * first, then return). */
void kwq__metrics_clock_init(void);

static inline int64_t kwq__metrics_now(const struct kwq_clock *c)
{
	if (c != NULL)
		/* CLK.C2 (as in kwq_clock_now) */
		return atomic_load_explicit(&((struct kwq_clock *)c)->now, memory_order_acquire);
#if defined(__x86_64__)
	/* CLK.T2: pairs with CLK.T1: the scale is set. */
	if (atomic_load_explicit(&kwq__tsc.on, memory_order_acquire)) {
		uint64_t d = __builtin_ia32_rdtsc() - kwq__tsc.tsc0;
		return kwq__tsc.ns0 + (int64_t)(((kwq__u128)d * kwq__tsc.mult) >> 32);
	}
#endif
	return kwq__mono_now();
}

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
