/*
 * ring.h - an unbounded, lock-free MPMC FIFO of pointers.
 *
 * A fetch-and-add array queue in linked segments (Correia and Ramalhete's
 * FAA array queue; the idea of LCRQ, Morrison and Afek, PPoPP 2013): a
 * producer claims a slot with one FAA and publishes with one CAS; a
 * consumer claims a slot with one FAA and, if the producer has not yet
 * published, poisons the slot so that the producer retries elsewhere.  No
 * thread ever waits for another: a thread descheduled mid-operation costs
 * the others one slot, never a stall.  Unbounded: a full segment is
 * followed by a new one; no put fails or blocks for capacity.
 *
 * Reclamation needs no per-thread records and no extra RMW on the fast
 * path: the FAA that claims a slot counts in the same 64-bit word as the
 * segment pointer (split reference counting).  ring.c explains it.
 *
 * Synchronization table ("any": concurrently with any call on the ring;
 * "excl": no other call in flight):
 *
 *   call                     concurrency  progress      ordering
 *   -----------------------  -----------  ------------  ------------------------
 *   kwq__ring_init           excl         allocates     -
 *   kwq__ring_destroy        excl         -             -
 *   kwq__ring_put(_at)       any          lock-free     release (and seq_cst)
 *   kwq__ring_reserve        any          short lock    seq_cst (RING.V1/RING.V2)
 *   kwq__ring_unreserve      any          wait-free     -
 *   kwq__ring_put_reserved_at any         lock-free     as put; never fails
 *   kwq__ring_take(_at)      any          lock-free     acquire
 *   kwq__ring_pending        any          wait-free     seq_cst loads
 *   kwq__ring_len            any          short lock    snapshot
 *
 * Items are non-NULL pointers with the two low bits clear (any object from
 * malloc qualifies): values 0, 1 and 2 mark slot states.
 */
#ifndef KWQ_SHARDED_RING_H
#define KWQ_SHARDED_RING_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/inject.h"

/* Slots per segment by default: 8 KiB segments. */
#define KWQ__RING_SEG_DEFAULT 1024u
#define KWQ__RING_SEG_MAX 65536u

struct kwq__ring_seg;

struct kwq__ring {
	/* Producers' word and consumers' word: each on a line of its own. */
	alignas(64) _Atomic uint64_t tail;   /* packed (segment, claims) */
	alignas(64) _Atomic uint64_t head;   /* packed (segment, claims) */
	alignas(64) pthread_mutex_t reclaim_lock;
	struct kwq__ring_seg *retired;        /* under reclaim_lock */
	struct kwq__ring_seg *spares;         /* under reclaim_lock */
	_Atomic uint32_t nspares;            /* changed under reclaim_lock (RING.V*) */
	_Atomic uint32_t reserved;           /* puts promised a segment (RING.V*) */
	uint32_t seg_slots;
	_Atomic uint64_t segs_allocated;     /* statistics for tests */
	_Atomic uint64_t segs_freed;
};

/* seg_slots: 1..KWQ__RING_SEG_MAX (tests use tiny ones).  0 or -ENOMEM. */
int kwq__ring_init(struct kwq__ring *r, uint32_t seg_slots);

/* Frees the segments, not the items. */
void kwq__ring_destroy(struct kwq__ring *r);

/* Append item at the tail.  0, or -ENOMEM when a new segment is needed
 * and cannot be allocated (nothing is appended then). */
int kwq__ring_put(struct kwq__ring *r, void *item);

/* Remove the head, or NULL when the ring is empty. */
void *kwq__ring_take(struct kwq__ring *r);

/* put_at, put_reserved_at, take_at and pending are inline (below). */

/*
 * Positions, for consumers that must tell a current copy of an item from
 * a stale one (an item re-put elsewhere while a copy still waits here).
 * Every put claims a distinct ring index, counted from 0 (below 2^48).
 * put_at stores tag | (index << KWQ__RING_POS_SHIFT) into *pos (relaxed;
 * pos is not NULL)
 * after claiming the slot and before publishing it (RING.P1), so a caller can
 * keep a few bits of its own beside the position in one word; take_at
 * returns the index of the slot taken.
 * A consumer that takes an item therefore reads, through the item, the
 * position of this put or of a later one.
 */
#define KWQ__RING_POS_SHIFT 3


/*
 * Reservations, for a put that must not fail (a re-queue on done).
 * kwq__ring_reserve() promises one later put the segment it may need: it
 * keeps at least as many spare segments as there are reservations, and an
 * unreserved put never takes a spare below that.  0 or -ENOMEM (nothing
 * reserved).  kwq__ring_put_reserved_at() is put_at on a reservation, which
 * it gives back when it returns: it cannot fail.  Until then it holds at
 * most one spare at a time (taken to link a segment, put back when another
 * link wins), and a segment it links carries its item, so it never needs a
 * second: spares + spares held by reserved puts >= reservations, always.
 * kwq__ring_unreserve() gives a reservation back unused.
 */
int kwq__ring_reserve(struct kwq__ring *r);
void kwq__ring_unreserve(struct kwq__ring *r);

/*
 * Whether take() may find an item: false means the ring was empty at the
 * moment of the last load.  seq_cst loads (the eventcount's re-check).
 */
static inline bool kwq__ring_pending(struct kwq__ring *r);

/*
 * The number of items a take can find: a slot claimed by a put that has
 * not yet published into it is not counted (among the last slots of the
 * tail segment, where puts in flight are).  Exact when no call is in
 * flight.
 */
size_t kwq__ring_len(struct kwq__ring *r);

/* ------------------------------------------------------------------------ */
/* Inline fast paths.  A put or take whose claim lands inside its segment
 * and finds the slot as expected costs one FAA and one CAS (put) or the
 * two loads of kwq__ring_pending, one FAA, a load and a store (take), with
 * no call; everything else (a late
 * producer, a poisoned slot, the segment's end) goes on, from the claim
 * already made, in ring.c.  The layout below is ring.c's (its essay). */

#define KWQ__RING_CLAIM_BITS 22
#define KWQ__RING_CLAIM_MASK ((UINT64_C(1) << KWQ__RING_CLAIM_BITS) - 1)
#define KWQ__SLOT_EMPTY ((uintptr_t)0)
#define KWQ__SLOT_POISON ((uintptr_t)1)
#define KWQ__SLOT_FINAL ((uintptr_t)2)

struct kwq__ring_seg {
	_Atomic uintptr_t next;
	uint64_t base;                  /* ring index of slot 0 */
	_Atomic uint64_t claims[2];     /* FAAs received, set by the swings */
	_Atomic uint64_t ovf_done;      /* overflow claims released */
	_Atomic uint32_t swung;         /* words moved off this segment */
	struct kwq__ring_seg *retired_next;
	_Atomic uintptr_t slot[];
};

static inline struct kwq__ring_seg *kwq__ring_seg_of(uint64_t w)
{
	return (struct kwq__ring_seg *)(uintptr_t)((w >> KWQ__RING_CLAIM_BITS) << 6);
}

/* The slow halves: w is the claim (the FAA's result) the fast half made. */
int kwq__ring_put_from(struct kwq__ring *r, void *item, _Atomic uint64_t *pos, uint64_t tag,
		       bool reserved, uint64_t w);
void *kwq__ring_take_from(struct kwq__ring *r, uint64_t *pos, uint64_t w);

static inline int kwq__ring_put_fast(struct kwq__ring *r, void *item, _Atomic uint64_t *pos,
				     uint64_t tag, bool reserved)
{
	KWQ__YIELD();
	/* RING.C1: the claim. */
	uint64_t w = atomic_fetch_add_explicit(&r->tail, 1, memory_order_seq_cst);
	uint64_t i = w & KWQ__RING_CLAIM_MASK;

	if (__builtin_expect(i < r->seg_slots, 1)) {
		struct kwq__ring_seg *s = kwq__ring_seg_of(w);
		uintptr_t v = KWQ__SLOT_EMPTY;
		/* Before RING.P1 publishes the slot: a consumer that takes it
		 * reads this position or a later one. */
		atomic_store_explicit(pos, tag | ((s->base + i) << KWQ__RING_POS_SHIFT),
				      memory_order_relaxed);
		KWQ__YIELD();
		/* RING.P1: pairs with RING.A1. */
		if (__builtin_expect(atomic_compare_exchange_strong_explicit(
					     &s->slot[i], &v, (uintptr_t)item,
					     memory_order_seq_cst, memory_order_acquire), 1)) {
			if (reserved)
				kwq__ring_unreserve(r);
			return 0;
		}
	}
	return kwq__ring_put_from(r, item, pos, tag, reserved, w);
}

static inline int kwq__ring_put_at(struct kwq__ring *r, void *item, _Atomic uint64_t *pos,
				   uint64_t tag)
{
	return kwq__ring_put_fast(r, item, pos, tag, false);
}

static inline void kwq__ring_put_reserved_at(struct kwq__ring *r, void *item,
					     _Atomic uint64_t *pos, uint64_t tag)
{
	(void)kwq__ring_put_fast(r, item, pos, tag, true); /* cannot fail */
}

static inline bool kwq__ring_pending(struct kwq__ring *r)
{
	uint64_t h = atomic_load_explicit(&r->head, memory_order_seq_cst);
	uint64_t t = atomic_load_explicit(&r->tail, memory_order_seq_cst);

	if ((h ^ t) >> KWQ__RING_CLAIM_BITS)
		return true; /* head is behind: a whole segment to go */
	if ((t & KWQ__RING_CLAIM_MASK) > r->seg_slots)
		return true; /* a producer overflowed: a next segment is coming */
	return (h & KWQ__RING_CLAIM_MASK) < (t & KWQ__RING_CLAIM_MASK);
}

static inline void *kwq__ring_take_at(struct kwq__ring *r, uint64_t *pos)
{
	if (!kwq__ring_pending(r))
		return NULL;
	KWQ__YIELD();
	/* RING.C1: the claim. */
	uint64_t w = atomic_fetch_add_explicit(&r->head, 1, memory_order_seq_cst);
	uint64_t i = w & KWQ__RING_CLAIM_MASK;

	if (__builtin_expect(i < r->seg_slots, 1)) {
		struct kwq__ring_seg *s = kwq__ring_seg_of(w);
		/* RING.A1: pairs with RING.P1. */
		uintptr_t v = atomic_load_explicit(&s->slot[i], memory_order_acquire);
		if (__builtin_expect(v != KWQ__SLOT_EMPTY, 1)) {
			/* Read before RING.F2: after it the segment may be recycled. */
			*pos = s->base + i;
			/* RING.F2: pairs with RING.A3. */
			atomic_store_explicit(&s->slot[i], KWQ__SLOT_FINAL, memory_order_release);
			return (void *)v;
		}
	}
	return kwq__ring_take_from(r, pos, w);
}

#endif
