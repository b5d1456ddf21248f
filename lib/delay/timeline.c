/* timeline.c - see timeline.h. */
#include "timeline.h"
#include "../core/alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define RUN_MIN 64
#define HEAP_MIN 64

static size_t run_len(const struct kwq__timeline *t)
{
	return (size_t)(t->run_tail - t->run_head);
}

static struct kwq__tl_entry *run_at(const struct kwq__timeline *t, uint64_t pos)
{
	return &t->run[pos & t->run_mask];
}

/* The ring doubles into a fresh array, its entries moved to the front. */
static int run_grow(struct kwq__timeline *t)
{
	size_t cap = t->run ? (t->run_mask + 1) * 2 : RUN_MIN;
	struct kwq__tl_entry *v = kwq__malloc(cap * sizeof *v);
	if (v == NULL)
		return -ENOMEM;
	size_t n = run_len(t);
	for (size_t i = 0; i < n; i++)
		v[i] = *run_at(t, t->run_head + i);
	free(t->run);
	t->run = v;
	t->run_mask = cap - 1;
	t->run_head = 0;
	t->run_tail = n;
	return 0;
}

static int heap_grow(struct kwq__timeline *t)
{
	size_t cap = t->heap_cap ? t->heap_cap * 2 : HEAP_MIN;
	struct kwq__tl_entry *v = kwq__realloc(t->heap, cap * sizeof *v);
	if (v == NULL)
		return -ENOMEM;
	t->heap = v;
	t->heap_cap = cap;
	return 0;
}

int kwq__timeline_reserve(struct kwq__timeline *t)
{
	if ((t->run == NULL || run_len(t) == t->run_mask + 1) && run_grow(t) != 0)
		return -ENOMEM;
	if (t->heap_n == t->heap_cap && heap_grow(t) != 0)
		return -ENOMEM;
	return 0;
}

static void sift_up(struct kwq__tl_entry *h, size_t i)
{
	struct kwq__tl_entry x = h[i];
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!kwq__tl_before(&x, &h[p]))
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = x;
}

static void sift_down(struct kwq__tl_entry *h, size_t n, size_t i)
{
	struct kwq__tl_entry x = h[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && kwq__tl_before(&h[c + 1], &h[c]))
			c++;
		if (!kwq__tl_before(&h[c], &x))
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = x;
}

void kwq__timeline_push(struct kwq__timeline *t, const struct kwq__tl_entry *e)
{
	size_t n = run_len(t);
	if (n == 0 || !kwq__tl_before(e, run_at(t, t->run_tail - 1))) {
		*run_at(t, t->run_tail++) = *e;
		return;
	}
	t->heap[t->heap_n] = *e;
	sift_up(t->heap, t->heap_n++);
}

/* Which structure holds the earliest entry: 1 the run, 0 the heap, -1 none. */
static int earliest(const struct kwq__timeline *t)
{
	if (run_len(t) == 0)
		return t->heap_n ? 0 : -1;
	if (t->heap_n == 0)
		return 1;
	return kwq__tl_before(&t->heap[0], run_at(t, t->run_head)) ? 0 : 1;
}

const struct kwq__tl_entry *kwq__timeline_peek(const struct kwq__timeline *t)
{
	switch (earliest(t)) {
	case 1:
		return run_at(t, t->run_head);
	case 0:
		return &t->heap[0];
	default:
		return NULL;
	}
}

void kwq__timeline_pop(struct kwq__timeline *t)
{
	if (earliest(t) == 1) {
		t->run_head++;
		return;
	}
	t->heap[0] = t->heap[--t->heap_n];
	if (t->heap_n > 1)
		sift_down(t->heap, t->heap_n, 0);
}

size_t kwq__timeline_size(const struct kwq__timeline *t)
{
	return run_len(t) + t->heap_n;
}

void kwq__timeline_filter(struct kwq__timeline *t,
			  bool (*keep)(const struct kwq__tl_entry *e, void *ctx), void *ctx)
{
	/* The run stays sorted when entries leave it: compact in place. */
	uint64_t w = t->run_head;
	for (uint64_t r = t->run_head; r != t->run_tail; r++) {
		const struct kwq__tl_entry *e = run_at(t, r);
		if (keep(e, ctx))
			*run_at(t, w++) = *e;
	}
	t->run_tail = w;

	/* The heap: compact, then heapify bottom-up (Floyd), O(n). */
	size_t n = 0;
	for (size_t i = 0; i < t->heap_n; i++)
		if (keep(&t->heap[i], ctx))
			t->heap[n++] = t->heap[i];
	t->heap_n = n;
	for (size_t i = n / 2; i-- > 0;)
		sift_down(t->heap, n, i);
}

void kwq__timeline_free(struct kwq__timeline *t)
{
	free(t->run);
	free(t->heap);
	memset(t, 0, sizeof *t);
}
