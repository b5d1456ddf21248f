/* heap.c - see heap.h.  Ties on ready break by seq, so equal ready times
 * come out in call order, as libuv's timers do. */
#include "heap.h"

#include <errno.h>
#include <stdlib.h>

static bool before(const struct kwq__heap_node *a, const struct kwq__heap_node *b)
{
	return a->ready < b->ready || (a->ready == b->ready && a->seq < b->seq);
}

static void place(struct kwq__heap *h, size_t i, struct kwq__heap_node *x)
{
	h->v[i] = x;
	x->index = i;
}

static void sift_up(struct kwq__heap *h, size_t i)
{
	struct kwq__heap_node *x = h->v[i];
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!before(x, h->v[p]))
			break;
		place(h, i, h->v[p]);
		i = p;
	}
	place(h, i, x);
}

static void sift_down(struct kwq__heap *h, size_t i)
{
	struct kwq__heap_node *x = h->v[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && before(h->v[c + 1], h->v[c]))
			c++;
		if (!before(h->v[c], x))
			break;
		place(h, i, h->v[c]);
		i = c;
	}
	place(h, i, x);
}

int kwq__heap_push(struct kwq__heap *h, struct kwq__heap_node *x)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		struct kwq__heap_node **v = realloc(h->v, cap * sizeof *v);
		if (v == NULL)
			return -ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	place(h, h->n++, x);
	sift_up(h, h->n - 1);
	return 0;
}

void kwq__heap_remove(struct kwq__heap *h, struct kwq__heap_node *x)
{
	size_t i = x->index;
	struct kwq__heap_node *last = h->v[--h->n];
	if (i == h->n)
		return;
	place(h, i, last);
	if (i > 0 && before(last, h->v[(i - 1) / 2]))
		sift_up(h, i);
	else
		sift_down(h, i);
}

struct kwq__heap_node *kwq__heap_pop(struct kwq__heap *h)
{
	struct kwq__heap_node *top = kwq__heap_top(h);
	if (top != NULL)
		kwq__heap_remove(h, top);
	return top;
}

void kwq__heap_decreased(struct kwq__heap *h, struct kwq__heap_node *x)
{
	sift_up(h, x->index);
}

void kwq__heap_free(struct kwq__heap *h)
{
	free(h->v);
	h->v = NULL;
	h->n = h->cap = 0;
}
