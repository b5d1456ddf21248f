/*
 * ops.h - the contract an implementation of the queue meets.
 *
 * lib/core/queue.c owns the public entry points: it checks arguments, hashes
 * keys and turns timeouts into deadlines, so an implementation only ever
 * sees valid input.  An implementation embeds struct kwq as the first member
 * of its own queue struct and fills in the ops below.
 */
#ifndef KWQ_CORE_OPS_H
#define KWQ_CORE_OPS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kwq.h"
#include "key.h"

/* Deadline values for kwq_ops.get. */
#define KWQ_DEADLINE_NONE INT64_MAX /* block until an item or shutdown */
#define KWQ_DEADLINE_POLL 0         /* never block */

struct kwq_ops;
struct kwq_delay;
struct kwq_metrics;
struct kwq__retry_stripe;

/* The part of every queue the core owns. */
struct kwq {
	const struct kwq_ops *ops;
	uint64_t seed;          /* per-queue hash seed (hash flooding) */
	kwq_clock_t *clock;     /* borrowed; NULL = monotonic */
	char *name;             /* owned copy, or NULL */
	kwq_limiter_t *limiter; /* owned: kwq_add_rate_limited and friends */
	struct kwq__retry_stripe *retries; /* owned, named queues only: the
	                                      retries_total metric */

	/* Delayed adds (lib/delay): started on first use under delay_lock,
	 * then read lock-free.  The core initializes these after create. */
	_Atomic(struct kwq_delay *) delay;
	pthread_mutex_t delay_lock;
	bool delay_stopped;     /* under delay_lock: shutdown happened */
};

struct kwq_ops {
	const char *name;

	/*
	 * Allocate and initialize the implementation's queue with q->ops,
	 * seed, clock and name already decided in *base (copied in).
	 * Returns the new queue or NULL with errno set.
	 */
	struct kwq *(*create)(const struct kwq *base, const struct kwq_config *cfg);

	/* Free everything; the queue is already shut down. */
	void (*destroy)(struct kwq *q);

	/*
	 * kwq_add() on a validated key, with a priority (0 for kwq_add):
	 * absent -> queued at the tail of its priority; queued -> raised to
	 * the tail of a higher priority, else unchanged; held -> held+dirty,
	 * held+dirty -> unchanged, both remembering the highest priority
	 * asked, with which done re-queues it.  0, -ESHUTDOWN or -ENOMEM.
	 */
	int (*add)(struct kwq *q, const struct kwq_key *key, int priority);

	/*
	 * Hand out the head.  deadline is an absolute CLOCK_MONOTONIC time,
	 * KWQ_DEADLINE_POLL (do not block) or KWQ_DEADLINE_NONE.
	 * 0, -ESHUTDOWN, or -ETIMEDOUT when the deadline passed (also for
	 * KWQ_DEADLINE_POLL; the core maps that to -EAGAIN for try_get).
	 */
	int (*get)(struct kwq *q, struct kwq_item **item, int64_t deadline);

	/* kwq_done() on a non-NULL handle.  0 or -EINVAL (not held). */
	int (*done)(struct kwq *q, struct kwq_item *item);

	size_t (*len)(struct kwq *q);

	/*
	 * A delayed add of a key that may already be due: if the key is
	 * queued or held+dirty, apply the priority exactly as add would
	 * (raise a queued item, remember it for a held+dirty one) and return
	 * 1; if it is absent or held, change nothing and return 0 (the
	 * caller then makes it wait).  One critical section decides, so an
	 * item handed out meanwhile is never turned dirty.  Or -ESHUTDOWN,
	 * -ENOMEM.
	 */
	int (*absorb)(struct kwq *q, const struct kwq_key *key, int priority);

	/*
	 * Named queues only (q->name != NULL): add the implementation's
	 * metric counters into *m (depth, adds_total, the two histograms)
	 * and compute unfinished_work_seconds and
	 * longest_running_processor_seconds over the held items at `now`
	 * (the queue clock's time).  The core fills retries_total.
	 * Such an implementation allocates its struct kwq__metrics_block
	 * (lib/metrics/metrics.h) in create when base->name != NULL and
	 * calls the hooks there where their definitions say.  NULL: the
	 * implementation keeps no metrics, and the public calls return
	 * -ENOTSUP for a named queue.
	 */
	void (*metrics)(struct kwq *q, struct kwq_metrics *m, int64_t now);

	/* Refuse adds and wake all getters; drain: then wait as documented. */
	void (*shutdown)(struct kwq *q, bool drain);

	bool (*shutting_down)(struct kwq *q);
};

extern const struct kwq_ops kwq__mutex_ops;
extern const struct kwq_ops kwq__sharded_ops;

#endif
