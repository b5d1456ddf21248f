/*
 * ring_reserve_nomem.c - a reserved put never fails, even when no memory
 * can be had and other puts race it for the segment it links.
 *
 *   ring_reserve_nomem [--seconds S] [--threads T]
 *
 * A kwq_done of a held+dirty key re-queues it with a put that must not
 * fail: the done reserved a spare segment beforehand.  Here T threads share
 * a ring of one-slot segments (every put meets a segment boundary) while
 * the allocator refuses every segment after the first few, so the only
 * segments are the ones reclamation recycles into spares.  Each thread
 * loops: reserve (when a spare can be promised) and make the reserved put;
 * make an unreserved put (which may fail with -ENOMEM); take up to two
 * items.  The oracle:
 *
 *   every reserved put succeeds (kwq__ring_put_reserved_at reports through
 *   its position word, which it sets before it publishes), every accepted
 *   item is taken exactly once, and the ring is empty at the end.
 *
 * The allocator is interposed (aligned_alloc, the ring's only allocation);
 * sanitizer builds bring their own allocator and the program skips there.
 * Exit status 0 when every round held, 77 when skipped.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sharded/ring.h"

#include "ring_stress.h"
#include "row.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif

#define MAX_THREADS 16
#define PER_THREAD 20000
#define ALLOWED_SEGMENTS 6

#ifndef SANITIZED
void *__libc_memalign(size_t align, size_t size);

static _Atomic long allowed; /* segments the allocator still hands out */

void *aligned_alloc(size_t align, size_t size)
{
	if (atomic_fetch_sub(&allowed, 1) <= 0)
		return NULL;
	return __libc_memalign(align, size);
}
#endif

struct round {
	struct kwq__ring ring;
	int threads;
	_Atomic uint8_t *seen;
	_Atomic uint64_t accepted, taken, refused, reserved_puts;
	_Atomic int bad;
};

struct arg {
	struct round *r;
	unsigned id;
};

static void take_some(struct round *r, int n)
{
	for (int i = 0; i < n; i++) {
		void *item = kwq__ring_take(&r->ring);
		if (item == NULL)
			return;
		uint64_t v = ring_stress_dec(item);
		if (v >= (uint64_t)r->threads * 2 * PER_THREAD ||
		    atomic_fetch_add(&r->seen[v], 1) != 0)
			atomic_store(&r->bad, 1);
		atomic_fetch_add(&r->taken, 1);
	}
}

static void *worker(void *p)
{
	struct arg *a = p;
	struct round *r = a->r;
	uint64_t base = (uint64_t)a->id * 2 * PER_THREAD;

	for (uint64_t i = 0; i < PER_THREAD && atomic_load(&r->bad) == 0; i++) {
		if (kwq__ring_reserve(&r->ring) == 0) {
			_Atomic uint64_t pos;
			atomic_init(&pos, 0);
			kwq__ring_put_reserved_at(&r->ring, ring_stress_enc(base + 2 * i), &pos, 1);
			if (atomic_load_explicit(&pos, memory_order_relaxed) == 0)
				atomic_store(&r->bad, 2); /* not published */
			atomic_fetch_add(&r->accepted, 1);
			atomic_fetch_add(&r->reserved_puts, 1);
		}
		if (kwq__ring_put(&r->ring, ring_stress_enc(base + 2 * i + 1)) == 0)
			atomic_fetch_add(&r->accepted, 1);
		else
			atomic_fetch_add(&r->refused, 1);
		take_some(r, 2);
	}
	return NULL;
}

static int run_round(int threads, uint64_t *reserved_puts, uint64_t *refused)
{
	static struct round r;
	memset(&r, 0, sizeof r);
#ifndef SANITIZED
	atomic_store(&allowed, ALLOWED_SEGMENTS);
#endif
	if (kwq__ring_init(&r.ring, 1) != 0) {
		fprintf(stderr, "ring_init failed\n");
		return 1;
	}
	r.threads = threads;
	r.seen = calloc((size_t)threads * 2 * PER_THREAD, sizeof *r.seen);
	if (r.seen == NULL)
		return 1;
	pthread_t t[MAX_THREADS];
	struct arg a[MAX_THREADS];
	for (int i = 0; i < threads; i++) {
		a[i] = (struct arg){ &r, (unsigned)i };
		pthread_create(&t[i], NULL, worker, &a[i]);
	}
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	take_some(&r, 1 << 30);

	int failed = 0;
	int bad = atomic_load(&r.bad);
	if (bad != 0) {
		fprintf(stderr, "%s\n", bad == 1 ? "an item taken twice, or a foreign one"
						 : "a reserved put did not publish");
		failed = 1;
	}
	if (!failed && atomic_load(&r.taken) != atomic_load(&r.accepted)) {
		fprintf(stderr, "%" PRIu64 " items accepted, %" PRIu64 " taken\n",
			atomic_load(&r.accepted), atomic_load(&r.taken));
		failed = 1;
	}
	if (!failed && kwq__ring_len(&r.ring) != 0) {
		fprintf(stderr, "ring not empty at the end\n");
		failed = 1;
	}
	*reserved_puts += atomic_load(&r.reserved_puts);
	*refused += atomic_load(&r.refused);
	kwq__ring_destroy(&r.ring);
	free(r.seen);
	return failed;
}

int main(int argc, char **argv)
{
	double seconds = 5;
	int threads = 4;

	if (!ring_stress_args(argc, argv, &seconds, &threads, MAX_THREADS))
		return 2;
#ifdef SANITIZED
	printf("ring_reserve_nomem: skipped (the sanitizer's allocator cannot be interposed)\n");
	return 77;
#endif
	int64_t end = stress_now_ns() + (int64_t)(seconds * 1e9);
	long rounds = 0;
	uint64_t reserved_puts = 0, refused = 0;
	int failed = 0;
	while (!failed && stress_now_ns() < end) {
		failed = run_round(threads, &reserved_puts, &refused);
		rounds++;
	}
	printf("ring_reserve_nomem: %ld rounds, %" PRIu64 " reserved puts, %" PRIu64
	       " unreserved puts refused for memory, %s\n",
	       rounds, reserved_puts, refused, failed ? "FAILED" : "ok");
	return failed;
}
