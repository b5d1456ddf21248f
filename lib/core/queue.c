/*
 * queue.c - the public entry points.
 *
 * Everything an implementation would otherwise repeat lives here: argument
 * checks (bad input returns -EINVAL before any state is touched), key
 * hashing with the queue's seed, the timeout-to-deadline conversion, and the
 * choice of implementation.  The implementations behind struct kwq__ops see
 * only valid input.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../delay/delay.h"
#include "alloc.h"
#include "../metrics/metrics.h"
#include "../ratelimit/limiter.h"
#include "clock.h"
#include "kwq.h"
#include "ops.h"

/* The sizes of the first published option structs (the contract in kwq.h). */
#define KWQ_ADD_OPTS_SIZE_V1 \
	(offsetof(struct kwq_add_opts, priority) + sizeof(int))
#define KWQ_CONFIG_SIZE_V1 \
	(offsetof(struct kwq_config, limiter) + sizeof(kwq_limiter_t *))

#define KWQ__SHARDS_MAX 65536u

/* Any non-NULL pointer works for a zero-length key. */
static const unsigned char empty_key[1];

static bool key_valid(const void *key, size_t len)
{
	return (key != NULL || len == 0) && len <= KWQ_KEY_MAX;
}

static int key_check(const kwq_t *q, const void *key, size_t len, struct kwq__key *k)
{
	if (q == NULL || !key_valid(key, len))
		return -EINVAL;
	k->bytes = len > 0 ? key : empty_key;
	k->len = (uint32_t)len;
	k->hash = kwq__hash(k->bytes, len, q->seed);
	return 0;
}

kwq_t *kwq_new(const struct kwq_config *cfg)
{
	struct kwq_config c = KWQ_CONFIG_INIT;
	int err = EINVAL;

	if (cfg != NULL) {
		if (cfg->size < KWQ_CONFIG_SIZE_V1) {
			errno = EINVAL;
			return NULL;
		}
		memcpy(&c, cfg, sizeof c < cfg->size ? sizeof c : cfg->size);
		c.size = sizeof c;
	}
	/* From here on the queue owns c.limiter: freed on any failure. */
	struct kwq base = {
		.seed = kwq__random_seed(),
		.clock = c.clock,
		.limiter = c.limiter,
	};
	switch (c.impl) {
	case KWQ_IMPL_MUTEX:
		base.ops = &kwq__mutex_ops;
		break;
	case KWQ_IMPL_SHARDED:
		base.ops = &kwq__sharded_ops;
		break;
	default:
		goto fail;
	}
	if (c.shards > KWQ__SHARDS_MAX || c.max_attempts < 0)
		goto fail;
	base.max_attempts = c.max_attempts;
	base.on_give_up = c.on_give_up;
	base.give_up_ctx = c.give_up_ctx;

	err = ENOMEM;
	if (base.limiter == NULL) {
		base.limiter = kwq__limiter_default_on(c.clock);
		if (base.limiter == NULL)
			goto fail;
	}
	if (c.name != NULL) {
		kwq__metrics_clock_init(); /* the metrics' timestamps */
		base.name = kwq__strdup(c.name);
		base.retries = kwq__retries_new();
		if (base.name == NULL || base.retries == NULL)
			goto fail;
	}
	kwq_t *q = base.ops->create(&base, &c);
	if (q == NULL) {
		err = errno;
		goto fail;
	}
	kwq__delay_init(&q->delays);
	atomic_init(&q->give_ups, 0);
	return q;

fail:
	kwq_limiter_free(base.limiter);
	kwq__retries_free(base.retries);
	free(base.name);
	errno = err;
	return NULL;
}

void kwq_free(kwq_t *q)
{
	if (q == NULL)
		return;
	char *name = q->name;
	kwq_limiter_t *limiter = q->limiter;
	struct kwq__retry_stripe *retries = q->retries;
	/* The timer thread adds through ops: stop it before the queue goes. */
	kwq__delay_fini(q);
	q->ops->shutdown(q, false, KWQ__DEADLINE_NONE);
	q->ops->destroy(q);
	kwq_limiter_free(limiter);
	kwq__retries_free(retries);
	free(name);
}

/* An immediate add: the implementation cancels a wait of the key in the
 * add's own critical section (kwq__ops.add), so the delay layer is not on
 * this path at all. */
static int add_now(kwq_t *q, const struct kwq__key *k, int prio)
{
	return q->ops->add(q, k, prio);
}

int kwq_add(kwq_t *q, const void *key, size_t len)
{
	struct kwq__key k;
	int rc = key_check(q, key, len, &k);
	if (rc != 0)
		return rc;
	return add_now(q, &k, 0);
}

static int add_delayed(kwq_t *q, const struct kwq__key *k, int64_t delay_ns, int prio,
		       bool replace)
{
	if (delay_ns <= 0)
		return add_now(q, k, prio);
	if (q->ops->shutting_down(q))
		return -ESHUTDOWN;
	return kwq__delay_add(q, k, delay_ns, prio, replace);
}

/* An accepted retry of a named queue (client-go counts it in AddAfter);
 * an unnamed queue pays the test of q->name. */
static int count_retry(kwq_t *q, const struct kwq__key *k, int rc)
{
	if (rc == 0 && q->name != NULL)
		kwq__retries_inc(q->retries, k->hash);
	return rc;
}

int kwq_add_after(kwq_t *q, const void *key, size_t len, int64_t delay_ns)
{
	struct kwq__key k;
	int rc = key_check(q, key, len, &k);
	if (rc != 0)
		return rc;
	return count_retry(q, &k, add_delayed(q, &k, delay_ns, 0, false));
}

int kwq_add_rate_limited(kwq_t *q, const void *key, size_t len)
{
	struct kwq__key k;
	int rc = key_check(q, key, len, &k);
	if (rc != 0)
		return rc;
	/* when() counts a failure even if the add is then refused */
	int64_t wait = kwq_limiter_when(q->limiter, key, len);
	if (wait < 0)
		return (int)wait;
	return count_retry(q, &k, add_delayed(q, &k, wait, 0, false));
}

/* Fields of struct kwq_add_opts past the caller's size read as zero. */
#define OPTS_HAS(o, f) ((o)->size >= offsetof(struct kwq_add_opts, f) + sizeof((o)->f))

static bool opts_valid(const struct kwq_add_opts *opts)
{
	return opts != NULL && opts->size >= KWQ_ADD_OPTS_SIZE_V1;
}

/* kwq_add_with on a checked key and valid opts. */
static int add_with(kwq_t *q, const struct kwq__key *k, const struct kwq_add_opts *opts)
{
	int64_t wait = opts->after_ns > 0 ? opts->after_ns : 0;
	if (opts->rate_limited) {
		/* controller-runtime: the limiter's wait when no delay was
		 * asked, else the lower of the two */
		int64_t w = kwq_limiter_when(q->limiter, k->bytes, k->len);
		if (w < 0)
			return (int)w;
		if (wait == 0 || w < wait)
			wait = w;
	}
	bool replace = OPTS_HAS(opts, replace) && opts->replace;
	int rc = add_delayed(q, k, wait, opts->priority, replace);
	if (opts->after_ns > 0 || opts->rate_limited)
		count_retry(q, k, rc);
	return rc;
}

int kwq_add_with(kwq_t *q, const void *key, size_t len, const struct kwq_add_opts *opts)
{
	struct kwq__key k;
	int rc = key_check(q, key, len, &k);
	if (rc != 0)
		return rc;
	if (!opts_valid(opts))
		return -EINVAL;
	return add_with(q, &k, opts);
}

/* kwq_add_many's immediate adds through the implementation's add_many,
 * hashed a run at a time. */
static int add_many_now(kwq_t *q, const struct kwq_key_ref *keys, size_t n, int prio)
{
	enum { RUN = 32 };
	struct kwq__key run[RUN];
	size_t done = 0;

	while (done < n) {
		size_t m = n - done < RUN ? n - done : RUN, accepted;
		for (size_t i = 0; i < m; i++)
			key_check(q, keys[done + i].key, keys[done + i].len, &run[i]);
		int rc = q->ops->add_many(q, run, m, prio, &accepted);
		done += accepted;
		if (rc < 0)
			return done > 0 ? (int)done : rc;
	}
	return (int)n;
}

int kwq_add_many(kwq_t *q, const struct kwq_key_ref *keys, size_t n,
		 const struct kwq_add_opts *opts)
{
	struct kwq__key k;

	if (q == NULL || (keys == NULL && n > 0) || n > INT_MAX ||
	    (opts != NULL && !opts_valid(opts)))
		return -EINVAL;
	/* Every key first: a bad one adds nothing. */
	for (size_t i = 0; i < n; i++)
		if (!key_valid(keys[i].key, keys[i].len))
			return -EINVAL;
	if (q->ops->add_many != NULL &&
	    (opts == NULL || (opts->after_ns <= 0 && !opts->rate_limited)))
		return add_many_now(q, keys, n, opts == NULL ? 0 : opts->priority);
	for (size_t i = 0; i < n; i++) {
		key_check(q, keys[i].key, keys[i].len, &k);
		int rc = opts == NULL ? add_now(q, &k, 0) : add_with(q, &k, opts);
		if (rc < 0)
			return i > 0 ? (int)i : rc;
	}
	return (int)n;
}

int kwq_cancel(kwq_t *q, const void *key, size_t len)
{
	struct kwq__key k;
	int rc = key_check(q, key, len, &k);
	if (rc != 0)
		return rc;
	return q->ops->cancel(q, &k, false);
}

int kwq_forget(kwq_t *q, const void *key, size_t len)
{
	if (q == NULL)
		return -EINVAL;
	return kwq_limiter_forget(q->limiter, key, len);
}

int kwq_num_requeues(kwq_t *q, const void *key, size_t len)
{
	if (q == NULL)
		return -EINVAL;
	return kwq_limiter_num_requeues(q->limiter, key, len);
}

kwq_limiter_t *kwq_limiter(kwq_t *q)
{
	return q == NULL ? NULL : q->limiter;
}

int kwq_item_priority(const kwq_item_t *item)
{
	return item == NULL ? 0 : item->priority;
}

int kwq_get(kwq_t *q, kwq_item_t **item)
{
	if (q == NULL || item == NULL)
		return -EINVAL;
	return q->ops->get(q, item, KWQ__DEADLINE_NONE);
}

int kwq_try_get(kwq_t *q, kwq_item_t **item)
{
	if (q == NULL || item == NULL)
		return -EINVAL;
	int rc = q->ops->get(q, item, KWQ__DEADLINE_POLL);
	return rc == -ETIMEDOUT ? -EAGAIN : rc;
}

int kwq_get_timeout(kwq_t *q, kwq_item_t **item, int64_t timeout_ns)
{
	if (q == NULL || item == NULL)
		return -EINVAL;
	int64_t deadline = timeout_ns <= 0 ? KWQ__DEADLINE_POLL
					   : kwq__sat_add(kwq__mono_now(), timeout_ns);
	return q->ops->get(q, item, deadline);
}

const void *kwq_item_key(const kwq_item_t *item, size_t *len)
{
	if (item == NULL) {
		if (len != NULL)
			*len = 0;
		return NULL;
	}
	if (len != NULL)
		*len = item->len;
	return item->bytes;
}

int kwq_done(kwq_t *q, kwq_item_t *item)
{
	if (q == NULL || item == NULL)
		return -EINVAL;
	return q->ops->done(q, item);
}

int kwq_done_many(kwq_t *q, kwq_item_t *const *items, size_t n)
{
	if (q == NULL || (items == NULL && n > 0))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (items[i] == NULL)
			return -EINVAL;
	for (size_t i = 0; i < n; i++)
		q->ops->done(q, items[i]);
	return 0;
}

int kwq_get_batch(kwq_t *q, kwq_item_t **items, size_t max, int64_t timeout_ns)
{
	if (q == NULL || items == NULL || max == 0)
		return -EINVAL;
	if (max > INT_MAX)
		max = INT_MAX;
	int64_t deadline = timeout_ns == KWQ_FOREVER ? KWQ__DEADLINE_NONE
			 : timeout_ns <= 0 ? KWQ__DEADLINE_POLL
					   : kwq__sat_add(kwq__mono_now(), timeout_ns);
	if (q->ops->get_batch != NULL) {
		int n = q->ops->get_batch(q, items, max, deadline);
		return n == -ETIMEDOUT && deadline == KWQ__DEADLINE_POLL ? -EAGAIN : n;
	}
	int rc = q->ops->get(q, &items[0], deadline);
	if (rc != 0)
		return rc == -ETIMEDOUT && deadline == KWQ__DEADLINE_POLL ? -EAGAIN : rc;
	/* The rest as consecutive gets that do not wait. */
	size_t n = 1;
	while (n < max && q->ops->get(q, &items[n], KWQ__DEADLINE_POLL) == 0)
		n++;
	return (int)n;
}

bool kwq_item_dirty(kwq_t *q, const kwq_item_t *item)
{
	return q != NULL && item != NULL && q->ops->item_dirty(q, item);
}

/* A KWQ_RETRY: the rate-limited add, or the give-up of max_attempts. */
static int finish_retry(kwq_t *q, const struct kwq__key *k)
{
	if (q->max_attempts > 0 &&
	    kwq_limiter_num_requeues(q->limiter, k->bytes, k->len) >= q->max_attempts) {
		kwq_limiter_forget(q->limiter, k->bytes, k->len);
		if (q->name != NULL)
			atomic_fetch_add_explicit(&q->give_ups, 1, memory_order_relaxed);
		if (q->on_give_up != NULL)
			q->on_give_up(q->give_up_ctx, k->bytes, k->len);
		return 0;
	}
	int64_t wait = kwq_limiter_when(q->limiter, k->bytes, k->len);
	if (wait < 0)
		return (int)wait;
	return count_retry(q, k, add_delayed(q, k, wait, 0, false));
}

int kwq_finish(kwq_t *q, kwq_item_t *item, enum kwq_outcome outcome, int64_t after_ns)
{
	return kwq__finish(q, item, outcome, after_ns, false);
}

int kwq__finish(kwq_t *q, kwq_item_t *item, enum kwq_outcome outcome, int64_t after_ns,
		bool hold_on_nomem)
{
	if (q == NULL || item == NULL)
		return -EINVAL;
	switch ((int)outcome) {
	case KWQ_OK:
	case KWQ_RETRY:
	case KWQ_DROP:
		break;
	case KWQ_RETRY_AFTER:
		if (after_ns < 0)
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}
	/* The key as the handle holds it: valid until the done below. */
	const struct kwq__key k = { .bytes = item->bytes, .len = item->len, .hash = item->hash };
	int rc = 0;
	switch ((int)outcome) {
	case KWQ_OK:
		kwq_limiter_forget(q->limiter, k.bytes, k.len);
		break;
	case KWQ_RETRY:
		rc = finish_retry(q, &k);
		break;
	case KWQ_RETRY_AFTER:
		rc = count_retry(q, &k, add_delayed(q, &k, after_ns, 0, false));
		break;
	default: /* KWQ_DROP: the wait only; an add made while held stays */
		kwq_limiter_forget(q->limiter, k.bytes, k.len);
		q->ops->cancel(q, &k, true);
		break;
	}
	if (rc == -ENOMEM && hold_on_nomem)
		return rc; /* the caller still holds the handle */
	q->ops->done(q, item); /* never fails on a held handle */
	return rc < 0 ? rc : 0;
}

size_t kwq_len(kwq_t *q)
{
	return q == NULL ? 0 : q->ops->len(q);
}

void kwq_shutdown(kwq_t *q)
{
	if (q == NULL)
		return;
	kwq__delay_stop(q);
	q->ops->shutdown(q, false, KWQ__DEADLINE_NONE);
}

void kwq_shutdown_drain(kwq_t *q)
{
	if (q == NULL)
		return;
	kwq__delay_stop(q);
	q->ops->shutdown(q, true, KWQ__DEADLINE_NONE);
}

int kwq_shutdown_drain_timeout(kwq_t *q, int64_t timeout_ns)
{
	if (q == NULL)
		return -EINVAL;
	int64_t now = kwq__mono_now();
	kwq__delay_stop(q);
	return q->ops->shutdown(q, true, timeout_ns > 0 ? kwq__sat_add(now, timeout_ns) : now);
}

bool kwq_shutting_down(kwq_t *q)
{
	return q != NULL && q->ops->shutting_down(q);
}

/* ------------------------------------------------------------------------ */
/* Metrics                                                                   */

/* Every field after size, as kwq_metrics_read copies them. */
static const struct {
	size_t offset, size;
} metrics_fields[] = {
#define FIELD(f) { offsetof(struct kwq_metrics, f), sizeof(((struct kwq_metrics *)0)->f) }
	FIELD(depth),
	FIELD(adds_total),
	FIELD(retries_total),
	FIELD(queue_duration),
	FIELD(work_duration),
	FIELD(unfinished_work_seconds),
	FIELD(longest_running_processor_seconds),
	FIELD(delayed),
	FIELD(give_ups_total),
#undef FIELD
};

/* The whole struct for a named queue, zeros for an unnamed one. */
static int metrics_now(kwq_t *q, struct kwq_metrics *m)
{
	*m = (struct kwq_metrics){ .size = sizeof *m };
	if (q->name == NULL)
		return 0;
	q->ops->metrics(q, m, kwq__metrics_now(q->clock));
	m->retries_total = kwq__retries_sum(q->retries);
	m->give_ups_total = atomic_load_explicit(&q->give_ups, memory_order_relaxed);
	return 0;
}

int kwq_metrics_read(kwq_t *q, struct kwq_metrics *m)
{
	if (q == NULL || m == NULL || m->size < offsetof(struct kwq_metrics, depth))
		return -EINVAL;
	struct kwq_metrics all;
	int rc = metrics_now(q, &all);
	if (rc != 0)
		return rc;
	for (size_t i = 0; i < sizeof metrics_fields / sizeof metrics_fields[0]; i++) {
		size_t off = metrics_fields[i].offset, n = metrics_fields[i].size;
		if (off + n <= m->size)
			memcpy((char *)m + off, (const char *)&all + off, n);
	}
	return 0;
}

/* Up to this many named queues an exposition's series and names live on
 * the stack: the single-queue call never allocates. */
#define PROM_ON_STACK 8

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Whether two of the n names are equal: sorted, then neighbours compared
 * (O(n log n) for a service with many queues).  Reorders names[]. */
static bool names_repeat(const char **names, size_t n)
{
	qsort(names, n, sizeof *names, name_cmp);
	for (size_t i = 1; i < n; i++)
		if (strcmp(names[i - 1], names[i]) == 0)
			return true;
	return false;
}

int kwq_metrics_prometheus_all(kwq_t *const *queues, size_t n, char *buf, size_t cap)
{
	if ((queues == NULL && n > 0) || (buf == NULL && cap > 0))
		return -EINVAL;
	size_t named = 0;
	for (size_t i = 0; i < n; i++)
		named += queues[i] != NULL && queues[i]->name != NULL;

	struct kwq__metrics_series stack_series[PROM_ON_STACK], *series = stack_series;
	const char *stack_names[PROM_ON_STACK], **names = stack_names;
	if (named > PROM_ON_STACK) {
		series = kwq__calloc(named, sizeof *series);
		names = kwq__calloc(named, sizeof *names);
		if (series == NULL || names == NULL) {
			free(series);
			free(names);
			return -ENOMEM;
		}
	}
	int rc = 0;
	for (size_t i = 0, j = 0; i < n; i++) {
		if (queues[i] != NULL && queues[i]->name != NULL)
			names[j++] = queues[i]->name;
	}
	if (names_repeat(names, named)) {
		rc = -EINVAL; /* duplicate series make the scrape invalid */
		goto out;
	}
	for (size_t i = 0, j = 0; i < n; i++) {
		kwq_t *q = queues[i];
		if (q == NULL || q->name == NULL)
			continue;
		series[j].name = q->name;
		rc = metrics_now(q, &series[j].m);
		if (rc != 0)
			goto out;
		j++;
	}
	size_t len = kwq__metrics_prometheus_write(series, named, buf, cap);
	rc = len > INT_MAX ? -EOVERFLOW : (int)len;
out:
	if (series != stack_series) {
		free(series);
		free(names);
	}
	return rc;
}

int kwq_metrics_prometheus(kwq_t *q, char *buf, size_t cap)
{
	if (q == NULL)
		return -EINVAL;
	return kwq_metrics_prometheus_all(&q, 1, buf, cap);
}
