/*
 * exponential.c - client-go's ItemExponentialFailureRateLimiter.
 *
 * The n-th when() of a key since its last forget waits
 * min(max, base * 2^(n-1)).  The reference computes the power in floating
 * point and caps anything above INT64_MAX at max; here the shift is checked
 * before it is made, which gives the same results exactly and never shifts
 * by 64 or more, nor overflows.
 */
#include <errno.h>
#include <stdlib.h>

#include "keytable.h"
#include "../core/alloc.h"
#include "limiter.h"

struct exponential_limiter {
	struct kwq_limiter base;
	struct kwq__keytable *failures;
	int64_t base_ns;
	int64_t max_ns;
};

static struct exponential_limiter *exponential(struct kwq_limiter *l)
{
	return (struct exponential_limiter *)(void *)l;
}

/* min(max, base * 2^exp) for base, max >= 0. */
static int64_t backoff(int64_t base, int64_t max, int exp)
{
	if (base == 0)
		return 0;
	if (exp >= 63 || base > (INT64_MAX >> exp))
		return max;
	int64_t d = base << exp;
	return d < max ? d : max;
}

static int64_t exponential_when(struct kwq_limiter *l, const void *key, size_t len)
{
	struct exponential_limiter *e = exponential(l);
	int before = kwq__keytable_bump(e->failures, key, len);
	if (before < 0)
		return before;
	return backoff(e->base_ns, e->max_ns, before);
}

static void exponential_forget(struct kwq_limiter *l, const void *key, size_t len)
{
	kwq__keytable_forget(exponential(l)->failures, key, len);
}

static int exponential_num_requeues(struct kwq_limiter *l, const void *key, size_t len)
{
	return kwq__keytable_count(exponential(l)->failures, key, len);
}

static void exponential_destroy(struct kwq_limiter *l)
{
	struct exponential_limiter *e = exponential(l);
	kwq__keytable_free(e->failures);
	free(e);
}

static int exponential_set_max_keys(struct kwq_limiter *l, size_t max_keys)
{
	kwq__keytable_set_max_keys(exponential(l)->failures, max_keys);
	return 0;
}

static const struct kwq__limiter_ops exponential_ops = {
	.when = exponential_when,
	.forget = exponential_forget,
	.num_requeues = exponential_num_requeues,
	.destroy = exponential_destroy,
	.set_max_keys = exponential_set_max_keys,
};

kwq_limiter_t *kwq_limiter_exponential(int64_t base_ns, int64_t max_ns)
{
	if (base_ns < 0 || max_ns < 0) {
		errno = EINVAL;
		return NULL;
	}
	struct exponential_limiter *e = kwq__malloc(sizeof *e);
	if (e == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	e->failures = kwq__keytable_new();
	if (e->failures == NULL) {
		free(e);
		errno = ENOMEM;
		return NULL;
	}
	e->base.ops = &exponential_ops;
	e->base_ns = base_ns;
	e->max_ns = max_ns;
	return &e->base;
}
