/*
 * ring.c - the segment queue (interface and synchronization table in ring.h).
 *
 * Layout
 * ------
 * A segment holds n = seg_slots slots.  The ring has two words, tail for
 * producers and head for consumers; each packs a segment pointer (64-byte
 * aligned, below 2^48) with a claim count (the low CLAIM_BITS bits).  One
 * FAA on a word both claims the slot of index `count` in that segment and
 * takes a reference to the segment: the pointer cannot change under a FAA,
 * because the word only ever moves to the next segment by a CAS of the
 * whole word ("swing").
 *
 * Slots: EMPTY (0) -> item (producer's CAS) -> FINAL (consumer's store);
 *   or   EMPTY (0) -> POISON (consumer's CAS: the producer was late)
 *                  -> FINAL (the late producer's store, it then retries).
 * FINAL means both of the slot's claimants are done with it.
 *
 * A claim with count >= n ("overflow") finds or links the next segment,
 * swings the word to it and retries there.  A producer that links puts its
 * own item in slot 0 of the new segment before the link, and marks the
 * link (bit 0 of s->next, NEXT_FILLED): the tail then swings to (next, 1),
 * slot 0 counting as the linker's claim, and the linker's put is complete
 * with its link.  So a put links at most one segment, and a reserved put
 * (whose reservation is one spare segment) can never need a second one:
 * others cannot fill the segment it links before it claims a slot there.
 * (Linking an empty segment and retrying the claim let them: the retry
 * then needed an unreserved segment, and failed without memory.)  A
 * consumer that helps a stalled producer links an empty segment, unmarked:
 * the tail swings to (next, 0).  The head always swings to (next, 0).
 * Consumers swing the tail (helping) before the head, so head's segment is
 * never ahead of tail's: every segment behind head is finished with on
 * both sides.
 *
 * Reclamation
 * -----------
 * The swing that moves a word off segment s reads the exact number of
 * FAAs that segment s received on that side: n claims of slots (the word
 * moved only after an overflow) and count - n overflow claims.  A segment
 * can be freed when both words have moved off it and
 *   - every slot is FINAL (each slot claimant's last access is the store
 *     or CAS that makes or observes FINAL), and
 *   - every overflow claim has been released (ovf_done, one RMW each, on
 *     the slow path only).
 * The thread that makes the second swing retires the segment onto a list;
 * each retirement scans the list under reclaim_lock and frees what is
 * complete.  A thread descheduled while holding a claim delays the freeing
 * of that one segment, never anyone's progress.  The count cannot overflow
 * its bits: each operation makes at most one overflow claim per segment,
 * so a segment sees at most n + (threads) claims.
 *
 * kwq__ring_len() dereferences the segments the words point to under
 * reclaim_lock, which freeing also holds: a word read under the lock never
 * points to a freed segment (the swing happens-before the retirement).
 *
 * Acquire/release pairs
 * ---------------------
 *   RING.P1 producer CAS EMPTY->item (seq_cst)   pairs with RING.A1 (consumer load,
 *      acquire): the item's contents are visible to the consumer.
 *   RING.P2 consumer CAS EMPTY->POISON (acq_rel) pairs with RING.A2 (producer's
 *      failed CAS, acquire): the consumer is done before the producer
 *      writes FINAL.
 *   RING.F1 producer store FINAL (release), RING.F2 consumer store FINAL (release)
 *      and RING.F3 ovf_done++ (release) pair with RING.A3 (the reclaimer's acquire
 *      loads): every access to a segment happens-before its free.
 *   RING.L1 link CAS of s->next (acq_rel) pairs with RING.L2 (load of s->next,
 *      acquire) and with itself on failure: a new segment is initialized
 *      (its slot 0 and the put's position word included, for a marked
 *      link) before anyone reaches it.
 *   RING.S1 swung++ (acq_rel) pairs with itself: the second swinger sees the
 *      first one's claims[] count.
 *   RING.C1/RING.C2 the claim FAAs and the swings are seq_cst: they are the
 *      publication the eventcount's re-check reads (park.h).
 * Relaxed accesses: claims[] (ordered by RING.S1 and reclaim_lock), the
 * statistics counters, and the swing's first load of a word (only a guess
 * for the CAS, which re-reads it).
 */
#include "ring.h"
#include "../core/alloc.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../core/inject.h"

#define SLOT_EMPTY KWQ__SLOT_EMPTY
#define SLOT_POISON KWQ__SLOT_POISON
#define SLOT_FINAL KWQ__SLOT_FINAL

#define CLAIM_BITS KWQ__RING_CLAIM_BITS
#define CLAIM_MASK KWQ__RING_CLAIM_MASK
#define SEG_ALIGN 64

/* Reclaimed segments kept for reuse (malloc of 8 KiB blocks is slow). */
#define SPARES_MAX 4

/* kwq__ring_len: the tail slots it looks at for puts in flight. */
#define LEN_SCAN 64

/* How long a consumer waits for a late producer before poisoning. */
#define LATE_SPINS 64

enum { TAIL = 0, HEAD = 1 };

/* s->next: the next segment, | NEXT_FILLED when its linker's item is in
 * its slot 0. */
#define NEXT_FILLED ((uintptr_t)1)

static inline uint64_t pack(const struct kwq__ring_seg *s, uint64_t count)
{
	return ((uint64_t)(uintptr_t)s >> 6) << CLAIM_BITS | count;
}

static inline struct kwq__ring_seg *seg_of(uint64_t w)
{
	return kwq__ring_seg_of(w);
}

static inline uint64_t count_of(uint64_t w)
{
	return w & CLAIM_MASK;
}

static inline struct kwq__ring_seg *next_seg(uintptr_t link)
{
	return (struct kwq__ring_seg *)(link & ~NEXT_FILLED);
}

static size_t seg_size(const struct kwq__ring *r)
{
	size_t size = sizeof(struct kwq__ring_seg) + (size_t)r->seg_slots * sizeof(uintptr_t);
	return (size + SEG_ALIGN - 1) & ~(size_t)(SEG_ALIGN - 1);
}

/* Under reclaim_lock: s joins the spares. */
static void spare_push(struct kwq__ring *r, struct kwq__ring_seg *s)
{
	s->retired_next = r->spares;
	r->spares = s;
	uint32_t n = atomic_load_explicit(&r->nspares, memory_order_relaxed);
	atomic_store_explicit(&r->nspares, n + 1, memory_order_seq_cst);
}

/*
 * Under reclaim_lock: take a spare; an unreserved taker only one above the
 * reservations.  RING.V2 (the store of nspares, then the load of
 * reserved, both seq_cst) pairs with RING.V1 in kwq__ring_reserve (the
 * FAA of reserved, then the load of nspares): a reserver either sees the
 * spare gone and makes another, or this taker sees its reservation and
 * puts the spare back.
 */
static struct kwq__ring_seg *spare_take(struct kwq__ring *r, bool reserved)
{
	struct kwq__ring_seg *s = r->spares;
	if (s == NULL)
		return NULL;
	uint32_t n = atomic_load_explicit(&r->nspares, memory_order_relaxed);
	atomic_store_explicit(&r->nspares, n - 1, memory_order_seq_cst); /* RING.V2 */
	if (!reserved && n - 1 < atomic_load_explicit(&r->reserved, memory_order_seq_cst)) {
		atomic_store_explicit(&r->nspares, n, memory_order_relaxed);
		return NULL; /* promised to a reservation */
	}
	r->spares = s->retired_next;
	return s;
}

/* A freed segment: kept as a spare, or freed (under reclaim_lock). */
static void seg_discard(struct kwq__ring *r, struct kwq__ring_seg *s)
{
	atomic_fetch_add_explicit(&r->segs_freed, 1, memory_order_relaxed);
	uint32_t keep = atomic_load_explicit(&r->reserved, memory_order_relaxed);
	if (keep < SPARES_MAX)
		keep = SPARES_MAX;
	if (atomic_load_explicit(&r->nspares, memory_order_relaxed) < keep)
		spare_push(r, s);
	else
		free(s);
}

static struct kwq__ring_seg *seg_alloc(struct kwq__ring *r)
{
	struct kwq__ring_seg *s = kwq__aligned_alloc(SEG_ALIGN, seg_size(r));
	if (s != NULL && (uintptr_t)s >> 48 != 0) { /* does not fit the packed word */
		free(s);
		s = NULL;
	}
	return s;
}

/* A segment for ring index base.  reserved: a reserved put, which may take
 * any spare (its reservation keeps one for it). */
static struct kwq__ring_seg *seg_new(struct kwq__ring *r, uint64_t base, bool reserved)
{
	size_t size = seg_size(r);
	struct kwq__ring_seg *s = NULL;

	pthread_mutex_lock(&r->reclaim_lock); /* once per seg_slots puts */
	s = spare_take(r, reserved);
	pthread_mutex_unlock(&r->reclaim_lock);
	if (s == NULL && (s = seg_alloc(r)) == NULL)
		return NULL;
	memset(s, 0, size); /* every slot EMPTY */
	atomic_init(&s->next, 0);
	s->base = base;
	atomic_init(&s->claims[TAIL], 0);
	atomic_init(&s->claims[HEAD], 0);
	atomic_init(&s->ovf_done, 0);
	atomic_init(&s->swung, 0);
	s->retired_next = NULL;
	atomic_fetch_add_explicit(&r->segs_allocated, 1, memory_order_relaxed);
	return s;
}

int kwq__ring_init(struct kwq__ring *r, uint32_t seg_slots)
{
	if (seg_slots == 0 || seg_slots > KWQ__RING_SEG_MAX)
		return -EINVAL;
	r->seg_slots = seg_slots;
	r->retired = NULL;
	r->spares = NULL;
	atomic_init(&r->nspares, 0);
	atomic_init(&r->reserved, 0);
	atomic_init(&r->segs_allocated, 0);
	atomic_init(&r->segs_freed, 0);
	pthread_mutex_init(&r->reclaim_lock, NULL);
	struct kwq__ring_seg *s = seg_new(r, 0, false);
	if (s == NULL) {
		pthread_mutex_destroy(&r->reclaim_lock);
		return -ENOMEM;
	}
	atomic_init(&r->tail, pack(s, 0));
	atomic_init(&r->head, pack(s, 0));
	return 0;
}

void kwq__ring_destroy(struct kwq__ring *r)
{
	/* Head is never ahead of tail: every live segment follows it. */
	struct kwq__ring_seg *s = seg_of(atomic_load_explicit(&r->head, memory_order_relaxed));
	while (s != NULL) {
		struct kwq__ring_seg *n = next_seg(atomic_load_explicit(&s->next,
								       memory_order_relaxed));
		free(s);
		s = n;
	}
	while ((s = r->retired) != NULL) {
		r->retired = s->retired_next;
		free(s);
	}
	while ((s = r->spares) != NULL) {
		r->spares = s->retired_next;
		free(s);
	}
	pthread_mutex_destroy(&r->reclaim_lock);
}

/* Under reclaim_lock, for a retired segment. */
static bool seg_complete(const struct kwq__ring *r, struct kwq__ring_seg *s)
{
	const uint64_t n = r->seg_slots;
	uint64_t ovf = atomic_load_explicit(&s->claims[TAIL], memory_order_relaxed) +
		       atomic_load_explicit(&s->claims[HEAD], memory_order_relaxed) - 2 * n;

	/* RING.A3: pairs with RING.F3. */
	if (atomic_load_explicit(&s->ovf_done, memory_order_acquire) != ovf)
		return false;
	for (uint64_t i = 0; i < n; i++) {
		/* RING.A3: pairs with RING.F1 and RING.F2. */
		if (atomic_load_explicit(&s->slot[i], memory_order_acquire) != SLOT_FINAL)
			return false;
	}
	return true;
}

static void reclaim(struct kwq__ring *r, struct kwq__ring_seg *retire)
{
	pthread_mutex_lock(&r->reclaim_lock);
	if (retire != NULL) {
		retire->retired_next = r->retired;
		r->retired = retire;
	}
	struct kwq__ring_seg **pp = &r->retired;
	while (*pp != NULL) {
		struct kwq__ring_seg *s = *pp;
		if (seg_complete(r, s)) {
			*pp = s->retired_next;
			seg_discard(r, s);
		} else {
			pp = &s->retired_next;
		}
	}
	pthread_mutex_unlock(&r->reclaim_lock);
}

/*
 * Move *word off s (if it is still on it) to the segment of link: (next, 1)
 * for the tail when the link is marked, else (next, 0).  Returns true when
 * this made the second of the two swings of s: the caller retires it.
 */
static bool swing(_Atomic uint64_t *word, struct kwq__ring_seg *s, uintptr_t link, int side)
{
	uint64_t to = pack(next_seg(link), side == TAIL && (link & NEXT_FILLED) ? 1 : 0);
	uint64_t cur = atomic_load_explicit(word, memory_order_relaxed);

	while (seg_of(cur) == s) {
		KWQ__YIELD();
		/* RING.C2 */
		if (atomic_compare_exchange_weak_explicit(word, &cur, to,
							  memory_order_seq_cst,
							  memory_order_relaxed)) {
			atomic_store_explicit(&s->claims[side], count_of(cur),
					      memory_order_relaxed);
			/* RING.S1: pairs with RING.S1 of the other side's swing. */
			return atomic_fetch_add_explicit(&s->swung, 1, memory_order_acq_rel) == 1;
		}
	}
	return false;
}

/*
 * s->next (0 when out of memory), linking a new segment if there is none.
 * A producer passes its item (and position word): a segment it links holds
 * the item in slot 0, the link is marked NEXT_FILLED, and *placed is set:
 * the put is done.  A consumer passes NULL.
 */
static uintptr_t link_next(struct kwq__ring *r, struct kwq__ring_seg *s, bool reserved,
			   void *item, _Atomic uint64_t *pos, uint64_t tag, bool *placed)
{
	/* RING.L2: pairs with RING.L1. */
	uintptr_t next = atomic_load_explicit(&s->next, memory_order_acquire);
	if (next != 0)
		return next;
	struct kwq__ring_seg *n = seg_new(r, s->base + r->seg_slots, reserved);
	if (n == NULL)
		return 0;
	uintptr_t link = (uintptr_t)n;
	if (item != NULL) {
		if (pos != NULL)
			atomic_store_explicit(pos, tag | (n->base << KWQ__RING_POS_SHIFT),
					      memory_order_relaxed);
		atomic_store_explicit(&n->slot[0], (uintptr_t)item, memory_order_relaxed);
		link |= NEXT_FILLED;
	}
	KWQ__YIELD();
	/* RING.L1: publishes n's initialization. */
	if (atomic_compare_exchange_strong_explicit(&s->next, &next, link,
						    memory_order_acq_rel,
						    memory_order_acquire)) {
		*placed = item != NULL;
		return link;
	}
	pthread_mutex_lock(&r->reclaim_lock); /* never published */
	seg_discard(r, n); /* a spare again: the reservation still needs one */
	pthread_mutex_unlock(&r->reclaim_lock);
	return next;
}

/* Release an overflow claim on s (its last access to s). */
static void release_overflow(struct kwq__ring *r, struct kwq__ring_seg *s, bool retire)
{
	if (retire) {
		/* Before our release: the scan cannot free s while we hold it. */
		pthread_mutex_lock(&r->reclaim_lock);
		s->retired_next = r->retired;
		r->retired = s;
		pthread_mutex_unlock(&r->reclaim_lock);
	}
	/* RING.F3: pairs with RING.A3. */
	atomic_fetch_add_explicit(&s->ovf_done, 1, memory_order_release);
	if (retire)
		reclaim(r, NULL);
}

int kwq__ring_reserve(struct kwq__ring *r)
{
	/* RING.V1: pairs with RING.V2. */
	uint32_t want = atomic_fetch_add_explicit(&r->reserved, 1, memory_order_seq_cst) + 1;
	if (atomic_load_explicit(&r->nspares, memory_order_seq_cst) >= want)
		return 0;
	int rc = 0;
	pthread_mutex_lock(&r->reclaim_lock);
	while (atomic_load_explicit(&r->nspares, memory_order_relaxed) <
	       atomic_load_explicit(&r->reserved, memory_order_relaxed)) {
		struct kwq__ring_seg *s = seg_alloc(r);
		if (s == NULL) {
			atomic_fetch_sub_explicit(&r->reserved, 1, memory_order_relaxed);
			rc = -ENOMEM;
			break;
		}
		spare_push(r, s);
	}
	pthread_mutex_unlock(&r->reclaim_lock);
	return rc;
}

void kwq__ring_unreserve(struct kwq__ring *r)
{
	atomic_fetch_sub_explicit(&r->reserved, 1, memory_order_relaxed);
}

int kwq__ring_put(struct kwq__ring *r, void *item)
{
	KWQ__YIELD();
	/* RING.C1 */
	uint64_t w = atomic_fetch_add_explicit(&r->tail, 1, memory_order_seq_cst);
	return kwq__ring_put_from(r, item, NULL, 0, false, w);
}

/*
 * A put from its claim w on: the fast half's claim (its slot poisoned, or
 * past the segment's end), or kwq__ring_put's.  A poisoned slot fails the
 * CAS again here (only its producer changes a POISON slot).
 */
int kwq__ring_put_from(struct kwq__ring *r, void *item, _Atomic uint64_t *pos, uint64_t tag,
		       bool reserved, uint64_t w)
{
	const uint64_t n = r->seg_slots;

	for (;; KWQ__YIELD(),
		/* RING.C1: the next claim. */
		w = atomic_fetch_add_explicit(&r->tail, 1, memory_order_seq_cst)) {
		struct kwq__ring_seg *s = seg_of(w);
		uint64_t i = count_of(w);

		if (i < n) {
			uintptr_t v = SLOT_EMPTY;
			/* Before RING.P1 publishes the slot: a consumer that takes it
			 * reads this position or a later one. */
			if (pos != NULL)
				atomic_store_explicit(pos, tag | ((s->base + i) << KWQ__RING_POS_SHIFT),
						      memory_order_relaxed);
			KWQ__YIELD();
			/* RING.P1: pairs with RING.A1.  RING.A2 on failure: pairs with RING.P2. */
			if (atomic_compare_exchange_strong_explicit(&s->slot[i], &v,
								    (uintptr_t)item,
								    memory_order_seq_cst,
								    memory_order_acquire)) {
				if (reserved)
					kwq__ring_unreserve(r);
				return 0;
			}
			/* Poisoned by a consumer that gave up on us. RING.F1: pairs with RING.A3. */
			atomic_store_explicit(&s->slot[i], SLOT_FINAL, memory_order_release);
			continue;
		}

		bool placed = false;
		uintptr_t next = link_next(r, s, reserved, item, pos, tag, &placed);
		if (next == 0) {
			assert(!reserved); /* a spare was kept for it */
			release_overflow(r, s, false);
			return -ENOMEM;
		}
		/* The tail is off s once swing returns: a get's pending check
		 * sees a placed item. */
		release_overflow(r, s, swing(&r->tail, s, next, TAIL));
		if (placed) {
			if (reserved)
				kwq__ring_unreserve(r);
			return 0;
		}
	}
}

void *kwq__ring_take(struct kwq__ring *r)
{
	uint64_t pos;
	return kwq__ring_take_at(r, &pos);
}

/*
 * A take from its claim w on: the fast half's claim (its slot not yet
 * published, or past the segment's end).
 */
void *kwq__ring_take_from(struct kwq__ring *r, uint64_t *pos, uint64_t w)
{
	const uint64_t n = r->seg_slots;

	for (;;) {
		struct kwq__ring_seg *s = seg_of(w);
		uint64_t i = count_of(w);

		if (i < n) {
			/* RING.A1: pairs with RING.P1. */
			uintptr_t v = atomic_load_explicit(&s->slot[i], memory_order_acquire);
			for (int k = 0; v == SLOT_EMPTY && k < LATE_SPINS; k++) {
				kwq__cpu_relax();
				v = atomic_load_explicit(&s->slot[i], memory_order_acquire);
			}
			if (v == SLOT_EMPTY) {
				KWQ__YIELD();
				/* RING.P2: pairs with RING.A2.  RING.A1 on failure: the item came. */
				if (atomic_compare_exchange_strong_explicit(&s->slot[i], &v,
									    SLOT_POISON,
									    memory_order_acq_rel,
									    memory_order_acquire))
					goto again;
			}
			/* Read before RING.F2: after it the segment may be recycled. */
			*pos = s->base + i;
			/* RING.F2: pairs with RING.A3. */
			atomic_store_explicit(&s->slot[i], SLOT_FINAL, memory_order_release);
			return (void *)v;
		}

		/* Overflow: s is exhausted for consumers. */
		/* RING.L2 */
		uintptr_t next = atomic_load_explicit(&s->next, memory_order_acquire);
		if (next == 0) {
			uint64_t t = atomic_load_explicit(&r->tail, memory_order_seq_cst);
			if (seg_of(t) == s && count_of(t) <= n) {
				/* No producer went past s: empty. */
				release_overflow(r, s, false);
				return NULL;
			}
			/* A producer overflowed s: help it link the next one. */
			bool placed = false;
			next = link_next(r, s, false, NULL, NULL, 0, &placed);
			if (next == 0) {
				release_overflow(r, s, false);
				return NULL;
			}
		}
		bool retire = swing(&r->tail, s, next, TAIL); /* never pass tail */
		retire |= swing(&r->head, s, next, HEAD);
		release_overflow(r, s, retire);
again:
		if (!kwq__ring_pending(r))
			return NULL;
		KWQ__YIELD();
		/* RING.C1: the next claim. */
		w = atomic_fetch_add_explicit(&r->head, 1, memory_order_seq_cst);
	}
}

size_t kwq__ring_len(struct kwq__ring *r)
{
	const uint64_t n = r->seg_slots;

	pthread_mutex_lock(&r->reclaim_lock);
	uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
	uint64_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
	struct kwq__ring_seg *ts = seg_of(t);
	uint64_t hc = count_of(h) < n ? count_of(h) : n;
	uint64_t tc = count_of(t) < n ? count_of(t) : n;
	uint64_t hi = seg_of(h)->base + hc;
	uint64_t ti = ts->base + tc;
	/* Claimed, not yet published: not visible to a take.  Slots at or
	 * past head were claimed by no consumer, so each is EMPTY or an item. */
	uint64_t from = ti > LEN_SCAN ? ti - LEN_SCAN : 0;
	if (from < ts->base)
		from = ts->base;
	if (from < hi)
		from = hi;
	uint64_t unpublished = 0;
	for (uint64_t i = from; i < ti; i++)
		unpublished += atomic_load_explicit(&ts->slot[i - ts->base],
						    memory_order_relaxed) == SLOT_EMPTY;
	pthread_mutex_unlock(&r->reclaim_lock);
	return ti > hi + unpublished ? (size_t)(ti - hi - unpublished) : 0;
}
