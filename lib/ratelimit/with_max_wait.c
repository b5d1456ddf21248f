/*
 * with_max_wait.c - client-go's WithMaxWaitRateLimiter: caps the wait of
 * an inner limiter, so that a key with a long backoff is still retried at
 * least every max_wait_ns.
 */
#include <errno.h>
#include <stdlib.h>

#include "limiter.h"
#include "../core/alloc.h"

struct with_max_wait_limiter {
	struct kwq_limiter base;
	kwq_limiter_t *inner; /* owned */
	int64_t max_wait_ns;
};

static struct with_max_wait_limiter *with_max_wait(struct kwq_limiter *l)
{
	return (struct with_max_wait_limiter *)(void *)l;
}

static int64_t with_max_wait_when(struct kwq_limiter *l, const void *key, size_t len)
{
	struct with_max_wait_limiter *w = with_max_wait(l);
	int64_t d = w->inner->ops->when(w->inner, key, len);
	/* An error (negative) passes through; it is not a short wait. */
	return d > w->max_wait_ns ? w->max_wait_ns : d;
}

static void with_max_wait_forget(struct kwq_limiter *l, const void *key, size_t len)
{
	struct with_max_wait_limiter *w = with_max_wait(l);
	w->inner->ops->forget(w->inner, key, len);
}

static int with_max_wait_num_requeues(struct kwq_limiter *l, const void *key, size_t len)
{
	struct with_max_wait_limiter *w = with_max_wait(l);
	return w->inner->ops->num_requeues(w->inner, key, len);
}

static void with_max_wait_destroy(struct kwq_limiter *l)
{
	struct with_max_wait_limiter *w = with_max_wait(l);
	kwq_limiter_free(w->inner);
	free(w);
}

/* A custom inner limiter is skipped (its -ENOTSUP is not passed on). */
static int with_max_wait_set_max_keys(struct kwq_limiter *l, size_t max_keys)
{
	struct with_max_wait_limiter *w = with_max_wait(l);
	(void)w->inner->ops->set_max_keys(w->inner, max_keys);
	return 0;
}

static const struct kwq__limiter_ops with_max_wait_ops = {
	.when = with_max_wait_when,
	.forget = with_max_wait_forget,
	.num_requeues = with_max_wait_num_requeues,
	.destroy = with_max_wait_destroy,
	.set_max_keys = with_max_wait_set_max_keys,
};

kwq_limiter_t *kwq_limiter_with_max_wait(kwq_limiter_t *inner, int64_t max_wait_ns)
{
	if (inner == NULL || max_wait_ns < 0) {
		kwq_limiter_free(inner);
		errno = EINVAL;
		return NULL;
	}
	struct with_max_wait_limiter *w = kwq__malloc(sizeof *w);
	if (w == NULL) {
		kwq_limiter_free(inner);
		errno = ENOMEM;
		return NULL;
	}
	w->base.ops = &with_max_wait_ops;
	w->inner = inner;
	w->max_wait_ns = max_wait_ns;
	return &w->base;
}
