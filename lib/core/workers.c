/*
 * workers.c - the worker pool (kwq_workers_start, kwq_workers_join) and
 * kwq_parallelize.
 *
 * ---------------------------------------------------------------- a worker
 *
 * A worker is the loop every client-go controller writes by hand: get an
 * item (blocking), call the work function with *after_ns reset to 0, and
 * end the processing with kwq_finish(outcome, after_ns).  The pool cleans
 * what the function returns before kwq_finish sees it (an outcome outside
 * the enum is a KWQ_RETRY, a negative after_ns is 0), so kwq_finish never
 * answers -EINVAL; its -ESHUTDOWN is the queue's business (the retry was
 * refused, the done happened) and the worker goes on.  A retry that cannot
 * be recorded for memory is not dropped: the worker keeps the item and
 * asks again after RETRY_NS (kwq__finish with hold_on_nomem), so no item
 * is lost to a failing allocation (the limiter may count that failure
 * more than once).  A
 * worker exits when its get answers -ESHUTDOWN: the queue is shut down and
 * nothing is queued.  A mutex-design get that fails for memory took
 * nothing; the worker sleeps RETRY_NS and asks again.
 *
 * ---------------------------------------------------------------- the gate
 *
 * kwq_workers_start creates every thread before any of them may touch the
 * queue: each new thread first waits on the pool's start gate (a mutex, a
 * condition variable and a state, CLOSED -> OPEN or CLOSED -> ABORT, set
 * once under the mutex).  When all n exist the gate opens and they enter
 * their loops.  When one cannot be created (kwq__thread_create fails, or
 * the failpoint build makes it fail) the gate is set to ABORT instead: the
 * threads already made see it, return without a single kwq_get, and are
 * joined before kwq_workers_start returns NULL with errno EAGAIN.  So a
 * pool that failed to start took nothing from the queue, and left it as it
 * was (not shut down).  The mutex orders the gate's state: no atomics.
 *
 * ---------------------------------------------------------------- parallelize
 *
 * kwq_parallelize cuts 0..pieces-1 into nchunks = ceil(pieces / chunk)
 * chunks of chunk consecutive pieces (the last one shorter), computed
 * without overflow for pieces near SIZE_MAX, and runs them on
 * min(workers, nchunks) threads: the caller and the threads it could
 * create (a thread that cannot be created is done without).  Chunks are
 * handed out by one counter, next: a thread claims chunk c by moving next
 * from c to c + 1 with a compare-and-swap (never past nchunks, so it
 * cannot wrap), then asks cancelled, then runs the chunk's pieces.  A
 * cancelled that answers true closes the counter (next = nchunks) and the
 * chunk it was asked for is not run: every claim that comes after the
 * close in next's modification order fails, so no further chunk starts;
 * chunks claimed before it run to their end.  Each thread counts the
 * chunks it ran in its own slot; the sum, read after the joins, is
 * nchunks exactly when every piece ran (0), and less after a cancel
 * (-ECANCELED).
 *
 * The counter and the close are relaxed: they only partition the chunks
 * (each claim is one atomic read-modify-write, so no chunk is claimed
 * twice), and publish nothing.  What the pieces did is published to the
 * caller by pthread_join (and by program order for the caller's own
 * chunks), the per-thread counts likewise.
 *
 * ---------------------------------------------------------------- joins
 *
 * A pool's threads are joined in kwq_workers_join (after the queue was
 * shut down and emptied: the join does not shut it down), or by a failed
 * kwq_workers_start (the threads released with ABORT).  kwq_parallelize
 * joins every thread it made before it returns, cancelled or not.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "alloc.h"
#include "inject.h"
#include "kwq.h"
#include "ops.h"

/* The most workers one pool may have (kwq.h). */
#define WORKERS_MAX 1024u

/* A mutex-design get that failed for memory is retried after this. */
#define RETRY_NS 1000000L

enum gate { GATE_CLOSED, GATE_OPEN, GATE_ABORT };

struct kwq_workers {
	kwq_t *q;
	kwq_work_fn fn;
	void *ctx;
	unsigned n;             /* threads created (all n once started) */
	pthread_mutex_t lock;   /* guards gate */
	pthread_cond_t opened;  /* gate left GATE_CLOSED */
	enum gate gate;
	pthread_t threads[];
};

/* ---------------------------------------------------------------- pool */

/* Wait at the gate; true when the worker may enter its loop. */
static bool gate_pass(struct kwq_workers *w)
{
	pthread_mutex_lock(&w->lock);
	while (w->gate == GATE_CLOSED)
		pthread_cond_wait(&w->opened, &w->lock);
	bool open = w->gate == GATE_OPEN;
	pthread_mutex_unlock(&w->lock);
	return open;
}

static void gate_set(struct kwq_workers *w, enum gate g)
{
	pthread_mutex_lock(&w->lock);
	w->gate = g;
	pthread_cond_broadcast(&w->opened);
	pthread_mutex_unlock(&w->lock);
}

static void retry_pause(void)
{
	struct timespec ts = { 0, RETRY_NS };
	nanosleep(&ts, NULL);
}

static void *worker_main(void *arg)
{
	struct kwq_workers *w = arg;

	if (!gate_pass(w))
		return NULL;
	for (;;) {
		kwq_item_t *item;
		int rc = kwq_get(w->q, &item);
		if (rc == -ENOMEM) {
			retry_pause();
			continue;
		}
		if (rc != 0)
			break; /* -ESHUTDOWN: shut down, nothing queued */
		int64_t after_ns = 0;
		/* Read as an int: a value outside the enum is no enumerator. */
		int o = (int)w->fn(w->ctx, item, &after_ns);
		enum kwq_outcome outcome = KWQ_RETRY;
		switch (o) {
		case KWQ_OK:
		case KWQ_RETRY:
		case KWQ_RETRY_AFTER:
		case KWQ_DROP:
			outcome = (enum kwq_outcome)o;
			break;
		default:
			break;
		}
		if (after_ns < 0)
			after_ns = 0;
		/* A retry that cannot be recorded for memory is tried again,
		 * the item still held, rather than lost; -ESHUTDOWN: the
		 * retry was refused, the done made. */
		while (kwq__finish(w->q, item, outcome, after_ns, true) == -ENOMEM)
			retry_pause();
	}
	return NULL;
}

/* Join the created threads and free the pool. */
static void pool_free(struct kwq_workers *w)
{
	for (unsigned i = 0; i < w->n; i++)
		pthread_join(w->threads[i], NULL);
	pthread_cond_destroy(&w->opened);
	pthread_mutex_destroy(&w->lock);
	free(w);
}

kwq_workers_t *kwq_workers_start(kwq_t *q, unsigned n, kwq_work_fn fn, void *ctx)
{
	if (q == NULL || fn == NULL || n == 0 || n > WORKERS_MAX) {
		errno = EINVAL;
		return NULL;
	}
	struct kwq_workers *w =
		kwq__malloc(sizeof *w + (size_t)n * sizeof w->threads[0]);
	if (w == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	w->q = q;
	w->fn = fn;
	w->ctx = ctx;
	w->n = 0;
	w->gate = GATE_CLOSED;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->opened, NULL);

	while (w->n < n) {
		if (kwq__thread_create(&w->threads[w->n], worker_main, w) != 0) {
			gate_set(w, GATE_ABORT);
			pool_free(w);
			errno = EAGAIN;
			return NULL;
		}
		w->n++;
	}
	gate_set(w, GATE_OPEN);
	return w;
}

int kwq_workers_join(kwq_workers_t *w)
{
	if (w == NULL)
		return -EINVAL;
	pool_free(w);
	return 0;
}

/* ---------------------------------------------------------------- parallelize */

struct par {
	size_t pieces, chunk, nchunks;
	void (*fn)(void *ctx, size_t piece);
	void *ctx;
	bool (*cancelled)(void *ctx);
	_Atomic size_t next; /* the next chunk to claim; nchunks: none left */
};

/* One thread of a parallelize: its share, and the chunks it ran. */
struct par_thread {
	struct par *p;
	size_t ran;
};

/* Claim the next chunk into *c; false when none is left (or closed). */
static bool par_claim(struct par *p, size_t *c)
{
	size_t cur = atomic_load_explicit(&p->next, memory_order_relaxed);
	for (;;) {
		if (cur >= p->nchunks)
			return false;
		KWQ__YIELD();
		if (atomic_compare_exchange_weak_explicit(&p->next, &cur, cur + 1,
							  memory_order_relaxed,
							  memory_order_relaxed)) {
			*c = cur;
			return true;
		}
	}
}

static void par_loop(struct par_thread *t)
{
	struct par *p = t->p;
	size_t c;

	while (par_claim(p, &c)) {
		if (p->cancelled != NULL && p->cancelled(p->ctx)) {
			atomic_store_explicit(&p->next, p->nchunks, memory_order_relaxed);
			return;
		}
		size_t start = c * p->chunk; /* < pieces: no overflow */
		size_t end = p->pieces - start > p->chunk ? start + p->chunk : p->pieces;
		for (size_t i = start; i < end; i++)
			p->fn(p->ctx, i);
		t->ran++;
	}
}

static void *par_main(void *arg)
{
	par_loop(arg);
	return NULL;
}

int kwq_parallelize(unsigned workers, size_t pieces, size_t chunk,
		    void (*fn)(void *ctx, size_t piece), void *ctx,
		    bool (*cancelled)(void *ctx))
{
	if (workers == 0 || fn == NULL)
		return -EINVAL;
	if (chunk == 0)
		chunk = 1;
	struct par p = {
		.pieces = pieces,
		.chunk = chunk,
		.nchunks = pieces / chunk + (pieces % chunk != 0),
		.fn = fn,
		.ctx = ctx,
		.cancelled = cancelled,
	};
	atomic_init(&p.next, 0);
	if (p.nchunks == 0)
		return 0;

	/* The caller is thread 0; the others, as many as can be made. */
	size_t want = workers < p.nchunks ? workers : p.nchunks;
	size_t made = 0;
	struct par_thread self = { &p, 0 };
	struct par_thread *ts = NULL;
	pthread_t *tids = NULL;
	if (want > 1) {
		ts = kwq__calloc(want - 1, sizeof *ts);
		tids = kwq__calloc(want - 1, sizeof *tids);
		if (ts == NULL || tids == NULL)
			want = 1; /* done without */
	}
	for (; made + 1 < want; made++) {
		ts[made].p = &p;
		ts[made].ran = 0;
		if (kwq__thread_create(&tids[made], par_main, &ts[made]) != 0)
			break; /* done without the rest */
	}

	par_loop(&self);
	size_t ran = self.ran;
	for (size_t i = 0; i < made; i++) {
		pthread_join(tids[i], NULL);
		ran += ts[i].ran;
	}
	free(ts);
	free(tids);
	return ran == p.nchunks ? 0 : -ECANCELED;
}
