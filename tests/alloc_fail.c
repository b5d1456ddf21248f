/*
 * alloc_fail.c - every allocation the library makes may fail, and no call
 * loses an item, strands a handle, changes state on failure, or leaks.
 *
 * Linked with the kwq-failpoints archive: the library's allocations (and
 * its thread starts) go through core/alloc.h, whose failpoint fails the
 * n-th allocation after kwq__failpoint_arm(n, persist).  For each design
 * and each scenario below, a counting run finds the N allocations the
 * scenario makes; then for every n < N the scenario runs twice more, the
 * n-th allocation failing once, and failing from n on.  Each run checks:
 *
 *   - every call returns what the header allows: 0, or -ENOMEM where it
 *     lists it (a constructor: NULL with errno ENOMEM); kwq_done and
 *     kwq_forget always 0; kwq_get's -ENOMEM only on the mutex design;
 *   - with memory back, every key whose add, delayed add or rate-limited
 *     add returned 0 (and was not handed out since) is handed out, the
 *     fake clock stepped past every delay; a key whose only add failed is
 *     never handed out (a failed call changed nothing);
 *   - kwq_done of every handle returns 0, kwq_len is 0 at the end, and
 *     kwq_shutdown_drain returns;
 *   - nothing leaks at kwq_free: LeakSanitizer, in the sanitizer builds
 *     of tests/run, fails the program at exit if anything does.
 *
 * The scenarios reach every allocation site: kwq_new (the queue, its
 * shards or sets, name, metrics, the default limiter), new keys (entries,
 * hash-set growth) past a ring segment's 1,024 slots (a new segment), new
 * priorities (a lane or level, and the reservation a held key's re-add at
 * a new priority makes), delayed adds (the timer, its thread and index, a
 * wait record), rate-limited adds (the limiter's per-key table), metrics,
 * the limiter constructors, the worker pool (the pool and each of its 4
 * threads: a failed start answers NULL with EAGAIN or ENOMEM, takes no
 * item, and leaves the queue not shut down) and kwq_parallelize (its
 * threads and their bookkeeping: done without, every piece still runs
 * exactly once), and the 0.2 calls (kwq_add_many accepting a prefix,
 * kwq_get_batch, kwq_finish's retries, kwq_cancel, kwq_done_many,
 * kwq_metrics_prometheus_all).  It prints how many (call, n) points it
 * covered: for each call, in how many runs the failing allocation fell
 * inside it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kwq.h>

#include "core/alloc.h"

#define NKEYS 1200
#define WAIT_NS 5000000000LL /* for the timer thread to fire, memory back */

enum call {
	C_NEW, C_ADD, C_ADD_WITH, C_ADD_AFTER, C_ADD_RL, C_GET, C_DONE, C_FORGET,
	C_NUM_REQUEUES, C_METRICS, C_PROM, C_LIMITER, C_WHEN, C_CLOCK, C_WORKERS,
	C_PARALLELIZE, C_ADD_MANY, C_FINISH, C_GET_BATCH, C_DONE_MANY, C_CANCEL, C_PROM_ALL,
	NCALLS
};
static const char *const call_name[NCALLS] = {
	"kwq_new", "kwq_add", "kwq_add_with", "kwq_add_after", "kwq_add_rate_limited",
	"kwq_try_get", "kwq_done", "kwq_forget", "kwq_num_requeues", "kwq_metrics_read",
	"kwq_metrics_prometheus", "kwq_limiter_*", "kwq_limiter_when", "kwq_clock_fake_new",
	"kwq_workers_start", "kwq_parallelize", "kwq_add_many", "kwq_finish", "kwq_get_batch",
	"kwq_done_many", "kwq_cancel", "kwq_metrics_prometheus_all",
};

struct run {
	enum kwq_impl impl;
	kwq_clock_t *clock;
	kwq_t *q;
	long fail_at;                 /* the failing allocation, -1: none */
	unsigned char owed[NKEYS];    /* accepted and not handed out since */
	long nowed;
	unsigned long points[NCALLS]; /* runs whose failing allocation fell in it */
	int failures;
	char where[160];
	kwq_workers_t *pool;          /* a pool that started, joined by verify */
	pthread_mutex_t pool_lock;    /* the pool's work function's hold on the run */
};

static unsigned long total_points[NCALLS];
static long total_runs;
static int total_failures;

static void fail(struct run *r, const char *fmt, ...)
{
	if (r->failures++ == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(r->where, sizeof r->where, fmt, ap);
		va_end(ap);
	}
}

/* Note which call held the failing allocation: its index lies in [before, now). */
static void account(struct run *r, enum call c, long before)
{
	long now = kwq__failpoint_count();
	if (r->fail_at >= before && r->fail_at < now)
		r->points[c]++;
}

/* An add-like call on key k: 0 (owed from now) or -ENOMEM (nothing changed). */
static void add_call(struct run *r, enum call c, int k, int rc)
{
	if (rc == 0) {
		if (!r->owed[k]) {
			r->owed[k] = 1;
			r->nowed++;
		}
	} else if (rc != -ENOMEM) {
		fail(r, "%s of key %d returned %d", call_name[c], k, rc);
	}
}

static void do_add(struct run *r, int k)
{
	long b = kwq__failpoint_count();
	int rc = kwq_add(r->q, &k, sizeof k);
	account(r, C_ADD, b);
	add_call(r, C_ADD, k, rc);
}

static void do_add_with(struct run *r, int k, int prio)
{
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	o.priority = prio;
	long b = kwq__failpoint_count();
	int rc = kwq_add_with(r->q, &k, sizeof k, &o);
	account(r, C_ADD_WITH, b);
	add_call(r, C_ADD_WITH, k, rc);
}

static void do_add_after(struct run *r, int k, int64_t ns)
{
	long b = kwq__failpoint_count();
	int rc = kwq_add_after(r->q, &k, sizeof k, ns);
	account(r, C_ADD_AFTER, b);
	add_call(r, C_ADD_AFTER, k, rc);
}

static void do_add_rl(struct run *r, int k)
{
	long b = kwq__failpoint_count();
	int rc = kwq_add_rate_limited(r->q, &k, sizeof k);
	account(r, C_ADD_RL, b);
	add_call(r, C_ADD_RL, k, rc);
}

/* Done, checked: always 0. */
static void do_done(struct run *r, kwq_item_t *it)
{
	long b = kwq__failpoint_count();
	int rc = kwq_done(r->q, it);
	account(r, C_DONE, b);
	if (rc != 0)
		fail(r, "kwq_done returned %d", rc);
}

/* The key of a handle, checked against what is owed. */
static int handed(struct run *r, kwq_item_t *it)
{
	size_t len = 0;
	const int *kp = kwq_item_key(it, &len);
	int k;
	if (len != sizeof k) {
		fail(r, "handed out a key of %d bytes", (int)len);
		return 0;
	}
	memcpy(&k, kp, sizeof k);
	if (k < 0 || k >= NKEYS || !r->owed[k]) {
		fail(r, "key %d handed out, no add of it succeeded since", k);
		return 0;
	}
	r->owed[k] = 0;
	r->nowed--;
	return k;
}

/* Try-get, checked; NULL when nothing is queued (or the mutex design's get
 * could not allocate).  *k: the key handed out. */
static kwq_item_t *do_try_get(struct run *r, int *k)
{
	kwq_item_t *it = NULL;
	long b = kwq__failpoint_count();
	int rc = kwq_try_get(r->q, &it);
	account(r, C_GET, b);
	if (rc == 0) {
		*k = handed(r, it);
		return it;
	}
	if (rc != -EAGAIN && !(rc == -ENOMEM && r->impl == KWQ_IMPL_MUTEX))
		fail(r, "kwq_try_get returned %d", rc);
	return NULL;
}

/* ------------------------------------------------------------- scenarios */

/* kwq_new itself: named, on a fake clock, the default limiter built. */
static void s_new(struct run *r)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = r->impl;
	cfg.name = "alloc_fail";
	cfg.clock = r->clock;
	cfg.shards = 4;
	long b = kwq__failpoint_count();
	errno = 0;
	r->q = kwq_new(&cfg);
	account(r, C_NEW, b);
	if (r->q == NULL && errno != ENOMEM)
		fail(r, "kwq_new failed with errno %d", errno);
	if (r->q != NULL)
		do_add(r, 0);
}

/* New keys, past a ring segment; some got and done, one re-added while held. */
static void s_keys(struct run *r)
{
	for (int k = 0; k < 1100; k++)
		do_add(r, k);
	int k;
	kwq_item_t *it = do_try_get(r, &k);
	if (it != NULL) {
		do_add(r, k); /* held -> held+dirty */
		do_done(r, it);
	}
	for (int j = 1100; j < 1110; j++)
		do_add(r, j);
}

/* New priorities, and the re-add at a new priority of a held key. */
static void s_prio(struct run *r)
{
	for (int p = 1; p <= 4; p++)
		do_add_with(r, p, p);
	do_add_with(r, 10, 0);
	int k;
	kwq_item_t *it = do_try_get(r, &k);
	if (it != NULL) {
		do_add_with(r, k, 9); /* a level no key has: reserved now, used at done */
		do_done(r, it);
	}
	do_add_with(r, 11, -3);
}

/* Delayed adds: the timer's start, records, merges, cancels by add. */
static void s_delay(struct run *r)
{
	for (int k = 0; k < 8; k++)
		do_add_after(r, k, 1000000 * (int64_t)(k + 1));
	do_add_after(r, 3, 1000);         /* a waiting key, moved earlier */
	do_add(r, 4);                     /* cancels 4's wait */
	int k;
	kwq_item_t *it = do_try_get(r, &k);
	if (it != NULL) {
		do_add_after(r, k, 5000); /* held: waits, and is re-added when due */
		do_done(r, it);
	}
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	o.after_ns = 2000000;
	o.priority = 5;
	long b = kwq__failpoint_count();
	k = 20;
	int rc = kwq_add_with(r->q, &k, sizeof k, &o);
	account(r, C_ADD_WITH, b);
	add_call(r, C_ADD_WITH, k, rc);
}

/* Rate-limited adds: the limiter's per-key table; forget, num_requeues. */
static void s_ratelimit(struct run *r)
{
	for (int k = 0; k < 40; k++)
		do_add_rl(r, k);
	do_add_rl(r, 5);
	for (int k = 0; k < 40; k += 7) {
		long b = kwq__failpoint_count();
		int n = kwq_num_requeues(r->q, &k, sizeof k);
		account(r, C_NUM_REQUEUES, b);
		if (n < 0)
			fail(r, "kwq_num_requeues(%d) returned %d", k, n);
		b = kwq__failpoint_count();
		int rc = kwq_forget(r->q, &k, sizeof k);
		account(r, C_FORGET, b);
		if (rc != 0)
			fail(r, "kwq_forget(%d) returned %d", k, rc);
	}
}

/* Metrics of a named queue with items queued and held. */
static void s_metrics(struct run *r)
{
	for (int k = 0; k < 5; k++)
		do_add(r, k);
	int k;
	kwq_item_t *it = do_try_get(r, &k);
	struct kwq_metrics m;
	m.size = sizeof m;
	long b = kwq__failpoint_count();
	int rc = kwq_metrics_read(r->q, &m);
	account(r, C_METRICS, b);
	if (rc != 0)
		fail(r, "kwq_metrics_read returned %d", rc);
	char buf[8192];
	b = kwq__failpoint_count();
	rc = kwq_metrics_prometheus(r->q, buf, sizeof buf);
	account(r, C_PROM, b);
	if (rc <= 0 || rc >= (int)sizeof buf)
		fail(r, "kwq_metrics_prometheus returned %d", rc);
	if (it != NULL)
		do_done(r, it);
}

/* The limiter constructors, their ownership on failure, when() of new keys. */
static void s_limiters(struct run *r)
{
	long b = kwq__failpoint_count();
	kwq_limiter_t *e = kwq_limiter_exponential(1000, 1000000);
	kwq_limiter_t *f = kwq_limiter_fast_slow(10, 1000, 3);
	kwq_limiter_t *bk = kwq_limiter_bucket(10, 100, r->clock);
	kwq_limiter_t *d = kwq_limiter_default();
	account(r, C_LIMITER, b);
	kwq_limiter_t *kids[3] = { e, f, bk };
	size_t n = 0;
	for (int i = 0; i < 3; i++)
		if (kids[i] != NULL)
			kids[n++] = kids[i];
	b = kwq__failpoint_count();
	errno = 0;
	kwq_limiter_t *m = kwq_limiter_max_of(kids, n); /* owns the kids */
	if (m == NULL && errno != ENOMEM)
		fail(r, "kwq_limiter_max_of failed with errno %d", errno);
	kwq_limiter_t *w = m != NULL ? kwq_limiter_with_max_wait(m, 500000) : NULL; /* owns m */
	if (m != NULL && w == NULL && errno != ENOMEM)
		fail(r, "kwq_limiter_with_max_wait failed with errno %d", errno);
	account(r, C_LIMITER, b);
	/* d under a cap: its new keys take the capped path, and evict. */
	if (d != NULL && kwq_limiter_set_max_keys(d, 8) != 0)
		fail(r, "kwq_limiter_set_max_keys failed");
	for (int k = 0; k < 20; k++) {
		kwq_limiter_t *ls[2] = { w, d };
		for (int i = 0; i < 2; i++) {
			if (ls[i] == NULL)
				continue;
			b = kwq__failpoint_count();
			int64_t v = kwq_limiter_when(ls[i], &k, sizeof k);
			account(r, C_WHEN, b);
			if (v < 0 && v != -ENOMEM)
				fail(r, "kwq_limiter_when(%d) returned %d", k, (int)v);
		}
	}
	kwq_limiter_free(w);
	kwq_limiter_free(d);
}

/* The pool's work: the key handed out, checked against what is owed. */
static enum kwq_outcome pool_work(void *ctx, kwq_item_t *item, int64_t *after_ns)
{
	struct run *r = ctx;
	(void)after_ns;
	pthread_mutex_lock(&r->pool_lock);
	handed(r, item);
	pthread_mutex_unlock(&r->pool_lock);
	return KWQ_OK;
}

/* A pool of 4 on a queue holding keys: a start that fails (the pool, or
 * any of its threads) answers NULL with EAGAIN or ENOMEM and leaves the
 * queue as it was: not shut down, every key still queued (verify gets
 * them all).  A pool that started processes them; verify drains, joins. */
static void s_workers(struct run *r)
{
	for (int k = 0; k < 4; k++)
		do_add(r, k);
	long b = kwq__failpoint_count();
	errno = 0;
	kwq_workers_t *w = kwq_workers_start(r->q, 4, pool_work, r);
	account(r, C_WORKERS, b);
	if (w != NULL) {
		r->pool = w;
		return;
	}
	if (errno != EAGAIN && errno != ENOMEM)
		fail(r, "kwq_workers_start failed with errno %d", errno);
	if (kwq_shutting_down(r->q))
		fail(r, "a failed kwq_workers_start shut the queue down");
	if ((long)kwq_len(r->q) != r->nowed)
		fail(r, "a failed kwq_workers_start took an item: kwq_len %d, %ld owed",
		     (int)kwq_len(r->q), r->nowed);
}

#define PAR_PIECES 50

static void par_piece(void *ctx, size_t i)
{
	_Atomic int *runs = ctx;
	if (i < PAR_PIECES)
		atomic_fetch_add(&runs[i], 1);
}

static bool par_never(void *ctx)
{
	(void)ctx;
	return false;
}

/* Parallelize: threads that cannot be made (or their bookkeeping) are done
 * without; every piece still runs exactly once. */
static void s_parallel(struct run *r)
{
	static const struct { unsigned workers; size_t chunk; bool cancel; } calls[] = {
		{ 4, 3, false }, { 8, 0, true }, { 100, 10, false },
	};
	for (size_t c = 0; c < sizeof calls / sizeof calls[0]; c++) {
		_Atomic int runs[PAR_PIECES];
		for (int i = 0; i < PAR_PIECES; i++)
			atomic_init(&runs[i], 0);
		long b = kwq__failpoint_count();
		int rc = kwq_parallelize(calls[c].workers, PAR_PIECES, calls[c].chunk, par_piece,
					 runs, calls[c].cancel ? par_never : NULL);
		account(r, C_PARALLELIZE, b);
		if (rc != 0)
			fail(r, "kwq_parallelize(%u, %d, %zu) returned %d", calls[c].workers,
			     PAR_PIECES, calls[c].chunk, rc);
		for (int i = 0; i < PAR_PIECES; i++)
			if (atomic_load(&runs[i]) != 1) {
				fail(r, "kwq_parallelize(%u, %d, %zu): piece %d ran %d times",
				     calls[c].workers, PAR_PIECES, calls[c].chunk, i,
				     atomic_load(&runs[i]));
				break;
			}
	}
}

/* kwq_add_many of keys from..from+n-1: the accepted prefix is owed. */
static void do_add_many(struct run *r, int from, int n, const struct kwq_add_opts *o)
{
	int keys[64];
	struct kwq_key_ref refs[64];
	for (int i = 0; i < n; i++) {
		keys[i] = from + i;
		refs[i] = (struct kwq_key_ref){ &keys[i], sizeof keys[i] };
	}
	long b = kwq__failpoint_count();
	int rc = kwq_add_many(r->q, refs, (size_t)n, o);
	account(r, C_ADD_MANY, b);
	if (rc == -ENOMEM)
		return;
	if (rc < 0 || rc > n) {
		fail(r, "kwq_add_many of %d keys returned %d", n, rc);
		return;
	}
	for (int i = 0; i < rc; i++)
		add_call(r, C_ADD_MANY, keys[i], 0);
}

/* kwq_finish of a held handle of key k: always consumed; a retry that
 * returned 0 is owed (when it fires, the clock stepped). */
static void do_finish(struct run *r, kwq_item_t *it, int k, enum kwq_outcome o)
{
	long b = kwq__failpoint_count();
	int rc = kwq_finish(r->q, it, o, 1000);
	account(r, C_FINISH, b);
	if (rc != 0 && rc != -ENOMEM)
		fail(r, "kwq_finish(%d) of key %d returned %d", (int)o, k, rc);
	else if (rc == 0 && (o == KWQ_RETRY || o == KWQ_RETRY_AFTER))
		add_call(r, C_FINISH, k, 0);
}

/*
 * The 0.2 calls: kwq_add_many of new keys (entries, set growth, a ring
 * segment: a failure part way accepts a prefix), kwq_get_batch (the
 * mutex design's -ENOMEM for its first item only; later ones end the
 * batch), kwq_finish's retries (the limiter's table, a wait record),
 * kwq_cancel and kwq_done_many (which allocate nothing) and
 * kwq_metrics_prometheus_all.
 */
static void s_v02(struct run *r)
{
	for (int k = 0; k < 1100; k += 50)
		do_add_many(r, k, 50, NULL);
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	o.priority = -7; /* a new lane, made by the batch (after the others) */
	do_add_many(r, 1100, 8, &o);
	kwq_item_t *items[8];
	long b = kwq__failpoint_count();
	int n = kwq_get_batch(r->q, items, 8, 0);
	account(r, C_GET_BATCH, b);
	if (n < 0 && n != -EAGAIN && !(n == -ENOMEM && r->impl == KWQ_IMPL_MUTEX)) {
		fail(r, "kwq_get_batch returned %d", n);
		n = 0;
	}
	int keys[8];
	for (int i = 0; i < n; i++)
		keys[i] = handed(r, items[i]);
	if (n >= 4) {
		do_finish(r, items[0], keys[0], KWQ_RETRY);
		do_finish(r, items[1], keys[1], KWQ_RETRY_AFTER);
		do_finish(r, items[2], keys[2], KWQ_OK);
		do_add(r, keys[3]); /* held+dirty: the cancel takes the re-add back */
		b = kwq__failpoint_count();
		int rc = kwq_cancel(r->q, &keys[3], sizeof keys[3]);
		account(r, C_CANCEL, b);
		if (rc < 0)
			fail(r, "kwq_cancel returned %d", rc);
		else if (rc == 1 && r->owed[keys[3]]) {
			r->owed[keys[3]] = 0;
			r->nowed--;
		}
		b = kwq__failpoint_count();
		rc = kwq_done_many(r->q, items + 3, (size_t)(n - 3));
		account(r, C_DONE_MANY, b);
		if (rc != 0)
			fail(r, "kwq_done_many returned %d", rc);
	} else {
		for (int i = 0; i < n; i++)
			do_done(r, items[i]);
	}
	int k = 1000; /* a key queued now, cancelled: no longer owed */
	if (k < NKEYS && r->owed[k]) {
		b = kwq__failpoint_count();
		int rc = kwq_cancel(r->q, &k, sizeof k);
		account(r, C_CANCEL, b);
		if (rc != 1)
			fail(r, "kwq_cancel of queued key %d returned %d", k, rc);
		r->owed[k] = 0;
		r->nowed--;
	}
	char buf[16384];
	kwq_t *qs[2] = { r->q, NULL };
	b = kwq__failpoint_count();
	int rc = kwq_metrics_prometheus_all(qs, 2, buf, sizeof buf);
	account(r, C_PROM_ALL, b);
	if (rc <= 0 || rc >= (int)sizeof buf)
		fail(r, "kwq_metrics_prometheus_all returned %d", rc);
}

struct scenario {
	const char *name;
	void (*steps)(struct run *r);
	bool creates; /* makes its own queue (s_new) */
	bool queue;   /* needs a queue at all */
};

static const struct scenario scenarios[] = {
	{ "new", s_new, true, true },
	{ "keys", s_keys, false, true },
	{ "prio", s_prio, false, true },
	{ "delay", s_delay, false, true },
	{ "ratelimit", s_ratelimit, false, true },
	{ "metrics", s_metrics, false, true },
	{ "limiters", s_limiters, false, false },
	{ "workers", s_workers, false, true },
	{ "parallelize", s_parallel, false, false },
	{ "v0.2", s_v02, false, true },
};

static kwq_t *make_queue(struct run *r)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = r->impl;
	cfg.name = "alloc_fail";
	cfg.clock = r->clock;
	cfg.shards = 4;
	return kwq_new(&cfg);
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Memory back: everything owed is handed out, every handle done. */
static void verify(struct run *r)
{
	if (r->q == NULL)
		return;
	if (r->pool != NULL) {
		/* The pool hands out what is owed; then nothing is left. */
		kwq_shutdown_drain(r->q);
		int rc = kwq_workers_join(r->pool);
		r->pool = NULL;
		if (rc != 0)
			fail(r, "kwq_workers_join returned %d", rc);
		if (r->nowed != 0)
			fail(r, "%ld keys accepted, never handed out to the pool", r->nowed);
		if (kwq_len(r->q) != 0)
			fail(r, "kwq_len %d at the end", (int)kwq_len(r->q));
		return;
	}
	kwq_clock_fake_step(r->clock, 3600LL * 1000000000); /* past every delay */
	int64_t deadline = mono_ns() + WAIT_NS;
	for (;;) {
		bool owed = r->nowed != 0;
		kwq_item_t *it = NULL;
		int rc = kwq_get_timeout(r->q, &it, owed ? 10000000 : 0);
		if (rc == 0) {
			handed(r, it);
			do_done(r, it);
			continue;
		}
		if (rc != -ETIMEDOUT)
			fail(r, "kwq_get_timeout returned %d after the run", rc);
		if (!owed)
			break;
		if (mono_ns() > deadline) {
			for (int k = 0; k < NKEYS; k++)
				if (r->owed[k]) {
					fail(r, "key %d accepted, never handed out (len %d)", k,
					     (int)kwq_len(r->q));
					break;
				}
			break;
		}
	}
	if (kwq_len(r->q) != 0)
		fail(r, "kwq_len %d at the end", (int)kwq_len(r->q));
	kwq_shutdown_drain(r->q);
}

/* One run of sc with the fail_at-th allocation failing (-1: none);
 * returns the allocations counted. */
static long run_once(enum kwq_impl impl, const struct scenario *sc, long fail_at, bool persist)
{
	static struct run r;
	memset(&r, 0, sizeof r);
	pthread_mutex_init(&r.pool_lock, NULL);
	r.impl = impl;
	r.fail_at = fail_at;
	r.clock = kwq_clock_fake_new(1);
	if (r.clock == NULL) {
		perror("kwq_clock_fake_new");
		exit(1);
	}
	if (sc->queue && !sc->creates && (r.q = make_queue(&r)) == NULL) {
		perror("kwq_new");
		exit(1);
	}
	kwq__failpoint_arm(fail_at, persist);
	sc->steps(&r);
	long n = kwq__failpoint_count();
	kwq__failpoint_arm(-1, false);
	verify(&r);
	kwq_free(r.q);
	kwq_clock_free(r.clock);
	pthread_mutex_destroy(&r.pool_lock);

	total_runs++;
	for (int c = 0; c < NCALLS; c++)
		total_points[c] += r.points[c];
	if (r.failures != 0) {
		total_failures++;
		printf("# %s %s: allocation %ld failing %s: %s\n",
		       impl == KWQ_IMPL_MUTEX ? "mutex" : "sharded", sc->name, fail_at,
		       persist ? "from then on" : "once", r.where);
	}
	return n;
}

int main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : NULL;
	int test = 0;
	for (int d = 0; d < 2; d++) {
		enum kwq_impl impl = d == 0 ? KWQ_IMPL_MUTEX : KWQ_IMPL_SHARDED;
		const char *row = d == 0 ? "mutex" : "sharded";
		if (only != NULL && strcmp(only, row) != 0)
			continue;
		for (size_t s = 0; s < sizeof scenarios / sizeof scenarios[0]; s++) {
			const struct scenario *sc = &scenarios[s];
			int before = total_failures;
			long n = run_once(impl, sc, -1, false);
			for (long i = 0; i < n; i++) {
				run_once(impl, sc, i, false);
				run_once(impl, sc, i, true);
			}
			printf("%s - %d %s %s: %ld allocations, each failed once and from "
			       "then on\n", total_failures == before ? "ok" : "not ok", ++test,
			       row, sc->name, n);
		}
	}
	unsigned long points = 0;
	for (int c = 0; c < NCALLS; c++)
		points += total_points[c];
	printf("# %ld runs, %lu (call, n) points:", total_runs, points);
	for (int c = 0; c < NCALLS; c++)
		if (total_points[c] != 0)
			printf(" %s %lu", call_name[c], total_points[c]);
	printf("\n1..%d\n", test);
	return total_failures != 0;
}
