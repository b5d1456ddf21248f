/*
 * ring_test.c - white-box tests of the sharded design's segment queue.
 *
 * Single-thread order across segment boundaries, growth from a one-slot
 * segment, segment reclamation, length, and a multi-threaded conservation
 * run with tiny segments (every item out exactly once, and each producer's
 * items in its order).  Exit status 0 on success (meson protocol
 * 'exitcode').  Usage: ring_test [items-per-producer]
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharded/ring.h"

#include "expect.h"

static int failures;

/* Items must have the two low bits clear. */
static void *enc(uint64_t v)
{
	return (void *)(uintptr_t)((v + 1) << 2);
}

static uint64_t dec(void *p)
{
	return ((uint64_t)(uintptr_t)p >> 2) - 1;
}

static void test_order(uint32_t seg)
{
	struct kwq__ring r;
	EXPECT(kwq__ring_init(&r, seg) == 0);
	EXPECT(kwq__ring_take(&r) == NULL);
	EXPECT(!kwq__ring_pending(&r));
	EXPECT(kwq__ring_len(&r) == 0);

	/* Fill across several segments, then empty. */
	for (uint64_t i = 0; i < 5000; i++)
		EXPECT(kwq__ring_put(&r, enc(i)) == 0);
	EXPECT(kwq__ring_len(&r) == 5000);
	EXPECT(kwq__ring_pending(&r));
	for (uint64_t i = 0; i < 5000; i++) {
		void *p = kwq__ring_take(&r);
		EXPECT(p != NULL && dec(p) == i);
	}
	EXPECT(kwq__ring_take(&r) == NULL);
	EXPECT(kwq__ring_len(&r) == 0);

	/* Interleaved: the queue never holds more than 3. */
	uint64_t next_in = 0, next_out = 0;
	for (int round = 0; round < 3000; round++) {
		int puts = 1 + round % 3;
		for (int k = 0; k < puts; k++)
			EXPECT(kwq__ring_put(&r, enc(next_in++)) == 0);
		int takes = puts;
		for (int k = 0; k < takes; k++) {
			void *p = kwq__ring_take(&r);
			EXPECT(p != NULL && dec(p) == next_out);
			next_out++;
		}
		EXPECT(kwq__ring_take(&r) == NULL);
	}
	EXPECT(kwq__ring_len(&r) == 0);
	kwq__ring_destroy(&r);
}

static void test_growth_and_reclaim(void)
{
	struct kwq__ring r;
	EXPECT(kwq__ring_init(&r, 1) == 0); /* one slot per segment */
	for (uint64_t i = 0; i < 20000; i++)
		EXPECT(kwq__ring_put(&r, enc(i)) == 0);
	EXPECT(kwq__ring_len(&r) == 20000);
	uint64_t allocated = atomic_load(&r.segs_allocated);
	EXPECT(allocated >= 20000);
	for (uint64_t i = 0; i < 20000; i++) {
		void *p = kwq__ring_take(&r);
		EXPECT(p != NULL && dec(p) == i);
	}
	EXPECT(kwq__ring_take(&r) == NULL);
	/* Single-threaded, every passed segment is complete when retired. */
	uint64_t freed = atomic_load(&r.segs_freed);
	EXPECT(freed + 3 >= atomic_load(&r.segs_allocated));
	kwq__ring_destroy(&r);

	EXPECT(kwq__ring_init(&r, 0) != 0);
	EXPECT(kwq__ring_init(&r, KWQ__RING_SEG_MAX + 1) != 0);
}

/* ------------------------------------------------------------------------ */

#define PRODUCERS 4
#define CONSUMERS 4

struct mt {
	struct kwq__ring ring;
	uint64_t per_producer;
	_Atomic uint64_t taken;
	_Atomic uint32_t *seen;     /* per item: times taken */
	_Atomic int bad_order;
};

struct mt_arg {
	struct mt *mt;
	unsigned id;
};

static void *producer(void *arg)
{
	struct mt_arg *a = arg;
	struct mt *mt = a->mt;
	for (uint64_t i = 0; i < mt->per_producer; i++) {
		uint64_t v = (uint64_t)a->id * mt->per_producer + i;
		while (kwq__ring_put(&mt->ring, enc(v)) != 0)
			;
	}
	return NULL;
}

static void *consumer(void *arg)
{
	struct mt_arg *a = arg;
	struct mt *mt = a->mt;
	const uint64_t total = mt->per_producer * PRODUCERS;
	int64_t last[PRODUCERS];
	for (int p = 0; p < PRODUCERS; p++)
		last[p] = -1;

	while (atomic_load(&mt->taken) < total) {
		void *p = kwq__ring_take(&mt->ring);
		if (p == NULL)
			continue;
		uint64_t v = dec(p);
		if (v >= total) {
			atomic_store(&mt->bad_order, 2);
			continue;
		}
		unsigned prod = (unsigned)(v / mt->per_producer);
		int64_t seq = (int64_t)(v % mt->per_producer);
		/* FIFO: one producer's items come out in its order. */
		if (seq <= last[prod])
			atomic_store(&mt->bad_order, 1);
		last[prod] = seq;
		atomic_fetch_add(&mt->seen[v], 1);
		atomic_fetch_add(&mt->taken, 1);
	}
	return NULL;
}

static void test_mpmc(uint32_t seg, uint64_t per_producer)
{
	struct mt mt;
	memset(&mt, 0, sizeof mt);
	EXPECT(kwq__ring_init(&mt.ring, seg) == 0);
	mt.per_producer = per_producer;
	const uint64_t total = per_producer * PRODUCERS;
	mt.seen = calloc(total, sizeof *mt.seen);
	EXPECT(mt.seen != NULL);

	pthread_t pt[PRODUCERS], ct[CONSUMERS];
	struct mt_arg pa[PRODUCERS], ca[CONSUMERS];
	for (unsigned i = 0; i < CONSUMERS; i++) {
		ca[i] = (struct mt_arg){ &mt, i };
		pthread_create(&ct[i], NULL, consumer, &ca[i]);
	}
	for (unsigned i = 0; i < PRODUCERS; i++) {
		pa[i] = (struct mt_arg){ &mt, i };
		pthread_create(&pt[i], NULL, producer, &pa[i]);
	}
	for (unsigned i = 0; i < PRODUCERS; i++)
		pthread_join(pt[i], NULL);
	for (unsigned i = 0; i < CONSUMERS; i++)
		pthread_join(ct[i], NULL);

	int order = atomic_load(&mt.bad_order);
	uint64_t lost = 0, dup = 0;
	for (uint64_t v = 0; v < total; v++) {
		uint32_t n = atomic_load(&mt.seen[v]);
		lost += n == 0;
		dup += n > 1;
	}
	fprintf(stderr, "mpmc seg=%" PRIu32 ": %" PRIu64 " items, segments %" PRIu64
		" allocated %" PRIu64 " freed\n", seg, total,
		atomic_load(&mt.ring.segs_allocated), atomic_load(&mt.ring.segs_freed));
	EXPECT(order == 0);
	EXPECT(lost == 0 && dup == 0);
	EXPECT(atomic_load(&mt.taken) == total);
	EXPECT(kwq__ring_take(&mt.ring) == NULL);
	EXPECT(kwq__ring_len(&mt.ring) == 0);
	/* Bounded garbage: all but a few passed segments were freed. */
	EXPECT(atomic_load(&mt.ring.segs_freed) + 64 >= atomic_load(&mt.ring.segs_allocated));
	kwq__ring_destroy(&mt.ring);
	free(mt.seen);
}

int main(int argc, char **argv)
{
#if defined(KWQ__INJECT_YIELDS) && KWQ__INJECT_YIELDS
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 5000; /* yields: slow */
#else
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 50000;
#endif

	test_order(1);
	test_order(2);
	test_order(3);
	test_order(KWQ__RING_SEG_DEFAULT);
	test_growth_and_reclaim();
	test_mpmc(1, n / 4);
	test_mpmc(2, n);
	test_mpmc(64, n);
	if (failures != 0) {
		fprintf(stderr, "ring_test: %d failure(s)\n", failures);
		return 1;
	}
	fprintf(stderr, "ring_test: ok\n");
	return 0;
}
