/* row.h - the implementation a stress program runs on, from its argv[1]. */
#ifndef KWQ_STRESS_ROW_H
#define KWQ_STRESS_ROW_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <kwq.h>

/* "mutex" or "sharded" into *impl; false (and a message) otherwise. */
static inline bool stress_row(const char *name, enum kwq_impl *impl)
{
	if (strcmp(name, "mutex") == 0)
		*impl = KWQ_IMPL_MUTEX;
	else if (strcmp(name, "sharded") == 0)
		*impl = KWQ_IMPL_SHARDED;
	else {
		fprintf(stderr, "unknown row %s\n", name);
		return false;
	}
	return true;
}

/* CLOCK_MONOTONIC in nanoseconds. */
static inline int64_t stress_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sleep ns nanoseconds, through signals. */
static inline void stress_sleep_ns(int64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

#endif
