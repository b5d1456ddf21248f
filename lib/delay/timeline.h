/*
 * timeline.h - the timer thread's ordered set of (ready, seq, owner)
 * entries: earliest first, equal ready times by seq.
 *
 * Two structures behind one peek/pop:
 *
 *   run   a FIFO ring that takes an entry that sorts after its tail.  A
 *         queue whose delays are all equal (a fixed backoff, a resync
 *         period) sees its ready times arrive in order: every push and
 *         every pop is O(1) and touches memory in sequence.
 *   heap  a binary min-heap, for what arrives out of order.
 *
 * Entries carry their key inline (24 bytes), so neither structure follows
 * a pointer to compare.  Nothing is removed from the middle: an owner
 * whose entry went stale (its ready time moved earlier, or it was
 * cancelled) leaves the old entry in place, the caller counts it, and
 * kwq__timeline_filter() compacts both structures once the stale ones
 * outnumber the rest.  Removal in O(log n) would need each owner to carry
 * its position, written on every sift.
 *
 * Single-threaded: only the timer thread touches a timeline.
 */
#ifndef KWQ_DELAY_TIMELINE_H
#define KWQ_DELAY_TIMELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kwq__tl_entry {
	int64_t ready;  /* the queue clock's time at which it becomes due */
	uint64_t seq;   /* call order: breaks ties between equal ready times */
	void *owner;
};

struct kwq__timeline {
	struct kwq__tl_entry *run;  /* ring of run_mask + 1 entries */
	size_t run_mask;
	uint64_t run_head, run_tail; /* free-running; tail - head entries */
	struct kwq__tl_entry *heap;
	size_t heap_n, heap_cap;
};

static inline bool kwq__tl_before(const struct kwq__tl_entry *a, const struct kwq__tl_entry *b)
{
	return a->ready < b->ready || (a->ready == b->ready && a->seq < b->seq);
}

/* Room for one more push, so that a push cannot fail: 0 or -ENOMEM. */
int kwq__timeline_reserve(struct kwq__timeline *t);

/* Add e; kwq__timeline_reserve() must have succeeded since the last push. */
void kwq__timeline_push(struct kwq__timeline *t, const struct kwq__tl_entry *e);

/* The earliest entry, or NULL when empty; valid until the next change. */
const struct kwq__tl_entry *kwq__timeline_peek(const struct kwq__timeline *t);

/* Remove the entry kwq__timeline_peek() returns (the timeline is not empty). */
void kwq__timeline_pop(struct kwq__timeline *t);

size_t kwq__timeline_size(const struct kwq__timeline *t);

/*
 * Keep the entries for which keep(e, ctx) is true, in their order; keep
 * is called once per entry and may act on the ones it drops.  O(n).
 */
void kwq__timeline_filter(struct kwq__timeline *t,
			  bool (*keep)(const struct kwq__tl_entry *e, void *ctx), void *ctx);

void kwq__timeline_free(struct kwq__timeline *t);

#endif
