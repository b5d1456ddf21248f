/*
 * delay.c - delayed adds: one timer thread per queue, a min-heap on
 * (ready time, call sequence) with a per-key index, and a wait-free inbox.
 *
 * Callers never touch the heap.  kwq_add_after() (and a kwq_add() that must
 * cancel a delayed add) allocates a request and appends it to a liburcu
 * wait-free concurrent queue (cds_wfcq): an exchange on the tail and a
 * store, no lock, no retry loop.  The timer thread is the only consumer: it
 * splices the inbox out, applies each request to the heap and the index,
 * adds what is due through the implementation's add, and sleeps until the
 * earliest ready time or until a request moves that time earlier.
 *
 * Rules (API.md), applied by the timer thread in request order:
 *   - a key already waiting keeps the earlier ready time; a later one never
 *     pushes it back; the priority is the highest asked;
 *   - equal ready times fire in the order of the calls that set them: a
 *     request that moves a ready time earlier takes the request's sequence;
 *   - a cancel (an immediate add of the key) drops the waiting add.
 * The caller decides absorption (the key is queued or held+dirty, so
 * already due) before it sends anything.
 *
 * Sleeping and waking (a Dekker handshake on C11 seq_cst atomics, so that
 * ThreadSanitizer sees it; liburcu 0.13's own atomics are inline asm):
 *
 *   caller:  enqueue; enqueued++ (S1); read sleep_until (S2);
 *            if ready < sleep_until: wake++ (W1), futex wake
 *   timer:   w = wake (W2); consume inbox; fire; sleep_until = next (S3);
 *            read enqueued (S4): unchanged since consumed -> futex_wait(w)
 *
 *   S1..S4 are seq_cst: either the timer's S4 sees the caller's S1 and
 *   loops, or the caller's S2 sees S3 and wakes it.  Reading w before
 *   consuming closes the window between the check and the sleep: any wake
 *   after W2 makes futex_wait return at once.  A fake clock's step bumps
 *   wake the same way (through kwq__clock_watch), so a timer on a fake
 *   clock sleeps with no timeout.
 *
 * The request's contents reach the timer through the inbox, which TSan
 * cannot see: __tsan_release/__tsan_acquire on the request make that edge
 * visible (R1 pairs with R2).  Everything else is C11 atomics or pthread.
 *
 * Memory: a request is freed by the timer thread when it fires, merges into
 * an earlier request of its key, cancels, or is dropped by shutdown; what
 * is left when the thread stops is freed by kwq__delay_free().
 */
#include "delay.h"

#include <errno.h>
#include <linux/futex.h>
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
#include "heap.h"

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

enum req_kind { REQ_ADD, REQ_CANCEL };

/*
 * A request is one allocation: this header, then at KEY_OFFSET the key as
 * a struct kwq_item (ISO C forbids a member ending in a flexible array).
 */
struct req {
	struct cds_wfcq_node link;
	struct kwq__heap_node heap;
	enum req_kind kind;
	int priority;
};

#define KEY_OFFSET \
	((sizeof(struct req) + _Alignof(struct kwq_item) - 1) & ~(_Alignof(struct kwq_item) - 1))

static struct kwq_item *key_of(struct req *r)
{
	return (struct kwq_item *)(void *)((char *)r + KEY_OFFSET);
}

static struct req *req_of_key(struct kwq_item *it)
{
	return (struct req *)(void *)((char *)it - KEY_OFFSET);
}

struct kwq_delay {
	struct kwq *q;
	kwq_clock_t *clock;             /* NULL: monotonic */
	pthread_t thread;

	/* inbox: many producers, the timer thread consumes */
	struct __cds_wfcq_head head;
	struct cds_wfcq_tail tail;

	_Atomic uint64_t enqueued;      /* requests appended (S1) */
	_Atomic int64_t sleep_until;    /* the timer's next deadline (S3) */
	_Atomic uint32_t wake;          /* futex word (W1/W2) */
	_Atomic bool stop;
	_Atomic long pending;           /* REQ_ADDs not yet fired or dropped */

	struct kwq__clock_waiter watch; /* fake clocks: step wakes us */

	/* timer thread only */
	uint64_t consumed;
	uint64_t seq;
	struct kwq__heap heap;
	ck_hs_t index;                  /* key -> waiting struct req */
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

static struct req *req_of_heap(struct kwq__heap_node *h)
{
	return kwq__container_of(h, struct req, heap);
}

static struct req *req_new(const struct kwq_key *k, enum req_kind kind)
{
	struct req *r = kwq__entry_new(KEY_OFFSET + sizeof(struct kwq_item), KEY_OFFSET, k);
	if (r != NULL)
		r->kind = kind;
	return r;
}

static void post(struct kwq_delay *d, struct req *r)
{
	cds_wfcq_node_init(&r->link);
	tsan_release(r); /* R1 pairs with R2 */
	cds_wfcq_enqueue(&d->head, &d->tail, &r->link);
	atomic_fetch_add(&d->enqueued, 1); /* S1 */
}

/* ------------------------------------------------------------ timer side */

/* Apply one request to the heap and the index.  Frees what it absorbs. */
static void apply(struct kwq_delay *d, struct req *r)
{
	struct kwq_item *rk = key_of(r);
	struct kwq_item *ok = ck_hs_get(&d->index, (unsigned long)rk->hash, rk);
	struct req *old = ok ? req_of_key(ok) : NULL;

	if (r->kind == REQ_CANCEL) {
		if (old != NULL) {
			ck_hs_remove(&d->index, (unsigned long)ok->hash, ok);
			kwq__heap_remove(&d->heap, &old->heap);
			free(old);
			atomic_fetch_sub_explicit(&d->pending, 1, memory_order_relaxed);
		}
		free(r);
		return;
	}
	r->heap.seq = d->seq++;
	if (old != NULL) {
		if (r->priority > old->priority)
			old->priority = r->priority;
		if (r->heap.ready < old->heap.ready) {
			old->heap.ready = r->heap.ready;
			old->heap.seq = r->heap.seq;
			kwq__heap_decreased(&d->heap, &old->heap);
		}
		free(r);
		atomic_fetch_sub_explicit(&d->pending, 1, memory_order_relaxed);
		return;
	}
	if (kwq__heap_push(&d->heap, &r->heap) != 0 ||
	    !ck_hs_put(&d->index, (unsigned long)rk->hash, rk)) {
		/* Out of memory: add it now rather than lose it. */
		if (r->heap.index < d->heap.n && d->heap.v[r->heap.index] == &r->heap)
			kwq__heap_remove(&d->heap, &r->heap);
		struct kwq_key k = { rk->bytes, rk->len, rk->hash };
		d->q->ops->add(d->q, &k, r->priority);
		free(r);
		atomic_fetch_sub_explicit(&d->pending, 1, memory_order_relaxed);
	}
}

/* Move what the inbox holds into the heap.  false when an enqueuer is
 * between its two steps (its node is not linked yet): come back soon. */
static bool take_requests(struct kwq_delay *d)
{
	for (;;) {
		struct cds_wfcq_node *n = __cds_wfcq_dequeue_nonblocking(&d->head, &d->tail);
		if (n == NULL)
			return true;
		if (n == CDS_WFCQ_WOULDBLOCK)
			return false;
		struct req *r = kwq__container_of(n, struct req, link);
		tsan_acquire(r); /* R2 pairs with R1 */
		d->consumed++;
		apply(d, r);
	}
}

/* Add everything due at `now`.  false if an add ran out of memory. */
static bool fire_due(struct kwq_delay *d, int64_t now)
{
	struct kwq__heap_node *top;

	while ((top = kwq__heap_top(&d->heap)) != NULL && top->ready <= now) {
		struct req *r = req_of_heap(top);
		struct kwq_item *rk = key_of(r);
		struct kwq_key k = { rk->bytes, rk->len, rk->hash };
		int rc = d->q->ops->add(d->q, &k, r->priority);
		if (rc == -ENOMEM)
			return false; /* stays due; retried shortly */
		kwq__heap_pop(&d->heap);
		ck_hs_remove(&d->index, (unsigned long)rk->hash, rk);
		free(r);
		atomic_fetch_sub_explicit(&d->pending, 1, memory_order_relaxed);
	}
	return true;
}

static void drop_all(struct kwq_delay *d)
{
	struct kwq__heap_node *h;
	while ((h = kwq__heap_pop(&d->heap)) != NULL) {
		free(req_of_heap(h));
		atomic_fetch_sub_explicit(&d->pending, 1, memory_order_relaxed);
	}
	ck_hs_reset(&d->index);
}

static void *timer_main(void *arg)
{
	struct kwq_delay *d = arg;

	for (;;) {
		uint32_t w = atomic_load_explicit(&d->wake, memory_order_acquire); /* W2 */
		if (atomic_load(&d->stop))
			break;
		bool linked = take_requests(d);
		bool fired = fire_due(d, kwq_clock_now(d->clock));
		struct kwq__heap_node *top = kwq__heap_top(&d->heap);
		int64_t next = top ? top->ready : INT64_MAX;

		atomic_store(&d->sleep_until, next); /* S3 */
		if (atomic_load(&d->enqueued) != d->consumed) { /* S4 */
			if (!linked)
				sched_yield(); /* a preempted enqueuer: let it finish */
			continue;
		}
		if (atomic_load(&d->stop))
			break;

		struct timespec ts, *tsp = NULL;
		int64_t rel = INT64_MAX;
		if (!fired)
			rel = 1000000; /* out of memory: retry in 1 ms */
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
	drop_all(d);
	return NULL;
}

/* ------------------------------------------------------------ caller side */

static struct kwq_delay *delay_start(struct kwq *q)
{
	struct kwq_delay *d = calloc(1, sizeof *d);
	if (d == NULL)
		return NULL;
	d->q = q;
	d->clock = q->clock;
	__cds_wfcq_init(&d->head, &d->tail);
	atomic_init(&d->sleep_until, INT64_MIN);
	if (!ck_hs_init(&d->index, CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT,
			kwq__item_hs_hash, kwq__item_hs_compare, &kwq__ck_allocator,
			64, q->seed)) {
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
		ck_hs_destroy(&d->index);
		free(d);
		return NULL;
	}
	return d;
}

int kwq__delay_add(struct kwq *q, const struct kwq_key *k, int64_t ready, int priority)
{
	/* A1 pairs with R3: d's fields are initialized before it is seen. */
	struct kwq_delay *d = atomic_load_explicit(&q->delay, memory_order_acquire);

	if (d == NULL) {
		pthread_mutex_lock(&q->delay_lock);
		d = atomic_load_explicit(&q->delay, memory_order_relaxed);
		if (d == NULL && !q->delay_stopped) {
			d = delay_start(q);
			if (d == NULL) {
				pthread_mutex_unlock(&q->delay_lock);
				return -ENOMEM;
			}
			atomic_store_explicit(&q->delay, d, memory_order_release); /* R3 */
		}
		bool stopped = q->delay_stopped;
		pthread_mutex_unlock(&q->delay_lock);
		if (stopped)
			return -ESHUTDOWN;
	}

	struct req *r = req_new(k, REQ_ADD);
	if (r == NULL)
		return -ENOMEM;
	r->priority = priority;
	r->heap.ready = ready;
	atomic_fetch_add_explicit(&d->pending, 1, memory_order_relaxed);
	post(d, r);
	if (ready < atomic_load(&d->sleep_until)) /* S2 */
		wake_timer(d);
	return 0;
}

void kwq__delay_cancel(struct kwq *q, const struct kwq_key *k)
{
	struct kwq_delay *d = atomic_load_explicit(&q->delay, memory_order_acquire); /* A1 */

	if (d == NULL || atomic_load_explicit(&d->pending, memory_order_relaxed) == 0)
		return;
	struct req *r = req_new(k, REQ_CANCEL);
	if (r == NULL)
		return; /* the delayed add fires later: an extra pass, no loss */
	post(d, r);
	/* Not urgent: the timer applies it before it fires anything later. */
}

long kwq__delay_pending(struct kwq *q)
{
	struct kwq_delay *d = atomic_load_explicit(&q->delay, memory_order_acquire); /* A1 */
	return d ? atomic_load_explicit(&d->pending, memory_order_relaxed) : 0;
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
	/* Requests posted after the thread stopped: no caller is left. */
	struct cds_wfcq_node *n;
	while ((n = __cds_wfcq_dequeue_nonblocking(&d->head, &d->tail)) != NULL &&
	       n != CDS_WFCQ_WOULDBLOCK) {
		struct req *r = kwq__container_of(n, struct req, link);
		tsan_acquire(r); /* R2 */
		free(r);
	}
	kwq__heap_free(&d->heap);
	ck_hs_destroy(&d->index);
	free(d);
}
