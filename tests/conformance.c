/*
 * conformance.c - one body of tests for every behaviour of the core API
 * (the contract in lib/kwq.h), run against each implementation as a row of a table.
 *
 *   conformance ROW     runs every case on one row ("mutex", "sharded")
 *
 * Blocking behaviour is checked by observing state, never by timing a fast
 * path: a thread that must still be blocked after a pause is checked to be
 * blocked; a thread that must return is joined (meson's timeout catches a
 * hang).  The pauses only give a wrong implementation a chance to show.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <kwq.h>

#include "rows.h"


static int64_t now_ns(void)
{
	return kwq_clock_now(NULL);
}

#define ADDS(q, s) kwq_add((q), (s), strlen(s))

/*
 * Get the head and check its key.  The item is expected to be queued (or
 * being added by the timer thread: hence a bounded wait, not try_get).
 */
#define CHECK_GET(q, s, out)                                                    \
	do {                                                                    \
		kwq_item_t *it_ = NULL;                                          \
		CHECK_EQ(kwq_get_timeout((q), &it_, 10000000000LL), 0);           \
		size_t l_;                                                       \
		const void *k_ = kwq_item_key(it_, &l_);                          \
		CHECK_MEM(k_, l_, (s), strlen(s));                                \
		*(out) = it_;                                                    \
	} while (0)

#define CHECK_GET_DONE(q, s)                                                    \
	do {                                                                    \
		kwq_item_t *d_;                                                  \
		CHECK_GET((q), (s), &d_);                                        \
		CHECK_EQ(kwq_done((q), d_), 0);                                   \
	} while (0)

/* ---------------------------------------------------------------- basics */

static void t_dedup(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *it;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_len(q), 2);
	CHECK_GET_DONE(q, "a");
	CHECK_GET_DONE(q, "b");
	CHECK_EQ(kwq_try_get(q, &it), -EAGAIN);
	CHECK_EQ(kwq_len(q), 0);
	kwq_free(q);
}

static void t_fifo(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	char k[32];

	for (int i = 0; i < 1000; i++) {
		snprintf(k, sizeof k, "k%d", i);
		CHECK_EQ(ADDS(q, k), 0);
	}
	CHECK_EQ(kwq_len(q), 1000);
	for (int i = 0; i < 1000; i++) {
		snprintf(k, sizeof k, "k%d", i);
		CHECK_GET_DONE(q, k);
	}
	CHECK_EQ(kwq_len(q), 0);
	kwq_free(q);
}

/* FIFO is by the time an item last became queued. */
static void t_fifo_by_time_queued(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_GET_DONE(q, "a");
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "c"), 0);
	CHECK_GET_DONE(q, "b");
	CHECK_GET_DONE(q, "a");
	CHECK_GET_DONE(q, "c");
	kwq_free(q);
}

static void t_readd_while_held(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a, *x;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(kwq_len(q), 0);
	/* held -> held+dirty: not queued, not handed to a second worker */
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_len(q), 0);
	CHECK_EQ(kwq_try_get(q, &x), -EAGAIN);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_EQ(kwq_len(q), 1);
	/* done re-queues a at the tail, behind b */
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_EQ(kwq_len(q), 2);
	CHECK_GET_DONE(q, "b");
	CHECK_GET(q, "a", &a);
	/* processed once: done now makes it absent */
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_EQ(kwq_len(q), 0);
	CHECK_EQ(kwq_try_get(q, &x), -EAGAIN);
	kwq_free(q);
}

static void t_done_absent_then_add(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_EQ(kwq_len(q), 0);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET_DONE(q, "a");
	kwq_free(q);
}

static void t_len_counts_queued_only(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a, *b;

	CHECK_EQ(kwq_len(q), 0);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_EQ(ADDS(q, "c"), 0);
	CHECK_EQ(kwq_len(q), 3);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(kwq_len(q), 2);
	CHECK_GET(q, "b", &b);
	CHECK_EQ(ADDS(q, "a"), 0); /* held+dirty */
	CHECK_EQ(kwq_len(q), 1);
	CHECK_EQ(kwq_done(q, b), 0);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_EQ(kwq_len(q), 2);
	kwq_free(q);
}

static void t_try_get_and_timeout(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *it = (kwq_item_t *)(uintptr_t)1;

	CHECK_EQ(kwq_try_get(q, &it), -EAGAIN);
	CHECK_PTR(it, ==, (kwq_item_t *)(uintptr_t)1); /* untouched on error */
	CHECK_EQ(kwq_get_timeout(q, &it, 0), -ETIMEDOUT);
	CHECK_EQ(kwq_get_timeout(q, &it, -1), -ETIMEDOUT);
	CHECK_EQ(kwq_get_timeout(q, &it, INT64_MIN), -ETIMEDOUT);

	int64_t t0 = now_ns();
	CHECK_EQ(kwq_get_timeout(q, &it, 20 * 1000000), -ETIMEDOUT);
	CHECK_INT(now_ns() - t0, >=, 20 * 1000000);

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_get_timeout(q, &it, 0), 0);
	CHECK_EQ(kwq_done(q, it), 0);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_get_timeout(q, &it, INT64_MAX), 0);
	CHECK_EQ(kwq_done(q, it), 0);
	kwq_free(q);
}

/* ------------------------------------------------------------- blocking */

struct getter {
	pthread_t thread;
	kwq_t *q;
	int64_t timeout; /* < 0: kwq_get */
	atomic_int state; /* 0 running, 1 returned */
	int rc;
	kwq_item_t *item;
};

static void *getter_main(void *arg)
{
	struct getter *g = arg;
	g->item = NULL;
	if (g->timeout < 0)
		g->rc = kwq_get(g->q, &g->item);
	else
		g->rc = kwq_get_timeout(g->q, &g->item, g->timeout);
	atomic_store(&g->state, 1);
	return NULL;
}

static void getter_start(struct getter *g, kwq_t *q, int64_t timeout)
{
	g->q = q;
	g->timeout = timeout;
	atomic_init(&g->state, 0);
	pthread_create(&g->thread, NULL, getter_main, g);
}

static void t_get_blocks_until_add(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	struct getter g;

	getter_start(&g, q, -1);
	pause_ms(30);
	CHECK_EQ(atomic_load(&g.state), 0);
	CHECK_EQ(ADDS(q, "a"), 0);
	pthread_join(g.thread, NULL);
	CHECK_EQ(g.rc, 0);
	size_t l;
	const void *k = kwq_item_key(g.item, &l);
	CHECK_MEM(k, l, "a", 1);
	CHECK_EQ(kwq_done(q, g.item), 0);

	/* a get with a long timeout is woken by an add, well before it */
	int64_t t0 = now_ns();
	getter_start(&g, q, 60LL * 1000000000);
	pause_ms(10);
	CHECK_EQ(ADDS(q, "b"), 0);
	pthread_join(g.thread, NULL);
	CHECK_EQ(g.rc, 0);
	CHECK_INT(now_ns() - t0, <, 30LL * 1000000000);
	CHECK_EQ(kwq_done(q, g.item), 0);
	kwq_free(q);
}

static void t_done_wakes_getter_for_dirty(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a;
	struct getter g;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(ADDS(q, "a"), 0); /* held+dirty */
	getter_start(&g, q, -1);
	pause_ms(30);
	CHECK_EQ(atomic_load(&g.state), 0); /* not handed to a second worker */
	CHECK_EQ(kwq_done(q, a), 0);
	pthread_join(g.thread, NULL);
	CHECK_EQ(g.rc, 0);
	size_t l;
	const void *k = kwq_item_key(g.item, &l);
	CHECK_MEM(k, l, "a", 1);
	CHECK_EQ(kwq_done(q, g.item), 0);
	kwq_free(q);
}

/* ------------------------------------------------------------- shutdown */

static void t_shutdown_refuses_adds_and_drains_gets(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *it;

	CHECK(!kwq_shutting_down(q));
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	kwq_shutdown(q);
	CHECK(kwq_shutting_down(q));
	CHECK_EQ(ADDS(q, "c"), -ESHUTDOWN);
	CHECK_EQ(ADDS(q, "a"), -ESHUTDOWN);
	CHECK_EQ(kwq_len(q), 2);
	CHECK_GET_DONE(q, "a");
	CHECK_EQ(kwq_get(q, &it), 0); /* still handed out after shutdown */
	size_t l;
	const void *k = kwq_item_key(it, &l);
	CHECK_MEM(k, l, "b", 1);
	CHECK_EQ(kwq_done(q, it), 0);
	CHECK_EQ(kwq_get(q, &it), -ESHUTDOWN); /* at once, no blocking */
	CHECK_EQ(kwq_try_get(q, &it), -ESHUTDOWN);
	CHECK_EQ(kwq_get_timeout(q, &it, 1000000000), -ESHUTDOWN);
	CHECK_EQ(kwq_get_timeout(q, &it, 0), -ESHUTDOWN);
	kwq_shutdown(q); /* again: no change */
	CHECK(kwq_shutting_down(q));
	CHECK_EQ(kwq_len(q), 0);
	kwq_free(q);
}

static void t_shutdown_wakes_blocked_gets(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	struct getter g[4];

	for (int i = 0; i < 4; i++)
		getter_start(&g[i], q, i < 2 ? -1 : 60LL * 1000000000);
	pause_ms(30);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(atomic_load(&g[i].state), 0);
	kwq_shutdown(q);
	for (int i = 0; i < 4; i++) {
		pthread_join(g[i].thread, NULL);
		CHECK_EQ(g[i].rc, -ESHUTDOWN);
	}
	kwq_free(q);
}

static void t_shutdown_held_item(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a, *it;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	kwq_shutdown(q);
	CHECK_EQ(ADDS(q, "a"), -ESHUTDOWN); /* held stays held, not dirty */
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_EQ(kwq_get(q, &it), -ESHUTDOWN);
	kwq_free(q);
}

/* A held+dirty item is queued again on done even after get said shutdown. */
static void t_shutdown_dirty_requeued_on_done(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a, *it;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(ADDS(q, "a"), 0);
	kwq_shutdown(q);
	CHECK_EQ(kwq_get(q, &it), -ESHUTDOWN);
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_EQ(kwq_get(q, &it), 0);
	size_t l;
	const void *k = kwq_item_key(it, &l);
	CHECK_MEM(k, l, "a", 1);
	CHECK_EQ(kwq_done(q, it), 0);
	CHECK_EQ(kwq_get(q, &it), -ESHUTDOWN);
	kwq_free(q);
}

struct drainer {
	pthread_t thread;
	kwq_t *q;
	bool timed;      /* kwq_shutdown_drain_timeout(q, timeout) */
	int64_t timeout;
	int rc;          /* its return */
	atomic_int tid;
	atomic_int returned;
};

static void *drainer_main(void *arg)
{
	struct drainer *d = arg;
	atomic_store(&d->tid, (int)syscall(SYS_gettid));
	if (d->timed)
		d->rc = kwq_shutdown_drain_timeout(d->q, d->timeout);
	else
		kwq_shutdown_drain(d->q);
	atomic_store(&d->returned, 1);
	return NULL;
}

/* The thread's state letter in /proc (R running, S asleep...), or 0. */
static char thread_state(int tid)
{
	char path[64], buf[256];
	snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *c = strrchr(buf, ')'); /* "tid (comm) S ..." */
	return c != NULL && c[1] == ' ' ? c[2] : 0;
}

/*
 * Start a drain on its own thread and return once it is under way: the
 * thread has returned, or sleeps inside kwq_shutdown_drain.  (A pause
 * alone is not enough on a loaded machine: a drain that begins after a
 * later kwq_shutdown waits for the queue to empty, as it should.)
 * timed: kwq_shutdown_drain_timeout(q, timeout) instead, its return in rc.
 */
static void drainer_run(struct drainer *d, kwq_t *q, bool timed, int64_t timeout)
{
	d->q = q;
	d->timed = timed;
	d->timeout = timeout;
	d->rc = 1;
	atomic_init(&d->tid, 0);
	atomic_init(&d->returned, 0);
	pthread_create(&d->thread, NULL, drainer_main, d);
	for (int i = 0; i < 10000; i++) { /* 10 s at most */
		int tid = atomic_load(&d->tid);
		if (atomic_load(&d->returned) || (tid != 0 && thread_state(tid) == 'S'))
			return;
		pause_ms(1);
	}
}

static void drainer_start(struct drainer *d, kwq_t *q)
{
	drainer_run(d, q, false, 0);
}

static void drainer_start_timed(struct drainer *d, kwq_t *q, int64_t timeout)
{
	drainer_run(d, q, true, timeout);
}

static void t_drain_waits_for_queued_and_held(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a, *b;
	struct drainer d[3];

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_GET(q, "a", &a);
	for (int i = 0; i < 3; i++)
		drainer_start(&d[i], q);
	pause_ms(30);
	CHECK(kwq_shutting_down(q));
	CHECK_EQ(ADDS(q, "c"), -ESHUTDOWN);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(atomic_load(&d[i].returned), 0);
	CHECK_GET(q, "b", &b);
	CHECK_EQ(kwq_done(q, b), 0);
	pause_ms(20);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(atomic_load(&d[i].returned), 0); /* a still held */
	CHECK_EQ(kwq_done(q, a), 0);
	for (int i = 0; i < 3; i++) {
		pthread_join(d[i].thread, NULL);
		CHECK_EQ(atomic_load(&d[i].returned), 1);
	}
	kwq_free(q);
}

static void t_drain_waits_for_dirty_requeue(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a, *it;
	struct drainer d;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(ADDS(q, "a"), 0);
	drainer_start(&d, q);
	pause_ms(30);
	CHECK_EQ(kwq_done(q, a), 0); /* queued again: drain keeps waiting */
	pause_ms(20);
	CHECK_EQ(atomic_load(&d.returned), 0);
	CHECK_EQ(kwq_get(q, &it), 0);
	CHECK_EQ(kwq_done(q, it), 0);
	pthread_join(d.thread, NULL);
	kwq_free(q);
}

static void t_drain_ended_by_shutdown(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a;
	struct drainer d[2];

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_GET(q, "a", &a);
	drainer_start(&d[0], q);
	drainer_start(&d[1], q);
	pause_ms(30);
	CHECK_EQ(atomic_load(&d[0].returned), 0);
	kwq_shutdown(q);
	pthread_join(d[0].thread, NULL);
	pthread_join(d[1].thread, NULL);
	CHECK_EQ(kwq_len(q), 1); /* the drain did not wait for b */
	CHECK_EQ(kwq_done(q, a), 0);
	kwq_free(q); /* frees b, still queued */
}

static void t_drain_empty_and_repeated(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a;
	struct drainer d;

	kwq_shutdown_drain(q); /* empty: returns at once */
	CHECK(kwq_shutting_down(q));
	kwq_shutdown_drain(q); /* again, still empty */
	kwq_free(q);

	/* a drain after a plain shutdown still waits */
	q = row_queue(NULL, NULL, NULL);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	kwq_shutdown(q);
	drainer_start(&d, q);
	pause_ms(30);
	CHECK_EQ(atomic_load(&d.returned), 0);
	CHECK_EQ(kwq_done(q, a), 0);
	pthread_join(d.thread, NULL);
	kwq_free(q);
}

/* ------------------------------------------------------------------ keys */

static void t_keys_binary(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *it;
	size_t l;
	const void *k;

	CHECK_EQ(kwq_add(q, "a\0b", 3), 0);
	CHECK_EQ(kwq_add(q, "a\0c", 3), 0);
	CHECK_EQ(kwq_add(q, "a", 1), 0);
	CHECK_EQ(kwq_add(q, "a\0", 2), 0);
	CHECK_EQ(kwq_add(q, "a\0b", 3), 0);
	CHECK_EQ(kwq_len(q), 4);

	CHECK_EQ(kwq_try_get(q, &it), 0);
	k = kwq_item_key(it, &l);
	CHECK_MEM(k, l, "a\0b", 3);
	CHECK_EQ(kwq_done(q, it), 0);
	CHECK_EQ(kwq_try_get(q, &it), 0);
	k = kwq_item_key(it, &l);
	CHECK_MEM(k, l, "a\0c", 3);
	CHECK_EQ(kwq_done(q, it), 0);
	CHECK_EQ(kwq_try_get(q, &it), 0);
	k = kwq_item_key(it, &l);
	CHECK_MEM(k, l, "a", 1);
	CHECK_EQ(kwq_done(q, it), 0);
	CHECK_EQ(kwq_try_get(q, &it), 0);
	k = kwq_item_key(it, &l);
	CHECK_MEM(k, l, "a\0", 2);
	CHECK_EQ(kwq_done(q, it), 0);

	/* integer identities */
	uint64_t id = 42;
	CHECK_EQ(kwq_add(q, &id, sizeof id), 0);
	id = 42;
	CHECK_EQ(kwq_add(q, &id, sizeof id), 0);
	CHECK_EQ(kwq_len(q), 1);
	kwq_free(q);
}

static void t_keys_empty(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *it;
	size_t l = 99;

	CHECK_EQ(kwq_add(q, NULL, 0), 0);
	CHECK_EQ(kwq_add(q, "", 0), 0);
	CHECK_EQ(kwq_add(q, "xyz", 0), 0); /* same empty key */
	CHECK_EQ(kwq_len(q), 1);
	CHECK_EQ(kwq_try_get(q, &it), 0);
	CHECK_PTR(kwq_item_key(it, &l), !=, NULL);
	CHECK_EQ(l, 0);
	CHECK_EQ(kwq_add(q, NULL, 0), 0); /* held+dirty */
	CHECK_EQ(kwq_done(q, it), 0);
	CHECK_EQ(kwq_len(q), 1);
	kwq_free(q);
}

static void t_keys_max(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	size_t n = KWQ_KEY_MAX + 1;
	unsigned char *big = malloc(n);
	kwq_item_t *it;
	size_t l;

	CHECK(big != NULL);
	for (size_t i = 0; i < n; i++)
		big[i] = (unsigned char)(i * 31 + 7);
	CHECK_EQ(kwq_add(q, big, KWQ_KEY_MAX), 0);
	CHECK_EQ(kwq_add(q, big, KWQ_KEY_MAX + 1), -EINVAL);
	CHECK_EQ(kwq_add(q, big, SIZE_MAX), -EINVAL);
	CHECK_EQ(kwq_len(q), 1);
	/* the queue copied the bytes: scribble on the caller's buffer */
	unsigned char *copy = malloc(KWQ_KEY_MAX);
	CHECK(copy != NULL);
	memcpy(copy, big, KWQ_KEY_MAX);
	memset(big, 0, n);
	CHECK_EQ(kwq_try_get(q, &it), 0);
	const void *k = kwq_item_key(it, &l);
	CHECK_MEM(k, l, copy, KWQ_KEY_MAX);
	CHECK_EQ(kwq_done(q, it), 0);
	free(copy);
	free(big);
	kwq_free(q);
}

/* ------------------------------------------------------------ bad input */

static void t_bad_input(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *it = NULL;
	size_t l = 7;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_add(NULL, "a", 1), -EINVAL);
	CHECK_EQ(kwq_add(q, NULL, 1), -EINVAL);
	CHECK_EQ(kwq_add(q, "x", (size_t)KWQ_KEY_MAX + 1), -EINVAL);
	CHECK_EQ(kwq_get(NULL, &it), -EINVAL);
	CHECK_EQ(kwq_get(q, NULL), -EINVAL);
	CHECK_EQ(kwq_try_get(NULL, &it), -EINVAL);
	CHECK_EQ(kwq_try_get(q, NULL), -EINVAL);
	CHECK_EQ(kwq_get_timeout(NULL, &it, 1), -EINVAL);
	CHECK_EQ(kwq_get_timeout(q, NULL, 1), -EINVAL);
	CHECK_EQ(kwq_done(q, NULL), -EINVAL);
	CHECK_EQ(kwq_done(NULL, NULL), -EINVAL);
	CHECK_PTR(kwq_item_key(NULL, &l), ==, NULL);
	CHECK_EQ(l, 0);
	CHECK_EQ(kwq_len(NULL), 0);
	CHECK(!kwq_shutting_down(NULL));
	kwq_shutdown(NULL);
	kwq_shutdown_drain(NULL);
	kwq_free(NULL);

	/* nothing changed */
	CHECK_EQ(kwq_len(q), 1);
	CHECK(!kwq_shutting_down(q));
	CHECK_GET(q, "a", &it);
	CHECK_EQ(kwq_done(NULL, it), -EINVAL); /* still held after this */
	CHECK_EQ(kwq_done(q, it), 0);
	CHECK_EQ(kwq_len(q), 0);
	kwq_free(q);
}

static void t_bad_config(void)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = row->impl;

	struct kwq_config c = cfg;
	c.size = 0;
	errno = 0;
	CHECK_PTR(kwq_new(&c), ==, NULL);
	CHECK_EQ(errno, EINVAL);
	c.size = offsetof(struct kwq_config, limiter);
	errno = 0;
	CHECK_PTR(kwq_new(&c), ==, NULL);
	CHECK_EQ(errno, EINVAL);

	c = cfg;
	c.impl = (enum kwq_impl)7;
	errno = 0;
	CHECK_PTR(kwq_new(&c), ==, NULL);
	CHECK_EQ(errno, EINVAL);
	c.impl = (enum kwq_impl)-1;
	errno = 0;
	CHECK_PTR(kwq_new(&c), ==, NULL);
	CHECK_EQ(errno, EINVAL);

	c = cfg;
	c.shards = 65537;
	errno = 0;
	CHECK_PTR(kwq_new(&c), ==, NULL);
	CHECK_EQ(errno, EINVAL);

	/* accepted: the limits, a larger struct from a newer header, a name */
	c = cfg;
	c.shards = 65536;
	kwq_t *q = kwq_new(&c);
	CHECK(q != NULL);
	kwq_free(q);
	c.shards = 3; /* rounded up */
	q = kwq_new(&c);
	CHECK(q != NULL);
	kwq_free(q);

	struct {
		struct kwq_config cfg;
		char future[64];
	} big;
	memset(&big, 0, sizeof big);
	big.cfg = cfg;
	big.cfg.size = sizeof big;
	char name[] = "conformance";
	big.cfg.name = name;
	q = kwq_new(&big.cfg);
	CHECK(q != NULL);
	name[0] = 'X'; /* the queue copied it */
	CHECK_EQ(ADDS(q, "a"), 0);
	kwq_free(q);
}

/* kwq_new(NULL) is the sharded design with defaults. */
static void t_default_config(void)
{
	kwq_t *q = kwq_new(NULL);
	CHECK(q != NULL);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_len(q), 2);
	CHECK_GET_DONE(q, "a");
	CHECK_GET_DONE(q, "b");
	kwq_free(q);

	struct kwq_config cfg = KWQ_CONFIG_INIT;
	CHECK_EQ(cfg.impl, KWQ_IMPL_SHARDED);
	CHECK_EQ(cfg.size, sizeof cfg);
}

static void t_strerror(void)
{
	CHECK(strcmp(kwq_strerror(-EINVAL), kwq_strerror(EINVAL)) == 0);
	const int codes[] = { EINVAL, ENOMEM, ESHUTDOWN, EAGAIN, ETIMEDOUT, ENOTSUP,
			      EOVERFLOW, ECANCELED };
	for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
		const char *s = kwq_strerror(-codes[i]);
		CHECK(s != NULL && strcmp(s, "unknown error") != 0);
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(s, kwq_strerror(codes[j])) != 0);
	}
	CHECK(strcmp(kwq_strerror(-12345), "unknown error") == 0);
	CHECK(kwq_strerror(INT32_MIN) != NULL);
}

static void t_free_with_items(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a, *b;
	char k[16];

	for (int i = 0; i < 100; i++) {
		snprintf(k, sizeof k, "k%d", i);
		CHECK_EQ(ADDS(q, k), 0);
	}
	CHECK_GET(q, "k0", &a);
	CHECK_GET(q, "k1", &b);
	CHECK_EQ(ADDS(q, "k1"), 0); /* held+dirty */
	(void)a;
	kwq_free(q); /* frees queued, held and held+dirty (checked by ASan) */
}

static void t_clock_fake(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(1000);
	CHECK(c != NULL);
	CHECK_EQ(kwq_clock_now(c), 1000);
	kwq_clock_fake_step(c, 500);
	CHECK_EQ(kwq_clock_now(c), 1500);
	kwq_clock_fake_step(c, -100); /* never goes back */
	CHECK_EQ(kwq_clock_now(c), 1500);
	kwq_clock_fake_step(c, INT64_MAX); /* saturates */
	CHECK_EQ(kwq_clock_now(c), INT64_MAX);
	kwq_clock_fake_step(NULL, 1);
	int64_t a = kwq_clock_now(NULL), b = kwq_clock_now(NULL);
	CHECK_INT(b, >=, a);

	/* a queue on a fake clock works as any other */
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = row->impl;
	cfg.clock = c;
	kwq_t *q = kwq_new(&cfg);
	CHECK(q != NULL);
	kwq_item_t *it;
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_get_timeout(q, &it, 1000000), 0);
	CHECK_EQ(kwq_done(q, it), 0);
	kwq_free(q);
	kwq_clock_free(c);
	kwq_clock_free(NULL);
}

/* ------------------------------------------------------------ concurrent */

#define CK_KEYS 256
#define CK_PRODUCERS 4
#define CK_WORKERS 4
#define CK_ADDS 20000

struct shared {
	kwq_t *q;
	atomic_int owner[CK_KEYS];      /* 0 free, else worker id + 1 */
	atomic_long version[CK_KEYS];   /* bumped by producers before adding */
	atomic_long seen[CK_KEYS];      /* last version a processing saw */
	atomic_long gets;
	atomic_int violations;
};

struct worker_arg {
	struct shared *s;
	int id;
};

static void *cc_producer(void *arg)
{
	struct worker_arg *w = arg;
	struct shared *s = w->s;
	unsigned x = (unsigned)w->id * 2654435761u + 1;

	for (int i = 0; i < CK_ADDS; i++) {
		x = x * 1103515245u + 12345u;
		int k = (int)((x >> 8) % CK_KEYS);
		atomic_fetch_add_explicit(&s->version[k], 1, memory_order_relaxed);
		if (kwq_add(s->q, &k, sizeof k) != 0)
			atomic_fetch_add(&s->violations, 1);
	}
	return NULL;
}

static void *cc_worker(void *arg)
{
	struct worker_arg *w = arg;
	struct shared *s = w->s;
	kwq_item_t *it;

	while (kwq_get(s->q, &it) == 0) {
		size_t l;
		int k;
		memcpy(&k, kwq_item_key(it, &l), sizeof k);
		int expect = 0;
		if (l != sizeof k || !atomic_compare_exchange_strong(&s->owner[k],
				&expect, w->id + 1))
			atomic_fetch_add(&s->violations, 1);
		long v = atomic_load_explicit(&s->version[k], memory_order_relaxed);
		atomic_store_explicit(&s->seen[k], v, memory_order_relaxed);
		atomic_fetch_add_explicit(&s->gets, 1, memory_order_relaxed);
		if ((atomic_load(&s->gets) & 63) == 0)
			sched_yield();
		expect = w->id + 1;
		if (!atomic_compare_exchange_strong(&s->owner[k], &expect, 0))
			atomic_fetch_add(&s->violations, 1);
		if (kwq_done(s->q, it) != 0)
			atomic_fetch_add(&s->violations, 1);
	}
	return NULL;
}

/* Exclusion, no lost update, and conservation, with many threads. */
static void t_concurrent_exclusion_no_lost_update(void)
{
	static struct shared s;
	memset(&s, 0, sizeof s);
	s.q = row_queue(NULL, NULL, NULL);
	pthread_t pt[CK_PRODUCERS], wt[CK_WORKERS];
	struct worker_arg pa[CK_PRODUCERS], wa[CK_WORKERS];

	for (int i = 0; i < CK_WORKERS; i++) {
		wa[i] = (struct worker_arg){ &s, i };
		pthread_create(&wt[i], NULL, cc_worker, &wa[i]);
	}
	for (int i = 0; i < CK_PRODUCERS; i++) {
		pa[i] = (struct worker_arg){ &s, i };
		pthread_create(&pt[i], NULL, cc_producer, &pa[i]);
	}
	for (int i = 0; i < CK_PRODUCERS; i++)
		pthread_join(pt[i], NULL);
	kwq_shutdown_drain(s.q);
	for (int i = 0; i < CK_WORKERS; i++)
		pthread_join(wt[i], NULL);

	CHECK_EQ(atomic_load(&s.violations), 0);
	long gets = atomic_load(&s.gets);
	CHECK_INT(gets, <=, (long)CK_PRODUCERS * CK_ADDS);
	for (int k = 0; k < CK_KEYS; k++) {
		long v = atomic_load(&s.version[k]);
		if (v > 0)
			CHECK_EQ(atomic_load(&s.seen[k]), v);
	}
	CHECK_EQ(kwq_len(s.q), 0);
	kwq_free(s.q);
}

/* -------------------------------------------------------- delayed adds */

#define MS (1000000LL)

/* Poll kwq_len until it reaches n (the timer thread runs on its own). */
static size_t wait_len(kwq_t *q, size_t n)
{
	for (int i = 0; i < 10000 && kwq_len(q) < n; i++)
		pause_ms(1);
	return kwq_len(q);
}

/*
 * A barrier through the timer thread: a delayed add due 1 ns from now is
 * added after everything that was due before it, so once it is got, the
 * timer has added all that it ever will for the current time.  Checks that
 * nothing else was queued ahead of it.
 */
#define CHECK_NOTHING_MORE(q, c)                                                \
	do {                                                                    \
		kwq_item_t *b_;                                                  \
		CHECK_EQ(kwq_add_after((q), "barrier", 7, 1), 0);                 \
		kwq_clock_fake_step((c), 1);                                     \
		CHECK_EQ(kwq_get_timeout((q), &b_, 10000 * MS), 0);               \
		size_t bl_;                                                      \
		const void *bk_ = kwq_item_key(b_, &bl_);                        \
		CHECK_MEM(bk_, bl_, "barrier", 7);                               \
		CHECK_EQ(kwq_done((q), b_), 0);                                  \
	} while (0)

/* client-go TestSimpleQueue */
static void t_delay_simple(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);
	kwq_item_t *it;

	CHECK_EQ(kwq_add_after(q, "foo", 3, 50 * MS), 0);
	CHECK_EQ(kwq_try_get(q, &it), -EAGAIN);
	CHECK_EQ(kwq_len(q), 0);
	kwq_clock_fake_step(c, 60 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "foo");
	kwq_clock_fake_step(c, 10000 * MS);
	CHECK_NOTHING_MORE(q, c);
	CHECK_EQ(kwq_len(q), 0);
	kwq_free(q);
	kwq_clock_free(c);
}

/* client-go TestDeduping: the earlier ready time wins, either way round */
static void t_delay_dedup_earliest_wins(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);
	kwq_item_t *it;

	CHECK_EQ(kwq_add_after(q, "foo", 3, 50 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "foo", 3, 70 * MS), 0);
	kwq_clock_fake_step(c, 60 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "foo");
	kwq_clock_fake_step(c, 20 * MS); /* the 70 ms request was merged */
	CHECK_NOTHING_MORE(q, c);

	CHECK_EQ(kwq_add_after(q, "foo", 3, 70 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "foo", 3, 50 * MS), 0);
	kwq_clock_fake_step(c, 60 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "foo");
	kwq_clock_fake_step(c, 20 * MS);
	CHECK_NOTHING_MORE(q, c);
	CHECK_EQ(kwq_try_get(q, &it), -EAGAIN);
	kwq_free(q);
	kwq_clock_free(c);
}

/* client-go TestAddTwoFireEarly */
static void t_delay_two_fire_early(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);

	CHECK_EQ(kwq_add_after(q, "foo", 3, 1000 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "bar", 3, 50 * MS), 0);
	kwq_clock_fake_step(c, 60 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "bar");
	CHECK_EQ(kwq_add_after(q, "foo", 3, 50 * MS), 0); /* earlier: wins */
	kwq_clock_fake_step(c, 60 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "foo");
	kwq_clock_fake_step(c, 2000 * MS);
	CHECK_NOTHING_MORE(q, c);
	kwq_free(q);
	kwq_clock_free(c);
}

/* client-go TestCopyShifting: items due together come out by ready time */
static void t_delay_order_by_ready_time(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);

	CHECK_EQ(ADDS(q, "x"), 0); /* a queued item stays ahead */
	CHECK_EQ(kwq_add_after(q, "first", 5, 1000 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "second", 6, 500 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "third", 5, 250 * MS), 0);
	/* equal ready times: call order; a call moving a key earlier counts
	 * with its own position */
	CHECK_EQ(kwq_add_after(q, "e1", 2, 300 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "e3", 2, 900 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "e2", 2, 300 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "e3", 2, 300 * MS), 0);
	CHECK_EQ(kwq_len(q), 1);
	kwq_clock_fake_step(c, 2000 * MS);
	CHECK_EQ(wait_len(q, 7), 7);
	CHECK_GET_DONE(q, "x");
	CHECK_GET_DONE(q, "third");
	CHECK_GET_DONE(q, "e1");
	CHECK_GET_DONE(q, "e2");
	CHECK_GET_DONE(q, "e3");
	CHECK_GET_DONE(q, "second");
	CHECK_GET_DONE(q, "first");
	kwq_free(q);
	kwq_clock_free(c);
}

static void t_delay_nonpositive_is_add(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);

	CHECK_EQ(kwq_add_after(q, "a", 1, 0), 0);
	CHECK_EQ(kwq_add_after(q, "b", 1, -5), 0);
	CHECK_EQ(kwq_add_after(q, "b", 1, INT64_MIN), 0);
	CHECK_EQ(kwq_len(q), 2);
	CHECK_GET_DONE(q, "a");
	CHECK_GET_DONE(q, "b");
	kwq_free(q);
	kwq_clock_free(c);
}

/* A queued or held+dirty item is already due: the delayed add is absorbed
 * (controller-runtime); the reference would process it a second time. */
static void t_delay_absorbed_when_due(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);
	kwq_item_t *a;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_add_after(q, "a", 1, 50 * MS), 0);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET_DONE(q, "a");
	kwq_clock_fake_step(c, 100 * MS);
	CHECK_NOTHING_MORE(q, c);

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(ADDS(q, "a"), 0); /* held+dirty */
	CHECK_EQ(kwq_add_after(q, "a", 1, 50 * MS), 0);
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_GET_DONE(q, "a");
	kwq_clock_fake_step(c, 100 * MS);
	CHECK_NOTHING_MORE(q, c);
	kwq_free(q);
	kwq_clock_free(c);
}

/* A held item may wait: it is added when due, after its done. */
static void t_delay_held_item_waits(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);
	kwq_item_t *a, *x;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(kwq_add_after(q, "a", 1, 50 * MS), 0);
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_EQ(kwq_len(q), 0); /* waiting is not queued */
	CHECK_EQ(kwq_try_get(q, &x), -EAGAIN);
	kwq_clock_fake_step(c, 50 * MS); /* due exactly now */
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "a");
	kwq_free(q);
	kwq_clock_free(c);
}

/* An immediate add cancels the wait. */
static void t_delay_cancelled_by_add(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);

	CHECK_EQ(kwq_add_after(q, "a", 1, 50 * MS), 0);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET_DONE(q, "a");
	kwq_clock_fake_step(c, 100 * MS);
	CHECK_NOTHING_MORE(q, c);
	kwq_free(q);
	kwq_clock_free(c);
}

static void t_delay_shutdown_drops(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);
	kwq_item_t *it;

	for (int i = 0; i < 100; i++)
		CHECK_EQ(kwq_add_after(q, &i, sizeof i, (i + 1) * MS), 0);
	CHECK_EQ(kwq_add_after(q, "a", 1, 50 * MS), 0);
	kwq_shutdown(q);
	CHECK_EQ(kwq_add_after(q, "b", 1, 50 * MS), -ESHUTDOWN);
	CHECK_EQ(kwq_add_after(q, "b", 1, 0), -ESHUTDOWN);
	kwq_clock_fake_step(c, 1000 * MS);
	pause_ms(20);
	CHECK_EQ(kwq_len(q), 0);
	CHECK_EQ(kwq_get(q, &it), -ESHUTDOWN);
	kwq_free(q); /* frees what was dropped or still in flight (ASan) */

	/* a queue freed with delayed adds pending frees them */
	q = row_queue(NULL, c, NULL);
	for (int i = 0; i < 1000; i++)
		CHECK_EQ(kwq_add_after(q, &i, sizeof i, 3600000 * MS), 0);
	kwq_free(q);
	kwq_clock_free(c);
}

static void t_delay_bad_input(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);

	CHECK_EQ(kwq_add_after(NULL, "a", 1, MS), -EINVAL);
	CHECK_EQ(kwq_add_after(q, NULL, 1, MS), -EINVAL);
	CHECK_EQ(kwq_add_after(q, "a", (size_t)KWQ_KEY_MAX + 1, MS), -EINVAL);
	CHECK_EQ(kwq_add_after(q, NULL, 0, 0), 0); /* empty key, at once */
	CHECK_EQ(kwq_len(q), 1);
	kwq_free(q);
}

/* On the monotonic clock: never before the ready time; many pending adds
 * never block the caller. */
static void t_delay_monotonic(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *it;

	for (int i = 0; i < 20000; i++)
		CHECK_EQ(kwq_add_after(q, &i, sizeof i, 3600000 * MS), 0);
	int64_t t0 = now_ns();
	CHECK_EQ(kwq_add_after(q, "soon", 4, 20 * MS), 0);
	CHECK_EQ(kwq_get_timeout(q, &it, 10000 * MS), 0);
	CHECK_INT(now_ns() - t0, >=, 20 * MS);
	size_t l;
	const void *k = kwq_item_key(it, &l);
	CHECK_MEM(k, l, "soon", 4);
	CHECK_EQ(kwq_done(q, it), 0);
	CHECK_EQ(kwq_len(q), 0);
	kwq_free(q);
}

/* ------------------------------------------------- rate-limited adds */

/* client-go TestRateLimitingQueue, observed through the queue */
static void t_rate_limited_queue(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, kwq_limiter_exponential(1 * MS, 1000 * MS));

	CHECK_EQ(kwq_add_rate_limited(q, "one", 3), 0); /* waits 1 ms */
	CHECK_EQ(kwq_add_rate_limited(q, "one", 3), 0); /* 2 ms: earlier kept */
	CHECK_EQ(kwq_num_requeues(q, "one", 3), 2);
	CHECK_EQ(kwq_add_rate_limited(q, "two", 3), 0);
	CHECK_EQ(kwq_add_rate_limited(q, "two", 3), 0);
	CHECK_EQ(kwq_num_requeues(q, "two", 3), 2);
	CHECK_EQ(kwq_len(q), 0);
	kwq_clock_fake_step(c, 1 * MS);
	CHECK_EQ(wait_len(q, 2), 2);
	CHECK_GET_DONE(q, "one");
	CHECK_GET_DONE(q, "two");

	CHECK_EQ(kwq_forget(q, "one", 3), 0);
	CHECK_EQ(kwq_num_requeues(q, "one", 3), 0);
	CHECK_EQ(kwq_num_requeues(q, "two", 3), 2);
	CHECK_EQ(kwq_add_rate_limited(q, "one", 3), 0); /* 1 ms again */
	kwq_clock_fake_step(c, 1 * MS - 2);
	CHECK_NOTHING_MORE(q, c);
	kwq_clock_fake_step(c, 1);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "one");

	/* when() counts the failure even when the add is refused */
	kwq_shutdown(q);
	CHECK_EQ(kwq_add_rate_limited(q, "two", 3), -ESHUTDOWN);
	CHECK_EQ(kwq_num_requeues(q, "two", 3), 3);
	CHECK_EQ(kwq_add_rate_limited(NULL, "two", 3), -EINVAL);
	CHECK_EQ(kwq_add_rate_limited(q, NULL, 3), -EINVAL);
	CHECK_EQ(kwq_forget(NULL, "two", 3), -EINVAL);
	CHECK_EQ(kwq_num_requeues(q, NULL, 1), -EINVAL);
	kwq_free(q);
	kwq_clock_free(c);
}

/* The default limiter runs on the queue's clock: 5 ms, 10 ms, ... */
static void t_rate_limited_default(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);

	CHECK_EQ(kwq_add_rate_limited(q, "k", 1), 0);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 1);
	kwq_clock_fake_step(c, 5 * MS - 2);
	CHECK_NOTHING_MORE(q, c);
	kwq_clock_fake_step(c, 1);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "k");
	kwq_free(q);
	kwq_clock_free(c);

	/* a limiter given with a bad config is freed (ASan checks) */
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = (enum kwq_impl)99;
	cfg.limiter = kwq_limiter_exponential(MS, MS);
	CHECK_PTR(kwq_new(&cfg), ==, NULL);
	CHECK_EQ(errno, EINVAL);
}

/* -------------------------------------------------------- priorities */

static int add_prio(kwq_t *q, const char *k, int prio)
{
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	o.priority = prio;
	return kwq_add_with(q, k, strlen(k), &o);
}

#define CHECK_GET_PRIO(q, s, prio)                                              \
	do {                                                                    \
		kwq_item_t *gp_;                                                 \
		CHECK_GET((q), (s), &gp_);                                       \
		CHECK_EQ(kwq_item_priority(gp_), (prio));                         \
		CHECK_EQ(kwq_done((q), gp_), 0);                                  \
	} while (0)

/* controller-runtime: highest priority first, FIFO within a priority */
static void t_prio_order(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(add_prio(q, "b", 5), 0);
	CHECK_EQ(add_prio(q, "c", 5), 0);
	CHECK_EQ(add_prio(q, "d", 10), 0);
	CHECK_EQ(add_prio(q, "e", -3), 0);
	CHECK_EQ(add_prio(q, "f", 0), 0);
	CHECK_EQ(kwq_len(q), 6);
	CHECK_GET_PRIO(q, "d", 10);
	CHECK_GET_PRIO(q, "b", 5);
	CHECK_GET_PRIO(q, "c", 5);
	CHECK_GET_PRIO(q, "a", 0);
	CHECK_GET_PRIO(q, "f", 0);
	CHECK_GET_PRIO(q, "e", -3);
	CHECK_EQ(kwq_len(q), 0);
	CHECK_EQ(kwq_item_priority(NULL), 0);
	kwq_free(q);
}

/* a lower or equal priority changes nothing; a raise moves to the tail of
 * the new priority */
static void t_prio_raise_and_keep(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);

	CHECK_EQ(add_prio(q, "a", 5), 0);
	CHECK_EQ(add_prio(q, "b", 3), 0);
	CHECK_EQ(add_prio(q, "a", 2), 0); /* kept at 5 */
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET_PRIO(q, "a", 5);
	CHECK_GET_PRIO(q, "b", 3);

	CHECK_EQ(ADDS(q, "x"), 0);
	CHECK_EQ(add_prio(q, "y", 1), 0);
	CHECK_EQ(add_prio(q, "z", 1), 0);
	CHECK_EQ(add_prio(q, "x", 1), 0); /* raised: behind y and z */
	CHECK_EQ(add_prio(q, "y", 1), 0); /* equal: position kept */
	CHECK_EQ(kwq_len(q), 3);
	CHECK_GET_PRIO(q, "y", 1);
	CHECK_GET_PRIO(q, "z", 1);
	CHECK_GET_PRIO(q, "x", 1);
	kwq_free(q);
}

/* held+dirty is re-queued with the highest priority asked since it was
 * handed out; the priority it was handed out with does not carry over */
static void t_prio_dirty_requeue(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a;

	CHECK_EQ(add_prio(q, "a", 5), 0);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(kwq_item_priority(a), 5);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(add_prio(q, "b", 1), 0);
	CHECK_EQ(kwq_done(q, a), 0); /* queued at 0, behind b */
	CHECK_GET_PRIO(q, "b", 1);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(kwq_item_priority(a), 0);

	CHECK_EQ(add_prio(q, "a", 3), 0);
	CHECK_EQ(add_prio(q, "a", 1), 0);
	CHECK_EQ(add_prio(q, "c", 2), 0);
	CHECK_EQ(kwq_done(q, a), 0); /* queued at 3, ahead of c */
	CHECK_GET_PRIO(q, "a", 3);
	CHECK_GET_PRIO(q, "c", 2);
	kwq_free(q);
}

/* bands: many priorities and keys, handed out in order */
static void t_prio_bands(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	unsigned x = 12345;
	int prio_of[300];

	for (int i = 0; i < 300; i++) {
		x = x * 1103515245u + 12345u;
		prio_of[i] = (int)((x >> 16) % 7) - 2;
		struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
		o.priority = prio_of[i];
		CHECK_EQ(kwq_add_with(q, &i, sizeof i, &o), 0);
	}
	int last_prio = INT32_MAX, last_i = -1;
	for (int n = 0; n < 300; n++) {
		kwq_item_t *it;
		int i;
		CHECK_EQ(kwq_try_get(q, &it), 0);
		memcpy(&i, kwq_item_key(it, NULL), sizeof i);
		int p = kwq_item_priority(it);
		CHECK_EQ(p, prio_of[i]);
		CHECK_INT(p, <=, last_prio);
		if (p == last_prio)
			CHECK_INT(i, >, last_i); /* FIFO within a band */
		last_prio = p;
		last_i = i;
		CHECK_EQ(kwq_done(q, it), 0);
	}
	kwq_free(q);
}

/* a ready item stays ready; a delayed add of a queued item may only raise
 * its priority; a waiting item keeps the earlier time and the higher
 * priority */
static void t_prio_with_delays(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	o.after_ns = 1000 * MS;
	o.priority = 2;
	CHECK_EQ(kwq_add_with(q, "b", 1, &o), 0); /* ready: raised, not delayed */
	CHECK_EQ(kwq_len(q), 2);
	CHECK_GET_PRIO(q, "b", 2);
	CHECK_GET_PRIO(q, "a", 0);
	kwq_clock_fake_step(c, 2000 * MS);
	CHECK_NOTHING_MORE(q, c);

	o.after_ns = 50 * MS;
	o.priority = 3;
	CHECK_EQ(kwq_add_with(q, "w", 1, &o), 0);
	o.after_ns = 100 * MS;
	o.priority = 7;
	CHECK_EQ(kwq_add_with(q, "w", 1, &o), 0);
	o.after_ns = 80 * MS;
	o.priority = 1;
	CHECK_EQ(kwq_add_with(q, "w", 1, &o), 0);
	CHECK_EQ(ADDS(q, "z"), 0);
	kwq_clock_fake_step(c, 50 * MS);
	CHECK_EQ(wait_len(q, 2), 2);
	CHECK_GET_PRIO(q, "w", 7);
	CHECK_GET_PRIO(q, "z", 0);
	kwq_clock_fake_step(c, 100 * MS);
	CHECK_NOTHING_MORE(q, c);

	/* an immediate add with priority cancels the wait */
	o.after_ns = 50 * MS;
	o.priority = 0;
	CHECK_EQ(kwq_add_with(q, "v", 1, &o), 0);
	CHECK_EQ(add_prio(q, "v", 4), 0);
	CHECK_GET_PRIO(q, "v", 4);
	kwq_clock_fake_step(c, 100 * MS);
	CHECK_NOTHING_MORE(q, c);
	kwq_free(q);
	kwq_clock_free(c);
}

/*
 * controller-runtime: an immediate add of a waiting key keeps the wait's
 * priority when it is the higher, and cancels the wait, at once (the next
 * get sees it, with no timer step in between).
 */
static void t_prio_wait_kept_by_add(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	kwq_item_t *it;

	o.after_ns = 50 * MS;
	o.priority = 3;
	CHECK_EQ(kwq_add_with(q, "w", 1, &o), 0);
	CHECK_EQ(ADDS(q, "w"), 0); /* priority 0 asked: 3 kept */
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET_PRIO(q, "w", 3);

	/* below the default: a priority-0 wait still wins */
	o.priority = 0;
	CHECK_EQ(kwq_add_with(q, "n", 1, &o), 0);
	CHECK_EQ(add_prio(q, "n", -2), 0);
	CHECK_GET_PRIO(q, "n", 0);

	/* a lower wait priority changes nothing */
	o.priority = 1;
	CHECK_EQ(kwq_add_with(q, "l", 1, &o), 0);
	CHECK_EQ(add_prio(q, "l", 5), 0);
	CHECK_GET_PRIO(q, "l", 5);

	/* held and waiting: the wait's priority goes to the dirty re-queue */
	CHECK_EQ(ADDS(q, "h"), 0);
	CHECK_GET(q, "h", &it);
	o.priority = 4;
	CHECK_EQ(kwq_add_with(q, "h", 1, &o), 0); /* held: waits */
	CHECK_EQ(kwq_len(q), 0);
	CHECK_EQ(ADDS(q, "h"), 0); /* held+dirty, with 4 */
	CHECK_EQ(kwq_done(q, it), 0);
	CHECK_GET_PRIO(q, "h", 4);

	/* every wait was cancelled: nothing fires later */
	kwq_clock_fake_step(c, 100 * MS);
	CHECK_NOTHING_MORE(q, c);
	kwq_free(q);
	kwq_clock_free(c);
}

/* rate_limited: the limiter's wait, or the lower of it and after_ns */
static void t_prio_rate_limited_opts(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, kwq_limiter_exponential(10 * MS, 1000 * MS));
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;

	o.rate_limited = true;
	o.after_ns = 30 * MS; /* limiter says 10 ms: wins */
	CHECK_EQ(kwq_add_with(q, "a", 1, &o), 0);
	o.after_ns = 5 * MS; /* limiter says 10 ms: after wins */
	o.priority = 1;
	CHECK_EQ(kwq_add_with(q, "b", 1, &o), 0);
	o.after_ns = 0; /* limiter alone: 10 ms */
	o.priority = 0;
	CHECK_EQ(kwq_add_with(q, "c", 1, &o), 0);
	CHECK_EQ(kwq_num_requeues(q, "a", 1), 1);
	CHECK_EQ(kwq_num_requeues(q, "b", 1), 1);
	kwq_clock_fake_step(c, 5 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_PRIO(q, "b", 1);
	kwq_clock_fake_step(c, 5 * MS);
	CHECK_EQ(wait_len(q, 2), 2);
	CHECK_GET_PRIO(q, "a", 0);
	CHECK_GET_PRIO(q, "c", 0);

	CHECK_EQ(kwq_add_with(q, "a", 1, NULL), -EINVAL);
	o.size = 0;
	CHECK_EQ(kwq_add_with(q, "a", 1, &o), -EINVAL);
	o = KWQ_ADD_OPTS_INIT;
	CHECK_EQ(kwq_add_with(NULL, "a", 1, &o), -EINVAL);
	CHECK_EQ(kwq_len(q), 0);
	kwq_shutdown(q);
	CHECK_EQ(kwq_add_with(q, "a", 1, &o), -ESHUTDOWN);
	kwq_free(q);
	kwq_clock_free(c);
}

/* ------------------------------------------------------- 0.2 additions */

/* The key of a held item. */
#define CHECK_KEY(it, s)                                                        \
	do {                                                                    \
		size_t kl_;                                                      \
		const void *kk_ = kwq_item_key((it), &kl_);                       \
		CHECK_MEM(kk_, kl_, (s), strlen(s));                              \
	} while (0)

/* What a queue's on_give_up saw. */
struct give_ups {
	kwq_t *q;        /* when set, the callback adds "cb" to it */
	int calls;
	int add_rc;      /* that add's return */
	void *ctx;
	pthread_t thread;
	char key[16];
	size_t len;
};

static void on_give_up(void *ctx, const void *key, size_t len)
{
	struct give_ups *g = ctx;
	g->calls++;
	g->ctx = ctx;
	g->thread = pthread_self();
	g->len = len;
	if (len > 0 && len <= sizeof g->key)
		memcpy(g->key, key, len);
	if (g->q != NULL)
		g->add_rc = kwq_add(g->q, "cb", 2);
}

/* A queue of the row with max_attempts and, with g, on_give_up. */
static kwq_t *give_up_queue(kwq_clock_t *c, kwq_limiter_t *l, int max_attempts,
			    struct give_ups *g)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = row->impl;
	cfg.clock = c;
	cfg.limiter = l;
	cfg.max_attempts = max_attempts;
	cfg.on_give_up = g != NULL ? on_give_up : NULL;
	cfg.give_up_ctx = g;
	kwq_t *q = kwq_new(&cfg);
	if (q == NULL) {
		printf("Bail out! kwq_new(%s): %s\n", row->name, kwq_strerror(errno));
		exit(1);
	}
	return q;
}

/* A custom limiter that counts its calls and always answers `wait`. */
struct counting {
	int64_t wait;
	atomic_int when, forget;
};

static int64_t counting_when(void *ctx, const void *key, size_t len)
{
	struct counting *c = ctx;
	(void)key;
	(void)len;
	atomic_fetch_add(&c->when, 1);
	return c->wait;
}

static void counting_forget(void *ctx, const void *key, size_t len)
{
	struct counting *c = ctx;
	(void)key;
	(void)len;
	atomic_fetch_add(&c->forget, 1);
}

static kwq_limiter_t *counting_limiter(struct counting *c, int64_t wait)
{
	static const struct kwq_limiter_ops ops = {
		.size = sizeof ops,
		.when = counting_when,
		.forget = counting_forget,
	};
	c->wait = wait;
	atomic_init(&c->when, 0);
	atomic_init(&c->forget, 0);
	kwq_limiter_t *l = kwq_limiter_custom(&ops, c);
	if (l == NULL) {
		printf("Bail out! kwq_limiter_custom: %s\n", kwq_strerror(errno));
		exit(1);
	}
	return l;
}

/* Count n failures of the key in the queue's limiter. */
static int fail_times(kwq_t *q, const char *k, int n)
{
	for (int i = 0; i < n; i++) {
		if (kwq_limiter_when(kwq_limiter(q), k, strlen(k)) < 0)
			return -1;
	}
	return kwq_num_requeues(q, k, strlen(k));
}

/* kwq_limiter: the limiter given, or the default one, borrowed */
static void t_limiter_of_queue(void)
{
	kwq_limiter_t *l = kwq_limiter_exponential(1 * MS, 1000 * MS);
	kwq_t *q = row_queue(NULL, NULL, l);

	CHECK_PTR(kwq_limiter(q), ==, l);
	CHECK_PTR(kwq_limiter(q), ==, l); /* the same every time */
	CHECK_EQ(kwq_limiter_when(kwq_limiter(q), "k", 1), 1 * MS);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 1);
	CHECK_EQ(kwq_forget(q, "k", 1), 0);
	CHECK_EQ(kwq_limiter_num_requeues(l, "k", 1), 0);
	CHECK_PTR(kwq_limiter(NULL), ==, NULL);
	kwq_free(q); /* frees l */

	/* the default limiter: 5 ms first, on the queue's clock */
	kwq_clock_t *c = kwq_clock_fake_new(0);
	q = row_queue(NULL, c, NULL);
	CHECK_PTR(kwq_limiter(q), !=, NULL);
	CHECK_EQ(kwq_limiter_when(kwq_limiter(q), "k", 1), 5 * MS);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 1);
	CHECK_EQ(kwq_add_rate_limited(q, "k", 1), 0);
	CHECK_EQ(kwq_limiter_num_requeues(kwq_limiter(q), "k", 1), 2);
	kwq_free(q);
	kwq_clock_free(c);
}

/* ---------------------------------------------- 0.2: kwq_finish outcomes */

/* KWQ_OK forgets the key's failures and ends the processing; a pending
 * wait is left alone */
static void t_finish_ok(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, kwq_limiter_exponential(1 * MS, 1000 * MS));
	kwq_item_t *it, *x;

	CHECK_EQ(fail_times(q, "a", 3), 3);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_OK, 0), 0);
	CHECK_EQ(kwq_num_requeues(q, "a", 1), 0);
	CHECK_EQ(kwq_len(q), 0);
	CHECK_EQ(kwq_try_get(q, &x), -EAGAIN);
	CHECK_EQ(ADDS(q, "a"), 0); /* absent again: queued */
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET(q, "a", &it);
	/* after_ns is not read for KWQ_OK */
	CHECK_EQ(kwq_finish(q, it, KWQ_OK, -5), 0);
	CHECK_EQ(kwq_len(q), 0);

	/* a wait the key took while held still fires */
	CHECK_EQ(ADDS(q, "w"), 0);
	CHECK_GET(q, "w", &it);
	CHECK_EQ(kwq_add_after(q, "w", 1, 50 * MS), 0);
	CHECK_EQ(kwq_finish(q, it, KWQ_OK, 0), 0);
	CHECK_EQ(kwq_len(q), 0);
	kwq_clock_fake_step(c, 50 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "w");
	kwq_free(q);
	kwq_clock_free(c);
}

/* KWQ_RETRY is kwq_add_rate_limited: the limiter's wait, counted */
static void t_finish_retry(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, kwq_limiter_exponential(1 * MS, 1000 * MS));
	kwq_item_t *it;

	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 1);
	CHECK_EQ(kwq_len(q), 0); /* waits 1 ms */
	kwq_clock_fake_step(c, 1 * MS - 2);
	CHECK_NOTHING_MORE(q, c);
	kwq_clock_fake_step(c, 1);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, -7), 0); /* after_ns not read */
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 2);
	kwq_clock_fake_step(c, 2 * MS - 2); /* waits 2 ms */
	CHECK_NOTHING_MORE(q, c);
	kwq_clock_fake_step(c, 1);
	CHECK_EQ(wait_len(q, 1), 1);

	/* max_attempts 0: never gives up */
	for (int i = 3; i <= 8; i++) {
		CHECK_GET(q, "k", &it);
		CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
		CHECK_EQ(kwq_num_requeues(q, "k", 1), i);
		kwq_clock_fake_step(c, 1000 * MS);
		CHECK_EQ(wait_len(q, 1), 1);
	}
	CHECK_GET_DONE(q, "k");
	kwq_free(q);
	kwq_clock_free(c);
}

/* KWQ_RETRY_AFTER: the given delay; the limiter is not asked, its count
 * kept; 0 adds at once */
static void t_finish_retry_after(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	static struct counting cnt;
	kwq_t *q = row_queue(NULL, c, counting_limiter(&cnt, 1 * MS));
	kwq_item_t *it;

	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY_AFTER, 30 * MS), 0);
	CHECK_EQ(atomic_load(&cnt.when), 0);
	CHECK_EQ(atomic_load(&cnt.forget), 0);
	CHECK_EQ(kwq_len(q), 0);
	kwq_clock_fake_step(c, 30 * MS - 2); /* not the limiter's 1 ms */
	CHECK_NOTHING_MORE(q, c);
	kwq_clock_fake_step(c, 1);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY_AFTER, 0), 0); /* at once */
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_OK, 0), 0);
	CHECK_EQ(atomic_load(&cnt.when), 0);
	CHECK_EQ(atomic_load(&cnt.forget), 1);
	kwq_free(q);
	kwq_clock_free(c);

	/* a per-key limiter's count is kept */
	c = kwq_clock_fake_new(0);
	q = row_queue(NULL, c, kwq_limiter_exponential(1 * MS, 1000 * MS));
	CHECK_EQ(fail_times(q, "k", 2), 2);
	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY_AFTER, 10 * MS), 0);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 2);
	kwq_clock_fake_step(c, 10 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "k");
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 2);
	kwq_free(q);
	kwq_clock_free(c);
}

/* KWQ_DROP forgets and cancels the key's wait */
static void t_finish_drop(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, kwq_limiter_exponential(1 * MS, 1000 * MS));
	kwq_item_t *it, *x;

	CHECK_EQ(fail_times(q, "k", 2), 2);
	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_add_after(q, "k", 1, 50 * MS), 0); /* held: waits */
	CHECK_EQ(kwq_finish(q, it, KWQ_DROP, 0), 0);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 0);
	CHECK_EQ(kwq_len(q), 0);
	kwq_clock_fake_step(c, 100 * MS);
	CHECK_NOTHING_MORE(q, c);
	CHECK_EQ(kwq_try_get(q, &x), -EAGAIN);

	/* a wait of a rate-limited add made while held, too */
	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_add_rate_limited(q, "k", 1), 0);
	CHECK_EQ(kwq_finish(q, it, KWQ_DROP, 0), 0);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 0);
	kwq_clock_fake_step(c, 100 * MS);
	CHECK_NOTHING_MORE(q, c);

	/* other keys' waits are not touched */
	CHECK_EQ(kwq_add_after(q, "o", 1, 50 * MS), 0);
	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_DROP, 0), 0);
	kwq_clock_fake_step(c, 50 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "o");
	kwq_free(q);
	kwq_clock_free(c);
}

/* An add made during processing is never lost, whatever the outcome (a
 * give-up included) */
static void t_finish_keeps_dirty(void)
{
	static const enum kwq_outcome outcomes[] = { KWQ_OK, KWQ_RETRY, KWQ_RETRY_AFTER,
						     KWQ_DROP };
	kwq_clock_t *c = kwq_clock_fake_new(0);
	struct give_ups g = { 0 };
	kwq_t *q = give_up_queue(c, kwq_limiter_exponential(1 * MS, 1000 * MS), 2, &g);
	kwq_item_t *it;

	for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++) {
		CHECK_EQ(ADDS(q, "k"), 0);
		CHECK_GET(q, "k", &it);
		CHECK_EQ(ADDS(q, "k"), 0); /* held+dirty */
		CHECK_EQ(ADDS(q, "z"), 0);
		CHECK_EQ(kwq_finish(q, it, outcomes[i], 50 * MS), 0);
		CHECK_EQ(kwq_len(q), 2); /* queued again at once, behind z */
		CHECK_GET_DONE(q, "z");
		CHECK_GET_DONE(q, "k");
		/* the retry was absorbed: nothing fires later */
		kwq_clock_fake_step(c, 1000 * MS);
		CHECK_NOTHING_MORE(q, c);
		CHECK_EQ(kwq_forget(q, "k", 1), 0);
	}

	/* a give-up: forgotten, the callback called, the re-add kept */
	CHECK_EQ(fail_times(q, "k", 2), 2);
	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
	CHECK_EQ(g.calls, 1);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 0);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET_DONE(q, "k");
	kwq_clock_fake_step(c, 1000 * MS);
	CHECK_NOTHING_MORE(q, c);
	kwq_free(q);
	kwq_clock_free(c);
}

/* max_attempts m: a key that fails every time is processed m + 1 times;
 * on_give_up once, on the calling thread, before kwq_finish returns */
static void t_finish_give_up(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	struct give_ups g = { 0 };
	kwq_t *q = give_up_queue(c, kwq_limiter_exponential(1 * MS, 1000 * MS), 3, &g);
	kwq_item_t *it;
	int processed = 0;

	g.q = q; /* the callback may call the queue */
	CHECK_EQ(ADDS(q, "k"), 0);
	while (g.calls == 0) {
		CHECK_GET(q, "k", &it);
		processed++;
		CHECK_INT(processed, <=, 4);
		int before = kwq_num_requeues(q, "k", 1);
		CHECK_EQ(before, processed - 1);
		CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
		if (g.calls == 0) {
			CHECK_EQ(kwq_num_requeues(q, "k", 1), before + 1);
			kwq_clock_fake_step(c, 1000 * MS);
		}
	}
	CHECK_EQ(processed, 4);
	CHECK_EQ(g.calls, 1);
	CHECK_PTR(g.ctx, ==, &g);
	CHECK(pthread_equal(g.thread, pthread_self()));
	CHECK_MEM(g.key, g.len, "k", 1);
	CHECK_EQ(g.add_rc, 0);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 0); /* forgotten */
	/* not retried: only the callback's add is queued */
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET_DONE(q, "cb");
	kwq_clock_fake_step(c, 10000 * MS);
	CHECK_NOTHING_MORE(q, c);
	CHECK_EQ(g.calls, 1);

	/* forgotten: the next failure starts over */
	g.q = NULL;
	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
	CHECK_EQ(g.calls, 1);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 1);

	/* KWQ_RETRY_AFTER and kwq_add_rate_limited never give up */
	kwq_clock_fake_step(c, 1000 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_EQ(fail_times(q, "k", 5), 6);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY_AFTER, 10 * MS), 0);
	CHECK_EQ(g.calls, 1);
	kwq_clock_fake_step(c, 10 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "k");
	for (int i = 0; i < 3; i++)
		CHECK_EQ(kwq_add_rate_limited(q, "k", 1), 0);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 9);
	kwq_clock_fake_step(c, 100000 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "k");
	CHECK_EQ(g.calls, 1);

	/* another key gives up on its own count */
	CHECK_EQ(fail_times(q, "j", 3), 3);
	CHECK_EQ(ADDS(q, "j"), 0);
	CHECK_GET(q, "j", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
	CHECK_EQ(g.calls, 2);
	CHECK_MEM(g.key, g.len, "j", 1);
	CHECK_EQ(kwq_len(q), 0);
	kwq_free(q);
	kwq_clock_free(c);
}

/* A give-up makes no add: after shutdown it happens the same way and
 * returns 0; without on_give_up too */
static void t_finish_give_up_after_shutdown(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	struct give_ups g = { 0 };
	kwq_t *q = give_up_queue(c, kwq_limiter_exponential(1 * MS, 1000 * MS), 1, &g);
	kwq_item_t *it;

	CHECK_EQ(fail_times(q, "k", 1), 1);
	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &it);
	kwq_shutdown(q);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
	CHECK_EQ(g.calls, 1);
	CHECK_MEM(g.key, g.len, "k", 1);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 0);
	CHECK_EQ(kwq_shutdown_drain_timeout(q, 0), 0); /* the done happened */
	kwq_free(q);

	q = give_up_queue(c, kwq_limiter_exponential(1 * MS, 1000 * MS), 2, NULL);
	CHECK_EQ(fail_times(q, "k", 2), 2);
	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 0);
	CHECK_EQ(kwq_len(q), 0);
	kwq_clock_fake_step(c, 1000 * MS);
	CHECK_NOTHING_MORE(q, c);
	kwq_free(q);
	kwq_clock_free(c);
}

/* -ESHUTDOWN: the retry refused, the done still made (the handle
 * consumed); -EINVAL: nothing happened, the handle still held */
static void t_finish_errors(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	static struct counting cnt;
	kwq_t *q = row_queue(NULL, c, counting_limiter(&cnt, 1 * MS));
	kwq_item_t *it, *x;

	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_finish(NULL, it, KWQ_OK, 0), -EINVAL);
	CHECK_EQ(kwq_finish(q, NULL, KWQ_OK, 0), -EINVAL);
	CHECK_EQ(kwq_finish(q, it, (enum kwq_outcome)4, 0), -EINVAL);
	CHECK_EQ(kwq_finish(q, it, (enum kwq_outcome)-1, 0), -EINVAL);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY_AFTER, -1), -EINVAL);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY_AFTER, INT64_MIN), -EINVAL);
	CHECK_EQ(atomic_load(&cnt.when), 0);
	CHECK_EQ(atomic_load(&cnt.forget), 0);
	CHECK_KEY(it, "k"); /* still held */
	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_EQ(kwq_len(q), 0);
	CHECK(kwq_item_dirty(q, it));
	CHECK_EQ(kwq_finish(q, it, KWQ_OK, 0), 0);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET(q, "k", &it);

	/* after shutdown: every retry refused, the done made */
	kwq_shutdown(q);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), -ESHUTDOWN);
	CHECK_EQ(atomic_load(&cnt.when), 1); /* asked, as kwq_add_rate_limited */
	CHECK_EQ(kwq_shutdown_drain_timeout(q, 0), 0); /* nothing held */
	CHECK_EQ(kwq_get(q, &x), -ESHUTDOWN);
	kwq_free(q);

	static const struct {
		enum kwq_outcome outcome;
		int64_t after_ns;
		int rc;
	} cases[] = {
		{ KWQ_OK, 0, 0 },
		{ KWQ_RETRY, 0, -ESHUTDOWN },
		{ KWQ_RETRY_AFTER, 0, -ESHUTDOWN },
		{ KWQ_RETRY_AFTER, 10 * MS, -ESHUTDOWN },
		{ KWQ_DROP, 0, 0 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		/* a held+dirty item is still queued again by the done */
		q = row_queue(NULL, c, NULL);
		CHECK_EQ(ADDS(q, "k"), 0);
		CHECK_GET(q, "k", &it);
		CHECK_EQ(ADDS(q, "k"), 0);
		CHECK_EQ(ADDS(q, "h"), 0);
		CHECK_GET(q, "h", &x);
		kwq_shutdown(q);
		CHECK_EQ(kwq_finish(q, it, cases[i].outcome, cases[i].after_ns), cases[i].rc);
		CHECK_EQ(kwq_len(q), 1);
		CHECK_GET_DONE(q, "k");
		/* a held item: absent */
		CHECK_EQ(kwq_finish(q, x, cases[i].outcome, cases[i].after_ns), cases[i].rc);
		CHECK_EQ(kwq_len(q), 0);
		CHECK_EQ(kwq_shutdown_drain_timeout(q, 0), 0);
		CHECK_EQ(kwq_get(q, &x), -ESHUTDOWN);
		kwq_free(q);
	}
	kwq_clock_free(c);
}

/* max_attempts < 0 is refused; a config from before 0.2 reads it as 0 */
static void t_finish_bad_config(void)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = row->impl;
	cfg.max_attempts = -1;
	cfg.limiter = kwq_limiter_exponential(MS, MS); /* freed on failure */
	errno = 0;
	CHECK_PTR(kwq_new(&cfg), ==, NULL);
	CHECK_EQ(errno, EINVAL);
	cfg.limiter = NULL;
	cfg.max_attempts = INT32_MIN;
	errno = 0;
	CHECK_PTR(kwq_new(&cfg), ==, NULL);
	CHECK_EQ(errno, EINVAL);

	/* the 0.1 struct: max_attempts and what follows are not read */
	kwq_clock_t *c = kwq_clock_fake_new(0);
	struct give_ups g = { 0 };
	cfg.size = offsetof(struct kwq_config, max_attempts);
	cfg.max_attempts = -1;
	cfg.on_give_up = on_give_up;
	cfg.give_up_ctx = &g;
	cfg.clock = c;
	kwq_t *q = kwq_new(&cfg);
	CHECK(q != NULL);
	kwq_item_t *it;
	CHECK_EQ(ADDS(q, "k"), 0);
	for (int i = 0; i < 3; i++) {
		CHECK_GET(q, "k", &it);
		CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
		kwq_clock_fake_step(c, 1000 * MS);
		CHECK_EQ(wait_len(q, 1), 1);
	}
	CHECK_EQ(g.calls, 0);
	CHECK_GET_DONE(q, "k");
	kwq_free(q);
	kwq_clock_free(c);

	/* the limits accepted */
	cfg = KWQ_CONFIG_INIT;
	cfg.impl = row->impl;
	cfg.max_attempts = INT32_MAX;
	q = kwq_new(&cfg);
	CHECK(q != NULL);
	kwq_free(q);
}

/* Concurrent producers and finishing workers: an add made during
 * processing is seen by a later processing, whatever the outcomes (the
 * fake clock never fires the retries) */
#define FC_KEYS 64
#define FC_ADDS 10000

struct fc_shared {
	kwq_t *q;
	atomic_long version[FC_KEYS];
	atomic_long seen[FC_KEYS];
	atomic_int violations;
};

static void *fc_producer(void *arg)
{
	struct fc_shared *s = arg;
	unsigned x = (unsigned)(uintptr_t)&x;

	for (int i = 0; i < FC_ADDS; i++) {
		x = x * 1103515245u + 12345u;
		int k = (int)((x >> 8) % FC_KEYS);
		atomic_fetch_add(&s->version[k], 1);
		if (kwq_add(s->q, &k, sizeof k) != 0)
			atomic_fetch_add(&s->violations, 1);
	}
	return NULL;
}

static void *fc_worker(void *arg)
{
	struct fc_shared *s = arg;
	kwq_item_t *it;
	unsigned n = 0;

	while (kwq_get(s->q, &it) == 0) {
		int k;
		memcpy(&k, kwq_item_key(it, NULL), sizeof k);
		atomic_store(&s->seen[k], atomic_load(&s->version[k]));
		enum kwq_outcome o = (enum kwq_outcome)(n++ % 4);
		int rc = kwq_finish(s->q, it, o, o == KWQ_RETRY_AFTER ? 1000 * MS : 0);
		if (rc != 0 && rc != -ESHUTDOWN)
			atomic_fetch_add(&s->violations, 1);
	}
	return NULL;
}

static void t_finish_concurrent_no_lost_update(void)
{
	static struct fc_shared s;
	kwq_clock_t *c = kwq_clock_fake_new(0);
	pthread_t pt[2], wt[2];

	memset(&s, 0, sizeof s);
	s.q = row_queue(NULL, c, kwq_limiter_exponential(1000 * MS, 1000 * MS));
	for (int i = 0; i < 2; i++)
		pthread_create(&wt[i], NULL, fc_worker, &s);
	for (int i = 0; i < 2; i++)
		pthread_create(&pt[i], NULL, fc_producer, &s);
	for (int i = 0; i < 2; i++)
		pthread_join(pt[i], NULL);
	kwq_shutdown_drain(s.q);
	for (int i = 0; i < 2; i++)
		pthread_join(wt[i], NULL);
	CHECK_EQ(atomic_load(&s.violations), 0);
	for (int k = 0; k < FC_KEYS; k++)
		CHECK_EQ(atomic_load(&s.seen[k]), atomic_load(&s.version[k]));
	kwq_free(s.q);
	kwq_clock_free(c);
}

/* ------------------------------------------------------ 0.2: kwq_cancel */

/* queued -> absent; absent -> nothing; its place in the queue is gone */
static void t_cancel_queued(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *x;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_EQ(add_prio(q, "c", 3), 0);
	CHECK_EQ(ADDS(q, "d"), 0);
	CHECK_EQ(kwq_cancel(q, "b", 1), 1);
	CHECK_EQ(kwq_len(q), 3);
	CHECK_EQ(kwq_cancel(q, "b", 1), 0); /* absent now */
	CHECK_EQ(kwq_cancel(q, "c", 1), 1);
	CHECK_EQ(kwq_cancel(q, "never", 5), 0);
	CHECK_EQ(kwq_len(q), 2);
	CHECK_EQ(ADDS(q, "b"), 0); /* absent -> queued at the tail */
	CHECK_GET_DONE(q, "a");
	CHECK_GET_DONE(q, "d");
	CHECK_GET_DONE(q, "b");
	CHECK_EQ(kwq_try_get(q, &x), -EAGAIN);

	/* the empty key and binary keys */
	CHECK_EQ(kwq_add(q, NULL, 0), 0);
	CHECK_EQ(kwq_add(q, "a\0b", 3), 0);
	CHECK_EQ(kwq_cancel(q, "", 0), 1);
	CHECK_EQ(kwq_cancel(q, "a", 1), 0);
	CHECK_EQ(kwq_cancel(q, "a\0b", 3), 1);
	CHECK_EQ(kwq_len(q), 0);
	CHECK_EQ(kwq_try_get(q, &x), -EAGAIN);

	CHECK_EQ(kwq_cancel(NULL, "a", 1), -EINVAL);
	CHECK_EQ(kwq_cancel(q, NULL, 1), -EINVAL);
	CHECK_EQ(kwq_cancel(q, "a", (size_t)KWQ_KEY_MAX + 1), -EINVAL);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_cancel(q, "a", (size_t)KWQ_KEY_MAX + 1), -EINVAL);
	CHECK_EQ(kwq_len(q), 1); /* changed nothing */
	kwq_free(q);
}

/* waiting -> its delayed add dropped */
static void t_cancel_waiting(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);

	CHECK_EQ(kwq_add_after(q, "w", 1, 50 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "v", 1, 50 * MS), 0);
	CHECK_EQ(kwq_cancel(q, "w", 1), 1);
	CHECK_EQ(kwq_cancel(q, "w", 1), 0);
	CHECK_EQ(kwq_len(q), 0);
	kwq_clock_fake_step(c, 50 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "v");
	kwq_clock_fake_step(c, 100 * MS);
	CHECK_NOTHING_MORE(q, c);

	/* a later delayed add waits again */
	CHECK_EQ(kwq_add_after(q, "w", 1, 50 * MS), 0);
	CHECK_EQ(kwq_cancel(q, "w", 1), 1);
	CHECK_EQ(kwq_add_after(q, "w", 1, 80 * MS), 0);
	kwq_clock_fake_step(c, 50 * MS);
	CHECK_NOTHING_MORE(q, c);
	kwq_clock_fake_step(c, 30 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_DONE(q, "w");
	kwq_free(q);
	kwq_clock_free(c);
}

/* held+dirty -> held, not dirty; held -> unchanged; held and waiting ->
 * the wait dropped, still held */
static void t_cancel_held(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);
	kwq_item_t *a, *x;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(kwq_cancel(q, "a", 1), 0); /* held: stays with its worker */
	CHECK_KEY(a, "a");
	CHECK_EQ(ADDS(q, "a"), 0); /* still held: this makes it dirty */
	CHECK_EQ(kwq_len(q), 0);
	CHECK(kwq_item_dirty(q, a));
	CHECK_EQ(kwq_cancel(q, "a", 1), 1);
	CHECK(!kwq_item_dirty(q, a));
	CHECK_EQ(kwq_cancel(q, "a", 1), 0);
	CHECK_EQ(kwq_try_get(q, &x), -EAGAIN);
	CHECK_EQ(kwq_done(q, a), 0); /* not queued again */
	CHECK_EQ(kwq_len(q), 0);
	CHECK_EQ(kwq_try_get(q, &x), -EAGAIN);

	/* dirty again after the cancel: queued again on done */
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_cancel(q, "a", 1), 1);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK(kwq_item_dirty(q, a));
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET(q, "a", &a);

	/* held and waiting */
	CHECK_EQ(kwq_add_after(q, "a", 1, 50 * MS), 0);
	CHECK(!kwq_item_dirty(q, a));
	CHECK_EQ(kwq_cancel(q, "a", 1), 1);
	CHECK_EQ(kwq_cancel(q, "a", 1), 0);
	CHECK_EQ(ADDS(q, "a"), 0); /* still held */
	CHECK_EQ(kwq_len(q), 0);
	CHECK_EQ(kwq_cancel(q, "a", 1), 1);
	CHECK_EQ(kwq_done(q, a), 0);
	kwq_clock_fake_step(c, 100 * MS);
	CHECK_NOTHING_MORE(q, c);
	CHECK_EQ(kwq_try_get(q, &x), -EAGAIN);
	kwq_free(q);
	kwq_clock_free(c);
}

/* the limiter is not touched */
static void t_cancel_keeps_limiter(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	static struct counting cnt;
	kwq_t *q = row_queue(NULL, c, counting_limiter(&cnt, 10 * MS));

	CHECK_EQ(kwq_add_rate_limited(q, "k", 1), 0);
	CHECK_EQ(atomic_load(&cnt.when), 1);
	CHECK_EQ(kwq_cancel(q, "k", 1), 1);
	CHECK_EQ(ADDS(q, "j"), 0);
	CHECK_EQ(kwq_cancel(q, "j", 1), 1);
	CHECK_EQ(atomic_load(&cnt.when), 1);
	CHECK_EQ(atomic_load(&cnt.forget), 0);
	kwq_free(q);

	q = row_queue(NULL, c, kwq_limiter_exponential(1 * MS, 1000 * MS));
	CHECK_EQ(kwq_add_rate_limited(q, "k", 1), 0);
	CHECK_EQ(kwq_add_rate_limited(q, "k", 1), 0);
	CHECK_EQ(kwq_cancel(q, "k", 1), 1);
	CHECK_EQ(kwq_num_requeues(q, "k", 1), 2);
	kwq_free(q);
	kwq_clock_free(c);
}

/* after shutdown too: a running drain then has less to wait for */
static void t_cancel_after_shutdown(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a, *x;
	struct drainer d;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	kwq_shutdown(q);
	CHECK_EQ(kwq_cancel(q, "a", 1), 1);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET_DONE(q, "b");
	CHECK_EQ(kwq_get(q, &x), -ESHUTDOWN);
	kwq_free(q);

	/* a queued item: the drain returns once it is cancelled */
	q = row_queue(NULL, NULL, NULL);
	CHECK_EQ(ADDS(q, "a"), 0);
	drainer_start(&d, q);
	pause_ms(20);
	CHECK_EQ(atomic_load(&d.returned), 0);
	CHECK_EQ(kwq_cancel(q, "a", 1), 1);
	pthread_join(d.thread, NULL);
	CHECK_EQ(kwq_len(q), 0);
	kwq_free(q);

	/* a held+dirty item: the cancel drops its re-queue, the done ends it */
	q = row_queue(NULL, NULL, NULL);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(ADDS(q, "a"), 0);
	drainer_start(&d, q);
	CHECK_EQ(kwq_cancel(q, "a", 1), 1);
	pause_ms(20);
	CHECK_EQ(atomic_load(&d.returned), 0); /* a still held */
	CHECK_EQ(kwq_done(q, a), 0);
	pthread_join(d.thread, NULL);
	CHECK_EQ(kwq_len(q), 0);
	CHECK_EQ(kwq_get(q, &x), -ESHUTDOWN);
	kwq_free(q);

	/* shutdown dropped the waits before it returned: nothing to cancel,
	 * the delayed gauge at 0 at once (also for a held key's wait) */
	q = row_queue("cancel_after_shutdown", NULL, NULL);
	CHECK_EQ(ADDS(q, "h"), 0);
	CHECK_GET(q, "h", &a);
	CHECK_EQ(kwq_add_after(q, "h", 1, 3600 * 1000000000LL), 0);
	CHECK_EQ(kwq_add_after(q, "w", 1, 3600 * 1000000000LL), 0);
	kwq_shutdown(q);
	struct kwq_metrics m = { .size = sizeof m };
	CHECK_EQ(kwq_metrics_read(q, &m), 0);
	CHECK_EQ(m.delayed, 0);
	CHECK_EQ(kwq_cancel(q, "w", 1), 0);
	CHECK_EQ(kwq_cancel(q, "h", 1), 0);
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_EQ(kwq_get(q, &x), -ESHUTDOWN);
	kwq_free(q);
}

/* ------------------------------------------ 0.2: kwq_add_opts.replace */

static int add_replace(kwq_t *q, const char *k, int64_t after_ns, int prio)
{
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	o.after_ns = after_ns;
	o.priority = prio;
	o.replace = true;
	return kwq_add_with(q, k, strlen(k), &o);
}

static int add_after_prio(kwq_t *q, const char *k, int64_t after_ns, int prio)
{
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	o.after_ns = after_ns;
	o.priority = prio;
	return kwq_add_with(q, k, strlen(k), &o);
}

/* a waiting key takes the call's ready time and priority, later or lower
 * ones included */
static void t_replace_waiting(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);

	/* later and lower */
	CHECK_EQ(add_after_prio(q, "w", 50 * MS, 5), 0);
	CHECK_EQ(add_replace(q, "w", 100 * MS, 1), 0);
	CHECK_EQ(kwq_len(q), 0);
	kwq_clock_fake_step(c, 50 * MS);
	CHECK_NOTHING_MORE(q, c); /* not at the old time */
	kwq_clock_fake_step(c, 50 * MS - 1);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_PRIO(q, "w", 1);
	kwq_clock_fake_step(c, 1000 * MS);
	CHECK_NOTHING_MORE(q, c);

	/* earlier and lower */
	CHECK_EQ(add_after_prio(q, "w", 100 * MS, 5), 0);
	CHECK_EQ(add_replace(q, "w", 50 * MS, -1), 0);
	CHECK_EQ(add_after_prio(q, "z", 60 * MS, 0), 0);
	kwq_clock_fake_step(c, 50 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_PRIO(q, "w", -1);
	kwq_clock_fake_step(c, 10 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_PRIO(q, "z", 0);
	kwq_clock_fake_step(c, 1000 * MS);
	CHECK_NOTHING_MORE(q, c);

	/* higher, as without replace */
	CHECK_EQ(add_after_prio(q, "w", 50 * MS, 1), 0);
	CHECK_EQ(add_replace(q, "w", 70 * MS, 4), 0);
	kwq_clock_fake_step(c, 50 * MS);
	CHECK_NOTHING_MORE(q, c);
	kwq_clock_fake_step(c, 20 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_PRIO(q, "w", 4);
	kwq_free(q);
	kwq_clock_free(c);
}

/* equal ready times: a replace counts as a new call setting that time */
static void t_replace_equal_times(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);

	CHECK_EQ(kwq_add_after(q, "a", 1, 300 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "b", 1, 300 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "c", 1, 300 * MS), 0);
	CHECK_EQ(add_replace(q, "a", 300 * MS, 0), 0);
	CHECK_EQ(kwq_add_after(q, "d", 1, 300 * MS), 0);
	CHECK_EQ(add_replace(q, "b", 300 * MS, 0), 0);
	kwq_clock_fake_step(c, 300 * MS);
	CHECK_EQ(wait_len(q, 4), 4);
	CHECK_GET_DONE(q, "c");
	CHECK_GET_DONE(q, "a");
	CHECK_GET_DONE(q, "d");
	CHECK_GET_DONE(q, "b");
	kwq_free(q);
	kwq_clock_free(c);
}

/* absent or held -> waiting; queued or held+dirty -> due already, only the
 * priority may rise; a wait <= 0 -> as without replace */
static void t_replace_other_states(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);
	kwq_item_t *h;

	/* absent */
	CHECK_EQ(add_replace(q, "x", 50 * MS, 2), 0);
	CHECK_EQ(kwq_len(q), 0);
	kwq_clock_fake_step(c, 50 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_PRIO(q, "x", 2);

	/* held */
	CHECK_EQ(ADDS(q, "h"), 0);
	CHECK_GET(q, "h", &h);
	CHECK_EQ(add_replace(q, "h", 50 * MS, 3), 0);
	CHECK(!kwq_item_dirty(q, h));
	CHECK_EQ(kwq_done(q, h), 0);
	CHECK_EQ(kwq_len(q), 0); /* waiting */
	kwq_clock_fake_step(c, 50 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET_PRIO(q, "h", 3);

	/* queued: raised, never lowered, not delayed */
	CHECK_EQ(ADDS(q, "q"), 0);
	CHECK_EQ(add_prio(q, "p", 5), 0);
	CHECK_EQ(add_replace(q, "q", 50 * MS, 3), 0);
	CHECK_EQ(add_replace(q, "p", 50 * MS, 1), 0);
	CHECK_EQ(kwq_len(q), 2);
	CHECK_GET_PRIO(q, "p", 5);
	CHECK_GET_PRIO(q, "q", 3);
	kwq_clock_fake_step(c, 100 * MS);
	CHECK_NOTHING_MORE(q, c);

	/* held+dirty: the re-queue's priority may rise, not fall */
	CHECK_EQ(ADDS(q, "h"), 0);
	CHECK_GET(q, "h", &h);
	CHECK_EQ(ADDS(q, "h"), 0);
	CHECK_EQ(add_replace(q, "h", 50 * MS, 2), 0);
	CHECK_EQ(kwq_done(q, h), 0);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET(q, "h", &h);
	CHECK_EQ(kwq_item_priority(h), 2);
	CHECK_EQ(add_prio(q, "h", 4), 0);
	CHECK_EQ(add_replace(q, "h", 50 * MS, 1), 0);
	CHECK_EQ(kwq_done(q, h), 0);
	CHECK_GET_PRIO(q, "h", 4);
	kwq_clock_fake_step(c, 100 * MS);
	CHECK_NOTHING_MORE(q, c);

	/* a wait <= 0: an add now, the wait's higher priority kept, the wait
	 * cancelled */
	CHECK_EQ(add_after_prio(q, "w", 50 * MS, 5), 0);
	CHECK_EQ(add_replace(q, "w", 0, 1), 0);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET_PRIO(q, "w", 5);
	CHECK_EQ(add_after_prio(q, "w", 50 * MS, 0), 0);
	CHECK_EQ(add_replace(q, "w", -5, 2), 0);
	CHECK_GET_PRIO(q, "w", 2);
	kwq_clock_fake_step(c, 100 * MS);
	CHECK_NOTHING_MORE(q, c);
	kwq_free(q);
	kwq_clock_free(c);
}

/* ---------------------------------------------------- 0.2: kwq_add_many */

/* each add its own, in array order: FIFO follows the array */
static void t_add_many_order(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	static int ids[200];
	static struct kwq_key_ref refs[200];
	kwq_item_t *it;

	CHECK_EQ(ADDS(q, "first"), 0);
	for (int i = 0; i < 200; i++) {
		ids[i] = i;
		refs[i] = (struct kwq_key_ref){ &ids[i], sizeof ids[i] };
	}
	CHECK_EQ(kwq_add_many(q, refs, 200, NULL), 200);
	CHECK_EQ(kwq_len(q), 201);
	CHECK_GET_DONE(q, "first");
	for (int i = 0; i < 200; i++) {
		int k;
		CHECK_EQ(kwq_try_get(q, &it), 0);
		memcpy(&k, kwq_item_key(it, NULL), sizeof k);
		CHECK_EQ(k, i);
		CHECK_EQ(kwq_done(q, it), 0);
	}

	/* repeats dedup and count as accepted; a held key goes dirty; the
	 * empty key; the bytes copied */
	char buf[2] = "b";
	CHECK_EQ(ADDS(q, "h"), 0);
	CHECK_GET(q, "h", &it);
	const struct kwq_key_ref r[] = {
		{ "a", 1 }, { buf, 1 }, { "a", 1 }, { "h", 1 }, { NULL, 0 }, { "b", 1 },
	};
	CHECK_EQ(kwq_add_many(q, r, 6, NULL), 6);
	buf[0] = 'X';
	CHECK_EQ(kwq_len(q), 3);
	CHECK(kwq_item_dirty(q, it));
	CHECK_EQ(kwq_done(q, it), 0);
	CHECK_GET_DONE(q, "a");
	CHECK_GET_DONE(q, "b");
	CHECK_GET_DONE(q, "");
	CHECK_GET_DONE(q, "h");
	CHECK_EQ(kwq_try_get(q, &it), -EAGAIN);
	kwq_free(q);
}

/* every key and opts checked before any add */
static void t_add_many_validation(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	const struct kwq_key_ref bad_null[] = { { "a", 1 }, { "b", 1 }, { NULL, 1 } };
	const struct kwq_key_ref bad_len[] = { { "a", 1 }, { "b", (size_t)KWQ_KEY_MAX + 1 } };
	const struct kwq_key_ref good[] = { { "a", 1 }, { "b", 1 } };
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;

	CHECK_EQ(kwq_add_many(q, bad_null, 3, NULL), -EINVAL);
	CHECK_EQ(kwq_add_many(q, bad_len, 2, NULL), -EINVAL);
	CHECK_EQ(kwq_add_many(q, bad_null, 3, &o), -EINVAL);
	o.size = 0;
	CHECK_EQ(kwq_add_many(q, good, 2, &o), -EINVAL);
	o.size = offsetof(struct kwq_add_opts, priority);
	CHECK_EQ(kwq_add_many(q, good, 2, &o), -EINVAL);
	CHECK_EQ(kwq_add_many(NULL, good, 2, NULL), -EINVAL);
	CHECK_EQ(kwq_add_many(q, NULL, 2, NULL), -EINVAL);
	CHECK_EQ(kwq_add_many(q, good, (size_t)INT_MAX + 1, NULL), -EINVAL);
	CHECK_EQ(kwq_add_many(q, good, SIZE_MAX, NULL), -EINVAL);
	CHECK_EQ(kwq_len(q), 0); /* nothing added */

	CHECK_EQ(kwq_add_many(q, NULL, 0, NULL), 0);
	CHECK_EQ(kwq_add_many(q, good, 0, NULL), 0);
	o = KWQ_ADD_OPTS_INIT;
	CHECK_EQ(kwq_add_many(q, NULL, 0, &o), 0);
	CHECK_EQ(kwq_len(q), 0);

	/* a 0.1 opts (no replace): accepted */
	o.size = offsetof(struct kwq_add_opts, replace);
	o.priority = 1;
	CHECK_EQ(kwq_add_many(q, good, 2, &o), 2);
	CHECK_EQ(kwq_len(q), 2);

	kwq_shutdown(q);
	CHECK_EQ(kwq_add_many(q, good, 2, NULL), -ESHUTDOWN);
	o = KWQ_ADD_OPTS_INIT;
	o.after_ns = 10 * MS;
	const struct kwq_key_ref more[] = { { "c", 1 } };
	CHECK_EQ(kwq_add_many(q, more, 1, &o), -ESHUTDOWN);
	CHECK_EQ(kwq_len(q), 2);
	kwq_free(q);
}

/* with opts: a priority, a delay */
static void t_add_many_opts(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	const struct kwq_key_ref abc[] = { { "a", 1 }, { "b", 1 }, { "c", 1 } };
	const struct kwq_key_ref def[] = { { "f", 1 }, { "d", 1 }, { "e", 1 } };

	CHECK_EQ(ADDS(q, "z"), 0);
	CHECK_EQ(add_prio(q, "y", 5), 0);
	o.priority = 3;
	CHECK_EQ(kwq_add_many(q, abc, 3, &o), 3);
	CHECK_EQ(kwq_len(q), 5);
	CHECK_GET_PRIO(q, "y", 5);
	CHECK_GET_PRIO(q, "a", 3);
	CHECK_GET_PRIO(q, "b", 3);
	CHECK_GET_PRIO(q, "c", 3);
	CHECK_GET_PRIO(q, "z", 0);

	/* delayed: all wait; equal ready times come out in array order */
	o.priority = 1;
	o.after_ns = 50 * MS;
	CHECK_EQ(ADDS(q, "q"), 0);
	CHECK_EQ(kwq_add_many(q, def, 3, &o), 3);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET_PRIO(q, "q", 0);
	kwq_clock_fake_step(c, 50 * MS - 2);
	CHECK_NOTHING_MORE(q, c);
	kwq_clock_fake_step(c, 1);
	CHECK_EQ(wait_len(q, 3), 3);
	CHECK_GET_PRIO(q, "f", 1);
	CHECK_GET_PRIO(q, "d", 1);
	CHECK_GET_PRIO(q, "e", 1);
	kwq_free(q);
	kwq_clock_free(c);
}

/* --------------------------------------- 0.2: kwq_get_batch, done_many */

/* up to max, as that many consecutive gets: priority, then FIFO */
static void t_get_batch_order(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *items[8], *x;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(add_prio(q, "b", 5), 0);
	CHECK_EQ(ADDS(q, "c"), 0);
	CHECK_EQ(add_prio(q, "d", 5), 0);
	CHECK_EQ(add_prio(q, "e", 1), 0);
	CHECK_EQ(add_prio(q, "f", -1), 0);
	CHECK_EQ(kwq_get_batch(q, items, 4, 0), 4);
	CHECK_KEY(items[0], "b");
	CHECK_KEY(items[1], "d");
	CHECK_KEY(items[2], "e");
	CHECK_KEY(items[3], "a");
	CHECK_EQ(kwq_item_priority(items[0]), 5);
	CHECK_EQ(kwq_item_priority(items[2]), 1);
	CHECK_EQ(kwq_len(q), 2);

	/* each handle is held: an add makes it dirty, no get hands it out */
	CHECK_EQ(ADDS(q, "d"), 0);
	CHECK(kwq_item_dirty(q, items[1]));
	CHECK(!kwq_item_dirty(q, items[0]));
	CHECK_EQ(kwq_len(q), 2);
	kwq_item_t *more[8];
	CHECK_EQ(kwq_get_batch(q, more, 8, 1000 * MS), 2); /* did not wait */
	CHECK_KEY(more[0], "c");
	CHECK_KEY(more[1], "f");
	CHECK_EQ(kwq_get_batch(q, &x, 1, 0), -EAGAIN);
	CHECK_EQ(kwq_done_many(q, more, 2), 0);
	CHECK_EQ(kwq_done_many(q, items, 4), 0);
	CHECK_EQ(kwq_len(q), 1); /* d again */
	CHECK_EQ(kwq_get_batch(q, items, 8, 0), 1);
	CHECK_KEY(items[0], "d");
	CHECK_EQ(kwq_done_many(q, items, 1), 0);

	/* max 1 is one get; a max above INT_MAX counts as INT_MAX */
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_EQ(ADDS(q, "c"), 0);
	CHECK_EQ(kwq_get_batch(q, items, 1, 0), 1);
	CHECK_KEY(items[0], "a");
	CHECK_EQ(kwq_get_batch(q, items + 1, SIZE_MAX, 0), 2);
	CHECK_KEY(items[1], "b");
	CHECK_KEY(items[2], "c");
	CHECK_EQ(kwq_done_many(q, items, 3), 0);
	CHECK_EQ(kwq_len(q), 0);
	kwq_free(q);
}

/* -EAGAIN, -ETIMEDOUT, -ESHUTDOWN, -EINVAL; items untouched on error */
static void t_get_batch_errors(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *const mark = (kwq_item_t *)(uintptr_t)1;
	kwq_item_t *items[4] = { mark, mark, mark, mark };

	CHECK_EQ(kwq_get_batch(q, items, 4, 0), -EAGAIN);
	CHECK_EQ(kwq_get_batch(q, items, 4, -1), -EAGAIN);
	CHECK_EQ(kwq_get_batch(q, items, 4, INT64_MIN), -EAGAIN);
	CHECK_EQ(kwq_get_batch(q, items, 4, 20 * MS), -ETIMEDOUT);
	CHECK_EQ(kwq_get_batch(NULL, items, 4, 0), -EINVAL);
	CHECK_EQ(kwq_get_batch(q, NULL, 4, 0), -EINVAL);
	CHECK_EQ(kwq_get_batch(q, items, 0, 0), -EINVAL);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_get_batch(q, items, 0, 0), -EINVAL);
	CHECK_EQ(kwq_get_batch(q, NULL, 1, KWQ_FOREVER), -EINVAL);
	for (int i = 0; i < 4; i++)
		CHECK_PTR(items[i], ==, mark);
	CHECK_EQ(kwq_len(q), 1); /* changed nothing */

	/* after shutdown: what is queued, then -ESHUTDOWN at once */
	CHECK_EQ(ADDS(q, "b"), 0);
	kwq_shutdown(q);
	CHECK_EQ(kwq_get_batch(q, items, 4, KWQ_FOREVER), 2);
	CHECK_KEY(items[0], "a");
	CHECK_KEY(items[1], "b");
	CHECK_PTR(items[2], ==, mark);
	CHECK_EQ(kwq_done_many(q, items, 2), 0);
	items[0] = items[1] = mark;
	CHECK_EQ(kwq_get_batch(q, items, 4, 0), -ESHUTDOWN);
	CHECK_EQ(kwq_get_batch(q, items, 4, 1000 * MS), -ESHUTDOWN);
	CHECK_EQ(kwq_get_batch(q, items, 4, KWQ_FOREVER), -ESHUTDOWN);
	CHECK_PTR(items[0], ==, mark);
	kwq_free(q);
}

struct batcher {
	pthread_t thread;
	kwq_t *q;
	size_t max;
	int64_t timeout;
	atomic_int state; /* 0 running, 1 returned */
	int rc;
	kwq_item_t *items[8];
};

static void *batcher_main(void *arg)
{
	struct batcher *b = arg;
	b->rc = kwq_get_batch(b->q, b->items, b->max, b->timeout);
	atomic_store(&b->state, 1);
	return NULL;
}

static void batcher_start(struct batcher *b, kwq_t *q, size_t max, int64_t timeout)
{
	b->q = q;
	b->max = max;
	b->timeout = timeout;
	atomic_init(&b->state, 0);
	pthread_create(&b->thread, NULL, batcher_main, b);
}

/* blocks for the first item, never for a second; woken by an add, and by
 * shutdown */
static void t_get_batch_blocks(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	struct batcher b[2];

	batcher_start(&b[0], q, 8, KWQ_FOREVER);
	batcher_start(&b[1], q, 8, 600LL * 1000 * MS);
	pause_ms(30);
	CHECK_EQ(atomic_load(&b[0].state), 0);
	CHECK_EQ(atomic_load(&b[1].state), 0);
	CHECK_EQ(ADDS(q, "a"), 0);
	/* one of them takes it and returns with 1, not waiting for more */
	struct batcher *got = NULL, *other = NULL;
	for (int i = 0; i < 10000 && got == NULL; i++) {
		for (int j = 0; j < 2; j++) {
			if (atomic_load(&b[j].state) == 1) {
				got = &b[j];
				other = &b[1 - j];
			}
		}
		if (got == NULL)
			pause_ms(1);
	}
	CHECK(got != NULL);
	pthread_join(got->thread, NULL);
	CHECK_EQ(got->rc, 1);
	CHECK_KEY(got->items[0], "a");
	CHECK_EQ(kwq_done(q, got->items[0]), 0);
	pause_ms(20);
	CHECK_EQ(atomic_load(&other->state), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	pthread_join(other->thread, NULL);
	CHECK_EQ(other->rc, 1);
	CHECK_KEY(other->items[0], "b");
	CHECK_EQ(kwq_done(q, other->items[0]), 0);

	/* shutdown wakes them */
	batcher_start(&b[0], q, 8, KWQ_FOREVER);
	batcher_start(&b[1], q, 1, 600LL * 1000 * MS);
	pause_ms(30);
	CHECK_EQ(atomic_load(&b[0].state), 0);
	CHECK_EQ(atomic_load(&b[1].state), 0);
	kwq_shutdown(q);
	for (int j = 0; j < 2; j++) {
		pthread_join(b[j].thread, NULL);
		CHECK_EQ(b[j].rc, -ESHUTDOWN);
	}
	kwq_free(q);
}

/* in order; a NULL handle anywhere: -EINVAL and none done */
static void t_done_many(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *items[3], *x;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_EQ(ADDS(q, "c"), 0);
	CHECK_EQ(kwq_get_batch(q, items, 3, 0), 3);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_EQ(ADDS(q, "c"), 0);
	kwq_item_t *bad[4] = { items[0], items[1], items[2], NULL };
	CHECK_EQ(kwq_done_many(q, bad, 4), -EINVAL);
	bad[3] = items[2];
	bad[2] = NULL;
	CHECK_EQ(kwq_done_many(q, bad, 3), -EINVAL);
	bad[0] = NULL;
	CHECK_EQ(kwq_done_many(q, bad, 1), -EINVAL);
	CHECK_EQ(kwq_done_many(NULL, items, 3), -EINVAL);
	CHECK_EQ(kwq_done_many(q, NULL, 3), -EINVAL);
	CHECK_EQ(kwq_done_many(q, NULL, 0), 0);
	CHECK_EQ(kwq_done_many(q, items, 0), 0);
	/* none done: all still held and dirty */
	CHECK_EQ(kwq_len(q), 0);
	CHECK_EQ(kwq_try_get(q, &x), -EAGAIN);
	for (int i = 0; i < 3; i++)
		CHECK(kwq_item_dirty(q, items[i]));
	CHECK_KEY(items[2], "c");

	/* done in order: re-queued in that order */
	kwq_item_t *order[3] = { items[2], items[0], items[1] };
	CHECK_EQ(kwq_done_many(q, order, 3), 0);
	CHECK_EQ(kwq_len(q), 3);
	CHECK_GET_DONE(q, "c");
	CHECK_GET_DONE(q, "a");
	CHECK_GET_DONE(q, "b");
	CHECK_EQ(kwq_try_get(q, &x), -EAGAIN);
	kwq_free(q);
}

/* ------------------------------------- 0.2: kwq_shutdown_drain_timeout */

static void t_drain_timeout(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a, *x;
	struct drainer d;

	/* drained: 0 */
	CHECK_EQ(kwq_shutdown_drain_timeout(q, 0), 0);
	CHECK(kwq_shutting_down(q));
	CHECK_EQ(kwq_shutdown_drain_timeout(q, 1000 * MS), 0);
	CHECK_EQ(kwq_shutdown_drain_timeout(q, -1), 0);
	CHECK_EQ(kwq_shutdown_drain_timeout(NULL, 0), -EINVAL);
	kwq_free(q);

	/* not drained: -ETIMEDOUT, shut down all the same */
	q = row_queue(NULL, NULL, NULL);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(kwq_shutdown_drain_timeout(q, 0), -ETIMEDOUT);
	CHECK(kwq_shutting_down(q));
	CHECK_EQ(ADDS(q, "c"), -ESHUTDOWN);
	CHECK_EQ(kwq_shutdown_drain_timeout(q, -5), -ETIMEDOUT);
	CHECK_EQ(kwq_shutdown_drain_timeout(q, INT64_MIN), -ETIMEDOUT);
	CHECK_EQ(kwq_shutdown_drain_timeout(q, 20 * MS), -ETIMEDOUT);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET_DONE(q, "b");
	CHECK_EQ(kwq_shutdown_drain_timeout(q, 0), -ETIMEDOUT); /* a held */

	/* a waiting drain returns 0 once drained */
	drainer_start_timed(&d, q, 600LL * 1000 * MS);
	pause_ms(20);
	CHECK_EQ(atomic_load(&d.returned), 0);
	CHECK_EQ(kwq_done(q, a), 0);
	pthread_join(d.thread, NULL);
	CHECK_EQ(d.rc, 0);
	CHECK_EQ(kwq_get(q, &x), -ESHUTDOWN);
	kwq_free(q);

	/* a held+dirty item: the drain waits for its re-queue's processing */
	q = row_queue(NULL, NULL, NULL);
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	CHECK_EQ(ADDS(q, "a"), 0);
	drainer_start_timed(&d, q, KWQ_FOREVER);
	CHECK_EQ(kwq_done(q, a), 0);
	pause_ms(20);
	CHECK_EQ(atomic_load(&d.returned), 0);
	CHECK_GET_DONE(q, "a");
	pthread_join(d.thread, NULL);
	CHECK_EQ(d.rc, 0);
	kwq_free(q);
}

/* a kwq_shutdown ends a waiting drain, with 0 */
static void t_drain_timeout_ended_by_shutdown(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	kwq_item_t *a;
	struct drainer d[2];

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_GET(q, "a", &a);
	drainer_start_timed(&d[0], q, 600LL * 1000 * MS);
	drainer_start_timed(&d[1], q, KWQ_FOREVER);
	pause_ms(20);
	CHECK_EQ(atomic_load(&d[0].returned), 0);
	CHECK_EQ(atomic_load(&d[1].returned), 0);
	kwq_shutdown(q);
	for (int i = 0; i < 2; i++) {
		pthread_join(d[i].thread, NULL);
		CHECK_EQ(d[i].rc, 0);
	}
	CHECK_EQ(kwq_len(q), 1); /* b was not waited for */
	CHECK_EQ(kwq_done(q, a), 0);
	kwq_free(q);
}

/* ------------------------------------------------- 0.2: kwq_item_dirty */

static void t_item_dirty(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, kwq_limiter_exponential(10 * MS, 1000 * MS));
	kwq_item_t *a;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_GET(q, "a", &a);
	CHECK(!kwq_item_dirty(q, a));
	CHECK_EQ(ADDS(q, "b"), 0); /* another key */
	CHECK(!kwq_item_dirty(q, a));
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK(kwq_item_dirty(q, a));
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK(kwq_item_dirty(q, a));
	CHECK(!kwq_item_dirty(NULL, a));
	CHECK(!kwq_item_dirty(q, NULL));
	CHECK(!kwq_item_dirty(NULL, NULL));
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_GET_DONE(q, "b");
	CHECK_GET(q, "a", &a); /* a new handle: not dirty */
	CHECK(!kwq_item_dirty(q, a));
	CHECK_EQ(add_prio(q, "a", 3), 0);
	CHECK(kwq_item_dirty(q, a));
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_GET(q, "a", &a);

	/* a delayed add counts once the timer applied it */
	CHECK_EQ(kwq_add_after(q, "a", 1, 50 * MS), 0);
	CHECK(!kwq_item_dirty(q, a));
	kwq_clock_fake_step(c, 50 * MS - 1);
	CHECK_NOTHING_MORE(q, c); /* the timer ran up to the ready time */
	CHECK(kwq_item_dirty(q, a));
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_GET(q, "a", &a);

	/* a rate-limited add, likewise */
	CHECK_EQ(kwq_add_rate_limited(q, "a", 1), 0); /* 10 ms */
	CHECK(!kwq_item_dirty(q, a));
	kwq_clock_fake_step(c, 5 * MS);
	CHECK_NOTHING_MORE(q, c);
	CHECK(!kwq_item_dirty(q, a));
	kwq_clock_fake_step(c, 5 * MS - 1);
	CHECK_NOTHING_MORE(q, c);
	CHECK(kwq_item_dirty(q, a));
	CHECK_EQ(kwq_done(q, a), 0);
	CHECK_GET_DONE(q, "a");
	kwq_free(q);
	kwq_clock_free(c);
}

/* ---------------------------------------------------------------- table */

static const struct tap_case cases[] = {
	{ "dedup", t_dedup },
	{ "fifo", t_fifo },
	{ "fifo_by_time_queued", t_fifo_by_time_queued },
	{ "readd_while_held", t_readd_while_held },
	{ "done_absent_then_add", t_done_absent_then_add },
	{ "len_counts_queued_only", t_len_counts_queued_only },
	{ "try_get_and_timeout", t_try_get_and_timeout },
	{ "get_blocks_until_add", t_get_blocks_until_add },
	{ "done_wakes_getter_for_dirty", t_done_wakes_getter_for_dirty },
	{ "shutdown_refuses_adds_and_drains_gets", t_shutdown_refuses_adds_and_drains_gets },
	{ "shutdown_wakes_blocked_gets", t_shutdown_wakes_blocked_gets },
	{ "shutdown_held_item", t_shutdown_held_item },
	{ "shutdown_dirty_requeued_on_done", t_shutdown_dirty_requeued_on_done },
	{ "drain_waits_for_queued_and_held", t_drain_waits_for_queued_and_held },
	{ "drain_waits_for_dirty_requeue", t_drain_waits_for_dirty_requeue },
	{ "drain_ended_by_shutdown", t_drain_ended_by_shutdown },
	{ "drain_empty_and_repeated", t_drain_empty_and_repeated },
	{ "keys_binary", t_keys_binary },
	{ "keys_empty", t_keys_empty },
	{ "keys_max", t_keys_max },
	{ "bad_input", t_bad_input },
	{ "bad_config", t_bad_config },
	{ "default_config", t_default_config },
	{ "strerror", t_strerror },
	{ "free_with_items", t_free_with_items },
	{ "clock_fake", t_clock_fake },
	{ "concurrent_exclusion_no_lost_update", t_concurrent_exclusion_no_lost_update },
	{ "delay_simple", t_delay_simple },
	{ "delay_dedup_earliest_wins", t_delay_dedup_earliest_wins },
	{ "delay_two_fire_early", t_delay_two_fire_early },
	{ "delay_order_by_ready_time", t_delay_order_by_ready_time },
	{ "delay_nonpositive_is_add", t_delay_nonpositive_is_add },
	{ "delay_absorbed_when_due", t_delay_absorbed_when_due },
	{ "delay_held_item_waits", t_delay_held_item_waits },
	{ "delay_cancelled_by_add", t_delay_cancelled_by_add },
	{ "delay_shutdown_drops", t_delay_shutdown_drops },
	{ "delay_bad_input", t_delay_bad_input },
	{ "delay_monotonic", t_delay_monotonic },
	{ "rate_limited_queue", t_rate_limited_queue },
	{ "rate_limited_default", t_rate_limited_default },
	{ "prio_order", t_prio_order },
	{ "prio_raise_and_keep", t_prio_raise_and_keep },
	{ "prio_dirty_requeue", t_prio_dirty_requeue },
	{ "prio_bands", t_prio_bands },
	{ "prio_with_delays", t_prio_with_delays },
	{ "prio_wait_kept_by_add", t_prio_wait_kept_by_add },
	{ "prio_rate_limited_opts", t_prio_rate_limited_opts },
	/* 0.2 additions */
	{ "limiter_of_queue", t_limiter_of_queue },
	{ "finish_ok", t_finish_ok },
	{ "finish_retry", t_finish_retry },
	{ "finish_retry_after", t_finish_retry_after },
	{ "finish_drop", t_finish_drop },
	{ "finish_keeps_dirty", t_finish_keeps_dirty },
	{ "finish_give_up", t_finish_give_up },
	{ "finish_give_up_after_shutdown", t_finish_give_up_after_shutdown },
	{ "finish_errors", t_finish_errors },
	{ "finish_bad_config", t_finish_bad_config },
	{ "finish_concurrent_no_lost_update", t_finish_concurrent_no_lost_update },
	{ "cancel_queued", t_cancel_queued },
	{ "cancel_waiting", t_cancel_waiting },
	{ "cancel_held", t_cancel_held },
	{ "cancel_keeps_limiter", t_cancel_keeps_limiter },
	{ "cancel_after_shutdown", t_cancel_after_shutdown },
	{ "replace_waiting", t_replace_waiting },
	{ "replace_equal_times", t_replace_equal_times },
	{ "replace_other_states", t_replace_other_states },
	{ "add_many_order", t_add_many_order },
	{ "add_many_validation", t_add_many_validation },
	{ "add_many_opts", t_add_many_opts },
	{ "get_batch_order", t_get_batch_order },
	{ "get_batch_errors", t_get_batch_errors },
	{ "get_batch_blocks", t_get_batch_blocks },
	{ "done_many", t_done_many },
	{ "drain_timeout", t_drain_timeout },
	{ "drain_timeout_ended_by_shutdown", t_drain_timeout_ended_by_shutdown },
	{ "item_dirty", t_item_dirty },
};

int main(int argc, char **argv)
{
	return rows_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
