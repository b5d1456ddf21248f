/*
 * limiter.h - what every rate limiter shares.
 *
 * A limiter kind embeds struct kwq_limiter as the first member of its own
 * struct and points base.ops at a static table.  limiter.c owns the public
 * entry points: it checks arguments, so a kind only ever sees a non-NULL
 * limiter and a valid key (bytes never NULL, even for len 0).
 *
 * Every op except destroy may run on many threads at once; a kind makes
 * its own state safe for that.  destroy frees the kind's struct and the
 * limiters it owns.
 */
#ifndef KWQ_RATELIMIT_LIMITER_H
#define KWQ_RATELIMIT_LIMITER_H

#include <stddef.h>
#include <stdint.h>

#include "kwq.h"

struct kwq_limiter;

struct kwq__limiter_ops {
	/* The wait for this failure of key, >= 0 ns; -ENOMEM is the only error. */
	int64_t (*when)(struct kwq_limiter *l, const void *key, size_t len);
	void (*forget)(struct kwq_limiter *l, const void *key, size_t len);
	/* >= 0, never an error. */
	int (*num_requeues)(struct kwq_limiter *l, const void *key, size_t len);
	void (*destroy)(struct kwq_limiter *l);
	/* 0, or -ENOTSUP (a custom limiter: its keys are not ours to drop). */
	int (*set_max_keys)(struct kwq_limiter *l, size_t max_keys);
};

struct kwq_limiter {
	const struct kwq__limiter_ops *ops;
};

/*
 * The default limiter (kwq_limiter_default()) reading clock instead of
 * CLOCK_MONOTONIC (NULL = CLOCK_MONOTONIC), so that a queue's own default
 * limiter runs on the queue's clock.  clock is borrowed and must outlive the
 * limiter.  NULL with errno ENOMEM on failure.
 */
kwq_limiter_t *kwq__limiter_default_on(kwq_clock_t *clock);

#endif
