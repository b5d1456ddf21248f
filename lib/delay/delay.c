/*
 * delay.c - delayed adds: one timer thread per queue, a timeline of
 * (ready time, sequence) entries with a per-key index, a wait-free inbox,
 * and a consumer lock that an immediate add can take to see the waits.
 *
 * ---------------------------------------------------------------- parts
 *
 * request   one per kwq_add_after() that is not absorbed: the key, its
 *           ready time and priority.  One allocation, the inbox node too.
 * inbox     liburcu's wait-free cds_wfcq: kwq_add_after() appends its
 *           request (an exchange and a store; no lock, no retry loop).
 * consumer  everything behind the inbox: the index (key -> the waiting
 *           request, ck_hs), the timeline (timeline.c: earliest first, a
 *           FIFO run for ready times that arrive in order and a heap for
 *           the rest), and taking requests out of the inbox.  Guarded by
 *           `consumer`, a mutex the timer thread holds while it works and
 *           drops while it sleeps.
 *
 * A delayed add never takes the consumer lock: the timer applies its
 * request later, in order.  An immediate add takes it only while delayed
 * adds are pending (pending != 0): it takes the inbox to the end itself,
 * so the index is exact, and then adds with the wait's priority if that is
 * higher and cancels the wait, in one critical section (API.md: a waiting
 * item "keeps ... the higher priority", and an immediate add cancels the
 * wait).  A queue that never delays, or has nothing waiting, pays two
 * loads.
 *
 * ---------------------------------------------------------------- rules
 *
 * Applied under the consumer lock, in inbox order:
 *   - a key already waiting keeps the earlier ready time; a later one never
 *     pushes it back; the priority is the highest asked;
 *   - equal ready times fire in the order of the calls that set them: a
 *     request that moves a ready time earlier takes the request's sequence;
 *   - the caller decides absorption (the key is queued or held+dirty, so
 *     already due) before it appends anything.
 *
 * Lazy deletion: a waiting request whose ready time moves earlier gets a
 * new timeline entry and its old one goes stale; a cancelled one leaves
 * its entries stale.  An entry is valid iff its seq is its request's
 * sched_seq; refs counts the entries pointing at a request, which is freed
 * when it is out of the index and refs is 0.  Stale entries are popped
 * when they surface and compacted away when they outnumber the rest.
 *
 * ---------------------------------------------------------------- pending
 *
 * pending = added - retired: requests appended and not yet fired, merged,
 * cancelled or dropped.  kwq__delay_add() counts one in `added` before its
 * absorb (and takes it back if absorbed); the consumer counts `retired`.
 * Two counters on two lines, so a caller's count does not pull the line
 * the timer writes for every fire.  An immediate add that
 * saw pending == 0 adds without the lock and reads pending again after
 * (and queue.c reads q->delay again, for the queue's first delayed add).
 * The second read cannot miss a delayed add that its add missed: that one
 * counted before its absorb, and absorb and ops->add are critical sections
 * of the same implementation lock; if absorb came first, its count happens
 * before the second read, which then settles the key under the consumer
 * lock (cancels the wait, applies its priority through ops->absorb); if
 * ops->add came first, absorb saw the key queued and nothing waits.
 *
 * ---------------------------------------------------------------- sleeping
 *
 * A Dekker handshake on C11 seq_cst atomics (so that ThreadSanitizer sees
 * it; liburcu 0.13's own atomics are inline asm):
 *
 *   caller:  append; enqueued++ (S1); read sleep_until (S2);
 *            if ready < sleep_until: wake++ (W1), futex wake
 *   timer:   w = wake (W2); lock; take the inbox; fire; sleep_until =
 *            next (S3); unlock; read enqueued (S4): all taken -> futex_wait(w)
 *
 *   S1..S4 are seq_cst: either the timer's S4 sees the caller's S1 and
 *   loops, or the caller's S2 sees S3 and wakes it.  Reading w before
 *   taking closes the window between the check and the sleep: any wake
 *   after W2 makes futex_wait return at once.  An immediate add that takes
 *   the inbox may move the earliest ready time: it compares it with
 *   sleep_until under the lock (the timer publishes under it too) and
 *   wakes the timer when it is earlier.  A fake clock's step bumps wake the
 *   same way (kwq__clock_watch), so a timer on a fake clock sleeps with no
 *   timeout.
 *
 * The request's contents reach the consumer through the inbox, which TSan
 * cannot see: __tsan_release/__tsan_acquire on the request make that edge
 * visible (R1 pairs with R2).  Everything else is C11 atomics or pthread.
 *
 * Memory: a request is freed under the consumer lock when it fires,
 * merges into an earlier request of its key, is cancelled or dropped by
 * shutdown, and its last timeline entry is gone; what is left when the
 * thread stops is freed by kwq__delay_free().
 */
#include "delay.h"

#include <errno.h>
#include <linux/futex.h>
#include <stdbool.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <ck_hs.h>
#include <urcu/wfcqueue.h>

#include "../core/clock.h"
#include "../core/ops.h"
#include "timeline.h"

#if defined(__SANITIZE_THREAD__)
#define KWQ_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KWQ_TSAN 1
#endif
#endif

#ifdef KWQ_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define tsan_acquire(p) __tsan_acquire(p)
#define tsan_release(p) __tsan_release(p)
#else
#define tsan_acquire(p) ((void)(p))
#define tsan_release(p) ((void)(p))
#endif

#define STALE_SLACK 64      /* compaction: stale > live + this */
#define RETRY_NS 1000000    /* out of memory: try again in 1 ms */
#define BATCH 32            /* the timer's items between looks at contenders */

/*
 * A request is one allocation: this header, then at KEY_OFFSET the key as
 * a struct kwq_item (ISO C forbids a member ending in a flexible array).
 */
struct req {
	struct cds_wfcq_node link;
	int64_t ready;
	int priority;
	/* consumer side */
	bool indexed;                   /* the key's waiting request */
	uint32_t refs;                  /* timeline entries pointing here */
	uint64_t sched_seq;             /* seq of its valid entry; 0: none */
};

#define KEY_OFFSET KWQ__ITEM_OFFSET(struct req)

static struct kwq_item *key_of(struct req *r)
{
	return (struct kwq_item *)(void *)((char *)r + KEY_OFFSET);
}

static struct req *req_of_key(struct kwq_item *it)
{
	return (struct req *)(void *)((char *)it - KEY_OFFSET);
}

/* r's key as ops->add takes it. */
static struct kwq_key key_arg(struct req *r)
{
	struct kwq_item *it = key_of(r);
	return (struct kwq_key){ it->bytes, it->len, it->hash };
}

struct kwq_delay {
	struct kwq *q;
	kwq_clock_t *clock;             /* NULL: monotonic */
	pthread_t thread;

	/* inbox: many producers, whoever holds `consumer` takes */
	struct __cds_wfcq_head head;
	struct cds_wfcq_tail tail;

	/* written by callers, per call */
	_Atomic uint64_t added __attribute__((aligned(64))); /* see "pending" */
	_Atomic uint64_t enqueued;      /* requests appended (S1) */
	/* written by the consumer, per request */
	_Atomic uint64_t retired __attribute__((aligned(64))); /* see "pending" */
	uint64_t consumed;              /* requests taken (under `consumer`) */
	/* written by the timer, per loop */
	_Atomic int64_t sleep_until __attribute__((aligned(64))); /* S3 */
	_Atomic uint32_t wake;          /* futex word (W1/W2) */
	_Atomic bool stop;

	struct kwq__clock_waiter watch; /* fake clocks: step wakes us */

	/* under `consumer` */
	pthread_mutex_t consumer;
	_Atomic uint32_t contenders;    /* immediate adds waiting for it */
	uint64_t seq;
	struct kwq__timeline tl;
	size_t stale;                   /* stale entries in tl */
	ck_hs_t index;                  /* key -> waiting struct req */
	bool stopped;                   /* dropped everything: shutdown */
};

static long futex(_Atomic uint32_t *uaddr, int op, uint32_t val,
		  const struct timespec *ts)
{
	return syscall(SYS_futex, uaddr, op, val, ts, NULL, 0);
}

static void wake_timer(struct kwq_delay *d)
{
	atomic_fetch_add(&d->wake, 1); /* W1 pairs with W2 */
	futex(&d->wake, FUTEX_WAKE_PRIVATE, 1, NULL);
}

static void clock_stepped(struct kwq__clock_waiter *w)
{
	wake_timer(kwq__container_of(w, struct kwq_delay, watch));
}

/* Under `consumer`: a request fired, merged, was cancelled or dropped.
 * One writer at a time, so no RMW. */
static void pending_sub(struct kwq_delay *d)
{
	uint64_t r = atomic_load_explicit(&d->retired, memory_order_relaxed);
	atomic_store_explicit(&d->retired, r + 1, memory_order_relaxed);
}

/* A caller takes back its count (absorbed, or out of memory). */
static void added_sub(struct kwq_delay *d)
{
	atomic_fetch_sub_explicit(&d->added, 1, memory_order_relaxed);
}

/*
 * Whether a delayed add may be pending (P2).  retired is read first:
 * a retirement seen is of an add already counted in the `added` read
 * after it, so the difference never undercounts.
 */
static bool maybe_pending(struct kwq_delay *d)
{
	uint64_t r = atomic_load(&d->retired);
	return atomic_load(&d->added) != r;
}

/* An immediate add takes the consumer lock; the timer lets it in. */
static void consumer_lock(struct kwq_delay *d)
{
	atomic_fetch_add_explicit(&d->contenders, 1, memory_order_relaxed);
	pthread_mutex_lock(&d->consumer);
	atomic_fetch_sub_explicit(&d->contenders, 1, memory_order_relaxed);
}

/*
 * The timer thread, every BATCH items of a long take or fire: if an
 * immediate add waits for the lock, step out of its way.  A burst of
 * 100,000 due items would otherwise hold every kwq_add of the queue for
 * the whole burst; this bounds the wait to BATCH items and a hand-over.
 * The timer's state is whole between two items, and both loops look at it
 * afresh after the lock is taken again.  (A relaxed look: a contender it
 * misses is let in at the next look or when the timer sleeps.)
 */
static void timer_yield(struct kwq_delay *d, unsigned *n)
{
	if (++*n % BATCH != 0 ||
	    atomic_load_explicit(&d->contenders, memory_order_relaxed) == 0)
		return;
	pthread_mutex_unlock(&d->consumer);
	sched_yield();
	pthread_mutex_lock(&d->consumer);
}

/* ------------------------------------------------------------ consumer */

static struct req *index_get(struct kwq_delay *d, const struct kwq_key *k)
{
	struct kwq__probe probe;
	kwq__item_probe(&probe, k);
	struct kwq_item *it = ck_hs_get(&d->index, (unsigned long)k->hash, &probe);
	return it ? req_of_key(it) : NULL;
}

/* r leaves the index (fired, cancelled, dropped); its entries go stale. */
static void unindex(struct kwq_delay *d, struct req *r)
{
	struct kwq_item *it = key_of(r);
	ck_hs_remove(&d->index, (unsigned long)it->hash, it);
	r->indexed = false;
	if (r->sched_seq != 0) {
		r->sched_seq = 0;
		d->stale++;
	}
	if (r->refs == 0)
		free(r);
	pending_sub(d);
}

/* One entry of r left the timeline. */
static void unref(struct req *r)
{
	if (--r->refs == 0 && !r->indexed)
		free(r);
}

/* r's valid entry was popped: r stops waiting (fired, or shutdown). */
static void popped_valid(struct kwq_delay *d, struct req *r)
{
	r->sched_seq = 0; /* no entry left to go stale */
	r->refs--;
	unindex(d, r);
}

static void schedule(struct kwq_delay *d, struct req *r)
{
	struct kwq__tl_entry e = { r->ready, ++d->seq, r };
	if (r->sched_seq != 0)
		d->stale++; /* its earlier entry */
	kwq__timeline_push(&d->tl, &e); /* reserved by take_requests */
	r->sched_seq = e.seq;
	r->refs++;
}

/* Apply one request: merge it into the key's waiting one, or index it.
 * false: out of memory for the index (r is still the caller's). */
static bool apply(struct kwq_delay *d, struct req *r)
{
	struct kwq_item *rk = key_of(r);
	/* The set's compare callback takes an item as well as a probe. */
	struct kwq_item *ok = ck_hs_get(&d->index, (unsigned long)rk->hash, rk);
	struct req *old = ok ? req_of_key(ok) : NULL;

	if (old != NULL) {
		if (r->priority > old->priority)
			old->priority = r->priority;
		if (r->ready < old->ready) {
			old->ready = r->ready;
			schedule(d, old);
		}
		free(r);
		pending_sub(d);
		return true;
	}
	if (!ck_hs_put(&d->index, (unsigned long)rk->hash, rk))
		return false;
	r->indexed = true;
	schedule(d, r);
	return true;
}

enum take { TAKE_ALL, TAKE_BLOCKED, TAKE_NOMEM };

/* Move what the inbox holds into the index and the timeline.
 * TAKE_BLOCKED when an appender is between its two steps (its node is not
 * linked yet); TAKE_NOMEM leaves the rest in the inbox. */
static enum take take_requests(struct kwq_delay *d, bool timer)
{
	for (unsigned items = 0;; timer ? timer_yield(d, &items) : (void)0) {
		if (kwq__timeline_reserve(&d->tl) != 0)
			return TAKE_NOMEM;
		struct cds_wfcq_node *n = __cds_wfcq_dequeue_nonblocking(&d->head, &d->tail);
		if (n == NULL)
			return TAKE_ALL;
		if (n == CDS_WFCQ_WOULDBLOCK)
			return TAKE_BLOCKED;
		struct req *r = kwq__container_of(n, struct req, link);
		tsan_acquire(r); /* R2 pairs with R1 */
		d->consumed++;
		if (d->stopped) {
			free(r); /* shutdown came first */
			pending_sub(d);
		} else if (!apply(d, r)) {
			/* Out of memory for the index: add it now rather
			 * than lose it (early, the lesser harm). */
			struct kwq_key k = key_arg(r);
			d->q->ops->add(d->q, &k, r->priority);
			free(r);
			pending_sub(d);
		}
	}
}

/* The whole inbox, waiting out appenders caught between their two steps. */
static void take_all(struct kwq_delay *d)
{
	/* TAKE_NOMEM leaves the rest in the inbox: the index is then not
	 * exact for those keys (out of memory). */
	while (take_requests(d, false) == TAKE_BLOCKED)
		sched_yield();
}

static bool entry_valid(const struct kwq__tl_entry *e)
{
	return e->seq == ((struct req *)e->owner)->sched_seq;
}

static bool keep_valid(const struct kwq__tl_entry *e, void *ctx)
{
	(void)ctx;
	if (entry_valid(e))
		return true;
	unref(e->owner);
	return false;
}

/* The earliest valid entry, popping stale ones on the way. */
static const struct kwq__tl_entry *earliest(struct kwq_delay *d)
{
	const struct kwq__tl_entry *e;

	if (d->stale > STALE_SLACK && d->stale > kwq__timeline_size(&d->tl) - d->stale) {
		kwq__timeline_filter(&d->tl, keep_valid, NULL);
		d->stale = 0;
	}
	while ((e = kwq__timeline_peek(&d->tl)) != NULL && !entry_valid(e)) {
		struct req *r = e->owner;
		kwq__timeline_pop(&d->tl);
		d->stale--;
		unref(r);
	}
	return e;
}

static int64_t next_ready(struct kwq_delay *d)
{
	const struct kwq__tl_entry *e = earliest(d);
	return e ? e->ready : INT64_MAX;
}

/* Add everything due at `now`.  false if an add ran out of memory. */
static bool fire_due(struct kwq_delay *d, int64_t now)
{
	const struct kwq__tl_entry *e;

	for (unsigned items = 0; (e = earliest(d)) != NULL && e->ready <= now;
	     timer_yield(d, &items)) {
		struct req *r = e->owner;
		struct kwq_key k = key_arg(r);
		if (d->q->ops->add(d->q, &k, r->priority) == -ENOMEM)
			return false; /* stays due; retried shortly */
		kwq__timeline_pop(&d->tl);
		popped_valid(d, r);
	}
	return true;
}

/* Shutdown: drop every waiting request (under the lock). */
static void drop_all(struct kwq_delay *d)
{
	d->stopped = true;
	take_all(d);
	const struct kwq__tl_entry *e;
	while ((e = kwq__timeline_peek(&d->tl)) != NULL) {
		struct req *r = e->owner;
		bool valid = entry_valid(e);
		kwq__timeline_pop(&d->tl);
		if (valid)
			popped_valid(d, r);
		else
			unref(r);
	}
	d->stale = 0;
}

static void *timer_main(void *arg)
{
	struct kwq_delay *d = arg;

	for (;;) {
		uint32_t w = atomic_load_explicit(&d->wake, memory_order_acquire); /* W2 */
		if (atomic_load(&d->stop))
			break;
		pthread_mutex_lock(&d->consumer);
		enum take took = take_requests(d, true);
		bool fired = fire_due(d, kwq_clock_now(d->clock));
		int64_t next = next_ready(d);
		atomic_store(&d->sleep_until, next); /* S3 */
		uint64_t consumed = d->consumed;
		pthread_mutex_unlock(&d->consumer);

		if (atomic_load(&d->enqueued) != consumed) { /* S4 */
			if (took == TAKE_BLOCKED)
				sched_yield(); /* a preempted appender: let it finish */
			continue;
		}
		if (atomic_load(&d->stop))
			break;

		struct timespec ts, *tsp = NULL;
		int64_t rel = INT64_MAX;
		if (!fired || took == TAKE_NOMEM)
			rel = RETRY_NS;
		else if (d->clock == NULL && next != INT64_MAX)
			rel = next - kwq__mono_now();
		if (rel != INT64_MAX) {
			if (rel <= 0)
				continue;
			ts.tv_sec = (time_t)(rel / 1000000000);
			ts.tv_nsec = (long)(rel % 1000000000);
			tsp = &ts;
		}
		futex(&d->wake, FUTEX_WAIT_PRIVATE, w, tsp);
		/* Awake: callers need not wake us until we publish again. */
		atomic_store(&d->sleep_until, INT64_MIN);
	}
	pthread_mutex_lock(&d->consumer);
	drop_all(d);
	pthread_mutex_unlock(&d->consumer);
	return NULL;
}

/* ------------------------------------------------------------ caller side */

static void delay_destroy(struct kwq_delay *d)
{
	kwq__timeline_free(&d->tl);
	ck_hs_destroy(&d->index);
	pthread_mutex_destroy(&d->consumer);
	free(d);
}

static struct kwq_delay *delay_start(struct kwq *q)
{
	struct kwq_delay *d = calloc(1, sizeof *d);
	if (d == NULL)
		return NULL;
	d->q = q;
	d->clock = q->clock;
	__cds_wfcq_init(&d->head, &d->tail);
	atomic_init(&d->sleep_until, INT64_MIN);
	pthread_mutex_init(&d->consumer, NULL);
	if (!ck_hs_init(&d->index, CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT,
			kwq__item_hs_hash, kwq__item_hs_compare, &kwq__ck_allocator,
			64, q->seed)) {
		pthread_mutex_destroy(&d->consumer);
		free(d);
		return NULL;
	}
	if (d->clock != NULL) {
		d->watch.wake = clock_stepped;
		kwq__clock_watch(d->clock, &d->watch);
	}
	if (pthread_create(&d->thread, NULL, timer_main, d) != 0) {
		if (d->clock != NULL)
			kwq__clock_unwatch(d->clock, &d->watch);
		delay_destroy(d);
		return NULL;
	}
	return d;
}

/* The queue's delay state, started on first use: NULL with *err set. */
static struct kwq_delay *delay_get(struct kwq *q, int *err)
{
	/* A1 pairs with R3: d's fields are initialized before it is seen. */
	struct kwq_delay *d = atomic_load_explicit(&q->delay, memory_order_acquire);
	if (d != NULL)
		return d;
	pthread_mutex_lock(&q->delay_lock);
	d = atomic_load_explicit(&q->delay, memory_order_relaxed);
	if (q->delay_stopped) {
		*err = -ESHUTDOWN;
		d = NULL;
	} else if (d == NULL) {
		d = delay_start(q);
		if (d == NULL)
			*err = -ENOMEM;
		else
			atomic_store_explicit(&q->delay, d, memory_order_release); /* R3 */
	}
	pthread_mutex_unlock(&q->delay_lock);
	return d;
}

int kwq__delay_add(struct kwq *q, const struct kwq_key *k, int64_t delay_ns, int priority)
{
	int rc = 0;
	struct kwq_delay *d = delay_get(q, &rc);
	if (d == NULL)
		return rc;

	/* P1: counted before absorb (see "pending"); seq_cst. */
	atomic_fetch_add(&d->added, 1);
	/* A queued or held+dirty item is already due: the delayed add is
	 * absorbed, except that it may raise the priority. */
	rc = q->ops->absorb(q, k, priority);
	if (rc != 0) {
		added_sub(d);
		return rc < 0 ? rc : 0;
	}
	int64_t ready = kwq__sat_add(kwq_clock_now(d->clock), delay_ns);
	struct req *r = kwq__entry_new(KEY_OFFSET + sizeof(struct kwq_item), KEY_OFFSET, k);
	if (r == NULL) {
		added_sub(d);
		return -ENOMEM;
	}
	r->priority = priority;
	r->ready = ready;
	cds_wfcq_node_init(&r->link);
	tsan_release(r); /* R1 pairs with R2 */
	cds_wfcq_enqueue(&d->head, &d->tail, &r->link);
	atomic_fetch_add(&d->enqueued, 1); /* S1 */
	if (ready < atomic_load(&d->sleep_until)) /* S2 */
		wake_timer(d);
	return 0;
}

/* Under the consumer lock, after taking the inbox: the earliest ready time
 * may have moved before the one the timer sleeps to. */
static void nudge(struct kwq_delay *d)
{
	if (next_ready(d) < atomic_load(&d->sleep_until))
		wake_timer(d);
}

void kwq__delay_settle(struct kwq *q, const struct kwq_key *k)
{
	struct kwq_delay *d = atomic_load_explicit(&q->delay, memory_order_acquire); /* A1 */

	if (!maybe_pending(d)) /* P2 */
		return;
	consumer_lock(d);
	if (!d->stopped) {
		take_all(d);
		struct req *r = index_get(d, k);
		if (r != NULL) {
			int prio = r->priority;
			unindex(d, r);
			(void)q->ops->absorb(q, k, prio);
		}
		nudge(d);
	}
	pthread_mutex_unlock(&d->consumer);
}

int kwq__delay_add_now(struct kwq *q, const struct kwq_key *k, int priority)
{
	struct kwq_delay *d = atomic_load_explicit(&q->delay, memory_order_acquire); /* A1 */
	int rc;

	if (!maybe_pending(d)) { /* P2 */
		rc = q->ops->add(q, k, priority);
		if (rc == 0)
			kwq__delay_settle(q, k);
		return rc;
	}
	consumer_lock(d);
	struct req *r = NULL;
	if (!d->stopped) {
		take_all(d);
		r = index_get(d, k);
		if (r != NULL && r->priority > priority)
			priority = r->priority;
	}
	rc = q->ops->add(q, k, priority);
	if (rc == 0 && r != NULL)
		unindex(d, r);
	if (!d->stopped)
		nudge(d);
	pthread_mutex_unlock(&d->consumer);
	return rc;
}

void kwq__delay_stop(struct kwq *q)
{
	pthread_mutex_lock(&q->delay_lock);
	q->delay_stopped = true;
	struct kwq_delay *d = atomic_load_explicit(&q->delay, memory_order_relaxed);
	pthread_mutex_unlock(&q->delay_lock);
	if (d != NULL) {
		atomic_store(&d->stop, true);
		wake_timer(d);
	}
}

void kwq__delay_free(struct kwq *q)
{
	kwq__delay_stop(q);
	struct kwq_delay *d = atomic_load_explicit(&q->delay, memory_order_relaxed);
	if (d == NULL)
		return;
	pthread_join(d->thread, NULL);
	if (d->clock != NULL)
		kwq__clock_unwatch(d->clock, &d->watch);
	/* Requests appended after the thread stopped: no caller is left. */
	struct cds_wfcq_node *n;
	while ((n = __cds_wfcq_dequeue_nonblocking(&d->head, &d->tail)) != NULL &&
	       n != CDS_WFCQ_WOULDBLOCK) {
		struct req *r = kwq__container_of(n, struct req, link);
		tsan_acquire(r); /* R2 */
		free(r);
	}
	delay_destroy(d);
}
