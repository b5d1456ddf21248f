/*
 * clock.c - the monotonic clock and fake clocks.
 *
 * A fake clock is one atomic word plus the list of timer threads sleeping
 * on it.  Stepping is a CAS loop so that concurrent steps add up and
 * saturate instead of wrapping; the new time is stored with release (CLK.C1)
 * and read with acquire (CLK.C2), so a timer thread woken by a step, or any
 * thread that reads the clock after a step it knows of, sees the new time
 * and everything the stepping thread did before it.
 */
#include "clock.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "kwq.h"

int64_t kwq__mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t kwq_clock_now(const kwq_clock_t *c)
{
	if (c == NULL)
		return kwq__mono_now();
	/* CLK.C2 pairs with CLK.C1 */
	return atomic_load_explicit(&((kwq_clock_t *)c)->now, memory_order_acquire);
}

kwq_clock_t *kwq_clock_fake_new(int64_t start_ns)
{
	kwq_clock_t *c = calloc(1, sizeof *c);
	if (c == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	atomic_init(&c->now, start_ns);
	pthread_mutex_init(&c->lock, NULL);
	return c;
}

void kwq_clock_fake_step(kwq_clock_t *c, int64_t delta_ns)
{
	if (c == NULL || delta_ns <= 0)
		return;
	int64_t cur = atomic_load_explicit(&c->now, memory_order_relaxed);
	/* CLK.C1 pairs with CLK.C2 */
	while (!atomic_compare_exchange_weak_explicit(&c->now, &cur,
			kwq__sat_add(cur, delta_ns), memory_order_release,
			memory_order_relaxed))
		;
	pthread_mutex_lock(&c->lock);
	for (struct kwq__clock_waiter *w = c->waiters; w != NULL; w = w->next)
		w->wake(w);
	pthread_mutex_unlock(&c->lock);
}

void kwq__clock_watch(kwq_clock_t *c, struct kwq__clock_waiter *w)
{
	pthread_mutex_lock(&c->lock);
	w->next = c->waiters;
	c->waiters = w;
	pthread_mutex_unlock(&c->lock);
}

void kwq__clock_unwatch(kwq_clock_t *c, struct kwq__clock_waiter *w)
{
	pthread_mutex_lock(&c->lock);
	for (struct kwq__clock_waiter **p = &c->waiters; *p != NULL; p = &(*p)->next) {
		if (*p == w) {
			*p = w->next;
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
}

void kwq_clock_free(kwq_clock_t *c)
{
	if (c == NULL)
		return;
	pthread_mutex_destroy(&c->lock);
	free(c);
}
