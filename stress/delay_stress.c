/*
 * delay_stress.c - delayed adds under concurrency, on CLOCK_MONOTONIC.
 *
 *   delay_stress ROW [--seconds S] [--producers P] [--workers W]
 *
 * Rounds until S seconds have passed, each on a fresh queue: P producers
 * make delayed adds (kwq_add_after, and kwq_add_with with after_ns and a
 * priority) with delays of 0..5 ms, W workers get and done.  Rounds cycle
 * through four kinds:
 *
 *   unique    every add has a key of its own (no coalescing).  The producer
 *             reads the clock (t_call) and records t_call + d and the
 *             priority before the call; the worker that gets the key reads
 *             the clock after the get:
 *               never early    now >= t_call + d (the queue reads its
 *                              clock after t_call, and fires at or after
 *                              its own ready time);
 *               priority       kwq_item_priority is the one asked;
 *               exactly once   no key is got twice; once the last ready
 *                              time has passed, every accepted add is got
 *                              (within 5 s), kwq_len is 0, and a drain with
 *                              the workers running returns.
 *   shared    keys of a generation (it changes every 2 ms) shared by all
 *             producers, so adds of one key race and merge (earliest ready
 *             time wins); one add in 8 waits 60 s.  Per key, before each
 *             call, the producer lowers the key's min_ready to t_call + d:
 *               never early    a get of the key returns no earlier than
 *                              the smallest ready time of the adds made
 *                              before it (the add that triggered the
 *                              processing is among them: it happens-before
 *                              the get; adds not yet made only make the
 *                              bound weaker);
 *               earliest wins  every key with a short add is got (within
 *                              5 s of the last short ready time), though
 *                              its other adds wait 60 s: a later ready time
 *                              never pushes an earlier one back;
 *               at most once   a key is processed at most once per add;
 *               exclusion      a per-key owner word, set after the get and
 *                              cleared before the done: never two holders.
 *   unique, shutdown under load
 *             as unique, but the round ends with kwq_shutdown (or a drain)
 *             while producers are still adding: never early, never twice,
 *             a refused add is never got, an immediate (d = 0) accepted add
 *             is got, and workers and drains return.
 *   shared    again.
 *
 * Exit status 0 when every oracle held, 1 otherwise.  Under
 * ThreadSanitizer the run also checks that the timer thread's hand-off is
 * visible (every record is read by a worker that got the key).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kwq.h>

#include "row.h"

#define MS 1000000LL
#define SEC 1000000000LL
#define MAX_DELAY_NS (5 * MS)
#define LONG_DELAY_NS (60 * SEC)
#define GEN_NS (2 * MS)
#define SLOTS 8
#define GRACE_NS (5 * SEC)
#define PER_PRODUCER 60000 /* unique adds per producer and round */
#define MAX_THREADS 64

enum round_kind { R_UNIQUE, R_SHARED, R_UNIQUE_SHUTDOWN, R_KINDS };

struct opts {
	enum kwq_impl impl;
	const char *row;
	double seconds;
	int producers, workers;
};

/* One unique add: written by its producer before the call. */
struct rec {
	_Atomic int64_t ready;  /* t_call + d */
	atomic_int prio;
	atomic_int state;       /* 0 not made, 1 made, 2 accepted, 3 refused */
	atomic_int got;
	atomic_bool immediate;
};

/* One shared key (generation, slot). */
struct skey {
	_Atomic int64_t min_ready;  /* INT64_MAX: no add yet */
	_Atomic int64_t min_short;  /* the same over the short adds */
	atomic_long adds, gets;
	atomic_int owner;           /* 0, or the holding worker's id + 1 */
};

struct round {
	const struct opts *o;
	enum round_kind kind;
	kwq_t *q;
	int64_t start;
	atomic_bool stop;
	atomic_long violations;

	struct rec *recs;        /* producers x PER_PRODUCER */
	atomic_long accepted, refused, got;
	_Atomic int64_t last_ready;

	struct skey *keys;       /* ngen x SLOTS */
	int ngen;

	/* lateness of deliveries (information, not an oracle) */
	_Atomic int64_t max_late;
	atomic_long delivered;
};

struct targ {
	struct round *r;
	int id;
	uint64_t rng;
};

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64* */
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static void atomic_min64(_Atomic int64_t *a, int64_t v)
{
	int64_t cur = atomic_load_explicit(a, memory_order_relaxed);
	while (v < cur && !atomic_compare_exchange_weak_explicit(a, &cur, v,
			memory_order_relaxed, memory_order_relaxed))
		;
}

static void atomic_max64(_Atomic int64_t *a, int64_t v)
{
	int64_t cur = atomic_load_explicit(a, memory_order_relaxed);
	while (v > cur && !atomic_compare_exchange_weak_explicit(a, &cur, v,
			memory_order_relaxed, memory_order_relaxed))
		;
}

static const char *const kind_name[R_KINDS] = { "unique", "shared", "unique+shutdown" };

static void violation(struct round *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void violation(struct round *r, const char *fmt, ...)
{
	if (atomic_fetch_add(&r->violations, 1) < 10) {
		va_list ap;
		va_start(ap, fmt);
		flockfile(stderr);
		fprintf(stderr, "VIOLATION (%s, %s round): ", r->o->row, kind_name[r->kind]);
		vfprintf(stderr, fmt, ap);
		fprintf(stderr, "\n");
		funlockfile(stderr);
		va_end(ap);
	}
}

/* Keys: 'U', producer, sequence / 'S', generation, slot. */
struct key {
	char tag;
	unsigned char pad[3];
	uint32_t a, b;
};

static struct key make_key(char tag, uint32_t a, uint32_t b)
{
	struct key k;
	memset(&k, 0, sizeof k);
	k.tag = tag;
	k.a = a;
	k.b = b;
	return k;
}

/* A delay of 0..5 ms (0 one time in 16, so some adds are immediate). */
static int64_t pick_delay(uint64_t x)
{
	if ((x & 15) == 0)
		return 0;
	return 1 + (int64_t)((x >> 4) % (uint64_t)MAX_DELAY_NS);
}

/* Half the adds use kwq_add_with with a priority 0..3: -1 means
 * kwq_add_after (priority 0). */
static int pick_prio(uint64_t x)
{
	return ((x >> 40) & 1) ? (int)((x >> 41) & 3) : -1;
}

static int delayed_add(kwq_t *q, const struct key *k, int64_t d, int prio)
{
	if (prio >= 0) {
		struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
		o.after_ns = d;
		o.priority = prio;
		return kwq_add_with(q, k, sizeof *k, &o);
	}
	return kwq_add_after(q, k, sizeof *k, d);
}

static void pace(uint64_t x)
{
	/* leave the timer thread and the workers some CPU on a small box */
	if ((x & 0xf00) == 0)
		stress_sleep_ns(20000 + (int64_t)((x >> 20) % 100000));
	else if ((x & 0x30) == 0)
		sched_yield();
}

static void *unique_producer(void *arg)
{
	struct targ *t = arg;
	struct round *r = t->r;
	struct rec *recs = r->recs + (size_t)t->id * PER_PRODUCER;

	for (uint32_t seq = 0; !atomic_load_explicit(&r->stop, memory_order_relaxed); seq++) {
		uint64_t x = rng_next(&t->rng);
		if (seq >= PER_PRODUCER) {
			stress_sleep_ns(MS);
			continue;
		}
		struct rec *rc = &recs[seq];
		struct key k = make_key('U', (uint32_t)t->id, seq);
		int64_t d = pick_delay(x);
		int64_t t_call = stress_now_ns();
		/* recorded before the call: the get that hands the key out
		 * happens-after everything done before the add */
		atomic_store_explicit(&rc->ready, t_call + d, memory_order_relaxed);
		atomic_store_explicit(&rc->immediate, d == 0, memory_order_relaxed);
		int prio = pick_prio(x);
		atomic_store_explicit(&rc->prio, prio < 0 ? 0 : prio, memory_order_relaxed);
		atomic_store_explicit(&rc->state, 1, memory_order_relaxed);
		int err = delayed_add(r->q, &k, d, prio);
		if (err == 0) {
			atomic_store_explicit(&rc->state, 2, memory_order_relaxed);
			atomic_fetch_add(&r->accepted, 1);
			atomic_max64(&r->last_ready, t_call + d);
		} else if (err == -ESHUTDOWN) {
			atomic_store_explicit(&rc->state, 3, memory_order_relaxed);
			atomic_fetch_add(&r->refused, 1);
		} else {
			violation(r, "add failed: %d (producer %d)", err, t->id);
		}
		pace(x);
	}
	return NULL;
}

static void *shared_producer(void *arg)
{
	struct targ *t = arg;
	struct round *r = t->r;

	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		uint64_t x = rng_next(&t->rng);
		int64_t t_call = stress_now_ns();
		int64_t gen = (t_call - r->start) / GEN_NS;
		if (gen >= r->ngen) {
			stress_sleep_ns(MS);
			continue;
		}
		uint32_t slot = (uint32_t)((x >> 8) % SLOTS);
		struct skey *s = &r->keys[gen * SLOTS + slot];
		struct key k = make_key('S', (uint32_t)gen, slot);
		bool long_wait = ((x >> 50) & 7) == 0;
		int64_t d = long_wait ? LONG_DELAY_NS : pick_delay(x);
		/* before the call: see the header comment */
		atomic_min64(&s->min_ready, t_call + d);
		if (!long_wait)
			atomic_min64(&s->min_short, t_call + d);
		int err = delayed_add(r->q, &k, d, pick_prio(x));
		if (err == 0) {
			atomic_fetch_add(&s->adds, 1);
			atomic_fetch_add(&r->accepted, 1);
		} else {
			violation(r, "add failed: %d (producer %d)", err, t->id);
		}
		pace(x);
	}
	return NULL;
}

static void check_unique(struct round *r, const struct key *k, kwq_item_t *it, int64_t now)
{
	if ((int)k->a >= r->o->producers || k->b >= PER_PRODUCER) {
		violation(r, "unknown unique key %u/%u", k->a, k->b);
		return;
	}
	struct rec *rc = &r->recs[(size_t)k->a * PER_PRODUCER + k->b];
	int64_t ready = atomic_load_explicit(&rc->ready, memory_order_relaxed);
	int state = atomic_load_explicit(&rc->state, memory_order_relaxed);
	if (state == 0)
		violation(r, "key %u/%u got, but its record is not visible "
			     "(no happens-before from the add)", k->a, k->b);
	else if (state == 3)
		violation(r, "key %u/%u got, but its add was refused", k->a, k->b);
	if (now < ready)
		violation(r, "delayed add delivered %lld ns before its ready time (key %u/%u)",
			  (long long)(ready - now), k->a, k->b);
	else
		atomic_max64(&r->max_late, now - ready);
	int prio = atomic_load_explicit(&rc->prio, memory_order_relaxed);
	if (kwq_item_priority(it) != prio)
		violation(r, "got with priority %d, added with %d", kwq_item_priority(it), prio);
	if (atomic_fetch_add(&rc->got, 1) != 0)
		violation(r, "key %u/%u got twice", k->a, k->b);
	atomic_fetch_add(&r->got, 1);
}

static struct skey *shared_key(struct round *r, const struct key *k)
{
	if ((int)k->a >= r->ngen || k->b >= SLOTS) {
		violation(r, "unknown shared key %u/%u", k->a, k->b);
		return NULL;
	}
	return &r->keys[k->a * SLOTS + k->b];
}

static void check_shared(struct round *r, const struct key *k, int64_t now, int id)
{
	struct skey *s = shared_key(r, k);
	if (s == NULL)
		return;
	int expect = 0;
	if (!atomic_compare_exchange_strong(&s->owner, &expect, id + 1))
		violation(r, "two workers hold key %u/%u (workers %d and %d)", k->a, k->b,
			  expect - 1, id);
	int64_t min_ready = atomic_load_explicit(&s->min_ready, memory_order_relaxed);
	if (now < min_ready)
		violation(r, "shared key delivered %lld ns before the earliest ready time "
			     "of its adds (key %u/%u)", (long long)(min_ready - now), k->a, k->b);
	else if (atomic_load_explicit(&s->gets, memory_order_relaxed) == 0)
		atomic_max64(&r->max_late, now - min_ready);
	atomic_fetch_add(&s->gets, 1);
	atomic_fetch_add(&r->got, 1);
}

static void *worker(void *arg)
{
	struct targ *t = arg;
	struct round *r = t->r;

	for (;;) {
		uint64_t x = rng_next(&t->rng);
		kwq_item_t *it = NULL;
		int rc;
		switch (x & 3) {
		case 0:
			rc = kwq_try_get(r->q, &it);
			if (rc == -EAGAIN) {
				sched_yield();
				continue;
			}
			break;
		case 1:
			rc = kwq_get_timeout(r->q, &it, (int64_t)((x >> 8) % (2 * MS)));
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
			violation(r, "get failed: %d", rc);
			return NULL;
		}
		int64_t now = stress_now_ns();
		size_t len;
		const void *kp = kwq_item_key(it, &len);
		struct key k;
		if (len != sizeof k) {
			violation(r, "bad key length %zu", len);
		} else {
			memcpy(&k, kp, sizeof k);
			if (k.tag == 'U')
				check_unique(r, &k, it, now);
			else if (k.tag == 'S')
				check_shared(r, &k, now, t->id);
			else
				violation(r, "bad key tag %d", k.tag);
			atomic_fetch_add_explicit(&r->delivered, 1, memory_order_relaxed);
		}
		if ((x & 0x70) == 0)
			sched_yield(); /* hold it a while: adds turn it dirty */
		if (len == sizeof k && k.tag == 'S') {
			struct skey *s = shared_key(r, &k);
			int expect = t->id + 1;
			if (s != NULL && !atomic_compare_exchange_strong(&s->owner, &expect, 0))
				violation(r, "key %u/%u changed owner while held (now %d)", k.a, k.b,
					  expect - 1);
		}
		if (kwq_done(r->q, it) != 0)
			violation(r, "done failed");
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

/* Wait until pred holds or the deadline passes; true when it holds. */
static bool wait_until(bool (*pred)(struct round *), struct round *r, int64_t deadline)
{
	while (!pred(r)) {
		if (stress_now_ns() > deadline)
			return false;
		stress_sleep_ns(200000);
	}
	return true;
}

static bool all_unique_got(struct round *r)
{
	return atomic_load(&r->got) >= atomic_load(&r->accepted);
}

static bool all_short_keys_got(struct round *r)
{
	for (int i = 0; i < r->ngen * SLOTS; i++) {
		struct skey *s = &r->keys[i];
		if (atomic_load(&s->adds) > 0 && atomic_load(&s->min_short) != INT64_MAX &&
		    atomic_load(&s->gets) == 0)
			return false;
	}
	return true;
}

static long run_round(const struct opts *o, enum round_kind kind, double slice, uint64_t seed,
		      int64_t *max_late)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = o->impl;
	struct round *r = calloc(1, sizeof *r);
	if (r == NULL) {
		fprintf(stderr, "out of memory\n");
		exit(2);
	}
	r->o = o;
	r->kind = kind;
	r->q = kwq_new(&cfg);
	if (r->q == NULL) {
		fprintf(stderr, "kwq_new(%s): %s\n", o->row, kwq_strerror(errno));
		exit(2);
	}
	bool shared = kind == R_SHARED;
	if (shared) {
		r->ngen = (int)(slice * 1e9 / (double)GEN_NS) + 1;
		r->keys = calloc((size_t)r->ngen * SLOTS, sizeof *r->keys);
		for (int i = 0; r->keys != NULL && i < r->ngen * SLOTS; i++) {
			atomic_init(&r->keys[i].min_ready, INT64_MAX);
			atomic_init(&r->keys[i].min_short, INT64_MAX);
		}
	} else {
		r->recs = calloc((size_t)o->producers * PER_PRODUCER, sizeof *r->recs);
	}
	if (r->keys == NULL && r->recs == NULL) {
		fprintf(stderr, "out of memory\n");
		exit(2);
	}
	atomic_init(&r->last_ready, 0);
	r->start = stress_now_ns();

	int n = o->producers + o->workers;
	pthread_t t[MAX_THREADS];
	struct targ ta[MAX_THREADS];
	for (int i = 0; i < n; i++) {
		bool is_worker = i >= o->producers;
		ta[i] = (struct targ){ r, is_worker ? i - o->producers : i,
				       seed * 1000003ULL + (uint64_t)i * 7919ULL + 1 };
		pthread_create(&t[i], NULL,
			       is_worker ? worker : shared ? shared_producer : unique_producer,
			       &ta[i]);
	}
	stress_sleep_ns((int64_t)(slice * 1e9));

	if (kind == R_UNIQUE_SHUTDOWN) {
		/* end under load: producers still adding, delayed adds pending */
		pthread_t dt;
		struct drain_arg da = { r->q };
		bool drain = seed & 1;
		if (drain)
			pthread_create(&dt, NULL, drainer, &da);
		else
			kwq_shutdown(r->q);
		stress_sleep_ns(MS);
		atomic_store(&r->stop, true);
		for (int i = 0; i < n; i++)
			pthread_join(t[i], NULL);
		if (drain)
			pthread_join(dt, NULL);
		/* what reached the queue was got: every immediate add */
		for (long i = 0; i < (long)o->producers * PER_PRODUCER; i++) {
			struct rec *rc = &r->recs[i];
			if (atomic_load(&rc->state) == 2 && atomic_load(&rc->immediate) &&
			    atomic_load(&rc->got) != 1)
				violation(r, "accepted immediate add %ld got %d times", i,
					  atomic_load(&rc->got));
		}
	} else {
		atomic_store(&r->stop, true);
		for (int i = 0; i < o->producers; i++)
			pthread_join(t[i], NULL);
		/* every accepted add (with a short wait) is got within 5 s of
		 * its ready time */
		int64_t last;
		if (shared) {
			last = 0;
			for (int i = 0; i < r->ngen * SLOTS; i++) {
				int64_t m = atomic_load(&r->keys[i].min_short);
				if (m != INT64_MAX && m > last)
					last = m;
			}
			if (!wait_until(all_short_keys_got, r, last + GRACE_NS))
				violation(r, "a key with a short delayed add was not got within "
					     "%lld s of its ready time", GRACE_NS / SEC);
		} else {
			last = atomic_load(&r->last_ready);
			if (!wait_until(all_unique_got, r, last + GRACE_NS))
				violation(r, "accepted delayed adds not got: %ld of %ld",
					  atomic_load(&r->accepted) - atomic_load(&r->got),
					  atomic_load(&r->accepted));
		}
		while (stress_now_ns() <= last)
			stress_sleep_ns(MS);
		if (!shared && kwq_len(r->q) != 0)
			violation(r, "kwq_len %zu after every add was got", kwq_len(r->q));
		/* shutdown drops the 60 s waits; the drain returns once what
		 * is queued or held is finished (workers still run) */
		kwq_shutdown_drain(r->q);
		for (int i = o->producers; i < n; i++)
			pthread_join(t[i], NULL);
		if (kwq_len(r->q) != 0)
			violation(r, "kwq_len %zu after the drain", kwq_len(r->q));
		if (shared) {
			for (int i = 0; i < r->ngen * SLOTS; i++) {
				struct skey *s = &r->keys[i];
				if (atomic_load(&s->gets) > atomic_load(&s->adds))
					violation(r, "shared key processed %ld times for %ld adds",
						  atomic_load(&s->gets), atomic_load(&s->adds));
			}
		} else {
			for (long i = 0; i < (long)o->producers * PER_PRODUCER; i++) {
				struct rec *rc = &r->recs[i];
				int want = atomic_load(&rc->state) == 2 ? 1 : 0;
				if (atomic_load(&rc->got) != want)
					violation(r, "add %ld got %d times", i,
						  atomic_load(&rc->got));
			}
		}
	}
	if (kwq_add_after(r->q, "x", 1, MS) != -ESHUTDOWN)
		violation(r, "delayed add accepted after shutdown");

	kwq_free(r->q); /* frees the dropped 60 s waits */
	long v = atomic_load(&r->violations);
	long delivered = atomic_load(&r->delivered);
	int64_t late = atomic_load(&r->max_late);
	if (late > *max_late)
		*max_late = late;
	free(r->recs);
	free(r->keys);
	free(r);
	return v ? -v : delivered;
}

int main(int argc, char **argv)
{
	struct opts o = { .seconds = 5, .producers = 3, .workers = 3 };

	if (argc < 2) {
		fprintf(stderr, "usage: %s mutex|sharded [--seconds S] [--producers P] "
				"[--workers W]\n", argv[0]);
		return 2;
	}
	o.row = argv[1];
	if (!stress_row(o.row, &o.impl))
		return 2;
	for (int i = 2; i < argc; i += 2) {
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
		else {
			fprintf(stderr, "unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (o.producers < 1 || o.workers < 1 || o.producers + o.workers > MAX_THREADS ||
	    o.seconds <= 0) {
		fprintf(stderr, "bad options\n");
		return 2;
	}

	int64_t end = stress_now_ns() + (int64_t)(o.seconds * 1e9);
	double slice = o.seconds / 10 < 0.4 ? o.seconds / 10 : 0.4;
	long rounds = 0, delivered = 0, failed = 0;
	int64_t max_late = 0;
	static const enum round_kind cycle[4] = { R_UNIQUE, R_SHARED, R_UNIQUE_SHUTDOWN, R_SHARED };
	while (stress_now_ns() < end || rounds < (long)(sizeof cycle / sizeof cycle[0])) {
		long rc = run_round(&o, cycle[rounds % 4], slice, (uint64_t)rounds + 1, &max_late);
		if (rc < 0)
			failed -= rc;
		else
			delivered += rc;
		rounds++;
		if (rounds >= 4 && stress_now_ns() >= end)
			break;
	}
	printf("%s: %ld rounds, %ld deliveries, latest delivery %.3f ms after its ready time, "
	       "%ld violations\n", o.row, rounds, delivered, (double)max_late / 1e6, failed);
	return failed ? 1 : 0;
}
