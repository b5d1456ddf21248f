/*
 * park.h - parking idle consumers: an eventcount with a gated, chained wake.
 *
 * A consumer that finds nothing to take spins a bounded time, then parks on
 * a futex of its own; a producer that has just published calls
 * kwq__park_notify(), which costs two loads and no syscall while nobody is
 * parked.  The protocol, in the style of Go's scheduler (wakep and
 * spinning Ms):
 *
 *   nidle      threads parked (or committed to park: registered, about to
 *              sleep).  Changed only under lock, by seq_cst RMWs.
 *   nspinning  the wake token count: threads spinning for work, plus
 *              parked threads that were woken and have not yet looked.
 *              A producer wakes only when nidle > 0 and nspinning == 0,
 *              and only by winning the CAS nspinning 0 -> 1: so at most
 *              one wake is in flight, and none while anyone spins.
 *   idle list  the parked waiters (LIFO, under lock), each sleeping on its
 *              own futex word.  The waker pops a specific waiter and hands
 *              it the token it won: no ambiguity about who was woken, so no
 *              token can be left behind when a waiter leaves on its own.
 *
 * Every thread that gives a token back (stops spinning, or was woken) looks
 * again afterwards: a woken thread that took an item and was the last
 * spinner wakes the next sleeper if work remains (the chain), and so does
 * a spinner that gives up (a token holder that saw it spin left the chain
 * to it), which then re-checks before it parks.  This bounds wakes by the
 * work found, not by the adds made.
 *
 * StoreLoad edges (all seq_cst on both sides; see sharded.c for the table):
 *   producer: publish (seq_cst RMW)      ; load nidle, load nspinning  (PARK.N1)
 *   waiter:   nidle++ (seq_cst RMW) (PARK.E1) ; re-check the source         (PARK.E2)
 *   spinner:  nspinning-- (seq_cst) (PARK.E3) ; re-check the source         (PARK.E2)
 *
 * Synchronization: every call may run concurrently with every other call
 * on the same struct kwq__park, except init and destroy (exclusive).
 */
#ifndef KWQ_CORE_PARK_H
#define KWQ_CORE_PARK_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "dlist.h"

struct kwq__park_waiter;

struct kwq__park {
	/* Read by every producer after every publish: keep it read-mostly. */
	alignas(64) _Atomic uint32_t nidle;
	_Atomic uint32_t nspinning;
	_Atomic bool closed;
	uint32_t max_spinning;          /* spinners allowed at once */
	int64_t spin_ns;                /* how long a consumer spins */

	alignas(64) pthread_mutex_t lock;
	struct kwq__dlist idle;          /* parked waiters, newest first */
	_Atomic uint64_t wakes;         /* futex wakes issued (tests, tuning) */
};

/* What a consumer waits for. */
struct kwq__park_source {
	/* Take an item, or NULL when none is there now. */
	void *(*take)(void *ctx);
	/*
	 * Whether take() may succeed now.  Must read with seq_cst loads (PARK.E2):
	 * it is the re-check after the waiter's announcement.
	 */
	bool (*pending)(void *ctx);
	void *ctx;
};

/* ncpu: online CPUs; sizes the spin budget and the spinner limit. */
void kwq__park_init(struct kwq__park *p, unsigned ncpu);
void kwq__park_destroy(struct kwq__park *p);

/* The slow half of kwq__park_notify(); also the chain wake. */
void kwq__park_wake(struct kwq__park *p);

/*
 * kwq__park_notify - call after publishing an item (with a seq_cst RMW).
 * No syscall and no RMW while nobody is parked, or while a thread spins.
 */
static inline void kwq__park_notify(struct kwq__park *p)
{
	/* PARK.N1: pairs with PARK.E1 and PARK.E3 (StoreLoad; seq_cst on both sides). */
	if (atomic_load_explicit(&p->nidle, memory_order_seq_cst) != 0 &&
	    atomic_load_explicit(&p->nspinning, memory_order_seq_cst) == 0)
		kwq__park_wake(p);
}

/*
 * kwq__park_close - from now on nobody parks and every parked thread is
 * woken; kwq__park_get() returns -ESHUTDOWN once take() finds nothing.
 */
void kwq__park_close(struct kwq__park *p);

static inline bool kwq__park_closed(struct kwq__park *p)
{
	return atomic_load_explicit(&p->closed, memory_order_seq_cst);
}

/*
 * kwq__park_get - take an item from src, spinning and then parking while
 * there is none.  deadline is an absolute CLOCK_MONOTONIC time,
 * KWQ__DEADLINE_POLL or KWQ__DEADLINE_NONE (ops.h).
 * Returns 0 with *out set, -ESHUTDOWN (closed and nothing to take), or
 * -ETIMEDOUT.
 */
int kwq__park_get(struct kwq__park *p, const struct kwq__park_source *src,
		  int64_t deadline, void **out);

#endif
