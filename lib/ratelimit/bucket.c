/*
 * bucket.c - client-go's BucketRateLimiter: a token bucket shared by all
 * keys, with golang.org/x/time/rate's Reserve() semantics (burst tokens to
 * start, qps tokens a second, and a call that finds none goes into debt and
 * waits until its token will have arrived).
 *
 * The bucket is kept as one number, the theoretical arrival time (TAT) of
 * the generic cell rate algorithm: the time at which the bucket would be
 * full again if nothing else were taken.  The bucket then holds
 * burst - max(TAT - now, 0) tokens, so taking one is TAT = max(TAT, now) + 1
 * token, and the call waits max(TAT_before - now, 0) - (burst - 1) tokens'
 * time when that is positive.  The max() is the reference's cap of the
 * refill at burst; k calls past the burst at one instant wait k / qps, as
 * the reference's negative token count does.
 *
 * One number means a call is one compare-and-swap loop rather than a lock:
 * every client of the default limiter passes through here, and callers
 * stalled behind a preempted lock holder would stall all of them.  The CAS
 * is relaxed: TAT is the only data, and the modification order of that one
 * word is all the callers need to agree on.
 *
 * TAT is a double counted in tokens (not nanoseconds) since the clock
 * reading at creation, held as its bit pattern in an atomic word so that
 * the CAS compares bits, not values.  In tokens a call adds exactly 1.0, so
 * debt never accumulates rounding error, whatever the rate (in nanoseconds
 * qps 3 would add 333333333.3 a call, and after a few thousand calls the
 * sum has drifted far enough to round a wait the wrong way).  Times are converted with one multiplication and one
 * division, and waits rounded to the nearest nanosecond: the k-th call past
 * the burst at one instant waits k / qps seconds to the nanosecond.
 */
#include <errno.h>
#include <float.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/clock.h"
#include "../core/alloc.h"
#include "limiter.h"

struct bucket_limiter {
	struct kwq_limiter base;
	kwq_clock_t *clock;         /* borrowed; NULL = CLOCK_MONOTONIC */
	int64_t epoch;              /* clock reading at creation */
	double qps;
	double headroom;            /* burst - 1: the lead that costs no wait */
	_Atomic uint64_t tat;       /* bits of a double: tokens after epoch */
};

/* A wait this long is "never" (the reference's InfDuration). */
#define NS_MAX_DOUBLE 9223372036854775807.0

static struct bucket_limiter *bucket(struct kwq_limiter *l)
{
	return (struct bucket_limiter *)(void *)l;
}

static uint64_t bits_of(double d)
{
	uint64_t u;
	memcpy(&u, &d, sizeof u);
	return u;
}

static double double_of(uint64_t u)
{
	double d;
	memcpy(&d, &u, sizeof d);
	return d;
}

/* The clock's time, in tokens since the epoch. */
static double tokens_now(const struct bucket_limiter *b)
{
	int64_t now = kwq_clock_now(b->clock), d;
	double ns;
	/* Only a fake clock started near INT64_MIN can overflow. */
	if (__builtin_sub_overflow(now, b->epoch, &d))
		ns = (double)now - (double)b->epoch;
	else
		ns = (double)d;
	return ns * b->qps / 1e9;
}

static int64_t bucket_when(struct kwq_limiter *l, const void *key, size_t len)
{
	(void)key;
	(void)len;
	struct bucket_limiter *b = bucket(l);
	double now = tokens_now(b), from;
	uint64_t cur = atomic_load_explicit(&b->tat, memory_order_relaxed);

	do {
		double prev = double_of(cur);
		from = prev > now ? prev : now;
	} while (!atomic_compare_exchange_weak_explicit(&b->tat, &cur,
			bits_of(from + 1.0), memory_order_relaxed,
			memory_order_relaxed));

	double debt = (from - now) - b->headroom;
	/* Written so that NaN (only from absurd rates, above 1e290) waits 0. */
	if (!(debt > 0))
		return 0;
	double wait = debt * 1e9 / b->qps;
	if (wait >= NS_MAX_DOUBLE)
		return INT64_MAX;
	return (int64_t)(wait + 0.5);
}

static void bucket_forget(struct kwq_limiter *l, const void *key, size_t len)
{
	(void)l;
	(void)key;
	(void)len;
}

static int bucket_num_requeues(struct kwq_limiter *l, const void *key, size_t len)
{
	(void)l;
	(void)key;
	(void)len;
	return 0;
}

static void bucket_destroy(struct kwq_limiter *l)
{
	free(bucket(l));
}

/* The bucket remembers no keys: a cap has nothing to bound. */
static int bucket_set_max_keys(struct kwq_limiter *l, size_t max_keys)
{
	(void)l;
	(void)max_keys;
	return 0;
}

static const struct kwq__limiter_ops bucket_ops = {
	.when = bucket_when,
	.forget = bucket_forget,
	.num_requeues = bucket_num_requeues,
	.destroy = bucket_destroy,
	.set_max_keys = bucket_set_max_keys,
};

kwq_limiter_t *kwq_limiter_bucket(double qps, int burst, kwq_clock_t *clock)
{
	/* Written so that NaN fails too. */
	if (!(qps > 0 && qps <= DBL_MAX) || burst < 1) {
		errno = EINVAL;
		return NULL;
	}
	struct bucket_limiter *b = kwq__malloc(sizeof *b);
	if (b == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	b->base.ops = &bucket_ops;
	b->clock = clock;
	b->epoch = kwq_clock_now(clock);
	b->qps = qps;
	b->headroom = (double)burst - 1.0;
	atomic_init(&b->tat, bits_of(0.0));
	return &b->base;
}
