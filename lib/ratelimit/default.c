/*
 * default.c - client-go's DefaultControllerRateLimiter: per-key exponential
 * backoff from 5 ms to 1000 s, and an overall 10 qps bucket with a burst of
 * 100, whichever waits longer.  The bucket bounds the retry rate of the
 * whole queue even when many distinct keys fail at once.
 */
#include <errno.h>
#include <stddef.h>

#include "limiter.h"

#define MS 1000000LL
#define S 1000000000LL

kwq_limiter_t *kwq__limiter_default_on(kwq_clock_t *clock)
{
	kwq_limiter_t *children[2];

	children[0] = kwq_limiter_exponential(5 * MS, 1000 * S);
	if (children[0] == NULL)
		return NULL;
	children[1] = kwq_limiter_bucket(10.0, 100, clock);
	if (children[1] == NULL) {
		int err = errno;
		kwq_limiter_free(children[0]);
		errno = err;
		return NULL;
	}
	return kwq_limiter_max_of(children, 2);
}

kwq_limiter_t *kwq_limiter_default(void)
{
	return kwq__limiter_default_on(NULL);
}
