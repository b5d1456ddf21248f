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
#include "wait.h"
#include "../delay/delay.h"

/* Deadline values for kwq__ops.get. */
#define KWQ__DEADLINE_NONE INT64_MAX /* block until an item or shutdown */
#define KWQ__DEADLINE_POLL 0         /* never block */

struct kwq__ops;
struct kwq__delay;
struct kwq__wait;
struct kwq__wait_req;
struct kwq_metrics;
struct kwq__retry_stripe;

/* The part of every queue the core owns. */
struct kwq {
	const struct kwq__ops *ops;
	uint64_t seed;          /* per-queue hash seed (hash flooding) */
	kwq_clock_t *clock;     /* borrowed; NULL = monotonic */
	char *name;             /* owned copy, or NULL */
	kwq_limiter_t *limiter; /* owned: kwq_add_rate_limited and friends */
	struct kwq__retry_stripe *retries; /* owned, named queues only: the
	                                      retries_total metric */
	struct kwq__delays delays; /* lib/delay's: its init and fini */
	/* kwq_finish's give-ups (kwq_config, 0.2) */
	int max_attempts;          /* 0: never give up */
	void (*on_give_up)(void *ctx, const void *key, size_t len);
	void *give_up_ctx;
	_Atomic uint64_t give_ups; /* give_ups_total (named queues) */
};

struct kwq__ops {
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
	 * asked, with which done re-queues it.  A waiting key stops waiting
	 * in the same critical section and keeps the wait's priority if it
	 * is higher (kwq__wait_drop).  Whatever done will need to re-queue a
	 * held+dirty key is secured here, so done cannot fail.
	 * 0, -ESHUTDOWN or -ENOMEM (nothing changed).
	 */
	int (*add)(struct kwq *q, const struct kwq__key *key, int priority);

	/*
	 * Optional (NULL: the core calls add n times): add of keys[0..n-1]
	 * in order with one priority, each its own linearization point.
	 * Stops at the first failure: returns its error (0 when all were
	 * added) and the number added before it in *accepted.
	 */
	int (*add_many)(struct kwq *q, const struct kwq__key *keys, size_t n, int priority,
			size_t *accepted);

	/*
	 * Hand out the head.  deadline is an absolute CLOCK_MONOTONIC time,
	 * KWQ__DEADLINE_POLL (do not block) or KWQ__DEADLINE_NONE.
	 * 0, -ESHUTDOWN, or -ETIMEDOUT when the deadline passed (also for
	 * KWQ__DEADLINE_POLL; the core maps that to -EAGAIN for try_get).
	 */
	int (*get)(struct kwq *q, struct kwq_item **item, int64_t deadline);

	/*
	 * Optional (NULL: the core makes the gets): kwq_get_batch, 1 <= max
	 * <= INT_MAX: the first item as get would hand it out (the same
	 * deadline and errors), then up to max - 1 more that are queued, as
	 * gets that do not wait would.  The count, or get's error.
	 */
	int (*get_batch)(struct kwq *q, struct kwq_item **items, size_t max, int64_t deadline);

	/* kwq_done() on a non-NULL handle.  0 or -EINVAL (not held); never
	 * -ENOMEM: a held+dirty key's re-queue was secured by its add. */
	int (*done)(struct kwq *q, struct kwq_item *item);

	size_t (*len)(struct kwq *q);

	/*
	 * kwq_add_after() with a delay > 0, decided in the key's critical
	 * section: a queued or held+dirty key is due already, so the priority
	 * is applied as add would and 1 returned; an absent or held key
	 * becomes (or stays) waiting.  A key waiting already keeps the earlier
	 * ready time and the higher priority (with req->replace it takes the
	 * request's).  When the wait is new or moved earlier, the
	 * implementation allocates a record of req->rec_size bytes with the
	 * key at req->rec_item_offset (kwq__wait_update in wait.h), makes it
	 * the key's current wait and returns it in req->rec for the timer;
	 * the record it replaced goes stale (kwq__wait_drop).  0, 1,
	 * -ESHUTDOWN or -ENOMEM (nothing changed).
	 */
	int (*add_after)(struct kwq *q, const struct kwq__key *key, struct kwq__wait_req *req);

	/*
	 * The timer's record w of key came due (drop false) or is dropped
	 * (drop true, shutdown).  If w is still the key's current wait, it
	 * stops waiting and, unless dropped, is added with w->priority as an
	 * add would (absent -> queued, held -> held+dirty): returns 1.  A
	 * stale w changes nothing: 0.  -ENOMEM: nothing changed, try again;
	 * -ESHUTDOWN: the wait was cleared, nothing added.  The caller frees
	 * w afterwards: the implementation holds no pointer to it.
	 */
	int (*fire)(struct kwq *q, struct kwq__wait *w, const struct kwq__key *key, bool drop);

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

	/*
	 * kwq_cancel() (wait_only false): queued -> absent, held+dirty ->
	 * held (its re-queue and whatever was secured for it released), a
	 * wait dropped; held and absent unchanged.  wait_only (kwq_finish's
	 * KWQ_DROP): only the wait.  In the key's critical section; never
	 * allocates, works after shutdown.  1 when something was removed,
	 * else 0.
	 */
	int (*cancel)(struct kwq *q, const struct kwq__key *key, bool wait_only);

	/* kwq_item_dirty() on a held, non-NULL handle: held+dirty?  No lock. */
	bool (*item_dirty)(struct kwq *q, const struct kwq_item *item);

	/*
	 * Refuse adds and wake all getters; drain: then wait as documented,
	 * until the absolute CLOCK_MONOTONIC deadline (INT64_MAX: none).
	 * 0, or -ETIMEDOUT when a drain's deadline passed first.
	 */
	int (*shutdown)(struct kwq *q, bool drain, int64_t deadline);

	bool (*shutting_down)(struct kwq *q);
};

/*
 * kwq_finish, and with hold_on_nomem a retry that could not be recorded
 * (-ENOMEM) leaves the handle held (no done): the worker pool tries again
 * rather than lose the retry.
 */
int kwq__finish(struct kwq *q, struct kwq_item *item, enum kwq_outcome outcome,
		int64_t after_ns, bool hold_on_nomem);

extern const struct kwq__ops kwq__mutex_ops;
extern const struct kwq__ops kwq__sharded_ops;

/*
 * The park of a sharded queue, NULL for another design.  Internal, not
 * exported: stress/burst_probe reads its token count to tell a wake in
 * flight from a lost one.
 */
struct kwq__park;
struct kwq__park *kwq__sharded_park(struct kwq *q);

#endif
