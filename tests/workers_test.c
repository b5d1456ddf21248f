/*
 * workers_test.c - the worker pool (kwq_workers_start, kwq_workers_join)
 * and kwq_parallelize against their contract in lib/kwq.h.
 *
 *   workers_test ROW     runs every case on one row ("mutex", "sharded")
 *
 * The pool cases add keys, let a pool process them and wait (bounded) for
 * what the outcomes must lead to: every key processed, a KWQ_RETRY retried
 * through the limiter, max_attempts giving up after m + 1 processings,
 * KWQ_RETRY_AFTER retried without the limiter, KWQ_DROP ending the key, an
 * outcome outside the enum retried.  Each ends the usual way:
 * kwq_shutdown_drain, kwq_workers_join, kwq_free.  The parallelize cases
 * count the calls of every piece (exactly once), the threads that ran
 * them (never more than workers or chunks), and what a cancel stops.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <kwq.h>

#include "rows.h"

#define NKEYS 200
#define WAIT_MS 10000 /* the bound on any wait for the pool */

/* A queue of the current row with the test's limiter and give-up settings. */
static kwq_t *pool_queue(int max_attempts, void (*on_give_up)(void *, const void *, size_t),
			 void *ctx)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = row->impl;
	cfg.limiter = kwq_limiter_exponential(1000, 1000000);
	cfg.max_attempts = max_attempts;
	cfg.on_give_up = on_give_up;
	cfg.give_up_ctx = ctx;
	kwq_t *q = kwq_new(&cfg);
	if (q == NULL) {
		printf("Bail out! kwq_new(%s): %s\n", row->name, kwq_strerror(errno));
		exit(1);
	}
	return q;
}

/* ---------------------------------------------------------------- a pool's work */

/*
 * What a case's work function does with key k on its n-th processing
 * (n from 1): the outcome it returns, and *after_ns.
 */
struct work {
	kwq_t *q;
	enum kwq_outcome (*decide)(struct work *w, int k, int n, int64_t *after_ns);
	_Atomic int calls[NKEYS];     /* processings of each key */
	_Atomic int requeues[NKEYS];  /* kwq_num_requeues at the last one */
	_Atomic int busy[NKEYS];      /* in fn: exclusion */
	_Atomic int ends;             /* processings that returned KWQ_OK or KWQ_DROP */
	_Atomic int give_ups[NKEYS];
	_Atomic int give_ups_total;
	_Atomic int overlaps;
	_Atomic int bad_keys;
};

static enum kwq_outcome work_fn(void *ctx, kwq_item_t *item, int64_t *after_ns)
{
	struct work *w = ctx;
	size_t len = 0;
	const void *kp = kwq_item_key(item, &len);
	int k;
	if (len != sizeof k) {
		atomic_fetch_add(&w->bad_keys, 1);
		return KWQ_OK;
	}
	memcpy(&k, kp, sizeof k);
	if (k < 0 || k >= NKEYS) {
		atomic_fetch_add(&w->bad_keys, 1);
		return KWQ_OK;
	}
	if (atomic_exchange(&w->busy[k], 1) != 0)
		atomic_fetch_add(&w->overlaps, 1);
	if (*after_ns != 0)
		atomic_fetch_add(&w->bad_keys, 1); /* after_ns starts at 0 */
	int n = atomic_fetch_add(&w->calls[k], 1) + 1;
	atomic_store(&w->requeues[k], kwq_num_requeues(w->q, &k, sizeof k));
	enum kwq_outcome o = w->decide(w, k, n, after_ns);
	if (o == KWQ_OK || o == KWQ_DROP)
		atomic_fetch_add(&w->ends, 1);
	atomic_store(&w->busy[k], 0);
	return o;
}

static void give_up_fn(void *ctx, const void *key, size_t len)
{
	struct work *w = ctx;
	int k;
	if (len != sizeof k) {
		atomic_fetch_add(&w->bad_keys, 1);
		return;
	}
	memcpy(&k, key, sizeof k);
	if (k >= 0 && k < NKEYS)
		atomic_fetch_add(&w->give_ups[k], 1);
	atomic_fetch_add(&w->give_ups_total, 1);
}

/* Wait until *counter reaches want (bounded); true when it did. */
static bool wait_for(_Atomic int *counter, int want)
{
	for (int ms = 0; ms < WAIT_MS; ms++) {
		if (atomic_load(counter) >= want)
			return true;
		pause_ms(1);
	}
	return atomic_load(counter) >= want;
}

static void add_keys(kwq_t *q, int n)
{
	for (int k = 0; k < n; k++)
		kwq_add(q, &k, sizeof k);
}

/* ---------------------------------------------------------------- pool cases */

static enum kwq_outcome ok_always(struct work *w, int k, int n, int64_t *after_ns)
{
	(void)w, (void)k, (void)n, (void)after_ns;
	return KWQ_OK;
}

static void t_pool_each_key(void)
{
	static struct work w;
	memset(&w, 0, sizeof w);
	w.decide = ok_always;
	w.q = pool_queue(0, NULL, NULL);
	kwq_workers_t *p = kwq_workers_start(w.q, 4, work_fn, &w);
	CHECK(p != NULL);
	CHECK(!kwq_shutting_down(w.q)); /* the pool does not shut it down */
	add_keys(w.q, NKEYS);
	CHECK(wait_for(&w.ends, NKEYS));
	kwq_shutdown_drain(w.q);
	CHECK_EQ(kwq_workers_join(p), 0);
	for (int k = 0; k < NKEYS; k++)
		CHECK_EQ(atomic_load(&w.calls[k]), 1);
	CHECK_EQ(atomic_load(&w.overlaps), 0);
	CHECK_EQ(atomic_load(&w.bad_keys), 0);
	CHECK_EQ(kwq_len(w.q), 0);
	kwq_free(w.q);
}

/* A key added again while a worker holds it is processed again. */
static enum kwq_outcome readd_first(struct work *w, int k, int n, int64_t *after_ns)
{
	(void)after_ns;
	if (n == 1)
		kwq_add(w->q, &k, sizeof k);
	return KWQ_OK;
}

static void t_pool_readd_while_held(void)
{
	static struct work w;
	memset(&w, 0, sizeof w);
	w.decide = readd_first;
	w.q = pool_queue(0, NULL, NULL);
	kwq_workers_t *p = kwq_workers_start(w.q, 3, work_fn, &w);
	CHECK(p != NULL);
	add_keys(w.q, NKEYS);
	CHECK(wait_for(&w.ends, 2 * NKEYS));
	kwq_shutdown_drain(w.q);
	CHECK_EQ(kwq_workers_join(p), 0);
	for (int k = 0; k < NKEYS; k++)
		CHECK_EQ(atomic_load(&w.calls[k]), 2);
	CHECK_EQ(atomic_load(&w.overlaps), 0);
	kwq_free(w.q);
}

/* KWQ_RETRY three times (rate-limited, counted), then KWQ_OK (forgotten). */
static enum kwq_outcome retry_three(struct work *w, int k, int n, int64_t *after_ns)
{
	(void)w, (void)k, (void)after_ns;
	return n <= 3 ? KWQ_RETRY : KWQ_OK;
}

static void t_pool_retry(void)
{
	static struct work w;
	memset(&w, 0, sizeof w);
	w.decide = retry_three;
	w.q = pool_queue(0, NULL, NULL);
	kwq_workers_t *p = kwq_workers_start(w.q, 4, work_fn, &w);
	CHECK(p != NULL);
	add_keys(w.q, NKEYS);
	CHECK(wait_for(&w.ends, NKEYS));
	kwq_shutdown_drain(w.q);
	CHECK_EQ(kwq_workers_join(p), 0);
	for (int k = 0; k < NKEYS; k++) {
		CHECK_EQ(atomic_load(&w.calls[k]), 4);
		CHECK_EQ(atomic_load(&w.requeues[k]), 3); /* three failures counted */
		CHECK_EQ(kwq_num_requeues(w.q, &k, sizeof k), 0); /* KWQ_OK forgot them */
	}
	CHECK_EQ(atomic_load(&w.overlaps), 0);
	kwq_free(w.q);
}

/* Every processing fails: with max_attempts m, m + 1 processings, one give-up. */
static enum kwq_outcome retry_always(struct work *w, int k, int n, int64_t *after_ns)
{
	(void)w, (void)k, (void)n, (void)after_ns;
	return KWQ_RETRY;
}

static void t_pool_max_attempts(void)
{
	static struct work w;
	const int m = 3;
	memset(&w, 0, sizeof w);
	w.decide = retry_always;
	w.q = pool_queue(m, give_up_fn, &w);
	kwq_workers_t *p = kwq_workers_start(w.q, 4, work_fn, &w);
	CHECK(p != NULL);
	add_keys(w.q, NKEYS);
	CHECK(wait_for(&w.give_ups_total, NKEYS));
	pause_ms(20); /* a retry past the give-up would come within the limiter's 1 ms */
	kwq_shutdown_drain(w.q);
	CHECK_EQ(kwq_workers_join(p), 0);
	for (int k = 0; k < NKEYS; k++) {
		CHECK_EQ(atomic_load(&w.calls[k]), m + 1);
		CHECK_EQ(atomic_load(&w.give_ups[k]), 1);
		CHECK_EQ(kwq_num_requeues(w.q, &k, sizeof k), 0); /* forgotten */
	}
	CHECK_EQ(atomic_load(&w.give_ups_total), NKEYS);
	CHECK_EQ(atomic_load(&w.bad_keys), 0);
	kwq_free(w.q);
}

/* KWQ_RETRY_AFTER: retried after the delay, the limiter neither asked nor
 * counting; a negative after_ns counts as 0 (retried at once). */
static enum kwq_outcome retry_after_twice(struct work *w, int k, int n, int64_t *after_ns)
{
	(void)w;
	if (n == 1) {
		*after_ns = k % 2 == 0 ? 1000000 : -5;
		return KWQ_RETRY_AFTER;
	}
	return KWQ_OK;
}

static void t_pool_retry_after(void)
{
	static struct work w;
	memset(&w, 0, sizeof w);
	w.decide = retry_after_twice;
	w.q = pool_queue(0, NULL, NULL);
	kwq_workers_t *p = kwq_workers_start(w.q, 4, work_fn, &w);
	CHECK(p != NULL);
	add_keys(w.q, NKEYS);
	CHECK(wait_for(&w.ends, NKEYS));
	kwq_shutdown_drain(w.q);
	CHECK_EQ(kwq_workers_join(p), 0);
	for (int k = 0; k < NKEYS; k++) {
		CHECK_EQ(atomic_load(&w.calls[k]), 2);
		CHECK_EQ(atomic_load(&w.requeues[k]), 0);
	}
	kwq_free(w.q);
}

/* One KWQ_RETRY (counted), then KWQ_DROP: forgotten, never processed again. */
static enum kwq_outcome retry_then_drop(struct work *w, int k, int n, int64_t *after_ns)
{
	(void)w, (void)k, (void)after_ns;
	return n == 1 ? KWQ_RETRY : KWQ_DROP;
}

static void t_pool_drop(void)
{
	static struct work w;
	memset(&w, 0, sizeof w);
	w.decide = retry_then_drop;
	w.q = pool_queue(0, NULL, NULL);
	kwq_workers_t *p = kwq_workers_start(w.q, 2, work_fn, &w);
	CHECK(p != NULL);
	add_keys(w.q, NKEYS);
	CHECK(wait_for(&w.ends, NKEYS));
	pause_ms(20);
	kwq_shutdown_drain(w.q);
	CHECK_EQ(kwq_workers_join(p), 0);
	for (int k = 0; k < NKEYS; k++) {
		CHECK_EQ(atomic_load(&w.calls[k]), 2);
		CHECK_EQ(atomic_load(&w.requeues[k]), 1);
		CHECK_EQ(kwq_num_requeues(w.q, &k, sizeof k), 0);
	}
	kwq_free(w.q);
}

/* An outcome outside the enum is a KWQ_RETRY: rate-limited, counted. */
static enum kwq_outcome bogus_then_ok(struct work *w, int k, int n, int64_t *after_ns)
{
	(void)w, (void)after_ns;
	if (n == 1)
		return (enum kwq_outcome)(k % 2 == 0 ? 42 : -1);
	return KWQ_OK;
}

static void t_pool_bogus_outcome(void)
{
	static struct work w;
	memset(&w, 0, sizeof w);
	w.decide = bogus_then_ok;
	w.q = pool_queue(0, NULL, NULL);
	kwq_workers_t *p = kwq_workers_start(w.q, 4, work_fn, &w);
	CHECK(p != NULL);
	add_keys(w.q, NKEYS);
	CHECK(wait_for(&w.ends, NKEYS));
	kwq_shutdown_drain(w.q);
	CHECK_EQ(kwq_workers_join(p), 0);
	for (int k = 0; k < NKEYS; k++) {
		CHECK_EQ(atomic_load(&w.calls[k]), 2);
		CHECK_EQ(atomic_load(&w.requeues[k]), 1); /* retried through the limiter */
	}
	kwq_free(w.q);
}

/* Workers block in get until shutdown; the join waits for them; a pool on
 * a queue already shut down and empty exits at once. */
static void t_pool_shutdown(void)
{
	static struct work w;
	memset(&w, 0, sizeof w);
	w.decide = ok_always;
	w.q = pool_queue(0, NULL, NULL);
	kwq_workers_t *p = kwq_workers_start(w.q, 1, work_fn, &w);
	CHECK(p != NULL);
	pause_ms(10);
	CHECK(!kwq_shutting_down(w.q));
	int k = 7;
	CHECK_EQ(kwq_add(w.q, &k, sizeof k), 0);
	CHECK(wait_for(&w.ends, 1));
	kwq_shutdown(w.q);
	CHECK_EQ(kwq_workers_join(p), 0);
	CHECK_EQ(atomic_load(&w.calls[7]), 1);

	/* Shut down, nothing queued: the workers' first get ends them. */
	p = kwq_workers_start(w.q, 8, work_fn, &w);
	CHECK(p != NULL);
	CHECK_EQ(kwq_workers_join(p), 0);
	kwq_free(w.q);
}

static void t_pool_bad_input(void)
{
	kwq_t *q = row_queue(NULL, NULL, NULL);
	static struct work w;

	errno = 0;
	CHECK_PTR(kwq_workers_start(NULL, 1, work_fn, &w), ==, NULL);
	CHECK_EQ(errno, EINVAL);
	errno = 0;
	CHECK_PTR(kwq_workers_start(q, 1, NULL, &w), ==, NULL);
	CHECK_EQ(errno, EINVAL);
	errno = 0;
	CHECK_PTR(kwq_workers_start(q, 0, work_fn, &w), ==, NULL);
	CHECK_EQ(errno, EINVAL);
	errno = 0;
	CHECK_PTR(kwq_workers_start(q, 1025, work_fn, &w), ==, NULL);
	CHECK_EQ(errno, EINVAL);
	errno = 0;
	CHECK_PTR(kwq_workers_start(q, UINT_MAX, work_fn, &w), ==, NULL);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(kwq_workers_join(NULL), -EINVAL);
	CHECK(!kwq_shutting_down(q));
	CHECK_EQ(kwq_len(q), 0);
	kwq_free(q);
}

/* ---------------------------------------------------------------- parallelize */

#define MAX_PIECES 5000

struct par {
	_Atomic int runs[MAX_PIECES];
	_Atomic int threads;          /* distinct threads that ran a piece */
	unsigned gen;                 /* this call's generation */
	_Atomic long cancel_calls;
	_Atomic long ran;             /* pieces run */
	long cancel_after;            /* cancelled is true once ran >= this; < 0 never */
	_Atomic int bad_ctx;
};

static _Thread_local unsigned seen_gen;

static void par_fn(void *ctx, size_t i)
{
	struct par *p = ctx;
	if (seen_gen != p->gen) {
		seen_gen = p->gen;
		atomic_fetch_add(&p->threads, 1);
	}
	if (i < MAX_PIECES)
		atomic_fetch_add(&p->runs[i], 1);
	atomic_fetch_add(&p->ran, 1);
}

static bool par_cancelled(void *ctx)
{
	struct par *p = ctx;
	atomic_fetch_add(&p->cancel_calls, 1);
	return p->cancel_after >= 0 && atomic_load(&p->ran) >= p->cancel_after;
}

static void par_reset(struct par *p, long cancel_after)
{
	static unsigned gen;
	memset(p, 0, sizeof *p);
	p->gen = ++gen;
	p->cancel_after = cancel_after;
}

static void t_par_every_piece_once(void)
{
	static struct par p;
	static const unsigned workers[] = { 1, 2, 3, 8, 64 };
	static const size_t pieces[] = { 0, 1, 2, 7, 100, 1000, MAX_PIECES };
	static const size_t chunks[] = { 0, 1, 3, 10, 64, 2000, SIZE_MAX };

	for (size_t a = 0; a < sizeof workers / sizeof workers[0]; a++)
		for (size_t b = 0; b < sizeof pieces / sizeof pieces[0]; b++)
			for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++)
				for (int with_cancel = 0; with_cancel < 2; with_cancel++) {
					size_t n = pieces[b], ch = chunks[c] == 0 ? 1 : chunks[c];
					size_t nchunks = n / ch + (n % ch != 0);
					par_reset(&p, -1);
					CHECK_EQ(kwq_parallelize(workers[a], n, chunks[c], par_fn, &p,
								 with_cancel ? par_cancelled : NULL), 0);
					for (size_t i = 0; i < n; i++)
						if (atomic_load(&p.runs[i]) != 1) {
							TAP_FAIL_AT("workers %u pieces %zu chunk %zu: piece %zu "
								    "ran %d times", workers[a], n, chunks[c], i,
								    atomic_load(&p.runs[i]));
							return;
						}
					CHECK_EQ(atomic_load(&p.ran), n);
					CHECK_INT(atomic_load(&p.threads), <=, workers[a]);
					CHECK_INT(atomic_load(&p.threads), <=, nchunks);
					if (with_cancel) /* before each chunk */
						CHECK_INT(atomic_load(&p.cancel_calls), >=, nchunks);
				}
}

/* Chunks are consecutive pieces: a thread runs a chunk's pieces in a row. */
struct consec {
	size_t chunk;
	_Atomic int bad;
};
static _Thread_local size_t last_piece;

static void consec_fn(void *ctx, size_t i)
{
	struct consec *c = ctx;
	if (i % c->chunk != 0 && last_piece != i - 1)
		atomic_fetch_add(&c->bad, 1);
	last_piece = i;
}

static void t_par_chunks_consecutive(void)
{
	static struct consec c;
	c.chunk = 16;
	atomic_store(&c.bad, 0);
	CHECK_EQ(kwq_parallelize(4, 4000, c.chunk, consec_fn, &c, NULL), 0);
	CHECK_EQ(atomic_load(&c.bad), 0);
}

static void t_par_cancelled_at_once(void)
{
	static struct par p;
	par_reset(&p, 0);
	CHECK_EQ(kwq_parallelize(4, 100, 1, par_fn, &p, par_cancelled), -ECANCELED);
	CHECK_EQ(atomic_load(&p.ran), 0);
	CHECK_INT(atomic_load(&p.cancel_calls), >=, 1);
	/* one chunk of everything */
	par_reset(&p, 0);
	CHECK_EQ(kwq_parallelize(4, 100, 0, par_fn, &p, par_cancelled), -ECANCELED);
	CHECK_EQ(atomic_load(&p.ran), 0);
	par_reset(&p, 0);
	CHECK_EQ(kwq_parallelize(4, SIZE_MAX, SIZE_MAX, par_fn, &p, par_cancelled), -ECANCELED);
	CHECK_EQ(atomic_load(&p.ran), 0);
	/* nothing to run: no chunk, nothing cancelled */
	par_reset(&p, 0);
	CHECK_EQ(kwq_parallelize(4, 0, 1, par_fn, &p, par_cancelled), 0);
	CHECK_EQ(atomic_load(&p.ran), 0);
}

static void t_par_cancel_midway(void)
{
	static struct par p;
	const unsigned workers[] = { 1, 4 };
	for (size_t a = 0; a < 2; a++) {
		par_reset(&p, 500);
		CHECK_EQ(kwq_parallelize(workers[a], MAX_PIECES, 10, par_fn, &p, par_cancelled),
			 -ECANCELED);
		long ran = atomic_load(&p.ran);
		CHECK_INT(ran, >=, 500);
		CHECK_INT(ran, <, MAX_PIECES);
		/* started chunks ran to their end: whole chunks, each piece at most once */
		for (size_t c = 0; c < MAX_PIECES / 10; c++) {
			int first = atomic_load(&p.runs[c * 10]);
			CHECK_INT(first, <=, 1);
			for (size_t i = 1; i < 10; i++)
				CHECK_EQ(atomic_load(&p.runs[c * 10 + i]), first);
		}
		if (workers[a] == 1) /* one thread: nothing past the cancel */
			CHECK_EQ(ran, 500);
	}
	/* pieces near SIZE_MAX: the chunk counter must not wrap */
	par_reset(&p, 1000);
	CHECK_EQ(kwq_parallelize(3, SIZE_MAX, 1, par_fn, &p, par_cancelled), -ECANCELED);
	CHECK_INT(atomic_load(&p.ran), >=, 1000);
	for (size_t i = 0; i < MAX_PIECES; i++)
		CHECK_INT(atomic_load(&p.runs[i]), <=, 1);
	par_reset(&p, 1000);
	CHECK_EQ(kwq_parallelize(3, SIZE_MAX, 7, par_fn, &p, par_cancelled), -ECANCELED);
	for (size_t i = 0; i < MAX_PIECES; i++)
		CHECK_INT(atomic_load(&p.runs[i]), <=, 1);
}

/* More workers than chunks: no more threads than chunks. */
static void t_par_workers_above_chunks(void)
{
	static struct par p;
	par_reset(&p, -1);
	CHECK_EQ(kwq_parallelize(UINT_MAX, 6, 2, par_fn, &p, NULL), 0);
	CHECK_EQ(atomic_load(&p.ran), 6);
	CHECK_INT(atomic_load(&p.threads), <=, 3);
	par_reset(&p, -1);
	CHECK_EQ(kwq_parallelize(16, 1, 0, par_fn, &p, NULL), 0);
	CHECK_EQ(atomic_load(&p.threads), 1);
}

static void t_par_bad_input(void)
{
	static struct par p;
	par_reset(&p, -1);
	CHECK_EQ(kwq_parallelize(0, 10, 1, par_fn, &p, NULL), -EINVAL);
	CHECK_EQ(kwq_parallelize(4, 10, 1, NULL, &p, NULL), -EINVAL);
	CHECK_EQ(kwq_parallelize(0, 0, 0, NULL, NULL, NULL), -EINVAL);
	CHECK_EQ(atomic_load(&p.ran), 0);
}

/* ---------------------------------------------------------------- table */

static const struct tap_case cases[] = {
	{ "pool_each_key", t_pool_each_key },
	{ "pool_readd_while_held", t_pool_readd_while_held },
	{ "pool_retry", t_pool_retry },
	{ "pool_max_attempts", t_pool_max_attempts },
	{ "pool_retry_after", t_pool_retry_after },
	{ "pool_drop", t_pool_drop },
	{ "pool_bogus_outcome", t_pool_bogus_outcome },
	{ "pool_shutdown", t_pool_shutdown },
	{ "pool_bad_input", t_pool_bad_input },
	{ "par_every_piece_once", t_par_every_piece_once },
	{ "par_chunks_consecutive", t_par_chunks_consecutive },
	{ "par_cancelled_at_once", t_par_cancelled_at_once },
	{ "par_cancel_midway", t_par_cancel_midway },
	{ "par_workers_above_chunks", t_par_workers_above_chunks },
	{ "par_bad_input", t_par_bad_input },
};

int main(int argc, char **argv)
{
	return rows_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
