/*
 * mutex.c - the reference design: a literal port of client-go's
 * util/workqueue Type (queue.go), with controller-runtime's priorities, and
 * the oracle for differential tests.
 *
 * One mutex guards everything; a notify list wakes getters, and drainers
 * wait as every design's do (core/drain.h).  The shape is client-go's:
 *
 *   queue       items waiting to be handed out: one FIFO per priority level
 *               in use (levels[], highest first), each an intrusive list
 *   dirty       set of items that need processing
 *   processing  set of items currently held by a worker
 *   waiting     set of items with a pending delayed add (absent or held):
 *               client-go keeps these in its delaying queue's goroutine;
 *               here the wait is the item's own state (e->wait), decided
 *               under the same mutex as its add, get and done
 *
 * Invariants (under the mutex):
 *   I1  every item in queue is in dirty and not in processing;
 *   I2  an item is in queue at most once, in the level of its qprio;
 *   I3  an item in dirty and processing (held+dirty) is not in queue; its
 *       dprio is the highest priority asked since it was handed out;
 *   I4  an entry is allocated exactly while it is in dirty, processing or
 *       waiting;
 *   I5  count = the items in queue; no level is empty;
 *   I6  an item is in waiting iff e->wait != NULL, and then it is not in
 *       dirty (a queued or held+dirty item is due: a delayed add of it is
 *       absorbed, an immediate add or a firing ends the wait);
 *   I7  cap >= nlevels + reserve, reserve = the held+dirty items: the
 *       re-queue of each on done finds room for a level, so done cannot
 *       fail.
 *
 * So the item states of the API are: queued = dirty and not processing;
 * held = processing and not dirty; held+dirty = both.  kwq_cancel, under the
 * mutex: a queued item leaves the FIFO and dirty (and is freed), a
 * held+dirty one leaves dirty (giving back its reserve, I7), a waiting one
 * leaves waiting as when an add ends the wait.  kwq_item_dirty reads
 * e->dirty, a copy of "in dirty and processing" kept under the mutex,
 * without taking it.
 *
 * Differences from the reference, as the header states them: done takes the
 * handle a get returned, so a done of something not held is -EINVAL instead
 * of queueing a duplicate; a refused add returns -ESHUTDOWN; drain waits for
 * queued and held items, and a kwq_shutdown during it ends it.  Priorities
 * follow controller-runtime: highest first, FIFO within a level, a raise
 * moves a queued item to the tail of its new level, never lowered.
 *
 * Metrics (named queues): one block, updated under the mutex at the points
 * client-go's queue.go calls its metrics (a counted add is an add of an item
 * not in dirty), with the clock read under the mutex too, so that a get
 * never reads a time before its add's.  The held items' gauges are summed
 * over processing when read.
 *
 * Getters wait in a notify list, as Go's sync.Cond (which client-go's
 * queue waits on) does: each waiting getter is a node on its own stack
 * with a futex word of its own, appended under the mutex; a signal pops the
 * oldest and sets its word, so the signaller knows whom it woke.  glibc's
 * condition variable, used here first, can lose a signal under contention
 * (glibc bug 25847, unfixed in Debian 12's glibc 2.36): stress/burst_probe
 * saw a getter asleep for 30 ms with six items queued and every other
 * worker asleep.  The signaller changes the word and wakes it while
 * holding the mutex, which the woken getter must take before it returns,
 * so the node is alive for the wake.
 *   MTX.W1 (store woken, release, under the mutex) pairs with MTX.W2 (the
 *   getter's load of woken, acquire, without it): the getter knows it was
 *   popped; what it reads of the queue it reads after taking the mutex.
 *
 * The sets are ConcurrencyKit ck_hs in object mode holding struct kwq_item
 * pointers with precomputed hashes.  They are touched only under the mutex,
 * so single-writer (SPMC) mode suffices and ThreadSanitizer sees every edge
 * through the mutex (libck itself is not instrumented).
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <ck_hs.h>

#include "../core/key.h"
#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/dlist.h"
#include "../core/drain.h"
#include "../core/futex.h"
#include "../core/ops.h"
#include "../metrics/metrics.h"

#define HS_MODE (CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT)
#define HS_INITIAL 64

/*
 * An entry is one allocation: this header, then at ITEM_OFFSET the public
 * struct kwq_item ending in the key bytes (ISO C forbids a member that ends
 * in a flexible array, hence the offset).
 */
struct entry {
	struct entry *prev, *next; /* in its level's FIFO while queued */
	struct kwq__wait *wait;    /* the pending delayed add, or NULL (I6) */
	int qprio;                 /* priority it is queued with */
	int dprio;                 /* held+dirty: priority to re-queue with */
	int64_t add_ns;            /* metrics: time of the counted add */
	int64_t get_ns;            /* metrics: time of the get, while held */
	_Atomic bool dirty;        /* held+dirty (written under the mutex; read
	                              by kwq_item_dirty without it) */
};

#define ITEM_OFFSET KWQ__ITEM_OFFSET(struct entry)

static struct kwq_item *item_of(struct entry *e)
{
	return (struct kwq_item *)(void *)((char *)e + ITEM_OFFSET);
}

static struct entry *entry_of(struct kwq_item *it)
{
	return (struct entry *)(void *)((char *)it - ITEM_OFFSET);
}

struct level {
	int prio;
	struct entry *head, *tail;
};

/* A getter waiting for an item or shutdown (on its stack, in the list
 * under the mutex). */
struct waiter {
	_Atomic uint32_t woken;       /* the futex word: 0, or 1 once popped */
	struct kwq__dlink link;       /* in m->waiters */
};

struct mutex_queue {
	struct kwq base;

	pthread_mutex_t lock;
	struct kwq__dlist waiters; /* getters waiting, oldest first */
	struct kwq__drain drain;  /* drainers: empty, or kwq_shutdown */

	struct level *levels;     /* non-empty levels, highest prio first */
	size_t nlevels, cap;
	size_t count;             /* items queued */
	size_t reserve;           /* held+dirty items: level room kept (I7) */

	ck_hs_t dirty;
	ck_hs_t processing;
	ck_hs_t waiting;

	bool shutting_down;

	struct kwq__metrics_block *metrics; /* named queues only, else NULL */
};

static struct mutex_queue *mq(struct kwq *q)
{
	return kwq__container_of(q, struct mutex_queue, base);
}

/* ------------------------------------------------------------------------ */
/* The notify list (under the mutex)                                        */

static void waiter_push(struct mutex_queue *m, struct waiter *w)
{
	atomic_init(&w->woken, 0);
	kwq__dlist_push_back(&m->waiters, &w->link);
}

static void waiter_unlink(struct mutex_queue *m, struct waiter *w)
{
	kwq__dlist_unlink(&m->waiters, &w->link);
}

/* Wake the oldest waiting getter, if any (cond.Signal). */
static void wake_one(struct mutex_queue *m)
{
	if (m->waiters.head == NULL)
		return;
	struct waiter *w = kwq__container_of(m->waiters.head, struct waiter, link);
	waiter_unlink(m, w);
	/* MTX.W1: pairs with MTX.W2. */
	atomic_store_explicit(&w->woken, 1, memory_order_release);
	kwq__futex_wake(&w->woken, 1);
}

/* Wake every waiting getter (cond.Broadcast). */
static void wake_all(struct mutex_queue *m)
{
	while (m->waiters.head != NULL)
		wake_one(m);
}

/* The level for prio, created (empty) if needed; NULL on ENOMEM. */
static struct level *level_get(struct mutex_queue *m, int prio)
{
	size_t i = 0;
	while (i < m->nlevels && m->levels[i].prio > prio)
		i++;
	if (i < m->nlevels && m->levels[i].prio == prio)
		return &m->levels[i];
	if (m->nlevels + m->reserve >= m->cap) { /* I7 */
		size_t cap = m->cap ? m->cap * 2 : 4;
		struct level *l = kwq__realloc(m->levels, cap * sizeof *l);
		if (l == NULL)
			return NULL;
		m->levels = l;
		m->cap = cap;
	}
	memmove(&m->levels[i + 1], &m->levels[i], (m->nlevels - i) * sizeof *m->levels);
	m->nlevels++;
	m->levels[i] = (struct level){ .prio = prio };
	return &m->levels[i];
}

/* Make room for one more held+dirty item's level (I7). */
static int level_reserve(struct mutex_queue *m)
{
	if (m->nlevels + m->reserve + 1 > m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 4;
		struct level *l = kwq__realloc(m->levels, cap * sizeof *l);
		if (l == NULL)
			return -ENOMEM;
		m->levels = l;
		m->cap = cap;
	}
	m->reserve++;
	return 0;
}

static void level_drop_if_empty(struct mutex_queue *m, struct level *l)
{
	if (l->head != NULL)
		return;
	size_t i = (size_t)(l - m->levels);
	memmove(&m->levels[i], &m->levels[i + 1], (m->nlevels - i - 1) * sizeof *m->levels);
	m->nlevels--;
}

static int fifo_push(struct mutex_queue *m, struct entry *e, int prio)
{
	struct level *l = level_get(m, prio);
	if (l == NULL)
		return -ENOMEM;
	e->qprio = prio;
	e->next = NULL;
	e->prev = l->tail;
	if (l->tail)
		l->tail->next = e;
	else
		l->head = e;
	l->tail = e;
	m->count++;
	return 0;
}

static struct level *level_of(struct mutex_queue *m, int prio)
{
	for (size_t i = 0; i < m->nlevels; i++)
		if (m->levels[i].prio == prio)
			return &m->levels[i];
	return NULL;
}

static void fifo_unlink(struct mutex_queue *m, struct entry *e)
{
	struct level *l = level_of(m, e->qprio);
	if (e->prev)
		e->prev->next = e->next;
	else
		l->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		l->tail = e->prev;
	m->count--;
	level_drop_if_empty(m, l);
}

static struct entry *fifo_pop(struct mutex_queue *m)
{
	struct entry *e = m->levels[0].head;
	fifo_unlink(m, e);
	return e;
}

/* key: a struct kwq_item or a struct kwq__probe (both start with hash). */
static struct kwq_item *set_get(ck_hs_t *s, const void *key)
{
	uint64_t hash;
	memcpy(&hash, key, sizeof hash);
	return ck_hs_get(s, (unsigned long)hash, key);
}

static struct kwq *mutex_create(const struct kwq *base, const struct kwq_config *cfg)
{
	(void)cfg;
	struct mutex_queue *m = kwq__calloc(1, sizeof *m);
	if (m == NULL)
		goto enomem;
	m->base = *base;
	if (base->name != NULL) {
		m->metrics = kwq__metrics_blocks_new(1);
		if (m->metrics == NULL)
			goto free_m;
	}
	if (!ck_hs_init(&m->dirty, HS_MODE, kwq__item_hs_hash, kwq__item_hs_compare,
			&kwq__ck_allocator, HS_INITIAL, base->seed))
		goto free_m;
	if (!ck_hs_init(&m->processing, HS_MODE, kwq__item_hs_hash,
			kwq__item_hs_compare, &kwq__ck_allocator, HS_INITIAL, base->seed))
		goto free_dirty;
	if (!ck_hs_init(&m->waiting, HS_MODE, kwq__item_hs_hash,
			kwq__item_hs_compare, &kwq__ck_allocator, HS_INITIAL, base->seed))
		goto free_processing;

	kwq__dlist_init(&m->waiters);
	kwq__drain_init(&m->drain);
	pthread_mutex_init(&m->lock, NULL);
	return &m->base;

free_processing:
	ck_hs_destroy(&m->processing);
free_dirty:
	ck_hs_destroy(&m->dirty);
free_m:
	kwq__metrics_blocks_free(m->metrics);
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

	/* I6: a waiting item is in processing too, or in no other set:
	 * free those first, while processing can still be probed. */
	while (ck_hs_next(&m->waiting, &it, &obj)) {
		if (set_get(&m->processing, obj) == NULL)
			free(entry_of(obj));
	}
	ck_hs_iterator_init(&it);
	/* I4: free each entry once; held+dirty ones are in both sets. */
	while (ck_hs_next(&m->processing, &it, &obj)) {
		if (set_get(&m->dirty, obj) == NULL)
			free(entry_of(obj));
	}
	ck_hs_iterator_init(&it);
	while (ck_hs_next(&m->dirty, &it, &obj))
		free(entry_of(obj));
	ck_hs_destroy(&m->waiting);
	ck_hs_destroy(&m->processing);
	ck_hs_destroy(&m->dirty);
	free(m->levels);
	pthread_mutex_destroy(&m->lock);
	kwq__metrics_blocks_free(m->metrics);
	free(m);
}

static bool is_empty(const struct mutex_queue *m)
{
	return m->count == 0 && ck_hs_count((ck_hs_t *)&m->processing) == 0;
}

/* An item of a non-empty waiting set (absent or held and waiting). */
static struct kwq_item *waiting_get(struct mutex_queue *m, const void *key)
{
	return ck_hs_count(&m->waiting) == 0 ? NULL : set_get(&m->waiting, key);
}

/* The wait ends (it fired, an immediate add or a cancel ended it, or
 * shutdown dropped it). */
static void wait_end(struct mutex_queue *m, struct entry *e)
{
	struct kwq_item *it = item_of(e);
	ck_hs_remove(&m->waiting, (unsigned long)it->hash, it);
	e->wait = NULL;
	if (m->metrics != NULL)
		kwq__metrics_on_wait(m->metrics, -1);
}

/* A wait dropped (by kwq_cancel or shutdown): the record goes stale, and
 * an absent key's entry, in no set now (I4), is freed. */
static void drop_wait(struct mutex_queue *m, struct entry *e)
{
	struct kwq_item *it = item_of(e);
	kwq__wait_drop(e->wait);
	wait_end(m, e);
	if (set_get(&m->processing, it) == NULL)
		free(e);
}

static void set_dirty(struct entry *e, bool dirty)
{
	atomic_store_explicit(&e->dirty, dirty, memory_order_relaxed);
}

/* A counted add (the item was not dirty). */
static void count_add(struct mutex_queue *m, struct entry *e)
{
	if (m->metrics != NULL) {
		e->add_ns = kwq__metrics_now(m->base.clock);
		kwq__metrics_on_add(m->metrics);
	}
}

/* A queued item re-added: a higher priority moves it to that level's tail. */
static int raise_queued(struct mutex_queue *m, struct entry *e, int prio)
{
	if (prio <= e->qprio)
		return 0;
	if (level_get(m, prio) == NULL)
		return -ENOMEM;
	fifo_unlink(m, e);
	fifo_push(m, e, prio); /* the level exists: cannot fail */
	return 0;
}

/* held -> held+dirty, re-queued by done with prio. */
static int make_dirty(struct mutex_queue *m, struct entry *e, int prio)
{
	struct kwq_item *it = item_of(e);
	if (level_reserve(m) != 0)
		return -ENOMEM;
	if (!ck_hs_put(&m->dirty, (unsigned long)it->hash, it)) {
		m->reserve--;
		return -ENOMEM;
	}
	e->dprio = prio;
	set_dirty(e, true);
	count_add(m, e);
	return 0;
}

/* absent (a new entry, or one that only waits) -> queued. */
static int make_queued(struct mutex_queue *m, struct entry *e, int prio)
{
	struct kwq_item *it = item_of(e);
	if (fifo_push(m, e, prio) != 0)
		return -ENOMEM;
	if (!ck_hs_put(&m->dirty, (unsigned long)it->hash, it)) {
		fifo_unlink(m, e);
		return -ENOMEM;
	}
	count_add(m, e);
	wake_one(m);
	return 0;
}

/* The highest of prio and a waiting item's priority (the contract in kwq.h). */
static int with_wait_prio(const struct entry *e, int prio)
{
	return e->wait != NULL && e->wait->priority > prio ? e->wait->priority : prio;
}

static int mutex_add(struct kwq *q, const struct kwq__key *k, int prio)
{
	struct mutex_queue *m = mq(q);
	struct kwq__probe probe;
	struct kwq_item *it;
	struct entry *e;
	int rc = 0;

	kwq__item_probe(&probe, k);
	pthread_mutex_lock(&m->lock);
	if (m->shutting_down) {
		rc = -ESHUTDOWN;
		goto out;
	}
	if ((it = set_get(&m->dirty, &probe)) != NULL) {
		e = entry_of(it);
		if (set_get(&m->processing, it) != NULL) {
			/* held+dirty: remember the highest priority asked */
			if (prio > e->dprio)
				e->dprio = prio;
		} else {
			rc = raise_queued(m, e, prio);
		}
		goto out;
	}
	if ((it = set_get(&m->processing, &probe)) != NULL) {
		e = entry_of(it);
		rc = make_dirty(m, e, with_wait_prio(e, prio));
	} else if ((it = waiting_get(m, &probe)) != NULL) {
		e = entry_of(it);
		rc = make_queued(m, e, with_wait_prio(e, prio));
	} else {
		e = kwq__entry_new(ITEM_OFFSET + sizeof(struct kwq_item), ITEM_OFFSET, k);
		if (e == NULL) {
			rc = -ENOMEM;
		} else if ((rc = make_queued(m, e, prio)) != 0) {
			free(e);
		}
		goto out;
	}
	if (rc == 0 && e->wait != NULL) {
		/* An immediate add cancels the wait (in this critical section). */
		kwq__wait_drop(e->wait);
		wait_end(m, e);
	}
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

static int mutex_add_after(struct kwq *q, const struct kwq__key *k, struct kwq__wait_req *req)
{
	struct mutex_queue *m = mq(q);
	struct kwq__probe probe;
	struct kwq_item *it;
	struct entry *e;
	int rc = 0;

	req->rec = NULL;
	kwq__item_probe(&probe, k);
	pthread_mutex_lock(&m->lock);
	if (m->shutting_down) {
		rc = -ESHUTDOWN;
		goto out;
	}
	if ((it = set_get(&m->dirty, &probe)) != NULL) {
		/* queued or held+dirty: due already, only the priority rises */
		e = entry_of(it);
		if (set_get(&m->processing, it) != NULL) {
			if (req->priority > e->dprio)
				e->dprio = req->priority;
		} else {
			rc = raise_queued(m, e, req->priority);
		}
		rc = rc == 0 ? 1 : rc;
		goto out;
	}
	it = set_get(&m->processing, &probe);
	if (it == NULL)
		it = waiting_get(m, &probe);
	if (it != NULL && entry_of(it)->wait != NULL) {
		/* waiting already: merge, or a new record for an earlier time */
		rc = kwq__wait_update(&entry_of(it)->wait, req, k);
		goto out;
	}
	/* absent, or held and not waiting: a new wait */
	struct kwq__wait *w = NULL;
	if ((rc = kwq__wait_update(&w, req, k)) != 0)
		goto out;
	e = it != NULL ? entry_of(it)
		       : kwq__entry_new(ITEM_OFFSET + sizeof(struct kwq_item), ITEM_OFFSET, k);
	if (e == NULL || !ck_hs_put(&m->waiting, (unsigned long)k->hash, item_of(e))) {
		if (it == NULL)
			free(e);
		free(w);
		req->rec = NULL;
		rc = -ENOMEM;
		goto out;
	}
	e->wait = w;
	if (m->metrics != NULL)
		kwq__metrics_on_wait(m->metrics, 1);
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

static int mutex_fire(struct kwq *q, struct kwq__wait *w, const struct kwq__key *k, bool drop)
{
	struct mutex_queue *m = mq(q);
	struct kwq__probe probe;
	int rc = 1;

	kwq__item_probe(&probe, k);
	pthread_mutex_lock(&m->lock);
	struct kwq_item *it = waiting_get(m, &probe);
	struct entry *e = it != NULL ? entry_of(it) : NULL;
	if (e == NULL || e->wait != w) {
		rc = 0; /* stale: cancelled or moved earlier since */
		goto out;
	}
	bool held = set_get(&m->processing, it) != NULL;
	if (drop || m->shutting_down) {
		rc = m->shutting_down ? -ESHUTDOWN : 0;
	} else {
		rc = held ? make_dirty(m, e, w->priority) : make_queued(m, e, w->priority);
		if (rc != 0)
			goto out; /* -ENOMEM: still waiting, the timer retries */
		rc = 1;
	}
	wait_end(m, e);
	if (!held && rc != 1)
		free(e); /* in no set now (I4) */
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

/*
 * Wait on the notify list until popped or past deadline (the mutex held on
 * entry and on return).  Returns false on a timeout with nobody having
 * popped it.
 */
static bool wait_for_item(struct mutex_queue *m, int64_t deadline)
{
	struct waiter w;
	bool popped;

	waiter_push(m, &w);
	pthread_mutex_unlock(&m->lock);
	/* MTX.W2: pairs with MTX.W1. */
	while (!(popped = atomic_load_explicit(&w.woken, memory_order_acquire))) {
		if (deadline != KWQ__DEADLINE_NONE && kwq__mono_now() >= deadline)
			break;
		kwq__futex_wait(&w.woken, 0, deadline);
	}
	pthread_mutex_lock(&m->lock);
	/* A waker may have popped it since the load: under the mutex now. */
	popped = atomic_load_explicit(&w.woken, memory_order_relaxed);
	if (!popped)
		waiter_unlink(m, &w);
	return popped;
}

static int mutex_get(struct kwq *q, struct kwq_item **item, int64_t deadline)
{
	struct mutex_queue *m = mq(q);
	int rc = 0;

	pthread_mutex_lock(&m->lock);
	while (m->count == 0 && !m->shutting_down) {
		if (deadline == KWQ__DEADLINE_POLL) {
			rc = -ETIMEDOUT;
			goto out;
		}
		if (!wait_for_item(m, deadline) && m->count == 0 && !m->shutting_down) {
			rc = -ETIMEDOUT;
			goto out;
		}
	}
	if (m->count == 0) {
		rc = -ESHUTDOWN;
		goto out;
	}
	struct entry *e = m->levels[0].head;
	struct kwq_item *it = item_of(e);
	/* Insert into processing before removing from dirty, as the
	 * reference does; on ENOMEM nothing has changed. */
	if (!ck_hs_put(&m->processing, (unsigned long)it->hash, it)) {
		rc = -ENOMEM;
		goto out;
	}
	fifo_pop(m);
	ck_hs_remove(&m->dirty, (unsigned long)it->hash, it);
	it->priority = e->qprio;
	if (m->metrics != NULL) {
		e->get_ns = kwq__metrics_now(q->clock);
		kwq__metrics_on_get(m->metrics, e->get_ns - e->add_ns);
	}
	*item = it;
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

static int mutex_done(struct kwq *q, struct kwq_item *it)
{
	struct mutex_queue *m = mq(q);
	int rc = 0;
	bool now_drained = false;

	pthread_mutex_lock(&m->lock);
	if (set_get(&m->processing, it) != it) {
		rc = -EINVAL;
		goto out;
	}
	struct entry *e = entry_of(it);
	bool dirty = set_get(&m->dirty, it) != NULL;
	/* held+dirty -> queued at the tail of the priority asked; the room
	 * for its level was kept since it became dirty (I7) */
	if (dirty) {
		m->reserve--;
		rc = fifo_push(m, e, e->dprio);
		assert(rc == 0);
		set_dirty(e, false);
	}
	if (m->metrics != NULL)
		kwq__metrics_on_done(m->metrics, kwq__metrics_now(q->clock) - e->get_ns);
	ck_hs_remove(&m->processing, (unsigned long)it->hash, it);
	if (dirty)
		wake_one(m);
	else if (e->wait == NULL)
		free(e); /* in no set now (I4); a waiting one stays in waiting */
	now_drained = m->shutting_down && is_empty(m);
out:
	pthread_mutex_unlock(&m->lock);
	if (now_drained)
		kwq__drain_wake(&m->drain);
	return rc;
}

static int mutex_cancel(struct kwq *q, const struct kwq__key *k, bool wait_only)
{
	struct mutex_queue *m = mq(q);
	struct kwq__probe probe;
	struct kwq_item *it;
	struct entry *e;
	bool now_drained = false;
	int rc = 0;

	kwq__item_probe(&probe, k);
	pthread_mutex_lock(&m->lock);
	if (!wait_only && (it = set_get(&m->dirty, &probe)) != NULL) {
		/* queued or held+dirty: never waiting (I6) */
		e = entry_of(it);
		ck_hs_remove(&m->dirty, (unsigned long)it->hash, it);
		if (set_get(&m->processing, it) != NULL) {
			m->reserve--; /* held+dirty -> held: no re-queue (I7) */
			set_dirty(e, false);
		} else {
			fifo_unlink(m, e); /* queued -> absent */
			free(e);           /* in no set now (I4) */
			now_drained = m->shutting_down && is_empty(m);
		}
		if (m->metrics != NULL)
			kwq__metrics_on_cancel(m->metrics);
		rc = 1;
	} else if ((it = waiting_get(m, &probe)) != NULL) {
		drop_wait(m, entry_of(it));
		rc = 1;
	}
	pthread_mutex_unlock(&m->lock);
	if (now_drained)
		kwq__drain_wake(&m->drain);
	return rc;
}

static bool mutex_item_dirty(struct kwq *q, const struct kwq_item *it)
{
	(void)q;
	return atomic_load_explicit(&entry_of((struct kwq_item *)it)->dirty,
				    memory_order_relaxed);
}

static size_t mutex_len(struct kwq *q)
{
	struct mutex_queue *m = mq(q);
	pthread_mutex_lock(&m->lock);
	size_t n = m->count;
	pthread_mutex_unlock(&m->lock);
	return n;
}

static void mutex_metrics(struct kwq *q, struct kwq_metrics *out, int64_t now)
{
	struct mutex_queue *m = mq(q);
	ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
	void *obj;

	pthread_mutex_lock(&m->lock);
	kwq__metrics_sum(m->metrics, 1, out);
	while (ck_hs_next(&m->processing, &it, &obj))
		kwq__metrics_held(out, now, entry_of(obj)->get_ns);
	pthread_mutex_unlock(&m->lock);
}

/* Drained: nothing queued or held (read under the lock every done that
 * empties the queue holds). */
static bool drained(void *ctx)
{
	struct mutex_queue *m = ctx;
	pthread_mutex_lock(&m->lock);
	bool e = is_empty(m);
	pthread_mutex_unlock(&m->lock);
	return e;
}

/*
 * Shutdown drops every waiting add in its own critical section (the timer
 * then finds each record stale).  ck_hs_remove leaves a tombstone in the
 * map the iterator walks, so removing the current item is safe.
 */
static void drop_waits(struct mutex_queue *m)
{
	ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
	void *obj;

	while (ck_hs_count(&m->waiting) != 0 && ck_hs_next(&m->waiting, &it, &obj)) {
		drop_wait(m, entry_of(obj));
	}
}

static int mutex_shutdown(struct kwq *q, bool drain, int64_t deadline)
{
	struct mutex_queue *m = mq(q);
	uint32_t ticket = kwq__drain_begin(&m->drain);

	pthread_mutex_lock(&m->lock);
	m->shutting_down = true;
	drop_waits(m);
	wake_all(m);
	pthread_mutex_unlock(&m->lock);
	if (drain)
		return kwq__drain_wait(&m->drain, ticket, drained, m, deadline) ? 0 : -ETIMEDOUT;
	kwq__drain_end(&m->drain);
	return 0;
}

static bool mutex_shutting_down(struct kwq *q)
{
	struct mutex_queue *m = mq(q);
	pthread_mutex_lock(&m->lock);
	bool s = m->shutting_down;
	pthread_mutex_unlock(&m->lock);
	return s;
}

const struct kwq__ops kwq__mutex_ops = {
	.create = mutex_create,
	.destroy = mutex_destroy,
	.add = mutex_add,
	.get = mutex_get,
	.done = mutex_done,
	.len = mutex_len,
	.add_after = mutex_add_after,
	.fire = mutex_fire,
	.cancel = mutex_cancel,
	.item_dirty = mutex_item_dirty,
	.metrics = mutex_metrics,
	.shutdown = mutex_shutdown,
	.shutting_down = mutex_shutting_down,
};
