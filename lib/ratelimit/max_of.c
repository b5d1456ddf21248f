/*
 * max_of.c - client-go's MaxOfRateLimiter: the worst case of its children.
 *
 * Every child's when() is called, even when an earlier one already gave
 * the largest wait, because each call is also a failure the child counts
 * (the exponential child must keep doubling while the bucket decides).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "limiter.h"
#include "../core/alloc.h"

struct max_of_limiter {
	struct kwq_limiter base;
	size_t n;
	kwq_limiter_t *children[]; /* owned */
};

static struct max_of_limiter *max_of(struct kwq_limiter *l)
{
	return (struct max_of_limiter *)(void *)l;
}

static int64_t max_of_when(struct kwq_limiter *l, const void *key, size_t len)
{
	struct max_of_limiter *m = max_of(l);
	int64_t worst = 0, err = 0;

	for (size_t i = 0; i < m->n; i++) {
		kwq_limiter_t *c = m->children[i];
		int64_t d = c->ops->when(c, key, len);
		if (d < 0 && err == 0)
			err = d;
		else if (d > worst)
			worst = d;
	}
	return err != 0 ? err : worst;
}

static void max_of_forget(struct kwq_limiter *l, const void *key, size_t len)
{
	struct max_of_limiter *m = max_of(l);

	for (size_t i = 0; i < m->n; i++)
		m->children[i]->ops->forget(m->children[i], key, len);
}

static int max_of_num_requeues(struct kwq_limiter *l, const void *key, size_t len)
{
	struct max_of_limiter *m = max_of(l);
	int most = 0;

	for (size_t i = 0; i < m->n; i++) {
		kwq_limiter_t *c = m->children[i];
		int r = c->ops->num_requeues(c, key, len);
		if (r > most)
			most = r;
	}
	return most;
}

static void max_of_destroy(struct kwq_limiter *l)
{
	struct max_of_limiter *m = max_of(l);

	for (size_t i = 0; i < m->n; i++)
		kwq_limiter_free(m->children[i]);
	free(m);
}

/* Every child that remembers keys gets the cap; custom ones are skipped. */
static int max_of_set_max_keys(struct kwq_limiter *l, size_t max_keys)
{
	struct max_of_limiter *m = max_of(l);

	for (size_t i = 0; i < m->n; i++)
		(void)m->children[i]->ops->set_max_keys(m->children[i], max_keys);
	return 0;
}

static const struct kwq__limiter_ops max_of_ops = {
	.when = max_of_when,
	.forget = max_of_forget,
	.num_requeues = max_of_num_requeues,
	.destroy = max_of_destroy,
	.set_max_keys = max_of_set_max_keys,
};

static bool seen_before(kwq_limiter_t *const *limiters, size_t i)
{
	for (size_t j = 0; j < i; j++) {
		if (limiters[j] == limiters[i])
			return true;
	}
	return false;
}

/* Ownership passes also on failure: free each distinct child once. */
static kwq_limiter_t *fail(kwq_limiter_t *const *limiters, size_t n, int err)
{
	for (size_t i = 0; i < n; i++) {
		if (!seen_before(limiters, i))
			kwq_limiter_free(limiters[i]);
	}
	errno = err;
	return NULL;
}

kwq_limiter_t *kwq_limiter_max_of(kwq_limiter_t *const *limiters, size_t n)
{
	if (limiters == NULL && n > 0) {
		errno = EINVAL;
		return NULL;
	}
	/* A child listed twice would be freed twice. */
	for (size_t i = 0; i < n; i++) {
		if (limiters[i] == NULL || seen_before(limiters, i))
			return fail(limiters, n, EINVAL);
	}
	if (n > (SIZE_MAX - sizeof(struct max_of_limiter)) / sizeof(kwq_limiter_t *))
		return fail(limiters, n, ENOMEM);
	struct max_of_limiter *m = kwq__malloc(sizeof *m + n * sizeof(kwq_limiter_t *));
	if (m == NULL)
		return fail(limiters, n, ENOMEM);
	m->base.ops = &max_of_ops;
	m->n = n;
	for (size_t i = 0; i < n; i++)
		m->children[i] = limiters[i];
	return &m->base;
}
