/*
 * heap.h - a binary min-heap of delayed adds ordered by (ready, seq).
 *
 * Nodes carry their own heap index, so a node whose ready time moves
 * earlier is sifted in place and a cancelled node is removed in O(log n).
 * Single-threaded: only the timer thread touches a heap.
 */
#ifndef KWQ_DELAY_HEAP_H
#define KWQ_DELAY_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kwq__heap_node {
	int64_t ready;  /* the queue clock's time at which it becomes due */
	uint64_t seq;   /* call order: breaks ties between equal ready times */
	size_t index;   /* position in the heap array */
};

struct kwq__heap {
	struct kwq__heap_node **v;
	size_t n, cap;
};

/* 0 or -ENOMEM (the heap is unchanged then). */
int kwq__heap_push(struct kwq__heap *h, struct kwq__heap_node *x);
struct kwq__heap_node *kwq__heap_pop(struct kwq__heap *h);
void kwq__heap_remove(struct kwq__heap *h, struct kwq__heap_node *x);
/* x's key (ready, seq) decreased: restore the order. */
void kwq__heap_decreased(struct kwq__heap *h, struct kwq__heap_node *x);
void kwq__heap_free(struct kwq__heap *h);

static inline struct kwq__heap_node *kwq__heap_top(const struct kwq__heap *h)
{
	return h->n ? h->v[0] : NULL;
}

#endif
