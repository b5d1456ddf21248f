/*
 * concurrent_differential.c - several threads drive one queue at once; the
 * history they record must be linearizable against a model of the
 * contract in kwq.h.
 *
 *   concurrent_differential ROW [--seconds S] [--seed N]
 *
 * Why a linearizability check, and not per-thread key ranges: the races
 * worth catching are on one key from two threads (a worker's retry while
 * a producer's add of the same key is in flight; an add inside another
 * thread's delayed add of that key), and per-thread keys would keep them
 * apart.  Histories are short, so checking them is cheap: each round,
 * three threads run four random operations each, on two shared keys, at
 * the same instant (a barrier, then no pause): kwq_add_with (priority 0
 * or 1), kwq_add_after / kwq_add_with with a delay (1 or 2 ms on the fake
 * clock, priority 0 or 1), kwq_try_get, kwq_get_timeout (100 us),
 * kwq_get_batch (max 2, timeout 0), kwq_cancel, and kwq_done or kwq_finish
 * (each outcome; RETRY_AFTER 0 or 1 ms) of a handle the thread holds; each
 * thread then dones what it still holds.  Every call records its
 * invocation and response on one global counter.
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
 * Then, all threads joined, the clock steps past every delay (a trailer
 * key, waiting longest, fires last) and the queue is drained: every key
 * handed out, with its priority, until the trailer is out and nothing is
 * left.  The checker searches the orders that
 * respect real time (a call that returned before another was invoked
 * comes first) for one in which the model gives every answer recorded,
 * (on the sharded design a get may also skip what the comment at
 * passes_over says, and nothing more), and whose final
 * state, its waits fired, drains to the same multiset of
 * (key, priority) (fire order is the single-threaded differential's
 * business; at most one copy of a key is queued, so the multiset is
 * exact otherwise).  None found: the history is printed and the run fails.
 *
 * What it catches: a retry lost (the model says the key's wait fires; the
 * drain does not have it), a wait left behind (the drain hands a key out
 * twice), a get that hands out a held key or the wrong priority, an add
 * that is neither absorbed nor queued.  Exit status 0 when every round
 * was linearizable.
 */
#include <errno.h>
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

#include "row.h"

#define NTHREADS 3
#define NOPS 4
#define NKEYS 2
#define BATCH 2 /* kwq_get_batch's max */
/* steps: ops (a batch: BATCH + 1 at most, a finish 2), then the dones of
 * what is held */
#define MAXH (NOPS * (BATCH + 1) + NOPS * BATCH + 1)
#define TRAILER NKEYS
#define MS 1000000LL

enum kind {
	OP_ADD, OP_ADD_AFTER, OP_TRY_GET, OP_GET_TIMEOUT, OP_DONE, OP_CANCEL,
	OP_GET_BATCH, OP_FINISH,
	/* steps of a call, in the history only */
	OP_BATCH_GET, OP_FINISH_ADD,
};
static const char *const kind_name[] = { "add_with", "add_after", "try_get",
					 "get_timeout", "done", "cancel", "get_batch",
					 "finish", "batch's get", "finish's add" };
static const char *const outcome_name[] = { "OK", "RETRY", "RETRY_AFTER", "DROP" };

struct op {
	enum kind kind;
	int key, prio;
	int64_t delay;  /* add_after; finish: RETRY_AFTER's after_ns */
	int outcome;    /* finish */
	/* recorded */
	uint64_t inv, res;
	int rc, got_key, got_prio;
};

struct thread {
	pthread_t t;
	int nplan;
	struct op plan[NOPS];
	int nh;
	struct op hist[MAXH];
};

static kwq_t *q;
static kwq_clock_t *clk;
static pthread_barrier_t start_bar, end_bar;
static _Atomic uint64_t stamp;
static _Atomic bool stopping;
static struct thread th[NTHREADS];

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static int key_of(kwq_item_t *it)
{
	size_t len = 0;
	const unsigned char *k = kwq_item_key(it, &len);
	return len == 1 ? k[0] : -1;
}

/* ------------------------------------------------------------ threads */

static void run_op(struct thread *t, struct op *o, kwq_item_t **held, int *nheld)
{
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
	o->inv = atomic_fetch_add(&stamp, 1);
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
	o->res = atomic_fetch_add(&stamp, 1);
	if ((o->kind == OP_TRY_GET || o->kind == OP_GET_TIMEOUT) && o->rc == 0) {
		o->got_key = key_of(it);
		o->got_prio = kwq_item_priority(it);
		held[(*nheld)++] = it;
	}
	if (o->kind == OP_GET_BATCH) {
		/* its gets: the items, then one that found nothing */
		int n = o->rc > 0 ? o->rc : 0;
		for (int j = 0; j <= n && j < BATCH; j++) {
			struct op g = *o;
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
		struct op a = *o;
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
	for (;;) {
		pthread_barrier_wait(&start_bar);
		if (atomic_load(&stopping))
			return NULL;
		kwq_item_t *held[MAXH];
		int nheld = 0;
		t->nh = 0;
		for (int i = 0; i < t->nplan; i++) {
			struct op o = t->plan[i];
			run_op(t, &o, held, &nheld);
		}
		while (nheld > 0) {
			struct op o = { .kind = OP_DONE };
			run_op(t, &o, held, &nheld);
		}
		pthread_barrier_wait(&end_bar);
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
 * kwq_add_with, says the same to users). */
static bool passes_over;

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
static bool m_get(struct model *m, const struct op *o, const bool *taken)
{
	int h = m_head(m);
	if (h < 0 || (o->rc == 0 && o->got_key == h && o->got_prio == m->k[h].qprio)) {
		if (h < 0)
			return o->rc == -EAGAIN;
		m->k[h].st = M_HELD;
		return true;
	}
	if (!passes_over)
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
static bool m_apply(struct model *m, const struct op *o, int64_t now, const bool *taken)
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
	uint64_t min_res = UINT64_MAX;
	for (int t = 0; t < NTHREADS; t++)
		if (next[t] < th[t].nh && th[t].hist[next[t]].res < min_res)
			min_res = th[t].hist[next[t]].res;
	for (int t = 0; t < NTHREADS; t++) {
		if (next[t] >= th[t].nh)
			continue;
		const struct op *o = &th[t].hist[next[t]];
		if (o->inv > min_res)
			continue; /* another call returned before this one began */
		/* What other threads' calls overlapping o may hide from it: any
		 * key while a get is in flight (its claimed slot), a key while
		 * an add of it is (a raise: MOVING). */
		bool taken[NKEYS + 1] = { false };
		for (int u = 0; u < NTHREADS; u++)
			for (int j = 0; u != t && j < th[u].nh; j++) {
				const struct op *x = &th[u].hist[j];
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

static void print_history(long round, const struct check *c)
{
	fprintf(stderr, "round %ld: no linearization explains this history:\n", round);
	for (int t = 0; t < NTHREADS; t++)
		for (int i = 0; i < th[t].nh; i++) {
			const struct op *o = &th[t].hist[i];
			fprintf(stderr, "  thread %d [%3" PRIu64 ", %3" PRIu64 "] %-11s k%d", t,
				o->inv, o->res, kind_name[o->kind], o->key);
			if (o->kind == OP_ADD || o->kind == OP_ADD_AFTER)
				fprintf(stderr, " prio %d", o->prio);
			if (o->kind == OP_ADD_AFTER)
				fprintf(stderr, " after %lld ms", (long long)(o->delay / MS));
			if (o->kind == OP_FINISH_ADD)
				fprintf(stderr, " %s %lld ms", outcome_name[o->outcome],
					(long long)(o->delay / MS));
			fprintf(stderr, " -> %d", o->rc);
			if (o->got_key >= 0)
				fprintf(stderr, " k%d prio %d", o->got_key, o->got_prio);
			fputc('\n', stderr);
		}
	fprintf(stderr, "  drained after the step:");
	for (int k = 0; k < NKEYS; k++)
		for (int p = 0; p < 2; p++)
			if (c->observed[k][p] != 0)
				fprintf(stderr, " k%d prio %d x%d", k, p, c->observed[k][p]);
	fputc('\n', stderr);
}

static void plan_round(uint64_t *seed)
{
	for (int t = 0; t < NTHREADS; t++) {
		th[t].nplan = NOPS;
		for (int i = 0; i < NOPS; i++) {
			uint64_t r = splitmix(seed);
			struct op *o = &th[t].plan[i];
			memset(o, 0, sizeof *o);
			unsigned w = (unsigned)(r % 100);
			o->kind = w < 22 ? OP_ADD : w < 42 ? OP_ADD_AFTER : w < 56 ? OP_TRY_GET
				: w < 64 ? OP_GET_TIMEOUT : w < 72 ? OP_DONE : w < 80 ? OP_CANCEL
				: w < 88 ? OP_GET_BATCH : OP_FINISH;
			o->key = (int)((r >> 8) % NKEYS);
			o->prio = (int)((r >> 16) % 2);
			o->delay = (int64_t)((r >> 24) % 2 + 1) * MS;
			o->outcome = (int)((r >> 32) % 4);
			if (o->kind == OP_FINISH)
				o->delay = (int64_t)((r >> 40) % 2) * MS;
		}
	}
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* After a round: step past every delay, drain to the trailer.  false when
 * the trailer does not come (what came is in c->observed). */
static bool drain_round(struct check *c, long round)
{
	unsigned char tk = TRAILER;
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	o.after_ns = 10 * MS; /* after every wait of the round: fires last */
	o.priority = 2;       /* above every key of the round */
	if (kwq_add_with(q, &tk, 1, &o) != 0) {
		fprintf(stderr, "round %ld: the trailer's add failed\n", round);
		return false;
	}
	kwq_clock_fake_step(clk, 3600LL * 1000000000);
	memset(c->observed, 0, sizeof c->observed);
	int64_t give_up = mono_ns() + 5000000000LL;
	/* Until the trailer, gets run beside the timer's fires (and on the
	 * sharded design may pass over one in flight): the order of what they
	 * hand out means nothing, the multiset does.  Once the trailer is out,
	 * every fire has been queued: take the rest without blocking. */
	bool trailer = false;
	for (;;) {
		kwq_item_t *it = NULL;
		int rc = trailer ? kwq_try_get(q, &it) : kwq_get_timeout(q, &it, 10 * MS);
		if (rc == -EAGAIN && trailer)
			break;
		if (rc == 0) {
			int k = key_of(it);
			int p = kwq_item_priority(it);
			kwq_done(q, it);
			if (k == TRAILER && !trailer) {
				trailer = true;
				continue;
			}
			if (k >= 0 && k < NKEYS && (p == 0 || p == 1))
				c->observed[k][p]++;
			else
				fprintf(stderr, "round %ld: drained key %d prio %d\n", round, k, p);
			continue;
		}
		if (mono_ns() > give_up) {
			fprintf(stderr, "round %ld: the trailer never came (len %zu)\n", round,
				kwq_len(q));
			return false;
		}
	}
	if (kwq_len(q) != 0) {
		fprintf(stderr, "round %ld: %zu queued after the drain\n", round, kwq_len(q));
		return false;
	}
	return true;
}

int main(int argc, char **argv)
{
	enum kwq_impl impl;
	double seconds = 5;
	uint64_t seed = (uint64_t)time(NULL);
	if (!stress_row_args(argc, argv, &impl, &seconds)) {
		fprintf(stderr, "usage: %s mutex|sharded [--seconds S] [--seed N]\n", argv[0]);
		return 2;
	}
	for (int i = 2; i + 1 < argc; i++)
		if (strcmp(argv[i], "--seed") == 0)
			seed = strtoull(argv[i + 1], NULL, 0);
	printf("%s: seed %" PRIu64 "\n", argv[1], seed);
	passes_over = impl == KWQ_IMPL_SHARDED;

	clk = kwq_clock_fake_new(1);
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = impl;
	cfg.clock = clk;
	cfg.limiter = kwq_limiter_exponential(MS, MS); /* every retry: 1 ms */
	if (clk == NULL || cfg.limiter == NULL || (q = kwq_new(&cfg)) == NULL) {
		perror("kwq_new");
		return 1;
	}
	pthread_barrier_init(&start_bar, NULL, NTHREADS + 1);
	pthread_barrier_init(&end_bar, NULL, NTHREADS + 1);
	for (int t = 0; t < NTHREADS; t++) {
		pthread_create(&th[t].t, NULL, thread_main, &th[t]);
	}

	int64_t end = mono_ns() + (int64_t)(seconds * 1e9);
	long rounds = 0, overlapped = 0;
	unsigned long nodes = 0;
	int failed = 0;
	while (!failed && mono_ns() < end) {
		plan_round(&seed);
		struct check c = { .now = kwq_clock_now(clk) };
		atomic_store(&stamp, 0);
		pthread_barrier_wait(&start_bar);
		pthread_barrier_wait(&end_bar);
		bool drained = drain_round(&c, rounds);

		/* Did calls of different threads overlap?  (A round where they
		 * ran one after another checks little.) */
		bool ov = false;
		for (int t = 0; t < NTHREADS && !ov; t++)
			for (int u = t + 1; u < NTHREADS && !ov; u++)
				for (int i = 0; i < th[t].nh && !ov; i++)
					for (int j = 0; j < th[u].nh && !ov; j++)
						ov = th[t].hist[i].inv < th[u].hist[j].res &&
						     th[u].hist[j].inv < th[t].hist[i].res;
		overlapped += ov;

		struct model m;
		memset(&m, 0, sizeof m);
		int next[NTHREADS] = { 0 };
		int left = 0;
		for (int t = 0; t < NTHREADS; t++)
			left += th[t].nh;
		if (!drained || !dfs(&m, next, left, &c)) {
			print_history(rounds, &c);
			failed = 1;
		}
		nodes += c.nodes;
		rounds++;
	}

	atomic_store(&stopping, true);
	pthread_barrier_wait(&start_bar);
	for (int t = 0; t < NTHREADS; t++)
		pthread_join(th[t].t, NULL);
	kwq_free(q);
	kwq_clock_free(clk);
	printf("%s: %ld rounds (%ld with calls of two threads overlapping), %lu "
	       "model states searched, %s\n", argv[1], rounds, overlapped, nodes,
	       failed ? "FAILED" : "ok");
	return failed;
}
