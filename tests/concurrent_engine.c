/*
 * concurrent_engine.c - run a plan's short concurrent history on one queue
 * and check it for a linearization against a model of the contract in
 * kwq.h (concurrent_engine.h; stress/concurrent_differential says why
 * linearizability of short histories rather than per-thread key ranges).
 *
 * A round: CDIFF_THREADS threads, started at the same instant (a barrier,
 * then no pause), each run their plan's operations on CDIFF_KEYS shared
 * keys; each thread then dones what it still holds.  Every call records
 * its invocation and response on one counter.
 *
 * A call that is more than one step in kwq.h is recorded as its steps, each
 * with the call's invocation and response, in order: kwq_finish as its add
 * (or the DROP's cancel of the wait) and then its done, kwq_get_batch as
 * the gets it made (the batch's items, then, when it took fewer than max,
 * a get that found nothing).  The limiter waits 1 ms for every failure
 * (exponential(1 ms, 1 ms)): a RETRY is an add_after of 1 ms, and fires
 * before the trailer.  The fake clock does not move during a round, so a
 * delayed add's ready time is fixed and nothing fires: every answer
 * depends only on the order the calls take effect in.
 *
 * Then, all threads back at the barrier, the clock steps past every delay
 * (a trailer key, waiting longest, fires last) and the queue is drained:
 * every key handed out, with its priority, until the trailer is out and
 * nothing is left.  The checker searches the orders that
 * respect real time (a call that returned before another was invoked
 * comes first) for one in which the model gives every answer recorded,
 * (on the sharded design a get may also skip what the comment at
 * passes_over says, and nothing more), and whose final
 * state, its waits fired, drains to the same multiset of
 * (key, priority) (fire order is the single-threaded differential's
 * business; at most one copy of a key is queued, so the multiset is
 * exact otherwise).  None found: the history is printed and the round
 * fails.
 *
 * What it catches: a retry lost (the model says the key's wait fires; the
 * drain does not have it), a wait left behind (the drain hands a key out
 * twice), a get that hands out a held key or the wrong priority, an add
 * that is neither absorbed nor queued.
 */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kwq.h>

#include "concurrent_engine.h"

#define NTHREADS CDIFF_THREADS
#define NOPS CDIFF_OPS
#define NKEYS CDIFF_KEYS
#define BATCH CDIFF_BATCH
/* steps: ops (a batch: BATCH + 1 at most, a finish 2), then the dones of
 * what is held */
#define MAXH (NOPS * (BATCH + 1) + NOPS * BATCH + 1)
#define TRAILER NKEYS
#define MS CDIFF_MS

enum kind {
	OP_ADD = CDIFF_ADD, OP_ADD_AFTER = CDIFF_ADD_AFTER, OP_TRY_GET = CDIFF_TRY_GET,
	OP_GET_TIMEOUT = CDIFF_GET_TIMEOUT, OP_DONE = CDIFF_DONE, OP_CANCEL = CDIFF_CANCEL,
	OP_GET_BATCH = CDIFF_GET_BATCH, OP_FINISH = CDIFF_FINISH,
	/* steps of a call, in the history only */
	OP_BATCH_GET, OP_FINISH_ADD,
};
static const char *const kind_name[] = { "add_with", "add_after", "try_get",
					 "get_timeout", "done", "cancel", "get_batch",
					 "finish", "batch's get", "finish's add" };
static const char *const outcome_name[] = { "OK", "RETRY", "RETRY_AFTER", "DROP" };

/* A step of the history: the call planned, then what it did. */
struct hop {
	enum kind kind;
	int key, prio;
	int64_t delay;  /* add_after; finish: RETRY_AFTER's after_ns */
	int outcome;    /* finish */
	int spin;
	/* recorded */
	uint64_t inv, res;
	int rc, got_key, got_prio;
};

struct thread {
	pthread_t t;
	struct cdiff_engine *e;
	int nplan;
	struct hop plan[NOPS];
	int nh;
	struct hop hist[MAXH];
};

struct cdiff_engine {
	kwq_t *q;
	kwq_clock_t *clk;
	bool passes_over;
	pthread_barrier_t start_bar, end_bar;
	_Atomic uint64_t stamp;
	_Atomic bool stopping;
	/* the threads' start: 1 all made (to the barriers), -1 not (exit) */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int go;
	int nstarted;
	struct thread th[NTHREADS];
};

static int key_of(kwq_item_t *it)
{
	size_t len = 0;
	const unsigned char *k = kwq_item_key(it, &len);
	return len == 1 ? k[0] : -1;
}

/* ------------------------------------------------------------ threads */

static void spin_wait(int spin)
{
	volatile unsigned sink = 0;
	for (unsigned long i = spin > 0 ? 1UL << (2 * spin) : 0; i > 0; i--)
		sink = sink + 1;
}

static void run_op(struct thread *t, struct hop *o, kwq_item_t **held, int *nheld)
{
	kwq_t *q = t->e->q;
	unsigned char k = (unsigned char)o->key;
	struct kwq_add_opts opts = KWQ_ADD_OPTS_INIT;
	kwq_item_t *it = NULL, *batch[BATCH];

	o->got_key = -1;
	o->got_prio = 0;
	if (o->kind == OP_DONE || o->kind == OP_FINISH) {
		if (*nheld == 0)
			return; /* nothing held: not a call */
		it = held[0];
		memmove(held, held + 1, (size_t)--*nheld * sizeof *held);
		o->key = key_of(it);
	}
	spin_wait(o->spin);
	o->inv = atomic_fetch_add(&t->e->stamp, 1);
	switch (o->kind) {
	case OP_ADD:
		opts.priority = o->prio;
		o->rc = kwq_add_with(q, &k, 1, &opts);
		break;
	case OP_ADD_AFTER:
		if (o->prio == 0) {
			o->rc = kwq_add_after(q, &k, 1, o->delay);
		} else {
			opts.priority = o->prio;
			opts.after_ns = o->delay;
			o->rc = kwq_add_with(q, &k, 1, &opts);
		}
		break;
	case OP_TRY_GET:
		o->rc = kwq_try_get(q, &it);
		break;
	case OP_GET_TIMEOUT:
		o->rc = kwq_get_timeout(q, &it, 100000);
		if (o->rc == -ETIMEDOUT)
			o->rc = -EAGAIN; /* the model's empty answer */
		break;
	case OP_DONE:
		o->rc = kwq_done(q, it);
		break;
	case OP_CANCEL:
		o->rc = kwq_cancel(q, &k, 1);
		break;
	case OP_GET_BATCH:
		o->rc = kwq_get_batch(q, batch, BATCH, 0);
		break;
	case OP_FINISH:
		o->rc = kwq_finish(q, it, (enum kwq_outcome)o->outcome, o->delay);
		break;
	case OP_BATCH_GET:
	case OP_FINISH_ADD:
		break;
	}
	o->res = atomic_fetch_add(&t->e->stamp, 1);
	if ((o->kind == OP_TRY_GET || o->kind == OP_GET_TIMEOUT) && o->rc == 0) {
		o->got_key = key_of(it);
		o->got_prio = kwq_item_priority(it);
		held[(*nheld)++] = it;
	}
	if (o->kind == OP_GET_BATCH) {
		/* its gets: the items, then one that found nothing */
		int n = o->rc > 0 ? o->rc : 0;
		for (int j = 0; j <= n && j < BATCH; j++) {
			struct hop g = *o;
			g.kind = OP_BATCH_GET;
			g.rc = j < n ? 0 : o->rc > 0 ? -EAGAIN : o->rc;
			if (j < n) {
				g.got_key = key_of(batch[j]);
				g.got_prio = kwq_item_priority(batch[j]);
				held[(*nheld)++] = batch[j];
			}
			t->hist[t->nh++] = g;
		}
		return;
	}
	if (o->kind == OP_FINISH) {
		struct hop a = *o;
		a.kind = OP_FINISH_ADD;
		t->hist[t->nh++] = a;
		o->kind = OP_DONE; /* the done: the call's rc goes with the add */
		o->rc = 0;
	}
	t->hist[t->nh++] = *o;
}

static void *thread_main(void *arg)
{
	struct thread *t = arg;
	pthread_mutex_lock(&t->e->mu);
	while (t->e->go == 0)
		pthread_cond_wait(&t->e->cv, &t->e->mu);
	int go = t->e->go;
	pthread_mutex_unlock(&t->e->mu);
	if (go < 0)
		return NULL;
	for (;;) {
		pthread_barrier_wait(&t->e->start_bar);
		if (atomic_load(&t->e->stopping))
			return NULL;
		kwq_item_t *held[MAXH];
		int nheld = 0;
		t->nh = 0;
		for (int i = 0; i < t->nplan; i++) {
			struct hop o = t->plan[i];
			run_op(t, &o, held, &nheld);
		}
		while (nheld > 0) {
			struct hop o = { .kind = OP_DONE };
			run_op(t, &o, held, &nheld);
		}
		pthread_barrier_wait(&t->e->end_bar);
	}
}

/* -------------------------------------------------------------- model */

enum { M_ABSENT, M_QUEUED, M_HELD, M_DIRTY };

struct mkey {
	int st, qprio, dprio;
	uint64_t qseq;
	uint64_t qres;  /* response of the call that queued it where it is */
	bool waiting;
	int64_t wready;
	int wprio;
	uint64_t wseq;
};

struct model {
	struct mkey k[NKEYS + 1];
	uint64_t seq;
	uint64_t res;   /* the response of the call being applied */
	bool passes_over; /* the sharded design's gets: see below */
};

/* The sharded design's get is not one atomic step.  It looks at one
 * priority at a time, so it may pass over an item queued at a higher
 * priority while it was looking (kwq.h says so under kwq_add_with); a
 * raise moves an item between priorities through a state no get takes;
 * and a get claims a ring slot before it makes the entry HELD, so between
 * the two the key is out of other gets' sight while adds still find it
 * queued (absorbed: the get that hands it out covers them), and a raise
 * in the meantime leaves that claim stale: the claimer then finds nothing
 * there.  Set for that row: a get may skip a queued key whose add (or
 * raise, or re-queue by done) had not returned when the get was called,
 * any key while another thread's get overlaps it, and a key while another
 * thread's add of it does; nothing else (kwq.h, kwq_try_get and
 * kwq_add_with, says the same to users).  struct model's passes_over. */

static int max_int(int a, int b)
{
	return a > b ? a : b;
}

static void m_add(struct model *m, int i, int p)
{
	struct mkey *k = &m->k[i];
	if (k->waiting) { /* the add cancels the wait, keeping its priority */
		p = max_int(p, k->wprio);
		k->waiting = false;
	}
	switch (k->st) {
	case M_ABSENT:
		k->st = M_QUEUED;
		k->qprio = p;
		k->qseq = ++m->seq;
		k->qres = m->res;
		break;
	case M_QUEUED:
		if (p > k->qprio) { /* raised: to the tail of the higher priority */
			k->qprio = p;
			k->qseq = ++m->seq;
			k->qres = m->res;
		}
		break;
	case M_HELD:
		k->st = M_DIRTY;
		k->dprio = p;
		break;
	case M_DIRTY:
		k->dprio = max_int(k->dprio, p);
		break;
	}
}

static void m_add_after(struct model *m, int i, int64_t ready, int p)
{
	struct mkey *k = &m->k[i];
	if (k->st == M_QUEUED || k->st == M_DIRTY) { /* due already: absorbed */
		m_add(m, i, p);
		return;
	}
	if (!k->waiting) {
		k->waiting = true;
		k->wready = ready;
		k->wprio = p;
		k->wseq = ++m->seq;
		return;
	}
	/* earliest wins (equal times: the first call), the higher priority */
	if (ready < k->wready) {
		k->wready = ready;
		k->wseq = ++m->seq;
	}
	k->wprio = max_int(k->wprio, p);
}

/* kwq_cancel: queued -> absent, a wait dropped, held+dirty -> held; 1 when
 * something was removed. */
static int m_cancel(struct model *m, int i)
{
	struct mkey *k = &m->k[i];
	int removed = 0;
	if (k->waiting) {
		k->waiting = false;
		removed = 1;
	}
	if (k->st == M_QUEUED) {
		k->st = M_ABSENT;
		removed = 1;
	} else if (k->st == M_DIRTY) {
		k->st = M_HELD;
		removed = 1;
	}
	return removed;
}

/* The first step of kwq_finish on the held key i: OK nothing (a forget),
 * RETRY an add_after of the limiter's 1 ms, RETRY_AFTER add_after(after_ns)
 * (0: an add), DROP the wait's cancel (a held+dirty key stays dirty). */
static void m_finish_add(struct model *m, int i, int outcome, int64_t after, int64_t now)
{
	switch (outcome) {
	case KWQ_RETRY:
		m_add_after(m, i, now + MS, 0);
		break;
	case KWQ_RETRY_AFTER:
		if (after <= 0)
			m_add(m, i, 0);
		else
			m_add_after(m, i, now + after, 0);
		break;
	case KWQ_DROP:
		m->k[i].waiting = false;
		break;
	default:
		break;
	}
}

/* The head: highest priority, then oldest; -1 when nothing is queued. */
static int m_head(const struct model *m)
{
	int best = -1;
	for (int i = 0; i <= NKEYS; i++) {
		const struct mkey *k = &m->k[i];
		if (k->st != M_QUEUED)
			continue;
		if (best < 0 || k->qprio > m->k[best].qprio ||
		    (k->qprio == m->k[best].qprio && k->qseq < m->k[best].qseq))
			best = i;
	}
	return best;
}

/* Whether key i may be passed over by a get invoked at inv (passes_over). */
static bool skippable(const struct model *m, int i, uint64_t inv, const bool *taken)
{
	const struct mkey *k = &m->k[i];
	return taken[i] || k->qres > inv;
}

/* A get's answer: strict (the head), or with passes_over as above; taken:
 * the keys other gets in flight hand out. */
static bool m_get(struct model *m, const struct hop *o, const bool *taken)
{
	int h = m_head(m);
	if (h < 0 || (o->rc == 0 && o->got_key == h && o->got_prio == m->k[h].qprio)) {
		if (h < 0)
			return o->rc == -EAGAIN;
		m->k[h].st = M_HELD;
		return true;
	}
	if (!m->passes_over)
		return false;
	int g = o->rc == 0 ? o->got_key : -1;
	if (o->rc != 0 && o->rc != -EAGAIN)
		return false;
	if (g >= 0 && (g >= NKEYS || m->k[g].st != M_QUEUED || m->k[g].qprio != o->got_prio))
		return false;
	/* Everything ahead of the answer (or everything, for -EAGAIN) skipped. */
	for (int i = 0; i <= NKEYS; i++) {
		const struct mkey *k = &m->k[i];
		if (i == g || k->st != M_QUEUED)
			continue;
		bool ahead = g < 0 || k->qprio > m->k[g].qprio ||
			     (k->qprio == m->k[g].qprio && k->qseq < m->k[g].qseq);
		if (ahead && !skippable(m, i, o->inv, taken))
			return false;
	}
	if (g >= 0)
		m->k[g].st = M_HELD;
	return true;
}

/* Apply o; true when the model gives the answer recorded. */
static bool m_apply(struct model *m, const struct hop *o, int64_t now, const bool *taken)
{
	m->res = o->res;
	switch (o->kind) {
	case OP_ADD:
		m_add(m, o->key, o->prio);
		return o->rc == 0;
	case OP_ADD_AFTER:
		m_add_after(m, o->key, now + o->delay, o->prio);
		return o->rc == 0;
	case OP_TRY_GET:
	case OP_GET_TIMEOUT:
	case OP_BATCH_GET:
		return m_get(m, o, taken);
	case OP_CANCEL:
		return o->rc == m_cancel(m, o->key);
	case OP_FINISH_ADD: {
		const struct mkey *k = &m->k[o->key];
		if (o->rc != 0 || (k->st != M_HELD && k->st != M_DIRTY))
			return false;
		m_finish_add(m, o->key, o->outcome, o->delay, now);
		return true;
	}
	case OP_GET_BATCH: /* recorded as its gets */
	case OP_FINISH:    /* recorded as its add and its done */
		return false;
	case OP_DONE: {
		struct mkey *k = &m->k[o->key];
		if (o->rc != 0 || (k->st != M_HELD && k->st != M_DIRTY))
			return false;
		if (k->st == M_DIRTY) {
			k->st = M_QUEUED;
			k->qprio = k->dprio;
			k->qseq = ++m->seq;
			k->qres = m->res;
		} else {
			k->st = M_ABSENT;
		}
		return true;
	}
	}
	return false;
}

/* Fire every wait (ready, then call order), then drain: the multiset of
 * (key, priority), as counts per key and priority. */
static void m_drain(struct model *m, int counts[NKEYS + 1][2])
{
	for (;;) {
		int w = -1;
		for (int i = 0; i <= NKEYS; i++) {
			const struct mkey *k = &m->k[i];
			if (k->waiting && (w < 0 || k->wready < m->k[w].wready ||
					   (k->wready == m->k[w].wready && k->wseq < m->k[w].wseq)))
				w = i;
		}
		if (w < 0)
			break;
		m->k[w].waiting = false;
		m_add(m, w, m->k[w].wprio);
	}
	memset(counts, 0, sizeof(int) * (NKEYS + 1) * 2);
	int h;
	while ((h = m_head(m)) >= 0) {
		if (h < NKEYS)
			counts[h][m->k[h].qprio > 0]++;
		m->k[h].st = M_ABSENT;
	}
}

/* ------------------------------------------------------------ checker */

struct check {
	const struct thread *th;
	int64_t now;
	int observed[NKEYS + 1][2];
	unsigned long nodes;
};

static bool same_drain(struct model *m, const struct check *c)
{
	int counts[NKEYS + 1][2];
	m_drain(m, counts);
	return memcmp(counts, c->observed, sizeof counts) == 0;
}

static bool dfs(struct model *m, int next[NTHREADS], int left, struct check *c)
{
	c->nodes++;
	if (left == 0) {
		struct model f = *m;
		return same_drain(&f, c);
	}
	const struct thread *th = c->th;
	uint64_t min_res = UINT64_MAX;
	for (int t = 0; t < NTHREADS; t++)
		if (next[t] < th[t].nh && th[t].hist[next[t]].res < min_res)
			min_res = th[t].hist[next[t]].res;
	for (int t = 0; t < NTHREADS; t++) {
		if (next[t] >= th[t].nh)
			continue;
		const struct hop *o = &th[t].hist[next[t]];
		if (o->inv > min_res)
			continue; /* another call returned before this one began */
		/* What other threads' calls overlapping o may hide from it: any
		 * key while a get is in flight (its claimed slot), a key while
		 * an add of it is (a raise: MOVING). */
		bool taken[NKEYS + 1] = { false };
		for (int u = 0; u < NTHREADS; u++)
			for (int j = 0; u != t && j < th[u].nh; j++) {
				const struct hop *x = &th[u].hist[j];
				if (x->inv > o->res || x->res < o->inv)
					continue;
				if (x->kind == OP_TRY_GET || x->kind == OP_GET_TIMEOUT ||
				    x->kind == OP_BATCH_GET)
					memset(taken, 1, sizeof taken);
				if (x->kind == OP_ADD || x->kind == OP_ADD_AFTER ||
				    (x->kind == OP_FINISH_ADD && (x->outcome == KWQ_RETRY ||
								  x->outcome == KWQ_RETRY_AFTER)))
					taken[x->key] = true;
			}
		struct model n = *m;
		if (!m_apply(&n, o, c->now, taken))
			continue;
		next[t]++;
		bool ok = dfs(&n, next, left - 1, c);
		next[t]--;
		if (ok)
			return true;
	}
	return false;
}

static void print_history(FILE *f, long round, const struct check *c)
{
	const struct thread *th = c->th;
	fprintf(f, "round %ld: no linearization explains this history:\n", round);
	for (int t = 0; t < NTHREADS; t++)
		for (int i = 0; i < th[t].nh; i++) {
			const struct hop *o = &th[t].hist[i];
			fprintf(f, "  thread %d [%3" PRIu64 ", %3" PRIu64 "] %-11s k%d", t,
				o->inv, o->res, kind_name[o->kind], o->key);
			if (o->kind == OP_ADD || o->kind == OP_ADD_AFTER)
				fprintf(f, " prio %d", o->prio);
			if (o->kind == OP_ADD_AFTER)
				fprintf(f, " after %lld ms", (long long)(o->delay / MS));
			if (o->kind == OP_FINISH_ADD)
				fprintf(f, " %s %lld ms", outcome_name[o->outcome],
					(long long)(o->delay / MS));
			fprintf(f, " -> %d", o->rc);
			if (o->got_key >= 0)
				fprintf(f, " k%d prio %d", o->got_key, o->got_prio);
			fputc('\n', f);
		}
	fprintf(f, "  drained after the step:");
	for (int k = 0; k < NKEYS; k++)
		for (int p = 0; p < 2; p++)
			if (c->observed[k][p] != 0)
				fprintf(f, " k%d prio %d x%d", k, p, c->observed[k][p]);
	fputc('\n', f);
}

/* fprintf when f is not NULL */
static void say(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(FILE *f, const char *fmt, ...)
{
	if (f == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* After a round: step past every delay, drain to the trailer.  false when
 * the trailer does not come (what came is in c->observed). */
static bool drain_round(struct cdiff_engine *e, struct check *c, long round, FILE *f)
{
	unsigned char tk = TRAILER;
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	o.after_ns = 10 * MS; /* after every wait of the round: fires last */
	o.priority = 2;       /* above every key of the round */
	if (kwq_add_with(e->q, &tk, 1, &o) != 0) {
		say(f, "round %ld: the trailer's add failed\n", round);
		return false;
	}
	kwq_clock_fake_step(e->clk, 3600LL * 1000000000);
	memset(c->observed, 0, sizeof c->observed);
	int64_t give_up = mono_ns() + 5000000000LL;
	/* Until the trailer, gets run beside the timer's fires (and on the
	 * sharded design may pass over one in flight): the order of what they
	 * hand out means nothing, the multiset does.  Once the trailer is out,
	 * every fire has been queued: take the rest without blocking. */
	bool trailer = false;
	for (;;) {
		kwq_item_t *it = NULL;
		int rc = trailer ? kwq_try_get(e->q, &it) : kwq_get_timeout(e->q, &it, 10 * MS);
		if (rc == -EAGAIN && trailer)
			break;
		if (rc == 0) {
			int k = key_of(it);
			int p = kwq_item_priority(it);
			kwq_done(e->q, it);
			if (k == TRAILER && !trailer) {
				trailer = true;
				continue;
			}
			if (k >= 0 && k < NKEYS && (p == 0 || p == 1))
				c->observed[k][p]++;
			else
				say(f, "round %ld: drained key %d prio %d\n", round, k, p);
			continue;
		}
		if (mono_ns() > give_up) {
			say(f, "round %ld: the trailer never came (len %zu)\n", round,
			    kwq_len(e->q));
			return false;
		}
	}
	if (kwq_len(e->q) != 0) {
		say(f, "round %ld: %zu queued after the drain\n", round, kwq_len(e->q));
		return false;
	}
	return true;
}

/* ------------------------------------------------------------- engine */

struct cdiff_engine *cdiff_engine_new(enum kwq_impl impl)
{
	struct cdiff_engine *e = calloc(1, sizeof *e);
	if (e == NULL)
		return NULL;
	e->passes_over = impl == KWQ_IMPL_SHARDED;
	e->clk = kwq_clock_fake_new(1);
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = impl;
	cfg.clock = e->clk;
	cfg.limiter = kwq_limiter_exponential(MS, MS); /* every retry: 1 ms */
	if (e->clk == NULL || cfg.limiter == NULL) {
		kwq_limiter_free(cfg.limiter);
		kwq_clock_free(e->clk);
		free(e);
		return NULL;
	}
	if ((e->q = kwq_new(&cfg)) == NULL) { /* the limiter freed with it */
		kwq_clock_free(e->clk);
		free(e);
		return NULL;
	}
	pthread_barrier_init(&e->start_bar, NULL, NTHREADS + 1);
	pthread_barrier_init(&e->end_bar, NULL, NTHREADS + 1);
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	for (int t = 0; t < NTHREADS; t++) {
		e->th[t].e = e;
		if (pthread_create(&e->th[t].t, NULL, thread_main, &e->th[t]) != 0)
			break;
		e->nstarted++;
	}
	pthread_mutex_lock(&e->mu);
	e->go = e->nstarted == NTHREADS ? 1 : -1;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	if (e->nstarted < NTHREADS) {
		cdiff_engine_free(e);
		return NULL;
	}
	return e;
}

void cdiff_engine_free(struct cdiff_engine *e)
{
	if (e == NULL)
		return;
	if (e->nstarted == NTHREADS) { /* else they saw go -1 and return */
		atomic_store(&e->stopping, true);
		pthread_barrier_wait(&e->start_bar);
	}
	for (int t = 0; t < e->nstarted; t++)
		pthread_join(e->th[t].t, NULL);
	pthread_barrier_destroy(&e->start_bar);
	pthread_barrier_destroy(&e->end_bar);
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
	kwq_free(e->q);
	kwq_clock_free(e->clk);
	free(e);
}

static bool plan_valid(const struct cdiff_plan *p)
{
	for (int t = 0; t < NTHREADS; t++) {
		if (p->nops[t] < 0 || p->nops[t] > NOPS)
			return false;
		for (int i = 0; i < p->nops[t]; i++) {
			const struct cdiff_op *o = &p->op[t][i];
			if ((unsigned)o->kind >= CDIFF_NKINDS || o->spin < 0 || o->spin > 7)
				return false;
			switch (o->kind) {
			case CDIFF_ADD_AFTER:
				if (o->delay <= 0 || o->delay >= 10 * MS)
					return false;
				/* fall through */
			case CDIFF_ADD:
			case CDIFF_CANCEL:
				if (o->key < 0 || o->key >= NKEYS || o->prio < 0 || o->prio > 1)
					return false;
				break;
			case CDIFF_FINISH:
				if (o->outcome < KWQ_OK || o->outcome > KWQ_DROP || o->delay < 0 ||
				    o->delay >= 10 * MS)
					return false;
				break;
			default:
				break;
			}
		}
	}
	return true;
}

int cdiff_engine_run(struct cdiff_engine *e, const struct cdiff_plan *plan, long round,
		     FILE *report, struct cdiff_result *res)
{
	if (!plan_valid(plan))
		return -EINVAL;
	for (int t = 0; t < NTHREADS; t++) {
		struct thread *th = &e->th[t];
		th->nplan = plan->nops[t];
		for (int i = 0; i < th->nplan; i++) {
			const struct cdiff_op *p = &plan->op[t][i];
			struct hop *o = &th->plan[i];
			memset(o, 0, sizeof *o);
			o->kind = (enum kind)p->kind;
			o->key = p->key;
			o->prio = p->prio;
			o->delay = p->delay;
			o->outcome = p->outcome;
			o->spin = p->spin;
		}
	}
	struct check c = { .th = e->th, .now = kwq_clock_now(e->clk) };
	atomic_store(&e->stamp, 0);
	pthread_barrier_wait(&e->start_bar);
	pthread_barrier_wait(&e->end_bar);
	bool drained = drain_round(e, &c, round, report);

	/* Did calls of different threads overlap?  (A round where they ran
	 * one after another checks little.) */
	bool ov = false;
	const struct thread *th = e->th;
	for (int t = 0; t < NTHREADS && !ov; t++)
		for (int u = t + 1; u < NTHREADS && !ov; u++)
			for (int i = 0; i < th[t].nh && !ov; i++)
				for (int j = 0; j < th[u].nh && !ov; j++)
					ov = th[t].hist[i].inv < th[u].hist[j].res &&
					     th[u].hist[j].inv < th[t].hist[i].res;

	struct model m;
	memset(&m, 0, sizeof m);
	m.passes_over = e->passes_over;
	int next[NTHREADS] = { 0 };
	int left = 0;
	for (int t = 0; t < NTHREADS; t++)
		left += th[t].nh;
	int rc = 0;
	if (!drained || !dfs(&m, next, left, &c)) {
		if (report != NULL)
			print_history(report, round, &c);
		rc = 1;
	}
	if (res != NULL) {
		res->overlapped = ov;
		res->nodes = c.nodes;
	}
	return rc;
}

int cdiff_run_plan(enum kwq_impl impl, const struct cdiff_plan *plan, FILE *report)
{
	if (!plan_valid(plan))
		return -EINVAL;
	struct cdiff_engine *e = cdiff_engine_new(impl);
	if (e == NULL)
		return -ENOMEM;
	int rc = cdiff_engine_run(e, plan, 0, report, NULL);
	cdiff_engine_free(e);
	return rc;
}

/* ------------------------------------------------------------- format */

void cdiff_decode(const uint8_t *data, size_t size, struct cdiff_input *in)
{
	memset(in, 0, sizeof *in);
	uint8_t h = size > 0 ? data[0] : 0;
	in->mutex = (h & 3) != 2;
	in->sharded = (h & 3) != 1;
	in->rounds = 4 * (1 + ((h >> 2) & 3));
	size_t at = CDIFF_HEADER_BYTES;
	for (int t = 0; t < NTHREADS; t++) {
		for (int i = 0; i < NOPS && at + CDIFF_OP_BYTES <= size; i++) {
			uint8_t b = data[at], b1 = data[at + 1];
			at += CDIFF_OP_BYTES;
			struct cdiff_op *o = &in->plan.op[t][in->plan.nops[t]++];
			o->kind = (enum cdiff_kind)(b & 7);
			o->key = (b >> 3) & 1;
			o->prio = (b >> 4) & 1;
			int d = (b >> 5) & 1;
			o->delay = (o->kind == CDIFF_FINISH ? d : d + 1) * MS;
			o->outcome = (b >> 6) & 3;
			o->spin = (b1 >> 1) & 7;
			if (b1 & 1)
				break;
		}
	}
}

void cdiff_plan_print(const struct cdiff_plan *plan, FILE *f, const char *prefix)
{
	for (int t = 0; t < NTHREADS; t++) {
		fprintf(f, "%sthread %d:", prefix, t);
		for (int i = 0; i < plan->nops[t]; i++) {
			const struct cdiff_op *o = &plan->op[t][i];
			fprintf(f, "%s %s", i ? ";" : "", (unsigned)o->kind < CDIFF_NKINDS ?
				kind_name[o->kind] : "?");
			switch (o->kind) {
			case CDIFF_ADD:
				fprintf(f, " k%d prio %d", o->key, o->prio);
				break;
			case CDIFF_ADD_AFTER:
				fprintf(f, " k%d prio %d after %lld ms", o->key, o->prio,
					(long long)(o->delay / MS));
				break;
			case CDIFF_CANCEL:
				fprintf(f, " k%d", o->key);
				break;
			case CDIFF_FINISH:
				fprintf(f, " %s", (unsigned)o->outcome < 4 ?
					outcome_name[o->outcome] : "?");
				if (o->outcome == KWQ_RETRY_AFTER)
					fprintf(f, " %lld ms", (long long)(o->delay / MS));
				break;
			default:
				break;
			}
			if (o->spin > 0)
				fprintf(f, " (spin %d)", o->spin);
		}
		fputc('\n', f);
	}
}
