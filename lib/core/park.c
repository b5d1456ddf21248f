/*
 * park.c - the eventcount behind blocking gets (protocol in park.h).
 *
 * Waiters sleep on a futex word of their own, on their stack.  A waker
 * changes that word under the park lock and calls FUTEX_WAKE after
 * unlocking; by then the waiter may have seen the word, returned and
 * reused its stack.  That is harmless: FUTEX_WAKE only hashes the address,
 * and every futex user tolerates a spurious wake.  The waker never touches
 * the waiter's memory after unlocking.
 *
 * Acquire/release pairs (seq_cst edges are listed in park.h):
 *   PARK.W1 (store state WOKEN/CLOSED, release, under lock) pairs with
 *   PARK.W2 (load state, acquire, in sleep()): the woken thread sees what the
 *       waker did before waking it.  The lock orders everything else.
 */
#include "park.h"

#include <errno.h>

#include "ops.h" /* before clock.h: it uses kwq_clock_t */
#include "clock.h"
#include "futex.h"
#include "inject.h"

enum { W_PARKED = 0, W_WOKEN = 1, W_CLOSED = 2 };

struct kwq__park_waiter {
	_Atomic uint32_t state;          /* the futex word */
	struct kwq__dlink link;          /* in p->idle, under p->lock */
};

static struct kwq__park_waiter *waiter_of(struct kwq__dlink *l)
{
	return l == NULL ? NULL : kwq__container_of(l, struct kwq__park_waiter, link);
}

void kwq__park_init(struct kwq__park *p, unsigned ncpu)
{
	if (ncpu == 0)
		ncpu = 1;
	atomic_init(&p->nidle, 0);
	atomic_init(&p->nspinning, 0);
	atomic_init(&p->closed, false);
	atomic_init(&p->wakes, 0);
	/* Go's rule: spinners at most half the CPUs, at least one. */
	p->max_spinning = ncpu / 2 > 0 ? ncpu / 2 : 1;
	/*
	 * About 2 us of spinning covers a producer's next add on another
	 * core (a futex round trip costs ~50 us here); with few cores the
	 * spinner is likely to hold a CPU a producer or worker needs.
	 */
	p->spin_ns = ncpu > 2 ? 2000 : 1000;
	pthread_mutex_init(&p->lock, NULL);
	kwq__dlist_init(&p->idle);
}

void kwq__park_destroy(struct kwq__park *p)
{
	pthread_mutex_destroy(&p->lock);
}

/* Under p->lock. */
static void idle_push(struct kwq__park *p, struct kwq__park_waiter *w)
{
	kwq__dlist_push_front(&p->idle, &w->link);
}

/* Under p->lock. */
static void idle_unlink(struct kwq__park *p, struct kwq__park_waiter *w)
{
	kwq__dlist_unlink(&p->idle, &w->link);
	atomic_fetch_sub_explicit(&p->nidle, 1, memory_order_seq_cst);
}

void kwq__park_wake(struct kwq__park *p)
{
	for (;;) {
		uint32_t zero = 0;
		/* The token: at most one wake in flight, none while anyone spins. */
		if (!atomic_compare_exchange_strong_explicit(&p->nspinning, &zero, 1,
							     memory_order_seq_cst,
							     memory_order_relaxed))
			return; /* its holder looks for work after it */
		KWQ__YIELD();
		pthread_mutex_lock(&p->lock);
		struct kwq__park_waiter *w = waiter_of(p->idle.head);
		if (w != NULL) {
			idle_unlink(p, w);
			/* PARK.W1: pairs with PARK.W2; hands the token to w. */
			atomic_store_explicit(&w->state, W_WOKEN, memory_order_release);
			pthread_mutex_unlock(&p->lock);
			kwq__futex_wake(&w->state, 1);
			atomic_fetch_add_explicit(&p->wakes, 1, memory_order_relaxed);
			return;
		}
		pthread_mutex_unlock(&p->lock);
		/*
		 * Nobody to wake: give the token back (PARK.E3), then look at nidle
		 * again.  A producer may have skipped its wake because it saw
		 * our token, while a waiter registered after our look at the
		 * list; either we see that waiter now, or its re-check (PARK.E2)
		 * comes after our PARK.E3 in the seq_cst order and sees the item.
		 */
		atomic_fetch_sub_explicit(&p->nspinning, 1, memory_order_seq_cst);
		if (atomic_load_explicit(&p->nidle, memory_order_seq_cst) == 0)
			return;
	}
}

void kwq__park_close(struct kwq__park *p)
{
	atomic_store_explicit(&p->closed, true, memory_order_seq_cst);
	pthread_mutex_lock(&p->lock);
	struct kwq__park_waiter *w;
	while ((w = waiter_of(p->idle.head)) != NULL) {
		idle_unlink(p, w);
		/* PARK.W1 */
		atomic_store_explicit(&w->state, W_CLOSED, memory_order_release);
		kwq__futex_wake(&w->state, 1);
	}
	pthread_mutex_unlock(&p->lock);
}

/* Register w as parked; false when closed (do not sleep). */
static bool prepare(struct kwq__park *p, struct kwq__park_waiter *w)
{
	atomic_store_explicit(&w->state, W_PARKED, memory_order_relaxed);
	pthread_mutex_lock(&p->lock);
	if (atomic_load_explicit(&p->closed, memory_order_relaxed)) {
		pthread_mutex_unlock(&p->lock);
		return false;
	}
	idle_push(p, w);
	/* PARK.E1: pairs with PARK.N1 (StoreLoad; the re-check PARK.E2 follows). */
	atomic_fetch_add_explicit(&p->nidle, 1, memory_order_seq_cst);
	pthread_mutex_unlock(&p->lock);
	return true;
}

/*
 * Leave the idle list.  Returns W_PARKED if w was still on it (no token),
 * W_WOKEN if a waker popped it (w now holds a token), W_CLOSED on close.
 */
static uint32_t cancel(struct kwq__park *p, struct kwq__park_waiter *w)
{
	pthread_mutex_lock(&p->lock);
	uint32_t s = atomic_load_explicit(&w->state, memory_order_relaxed);
	if (s == W_PARKED)
		idle_unlink(p, w);
	pthread_mutex_unlock(&p->lock);
	return s;
}

static uint32_t sleep_on(struct kwq__park *p, struct kwq__park_waiter *w, int64_t deadline)
{
	for (;;) {
		/* PARK.W2: pairs with PARK.W1. */
		uint32_t s = atomic_load_explicit(&w->state, memory_order_acquire);
		if (s != W_PARKED)
			return s;
		if (deadline != KWQ__DEADLINE_NONE && kwq__mono_now() >= deadline)
			return cancel(p, w);
		kwq__futex_wait(&w->state, W_PARKED, deadline);
	}
}

/* Give the token back after taking an item: the chain wake. */
static void hand_off(struct kwq__park *p, const struct kwq__park_source *src)
{
	/* PARK.E3: pairs with PARK.N1. */
	if (atomic_fetch_sub_explicit(&p->nspinning, 1, memory_order_seq_cst) == 1 &&
	    atomic_load_explicit(&p->nidle, memory_order_seq_cst) != 0 &&
	    src->pending(src->ctx))
		kwq__park_wake(p);
}

/* Give the token back without taking anything, and leave. */
static void give_up(struct kwq__park *p, const struct kwq__park_source *src)
{
	/* PARK.E3: pairs with PARK.N1. */
	atomic_fetch_sub_explicit(&p->nspinning, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&p->nidle, memory_order_seq_cst) != 0 &&
	    src->pending(src->ctx))
		kwq__park_wake(p);
}

static bool spin_begin(struct kwq__park *p)
{
	if (atomic_load_explicit(&p->nspinning, memory_order_relaxed) >= p->max_spinning)
		return false;
	atomic_fetch_add_explicit(&p->nspinning, 1, memory_order_seq_cst);
	return true;
}

/* Spin until src may have something (true) or the budget is spent. */
static bool spin(struct kwq__park *p, const struct kwq__park_source *src, int64_t deadline)
{
	int64_t end = kwq__sat_add(kwq__mono_now(), p->spin_ns);
	if (end > deadline)
		end = deadline;
	for (;;) {
		for (int i = 0; i < 16; i++) {
			if (src->pending(src->ctx) || kwq__park_closed(p))
				return true;
			kwq__cpu_relax();
		}
		if (kwq__mono_now() >= end)
			return false;
	}
}

int kwq__park_get(struct kwq__park *p, const struct kwq__park_source *src,
		  int64_t deadline, void **out)
{
	bool token = false; /* we hold one unit of nspinning */

	for (;;) {
		void *it = src->take(src->ctx);
		if (it == NULL && kwq__park_closed(p)) {
			/* The close may have come after take() looked: look again. */
			it = src->take(src->ctx);
			if (it == NULL) {
				if (token)
					give_up(p, src);
				return -ESHUTDOWN;
			}
		}
		if (it != NULL) {
			if (token)
				hand_off(p, src);
			*out = it;
			return 0;
		}
		if (deadline == KWQ__DEADLINE_POLL ||
		    (deadline != KWQ__DEADLINE_NONE && kwq__mono_now() >= deadline)) {
			if (token)
				give_up(p, src);
			return -ETIMEDOUT;
		}

		if (!token)
			token = spin_begin(p);
		if (token) {
			if (spin(p, src, deadline))
				continue;
			/*
			 * PARK.E3, then PARK.E2: a producer that saw us spin did
			 * not wake, nor did a token holder that saw us spin as
			 * it took an item (hand_off): give the token back as
			 * give_up does, waking a parked thread when work is
			 * pending.  (Dropping it and then taking an item without
			 * it left that chain to nobody: stress/burst_probe saw
			 * a worker parked 30 ms with items queued.)
			 */
			give_up(p, src);
			token = false;
			if (src->pending(src->ctx))
				continue;
			if (deadline != KWQ__DEADLINE_NONE && kwq__mono_now() >= deadline)
				continue; /* report the timeout at the top */
		}

		struct kwq__park_waiter w;
		if (!prepare(p, &w))
			continue; /* closed */
		KWQ__YIELD();
		/* PARK.E2: the re-check after PARK.E1. */
		if (src->pending(src->ctx) || kwq__park_closed(p)) {
			if (cancel(p, &w) == W_WOKEN)
				token = true;
			continue;
		}
		if (sleep_on(p, &w, deadline) == W_WOKEN)
			token = true;
	}
}
