/*
 * drain.h - the bookkeeping of kwq_shutdown_drain, once for every design.
 *
 * A drain waits until the queue holds nothing queued or held, or until a
 * plain kwq_shutdown made after the drain began ends it.  What "empty"
 * means, and when the queue becomes so, is the implementation's; this
 * file owns the waiting: a futex word every wake bumps, and a count of
 * plain shutdowns.
 *
 * No lost wake: a drainer reads seq, then asks empty(); the thread that
 * empties the queue (or ends drains) changes what empty() or ends reads,
 * then bumps seq (DRN.W1) and wakes.  If the drainer's read of seq sees
 * the bump, its empty() or ends check sees the change (DRN.W1 pairs with
 * DRN.W2); if it does not, the kernel's compare of the word at its futex
 * wait does, or the wake comes after the sleep began.
 *
 * Synchronization: every call may run concurrently with every other,
 * except init (exclusive, before any other).
 */
#ifndef KWQ_CORE_DRAIN_H
#define KWQ_CORE_DRAIN_H

#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "clock.h"
#include "futex.h"

struct kwq__drain {
	_Atomic uint32_t seq;   /* futex word: bumped by every wake */
	_Atomic uint32_t ends;  /* plain shutdowns so far */
};

static inline void kwq__drain_init(struct kwq__drain *dr)
{
	atomic_init(&dr->seq, 0);
	atomic_init(&dr->ends, 0);
}

/* Wake every drainer to look again: call after the queue became empty. */
static inline void kwq__drain_wake(struct kwq__drain *dr)
{
	/* DRN.W1: pairs with DRN.W2. */
	atomic_fetch_add_explicit(&dr->seq, 1, memory_order_seq_cst);
	kwq__futex_wake(&dr->seq, INT_MAX);
}

/* A plain shutdown: end every drain under way. */
static inline void kwq__drain_end(struct kwq__drain *dr)
{
	atomic_fetch_add_explicit(&dr->ends, 1, memory_order_seq_cst);
	kwq__drain_wake(dr);
}

/* A drain begins: its ticket, taken before it closes the queue, so that a
 * plain shutdown from then on ends it. */
static inline uint32_t kwq__drain_begin(struct kwq__drain *dr)
{
	return atomic_load_explicit(&dr->ends, memory_order_seq_cst);
}

/*
 * Block until empty(ctx) holds or a plain shutdown came after
 * kwq__drain_begin gave ends (true), or until the absolute CLOCK_MONOTONIC
 * deadline passed (false; INT64_MAX: none).  empty() reads the queue's
 * state with an acquire (or under the lock its emptier holds): the futex's
 * own check of seq closes the window between the two loads below and the
 * sleep.
 */
static inline bool kwq__drain_wait(struct kwq__drain *dr, uint32_t ends,
				   bool (*empty)(void *ctx), void *ctx, int64_t deadline)
{
	for (;;) {
		/* DRN.W2: pairs with DRN.W1. */
		uint32_t seq = atomic_load_explicit(&dr->seq, memory_order_seq_cst);
		if (empty(ctx) || atomic_load_explicit(&dr->ends, memory_order_seq_cst) != ends)
			return true;
		if (deadline != INT64_MAX && kwq__mono_now() >= deadline)
			return false;
		kwq__futex_wait(&dr->seq, seq, deadline);
	}
}

#endif
