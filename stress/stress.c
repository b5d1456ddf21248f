/*
 * stress.c - invariant-checking stress for any implementation.
 *
 *   stress ROW [--seconds S] [--producers P] [--workers W] [--keys K]
 *
 * Runs rounds until S seconds have passed.  Each round makes a fresh queue,
 * runs P producers and W workers for a slice of time, then ends the round
 * with a mix of drains (one or several concurrent kwq_shutdown_drain calls,
 * sometimes cut short by a kwq_shutdown) and checks the oracles:
 *
 *   exclusion      a per-key owner word, CAS'd from 0 to the worker's id
 *                  right after get and back before done: any overlap of two
 *                  workers on one key fails the CAS;
 *   no lost update producers (and workers re-adding the key they hold) bump
 *                  a per-key version before each add; each processing
 *                  records the version it saw; after the round every key's
 *                  last processing must have seen at least the version of
 *                  its last accepted add;
 *   conservation   a key with an accepted add is processed at least once and
 *                  at most once per accepted add; nothing is left queued;
 *                  adds after shutdown are refused, never lost silently.
 *
 * With --prio, adds carry random priorities 0..3 (so queued items are
 * raised, which leaves stale copies in the sharded design's lanes), and
 * each round adds a priority check: producers add concurrently to a fresh
 * queue with no workers, then one thread drains it:
 *
 *   priority order handed-out priorities never increase, and each key is
 *                  handed out once, with the highest priority asked for it;
 *   exact length   kwq_len equals the number of distinct keys added.
 *
 * Exit status 0 when every oracle held, 1 otherwise.  Under ThreadSanitizer
 * the run also checks that the queue's synchronization is visible.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <kwq.h>

#include "row.h"

struct opts {
	enum kwq_impl impl;
	const char *row;
	double seconds;
	int producers;
	int workers;
	int keys;
	bool prio;
};

struct key_state {
	atomic_int owner;       /* 0 free, else worker id + 1 */
	atomic_long version;    /* bumped before every add */
	atomic_long seen;       /* version the last processing saw */
	atomic_long accepted;   /* adds that returned 0 */
	atomic_long last_acc;   /* highest version whose add was accepted */
	atomic_long processed;  /* processings */
};

struct round {
	kwq_t *q;
	const struct opts *o;
	struct key_state *ks;
	atomic_bool stop_producers;
	atomic_long violations;
};

struct thread_arg {
	struct round *r;
	int id;
	unsigned long rng;
};

static unsigned long rng_next(unsigned long *s)
{
	/* xorshift64* */
	unsigned long x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DUL;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void violation(struct round *r, const char *what, int key)
{
	if (atomic_fetch_add(&r->violations, 1) < 10)
		fprintf(stderr, "VIOLATION (%s): %s, key %d\n", r->o->row, what, key);
}

static void add_key(struct round *r, int k)
{
	struct key_state *s = &r->ks[k];

	long v = atomic_fetch_add_explicit(&s->version, 1, memory_order_relaxed) + 1;
	int rc;
	if (r->o->prio) {
		struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
		o.priority = (int)((unsigned)v * 2654435761u >> 30); /* 0..3 */
		rc = kwq_add_with(r->q, &k, sizeof k, &o);
	} else {
		rc = kwq_add(r->q, &k, sizeof k);
	}
	if (rc == 0) {
		atomic_fetch_add_explicit(&s->accepted, 1, memory_order_relaxed);
		long cur = atomic_load_explicit(&s->last_acc, memory_order_relaxed);
		while (cur < v && !atomic_compare_exchange_weak_explicit(&s->last_acc,
				&cur, v, memory_order_relaxed, memory_order_relaxed))
			;
	} else if (rc != -ESHUTDOWN)
		violation(r, "add failed", k);
}

static void *producer(void *arg)
{
	struct thread_arg *a = arg;
	struct round *r = a->r;

	while (!atomic_load_explicit(&r->stop_producers, memory_order_relaxed)) {
		unsigned long x = rng_next(&a->rng);
		/* skewed: half the adds go to 1/16 of the keys (hot keys) */
		int k = (x & 1) ? (int)((x >> 8) % (unsigned long)r->o->keys)
				: (int)((x >> 8) % (unsigned long)(r->o->keys / 16 + 1));
		add_key(r, k);
		if ((x & 0xff) == 0)
			sched_yield();
	}
	return NULL;
}

static void *worker(void *arg)
{
	struct thread_arg *a = arg;
	struct round *r = a->r;
	kwq_item_t *it;
	int rc;

	for (;;) {
		unsigned long x = rng_next(&a->rng);
		switch (x & 3) {
		case 0:
			rc = kwq_try_get(r->q, &it);
			if (rc == -EAGAIN) {
				sched_yield();
				continue;
			}
			break;
		case 1:
			rc = kwq_get_timeout(r->q, &it, 1000000);
			if (rc == -ETIMEDOUT)
				continue;
			break;
		default:
			rc = kwq_get(r->q, &it);
			break;
		}
		if (rc == -ESHUTDOWN)
			return NULL;
		if (rc != 0) {
			violation(r, "get failed", -1);
			return NULL;
		}

		size_t len;
		int k;
		const void *kp = kwq_item_key(it, &len);
		if (len != sizeof k) {
			violation(r, "bad key length", -1);
			return NULL;
		}
		memcpy(&k, kp, sizeof k);
		struct key_state *s = &r->ks[k];
		int expect = 0;
		if (!atomic_compare_exchange_strong(&s->owner, &expect, a->id + 1))
			violation(r, "two workers hold one key", k);
		long v = atomic_load_explicit(&s->version, memory_order_relaxed);
		atomic_store_explicit(&s->seen, v, memory_order_relaxed);
		atomic_fetch_add_explicit(&s->processed, 1, memory_order_relaxed);
		if ((x & 0x70) == 0)
			sched_yield(); /* hold it a while: adds turn it dirty */
		if ((x & 0x780) == 0)
			add_key(r, k); /* re-add while held */
		expect = a->id + 1;
		if (!atomic_compare_exchange_strong(&s->owner, &expect, 0))
			violation(r, "owner changed while held", k);
		if (kwq_done(r->q, it) != 0)
			violation(r, "done failed", k);
	}
}

struct drain_arg {
	kwq_t *q;
};

static void *drainer(void *arg)
{
	kwq_shutdown_drain(((struct drain_arg *)arg)->q);
	return NULL;
}

static long run_round(const struct opts *o, struct key_state *ks, double slice,
		      unsigned long seed)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = o->impl;
	struct round r = { .o = o, .ks = ks };
	r.q = kwq_new(&cfg);
	if (r.q == NULL) {
		fprintf(stderr, "kwq_new(%s): %s\n", o->row, kwq_strerror(errno));
		exit(2);
	}
	memset(ks, 0, sizeof *ks * (size_t)o->keys);
	atomic_init(&r.stop_producers, false);
	atomic_init(&r.violations, 0);

	int n = o->producers + o->workers;
	pthread_t *t = calloc((size_t)n, sizeof *t);
	struct thread_arg *ta = calloc((size_t)n, sizeof *ta);
	for (int i = 0; i < n; i++) {
		ta[i] = (struct thread_arg){ &r, i, seed * 1000003UL + (unsigned long)i * 7919UL + 1 };
		pthread_create(&t[i], NULL, i < o->workers ? worker : producer, &ta[i]);
	}

	struct timespec ts = { (time_t)slice, (long)((slice - (double)(time_t)slice) * 1e9) };
	nanosleep(&ts, NULL);

	/* End the round: 1-3 concurrent drains; sometimes a shutdown cuts
	 * them short while producers are still adding. */
	unsigned long mode = seed % 4;
	int ndrain = 1 + (int)(seed % 3);
	pthread_t dt[3];
	struct drain_arg da = { r.q };
	if (mode == 0) {
		/* drain while producers still run: their adds get -ESHUTDOWN */
		for (int i = 0; i < ndrain; i++)
			pthread_create(&dt[i], NULL, drainer, &da);
		usleep(1000);
		atomic_store(&r.stop_producers, true);
	} else {
		atomic_store(&r.stop_producers, true);
		for (int i = o->workers; i < n; i++)
			pthread_join(t[i], NULL);
		for (int i = 0; i < ndrain; i++)
			pthread_create(&dt[i], NULL, drainer, &da);
		if (mode == 1)
			kwq_shutdown(r.q);
	}
	for (int i = 0; i < ndrain; i++)
		pthread_join(dt[i], NULL);
	if (mode == 0)
		for (int i = o->workers; i < n; i++)
			pthread_join(t[i], NULL);
	for (int i = 0; i < o->workers; i++)
		pthread_join(t[i], NULL);

	/* Workers only exit on -ESHUTDOWN with nothing queued, and re-get
	 * after every done, so nothing may be left whatever the mode. */
	if (kwq_len(r.q) != 0)
		violation(&r, "items left queued after all workers exited", -1);
	if (kwq_add(r.q, "x", 1) != -ESHUTDOWN)
		violation(&r, "add accepted after shutdown", -1);
	long total = 0;
	for (int k = 0; k < o->keys; k++) {
		struct key_state *s = &ks[k];
		long acc = atomic_load(&s->accepted), proc = atomic_load(&s->processed);
		total += proc;
		if (acc > 0 && proc == 0)
			violation(&r, "accepted add never processed", k);
		if (proc > acc)
			violation(&r, "processed more often than added", k);
		/* adds refused by shutdown bump the version too, so compare
		 * with the last version whose add was accepted */
		if (atomic_load(&s->seen) < atomic_load(&s->last_acc))
			violation(&r, "lost update: last processing saw an old version", k);
	}
	kwq_free(r.q);
	free(t);
	free(ta);
	long v = atomic_load(&r.violations);
	return v ? -v : total;
}

struct order_arg {
	kwq_t *q;
	int keys, adds;
	unsigned long rng;
	atomic_int *max_prio; /* per key: highest priority asked, -1 none */
	atomic_long *violations;
};

static void *order_producer(void *arg)
{
	struct order_arg *a = arg;
	for (int i = 0; i < a->adds; i++) {
		unsigned long x = rng_next(&a->rng);
		int k = (int)((x >> 8) % (unsigned long)a->keys);
		int prio = (int)(x & 3);
		struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
		o.priority = prio;
		/* record before the add: the drain starts after every join */
		int cur = atomic_load(&a->max_prio[k]);
		while (cur < prio && !atomic_compare_exchange_weak(&a->max_prio[k], &cur, prio))
			;
		if (kwq_add_with(a->q, &k, sizeof k, &o) != 0)
			atomic_fetch_add(a->violations, 1);
	}
	return NULL;
}

/* The priority-order round: see the header comment. */
static long order_round(const struct opts *o, unsigned long seed)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = o->impl;
	kwq_t *q = kwq_new(&cfg);
	atomic_int *max_prio = malloc(sizeof *max_prio * (size_t)o->keys);
	bool *seen = calloc((size_t)o->keys, sizeof *seen);
	atomic_long violations;
	atomic_init(&violations, 0);
	for (int k = 0; k < o->keys; k++)
		atomic_init(&max_prio[k], -1);

	pthread_t t[16];
	struct order_arg a[16];
	int np = o->producers < 16 ? o->producers : 16;
	for (int i = 0; i < np; i++) {
		a[i] = (struct order_arg){ q, o->keys, 2 * o->keys, seed * 7919UL + (unsigned long)i + 1,
					   max_prio, &violations };
		pthread_create(&t[i], NULL, order_producer, &a[i]);
	}
	for (int i = 0; i < np; i++)
		pthread_join(t[i], NULL);

	long distinct = 0;
	for (int k = 0; k < o->keys; k++)
		distinct += atomic_load(&max_prio[k]) >= 0;
	if ((long)kwq_len(q) != distinct) {
		fprintf(stderr, "VIOLATION (%s): kwq_len %zu, %ld distinct keys queued\n",
			o->row, kwq_len(q), distinct);
		atomic_fetch_add(&violations, 1);
	}
	int last = 4;
	kwq_item_t *it;
	long got = 0;
	while (kwq_try_get(q, &it) == 0) {
		int k;
		memcpy(&k, kwq_item_key(it, NULL), sizeof k);
		int p = kwq_item_priority(it);
		if (p > last || seen[k] || p != atomic_load(&max_prio[k])) {
			if (atomic_fetch_add(&violations, 1) < 5)
				fprintf(stderr, "VIOLATION (%s): key %d got with priority %d "
					"(asked up to %d) after %d%s\n", o->row, k, p,
					atomic_load(&max_prio[k]), last,
					seen[k] ? ", handed out twice" : "");
		}
		seen[k] = true;
		last = p;
		got++;
		kwq_done(q, it);
	}
	if (got != distinct) {
		fprintf(stderr, "VIOLATION (%s): got %ld of %ld keys\n", o->row, got, distinct);
		atomic_fetch_add(&violations, 1);
	}
	kwq_free(q);
	free(max_prio);
	free(seen);
	long v = atomic_load(&violations);
	return v ? -v : got;
}

int main(int argc, char **argv)
{
	struct opts o = { .seconds = 5, .producers = 4, .workers = 4, .keys = 1024 };

	if (argc < 2) {
		fprintf(stderr, "usage: %s mutex|sharded [--seconds S] [--producers P] "
				"[--workers W] [--keys K] [--prio]\n", argv[0]);
		return 2;
	}
	o.row = argv[1];
	if (!stress_row(o.row, &o.impl))
		return 2;
	for (int i = 2; i < argc; i += 2) {
		if (strcmp(argv[i], "--prio") == 0) {
			o.prio = true;
			i--;
			continue;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "option %s needs a value\n", argv[i]);
			return 2;
		}
		if (strcmp(argv[i], "--seconds") == 0)
			o.seconds = atof(argv[i + 1]);
		else if (strcmp(argv[i], "--producers") == 0)
			o.producers = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--workers") == 0)
			o.workers = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--keys") == 0)
			o.keys = atoi(argv[i + 1]);
		else {
			fprintf(stderr, "unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (o.producers < 1 || o.workers < 1 || o.keys < 1 || o.seconds <= 0) {
		fprintf(stderr, "bad options\n");
		return 2;
	}

	struct key_state *ks = calloc((size_t)o.keys, sizeof *ks);
	double end = now_s() + o.seconds, slice = o.seconds / 10 < 0.5 ? o.seconds / 10 : 0.5;
	long rounds = 0, processed = 0, failed = 0;
	while (now_s() < end) {
		long rc = run_round(&o, ks, slice, (unsigned long)rounds + 1);
		if (rc < 0)
			failed -= rc;
		else
			processed += rc;
		if (o.prio) {
			rc = order_round(&o, (unsigned long)rounds + 1);
			if (rc < 0)
				failed -= rc;
		}
		rounds++;
	}
	free(ks);
	printf("%s: %ld rounds, %ld processings, %ld violations\n", o.row, rounds,
	       processed, failed);
	return failed ? 1 : 0;
}
