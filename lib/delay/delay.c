/*
 * delay.c - delayed adds: one timer thread per queue, a timeline of
 * (ready time, sequence) entries, and a wait-free inbox.
 *
 * ---------------------------------------------------------------- who decides
 *
 * Whether a key is waiting, and until when, is the key's own state: each
 * implementation keeps a pointer to the key's current wait record in the
 * key's entry and changes it only in the key's critical section
 * (lib/core/wait.h).  So every rule of the contract in kwq.h is decided where the key's
 * adds, gets and dones are decided:
 *   - kwq_add_after (kwq__ops.add_after): a queued or held+dirty key absorbs
 *     it (priority only); an absent or held key becomes waiting with a new
 *     record; a waiting key keeps the earlier ready time and the higher
 *     priority, and gets a new record only when the time moves earlier
 *     (with replace: always, taking the call's time and priority; the new
 *     record's place among equal ready times is that of a new call);
 *   - an immediate add (kwq__ops.add) cancels the wait in its own critical
 *     section and takes the wait's priority if higher: no second phase
 *     after the add, no queue-wide lock, nothing here on that path;
 *     kwq_cancel (kwq__ops.cancel) ends it the same way;
 *   - the timer fires a record through kwq__ops.fire, which adds the key
 *     only if that record is still the key's current wait.
 * The timer is thus only a clock: it never decides, it proposes, and a
 * proposal made stale by anything the key did meanwhile is refused in the
 * key's critical section.  (0.1 kept the waits in the timer's own index
 * and had an immediate add settle with it after publishing the key: a
 * worker woken by that add could make a new wait inside the window, which
 * the settle then cancelled; and a cancel missed a wait whose request was
 * not yet in the inbox.)
 *
 * Linearization points: a delayed add, the implementation's critical
 * section that sets the wait; a firing, fire's critical section.  A
 * record's contents (ready, key) are fixed before it is handed over; its
 * priority is read by fire under the key's lock.
 *
 * ---------------------------------------------------------------- parts
 *
 * record    one per new or moved wait, allocated by the implementation in
 *           the key's critical section (struct req: struct kwq__wait, the
 *           inbox node, the key).  Owned by the timer from the hand-over.
 * inbox     liburcu's wait-free cds_wfcq: the caller appends the record
 *           after its critical section (an exchange and a store).
 * timeline  timeline.c: earliest first, equal ready times by the order in
 *           which the timer took the records from the inbox (a call that
 *           returned before another began appended first).  Only the timer
 *           thread touches the timeline and takes from the inbox.
 *
 * Order.  The timer reads the clock before it takes the inbox, and fires
 * only after taking all of it (a node whose appender is between its two
 * steps makes it yield and start over): a record appended before a clock
 * step that the read sees is in the timeline when that step's firings are
 * decided, so what one step (or one pass of the real clock) makes due
 * fires in (ready time, call) order.  Taking first and reading the clock
 * after let a step land in between: a later wait already taken fired
 * before an earlier one still in the inbox.  The one exception is a
 * timeline that cannot grow (out of memory): the timer then fires what it
 * holds before taking the rest, and retries every RETRY_NS.
 *
 * A stale record stays in the timeline until it surfaces or a compaction
 * drops it: it is recognised by its dropped flag (DLY.D1/DLY.D2: the
 * implementation's last access to it happens-before the timer's free) or,
 * if the flag is not yet seen, by fire.  Compaction runs when the timeline
 * has doubled since the last one, so its cost is O(1) amortized.
 *
 * ---------------------------------------------------------------- sleeping
 *
 * A Dekker handshake on C11 seq_cst atomics (so that ThreadSanitizer sees
 * it; liburcu 0.13's own atomics are inline asm):
 *
 *   caller:  append; enqueued++ (DLY.S1); read sleep_until (DLY.S2);
 *            if ready < sleep_until: wake++ (DLY.W1), futex wake
 *   timer:   w = wake (DLY.W2); now = the clock; take the inbox; fire
 *            what is due at now; sleep_until = next (DLY.S3); read enqueued
 *            (DLY.S4): all taken -> futex_wait(w)
 *
 *   DLY.S1..DLY.S4 are seq_cst: either the timer's DLY.S4 sees the
 *   caller's DLY.S1 and loops, or the caller's DLY.S2 sees DLY.S3 and
 *   wakes it.  Reading w before
 *   taking closes the window between the check and the sleep: any wake
 *   after DLY.W2 makes futex_wait return at once.  A fake clock's step bumps
 *   wake the same way (kwq__clock_watch), so a timer on a fake clock
 *   sleeps with no timeout.
 *
 * The record's contents reach the timer through the inbox, which TSan
 * cannot see: __tsan_release/__tsan_acquire on the record make that edge
 * visible (DLY.R1 pairs with DLY.R2).  Everything else is C11 atomics or
 * pthread.
 *
 * Shutdown: the timer hands every record it holds back through fire with
 * drop set (the implementation clears the key's wait if it is current),
 * then frees it.  Records appended after the thread stopped are handed
 * back and freed the same way by kwq__delay_fini().
 */
#include "delay.h"
#include "../core/alloc.h"

#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/wfcqueue.h>

#include "../core/clock.h"
#include "../core/futex.h"
#include "../core/inject.h"
#include "../core/ops.h"
#include "timeline.h"

#if defined(__SANITIZE_THREAD__)
#define KWQ__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KWQ__TSAN 1
#endif
#endif

#ifdef KWQ__TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define tsan_acquire(p) __tsan_acquire(p)
#define tsan_release(p) __tsan_release(p)
#else
#define tsan_acquire(p) ((void)(p))
#define tsan_release(p) ((void)(p))
#endif

#define COMPACT_MIN 256     /* compaction: not below this many entries */
#define RETRY_NS 1000000    /* out of memory: try again in 1 ms */

/*
 * A record is one allocation: this header, then at KEY_OFFSET the key as
 * a struct kwq_item (ISO C forbids a member ending in a flexible array).
 */
struct req {
	struct kwq__wait w;             /* first: the implementations' part */
	struct cds_wfcq_node link;
};

#define KEY_OFFSET KWQ__ITEM_OFFSET(struct req)

static struct kwq_item *key_of(struct req *r)
{
	return (struct kwq_item *)(void *)((char *)r + KEY_OFFSET);
}

/* r's key as the ops take it. */
static struct kwq__key key_arg(struct req *r)
{
	struct kwq_item *it = key_of(r);
	return (struct kwq__key){ it->bytes, it->len, it->hash };
}

struct kwq__delay {
	struct kwq *q;
	kwq_clock_t *clock;             /* NULL: monotonic */
	pthread_t thread;

	/* inbox: many producers, the timer thread takes */
	struct __cds_wfcq_head head;
	struct cds_wfcq_tail tail;

	/* written by callers, per call */
	_Atomic uint64_t enqueued __attribute__((aligned(64))); /* DLY.S1 */
	/* written by the timer, per loop */
	_Atomic int64_t sleep_until __attribute__((aligned(64))); /* DLY.S3 */
	_Atomic uint32_t wake;          /* futex word (DLY.W1/DLY.W2) */

	struct kwq__clock_waiter watch; /* fake clocks: step wakes us */

	/* the timer thread's own */
	uint64_t consumed;              /* records taken from the inbox */
	uint64_t seq;
	struct kwq__timeline tl;
	size_t compact_at;              /* compact when tl reaches this size */
};

static void wake_timer(struct kwq__delay *d)
{
	atomic_fetch_add(&d->wake, 1); /* DLY.W1 pairs with DLY.W2 */
	kwq__futex_wake(&d->wake, 1);
}

static void clock_stepped(struct kwq__clock_waiter *w)
{
	wake_timer(kwq__container_of(w, struct kwq__delay, watch));
}

/* ------------------------------------------------------------ timer side */

/* The implementation stopped pointing to r: the timer may free it. */
static bool req_dropped(struct req *r)
{
	/* DLY.D2: pairs with DLY.D1 (wait.h). */
	return atomic_load_explicit(&r->w.dropped, memory_order_acquire) != 0;
}

/*
 * Hand r back to the implementation (fire, or drop at shutdown) and free
 * it.  false: out of memory, r stays (it is still the key's wait).
 */
static bool settle(struct kwq__delay *d, struct req *r, bool drop)
{
	if (!req_dropped(r)) {
		struct kwq__key k = key_arg(r);
		if (d->q->ops->fire(d->q, &r->w, &k, drop) == -ENOMEM)
			return false;
	}
	free(r);
	return true;
}

/* Move what the inbox holds into the timeline.  false when an appender is
 * between its two steps (its node is not linked yet) or out of memory. */
static bool take_requests(struct kwq__delay *d, bool *nomem)
{
	for (;;) {
		if (kwq__timeline_reserve(&d->tl) != 0) {
			*nomem = true;
			return false;
		}
		struct cds_wfcq_node *n = __cds_wfcq_dequeue_nonblocking(&d->head, &d->tail);
		if (n == NULL)
			return true;
		if (n == CDS_WFCQ_WOULDBLOCK)
			return false;
		struct req *r = kwq__container_of(n, struct req, link);
		tsan_acquire(r); /* DLY.R2 pairs with DLY.R1 */
		d->consumed++;
		struct kwq__tl_entry e = { r->w.ready, ++d->seq, r };
		kwq__timeline_push(&d->tl, &e); /* reserved above */
	}
}

static bool keep_live(const struct kwq__tl_entry *e, void *ctx)
{
	(void)ctx;
	struct req *r = e->owner;
	if (!req_dropped(r))
		return true;
	free(r);
	return false;
}

/* Drop stale records once the timeline has doubled since the last time. */
static void maybe_compact(struct kwq__delay *d)
{
	size_t n = kwq__timeline_size(&d->tl);
	if (n < d->compact_at)
		return;
	kwq__timeline_filter(&d->tl, keep_live, NULL);
	n = kwq__timeline_size(&d->tl);
	d->compact_at = 2 * n > COMPACT_MIN ? 2 * n : COMPACT_MIN;
}

/* Fire everything due at `now`.  false if a fire ran out of memory. */
static bool fire_due(struct kwq__delay *d, int64_t now)
{
	const struct kwq__tl_entry *e;

	while ((e = kwq__timeline_peek(&d->tl)) != NULL) {
		struct req *r = e->owner;
		if (r->w.ready > now && !req_dropped(r))
			break;
		if (!settle(d, r, r->w.ready > now)) /* not due: it was dropped */
			return false; /* stays due; retried shortly */
		kwq__timeline_pop(&d->tl);
	}
	return true;
}

static int64_t next_ready(struct kwq__delay *d)
{
	const struct kwq__tl_entry *e = kwq__timeline_peek(&d->tl);
	return e ? e->ready : INT64_MAX;
}

/* Shutdown: hand back every record (the thread's last act). */
static void drop_all(struct kwq__delay *d)
{
	const struct kwq__tl_entry *e;
	bool nomem = false;

	while (!take_requests(d, &nomem) && !nomem)
		sched_yield();
	while ((e = kwq__timeline_peek(&d->tl)) != NULL) {
		settle(d, e->owner, true); /* a drop needs no memory */
		kwq__timeline_pop(&d->tl);
	}
	/* Out of memory for the timeline: the rest, straight from the inbox. */
	struct cds_wfcq_node *n;
	while ((n = __cds_wfcq_dequeue_nonblocking(&d->head, &d->tail)) != NULL &&
	       n != CDS_WFCQ_WOULDBLOCK) {
		struct req *r = kwq__container_of(n, struct req, link);
		tsan_acquire(r); /* DLY.R2 */
		d->consumed++;
		settle(d, r, true);
	}
}

static void *timer_main(void *arg)
{
	struct kwq__delay *d = arg;

	for (;;) {
		uint32_t w = atomic_load_explicit(&d->wake, memory_order_acquire); /* DLY.W2 */
		if (atomic_load(&d->q->delays.stopped))
			break;
		/*
		 * The clock first, then the inbox: every record appended
		 * before a step that this read sees is taken below, so what
		 * one step makes due fires in (ready time, call) order.
		 */
		int64_t now = kwq_clock_now(d->clock);
		KWQ__YIELD(); /* a caller may append and step the clock here */
		bool nomem = false;
		bool took = take_requests(d, &nomem);
		if (!took && !nomem) {
			/* an appender between its two steps: records behind its
			 * node may be due before what the timeline holds */
			sched_yield();
			continue;
		}
		maybe_compact(d);
		bool fired = fire_due(d, now);
		int64_t next = next_ready(d);
		atomic_store(&d->sleep_until, next); /* DLY.S3 */

		if (atomic_load(&d->enqueued) != d->consumed && !nomem) /* DLY.S4 */
			continue;
		if (atomic_load(&d->q->delays.stopped))
			break;

		int64_t deadline = INT64_MAX;
		if (!fired || nomem) {
			deadline = kwq__sat_add(kwq__mono_now(), RETRY_NS);
		} else if (d->clock == NULL && next != INT64_MAX) {
			if (next <= kwq__mono_now())
				continue;
			deadline = next;
		}
		kwq__futex_wait(&d->wake, w, deadline);
		/* Awake: callers need not wake us until we publish again. */
		atomic_store(&d->sleep_until, INT64_MIN);
	}
	drop_all(d);
	return NULL;
}

/* ------------------------------------------------------------ caller side */

static void delay_destroy(struct kwq__delay *d)
{
	kwq__timeline_free(&d->tl);
	free(d);
}

static struct kwq__delay *delay_start(struct kwq *q)
{
	/* 64-byte aligned members: calloc does not promise that alignment. */
	size_t size = (sizeof(struct kwq__delay) + 63) & ~(size_t)63;
	struct kwq__delay *d = kwq__aligned_alloc(64, size);
	if (d == NULL)
		return NULL;
	memset(d, 0, size);
	d->q = q;
	d->clock = q->clock;
	__cds_wfcq_init(&d->head, &d->tail);
	atomic_init(&d->enqueued, 0);
	atomic_init(&d->sleep_until, INT64_MIN);
	atomic_init(&d->wake, 0);
	d->compact_at = COMPACT_MIN;
	if (d->clock != NULL) {
		d->watch.wake = clock_stepped;
		kwq__clock_watch(d->clock, &d->watch);
	}
	if (kwq__thread_create(&d->thread, timer_main, d) != 0) {
		if (d->clock != NULL)
			kwq__clock_unwatch(d->clock, &d->watch);
		delay_destroy(d);
		return NULL;
	}
	return d;
}

void kwq__delay_init(struct kwq__delays *ds)
{
	atomic_init(&ds->d, NULL);
	pthread_mutex_init(&ds->lock, NULL);
	atomic_init(&ds->stopped, false);
}

/* The queue's delay state, started on first use: NULL with *err set. */
static struct kwq__delay *delay_get(struct kwq *q, int *err)
{
	struct kwq__delays *ds = &q->delays;
	/* DLY.A1 pairs with DLY.R3: d's fields are initialized before it is seen. */
	struct kwq__delay *d = atomic_load_explicit(&ds->d, memory_order_acquire);
	if (d != NULL)
		return d;
	pthread_mutex_lock(&ds->lock);
	d = atomic_load_explicit(&ds->d, memory_order_relaxed);
	if (atomic_load_explicit(&ds->stopped, memory_order_relaxed)) {
		*err = -ESHUTDOWN;
		d = NULL;
	} else if (d == NULL) {
		d = delay_start(q);
		if (d == NULL)
			*err = -ENOMEM;
		else
			atomic_store_explicit(&ds->d, d, memory_order_release); /* DLY.R3 */
	}
	pthread_mutex_unlock(&ds->lock);
	return d;
}

int kwq__delay_add(struct kwq *q, const struct kwq__key *k, int64_t delay_ns,
		   int priority, bool replace)
{
	int rc = 0;
	struct kwq__delay *d = delay_get(q, &rc);
	if (d == NULL)
		return rc;

	struct kwq__wait_req req = {
		.ready = kwq__sat_add(kwq_clock_now(d->clock), delay_ns),
		.priority = priority,
		.replace = replace,
		.rec_size = KEY_OFFSET + sizeof(struct kwq_item),
		.rec_item_offset = KEY_OFFSET,
	};
	rc = q->ops->add_after(q, k, &req);
	if (rc < 0)
		return rc;
	if (req.rec == NULL)
		return 0; /* absorbed, or merged into the key's wait */
	struct req *r = kwq__container_of(req.rec, struct req, w);
	cds_wfcq_node_init(&r->link);
	tsan_release(r); /* DLY.R1 pairs with DLY.R2 */
	cds_wfcq_enqueue(&d->head, &d->tail, &r->link);
	atomic_fetch_add(&d->enqueued, 1); /* DLY.S1 */
	if (req.ready < atomic_load(&d->sleep_until)) /* DLY.S2 */
		wake_timer(d);
	return 0;
}

void kwq__delay_stop(struct kwq *q)
{
	struct kwq__delays *ds = &q->delays;
	pthread_mutex_lock(&ds->lock);
	/* seq_cst: the timer thread reads it without the lock, before its
	 * futex sleep, and the wake below follows it. */
	atomic_store(&ds->stopped, true);
	struct kwq__delay *d = atomic_load_explicit(&ds->d, memory_order_relaxed);
	pthread_mutex_unlock(&ds->lock);
	if (d != NULL)
		wake_timer(d);
}

void kwq__delay_fini(struct kwq *q)
{
	kwq__delay_stop(q);
	struct kwq__delay *d = atomic_load_explicit(&q->delays.d, memory_order_relaxed);
	pthread_mutex_destroy(&q->delays.lock);
	if (d == NULL)
		return;
	pthread_join(d->thread, NULL);
	if (d->clock != NULL)
		kwq__clock_unwatch(d->clock, &d->watch);
	/* Records appended after the thread stopped: no caller is left, and
	 * the queue's entries are freed next without looking at them. */
	struct cds_wfcq_node *n;
	while ((n = __cds_wfcq_dequeue_nonblocking(&d->head, &d->tail)) != NULL &&
	       n != CDS_WFCQ_WOULDBLOCK) {
		struct req *r = kwq__container_of(n, struct req, link);
		tsan_acquire(r); /* DLY.R2 */
		settle(d, r, true); /* the key stops pointing to it */
	}
	delay_destroy(d);
}
