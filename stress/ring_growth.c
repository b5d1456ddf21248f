/*
 * ring_growth.c - the sharded design's ring, grown from tiny segments
 * under concurrent load.
 *
 *   ring_growth [--seconds S] [--threads T]
 *
 * Rounds until S seconds have passed.  Each round makes a ring with
 * segments of 1, 2, 4 or 8 slots (so nearly every operation meets a
 * segment boundary: linking, swinging, retiring, freeing), runs T/2
 * producers and T/2 consumers (more threads than cores: preempted claims
 * and poisoned slots happen), and checks the oracle:
 *
 *   every item is taken exactly once (a per-item counter), each producer's
 *   items come out in its order (per consumer), nothing is left, and all
 *   but a few retired segments were freed (the claim counting reclaims).
 *
 * Links the internal library.  Exit status 0 when every round held.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sharded/ring.h"

#include "ring_stress.h"
#include "row.h"

#define MAX_THREADS 32

/* Items per producer and round; with injected yields a round is slower. */
#if defined(KWQ__INJECT_YIELDS) && KWQ__INJECT_YIELDS
#define PER_PRODUCER 2000
#else
#define PER_PRODUCER 20000
#endif

struct round {
	struct kwq__ring ring;
	int producers;
	uint64_t per_producer;
	_Atomic uint64_t taken;
	_Atomic uint8_t *seen;
	_Atomic int bad;
};

struct arg {
	struct round *r;
	unsigned id;
};

static void *producer(void *p)
{
	struct arg *a = p;
	struct round *r = a->r;
	for (uint64_t i = 0; i < r->per_producer; i++) {
		if (kwq__ring_put(&r->ring, ring_stress_enc(a->id * r->per_producer + i)) != 0) {
			atomic_store(&r->bad, 3);
			return NULL;
		}
	}
	return NULL;
}

static void *consumer(void *p)
{
	struct arg *a = p;
	struct round *r = a->r;
	const uint64_t total = r->per_producer * (uint64_t)r->producers;
	int64_t last[MAX_THREADS];
	for (int i = 0; i < MAX_THREADS; i++)
		last[i] = -1;

	while (atomic_load(&r->taken) < total && atomic_load(&r->bad) == 0) {
		void *item = kwq__ring_take(&r->ring);
		if (item == NULL)
			continue;
		uint64_t v = ring_stress_dec(item);
		if (v >= total) {
			atomic_store(&r->bad, 1);
			break;
		}
		unsigned prod = (unsigned)(v / r->per_producer);
		int64_t seq = (int64_t)(v % r->per_producer);
		if (seq <= last[prod])
			atomic_store(&r->bad, 2);
		last[prod] = seq;
		if (atomic_fetch_add(&r->seen[v], 1) != 0)
			atomic_store(&r->bad, 4);
		atomic_fetch_add(&r->taken, 1);
	}
	return NULL;
}

static int run_round(uint32_t seg, int threads, uint64_t per_producer)
{
	static struct round r;
	memset(&r, 0, sizeof r);
	if (kwq__ring_init(&r.ring, seg) != 0) {
		fprintf(stderr, "ring_init failed\n");
		return 1;
	}
	r.producers = threads / 2;
	r.per_producer = per_producer;
	const uint64_t total = per_producer * (uint64_t)r.producers;
	r.seen = calloc(total, sizeof *r.seen);
	if (r.seen == NULL)
		return 1;

	pthread_t t[MAX_THREADS];
	struct arg a[MAX_THREADS];
	for (int i = 0; i < threads; i++) {
		a[i] = (struct arg){ &r, (unsigned)(i / 2) };
		pthread_create(&t[i], NULL, i % 2 == 0 ? producer : consumer, &a[i]);
	}
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);

	int failed = 0;
	const char *why[] = { "", "foreign item", "producer order broken",
			      "put failed", "item taken twice" };
	int bad = atomic_load(&r.bad);
	if (bad != 0) {
		fprintf(stderr, "seg %" PRIu32 ": %s\n", seg, why[bad]);
		failed = 1;
	}
	for (uint64_t v = 0; !failed && v < total; v++) {
		if (atomic_load(&r.seen[v]) != 1) {
			fprintf(stderr, "seg %" PRIu32 ": item %" PRIu64 " taken %d times\n",
				seg, v, atomic_load(&r.seen[v]));
			failed = 1;
		}
	}
	if (!failed && (kwq__ring_take(&r.ring) != NULL || kwq__ring_len(&r.ring) != 0)) {
		fprintf(stderr, "seg %" PRIu32 ": ring not empty at the end\n", seg);
		failed = 1;
	}
	uint64_t alloc = atomic_load(&r.ring.segs_allocated);
	uint64_t freed = atomic_load(&r.ring.segs_freed);
	if (!failed && freed + 2u * (unsigned)threads + 8 < alloc) {
		fprintf(stderr, "seg %" PRIu32 ": %" PRIu64 " segments allocated, only %"
			PRIu64 " freed\n", seg, alloc, freed);
		failed = 1;
	}
	kwq__ring_destroy(&r.ring);
	free(r.seen);
	return failed;
}

int main(int argc, char **argv)
{
	double seconds = 5;
	int threads = 8;

	if (!ring_stress_args(argc, argv, &seconds, &threads, MAX_THREADS))
		return 2;
	threads &= ~1;

	int64_t end = stress_now_ns() + (int64_t)(seconds * 1e9);
	const uint32_t segs[] = { 1, 2, 4, 8 };
	long rounds = 0;
	int failed = 0;
	while (!failed && stress_now_ns() < end) {
		failed = run_round(segs[rounds % 4], threads, PER_PRODUCER);
		rounds++;
	}
	printf("ring_growth: %ld rounds, %s\n", rounds, failed ? "FAILED" : "ok");
	return failed;
}
