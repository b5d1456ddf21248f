/*
 * clock_test.c - white-box tests of the metrics clock (core/clock.h)
 * against CLOCK_MONOTONIC.
 *
 *   - after calibration it reads within 1 ms of CLOCK_MONOTONIC;
 *   - over intervals of 20 ms its rate is CLOCK_MONOTONIC's within 0.2%
 *     (calibration is good to a few parts in 10^5; NTP may slew
 *     CLOCK_MONOTONIC by up to 5 parts in 10^4) plus 20 us;
 *   - read after read on one thread it never goes back by more than 1 us
 *     (a migration between CPUs whose counters the kernel synchronized);
 *   - with a fake clock it reads the fake clock's time.
 *
 * Each comparison reads the metrics clock between two reads of
 * CLOCK_MONOTONIC and keeps the narrowest of several such brackets, so a
 * preemption between the reads does not count.  Prints which clock is in
 * use (the counter needs the kernel's clocksource to be "tsc").  Exit status
 * 0 on success (meson protocol 'exitcode').
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/clock.h"
#include "kwq.h"

#include "expect.h"

static int failures;

/* (monotonic, metrics) read together: the metrics clock inside the
 * narrowest of 32 brackets; the monotonic time is the bracket's middle. */
static void pair(int64_t *mono, int64_t *metrics)
{
	int64_t best = INT64_MAX;
	for (int i = 0; i < 32; i++) {
		int64_t a = kwq__mono_now();
		int64_t m = kwq__metrics_now(NULL);
		int64_t b = kwq__mono_now();
		if (i == 0 || b - a < best) {
			best = b - a;
			*mono = a + (b - a) / 2;
			*metrics = m;
		}
	}
}

static void sleep_ms(long ms)
{
	struct timespec ts = { 0, ms * 1000000L };
	nanosleep(&ts, NULL);
}

static void test_offset(void)
{
	int64_t mono, m;
	pair(&mono, &m);
	EXPECT(llabs(m - mono) < 1000000);
}

static void test_rate(void)
{
	for (int round = 0; round < 5; round++) {
		int64_t c0, m0, c1, m1;
		pair(&c0, &m0);
		sleep_ms(20);
		pair(&c1, &m1);
		int64_t dc = c1 - c0, dm = m1 - m0;
		int64_t err = llabs(dm - dc);
		if (err > dc / 500 + 20000)
			fprintf(stderr, "round %d: %" PRId64 " ns by the metrics clock, "
				"%" PRId64 " by CLOCK_MONOTONIC\n", round, dm, dc);
		EXPECT(err <= dc / 500 + 20000);
	}
}

static void test_steps(void)
{
	int64_t prev = kwq__metrics_now(NULL), worst = 0;
	for (int i = 0; i < 2000000; i++) {
		int64_t t = kwq__metrics_now(NULL);
		if (prev - t > worst)
			worst = prev - t;
		prev = t;
	}
	EXPECT(worst <= 1000);
}

static void test_fake(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(12345);
	EXPECT(c != NULL);
	EXPECT(kwq__metrics_now(c) == 12345);
	kwq_clock_fake_step(c, 1000);
	EXPECT(kwq__metrics_now(c) == 13345);
	kwq_clock_free(c);
}

int main(void)
{
	kwq__metrics_clock_init();
	kwq__metrics_clock_init(); /* a second call changes nothing */
	printf("metrics clock: %s\n", atomic_load(&kwq__tsc.on) ? "scaled TSC" : "CLOCK_MONOTONIC");
	test_offset();
	test_rate();
	test_steps();
	test_fake();
	if (failures != 0)
		fprintf(stderr, "%d failures\n", failures);
	return failures != 0;
}
