/*
 * cancel_stress.c - kwq_cancel racing adds, delayed adds and gets; batch
 * gets mixed with single ones.
 *
 *   cancel_stress ROW [--seconds S] [--batch]
 *
 * Two producers add keys of a small key space (kwq_add, kwq_add_after of
 * 20-200 us, and with --batch kwq_add_many of up to 8 keys); two workers
 * take them (kwq_get, kwq_get_batch of up to 8 with a timeout, released
 * by kwq_done or kwq_done_many); without --batch a canceller thread
 * cancels keys all along.  Every call is stamped with a ticket from one
 * global counter just before it starts and just after it returns, so
 * that "A returned before B started" reads as A.end < B.start, and each
 * thread logs its calls.
 *
 * Oracles, checked from the logs once the queue is drained:
 *
 *   exclusion        a key is never held twice (a per-key flag taken by
 *                    exchange when a handle is handed out, checked online);
 *   nothing twice    every hand-out G of k is paid for by an add A of k
 *                    (immediate or delayed) that may linearize after
 *                    whatever took k's earlier adds away: A.end > X and
 *                    A.start < G.end, X the start of the previous hand-out
 *                    of k, or of the last cancel of k that returned before
 *                    G started, whichever is later.  A cancel that began
 *                    after a delayed add returned and found it waiting
 *                    leaves nothing that may fire (no wait left behind);
 *                    a batch that hands out a key twice, or a key already
 *                    got, fails here or on exclusion;
 *   no lost update   the last add of k that began after every cancel of k
 *                    returned (nothing may cancel it) is followed by a
 *                    hand-out of k that returned after it began.
 *
 * The producers stop first and the drain waits until the queue's delayed
 * gauge reads 0, so that every wait has fired before the shutdown (which
 * drops waits): on a loaded machine the timer thread may run late.  Exit 0 when every
 * oracle held, 1 otherwise; the counts are printed.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kwq.h>

#include "row.h"

#define NKEYS 48
#define LOG_MAX (1u << 21) /* calls a thread logs: the run ends when one is full */
#define BATCH_MAX 8
#define US 1000LL
#define SEC 1000000000LL

enum ev_type { EV_ADD, EV_GET, EV_CANCEL };

struct ev {
	uint32_t start, end; /* tickets: a run makes far fewer than 2^32 calls */
	uint16_t key;
	uint8_t type;
};

struct tlog {
	struct ev *v;
	size_t n;
};

static kwq_t *q;
static _Atomic uint64_t ticket;
static _Atomic bool producers_stop, cancel_stop, log_filled;
static _Atomic uint32_t holder[NKEYS];
static _Atomic unsigned long exclusion_violations;
static bool batch_mode;

static uint32_t tick(void)
{
	return (uint32_t)atomic_fetch_add(&ticket, 1);
}

static bool log_full(struct tlog *l, size_t more)
{
	if (l->n + more <= LOG_MAX)
		return false;
	atomic_store(&log_filled, true);
	return true;
}

static void log_ev(struct tlog *l, enum ev_type t, uint32_t key, uint32_t s, uint32_t e)
{
	l->v[l->n++] = (struct ev){ .start = s, .end = e, .key = (uint16_t)key,
				    .type = (uint8_t)t };
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *producer(void *arg)
{
	struct tlog *l = arg;
	uint64_t seed = (uintptr_t)arg | 1;

	while (!atomic_load(&producers_stop) && !log_full(l, BATCH_MAX)) {
		uint64_t r = rnd(&seed);
		uint32_t k = (uint32_t)(r % NKEYS);
		unsigned what = (unsigned)(r >> 32) % 8;
		if (batch_mode && what < 3) {
			struct kwq_key_ref refs[BATCH_MAX];
			uint32_t keys[BATCH_MAX];
			size_t n = 1 + (r >> 40) % BATCH_MAX;
			for (size_t i = 0; i < n; i++) {
				keys[i] = (uint32_t)((k + i * 7) % NKEYS);
				refs[i] = (struct kwq_key_ref){ &keys[i], sizeof keys[i] };
			}
			uint32_t s = tick();
			int rc = kwq_add_many(q, refs, n, NULL);
			uint32_t e = tick();
			for (int i = 0; i < rc; i++)
				log_ev(l, EV_ADD, keys[i], s, e);
		} else if (what < 5) {
			uint32_t s = tick();
			int rc = kwq_add(q, &k, sizeof k);
			uint32_t e = tick();
			if (rc == 0)
				log_ev(l, EV_ADD, k, s, e);
		} else {
			int64_t d = (20 + (int64_t)((r >> 44) % 180)) * US;
			uint32_t s = tick();
			int rc = kwq_add_after(q, &k, sizeof k, d);
			uint32_t e = tick();
			if (rc == 0)
				log_ev(l, EV_ADD, k, s, e);
		}
		if ((r & 63) == 0)
			sched_yield();
	}
	return NULL;
}

static void *canceller(void *arg)
{
	struct tlog *l = arg;
	uint64_t seed = 0x9e3779b97f4a7c15ull;

	while (!atomic_load(&cancel_stop) && !log_full(l, 1)) {
		uint32_t k = (uint32_t)(rnd(&seed) % NKEYS);
		uint32_t s = tick();
		int rc = kwq_cancel(q, &k, sizeof k);
		uint32_t e = tick();
		if (rc < 0) {
			fprintf(stderr, "cancel: %s\n", kwq_strerror(rc));
			abort();
		}
		log_ev(l, EV_CANCEL, k, s, e);
		if ((seed & 7) == 0)
			sched_yield();
	}
	return NULL;
}

static uint32_t key_of(kwq_item_t *it)
{
	uint32_t k;
	memcpy(&k, kwq_item_key(it, NULL), sizeof k);
	return k;
}

static void hold(uint32_t k)
{
	if (atomic_exchange(&holder[k], 1) != 0)
		atomic_fetch_add(&exclusion_violations, 1);
}

static void release(uint32_t k)
{
	atomic_store(&holder[k], 0);
}

static void *worker(void *arg)
{
	struct tlog *l = arg;
	uint64_t seed = (uintptr_t)arg * 2654435761u | 1;
	kwq_item_t *items[BATCH_MAX];

	for (;;) {
		uint64_t r = rnd(&seed);
		bool batch = batch_mode ? (r & 3) != 0 : (r & 3) == 0;
		size_t max = batch ? 1 + (r >> 8) % BATCH_MAX : 1;
		uint32_t s = tick();
		int n = batch ? kwq_get_batch(q, items, max, 50 * 1000 * US)
			      : (kwq_get(q, &items[0]) == 0 ? 1 : -ESHUTDOWN);
		uint32_t e = tick();
		if (n == -ESHUTDOWN)
			break;
		if (n == -ETIMEDOUT)
			continue;
		if (n < 0) {
			fprintf(stderr, "get: %s\n", kwq_strerror(n));
			abort();
		}
		for (int i = 0; i < n; i++) {
			uint32_t k = key_of(items[i]);
			hold(k);
			if (!log_full(l, 1))
				log_ev(l, EV_GET, k, s, e);
		}
		if ((r >> 20 & 3) == 0)
			sched_yield();
		for (int i = 0; i < n; i++)
			release(key_of(items[i]));
		if (n > 1 && (r >> 24 & 1)) {
			kwq_done_many(q, items, (size_t)n);
		} else {
			for (int i = 0; i < n; i++)
				kwq_done(q, items[i]);
		}
	}
	return NULL;
}

/* The events of one key by kind, each in ticket order of its start. */
static int by_start(const void *a, const void *b)
{
	const struct ev *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

static int by_end(const void *a, const void *b)
{
	const struct ev *x = a, *y = b;
	return x->end < y->end ? -1 : x->end > y->end;
}

struct evs {
	struct ev *v;
	size_t n, cap;
};

struct key_events {
	struct evs add, get, cancel;
};

static void push(struct evs *ke, const struct ev *e)
{
	if (ke->n == ke->cap) {
		ke->cap = ke->cap ? ke->cap * 2 : 1024;
		ke->v = realloc(ke->v, ke->cap * sizeof *ke->v);
		if (ke->v == NULL)
			abort();
	}
	ke->v[ke->n++] = *e;
}

/*
 * The oracles of the file comment over one key's events; failures counted.
 * Cancels of a key come from one thread, so in start order they are in
 * end order too.  Hand-outs of a key whose calls overlap (a get that
 * blocked, another that came and went meanwhile) cannot be ordered from
 * the tickets: the previous hand-out of G is the latest one that returned
 * before G started (so it took the key first), the largest start among
 * the hand-outs in end order before G's start.  "Some add A with
 * A.end > x and A.start < G.end" is a prefix maximum: adds in start
 * order, the largest end among those that started before G ended.
 */
static void sort_evs(struct evs *e, int (*cmp)(const void *, const void *))
{
	if (e->n > 1) /* v is NULL when there are none */
		qsort(e->v, e->n, sizeof *e->v, cmp);
}

static unsigned long check_key(uint32_t k, struct key_events *ke)
{
	unsigned long bad = 0;
	sort_evs(&ke->add, by_start);
	sort_evs(&ke->get, by_start);
	sort_evs(&ke->cancel, by_start);

	uint64_t *maxend = malloc((ke->add.n + 1) * sizeof *maxend);
	if (maxend == NULL)
		abort();
	maxend[0] = 0;
	for (size_t i = 0; i < ke->add.n; i++)
		maxend[i + 1] = ke->add.v[i].end > maxend[i] ? ke->add.v[i].end : maxend[i];

	struct ev *ends = malloc((ke->get.n + 1) * sizeof *ends);
	if (ends == NULL)
		abort();
	if (ke->get.n > 0)
		memcpy(ends, ke->get.v, ke->get.n * sizeof *ends);
	struct evs by_ends = { .v = ends, .n = ke->get.n };
	sort_evs(&by_ends, by_end);

	size_t c = 0; /* cancels that returned before the current get started */
	size_t p = 0; /* hand-outs that returned before it started */
	uint64_t prev_get_start = 0, last_get_end = 0;
	for (size_t i = 0; i < ke->get.n; i++) {
		const struct ev *g = &ke->get.v[i];
		while (c < ke->cancel.n && ke->cancel.v[c].end < g->start)
			c++;
		for (; p < ke->get.n && ends[p].end < g->start; p++)
			if (ends[p].start > prev_get_start)
				prev_get_start = ends[p].start;
		uint64_t x = prev_get_start;
		if (c > 0 && ke->cancel.v[c - 1].start > x)
			x = ke->cancel.v[c - 1].start;
		/* adds that started before g ended: a prefix */
		size_t lo = 0, hi = ke->add.n;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (ke->add.v[mid].start < g->end)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (maxend[lo] <= x) {
			if (bad < 3)
				fprintf(stderr, "key %u: hand-out [%llu, %llu] paid by no add "
					"that ended after %llu\n", k, (unsigned long long)g->start,
					(unsigned long long)g->end, (unsigned long long)x);
			bad++;
		}
		if (g->end > last_get_end)
			last_get_end = g->end;
	}
	free(maxend);
	free(ends);

	/* no lost update: the last add, if no cancel came after it began */
	if (ke->add.n > 0) {
		const struct ev *a = &ke->add.v[ke->add.n - 1];
		uint64_t last_cancel_end = ke->cancel.n ? ke->cancel.v[ke->cancel.n - 1].end : 0;
		if (a->start > last_cancel_end && last_get_end <= a->start) {
			fprintf(stderr, "key %u: add [%llu, %llu] never handed out (last "
				"hand-out ended at %llu)\n", k, (unsigned long long)a->start,
				(unsigned long long)a->end, (unsigned long long)last_get_end);
			bad++;
		}
	}
	return bad;
}

int main(int argc, char **argv)
{
	enum kwq_impl impl;
	double seconds = 5;

	if (!stress_row_args(argc, argv, &impl, &seconds)) {
		fprintf(stderr, "usage: cancel_stress ROW [--seconds S] [--batch]\n");
		return 2;
	}
	for (int i = 2; i < argc; i++)
		if (strcmp(argv[i], "--batch") == 0)
			batch_mode = true;

	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = impl;
	cfg.name = "cancel_stress"; /* its delayed gauge tells when every wait fired */
	q = kwq_new(&cfg);
	if (q == NULL) {
		perror("kwq_new");
		return 1;
	}
	enum { NPROD = 2, NWORK = 2, NT = NPROD + NWORK + 1 };
	struct tlog logs[NT];
	pthread_t t[NT];
	for (int i = 0; i < NT; i++) {
		logs[i].v = malloc(LOG_MAX * sizeof *logs[i].v);
		logs[i].n = 0;
		if (logs[i].v == NULL)
			abort();
	}
	for (int i = 0; i < NWORK; i++)
		pthread_create(&t[i], NULL, worker, &logs[i]);
	for (int i = 0; i < NPROD; i++)
		pthread_create(&t[NWORK + i], NULL, producer, &logs[NWORK + i]);
	if (!batch_mode)
		pthread_create(&t[NT - 1], NULL, canceller, &logs[NT - 1]);

	const int64_t end = stress_now_ns() + (int64_t)(seconds * SEC);
	while (stress_now_ns() < end && !atomic_load(&log_filled))
		stress_sleep_ns(5000 * US);
	/* The canceller stops first: the producers' last adds are then ones
	 * no cancel may take, which the lost-update oracle checks. */
	atomic_store(&cancel_stop, true);
	if (!batch_mode)
		pthread_join(t[NT - 1], NULL);
	stress_sleep_ns(2000 * US);
	atomic_store(&producers_stop, true);
	for (int i = 0; i < NPROD; i++)
		pthread_join(t[NWORK + i], NULL);
	/* Wait until every wait has fired (shutdown would drop it): the
	 * delayed gauge at 0, however long a loaded machine keeps the timer
	 * thread from running; then drain. */
	const int64_t give_up = stress_now_ns() + 30 * SEC;
	struct kwq_metrics m = { .size = sizeof m };
	while (kwq_metrics_read(q, &m) == 0 && m.delayed != 0 && stress_now_ns() < give_up)
		stress_sleep_ns(1000 * US);
	if (m.delayed != 0)
		fprintf(stderr, "%lld waits still pending after 30 s\n", (long long)m.delayed);
	kwq_shutdown_drain(q);
	for (int i = 0; i < NWORK; i++)
		pthread_join(t[i], NULL);

	static struct key_events ke[NKEYS];
	unsigned long adds = 0, cancels = 0, gets = 0;
	for (int i = 0; i < NT; i++) {
		for (size_t j = 0; j < logs[i].n; j++) {
			const struct ev *e = &logs[i].v[j];
			struct key_events *k = &ke[e->key];
			push(e->type == EV_ADD ? &k->add : e->type == EV_GET ? &k->get : &k->cancel, e);
		}
		free(logs[i].v);
	}
	unsigned long bad = 0;
	for (uint32_t k = 0; k < NKEYS; k++) {
		adds += ke[k].add.n;
		gets += ke[k].get.n;
		cancels += ke[k].cancel.n;
		bad += check_key(k, &ke[k]);
		free(ke[k].add.v);
		free(ke[k].get.v);
		free(ke[k].cancel.v);
	}
	unsigned long excl = atomic_load(&exclusion_violations);
	size_t left = kwq_len(q);
	kwq_free(q);
	printf("cancel_stress %s%s: %lu adds, %lu cancels, %lu hand-outs; %lu unpaid or "
	       "lost, %lu exclusion violations, len %zu at the end: %s\n",
	       argv[1], batch_mode ? " --batch" : "", adds, cancels, gets, bad, excl, left,
	       bad == 0 && excl == 0 && left == 0 ? "ok" : "FAILED");
	return bad == 0 && excl == 0 && left == 0 ? 0 : 1;
}
