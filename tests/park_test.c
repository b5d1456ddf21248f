/*
 * park_test.c - white-box tests of the eventcount (lib/core/park.c).
 *
 * The source is a counter of available items: take() decrements it if it
 * is positive, pending() reads it (seq_cst).  Checks: no wake (no syscall)
 * while nobody is parked; poll and timeout; close wakes every parked
 * thread; a burst into a fully parked pool is taken in bounded time with
 * with wakes bounded by the consumers, not the items (the gate); repeated single items to parked
 * consumers are never lost (the token is never leaked).
 * Exit status 0 on success (meson protocol 'exitcode').
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ops.h"
#include "core/clock.h"
#include "core/park.h"

#include "expect.h"

static int failures;

struct src {
	struct kwq__park park;
	_Atomic long items;
	_Atomic long taken;
	_Atomic int done;
};

static void *take(void *ctx)
{
	struct src *s = ctx;
	long n = atomic_load(&s->items);
	while (n > 0) {
		if (atomic_compare_exchange_weak(&s->items, &n, n - 1))
			return (void *)s; /* any non-NULL pointer */
	}
	return NULL;
}

static bool pending(void *ctx)
{
	struct src *s = ctx;
	return atomic_load_explicit(&s->items, memory_order_seq_cst) > 0;
}

static struct kwq__park_source source(struct src *s)
{
	return (struct kwq__park_source){ .take = take, .pending = pending, .ctx = s };
}

static void publish(struct src *s, long n)
{
	atomic_fetch_add_explicit(&s->items, n, memory_order_seq_cst);
	kwq__park_notify(&s->park);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

/* Wait (bounded) until n threads are parked. */
static bool wait_parked(struct src *s, uint32_t n)
{
	for (int i = 0; i < 5000; i++) {
		if (atomic_load(&s->park.nidle) == n)
			return true;
		sleep_ms(1);
	}
	return false;
}

static void test_no_wake_when_idle(void)
{
	struct src s;
	memset(&s, 0, sizeof s);
	kwq__park_init(&s.park, 2);
	struct kwq__park_source src = source(&s);
	for (int i = 0; i < 100000; i++) {
		publish(&s, 1);
		void *out;
		EXPECT(kwq__park_get(&s.park, &src, KWQ__DEADLINE_POLL, &out) == 0);
	}
	EXPECT(atomic_load(&s.park.wakes) == 0);
	EXPECT(atomic_load(&s.park.nspinning) == 0);
	kwq__park_destroy(&s.park);
}

static void test_poll_and_timeout(void)
{
	struct src s;
	memset(&s, 0, sizeof s);
	kwq__park_init(&s.park, 2);
	struct kwq__park_source src = source(&s);
	void *out;
	EXPECT(kwq__park_get(&s.park, &src, KWQ__DEADLINE_POLL, &out) == -ETIMEDOUT);
	int64_t t0 = kwq__mono_now();
	EXPECT(kwq__park_get(&s.park, &src, t0 + 30000000, &out) == -ETIMEDOUT);
	int64_t dt = kwq__mono_now() - t0;
	EXPECT(dt >= 30000000);
	EXPECT(atomic_load(&s.park.nidle) == 0);
	EXPECT(atomic_load(&s.park.nspinning) == 0);
	kwq__park_close(&s.park);
	EXPECT(kwq__park_get(&s.park, &src, KWQ__DEADLINE_NONE, &out) == -ESHUTDOWN);
	publish(&s, 1); /* closed: still handed out */
	EXPECT(kwq__park_get(&s.park, &src, KWQ__DEADLINE_NONE, &out) == 0);
	kwq__park_destroy(&s.park);
}

static void *consumer(void *arg)
{
	struct src *s = arg;
	struct kwq__park_source src = source(s);
	void *out;
	while (kwq__park_get(&s->park, &src, KWQ__DEADLINE_NONE, &out) == 0)
		atomic_fetch_add(&s->taken, 1);
	return NULL;
}

#define CONSUMERS 6

static void test_close_wakes_all(void)
{
	struct src s;
	memset(&s, 0, sizeof s);
	kwq__park_init(&s.park, 2);
	pthread_t t[CONSUMERS];
	for (int i = 0; i < CONSUMERS; i++)
		pthread_create(&t[i], NULL, consumer, &s);
	EXPECT(wait_parked(&s, CONSUMERS));
	kwq__park_close(&s.park);
	for (int i = 0; i < CONSUMERS; i++)
		pthread_join(t[i], NULL);
	EXPECT(atomic_load(&s.park.nidle) == 0);
	EXPECT(atomic_load(&s.park.nspinning) == 0);
	kwq__park_destroy(&s.park);
}

/* Bursts into a fully parked pool, and single items, many rounds. */
static void test_bursts(int rounds)
{
	struct src s;
	memset(&s, 0, sizeof s);
	kwq__park_init(&s.park, 2);
	pthread_t t[CONSUMERS];
	for (int i = 0; i < CONSUMERS; i++)
		pthread_create(&t[i], NULL, consumer, &s);

	long expect = 0;
	for (int r = 0; r < rounds; r++) {
		EXPECT(wait_parked(&s, CONSUMERS));
		/*
		 * 0: 1000 items in one publish; 1: one item; 2: 1000 items one
		 * publish each (delivery only: a producer slower than the spin
		 * window may legitimately wake once per item).
		 */
		int kind = r % 3;
		long burst = kind == 1 ? 1 : 1000;
		uint64_t wakes0 = atomic_load(&s.park.wakes);
		if (kind == 2) {
			for (long i = 0; i < burst; i++)
				publish(&s, 1);
		} else {
			publish(&s, burst);
		}
		expect += burst;
		int64_t t0 = kwq__mono_now();
		while (atomic_load(&s.taken) < expect) {
			if (kwq__mono_now() - t0 > 2000000000) {
				fprintf(stderr, "round %d: %ld of %ld taken after 2 s (lost wake-up)\n",
					r, atomic_load(&s.taken), expect);
				failures++;
				goto out;
			}
			sleep_ms(1);
		}
		/* The gate: wakes are bounded by the consumers, not the items. */
		uint64_t wakes = atomic_load(&s.park.wakes) - wakes0;
		if (kind != 2 && wakes > 2 * CONSUMERS) {
			fprintf(stderr, "round %d: %llu wakes for %ld items\n", r,
				(unsigned long long)wakes, burst);
			failures++;
			goto out;
		}
	}
out:
	kwq__park_close(&s.park);
	for (int i = 0; i < CONSUMERS; i++)
		pthread_join(t[i], NULL);
	EXPECT(atomic_load(&s.park.nspinning) == 0);
	kwq__park_destroy(&s.park);
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 60;

	test_no_wake_when_idle();
	test_poll_and_timeout();
	test_close_wakes_all();
	test_bursts(rounds);
	if (failures != 0) {
		fprintf(stderr, "park_test: %d failure(s)\n", failures);
		return 1;
	}
	fprintf(stderr, "park_test: ok\n");
	return 0;
}
