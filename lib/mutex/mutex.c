/*
 * mutex.c - the reference design: a literal port of client-go's
 * util/workqueue Type (queue.go), and the oracle for differential tests.
 *
 * One mutex guards everything; one condition variable wakes getters, a
 * second wakes drainers.  The shape is client-go's:
 *
 *   queue       FIFO of items waiting to be handed out (a growable ring)
 *   dirty       set of items that need processing
 *   processing  set of items currently held by a worker
 *
 * Invariants (under the mutex):
 *   I1  every item in queue is in dirty and not in processing;
 *   I2  an item is in queue at most once;
 *   I3  an item in dirty and processing (held+dirty) is not in queue;
 *   I4  an entry is allocated exactly while it is in dirty or processing.
 *
 * So the item states of the API are: queued = dirty and not processing;
 * held = processing and not dirty; held+dirty = both.
 *
 * Differences from the reference, as API.md states them: done takes the
 * handle a get returned, so a done of something not held is -EINVAL instead
 * of queueing a duplicate; a refused add returns -ESHUTDOWN; drain waits for
 * queued and held items, and a kwq_shutdown during it ends it.
 *
 * The sets are ConcurrencyKit ck_hs in object mode holding struct kwq_item
 * pointers with precomputed hashes.  They are touched only under the mutex,
 * so single-writer (SPMC) mode suffices and ThreadSanitizer sees every edge
 * through the mutex (libck itself is not instrumented).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include <ck_hs.h>

#include "../core/key.h"
#include "../core/ops.h"

#define HS_MODE (CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT)
#define HS_INITIAL 64
#define FIFO_INITIAL 64

struct mutex_queue {
	struct kwq base;

	pthread_mutex_t lock;
	pthread_cond_t cond;      /* getters: an item was queued, or shutdown */
	pthread_cond_t drained;   /* drainers: empty, or kwq_shutdown */

	/* FIFO ring: items[(head + i) & (cap - 1)] for i < count. */
	struct kwq_item **items;
	size_t head, count, cap;

	ck_hs_t dirty;
	ck_hs_t processing;

	bool shutting_down;
	unsigned long shutdown_calls; /* kwq_shutdown() calls: ends drains */
};

static struct mutex_queue *mq(struct kwq *q)
{
	return kwq__container_of(q, struct mutex_queue, base);
}

static int fifo_push(struct mutex_queue *m, struct kwq_item *it)
{
	if (m->count == m->cap) {
		size_t ncap = m->cap * 2;
		struct kwq_item **n = malloc(ncap * sizeof *n);
		if (n == NULL)
			return -ENOMEM;
		for (size_t i = 0; i < m->count; i++)
			n[i] = m->items[(m->head + i) & (m->cap - 1)];
		free(m->items);
		m->items = n;
		m->head = 0;
		m->cap = ncap;
	}
	m->items[(m->head + m->count) & (m->cap - 1)] = it;
	m->count++;
	return 0;
}

static struct kwq_item *fifo_pop(struct mutex_queue *m)
{
	struct kwq_item *it = m->items[m->head];
	m->head = (m->head + 1) & (m->cap - 1);
	m->count--;
	return it;
}

static struct kwq_item *set_get(ck_hs_t *s, const struct kwq_item *probe)
{
	return ck_hs_get(s, (unsigned long)probe->hash, probe);
}

static struct kwq *mutex_create(const struct kwq *base, const struct kwq_config *cfg)
{
	(void)cfg;
	struct mutex_queue *m = calloc(1, sizeof *m);
	if (m == NULL)
		goto enomem;
	m->base = *base;
	m->cap = FIFO_INITIAL;
	m->items = malloc(m->cap * sizeof *m->items);
	if (m->items == NULL)
		goto free_m;
	if (!ck_hs_init(&m->dirty, HS_MODE, kwq__item_hs_hash, kwq__item_hs_compare,
			&kwq__ck_allocator, HS_INITIAL, base->seed))
		goto free_items;
	if (!ck_hs_init(&m->processing, HS_MODE, kwq__item_hs_hash,
			kwq__item_hs_compare, &kwq__ck_allocator, HS_INITIAL, base->seed))
		goto free_dirty;

	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->cond, &ca);
	pthread_cond_init(&m->drained, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&m->lock, NULL);
	return &m->base;

free_dirty:
	ck_hs_destroy(&m->dirty);
free_items:
	free(m->items);
free_m:
	free(m);
enomem:
	errno = ENOMEM;
	return NULL;
}

static void mutex_destroy(struct kwq *q)
{
	struct mutex_queue *m = mq(q);
	ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
	void *obj;

	/* I4: free each entry once; held+dirty ones are in both sets. */
	while (ck_hs_next(&m->processing, &it, &obj)) {
		if (set_get(&m->dirty, obj) == NULL)
			free(obj);
	}
	ck_hs_iterator_init(&it);
	while (ck_hs_next(&m->dirty, &it, &obj))
		free(obj);
	ck_hs_destroy(&m->processing);
	ck_hs_destroy(&m->dirty);
	free(m->items);
	pthread_cond_destroy(&m->drained);
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static bool is_empty(const struct mutex_queue *m)
{
	return m->count == 0 && ck_hs_count((ck_hs_t *)&m->processing) == 0;
}

static int mutex_add(struct kwq *q, const struct kwq_key *k)
{
	struct mutex_queue *m = mq(q);
	struct kwq_item probe, *it;
	int rc = 0;

	kwq__item_probe(&probe, k);
	pthread_mutex_lock(&m->lock);
	if (m->shutting_down) {
		rc = -ESHUTDOWN;
		goto out;
	}
	if (set_get(&m->dirty, &probe) != NULL)
		goto out; /* queued or held+dirty: nothing to do */

	it = set_get(&m->processing, &probe);
	bool held = it != NULL;
	if (!held) {
		it = kwq__entry_new(sizeof *it, 0, k);
		if (it == NULL) {
			rc = -ENOMEM;
			goto out;
		}
	}
	if (!ck_hs_put(&m->dirty, (unsigned long)it->hash, it)) {
		rc = -ENOMEM;
		goto undo;
	}
	if (held)
		goto out; /* held -> held+dirty: queued again by done */
	if (fifo_push(m, it) != 0) {
		ck_hs_remove(&m->dirty, (unsigned long)it->hash, it);
		rc = -ENOMEM;
		goto undo;
	}
	pthread_cond_signal(&m->cond);
	goto out;
undo:
	if (!held)
		free(it);
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

static void deadline_timespec(int64_t deadline, struct timespec *ts)
{
	ts->tv_sec = (time_t)(deadline / 1000000000);
	ts->tv_nsec = (long)(deadline % 1000000000);
}

static int mutex_get(struct kwq *q, struct kwq_item **item, int64_t deadline)
{
	struct mutex_queue *m = mq(q);
	struct timespec ts;
	int rc = 0;

	if (deadline != KWQ_DEADLINE_NONE && deadline != KWQ_DEADLINE_POLL)
		deadline_timespec(deadline, &ts);

	pthread_mutex_lock(&m->lock);
	while (m->count == 0 && !m->shutting_down) {
		if (deadline == KWQ_DEADLINE_POLL) {
			rc = -ETIMEDOUT;
			goto out;
		}
		if (deadline == KWQ_DEADLINE_NONE) {
			pthread_cond_wait(&m->cond, &m->lock);
		} else if (pthread_cond_timedwait(&m->cond, &m->lock, &ts) == ETIMEDOUT &&
			   m->count == 0 && !m->shutting_down) {
			rc = -ETIMEDOUT;
			goto out;
		}
	}
	if (m->count == 0) {
		rc = -ESHUTDOWN;
		goto out;
	}
	struct kwq_item *it = fifo_pop(m);
	/*
	 * Insert into processing before removing from dirty, as the
	 * reference does; the put cannot lose the item: on ENOMEM it goes
	 * back to the head and the get fails without changing anything.
	 */
	if (!ck_hs_put(&m->processing, (unsigned long)it->hash, it)) {
		m->head = (m->head + m->cap - 1) & (m->cap - 1);
		m->items[m->head] = it;
		m->count++;
		rc = -ENOMEM;
		goto out;
	}
	ck_hs_remove(&m->dirty, (unsigned long)it->hash, it);
	it->priority = 0;
	*item = it;
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

static int mutex_done(struct kwq *q, struct kwq_item *it)
{
	struct mutex_queue *m = mq(q);
	int rc = 0;

	pthread_mutex_lock(&m->lock);
	if (set_get(&m->processing, it) != it) {
		rc = -EINVAL;
		goto out;
	}
	if (set_get(&m->dirty, it) != NULL) {
		/* held+dirty -> queued at the tail */
		if (fifo_push(m, it) != 0) {
			rc = -ENOMEM;
			goto out;
		}
		ck_hs_remove(&m->processing, (unsigned long)it->hash, it);
		pthread_cond_signal(&m->cond);
	} else {
		ck_hs_remove(&m->processing, (unsigned long)it->hash, it);
		free(it);
	}
	if (m->shutting_down && is_empty(m))
		pthread_cond_broadcast(&m->drained);
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

static size_t mutex_len(struct kwq *q)
{
	struct mutex_queue *m = mq(q);
	pthread_mutex_lock(&m->lock);
	size_t n = m->count;
	pthread_mutex_unlock(&m->lock);
	return n;
}

static int mutex_state(struct kwq *q, const struct kwq_key *k)
{
	struct mutex_queue *m = mq(q);
	struct kwq_item probe;

	kwq__item_probe(&probe, k);
	pthread_mutex_lock(&m->lock);
	bool dirty = set_get(&m->dirty, &probe) != NULL;
	bool processing = set_get(&m->processing, &probe) != NULL;
	pthread_mutex_unlock(&m->lock);
	if (processing)
		return dirty ? KWQ__HELD_DIRTY : KWQ__HELD;
	return dirty ? KWQ__QUEUED : KWQ__ABSENT;
}

static void mutex_shutdown(struct kwq *q, bool drain)
{
	struct mutex_queue *m = mq(q);

	pthread_mutex_lock(&m->lock);
	m->shutting_down = true;
	pthread_cond_broadcast(&m->cond);
	if (!drain) {
		m->shutdown_calls++;
		pthread_cond_broadcast(&m->drained);
	} else {
		unsigned long calls = m->shutdown_calls;
		while (!is_empty(m) && m->shutdown_calls == calls)
			pthread_cond_wait(&m->drained, &m->lock);
	}
	pthread_mutex_unlock(&m->lock);
}

static bool mutex_shutting_down(struct kwq *q)
{
	struct mutex_queue *m = mq(q);
	pthread_mutex_lock(&m->lock);
	bool s = m->shutting_down;
	pthread_mutex_unlock(&m->lock);
	return s;
}

const struct kwq_ops kwq__mutex_ops = {
	.name = "mutex",
	.create = mutex_create,
	.destroy = mutex_destroy,
	.add = mutex_add,
	.get = mutex_get,
	.done = mutex_done,
	.len = mutex_len,
	.state = mutex_state,
	.shutdown = mutex_shutdown,
	.shutting_down = mutex_shutting_down,
};
