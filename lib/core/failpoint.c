/*
 * failpoint.c - the allocation failpoint (alloc.h), compiled into the
 * kwq-failpoints archive only (built with KWQ__FAILPOINTS).
 */
#include "alloc.h"

#include <stdatomic.h>

static _Atomic long seen;         /* allocations since the last arm */
static _Atomic long fail_at = -1; /* the first that fails; < 0: none */
static _Atomic bool persist;

/* Relaxed throughout: a test arms the failpoint while no call is in flight
 * and reads the count after the calls it made returned (and the timer
 * thread's allocations are counted, not ordered). */
bool kwq__failpoint(void)
{
	long n = atomic_fetch_add_explicit(&seen, 1, memory_order_relaxed);
	long at = atomic_load_explicit(&fail_at, memory_order_relaxed);
	if (at < 0 || n < at)
		return false;
	return n == at || atomic_load_explicit(&persist, memory_order_relaxed);
}

void kwq__failpoint_arm(long n, bool p)
{
	atomic_store_explicit(&fail_at, -1, memory_order_relaxed);
	atomic_store_explicit(&seen, 0, memory_order_relaxed);
	atomic_store_explicit(&persist, p, memory_order_relaxed);
	atomic_store_explicit(&fail_at, n, memory_order_relaxed);
}

long kwq__failpoint_count(void)
{
	return atomic_load_explicit(&seen, memory_order_relaxed);
}
