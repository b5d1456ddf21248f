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
#include "alloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

struct kwq__tsc_scale kwq__tsc;

#if defined(__x86_64__)
/*
 * One (counter, CLOCK_MONOTONIC) pair, the counter read on both sides of
 * the clock: the pair of the narrowest of a few brackets, the counter
 * taken at its middle.  A bracket a preemption or an interrupt widened is
 * thrown away.  Returns the bracket's width in ticks.
 */
static uint64_t tsc_pair(uint64_t *tsc, int64_t *ns)
{
	uint64_t best = UINT64_MAX;

	for (int i = 0; i < 16; i++) {
		uint64_t a = __builtin_ia32_rdtsc();
		int64_t m = kwq__mono_now();
		uint64_t b = __builtin_ia32_rdtsc();
		if (b > a && b - a < best) {
			best = b - a;
			*tsc = a + (b - a) / 2;
			*ns = m;
		}
	}
	return best;
}

/* Whether the kernel keeps time with the counter. */
static int kernel_uses_tsc(void)
{
	char buf[32] = "";
	FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
	if (f == NULL)
		return 0;
	int ok = fgets(buf, sizeof buf, f) != NULL && strcmp(buf, "tsc\n") == 0;
	fclose(f);
	return ok;
}

#define CALIBRATE_NS 1000000 /* 1 ms: brackets of ~50 ns give ~5e-5 */

static void tsc_calibrate(void)
{
	uint64_t t0, t1;
	int64_t n0, n1;

	if (!kernel_uses_tsc() || tsc_pair(&t0, &n0) == UINT64_MAX)
		return;
	do {
		if (tsc_pair(&t1, &n1) == UINT64_MAX)
			return;
	} while (n1 - n0 < CALIBRATE_NS);
	if (t1 <= t0)
		return;
	/* ns per tick in 32.32; sane for counters of 100 MHz to 20 GHz */
	uint64_t mult = (uint64_t)(((kwq__u128)(uint64_t)(n1 - n0) << 32) / (t1 - t0));
	if (mult < (UINT64_C(1) << 32) / 20 || mult > (UINT64_C(10) << 32))
		return;
	kwq__tsc.tsc0 = t1;
	kwq__tsc.ns0 = n1;
	kwq__tsc.mult = mult;
	/* CLK.T1: pairs with CLK.T2: readers see the scale set above. */
	atomic_store_explicit(&kwq__tsc.on, 1, memory_order_release);
}
#else
static void tsc_calibrate(void)
{
}
#endif

void kwq__metrics_clock_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, tsc_calibrate);
}

kwq_clock_t *kwq_clock_fake_new(int64_t start_ns)
{
	kwq_clock_t *c = kwq__calloc(1, sizeof *c);
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
