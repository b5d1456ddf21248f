/*
 * timeline_test.c - white-box tests of the delay timer's timeline (the run
 * for in-order ready times plus the heap for the rest).
 *
 * An oracle of plain arrays: every pop must return the (ready, seq)
 * minimum of what was pushed and not yet popped or filtered out; a filter
 * keeps exactly the entries its predicate keeps and calls it once per
 * entry.  Workloads: all in order (the run alone), all reversed (the heap
 * alone), equal ready times (seq breaks the tie), random, and mostly in
 * order with stragglers, each with filters mixed in.  Exit status 0 on
 * success (meson protocol 'exitcode').  Usage: timeline_test [ops]
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "delay/timeline.h"

#include "expect.h"

static int failures;

/* The oracle: a bag of live entries, and which ones the filter drops. */
struct bag {
	struct kwq__tl_entry *v;
	size_t n, cap;
	uint64_t drop_mod;   /* filter drops seq % drop_mod == 0 */
	size_t calls;        /* keep() calls in the last filter */
};

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static bool keep(const struct kwq__tl_entry *e, void *ctx)
{
	struct bag *b = ctx;
	b->calls++;
	return e->seq % b->drop_mod != 0;
}

static void bag_push(struct bag *b, const struct kwq__tl_entry *e)
{
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 64;
		b->v = realloc(b->v, b->cap * sizeof *b->v);
		if (b->v == NULL)
			abort();
	}
	b->v[b->n++] = *e;
}

/* Index of the (ready, seq) minimum. */
static size_t bag_min(const struct bag *b)
{
	size_t m = 0;
	for (size_t i = 1; i < b->n; i++)
		if (kwq__tl_before(&b->v[i], &b->v[m]))
			m = i;
	return m;
}

static void bag_filter(struct bag *b)
{
	size_t n = 0;
	for (size_t i = 0; i < b->n; i++)
		if (b->v[i].seq % b->drop_mod != 0)
			b->v[n++] = b->v[i];
	b->n = n;
}

enum shape { IN_ORDER, REVERSED, EQUAL, RANDOM, STRAGGLERS };

static const char *const shape_names[] = { "in order", "reversed", "equal", "random",
					   "stragglers" };

static int64_t ready_for(enum shape s, uint64_t i)
{
	switch (s) {
	case IN_ORDER:
		return (int64_t)i * 10;
	case REVERSED:
		return 1000000000 - (int64_t)i * 10;
	case EQUAL:
		return 42;
	case RANDOM:
		return (int64_t)(next_rand() % 1000);
	default:
		return (int64_t)i * 10 - (next_rand() % 8 == 0 ? (int64_t)(next_rand() % 500) : 0);
	}
}

static void run_shape(enum shape s, size_t ops)
{
	struct kwq__timeline t = { 0 };
	struct bag b = { .drop_mod = 7 };
	uint64_t seq = 0;

	for (size_t op = 0; op < ops; op++) {
		uint64_t r = next_rand() % 100;
		if (r < 60) {
			EXPECT(kwq__timeline_reserve(&t) == 0);
			seq++;
			struct kwq__tl_entry e = { ready_for(s, seq), seq, (void *)(uintptr_t)seq };
			kwq__timeline_push(&t, &e);
			bag_push(&b, &e);
		} else if (r < 98) {
			const struct kwq__tl_entry *e = kwq__timeline_peek(&t);
			if (b.n == 0) {
				EXPECT(e == NULL);
				continue;
			}
			size_t m = bag_min(&b);
			EXPECT(e != NULL);
			if (e->seq != b.v[m].seq || e->ready != b.v[m].ready) {
				fprintf(stderr, "%s: popped (%" PRId64 ", %" PRIu64 "), expected (%" PRId64
					", %" PRIu64 ")\n", shape_names[s], e->ready, e->seq,
					b.v[m].ready, b.v[m].seq);
				EXPECT(0);
			}
			EXPECT(e->owner == (void *)(uintptr_t)e->seq);
			kwq__timeline_pop(&t);
			b.v[m] = b.v[--b.n];
		} else {
			b.calls = 0;
			size_t before = kwq__timeline_size(&t);
			kwq__timeline_filter(&t, keep, &b);
			EXPECT(b.calls == before);
			bag_filter(&b);
		}
		EXPECT(kwq__timeline_size(&t) == b.n);
	}
	/* Drain: everything comes out in order. */
	while (b.n > 0) {
		const struct kwq__tl_entry *e = kwq__timeline_peek(&t);
		size_t m = bag_min(&b);
		EXPECT(e != NULL && e->seq == b.v[m].seq);
		kwq__timeline_pop(&t);
		b.v[m] = b.v[--b.n];
	}
	EXPECT(kwq__timeline_peek(&t) == NULL && kwq__timeline_size(&t) == 0);
	kwq__timeline_free(&t);
	free(b.v);
}

int main(int argc, char **argv)
{
	size_t ops = argc > 1 ? strtoul(argv[1], NULL, 10) : 20000;

	for (enum shape s = IN_ORDER; s <= STRAGGLERS; s++) {
		int before = failures;
		run_shape(s, ops);
		printf("%s: %s\n", shape_names[s], failures == before ? "ok" : "FAILED");
	}
	if (failures != 0) {
		fprintf(stderr, "timeline_test: %d failure(s)\n", failures);
		return 1;
	}
	return 0;
}
