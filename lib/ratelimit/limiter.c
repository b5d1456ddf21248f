/*
 * limiter.c - the public limiter entry points and the custom limiter.
 *
 * Argument checks live here so that every kind sees only valid input: a
 * non-NULL limiter and key bytes that are never NULL (a zero-length key gets
 * a static byte), which lets the kinds hash and copy keys without special
 * cases.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kwq.h"
#include "../core/alloc.h"
#include "limiter.h"

/* Any non-NULL pointer works for a zero-length key. */
static const unsigned char empty_key[1];

static int key_check(const kwq_limiter_t *l, const void **key, size_t len)
{
	if (l == NULL || (*key == NULL && len > 0) || len > KWQ_KEY_MAX)
		return -EINVAL;
	if (len == 0)
		*key = empty_key;
	return 0;
}

int64_t kwq_limiter_when(kwq_limiter_t *l, const void *key, size_t len)
{
	int err = key_check(l, &key, len);
	if (err != 0)
		return err;
	return l->ops->when(l, key, len);
}

int kwq_limiter_forget(kwq_limiter_t *l, const void *key, size_t len)
{
	int err = key_check(l, &key, len);
	if (err != 0)
		return err;
	l->ops->forget(l, key, len);
	return 0;
}

int kwq_limiter_num_requeues(kwq_limiter_t *l, const void *key, size_t len)
{
	int err = key_check(l, &key, len);
	if (err != 0)
		return err;
	return l->ops->num_requeues(l, key, len);
}

int kwq_limiter_set_max_keys(kwq_limiter_t *l, size_t max_keys)
{
	if (l == NULL)
		return -EINVAL;
	return l->ops->set_max_keys(l, max_keys);
}

void kwq_limiter_free(kwq_limiter_t *l)
{
	if (l != NULL)
		l->ops->destroy(l);
}

/* ------------------------------------------------------------------ custom */

/* The size of the first published struct kwq_limiter_ops (the contract in kwq.h). */
#define KWQ_LIMITER_OPS_SIZE_V1 \
	(offsetof(struct kwq_limiter_ops, destroy) + sizeof(void (*)(void *)))

struct custom_limiter {
	struct kwq_limiter base;
	struct kwq_limiter_ops ops; /* copied: the caller's may be transient */
	void *ctx;
};

static struct custom_limiter *custom(struct kwq_limiter *l)
{
	return (struct custom_limiter *)(void *)l;
}

static int64_t custom_when(struct kwq_limiter *l, const void *key, size_t len)
{
	struct custom_limiter *c = custom(l);
	int64_t d = c->ops.when(c->ctx, key, len);
	/* A negative wait means "now", never an error code to pass on. */
	return d > 0 ? d : 0;
}

static void custom_forget(struct kwq_limiter *l, const void *key, size_t len)
{
	struct custom_limiter *c = custom(l);
	if (c->ops.forget != NULL)
		c->ops.forget(c->ctx, key, len);
}

static int custom_num_requeues(struct kwq_limiter *l, const void *key, size_t len)
{
	struct custom_limiter *c = custom(l);
	if (c->ops.num_requeues == NULL)
		return 0;
	int n = c->ops.num_requeues(c->ctx, key, len);
	/* Negative counts would read as errors to the caller. */
	return n > 0 ? n : 0;
}

static void custom_destroy(struct kwq_limiter *l)
{
	struct custom_limiter *c = custom(l);
	if (c->ops.destroy != NULL)
		c->ops.destroy(c->ctx);
	free(c);
}

/* The callbacks own the keys: there is nothing we could evict. */
static int custom_set_max_keys(struct kwq_limiter *l, size_t max_keys)
{
	(void)l;
	(void)max_keys;
	return -ENOTSUP;
}

static const struct kwq__limiter_ops custom_ops = {
	.when = custom_when,
	.forget = custom_forget,
	.num_requeues = custom_num_requeues,
	.destroy = custom_destroy,
	.set_max_keys = custom_set_max_keys,
};

kwq_limiter_t *kwq_limiter_custom(const struct kwq_limiter_ops *ops, void *ctx)
{
	if (ops == NULL || ops->size < KWQ_LIMITER_OPS_SIZE_V1 || ops->when == NULL) {
		errno = EINVAL;
		return NULL;
	}
	struct custom_limiter *c = kwq__malloc(sizeof *c);
	if (c == NULL) {
		/* ctx is ours from here on (the ops are valid), as documented. */
		if (ops->destroy != NULL)
			ops->destroy(ctx);
		errno = ENOMEM;
		return NULL;
	}
	c->base.ops = &custom_ops;
	memset(&c->ops, 0, sizeof c->ops);
	/* Fields a newer caller added past our layout are not ours to read. */
	memcpy(&c->ops, ops, sizeof c->ops < ops->size ? sizeof c->ops : ops->size);
	c->ops.size = sizeof c->ops;
	c->ctx = ctx;
	return &c->base;
}
