/*
 * sharded.c - the default design: sharded per-key state, one global
 * lock-free FIFO per priority level, parked consumers.
 *
 * Design
 * ======
 *
 * Three parts, each with one job:
 *
 *   shards   per-key state.  A key hashes (bits 48 and up of its 64-bit
 *            hash) to one of N shards (N a power of two), each one cache-line-
 *            aligned struct with a lock and a ConcurrencyKit ck_hs set of
 *            entries.  An entry is the interned key plus one state word,
 *            so one lookup decides an add (dirty and processing of
 *            client-go are states of the one entry, as the Linux
 *            workqueue's PENDING bit and Tokio's RUNNING|NOTIFIED are).
 *   lanes    the FIFO order across shards: per priority level in use, one
 *            unbounded lock-free MPMC queue of entry pointers (ring.c).
 *            Lane 0 (priority 0) is built in; a queue that only ever sees
 *            priority 0 never looks at another lane (s->lanes stays NULL).
 *            Gets scan the lanes from the highest priority down.
 *   park     idle consumers (core/park.c): spin about a microsecond, then
 *            sleep on a futex; producers wake one only when somebody is
 *            parked and nobody spins, and a woken consumer that finds work
 *            wakes the next.
 *
 * Entry states (the state word):
 *
 *     ABSENT --add--> QUEUED --get--> HELD --done--> ABSENT
 *                                      |  ^
 *                                   add|  |done (re-queued at the tail)
 *                                      v  |
 *                                   HELD|DIRTY --done--> QUEUED
 *
 *   add on QUEUED or HELD|DIRTY changes nothing (but see SHD.H1 below).
 *   kwq_cancel takes QUEUED back to ABSENT (leaving its copy in the lane
 *   stale) and HELD|DIRTY back to HELD (giving back the reservation of
 *   I7); it ends a wait as an immediate add does.
 *   ABSENT entries stay in their shard's set as a cache: the next add of
 *   the key reuses the entry with no malloc, no hash insert and no free.
 *   A shard sweeps them with a second-chance policy (sweep()): an entry
 *   ABSENT through a whole sweep interval is freed.  Sweeps cost O(1)
 *   amortized; the cache holds at most about twice the working set of
 *   recurring keys, and stays at a fixed size under unique keys.
 *
 * Priorities and stale copies.  An entry is queued with qprio (its item's
 * priority field, which a get then hands out as it is); a held+
 * dirty one remembers dprio, the highest priority asked since its get, and
 * done queues it with that.  A queued entry re-added with a higher priority
 * moves to the tail of that lane (controller-runtime): the add puts a new
 * copy there and leaves the old copy where it is, stale.  The entry's
 * state word holds, above the state bits, the position of its current copy
 * (lane tag and ring index), and a put stores QUEUED with the new position
 * in one store before it publishes the slot (SHD.P3: ring_put_at).  A get
 * that takes a copy wins the entry with one CAS from exactly what that
 * copy's put stored (QUEUED at this position) to HELD: no separate load of
 * the position can be stale, and a copy that is not current, or an entry
 * that is not QUEUED, fails the CAS; the get then settles it under the
 * shard lock, where every put happens, and drops a stale copy.  Positions
 * are unique (a ring index is never reused; the tag names the lane), so a
 * stale copy is never mistaken for a current one, however often the key
 * is re-queued.  entry.stale counts its stale copies: a sweep never frees
 * an entry a lane still points to; s->stale, their sum, is taken off
 * kwq_len.  While a raise puts the new copy the entry is MOVING (its SHD.H1
 * CAS), so a get holding the old copy cannot win it in between.  (A first
 * version kept the position in a word of its own and loaded it before the
 * CAS: the load could return an old position and a stale copy could win a
 * re-queued entry through a relaxed store, with no happens-before; the
 * delay stress under TSan caught it.)
 *
 * Delayed adds (lib/delay/delay.c explains the whole): the key's wait is
 * entry.wait, a pointer to the timer's record, set, merged, cancelled and
 * fired only under the shard lock, by add_after, add and fire.  So an
 * immediate add cancels a wait in its own critical section, and a record
 * the timer fires after that is recognised as stale (entry.wait no longer
 * points to it) and ignored: no lookup outside the shard, no lock beyond
 * it, nothing after the add.
 *
 * Who changes what:
 *   - add, add_after, fire and done change the state word, qprio, dprio,
 *     wait and stale only under the shard lock;
 *   - get changes QUEUED -> HELD with a CAS (SHD.H2) without the lock on its
 *     fast path; of two copies of one entry only one CAS wins;
 *   - cancel changes QUEUED -> ABSENT with a CAS under the lock, racing
 *     that one: one of the two wins, and a get whose CAS lost settles
 *     under the lock (take_settle) and drops the copy as stale;
 *   - the lanes are touched by add and done (put, under the shard lock)
 *     and by get (take, no lock).
 *
 * Invariants (on a quiescent queue; "under lock" also while running):
 *   I1 an entry has a current copy in a lane iff its state is QUEUED:
 *      the copy at the position in its state word, in the lane of qprio;
 *      its other copies are stale and are dropped when taken;
 *   I2 an entry is in its shard's set from its first add until a sweep
 *      frees it, and a sweep frees only ABSENT entries (under lock): no
 *      pointer to a freed entry survives in the ring or in a handle;
 *   I3 shard.live = the shard's QUEUED + HELD + HELD|DIRTY entries, and
 *      shard.cached = its ABSENT entries (under lock);
 *   I4 never two handles of one key: a handle exists from the get that
 *      made the entry HELD to the done that left HELD, and there is one
 *      entry per key;
 *   I5 kwq_len = copies in the lanes (ring.c counts them) - s->stale.
 *   I6 entry.wait != NULL (the key waits on a delayed add) only while the
 *      entry is ABSENT or HELD: a QUEUED or HELD|DIRTY key is due, so a
 *      delayed add of it is absorbed, and the add or the firing that
 *      makes it so ends the wait in the same critical section.  A sweep
 *      never frees a waiting entry.
 *   I7 a HELD|DIRTY entry holds one ring reservation on the lane of its
 *      dprio (ring.h): its re-queue on done cannot fail.
 *
 * Linearization points:
 *   add    the shard lock's critical section (the state change, and the
 *          ring put, which happens inside it: so a shutdown, which closes
 *          each shard under its lock, sees every accepted add already in
 *          the ring); -ESHUTDOWN when the shard is closed.
 *   get    the CAS QUEUED -> HELD on the copy it took; -ETIMEDOUT
 *          and -ESHUTDOWN at the ring's last emptiness check (park.c
 *          re-checks after seeing the close, so a queued item is never
 *          left behind by an -ESHUTDOWN).
 *   done   its critical section under the shard lock.
 *   add_after  its critical section: absorbed (QUEUED, HELD|DIRTY), or
 *          the wait set, merged or moved earlier (ABSENT, HELD).
 *   fire   its critical section: the record is the entry's current wait
 *          (or stale, and nothing happens), and the key is added.
 *   cancel its critical section; on a QUEUED entry its CAS to ABSENT (a
 *          get whose CAS came first linearizes before it: the key was
 *          held, nothing pending).
 *   len    the lanes' snapshots less the stale count (exact when
 *          quiescent).
 *   shutdown  the last shard closed (each closing drops its shard's waits:
 *          shutdown drops every waiting add); drain returns when the count of
 *          live entries counted at shutdown (plus nothing new: adds are
 *          refused) reaches zero, or when a plain shutdown happens.
 *
 * FIFO within a priority: one lane, entries appended in the order their
 * adds (or the done that re-queues them) linearize, taken in lane order.
 * A single thread's add(a), add(b) puts a before b.  Across priorities a
 * get takes from the highest lane it finds non-empty; an item added to a
 * higher lane after the get looked there may be passed over by that get
 * (the get linearizes before that add).
 *
 * Happens-before (the contract in kwq.h):
 *   - add(k) -> the get covering it: a first add puts the entry in the
 *     ring with a release (RING.P1 in ring.c); the get's take acquires it.  A
 *     coalesced add on QUEUED does an acq_rel CAS QUEUED->QUEUED (SHD.H1), a
 *     release RMW that the getter's CAS (SHD.H2, acq_rel) reads or
 *     follows in the state word's modification order: a plain load would
 *     not synchronize with anything.  If the get's CAS came first, the CAS
 *     fails, sees HELD and the add makes HELD|DIRTY under the lock, which
 *     the done takes; the done's re-queue (ring put) releases to the next
 *     get.  Adds on HELD or HELD|DIRTY are ordered before the done by the
 *     lock, and the done's put before the next get.
 *   - done -> next get of the key: done's unlock -> the next add's lock
 *     (or the done's own put for HELD|DIRTY) -> put -> take.
 *
 * Acquire/release pairs (labels appear at each access):
 *   SHD.L1 shard lock acquire (exchange, acquire) pairs with SHD.L2 (unlock,
 *      store release): everything under a shard lock.
 *   SHD.H1 add's CAS QUEUED->QUEUED (acq_rel) pairs with SHD.H2, get's CAS
 *      QUEUED->HELD (acq_rel): coalesced add -> covering get.
 *   SHD.M1 a raise whose put failed stores QUEUED at the old copy (release),
 *      pairing with SHD.H2 as a put's store does through the slot.
 *   SHD.P3 the put's relaxed store of the state word (QUEUED, position) is
 *      ordered before the slot's publication (RING.P1, seq_cst); a taker reads
 *      it after RING.A1, so its CAS sees this store or a later one.
 *   SHD.R1 publishing a new lane set (release) pairs with SHD.A1 (its acquire
 *      loads in lane_find, take, pending_cb, len): the lanes are built.
 *   SHD.D1 drain: remaining-- (acq_rel) pairs with SHD.D2 (drainer's load,
 *      acquire): the drainer sees the work done.
 *   The ring's (RING.*), the park's (PARK.*) and the drainers' wait
 *   (DRN.*) are in ring.c, park.h and core/drain.h.
 *
 * Relaxed accesses, and why they are safe:
 *   - state loads and stores under the shard lock: the lock orders them
 *     with every other add and done; get's only transition is SHD.H2, an
 *     RMW, which cannot be lost to a relaxed store because stores to the
 *     state happen only on ABSENT or HELD* entries, which get never
 *     touches (I1);
 *   - q->shutdown is read with acquire by kwq_shutting_down and changed
 *     under shutdown_lock; shard.closed is a plain field under its lock;
 *   - the put's store of the state word (SHD.P3) is relaxed: the only get
 *     whose CAS can match it holds that copy's slot, acquired (RING.A1) from
 *     the publication that follows the store;
 *   - qprio (the item's priority field, plain) is written under the lock
 *     only while no get can hold the entry (ABSENT, QUEUED and MOVING in a
 *     raise, and by the holder's own done), and before the put that
 *     publishes the copy a get then takes (RING.P1): the holder reads the
 *     value its put published, or a raise's, either of which is a
 *     priority the item was queued with;
 *   - s->stale only feeds kwq_len's snapshot;
 *   - cancel's CAS QUEUED -> ABSENT is relaxed: it publishes nothing (the
 *     entry's fields a later add or get reads are written under the lock,
 *     which orders them), and a get whose CAS it beat takes the lock
 *     before it drops the copy;
 *   - kwq_item_dirty's load of the state word: the holder reads it, and
 *     the word's state bits change only under the lock while the entry is
 *     HELD*, by adds and fires whose own linearization it reports.
 *
 * Shard lock: a test-and-test-and-set spinlock on a C11 atomic with
 * exponential backoff and sched_yield after 32 rounds (lock-holder
 * preemption: threads outnumber the 2 vCPUs here).  Its unlock is a plain
 * release store, where a mutex's unlock is a second locked RMW.  Measured
 * against a pthread mutex (see WHAT THE MEASUREMENTS DECIDED).
 *
 * ThreadSanitizer sees every edge: all synchronization is C11 atomics or
 * pthread; ck_hs (uninstrumented libck.so, inline-asm atomics) is touched
 * only under the shard lock, so its internal accesses need none.  ck_hs
 * runs in SPMC|OBJECT mode with the precomputed hash (kwq_item.hash) and
 * no DELETE mode (removal is rare: sweeps only); the set is sized by use,
 * and thanks to the ABSENT cache a recurring key costs one lookup and no
 * insert or remove.  Debian's libck is built with
 * CK_MD_POINTER_PACK_DISABLE, so ck_hs stores no hash bits in its slots;
 * the set's values carry 7 bits of the hash themselves (set_value), so
 * that the compare callback rejects another key's slot without reading
 * its entry.
 *
 * Metrics (named queues only): one kwq__metrics_block per shard; the add
 * (counted, and its time recorded, before the put that publishes the
 * entry) and the done update their half with plain stores under the shard
 * lock, the get of an entry of that shard its half with relaxed RMWs
 * without it (metrics.h); a read sums the blocks and walks
 * the held entries under each shard's lock.  An unnamed queue's entries
 * carry no timestamps (entry_times is a prefix allocated only for named
 * queues) and its hot paths test one pointer.
 *
 * Parking deviates from the textbook one-word eventcount: the waiter
 * count and the wake token are two words, and each parked thread sleeps
 * on its own futex word, popped by the waker from an idle list under a
 * mutex.  The waker knows exactly whom it woke, so the token (the "wake
 * pending" state) always has an owner who gives it back: the prototype's
 * lost wake-up (a pending flag left set when the woken worker had already
 * found work) cannot happen by construction.  stress/burst_probe catches
 * that bug and a missing chain wake in its first round.
 *
 * WHAT THE MEASUREMENTS DECIDED (the figures, with machine, date and
 * commit: results/DESIGN-CHOICES.md):
 *
 *   - The shard lock is a spinlock, not a pthread mutex: on W2 at (4,4)
 *     and (8,8) it gave more total work per second (adds + gets).  The
 *     mutex variant stays buildable for the comparison (shard_mutex).
 *   - max(256, 64 * CPUs) shards, at most 4096 (shard_count()): 8 shards
 *     gave about 70% of 256's throughput, and beyond 1024 nothing improved.
 *   - The sweep floor (sweep_min, CACHE_KEYS): with 32 ABSENT entries a
 *     shard, keys cycling over a longer period were freed and recreated on
 *     every pass (malloc, free and ck_hs put/remove were a quarter of W2's
 *     instructions at K=100000); keeping up to 128k ABSENT entries a queue
 *     lifted W2 (4,4) K=100000 by about 40%.
 *   - Where the W1 cycle goes: 6 locked RMWs (add: lock xchg, tail FAA,
 *     slot CAS; get: head FAA, state CAS; done: lock xchg), each 5-8 ns
 *     uncontended on the VMs measured, and about 350 instructions
 *     (callgrind): the key hash, the two ring operations, the calls'
 *     bookkeeping.  What cut it from about 580: the ring's common put and
 *     take inline, with their slow halves out of line; short common paths
 *     for add and done, with everything rare (the lock's spin, a new key,
 *     a closed shard, a sweep, the named queue's counters) out of line, so
 *     that the hot functions save no registers; and a two-way lookaside
 *     in front of ck_hs, which a direct-mapped one left to pay a ck_hs
 *     probe (about 200 instructions) on 39% of W1's adds.  A get that
 *     claims the entry and the slot in one RMW, and a done of a clean
 *     HELD entry by one CAS without the lock, are what would cut the
 *     locked RMWs.
 *   - A named queue reads its clock on every add, get and done: the
 *     metrics clock is the scaled TSC where the kernel trusts it (one
 *     RDTSC against a vDSO clock_gettime at about three times its cost),
 *     and the add's and done's counters are plain stores under the shard
 *     lock; only the get's counters are RMWs.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ck_hs.h>

#include "../core/inject.h"
#include "../core/alloc.h"
#include "../core/key.h"
#include "../core/clock.h"
#include "../core/drain.h"
#include "../core/ops.h"
#include "../core/park.h"
#include "../metrics/metrics.h"
#include "ring.h"

#define HS_MODE (CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT)
#define HS_INITIAL 8
#define SWEEP_MIN 32
#define HOT_SETS 8 /* lookaside: sets of two ways */
#define CACHE_KEYS 131072u

/* The hot paths' helpers: inlined into add, get and done whatever the
 * compiler's estimate (a call's saves and restores were a tenth of the
 * W1 cycle). */
#define HOT_INLINE inline __attribute__((always_inline))

/* remaining = BIAS + live entries while shutdown counts the shards. */
#define DRAIN_BIAS (UINT64_C(1) << 62)

enum {
	ST_ABSENT = 0,
	ST_QUEUED = 1,
	ST_HELD = 2,
	ST_HELD_DIRTY = 3,
	ST_MOVING = 4, /* QUEUED, being raised to another lane (under lock) */
};

/*
 * An entry is one allocation: this header, then at ITEM_OFFSET the public
 * struct kwq_item, which ends in the key bytes.  (ISO C forbids a struct
 * ending in a flexible array as a member, hence the offset.)
 */
struct entry {
	_Atomic uint64_t state; /* ST_* in the low bits; above them the lane
				   tag and ring index of its current copy */
	struct kwq__wait *wait; /* pending delayed add, or NULL (under lock; I6) */
	int32_t dprio;         /* HELD|DIRTY: priority to re-queue with (under lock) */
	unsigned stale : 31;   /* stale copies of it in the lanes (under lock) */
	unsigned aged : 1;     /* ABSENT through a whole sweep interval (under lock) */
};

#define ST_MASK ((UINT64_C(1) << KWQ__RING_POS_SHIFT) - 1)

static inline uint32_t state_get(struct entry *e)
{
	return (uint32_t)(atomic_load_explicit(&e->state, memory_order_relaxed) & ST_MASK);
}

/* Under the shard lock, on an entry no get can change (ABSENT or HELD*):
 * the position bits stay. */
static inline void state_set(struct entry *e, uint32_t st)
{
	uint64_t w = atomic_load_explicit(&e->state, memory_order_relaxed);
	atomic_store_explicit(&e->state, (w & ~ST_MASK) | st, memory_order_relaxed);
}

/* With the 16-byte item head, a key of up to 16 bytes fits a 64-byte
 * malloc chunk (the queue priority lives in the item: qprio_of). */
static_assert(sizeof(struct entry) == 24, "entry header: 24 bytes");

#define ITEM_OFFSET KWQ__ITEM_OFFSET(struct entry)
#define ENTRY_SIZE (ITEM_OFFSET + sizeof(struct kwq_item))

static inline struct kwq_item *item_of(struct entry *e)
{
	return (struct kwq_item *)(void *)((char *)e + ITEM_OFFSET);
}

/* qprio, the priority an entry is queued with: its item's priority field,
 * which a get hands out as it is (under the lock, while no get holds it). */
static inline int32_t *qprio_of(struct entry *e)
{
	return &item_of(e)->priority;
}

/*
 * A named queue's entries are preceded by their metrics times, so that an
 * unnamed queue's entries carry no bytes for them.  add_ns is written under
 * the shard lock before the put that publishes the entry (RING.P1), get_ns by
 * the get that holds it; the metrics read loads get_ns under the lock
 * while the holder may store it, hence relaxed atomics.
 */
struct entry_times {
	_Atomic int64_t add_ns;   /* the counted add: start of queue duration */
	_Atomic int64_t get_ns;   /* the get: start of work duration */
};

static inline struct entry_times *times_of(struct entry *e)
{
	return (struct entry_times *)(void *)((char *)e - sizeof(struct entry_times));
}

struct shard {
	alignas(64) _Atomic uint32_t lock;
	bool closed;          /* adds refused (under lock) */
	uint32_t live;        /* I3 (under lock) */
	uint32_t cached;      /* I3 (under lock) */
	uint32_t sweep_at;    /* sweep when cached reaches this (under lock) */
	uint32_t waiting;     /* entries with a wait (under lock) */
	ck_hs_t set;          /* under lock */
	uintptr_t hot[HOT_SETS][2]; /* lookaside in front of set: tagged entry
				       pointers, way 0 the more recent (under lock) */
#ifdef KWQ__SHARD_LOCK_PTHREAD
	alignas(8) unsigned char mutex_space[sizeof(pthread_mutex_t)];
#endif
};

static_assert(alignof(struct shard) == 64, "shard must be cache-line aligned");
static_assert(sizeof(struct shard) % 64 == 0, "shards must not share lines");
static_assert(offsetof(struct shard, lock) == 0, "lock first on its line");

/*
 * A priority level's FIFO.  Lane 0 (priority 0) is built in; the others are
 * made on first use and live until the queue is freed.  tag is OR'ed into
 * the positions of the lane's copies: (index << 48), index 0 for lane 0.
 */
struct lane {
	struct kwq__ring ring;
	int prio;
	uint64_t tag;
};

/* Lane index above the ring index (48 bits) and the state bits. */
#define LANE_TAG_SHIFT (48 + KWQ__RING_POS_SHIFT)
#define LANES_MAX ((1u << (64 - LANE_TAG_SHIFT)) - 1)

/* The lanes in use, highest priority first; replaced whole when a lane is
 * added (readers never see a partial one), old sets kept until destroy. */
struct lane_set {
	struct lane_set *older;
	unsigned n;
	struct lane *v[];
};

struct sharded_queue {
	struct kwq base;
	struct shard *shards;
	uint32_t shard_mask;              /* index = (hash >> 48) & shard_mask */
	unsigned nshards;

	struct lane lane0;
	_Atomic(struct lane_set *) lanes; /* NULL while only priority 0 was used */
	pthread_mutex_t lanes_lock;       /* adding a lane */
	_Atomic int64_t stale;            /* stale copies in all lanes (len) */
	struct kwq__metrics_block *metrics; /* named queues: one per shard */
	uint32_t sweep_min;               /* ABSENT entries a shard keeps */
	size_t prefix;                    /* bytes before each entry: its times */
	struct kwq__park park;

	alignas(64) pthread_mutex_t shutdown_lock;
	_Atomic bool shutdown;
	_Atomic uint64_t remaining;       /* live entries, counted at shutdown */
	struct kwq__drain drain;          /* drainers' waiting (core/drain.h) */
};

static struct sharded_queue *sq(struct kwq *q)
{
	return kwq__container_of(q, struct sharded_queue, base);
}

static struct entry *entry_of(void *it)
{
	return (struct entry *)(void *)((char *)it - ITEM_OFFSET);
}

static struct shard *shard_of(struct sharded_queue *s, uint64_t hash)
{
	/* Bits 48 and up (at most 65536 shards): ck_hs uses the low bits, the
	 * lookaside bits 20-22 and 32-47, the set's value tags bits 24-30. */
	return &s->shards[(uint32_t)(hash >> 48) & s->shard_mask];
}

static struct entry *entry_new(struct sharded_queue *s, const struct kwq__key *k)
{
	char *raw = kwq__entry_new(s->prefix + ENTRY_SIZE, s->prefix + ITEM_OFFSET, k);
	return raw ? (struct entry *)(void *)(raw + s->prefix) : NULL;
}

static void entry_free(struct sharded_queue *s, struct entry *e)
{
	free((char *)e - s->prefix);
}

/*
 * Find k's entry in its shard (under the shard lock).  A small two-way
 * lookaside of recently found entries sits in front of the ck_hs set: a
 * hit costs a compare (the hash first) instead of a ck_hs probe (about
 * 200 instructions with Debian's libck, whose own slots hold no hash bits:
 * see set_value), and hot keys (W3, W2
 * at K=64, a coalescing add) and small per-shard working sets (W1: 4 keys
 * a shard) mostly hit.  Two ways, not one: keys taken in turn that share
 * a direct-mapped slot would evict each other on every lookup.  Each way
 * holds the entry's pointer with 16 bits of its hash above bit 48
 * (hot_pack), so a miss, the rule with many keys a shard (W2 at
 * K=100000), reads no entry: the untagged version's two cold entry
 * loads were a quarter of that add's time.  An entry whose address does
 * not fit 48 bits is never cached.  Entries leave it when freed.
 */
#define HOT_TAG(hash) ((uintptr_t)(((hash) >> 32) & 0xffff) | 1u)

static inline uintptr_t *hot_set(struct shard *sh, uint64_t hash)
{
	return sh->hot[(hash >> 20) & (HOT_SETS - 1)];
}

static inline struct entry *hot_entry(uintptr_t v)
{
	return (struct entry *)(v & ((UINT64_C(1) << 48) - 1));
}

/* The way's value for e, or 0 (not cached) when e is above 2^48. */
static inline uintptr_t hot_pack(struct entry *e, uint64_t hash)
{
	return (uintptr_t)e >> 48 ? 0 : (uintptr_t)e | HOT_TAG(hash) << 48;
}

/*
 * The shard's set holds each entry's item pointer with 7 bits of its hash
 * in bits 57-63 (set_value), so that ck_hs's compare callback rejects a
 * slot of another key without reading its entry: Debian's libck is built
 * without pointer packing, and each probed slot of another key would
 * otherwise cost a cache miss on that key's entry (0.36 a lookup at
 * W2's K = 100000).  ck_hs itself only stores, compares and hands back
 * the values (and rehashes them through set_hash); every value leaving it
 * goes through set_item.  This assumes untagged heap pointers below 2^57:
 * true of every x86-64 Linux process (user space ends below 2^56 even
 * with 5-level paging) and of arm64 without heap tagging; where malloc
 * tags its pointers (arm64 MTE, HWASan), entries with tag bits set are
 * refused with -ENOMEM (entry_create), so such builds should use the
 * mutex design.  A libck built with pointer packing (CK_HS_PP) would
 * write its own bits over the tag: the build refuses it.
 */
#ifdef CK_HS_PP
#error "the shard set's tagged values need a libck built without pointer packing"
#endif
#define SET_TAG_SHIFT 57
#define SET_PTR_MASK ((UINT64_C(1) << SET_TAG_SHIFT) - 1)
static_assert(UINTPTR_MAX == UINT64_MAX, "set values and lookaside ways pack 64-bit pointers");

static inline uintptr_t set_tag(uint64_t hash)
{
	return (uintptr_t)((hash >> 24) & 0x7f) << SET_TAG_SHIFT;
}

static inline void *set_value(struct entry *e)
{
	return (void *)((uintptr_t)item_of(e) | set_tag(item_of(e)->hash));
}

static inline struct entry *set_item(void *v)
{
	return entry_of((void *)((uintptr_t)v & SET_PTR_MASK));
}

static unsigned long set_hash(const void *v, unsigned long seed)
{
	return kwq__item_hs_hash((const void *)((uintptr_t)v & SET_PTR_MASK), seed);
}

/* stored: a set value; key: a probe (get) or a set value (put, remove). */
static bool set_compare(const void *stored, const void *key)
{
	const void *b = (const void *)((uintptr_t)key & SET_PTR_MASK);
	uint64_t hash;

	memcpy(&hash, (const char *)b + offsetof(struct kwq_item, hash), sizeof hash);
	if (((uintptr_t)stored & ~(uintptr_t)SET_PTR_MASK) != set_tag(hash))
		return false;
	return kwq__item_hs_compare((const void *)((uintptr_t)stored & SET_PTR_MASK), b);
}

static struct entry *shard_find_slow(struct shard *sh, const struct kwq__key *k,
				     uintptr_t *way)
{
	struct kwq__probe probe;
	kwq__item_probe(&probe, k);
	void *v = ck_hs_get(&sh->set, (unsigned long)k->hash, &probe);
	if (v == NULL)
		return NULL;
	struct entry *e = set_item(v);
	way[1] = way[0];
	way[0] = hot_pack(e, k->hash);
	return e;
}

static HOT_INLINE struct entry *shard_find(struct shard *sh, const struct kwq__key *k)
{
	uintptr_t *way = hot_set(sh, k->hash);
	const uintptr_t tag = HOT_TAG(k->hash);
	uintptr_t v = way[0];

	if (v >> 48 == tag && kwq__item_is(item_of(hot_entry(v)), k))
		return hot_entry(v);
	v = way[1];
	if (v >> 48 == tag && kwq__item_is(item_of(hot_entry(v)), k)) {
		way[1] = way[0];
		way[0] = v;
		return hot_entry(v);
	}
	return shard_find_slow(sh, k, way);
}

/* e leaves its shard's set: drop it from the lookaside too. */
static void shard_forget(struct shard *sh, struct entry *e)
{
	uintptr_t *way = hot_set(sh, item_of(e)->hash);
	if (way[0] != 0 && hot_entry(way[0]) == e) {
		way[0] = way[1];
		way[1] = 0;
	} else if (way[1] != 0 && hot_entry(way[1]) == e) {
		way[1] = 0;
	}
}

/* The metrics block of the shard of e (named queues). */
static struct kwq__metrics_block *metrics_of(struct sharded_queue *s, struct shard *sh)
{
	return &s->metrics[sh - s->shards];
}

/*
 * A counted add (an item that was not dirty), under the shard lock.  held:
 * the re-add of a held item, whose work still runs from its get.
 */
static __attribute__((noinline)) void count_add_named(struct sharded_queue *s,
							struct shard *sh, struct entry *e,
							bool held)
{
	int64_t now = kwq__metrics_now(s->base.clock);
	atomic_store_explicit(&times_of(e)->add_ns, now, memory_order_relaxed);
	/* A metrics read that sees the entry HELD before its get stores the
	 * get time reads this: an age near 0, not the clock's epoch. */
	if (!held)
		atomic_store_explicit(&times_of(e)->get_ns, now, memory_order_relaxed);
	kwq__metrics_on_add(metrics_of(s, sh));
}

static HOT_INLINE void count_add(struct sharded_queue *s, struct shard *sh, struct entry *e,
				 bool held)
{
	if (s->metrics != NULL)
		count_add_named(s, sh, e, held);
}

/* ------------------------------------------------------------------------ */
/* The shard lock                                                            */

#ifdef KWQ__SHARD_LOCK_PTHREAD
/*
 * The measurement variant (WHAT THE MEASUREMENTS DECIDED, in the essay): a
 * pthread mutex in place of the spinlock.  Not built by default.
 */
static pthread_mutex_t *shard_mutex(struct shard *sh)
{
	return (pthread_mutex_t *)(void *)sh->mutex_space;
}

static inline void shard_lock(struct shard *sh)
{
	pthread_mutex_lock(shard_mutex(sh));
}

static inline void shard_unlock(struct shard *sh)
{
	pthread_mutex_unlock(shard_mutex(sh));
}
#else
static __attribute__((noinline, cold)) void shard_lock_slow(struct shard *sh)
{
	unsigned backoff = 1, spins = 0;

	for (;;) {
		while (atomic_load_explicit(&sh->lock, memory_order_relaxed) != 0) {
			if (spins++ < 32) {
				for (unsigned i = 0; i < backoff; i++)
					kwq__cpu_relax();
				if (backoff < 64)
					backoff <<= 1;
			} else {
				/* The holder is likely descheduled: let it run. */
				sched_yield();
			}
		}
		/* SHD.L1 */
		if (atomic_exchange_explicit(&sh->lock, 1, memory_order_acquire) == 0)
			return;
	}
}

static inline void shard_lock(struct shard *sh)
{
	/* SHD.L1: pairs with SHD.L2. */
	if (atomic_exchange_explicit(&sh->lock, 1, memory_order_acquire) != 0)
		shard_lock_slow(sh);
}

static inline void shard_unlock(struct shard *sh)
{
	KWQ__YIELD();
	/* SHD.L2: pairs with SHD.L1. */
	atomic_store_explicit(&sh->lock, 0, memory_order_release);
}
#endif

/* ------------------------------------------------------------------------ */

static unsigned online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

/*
 * The default shard count (WHAT THE MEASUREMENTS DECIDED, in the essay):
 * many more shards than CPUs, so that two threads rarely meet on one lock (and a preempted
 * holder rarely stalls anyone); each costs two lines plus a small map.
 */
static unsigned shard_count(unsigned requested, unsigned ncpu)
{
	unsigned n = requested;
	if (n == 0) {
		n = ncpu * 64;
		if (n < 256)
			n = 256;
		if (n > 4096)
			n = 4096;
	}
	unsigned p = 1;
	while (p < n)
		p <<= 1;
	return p;
}

/* ------------------------------------------------------------------------ */
/* Lanes                                                                     */

/* The lane for prio, or NULL if none was made yet.  SHD.A1: pairs with SHD.R1. */
static struct lane *lane_find(struct sharded_queue *s, int prio)
{
	if (prio == 0)
		return &s->lane0;
	struct lane_set *set = atomic_load_explicit(&s->lanes, memory_order_acquire);
	if (set == NULL)
		return NULL;
	for (unsigned i = 0; i < set->n; i++)
		if (set->v[i]->prio == prio)
			return set->v[i];
	return NULL;
}

/* The lane for prio, made if needed.  NULL on ENOMEM (or LANES_MAX). */
static struct lane *lane_get(struct sharded_queue *s, int prio)
{
	struct lane *l = lane_find(s, prio);
	if (l != NULL)
		return l;

	pthread_mutex_lock(&s->lanes_lock);
	l = lane_find(s, prio);
	if (l != NULL)
		goto out;
	struct lane_set *old = atomic_load_explicit(&s->lanes, memory_order_relaxed);
	unsigned n = old ? old->n : 1; /* lane 0 counts */
	if (n >= LANES_MAX)
		goto out;
	struct lane_set *set = kwq__malloc(sizeof *set + (n + 1) * sizeof set->v[0]);
	struct lane *nl = kwq__aligned_alloc(64, (sizeof *nl + 63) & ~(size_t)63);
	if (set == NULL || nl == NULL || kwq__ring_init(&nl->ring, KWQ__RING_SEG_DEFAULT) != 0) {
		free(set);
		free(nl);
		goto out;
	}
	nl->prio = prio;
	nl->tag = (uint64_t)n << LANE_TAG_SHIFT | ST_QUEUED;
	/* highest priority first */
	unsigned j = 0;
	if (old == NULL) {
		if (prio > 0)
			set->v[j++] = nl;
		set->v[j++] = &s->lane0;
		if (prio < 0)
			set->v[j++] = nl;
	} else {
		bool placed = false;
		for (unsigned i = 0; i < old->n; i++) {
			if (!placed && prio > old->v[i]->prio) {
				set->v[j++] = nl;
				placed = true;
			}
			set->v[j++] = old->v[i];
		}
		if (!placed)
			set->v[j++] = nl;
	}
	set->n = j;
	set->older = old;
	/* SHD.R1: pairs with SHD.A1; the lane and the set are initialized. */
	atomic_store_explicit(&s->lanes, set, memory_order_release);
	l = nl;
out:
	pthread_mutex_unlock(&s->lanes_lock);
	return l;
}

/*
 * Put e at the tail of lane l (under e's shard lock): e becomes current
 * there.  On failure nothing changed: the position of the previous copy is
 * restored before the lock is released (SHD.P3 below).
 */
static HOT_INLINE int lane_put(struct lane *l, struct entry *e)
{
	uint64_t old = atomic_load_explicit(&e->state, memory_order_relaxed);
	/* The put stores QUEUED and the new position in one word (SHD.P3). */
	if (kwq__ring_put_at(&l->ring, e, &e->state, l->tag) != 0) {
		atomic_store_explicit(&e->state, old, memory_order_relaxed);
		return -ENOMEM;
	}
	return 0;
}

/* The fast CAS failed: decide under the lock.  e (HELD now), or NULL when
 * the copy was stale and is dropped. */
static struct entry *take_settle(struct sharded_queue *s, struct entry *e, uint64_t queued,
				 uint64_t held)
{
	struct shard *sh = shard_of(s, item_of(e)->hash);
	uint64_t w = queued;

	shard_lock(sh);
	/* SHD.H2 */
	if (atomic_compare_exchange_strong_explicit(&e->state, &w, held, memory_order_acq_rel,
						    memory_order_relaxed)) {
		shard_unlock(sh);
		return e;
	}
	assert(e->stale > 0);
	e->stale--;
	atomic_fetch_sub_explicit(&s->stale, 1, memory_order_relaxed);
	shard_unlock(sh);
	return NULL;
}

/*
 * A copy taken from a lane is current when the entry's state word is
 * QUEUED at the copy's position.  A stale copy (its entry was raised to a
 * higher lane, or got through the other copy) is dropped.
 *
 * Fast path, no lock: the CAS from QUEUED-at-this-position to HELD wins
 * (SHD.H2; SHD.P3: the put stored that word before publishing the slot, which the
 * take acquired).  Otherwise decide under the shard lock, where every put
 * happens, so the word is settled (never MOVING there): the same CAS
 * either takes the current copy or shows it stale, and a stale one is
 * dropped (stale-- for the raise that left it, or for the copy that lost
 * the CAS to another copy).
 */
static HOT_INLINE struct entry *take_lane(struct sharded_queue *s, struct lane *l)
{
	for (;;) {
		uint64_t p;
		struct entry *e = kwq__ring_take_at(&l->ring, &p);
		if (e == NULL)
			return NULL;
		/* This copy is current and QUEUED iff the word is exactly
		 * what its put stored: one CAS checks both. */
		const uint64_t queued = l->tag | p << KWQ__RING_POS_SHIFT;
		const uint64_t held = (queued & ~ST_MASK) | ST_HELD;
		uint64_t w = queued;
		/* SHD.H2: pairs with SHD.H1. */
		if (atomic_compare_exchange_strong_explicit(&e->state, &w, held,
							    memory_order_acq_rel,
							    memory_order_relaxed))
			return e;
		if ((e = take_settle(s, e, queued, held)) != NULL)
			return e;
	}
}

/* Take the current copy of the highest-priority queued entry: HELD. */
static HOT_INLINE struct entry *take(struct sharded_queue *s)
{
	struct lane_set *set = atomic_load_explicit(&s->lanes, memory_order_acquire); /* SHD.A1 */
	if (set == NULL)
		return take_lane(s, &s->lane0);
	for (unsigned i = 0; i < set->n; i++) {
		struct entry *e = take_lane(s, set->v[i]);
		if (e != NULL)
			return e;
	}
	return NULL;
}

static void *take_cb(void *ctx)
{
	return take((struct sharded_queue *)ctx);
}

static bool pending_cb(void *ctx)
{
	struct sharded_queue *s = ctx;
	struct lane_set *set = atomic_load_explicit(&s->lanes, memory_order_acquire); /* SHD.A1 */
	if (set == NULL)
		return kwq__ring_pending(&s->lane0.ring);
	for (unsigned i = 0; i < set->n; i++)
		if (kwq__ring_pending(&set->v[i]->ring))
			return true;
	return false;
}

static void free_shards(struct sharded_queue *s, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct shard *sh = &s->shards[i];
		ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
		void *obj;
		while (ck_hs_next(&sh->set, &it, &obj))
			entry_free(s, set_item(obj));
		ck_hs_destroy(&sh->set);
	}
	free(s->shards);
}

static struct kwq *sharded_new(const struct kwq *base, const struct kwq_config *cfg)
{
	unsigned ncpu = online_cpus();
	unsigned n = shard_count(cfg->shards, ncpu);
	size_t size = (sizeof(struct sharded_queue) + 63) & ~(size_t)63;
	struct sharded_queue *s = kwq__aligned_alloc(64, size);
	if (s == NULL)
		goto enomem;
	memset(s, 0, size);
	s->base = *base;
	s->nshards = n;
	s->sweep_min = CACHE_KEYS / n > SWEEP_MIN ? CACHE_KEYS / n : SWEEP_MIN;
	if (base->name != NULL) {
		s->metrics = kwq__metrics_blocks_new(n);
		if (s->metrics == NULL)
			goto free_s;
		s->prefix = sizeof(struct entry_times);
	}
	s->shard_mask = n - 1; /* n is a power of two, at most 65536 */

	s->shards = kwq__aligned_alloc(64, n * sizeof *s->shards);
	if (s->shards == NULL)
		goto free_s;
	memset(s->shards, 0, n * sizeof *s->shards);
	for (unsigned i = 0; i < n; i++) {
		struct shard *sh = &s->shards[i];
		atomic_init(&sh->lock, 0);
		sh->sweep_at = s->sweep_min;
#ifdef KWQ__SHARD_LOCK_PTHREAD
		pthread_mutex_init(shard_mutex(sh), NULL);
#endif
		if (!ck_hs_init(&sh->set, HS_MODE, set_hash, set_compare,
				&kwq__ck_allocator, HS_INITIAL, base->seed)) {
			free_shards(s, i);
			goto free_s;
		}
	}
	if (kwq__ring_init(&s->lane0.ring, KWQ__RING_SEG_DEFAULT) != 0) {
		free_shards(s, n);
		goto free_s;
	}
	s->lane0.prio = 0;
	s->lane0.tag = ST_QUEUED;
	atomic_init(&s->lanes, NULL);
	pthread_mutex_init(&s->lanes_lock, NULL);
	atomic_init(&s->stale, 0);
	kwq__park_init(&s->park, ncpu);
	pthread_mutex_init(&s->shutdown_lock, NULL);
	atomic_init(&s->shutdown, false);
	atomic_init(&s->remaining, DRAIN_BIAS);
	kwq__drain_init(&s->drain);
	return &s->base;

free_s:
	kwq__metrics_blocks_free(s->metrics);
	free(s);
enomem:
	errno = ENOMEM;
	return NULL;
}

static void sharded_destroy(struct kwq *q)
{
	struct sharded_queue *s = sq(q);

	free_shards(s, s->nshards); /* I2: every entry is in a set */
	kwq__metrics_blocks_free(s->metrics);
	struct lane_set *set = atomic_load_explicit(&s->lanes, memory_order_relaxed);
	if (set != NULL) {
		for (unsigned i = 0; i < set->n; i++) {
			if (set->v[i] != &s->lane0) {
				kwq__ring_destroy(&set->v[i]->ring);
				free(set->v[i]);
			}
		}
	}
	while (set != NULL) {
		struct lane_set *older = set->older;
		free(set);
		set = older;
	}
	pthread_mutex_destroy(&s->lanes_lock);
	kwq__ring_destroy(&s->lane0.ring);
	kwq__park_destroy(&s->park);
	pthread_mutex_destroy(&s->shutdown_lock);
	free(s);
}

/*
 * Second chance (CLOCK) for the cached ABSENT entries, under the shard
 * lock: free those that stayed ABSENT through the whole interval since the
 * previous sweep, mark the others.  The next sweep comes when the cache
 * reaches max(s->sweep_min, live, 2 * survivors): with unique keys half the
 * cache is freed each time and its size stays put; with recurring keys the
 * cache grows to hold their working set and stops there.  Either way a
 * sweep is O(entries) once per at least max(live, survivors) dones.
 *
 * sweep_min is the cache every shard may keep without sweeping, CACHE_KEYS
 * across the queue.  A floor this high matters for keys that recur with a
 * period longer than a sweep interval (W2 cycles through 100000 keys):
 * with a floor of 32 per shard each sweep freed the entries the next
 * cycle needed, and malloc, free and ck_hs put, remove and rebuilds took a
 * quarter of W2's instructions.  The price: an idle queue that has seen
 * many distinct keys keeps up to CACHE_KEYS entries (about 10 MB with
 * short keys); keys recurring over a set larger than that still churn.
 */
static void sweep(struct sharded_queue *s, struct shard *sh)
{
	ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
	void *obj;
	uint32_t freed = 0;

	while (ck_hs_next(&sh->set, &it, &obj)) {
		struct entry *e = set_item(obj);
		if (state_get(e) != ST_ABSENT ||
		    e->stale != 0 ||     /* a lane still points to it */
		    e->wait != NULL)     /* it waits on a delayed add */
			continue;
		if (e->aged) {
			ck_hs_remove(&sh->set, (unsigned long)item_of(e)->hash, set_value(e));
			shard_forget(sh, e);
			entry_free(s, e);
			freed++;
		} else {
			e->aged = 1;
		}
	}
	sh->cached -= freed;
	uint32_t next = 2 * sh->cached;
	if (next < sh->live)
		next = sh->live;
	if (next < s->sweep_min)
		next = s->sweep_min;
	sh->sweep_at = next;
	/* Tombstones lengthen the probes of misses: rebuild after big sweeps. */
	if (freed >= SWEEP_MIN && freed >= ck_hs_count(&sh->set) / 2)
		ck_hs_gc(&sh->set, 0, 0);
}

/* A new ABSENT entry for k in its shard's set (under the lock). */
static struct entry *entry_create(struct sharded_queue *s, struct shard *sh,
				  const struct kwq__key *k)
{
	struct entry *e = entry_new(s, k);
	if (e == NULL)
		return NULL;
	atomic_init(&e->state, ST_ABSENT);
	*qprio_of(e) = 0;
	if (((uintptr_t)item_of(e) & ~(uintptr_t)SET_PTR_MASK) != 0 || /* set_value */
	    !ck_hs_put(&sh->set, (unsigned long)k->hash, set_value(e))) {
		entry_free(s, e);
		return NULL;
	}
	sh->cached++;
	return e;
}

/* An entry entry_create() made that its caller could not use. */
static void entry_unmake(struct sharded_queue *s, struct shard *sh, struct entry *e)
{
	ck_hs_remove(&sh->set, (unsigned long)item_of(e)->hash, set_value(e));
	shard_forget(sh, e);
	sh->cached--;
	entry_free(s, e);
}

/*
 * ABSENT -> QUEUED at the tail of lane (under the lock).  The add is
 * counted, and its time recorded, before the put lets a get take the
 * entry: the get reads that time (stress/metrics_race_stress).
 */
static HOT_INLINE int make_queued(struct sharded_queue *s, struct shard *sh, struct entry *e,
				  struct lane *lane)
{
	*qprio_of(e) = lane->prio;
	count_add(s, sh, e, false);
	if (lane_put(lane, e) != 0) { /* it put the word back */
		if (s->metrics != NULL)
			kwq__metrics_on_add_undo(metrics_of(s, sh));
		return -ENOMEM;
	}
	e->aged = 0;
	sh->cached--;
	sh->live++;
	return 0;
}

/*
 * HELD -> HELD|DIRTY, to be re-queued on lane by done.  The ring put that
 * re-queue makes is reserved here, so done cannot fail (I7).
 */
static int make_dirty(struct sharded_queue *s, struct shard *sh, struct entry *e,
		      struct lane *lane)
{
	if (kwq__ring_reserve(&lane->ring) != 0)
		return -ENOMEM;
	state_set(e, ST_HELD_DIRTY);
	e->dprio = lane->prio;
	count_add(s, sh, e, true);
	return 0;
}

/* HELD|DIRTY asked again with lane's priority: keep the highest, and move
 * the re-queue's reservation with it. */
static int raise_dirty(struct sharded_queue *s, struct entry *e, struct lane *lane)
{
	if (lane->prio <= e->dprio)
		return 0;
	struct lane *old = lane_find(s, e->dprio);
	if (kwq__ring_reserve(&lane->ring) != 0)
		return -ENOMEM;
	kwq__ring_unreserve(&old->ring);
	e->dprio = lane->prio;
	return 0;
}

/*
 * A QUEUED entry (state word w) added again with lane's priority: nothing
 * to do but the SHD.H1 CAS, or a raise to the tail of a higher lane.  Returns
 * 0 (*put: a new copy was put), -ENOMEM, or 1 when a get took it
 * meanwhile: it is HELD now.
 */
static int add_queued(struct sharded_queue *s, struct entry *e, uint64_t w,
		      struct lane *lane, bool *put)
{
	int32_t was = *qprio_of(e);
	/*
	 * A raise parks the entry in MOVING while it puts the new copy, so
	 * that no get can win the old copy in between (a get that read the
	 * old position before the put changed it would otherwise hold the
	 * entry while the new copy stays current).
	 */
	const uint64_t queued = w;
	const uint64_t to = lane->prio > was ? (w & ~ST_MASK) | ST_MOVING : w;
	KWQ__YIELD();
	/* SHD.H1: pairs with SHD.H2.  Fails only if a get took it meanwhile. */
	if (!atomic_compare_exchange_strong_explicit(&e->state, &w, to,
						     memory_order_acq_rel,
						     memory_order_relaxed)) {
		assert((w & ST_MASK) == ST_HELD);
		return 1;
	}
	if (to == queued)
		return 0;
	/* A raise: a new current copy at the tail of the higher lane (its put
	 * stores QUEUED with the new position); the old copy is left stale
	 * (dropped when taken). */
	*qprio_of(e) = lane->prio;
	if (lane_put(lane, e) != 0) {
		*qprio_of(e) = was;
		/* SHD.M1: pairs with SHD.H2: QUEUED again at the old copy. */
		atomic_store_explicit(&e->state, queued, memory_order_release);
		return -ENOMEM;
	}
	e->stale++;
	atomic_fetch_add_explicit(&s->stale, 1, memory_order_relaxed);
	*put = true;
	return 0;
}

/*
 * The lane an immediate add of e with lane's priority goes to: a waiting
 * entry keeps its wait's priority if that is higher (the contract in kwq.h).  NULL on
 * ENOMEM.  (Under the shard lock; lane_get may take lanes_lock inside it.)
 */
static struct lane *lane_with_wait(struct sharded_queue *s, struct entry *e, struct lane *lane)
{
	if (e->wait == NULL || e->wait->priority <= lane->prio)
		return lane;
	return lane_get(s, e->wait->priority);
}

/* A key's wait starts or ends (d = 1 or -1): the shard's count (shutdown
 * drops them), and the delayed gauge. */
static inline void count_wait(struct sharded_queue *s, struct shard *sh, int d)
{
	sh->waiting += (uint32_t)d;
	if (s->metrics != NULL)
		kwq__metrics_on_wait(metrics_of(s, sh), d);
}

/* The wait ends: it fired, an immediate add or a cancel ended it (cancel:
 * its record goes stale), or shutdown dropped it. */
static void wait_end(struct sharded_queue *s, struct shard *sh, struct entry *e, bool cancel)
{
	if (cancel)
		kwq__wait_drop(e->wait);
	e->wait = NULL;
	count_wait(s, sh, -1);
}

/* add of k, found as e (or NULL), on lane: everything but the common case
 * (under the shard lock, which it releases).  1 when a copy was put (the
 * caller notifies the park), 0 when the add changed state without a put,
 * or the error. */
static __attribute__((noinline)) int add_locked(struct sharded_queue *s, struct shard *sh,
						const struct kwq__key *k, struct lane *lane,
						struct entry *e)
{
	struct lane *l;
	bool put = false;
	int rc = 0;

	if (sh->closed) {
		rc = -ESHUTDOWN;
	} else if (e == NULL) {
		if ((e = entry_create(s, sh, k)) == NULL)
			rc = -ENOMEM;
		else if ((rc = make_queued(s, sh, e, lane)) != 0)
			entry_unmake(s, sh, e);
		put = rc == 0;
	} else {
		uint64_t w = atomic_load_explicit(&e->state, memory_order_relaxed);
		switch ((uint32_t)(w & ST_MASK)) {
		case ST_QUEUED: /* never waiting: a wait of it was absorbed */
			if ((rc = add_queued(s, e, w, lane, &put)) != 1)
				break;
			/* fall through - the get made it HELD */
		case ST_HELD:
			l = lane_with_wait(s, e, lane);
			rc = l == NULL ? -ENOMEM : make_dirty(s, sh, e, l);
			if (rc == 0 && e->wait != NULL)
				wait_end(s, sh, e, true); /* the add cancels the wait */
			break;
		case ST_ABSENT:
			l = lane_with_wait(s, e, lane);
			rc = l == NULL ? -ENOMEM : make_queued(s, sh, e, l);
			put = rc == 0;
			if (rc == 0 && e->wait != NULL)
				wait_end(s, sh, e, true);
			break;
		default: /* HELD|DIRTY: the lock orders us before done */
			rc = raise_dirty(s, e, lane);
			break;
		}
	}
	shard_unlock(sh);
	return rc == 0 && put ? 1 : rc;
}

/* An add of k on lane: as add_locked, 1 when a copy was put. */
static HOT_INLINE int add_one(struct sharded_queue *s, const struct kwq__key *k,
			      struct lane *lane)
{
	struct shard *sh = shard_of(s, k->hash);

	shard_lock(sh);
	struct entry *e = shard_find(sh, k);
	/* The common case, kept short: a known ABSENT key with no wait. */
	if (__builtin_expect(e != NULL && !sh->closed && e->wait == NULL &&
			     state_get(e) == ST_ABSENT, 1)) {
		int rc = make_queued(s, sh, e, lane);
		shard_unlock(sh);
		return rc == 0 ? 1 : rc;
	}
	return add_locked(s, sh, k, lane, e);
}

static int sharded_add(struct kwq *q, const struct kwq__key *k, int prio)
{
	struct sharded_queue *s = sq(q);
	struct lane *lane = prio == 0 ? &s->lane0 : lane_get(s, prio);

	if (lane == NULL)
		return -ENOMEM;
	int rc = add_one(s, k, lane);
	if (rc <= 0)
		return rc;
	kwq__park_notify(&s->park);
	return 0;
}

/*
 * kwq_add_many's immediate adds: each its own critical section, in array
 * order, and one notify of the park for the whole run (after the last
 * put: a woken worker that finds work wakes the next, park.h).
 */
static int sharded_add_many(struct kwq *q, const struct kwq__key *keys, size_t n, int prio,
			    size_t *accepted)
{
	struct sharded_queue *s = sq(q);
	struct lane *lane = prio == 0 ? &s->lane0 : lane_get(s, prio);
	bool any = false;
	size_t i = 0;
	int rc = 0;

	if (lane == NULL)
		rc = -ENOMEM;
	for (; rc >= 0 && i < n; i++) {
		rc = add_one(s, &keys[i], lane);
		any |= rc > 0;
	}
	if (any)
		kwq__park_notify(&s->park);
	*accepted = rc >= 0 ? n : i > 0 ? i - 1 : 0; /* 0: the lane failed */
	return rc < 0 ? rc : 0;
}

static int sharded_add_after(struct kwq *q, const struct kwq__key *k, struct kwq__wait_req *req)
{
	struct sharded_queue *s = sq(q);
	struct shard *sh = shard_of(s, k->hash);
	struct lane *lane = lane_get(s, req->priority);
	struct entry *e;
	bool put = false;
	int rc = 0;

	req->rec = NULL;
	if (lane == NULL)
		return -ENOMEM;
	shard_lock(sh);
	if (sh->closed) {
		rc = -ESHUTDOWN;
	} else if ((e = shard_find(sh, k)) == NULL) {
		/* absent: a new entry that waits */
		struct kwq__wait *w = NULL;
		if ((rc = kwq__wait_update(&w, req, k)) == 0) {
			if ((e = entry_create(s, sh, k)) == NULL) {
				free(w);
				req->rec = NULL;
				rc = -ENOMEM;
			} else {
				e->wait = w;
				count_wait(s, sh, 1);
			}
		}
	} else {
		uint64_t w = atomic_load_explicit(&e->state, memory_order_relaxed);
		switch ((uint32_t)(w & ST_MASK)) {
		case ST_QUEUED: /* due already: only the priority may rise */
			if ((rc = add_queued(s, e, w, lane, &put)) != 1) {
				rc = rc == 0 ? 1 : rc;
				break;
			}
			/* fall through - the get made it HELD, so it waits */
		case ST_HELD:
		case ST_ABSENT: {
			bool was_waiting = e->wait != NULL;
			rc = kwq__wait_update(&e->wait, req, k);
			if (rc == 0 && !was_waiting)
				count_wait(s, sh, 1);
			break;
		}
		default: /* HELD|DIRTY: due already */
			rc = raise_dirty(s, e, lane);
			rc = rc == 0 ? 1 : rc;
			break;
		}
	}
	shard_unlock(sh);
	if (put)
		kwq__park_notify(&s->park);
	return rc;
}

static int sharded_fire(struct kwq *q, struct kwq__wait *w, const struct kwq__key *k, bool drop)
{
	struct sharded_queue *s = sq(q);
	struct shard *sh = shard_of(s, k->hash);
	struct entry *e;
	bool put = false;
	int rc = 1;

	shard_lock(sh);
	if ((e = shard_find(sh, k)) == NULL || e->wait != w) {
		rc = 0; /* stale: cancelled or moved earlier since */
	} else if (drop || sh->closed) {
		wait_end(s, sh, e, false);
		rc = sh->closed ? -ESHUTDOWN : 0;
	} else {
		struct lane *lane = lane_get(s, w->priority);
		uint32_t st = state_get(e);
		assert(st == ST_ABSENT || st == ST_HELD); /* I6 */
		if (lane == NULL)
			rc = -ENOMEM;
		else if (st == ST_ABSENT)
			rc = make_queued(s, sh, e, lane);
		else
			rc = make_dirty(s, sh, e, lane);
		put = rc == 0 && st == ST_ABSENT;
		if (rc == 0) {
			wait_end(s, sh, e, false);
			rc = 1;
		}
	}
	shard_unlock(sh);
	if (put)
		kwq__park_notify(&s->park);
	return rc;
}

/* A named queue's get of e at now (the queue clock's time). */
static void count_get(struct sharded_queue *s, struct entry *e, int64_t now)
{
	struct entry_times *t = times_of(e);
	atomic_store_explicit(&t->get_ns, now, memory_order_relaxed);
	kwq__metrics_on_get(metrics_of(s, shard_of(s, item_of(e)->hash)),
			    now - atomic_load_explicit(&t->add_ns, memory_order_relaxed));
}

/* The head, parking until the deadline when none is queued: HELD. */
static HOT_INLINE int take_or_park(struct sharded_queue *s, struct entry **out,
				   int64_t deadline)
{
	struct entry *e = take(s);

	if (e == NULL) {
		const struct kwq__park_source src = {
			.take = take_cb,
			.pending = pending_cb,
			.ctx = s,
		};
		void *it;
		int rc = kwq__park_get(&s->park, &src, deadline, &it);
		if (rc != 0)
			return rc;
		e = it;
	}
	*out = e;
	return 0;
}

static int sharded_get(struct kwq *q, struct kwq_item **item, int64_t deadline)
{
	struct sharded_queue *s = sq(q);
	struct entry *e;
	int rc = take_or_park(s, &e, deadline);

	if (rc != 0)
		return rc;
	/* e is HELD (take's SHD.H2); its item's priority is its qprio, written
	 * before the put (RING.P1). */
	if (s->metrics != NULL)
		count_get(s, e, kwq__metrics_now(q->clock));
	*item = item_of(e);
	return 0;
}

/*
 * kwq_get_batch: the first item as a get (parking until the deadline),
 * the rest as takes that do not park, each its own linearization point (its
 * SHD.H2 CAS), so that they come out as consecutive gets would; a named
 * queue reads its clock once for the batch.
 */
static int sharded_get_batch(struct kwq *q, struct kwq_item **items, size_t max,
			     int64_t deadline)
{
	struct sharded_queue *s = sq(q);
	struct entry *e;
	int rc = take_or_park(s, &e, deadline);

	if (rc != 0)
		return rc;
	items[0] = item_of(e);
	size_t n = 1;
	while (n < max && (e = take(s)) != NULL)
		items[n++] = item_of(e);
	if (s->metrics != NULL) {
		int64_t now = kwq__metrics_now(q->clock);
		for (size_t i = 0; i < n; i++)
			count_get(s, entry_of(items[i]), now);
	}
	return (int)n;
}

/* A named queue's done of a HELD or HELD|DIRTY entry (under the lock). */
static __attribute__((noinline)) void count_done(struct sharded_queue *s, struct shard *sh,
						 struct entry *e)
{
	kwq__metrics_on_done(metrics_of(s, sh), kwq__metrics_now(s->base.clock) -
			     atomic_load_explicit(&times_of(e)->get_ns, memory_order_relaxed));
}

/*
 * A live entry became ABSENT (under the lock): the done of a clean HELD
 * entry, or the cancel of a QUEUED one.  true when it was the last one a
 * drain waited for.
 */
static bool left_live(struct sharded_queue *s, struct shard *sh, struct entry *e)
{
	bool last = false;

	sh->live--;
	sh->cached++;
	if (sh->closed) {
		/* SHD.D1: pairs with SHD.D2. */
		last = atomic_fetch_sub_explicit(&s->remaining, 1, memory_order_acq_rel) == 1;
	}
	e->aged = 0;
	if (sh->cached >= sh->sweep_at)
		sweep(s, sh);
	return last;
}

/* done of everything but a clean HELD entry of an open shard with no sweep
 * due (under the lock, which it releases). */
static __attribute__((noinline)) int done_slow(struct sharded_queue *s, struct shard *sh,
					       struct entry *e, uint32_t st)
{
	bool put = false, last = false;
	int rc = 0;

	if (st == ST_HELD) {
		state_set(e, ST_ABSENT);
		last = left_live(s, sh, e);
	} else if (st == ST_HELD_DIRTY) {
		if (s->metrics != NULL)
			count_done(s, sh, e);
		/* Its lane exists and its put was reserved by make_dirty (I7). */
		struct lane *lane = lane_find(s, e->dprio);
		*qprio_of(e) = e->dprio;
		kwq__ring_put_reserved_at(&lane->ring, e, &e->state, lane->tag);
		put = true;
	} else {
		rc = -EINVAL;
	}
	shard_unlock(sh);
	if (put)
		kwq__park_notify(&s->park);
	if (last)
		kwq__drain_wake(&s->drain);
	return rc;
}

static int sharded_done(struct kwq *q, struct kwq_item *it)
{
	struct sharded_queue *s = sq(q);
	struct entry *e = entry_of(it);
	struct shard *sh = shard_of(s, it->hash);

	shard_lock(sh);
	uint32_t st = state_get(e);
	if (st == ST_HELD && s->metrics != NULL)
		count_done(s, sh, e);
	/* The common case, kept short: a clean HELD entry becomes ABSENT. */
	if (__builtin_expect(st == ST_HELD && !sh->closed && sh->cached + 1 < sh->sweep_at, 1)) {
		state_set(e, ST_ABSENT);
		sh->live--;
		sh->cached++;
		e->aged = 0;
		shard_unlock(sh);
		return 0;
	}
	return done_slow(s, sh, e, st);
}

/* A queued or held+dirty item cancelled: it leaves depth. */
static inline void count_cancel(struct sharded_queue *s, struct shard *sh)
{
	if (s->metrics != NULL)
		kwq__metrics_on_cancel(metrics_of(s, sh));
}

/*
 * kwq_cancel, in the key's critical section.  A wait (the entry is ABSENT
 * or HELD, I6) goes stale as an immediate add would make it.  A QUEUED
 * entry becomes ABSENT by a CAS from the word its put stored, racing the
 * gets' SHD.H2 CAS on the same word: if the cancel wins, its copy in the
 * lane is stale (counted in stale, dropped by the get that takes it, as a
 * raise's old copy); if a get wins, the entry is HELD and nothing was
 * pending.  A HELD|DIRTY entry goes back to HELD and gives back the ring
 * reservation its re-queue held (I7).
 */
static int sharded_cancel(struct kwq *q, const struct kwq__key *k, bool wait_only)
{
	struct sharded_queue *s = sq(q);
	struct shard *sh = shard_of(s, k->hash);
	bool last = false;
	int rc = 0;

	shard_lock(sh);
	struct entry *e = shard_find(sh, k);
	if (e == NULL) {
		/* nothing known of the key */
	} else if (e->wait != NULL) {
		wait_end(s, sh, e, true);
		rc = 1;
	} else if (!wait_only) {
		uint64_t w = atomic_load_explicit(&e->state, memory_order_relaxed);
		switch ((uint32_t)(w & ST_MASK)) {
		case ST_QUEUED:
			/* Relaxed: what the loser of the race needs it takes
			 * under this lock (take_settle). */
			if (atomic_compare_exchange_strong_explicit(
				    &e->state, &w, (w & ~ST_MASK) | ST_ABSENT,
				    memory_order_relaxed, memory_order_relaxed)) {
				e->stale++;
				atomic_fetch_add_explicit(&s->stale, 1, memory_order_relaxed);
				count_cancel(s, sh);
				last = left_live(s, sh, e);
				rc = 1;
			}
			break;
		case ST_HELD_DIRTY:
			kwq__ring_unreserve(&lane_find(s, e->dprio)->ring);
			state_set(e, ST_HELD);
			count_cancel(s, sh);
			rc = 1;
			break;
		default: /* ABSENT or HELD with no wait: nothing pending */
			break;
		}
	}
	shard_unlock(sh);
	if (last)
		kwq__drain_wake(&s->drain);
	return rc;
}

/* Held+dirty: one relaxed load, by the handle's owner (the word's state
 * bits change only under the lock while the entry is HELD*). */
static bool sharded_item_dirty(struct kwq *q, const struct kwq_item *it)
{
	(void)q;
	return state_get(entry_of((void *)(uintptr_t)it)) == ST_HELD_DIRTY;
}

/* Copies in the lanes less the stale ones: exact when quiescent. */
static size_t sharded_len(struct kwq *q)
{
	struct sharded_queue *s = sq(q);
	struct lane_set *set = atomic_load_explicit(&s->lanes, memory_order_acquire); /* SHD.A1 */
	int64_t n = 0;

	if (set == NULL)
		n = (int64_t)kwq__ring_len(&s->lane0.ring);
	else
		for (unsigned i = 0; i < set->n; i++)
			n += (int64_t)kwq__ring_len(&set->v[i]->ring);
	n -= atomic_load_explicit(&s->stale, memory_order_relaxed);
	return n > 0 ? (size_t)n : 0;
}

/*
 * Shutdown drops every waiting add, in the shard's closing critical
 * section: from then on no wait of the shard's keys is left for a cancel
 * or a done to see, and the timer finds each record stale (under the
 * lock; a sweep may free the ABSENT entries afterwards).
 */
static void drop_waits(struct sharded_queue *s, struct shard *sh)
{
	ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
	void *obj;

	while (sh->waiting != 0 && ck_hs_next(&sh->set, &it, &obj)) {
		struct entry *e = set_item(obj);
		if (e->wait != NULL)
			wait_end(s, sh, e, true);
	}
}

/* Drained: every live entry counted at shutdown is gone. */
static bool drained(void *ctx)
{
	struct sharded_queue *s = ctx;
	/* SHD.D2: pairs with SHD.D1. */
	return atomic_load_explicit(&s->remaining, memory_order_acquire) == 0;
}

static int sharded_shutdown(struct kwq *q, bool drain, int64_t deadline)
{
	struct sharded_queue *s = sq(q);
	uint32_t ticket = kwq__drain_begin(&s->drain);

	pthread_mutex_lock(&s->shutdown_lock);
	if (!atomic_load_explicit(&s->shutdown, memory_order_relaxed)) {
		/* Close each shard under its lock: every accepted add is counted. */
		for (unsigned i = 0; i < s->nshards; i++) {
			struct shard *sh = &s->shards[i];
			shard_lock(sh);
			sh->closed = true;
			if (sh->waiting != 0)
				drop_waits(s, sh);
			uint32_t live = sh->live;
			shard_unlock(sh);
			if (live != 0)
				atomic_fetch_add_explicit(&s->remaining, live,
							  memory_order_relaxed);
		}
		atomic_store_explicit(&s->shutdown, true, memory_order_release);
		kwq__park_close(&s->park);
		/* SHD.D1 */
		if (atomic_fetch_sub_explicit(&s->remaining, DRAIN_BIAS,
					      memory_order_acq_rel) == DRAIN_BIAS)
			kwq__drain_wake(&s->drain);
	}
	pthread_mutex_unlock(&s->shutdown_lock);

	if (drain)
		return kwq__drain_wait(&s->drain, ticket, drained, s, deadline) ? 0 : -ETIMEDOUT;
	kwq__drain_end(&s->drain);
	return 0;
}

/* Named queues: the shards' blocks, and the held entries' work so far. */
static void sharded_metrics(struct kwq *q, struct kwq_metrics *out, int64_t now)
{
	struct sharded_queue *s = sq(q);

	kwq__metrics_sum(s->metrics, s->nshards, out);
	for (unsigned i = 0; i < s->nshards; i++) {
		struct shard *sh = &s->shards[i];
		ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
		void *obj;

		shard_lock(sh);
		if (sh->live != 0) {
			while (ck_hs_next(&sh->set, &it, &obj)) {
				struct entry *e = set_item(obj);
				uint32_t st = state_get(e);
				if (st == ST_HELD || st == ST_HELD_DIRTY)
					kwq__metrics_held(out, now, atomic_load_explicit(
						&times_of(e)->get_ns, memory_order_relaxed));
			}
		}
		shard_unlock(sh);
	}
}

static bool sharded_shutting_down(struct kwq *q)
{
	return atomic_load_explicit(&sq(q)->shutdown, memory_order_acquire);
}

struct kwq__park *kwq__sharded_park(struct kwq *q)
{
	return q->ops == &kwq__sharded_ops ? &sq(q)->park : NULL;
}

const struct kwq__ops kwq__sharded_ops = {
	.create = sharded_new,
	.destroy = sharded_destroy,
	.add = sharded_add,
	.add_many = sharded_add_many,
	.get = sharded_get,
	.get_batch = sharded_get_batch,
	.done = sharded_done,
	.len = sharded_len,
	.add_after = sharded_add_after,
	.fire = sharded_fire,
	.cancel = sharded_cancel,
	.item_dirty = sharded_item_dirty,
	.metrics = sharded_metrics,
	.shutdown = sharded_shutdown,
	.shutting_down = sharded_shutting_down,
};
