/*
 * metrics.h - client-go's workqueue metrics for named queues: counters and
 * histograms an implementation updates, summed when they are read.
 *
 * Definitions (client-go queue.go and metrics.go):
 *
 *   counted add   an add of an item that is not dirty: absent -> queued, or
 *                 the first re-add of a held item (held -> held+dirty);
 *                 adds +1, and the entry records the time (the start of
 *                 its queue duration), both before a get can take the item
 *   get           gets +1; queue duration = now - time of the counted add;
 *                 the entry records the time of the get
 *   done          work duration = now - time of the get
 *   read          unfinished = the sum over held items of now - get time,
 *                 longest = the largest of them (no ticker thread)
 *
 * All times come from the metrics clock (kwq__metrics_now(q->clock) in
 * core/clock.h): the queue's fake clock, or the scaled time-stamp counter.
 *
 * Concurrency: a kwq__metrics_block has two halves.  The add and done
 * hooks write theirs (adds, the work histogram) with plain load-and-store
 * updates: their caller serializes them (the shard's lock, the queue's
 * lock), and they are relaxed atomics only so that a read may load them
 * meanwhile; so do the cancel and wait hooks (kwq_cancel, and a key's wait
 * starting and ending), which run in the key's critical section too.  The get hook may run on one block from many threads without
 * a lock (a sharded get), so its half (gets, the queue histogram) takes
 * relaxed RMWs, on a line of its own.  depth is adds - gets.  A read
 * (kwq__metrics_sum) is a snapshot whose parts may be a few operations
 * apart; it loads gets first with acquire (MET.G2, pairing with the get's
 * release RMW MET.G1), so every add of a get it counts is counted too
 * (the add's store is ordered before its item's publication, which the
 * get acquired): depth never reads below 0.  Exact when no call is in
 * flight.  depth is adds - gets - cancels (a cancel may be seen before
 * its add: a negative snapshot reads as 0); delayed is the sum of the
 * wait hooks' steps.  An implementation that wants no shared hot line gives each
 * shard its own block and passes them all to kwq__metrics_sum().
 *
 * A histogram keeps no count: count is the sum of its buckets (the last one
 * holds observations above 10 s), so a reader can never see a cumulative
 * bucket above the count, or the +Inf bucket differ from it.
 */
#ifndef KWQ_METRICS_METRICS_H
#define KWQ_METRICS_METRICS_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "kwq.h"

/* Bucket i holds durations in (10^i ns, 10^(i+1) ns]; bucket 0 from 0. */
#define KWQ__HIST_SLOTS (KWQ_HIST_BUCKETS + 1) /* the last: above 10 s */

struct kwq__hist_block {
	_Atomic uint64_t sum_ns;
	_Atomic uint64_t slot[KWQ__HIST_SLOTS]; /* non-cumulative */
};

struct kwq__metrics_block {
	/* add, done, cancel and the waits, under the caller's lock */
	alignas(64) _Atomic uint64_t adds;
	_Atomic uint64_t cancels;     /* queued or held+dirty items cancelled */
	_Atomic uint64_t delayed;     /* keys waiting (+1 and -1 as uint64) */
	struct kwq__hist_block work;  /* work duration */
	/* get, with RMWs */
	alignas(64) _Atomic uint64_t gets;
	struct kwq__hist_block queue; /* queue duration */
};

/* c += d where the caller serializes every writer of c: no RMW. */
static inline void kwq__counter_bump(_Atomic uint64_t *c, uint64_t d)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d,
			      memory_order_relaxed);
}

/*
 * kwq__metrics_bucket - the slot of a duration: the first bucket whose
 * upper bound (1e-8 s ... 1e1 s) is >= d, or KWQ_HIST_BUCKETS above 10 s.
 * A negative d (clock reads racing) counts as 0.
 */
static inline unsigned kwq__metrics_bucket(int64_t d)
{
	int64_t bound = 10;
	unsigned i = 0;
	while (i < KWQ_HIST_BUCKETS && d > bound) {
		bound *= 10;
		i++;
	}
	return i;
}

/* An observation where writers of h may race (RMWs). */
static inline void kwq__hist_observe(struct kwq__hist_block *h, int64_t d)
{
	if (d < 0)
		d = 0;
	atomic_fetch_add_explicit(&h->slot[kwq__metrics_bucket(d)], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)d, memory_order_relaxed);
}

/* An observation whose caller serializes the writers of h. */
static inline void kwq__hist_observe_locked(struct kwq__hist_block *h, int64_t d)
{
	if (d < 0)
		d = 0;
	kwq__counter_bump(&h->slot[kwq__metrics_bucket(d)], 1);
	kwq__counter_bump(&h->sum_ns, (uint64_t)d);
}

/*
 * A counted add (see above), under the caller's lock, before the item is
 * published to gets; the caller records the time in the entry then too.
 * kwq__metrics_on_add_undo takes it back (the publication failed).
 */
static inline void kwq__metrics_on_add(struct kwq__metrics_block *b)
{
	kwq__counter_bump(&b->adds, 1);
}

static inline void kwq__metrics_on_add_undo(struct kwq__metrics_block *b)
{
	kwq__counter_bump(&b->adds, UINT64_MAX); /* -1 */
}

/* A queued or held+dirty item cancelled: it leaves depth.  Under the
 * caller's lock. */
static inline void kwq__metrics_on_cancel(struct kwq__metrics_block *b)
{
	kwq__counter_bump(&b->cancels, 1);
}

/* A key starts waiting on a delayed add (d = 1) or stops (d = -1).  Under
 * the caller's lock (the key's). */
static inline void kwq__metrics_on_wait(struct kwq__metrics_block *b, int d)
{
	kwq__counter_bump(&b->delayed, (uint64_t)(int64_t)d);
}

/* A get: queued_ns = now - the entry's counted-add time.  No lock. */
static inline void kwq__metrics_on_get(struct kwq__metrics_block *b, int64_t queued_ns)
{
	/* MET.G1: pairs with MET.G2 (the read counts the add of this get). */
	atomic_fetch_add_explicit(&b->gets, 1, memory_order_release);
	kwq__hist_observe(&b->queue, queued_ns);
}

/* A done: work_ns = now - the entry's get time.  Under the caller's lock. */
static inline void kwq__metrics_on_done(struct kwq__metrics_block *b, int64_t work_ns)
{
	kwq__hist_observe_locked(&b->work, work_ns);
}

/*
 * kwq__metrics_held - account one held item, got at get_ns, in the
 * unfinished and longest-running gauges of *m at the time now (as
 * client-go's updateUnfinishedWork: seconds summed per item).  A get time
 * after now (now was read before the get) counts as 0.
 */
static inline void kwq__metrics_held(struct kwq_metrics *m, int64_t now, int64_t get_ns)
{
	double age = now > get_ns ? (double)(now - get_ns) / 1e9 : 0.0;
	m->unfinished_work_seconds += age;
	if (age > m->longest_running_processor_seconds)
		m->longest_running_processor_seconds = age;
}

/*
 * n zeroed blocks, each on its own cache lines; NULL with errno ENOMEM.
 * Free with kwq__metrics_blocks_free().
 */
struct kwq__metrics_block *kwq__metrics_blocks_new(size_t n);
void kwq__metrics_blocks_free(struct kwq__metrics_block *blocks);

/*
 * kwq__metrics_sum - add n blocks into *out: depth, adds_total, delayed
 * and both histograms (le cumulative, count = the sum of the buckets, sum_seconds
 * from the blocks' nanoseconds summed first).  Leaves the other fields.
 * Safe concurrently with the hooks (see above).
 */
void kwq__metrics_sum(const struct kwq__metrics_block *blocks, size_t n,
		      struct kwq_metrics *out);

/*
 * The core's retries counter: striped so that threads retrying different
 * keys do not share a line.  Allocated for named queues only.
 */
#define KWQ__RETRY_STRIPES 8

struct kwq__retry_stripe {
	alignas(64) _Atomic uint64_t n;
};

struct kwq__retry_stripe *kwq__retries_new(void);
void kwq__retries_free(struct kwq__retry_stripe *r);

static inline void kwq__retries_inc(struct kwq__retry_stripe *r, uint64_t hash)
{
	atomic_fetch_add_explicit(&r[hash & (KWQ__RETRY_STRIPES - 1)].n, 1,
				  memory_order_relaxed);
}

uint64_t kwq__retries_sum(const struct kwq__retry_stripe *r);

/* One queue's series in an exposition: its name label and its metrics. */
struct kwq__metrics_series {
	const char *name;
	struct kwq_metrics m;
};

/*
 * kwq__metrics_prometheus_write - write the n series s[] as one Prometheus
 * text exposition (client-go's metric names, a name label) into buf: each
 * family's HELP and TYPE once, then its samples of s[0], s[1], ...; nothing
 * when n is 0.  snprintf style: returns the bytes the whole text needs
 * (without the NUL), writes at most cap bytes including a terminating NUL
 * when cap > 0.  The names must differ (the caller checks).
 */
size_t kwq__metrics_prometheus_write(const struct kwq__metrics_series *s, size_t n,
				     char *buf, size_t cap);

#endif
