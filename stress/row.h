/* row.h - the implementation a stress program runs on, from its argv[1]. */
#ifndef KWQ_STRESS_ROW_H
#define KWQ_STRESS_ROW_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/* ROW [--seconds S]: the row into *impl, S into *seconds (left as it is
 * when absent); false (and a message) when the row is missing or wrong. */
static inline bool stress_row_args(int argc, char **argv, enum kwq_impl *impl,
				   double *seconds)
{
	if (argc < 2 || !stress_row(argv[1], impl))
		return false;
	for (int i = 2; i < argc; i++)
		if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			*seconds = atof(argv[++i]);
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
