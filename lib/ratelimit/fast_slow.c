/*
 * fast_slow.c - client-go's ItemFastSlowRateLimiter.
 *
 * A key's first max_fast_attempts when() calls since its last forget wait
 * fast_ns, later ones slow_ns: quick retries for a transient fault, then a
 * slow pace for one that persists.
 */
#include <errno.h>
#include <stdlib.h>

#include "keytable.h"
#include "../core/alloc.h"
#include "limiter.h"

struct fast_slow_limiter {
	struct kwq_limiter base;
	struct kwq__keytable *failures;
	int64_t fast_ns;
	int64_t slow_ns;
	int max_fast_attempts;
};

static struct fast_slow_limiter *fast_slow(struct kwq_limiter *l)
{
	return (struct fast_slow_limiter *)(void *)l;
}

static int64_t fast_slow_when(struct kwq_limiter *l, const void *key, size_t len)
{
	struct fast_slow_limiter *f = fast_slow(l);
	int before = kwq__keytable_bump(f->failures, key, len);
	if (before < 0)
		return before;
	/* This call is attempt before + 1: fast while that is <= the limit. */
	return before < f->max_fast_attempts ? f->fast_ns : f->slow_ns;
}

static void fast_slow_forget(struct kwq_limiter *l, const void *key, size_t len)
{
	kwq__keytable_forget(fast_slow(l)->failures, key, len);
}

static int fast_slow_num_requeues(struct kwq_limiter *l, const void *key, size_t len)
{
	return kwq__keytable_count(fast_slow(l)->failures, key, len);
}

static void fast_slow_destroy(struct kwq_limiter *l)
{
	struct fast_slow_limiter *f = fast_slow(l);
	kwq__keytable_free(f->failures);
	free(f);
}

static int fast_slow_set_max_keys(struct kwq_limiter *l, size_t max_keys)
{
	kwq__keytable_set_max_keys(fast_slow(l)->failures, max_keys);
	return 0;
}

static const struct kwq__limiter_ops fast_slow_ops = {
	.when = fast_slow_when,
	.forget = fast_slow_forget,
	.num_requeues = fast_slow_num_requeues,
	.destroy = fast_slow_destroy,
	.set_max_keys = fast_slow_set_max_keys,
};

kwq_limiter_t *kwq_limiter_fast_slow(int64_t fast_ns, int64_t slow_ns, int max_fast_attempts)
{
	if (fast_ns < 0 || slow_ns < 0 || max_fast_attempts < 0) {
		errno = EINVAL;
		return NULL;
	}
	struct fast_slow_limiter *f = kwq__malloc(sizeof *f);
	if (f == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	f->failures = kwq__keytable_new();
	if (f->failures == NULL) {
		free(f);
		errno = ENOMEM;
		return NULL;
	}
	f->base.ops = &fast_slow_ops;
	f->fast_ns = fast_ns;
	f->slow_ns = slow_ns;
	f->max_fast_attempts = max_fast_attempts;
	return &f->base;
}
