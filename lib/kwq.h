/*
 * kwq.h - a keyed work queue with the guarantees of Kubernetes client-go's
 * util/workqueue, for C services.
 *
 * Producers add keys; workers get a key, process it and call kwq_done().
 *
 *   - a key queued twice is handed out once (dedup);
 *   - a key is never held by two workers at once (exclusion);
 *   - a key added while held is handed out again after kwq_done() (no lost
 *     update);
 *   - queued keys are handed out in FIFO order of the time they last became
 *     queued;
 *   - shutdown refuses adds and lets workers drain what is queued.
 *
 * Conventions
 * -----------
 * Fallible calls return 0 or a negative errno (-EINVAL, -ENOMEM, -ESHUTDOWN,
 * -EAGAIN, -ETIMEDOUT, -ENOTSUP, -EOVERFLOW, -ECANCELED); kwq_strerror()
 * names them.
 * Constructors return a pointer, or NULL with errno set.  Destructors accept
 * NULL.  Times and durations are int64_t nanoseconds.
 *
 * A key is a byte string (key, len) with 0 <= len <= KWQ_KEY_MAX; key may be
 * NULL only when len == 0.  Two keys are the same item when their bytes are
 * equal.  The queue copies the bytes: the caller may reuse its buffer as soon
 * as the call returns.  Integer or pointer identities are passed as
 * (&id, sizeof id).
 *
 * A call given bad arguments returns -EINVAL and changes nothing.
 *
 * Memory: a queue holds an entry for every key queued, held or waiting
 * (about 90 bytes plus the key on the sharded design).  The sharded design
 * also keeps the entries of keys that went absent, up to 131,072 a queue
 * (about 10 MB with short keys), so that a key that comes back costs no
 * allocation; past that each shard frees its absent entries as it goes.
 * kwq_free frees everything.
 *
 * Happens-before: everything a thread did before kwq_add(k) happens-before
 * the return of the get that hands out k for the processing that covers that
 * add; everything a worker did before kwq_done() happens-before the next get
 * that hands out the same key.
 *
 * Synchronization table
 * ---------------------
 * "any" means: may run concurrently with any other call on the same object,
 * from any number of threads.  "excl" means: the caller must guarantee that
 * no other call on the object is in flight or will start.
 *
 *   call                      concurrency   may block
 *   ------------------------  ------------  ----------------------------------
 *   kwq_new                   any           no (allocates)
 *   kwq_free                  excl          joins the queue's own threads
 *   kwq_add                   any           no (short internal lock)
 *   kwq_add_after             any           no (wait-free hand-off; the
 *                                           first call starts a thread)
 *   kwq_add_rate_limited      any           no (as kwq_add_after)
 *   kwq_add_with              any           no (as kwq_add_after)
 *   kwq_forget                any           no (short internal lock)
 *   kwq_num_requeues          any           no (short internal lock)
 *   kwq_item_priority         any (*)       no
 *   kwq_get                   any           yes, until an item or shutdown
 *   kwq_try_get               any           no
 *   kwq_get_timeout           any           up to timeout_ns
 *   kwq_item_key              any (*)       no
 *   kwq_done                  any (*)       no
 *   kwq_len                   any           no
 *   kwq_shutdown              any           no
 *   kwq_shutdown_drain        any           yes, until nothing queued or held
 *   kwq_shutting_down         any           no
 *   kwq_finish                any (*)       no (as kwq_done and the add it
 *                                           makes; on_give_up as it runs)
 *   kwq_cancel                any           no (short internal lock)
 *   kwq_add_many              any           no (as n adds)
 *   kwq_get_batch             any           up to timeout_ns
 *   kwq_done_many             any (*)       no (as n dones)
 *   kwq_shutdown_drain_timeout any          up to timeout_ns
 *   kwq_item_dirty            any (*)       no
 *   kwq_workers_start         any           no (starts threads)
 *   kwq_workers_join          excl (pool)   yes, until the workers exit
 *   kwq_parallelize           any           yes, until every chunk ran
 *   kwq_limiter_exponential   any           no (allocates)
 *   kwq_limiter_fast_slow     any           no (allocates)
 *   kwq_limiter_bucket        any           no (allocates)
 *   kwq_limiter_max_of        any           no (allocates)
 *   kwq_limiter_with_max_wait any           no (allocates)
 *   kwq_limiter_default       any           no (allocates)
 *   kwq_limiter_custom        any           no (allocates)
 *   kwq_limiter_when          any           no (short internal lock; a
 *                                           custom limiter: its callbacks)
 *   kwq_limiter_forget        any           no (short internal lock)
 *   kwq_limiter_num_requeues  any           no (short internal lock)
 *   kwq_limiter_free          excl          no
 *   kwq_limiter_set_max_keys  any           no (short internal locks)
 *   kwq_limiter               any           no
 *   kwq_metrics_read          any           no (walks the held items under
 *                                           the queue's internal locks)
 *   kwq_metrics_prometheus    any           no (as kwq_metrics_read)
 *   kwq_metrics_prometheus_all any          no (as kwq_metrics_read)
 *   kwq_clock_now             any           no
 *   kwq_clock_fake_new        any           no
 *   kwq_clock_fake_step       any           no
 *   kwq_clock_free            excl          no
 *   kwq_strerror              any           no
 *
 *   (*) an item handle belongs to the thread holding it: kwq_item_key(),
 *   kwq_item_dirty(), kwq_done() and kwq_finish() on one handle must not
 *   race each other, and the handle is invalid once kwq_done() (or a
 *   kwq_finish() that consumed it) has been called on it.
 *
 * Implementations
 * ---------------
 * KWQ_IMPL_MUTEX is the reference design, a literal port of client-go (one
 * mutex, a notify list as Go's sync.Cond, a FIFO, dirty and processing
 * sets).
 * KWQ_IMPL_SHARDED (the default) is the scalable design.
 */
#ifndef KWQ_H
#define KWQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header (the library's soname stays libkwq.so.0: 0.2
 * only adds calls and appends fields). */
#define KWQ_VERSION_MAJOR 0
#define KWQ_VERSION_MINOR 2
#define KWQ_VERSION_PATCH 0
#define KWQ_VERSION_STRING "0.2.0"

#if defined(__GNUC__) && !defined(KWQ_STATIC_DEFINE)
#define KWQ_API __attribute__((visibility("default")))
#else
#define KWQ_API
#endif

/* ------------------------------------------------------------------------ */
/* Conventions                                                               */

/* The largest key length in bytes. */
#define KWQ_KEY_MAX 65535

/*
 * kwq_strerror - a static, human-readable name for an error code.
 *
 * Accepts either sign (-EINVAL or EINVAL).  Never returns NULL; unknown codes
 * give "unknown error".  Thread-safe, never blocks, the string is static.
 */
KWQ_API const char *kwq_strerror(int err);

/* ------------------------------------------------------------------------ */
/* Types                                                                     */

typedef struct kwq kwq_t;
typedef struct kwq_item kwq_item_t;
typedef struct kwq_clock kwq_clock_t;
typedef struct kwq_limiter kwq_limiter_t;

enum kwq_impl {
	KWQ_IMPL_SHARDED = 0,
	KWQ_IMPL_MUTEX = 1,
};

/* ------------------------------------------------------------------------ */
/* Queue lifetime                                                            */

struct kwq_config {
	size_t size;            /* sizeof(struct kwq_config); KWQ_CONFIG_INIT sets it */
	enum kwq_impl impl;     /* default KWQ_IMPL_SHARDED */
	const char *name;       /* optional, copied; a named queue keeps metrics */
	unsigned shards;        /* sharded only; 0 = chosen from the CPU count */
	kwq_clock_t *clock;     /* optional, borrowed; NULL = CLOCK_MONOTONIC */
	kwq_limiter_t *limiter; /* optional, owned from kwq_new on (also on
	                           failure); NULL = the default limiter */
	/* 0.2 */
	int max_attempts;       /* kwq_finish: give up past this many retries;
	                           0 = never */
	void (*on_give_up)(void *ctx, const void *key, size_t len); /* optional */
	void *give_up_ctx;      /* passed to on_give_up */
};

/*
 * KWQ_CONFIG_INIT is an expression (assign it, pass it); KWQ_CONFIG_INITIALIZER
 * is the brace form for initializing a declaration, a static one included
 * (a compound literal is not a constant under -pedantic):
 *   static struct kwq_config cfg = KWQ_CONFIG_INITIALIZER;
 */
#ifdef __cplusplus
#define KWQ_CONFIG_INITIALIZER \
	{ sizeof(kwq_config), KWQ_IMPL_SHARDED, nullptr, 0, nullptr, nullptr, 0, nullptr, nullptr }
#define KWQ_CONFIG_INIT (kwq_config KWQ_CONFIG_INITIALIZER)
#else
#define KWQ_CONFIG_INITIALIZER { .size = sizeof(struct kwq_config) }
#define KWQ_CONFIG_INIT ((struct kwq_config)KWQ_CONFIG_INITIALIZER)
#endif

/*
 * kwq_new - create a queue.
 *
 * cfg NULL means all defaults (KWQ_IMPL_SHARDED, unnamed, monotonic clock,
 * the default limiter, no give-ups).  Fields past cfg->size read as
 * zero, their defaults.  cfg is read during the call only; name is copied;
 * clock is borrowed and must outlive the queue.  limiter is owned by the
 * queue from the moment cfg->size is validated, and freed on any later
 * failure; NULL builds kwq_limiter_default()'s limiter on the queue's clock.
 *
 * Errors (NULL returned, errno set):
 *   EINVAL  cfg->size smaller than the first published struct kwq_config
 *           (the limiter is then not taken), an unknown impl, shards >
 *           65536, max_attempts < 0;
 *   ENOMEM  allocation failed.
 *
 * shards (KWQ_IMPL_SHARDED only) is the number of lock shards the keys are
 * hashed to; it is rounded up to a power of two, and 0 picks a count from
 * the number of online CPUs (at least 256: more shards than threads keep
 * lock collisions, and stalls behind a preempted lock holder, rare).  The
 * mutex design ignores it after checking it.  Thread-safe; does not block.
 */
KWQ_API kwq_t *kwq_new(const struct kwq_config *cfg);

/*
 * kwq_free - shut the queue down if it is not, and free it with everything
 * in it: items queued, held or delayed included (handles still held become
 * invalid).  NULL is accepted.
 *
 * Exclusive: no other thread may be inside, or later enter, any call on q.
 */
KWQ_API void kwq_free(kwq_t *q);

/* ------------------------------------------------------------------------ */
/* Core: add, get, done                                                      */

/*
 * kwq_add - make the key queued.
 *
 *   absent     -> queued at the tail
 *   queued     -> unchanged (position kept)
 *   held       -> held+dirty (queued again at the tail on kwq_done)
 *   held+dirty -> unchanged
 *
 * A waiting key (kwq_add_after) is added with the wait's priority if that
 * is higher, and the wait is cancelled, in the same critical section.
 *
 * The key bytes are copied.  Thread-safe; never blocks on other callers for
 * longer than the key's short critical section (one per key's shard on
 * the sharded design, the queue's mutex on the mutex design): pending
 * delayed adds cost it nothing.  Never fails for capacity; allocates for a
 * key it does not know, and the first time a key is added while held.
 *
 * Returns 0, or -EINVAL (q NULL, key NULL with len > 0, len > KWQ_KEY_MAX),
 * -ESHUTDOWN (the queue is shutting down; nothing changes), -ENOMEM.
 */
KWQ_API int kwq_add(kwq_t *q, const void *key, size_t len);

/*
 * kwq_get - take the head of the queue, blocking while none is queued.
 *
 * On success returns 0 and sets *item to a handle the caller holds until it
 * passes it to kwq_done().  The key is held: no other get hands it out until
 * then.  After shutdown, gets keep handing out queued items; once none is
 * queued they return -ESHUTDOWN at once.  A blocked get is woken by shutdown.
 *
 * Returns 0, -EINVAL (q or item NULL), -ESHUTDOWN, or -ENOMEM on the
 * mutex design only (its set of held keys could not grow, as client-go's
 * map insert can fail; the item stays queued at the head and nothing
 * changes).  The sharded design's get never allocates.  *item is untouched
 * on error.
 */
KWQ_API int kwq_get(kwq_t *q, kwq_item_t **item);

/*
 * kwq_try_get - as kwq_get(), but returns -EAGAIN instead of blocking when
 * nothing is queued and the queue is not shutting down.
 *
 * On the sharded design a get that runs while other gets do may find
 * nothing although an item is queued: another get has claimed the item's
 * place in the queue and not yet taken it (and finds it stale if the item
 * is raised to a higher priority meanwhile, which puts it back in sight).
 * The item is not lost: a later get hands it out.  With no other get in
 * flight, -EAGAIN means nothing was queued.
 */
KWQ_API int kwq_try_get(kwq_t *q, kwq_item_t **item);

/*
 * kwq_get_timeout - as kwq_get(), but blocks at most timeout_ns (measured on
 * CLOCK_MONOTONIC, whatever clock the queue was given), then returns
 * -ETIMEDOUT.  timeout_ns <= 0 does not block (and gives -ETIMEDOUT rather
 * than -EAGAIN when nothing is queued).
 */
KWQ_API int kwq_get_timeout(kwq_t *q, kwq_item_t **item, int64_t timeout_ns);

/*
 * kwq_item_key - the key bytes of a held item, and their length in *len
 * (len may be NULL).  The bytes stay valid until kwq_done() on the item.
 * Returns NULL for a NULL item.  Never blocks.  The returned pointer is
 * non-NULL for a held item even when its length is 0.
 */
KWQ_API const void *kwq_item_key(const kwq_item_t *item, size_t *len);

/*
 * kwq_done - finish processing a held item.
 *
 *   held       -> absent (the handle is freed)
 *   held+dirty -> queued at the tail (the handle is invalid afterwards)
 *
 * item must be a handle returned by a get on q and not yet passed to
 * kwq_done(); the call consumes it.  Works after shutdown too (a held+dirty
 * item is queued again so that a drain sees it processed).  Never fails
 * for memory: what a held+dirty item's re-queue needs was secured by the
 * add that made it dirty (which returns -ENOMEM instead).  Never blocks
 * longer than the key's critical section.
 *
 * Returns 0, or -EINVAL (q or item NULL).  Passing a handle that is not
 * held (a second kwq_done of it, or one from another queue) is undefined.
 */
KWQ_API int kwq_done(kwq_t *q, kwq_item_t *item);

/*
 * kwq_len - the number of queued items (neither held nor delayed).  Exact
 * when no call is in flight; a snapshot otherwise.  0 for q NULL.
 */
KWQ_API size_t kwq_len(kwq_t *q);

/*
 * kwq_shutdown - refuse adds from now on and wake every blocked get; does
 * not wait for anything.  Calling it again changes nothing, except that it
 * makes every running kwq_shutdown_drain() return.  NULL is ignored.
 */
KWQ_API void kwq_shutdown(kwq_t *q);

/*
 * kwq_shutdown_drain - shut down as kwq_shutdown(), then block until no item
 * is queued or held.  Workers must keep calling get and done meanwhile.
 * Waits also when the queue was already shut down; concurrent drains all
 * return when the queue is empty; a kwq_shutdown() called during the drain
 * makes it return at once.  NULL is ignored.
 */
KWQ_API void kwq_shutdown_drain(kwq_t *q);

/*
 * kwq_shutting_down - true once kwq_shutdown() or kwq_shutdown_drain() was
 * called.  false for q NULL.
 */
KWQ_API bool kwq_shutting_down(kwq_t *q);

/* ------------------------------------------------------------------------ */
/* Delayed adds (client-go DelayingInterface)                                */

/*
 * kwq_add_after - add the key once the queue's clock reaches now + delay_ns.
 *
 * delay_ns <= 0 adds at once, exactly as kwq_add().  Otherwise:
 *
 *   absent or held      -> waiting: added (as kwq_add) when due
 *   already waiting     -> keeps the EARLIER of its two ready times
 *   queued, held+dirty  -> already due: the delayed add is absorbed
 *
 * Waiting items are not counted by kwq_len().  Items due at once are added
 * in ready-time order, equal times in the order of the calls that set them.
 * A kwq_add() of a waiting key adds it now, with the wait's priority if
 * that is higher (kwq_add_with), and cancels the wait.  Shutdown
 * drops every waiting add (and frees it).
 *
 * Whether a key waits is decided in the key's own critical section, the
 * one its adds, gets and dones use: an add made after kwq_add_after()
 * returned always cancels it, and a get, done or add that ran before it
 * never does.  Never blocks: a new or earlier wait hands a record (one
 * allocation) to the queue's timer thread through a wait-free queue,
 * whatever the number of waiting items (the reference blocks at 1000).  The first delayed add of a queue starts that thread;
 * kwq_free() joins it.  With a fake clock the thread sleeps until
 * kwq_clock_fake_step() moves the clock.
 *
 * Returns 0, -EINVAL (as kwq_add), -ESHUTDOWN, -ENOMEM.
 */
KWQ_API int kwq_add_after(kwq_t *q, const void *key, size_t len, int64_t delay_ns);

/*
 * kwq_add_rate_limited - kwq_add_after(key, when(key)) with the queue's
 * limiter (client-go AddRateLimited).  when() is called, and counts a
 * failure of the key, even if the add is then refused.
 *
 * Returns as kwq_add_after().  Thread-safe; never blocks (the limiter's
 * per-key table takes a short internal lock; a custom limiter runs its
 * callback).
 */
KWQ_API int kwq_add_rate_limited(kwq_t *q, const void *key, size_t len);

/*
 * kwq_forget - clear the queue limiter's memory of the key (its failure
 * count; the key's memory is freed).  Does not touch the queue itself.
 * Returns 0 or -EINVAL.
 */
KWQ_API int kwq_forget(kwq_t *q, const void *key, size_t len);

/*
 * kwq_num_requeues - the queue limiter's failure count for the key, >= 0,
 * or -EINVAL.
 */
KWQ_API int kwq_num_requeues(kwq_t *q, const void *key, size_t len);

/* ------------------------------------------------------------------------ */
/* Priorities (controller-runtime AddWithOpts)                               */

struct kwq_add_opts {
	size_t size;       /* KWQ_ADD_OPTS_INIT sets it */
	int64_t after_ns;  /* > 0: delayed */
	bool rate_limited; /* also ask the limiter; the lower wait wins */
	int priority;      /* higher is handed out first; default 0 */
	/* 0.2 */
	bool replace;      /* with a wait > 0: a waiting key takes this call's
	                      ready time and priority (see kwq_add_with) */
};

/* The expression and the brace form, as KWQ_CONFIG_INIT and
 * KWQ_CONFIG_INITIALIZER. */
#ifdef __cplusplus
#define KWQ_ADD_OPTS_INITIALIZER { sizeof(kwq_add_opts), 0, false, 0, false }
#define KWQ_ADD_OPTS_INIT (kwq_add_opts KWQ_ADD_OPTS_INITIALIZER)
#else
#define KWQ_ADD_OPTS_INITIALIZER { .size = sizeof(struct kwq_add_opts) }
#define KWQ_ADD_OPTS_INIT ((struct kwq_add_opts)KWQ_ADD_OPTS_INITIALIZER)
#endif

/*
 * kwq_add_with - add with options.
 *
 * The wait is after_ns, or with rate_limited the limiter's when(key) when
 * after_ns <= 0 and else the lower of the two; a wait <= 0 adds at once,
 * otherwise as kwq_add_after().  Priorities: queued items are handed out
 * highest priority first, FIFO within a priority; kwq_add() is priority 0.
 * On the sharded design a get looks at one priority at a time, highest
 * first, and an item is out of sight while an add raises it: so a get
 * running beside adds may hand out a lower-priority (or later) item than
 * one queued, at a higher priority, by an add that had not returned when
 * the get was called or that is raising it.  Items whose adds returned
 * before the get was called, with no add of them in flight, come out in
 * the order above.
 *
 *   absent            -> queued at the tail of its priority
 *   queued            -> a higher priority moves it to the tail of that
 *                        priority; a lower or equal one changes nothing
 *   held, held+dirty  -> held+dirty; done queues it with the highest
 *                        priority asked since it was handed out
 *   waiting           -> keeps the earlier ready time and the higher
 *                        priority
 *
 * replace (with a wait > 0): a waiting key takes this call's ready time and
 * priority even when they are later or lower; among equal ready times it
 * counts as a new call setting that time.  An absent or held key becomes
 * waiting as without it; a queued or held+dirty key is due already and
 * only its priority may rise, as without it.  With a wait <= 0 replace
 * changes nothing.
 *
 * opts is read during the call only; fields past opts->size read as zero.  Returns as kwq_add_after(), and
 * -EINVAL for opts NULL or opts->size smaller than the first published
 * struct kwq_add_opts.
 */
KWQ_API int kwq_add_with(kwq_t *q, const void *key, size_t len,
			 const struct kwq_add_opts *opts);

/*
 * kwq_item_priority - the priority a held item was handed out with (0 for
 * NULL).  Never blocks.
 */
KWQ_API int kwq_item_priority(const kwq_item_t *item);

/* ------------------------------------------------------------------------ */
/* Finishing work: outcomes and give-ups (0.2)                               */

enum kwq_outcome {
	KWQ_OK = 0,          /* success: forget the key's failures */
	KWQ_RETRY = 1,       /* failure: rate-limited retry */
	KWQ_RETRY_AFTER = 2, /* retry after a given delay; failures kept */
	KWQ_DROP = 3,        /* stop retrying: forget, cancel the key's wait */
};

/*
 * kwq_finish - end the processing of a held item with an outcome: in one
 * call what a client-go worker does after processing, then kwq_done(item).
 *
 *   KWQ_OK           kwq_forget(key);
 *   KWQ_RETRY        kwq_add_rate_limited(key), or a give-up (below);
 *   KWQ_RETRY_AFTER  kwq_add_after(key, after_ns): the limiter is not asked
 *                    and its count not changed (after_ns is read only here;
 *                    0 adds at once);
 *   KWQ_DROP         kwq_forget(key), and the key's pending delayed add, if
 *                    any, is cancelled (kwq_cancel of the wait only).
 *
 * In every case a key added again while it was held is queued again by the
 * done: an add made during processing is never lost.
 *
 * Give-up: with kwq_config.max_attempts = m > 0, a KWQ_RETRY of a key whose
 * limiter count (kwq_num_requeues) is already >= m gives up instead: the
 * key is forgotten and not retried, the give_ups_total metric grows by
 * one, and kwq_config.on_give_up (if set) is called once, on the calling
 * thread, before kwq_finish returns, with give_up_ctx and the key (its
 * bytes valid during the call; it may call any function of this header on
 * q but kwq_free, kwq_done and kwq_finish of this item).  A key that fails
 * every time is processed m + 1 times.  Only kwq_finish (and the worker
 * pool) applies max_attempts; kwq_add_rate_limited never gives up.  A
 * give-up needs no add, so it happens the same way after shutdown (and
 * returns 0).
 *
 * Thread safety and blocking as kwq_done and the add it makes (the
 * limiter's short lock; the callback runs as long as it runs).  The handle
 * belongs to the caller, as for kwq_done.
 *
 * Returns 0; -ESHUTDOWN when the retry was refused because the queue is
 * shutting down, -ENOMEM when it could not be recorded (the limiter's
 * table or the delayed add could not allocate): in both the done still
 * happened.  -EINVAL (q or item NULL, an outcome outside the enum,
 * after_ns < 0 with KWQ_RETRY_AFTER): nothing happened, the handle is
 * still held.  Every return but -EINVAL consumes the handle.
 */
KWQ_API int kwq_finish(kwq_t *q, kwq_item_t *item, enum kwq_outcome outcome,
		       int64_t after_ns);

/* ------------------------------------------------------------------------ */
/* Cancel (0.2)                                                              */

/*
 * kwq_cancel - remove what is pending for the key:
 *
 *   queued                -> absent
 *   waiting (delayed add) -> its delayed add is dropped
 *   held+dirty            -> held: the re-queue on done is dropped, and
 *                            kwq_item_dirty of the handle is false again
 *   held                  -> unchanged: the item stays with its worker
 *   absent                -> unchanged
 *
 * A held key waiting on a delayed add loses the wait and stays held.  Works
 * after shutdown too (a running drain then has less to wait for).  Does not
 * touch the limiter.  Metrics: a removed queued or held+dirty item leaves
 * depth (-1), a removed wait leaves delayed (-1).
 *
 * Decided in the key's critical section, as its adds: an add that returned
 * before the cancel was called is cancelled, one called after it returned
 * is not.  On the sharded design a cancelled queued item's place in the
 * queue is left behind and skipped by the get that reaches it.
 * Thread-safe; never blocks beyond the key's critical section.
 *
 * Returns 1 when something was removed, 0 when nothing was pending, or
 * -EINVAL (as kwq_add).
 */
KWQ_API int kwq_cancel(kwq_t *q, const void *key, size_t len);

/* ------------------------------------------------------------------------ */
/* Batches (0.2)                                                             */

struct kwq_key_ref {
	const void *key;
	size_t len;
};

/* A timeout that never expires (kwq_get_batch). */
#define KWQ_FOREVER INT64_MAX

/*
 * kwq_add_many - kwq_add_with(q, keys[i].key, keys[i].len, opts) for
 * i = 0..n-1 in order (opts NULL: kwq_add), each add its own linearization
 * point, so FIFO follows the array order.  The arguments are checked
 * once; on the sharded design immediate adds (opts NULL, or no delay and
 * no rate_limited) wake at most one parked worker for the whole batch.
 *
 * Every key and opts (as kwq_add_with checks it) is checked first: a bad
 * one gives -EINVAL and nothing is added.  keys is read during the call
 * only; the key bytes are copied.  Thread-safe; blocks as n adds.
 *
 * Returns the number of keys accepted: n on success; when an add part way
 * fails (-ENOMEM, or a shutdown that happened during the call), the number
 * accepted before it (< n).  -ESHUTDOWN when shut down before the first
 * add, -ENOMEM when the first add failed.  n == 0 returns 0 (keys may then
 * be NULL).  -EINVAL also for q NULL, keys NULL with n > 0, n > INT_MAX.
 */
KWQ_API int kwq_add_many(kwq_t *q, const struct kwq_key_ref *keys, size_t n,
			 const struct kwq_add_opts *opts);

/*
 * kwq_get_batch - wait until at least one item is queued (at most
 * timeout_ns on CLOCK_MONOTONIC; <= 0 does not wait; KWQ_FOREVER waits as
 * kwq_get, for an item or shutdown), then take up to max queued items
 * exactly as that many consecutive gets would (priority, then FIFO), and
 * return how many it took, their handles in items[0..count-1].  Never
 * waits for a second item.  Each handle is held as one from kwq_get.  On
 * the sharded design a named queue reads its clock once for the batch
 * (every item's queue and work durations start from that time).
 *
 * Returns the count (1..max), or -EINVAL (q or items NULL, max == 0),
 * -EAGAIN (did not wait, nothing queued), -ETIMEDOUT, -ESHUTDOWN (shut
 * down, nothing queued), -ENOMEM (mutex design, as kwq_get, for the first
 * item only: a later one that cannot be taken ends the batch).  items is
 * untouched on error.  Counts in max > INT_MAX are taken as INT_MAX.
 */
KWQ_API int kwq_get_batch(kwq_t *q, kwq_item_t **items, size_t max, int64_t timeout_ns);

/*
 * kwq_done_many - kwq_done of each handle in order.  Every handle is
 * checked for NULL first (-EINVAL, none done).  Each must be held and
 * listed once (as for kwq_done; anything else is undefined).  Returns 0,
 * or -EINVAL (q NULL, items NULL with n > 0, a NULL handle).  n == 0
 * returns 0.  Never fails once its arguments are valid.
 */
KWQ_API int kwq_done_many(kwq_t *q, kwq_item_t *const *items, size_t n);

/* ------------------------------------------------------------------------ */
/* Draining with a deadline, the dirty signal (0.2)                          */

/*
 * kwq_shutdown_drain_timeout - as kwq_shutdown_drain, but waits at most
 * timeout_ns on CLOCK_MONOTONIC (<= 0: does not wait).  The queue is shut
 * down either way.
 *
 * Returns 0 when drained (or a kwq_shutdown ended the wait), -ETIMEDOUT
 * otherwise, -EINVAL for q NULL.
 */
KWQ_API int kwq_shutdown_drain_timeout(kwq_t *q, int64_t timeout_ns);

/*
 * kwq_item_dirty - true when the held item's key has been added again
 * since this handle was handed out (it is held+dirty and will be handed out
 * again after done), so that a worker can give up work that is already
 * stale.  A delayed add counts once the timer has applied it (it came due
 * and was added).  Never blocks (one load); false when q or item is NULL.
 * The handle's owner may call it at any time before its done.
 */
KWQ_API bool kwq_item_dirty(kwq_t *q, const kwq_item_t *item);

/* ------------------------------------------------------------------------ */
/* Rate limiters (client-go RateLimiter family)                              */

/*
 * A limiter decides how long a failed key waits before it is retried: each
 * kwq_limiter_when() is one failure of the key, kwq_limiter_forget() ends
 * the key's failures (its memory is freed), kwq_limiter_num_requeues()
 * reports how many the limiter counts.  Limiters combine: max_of and
 * with_max_wait own the limiters they are built from.  A limiter may be
 * used from any number of threads at once; per-key counts live in a
 * sharded table, so calls on different keys rarely contend.
 *
 * The constructors are thread-safe and do not block (they allocate); they
 * validate their arguments and return NULL with errno EINVAL (bad
 * argument) or ENOMEM.  A constructor that is given limiters owns them from
 * the call on, also when it fails.
 */

/*
 * kwq_limiter_exponential - per-key exponential backoff (client-go
 * ItemExponentialFailureRateLimiter).
 *
 * The n-th kwq_limiter_when() of a key since its last forget returns
 * min(max_ns, base_ns * 2^(n-1)); a count too large for the product gives
 * max_ns (no overflow).  num_requeues is the key's n.
 *
 * Errors: EINVAL (base_ns < 0 or max_ns < 0), ENOMEM.
 */
KWQ_API kwq_limiter_t *kwq_limiter_exponential(int64_t base_ns, int64_t max_ns);

/*
 * kwq_limiter_fast_slow - per-key fast then slow retries (client-go
 * ItemFastSlowRateLimiter).
 *
 * A key's when() calls 1..max_fast_attempts since its last forget return
 * fast_ns, later ones slow_ns.  num_requeues is the key's count of calls.
 *
 * Errors: EINVAL (fast_ns < 0, slow_ns < 0 or max_fast_attempts < 0),
 * ENOMEM.
 */
KWQ_API kwq_limiter_t *kwq_limiter_fast_slow(int64_t fast_ns, int64_t slow_ns,
					     int max_fast_attempts);

/*
 * kwq_limiter_bucket - one token bucket for all keys (client-go
 * BucketRateLimiter over golang.org/x/time/rate's Reserve()).
 *
 * The bucket starts with burst tokens and gains qps tokens a second on
 * clock (NULL = CLOCK_MONOTONIC; borrowed, it must outlive the limiter), up
 * to burst.  Each when() takes a token, going into debt when none is left:
 * the k-th call past the burst at one instant waits k / qps seconds
 * (rounded to the nanosecond; INT64_MAX at most).  The key is ignored:
 * num_requeues is always 0 and forget does nothing.  when() is lock-free.
 *
 * Errors: EINVAL (qps not a finite number > 0, or burst < 1), ENOMEM.
 */
KWQ_API kwq_limiter_t *kwq_limiter_bucket(double qps, int burst,
					  kwq_clock_t *clock);

/*
 * kwq_limiter_max_of - the worst case of several limiters (client-go
 * MaxOfRateLimiter).
 *
 * when() calls every child's when() (each counts the failure) and returns
 * the largest wait, 0 with no children; num_requeues is the largest of the
 * children's; forget forgets in every child.  limiters is read during the
 * call only (it may be NULL when n is 0).
 *
 * Ownership: takes every child, also on failure (then they are freed).
 * Errors: EINVAL (limiters NULL with n > 0, a NULL child, a child listed
 * twice), ENOMEM.
 */
KWQ_API kwq_limiter_t *kwq_limiter_max_of(kwq_limiter_t *const *limiters,
					  size_t n);

/*
 * kwq_limiter_with_max_wait - cap another limiter's wait (client-go
 * WithMaxWaitRateLimiter).
 *
 * when() returns min(inner's when(), max_wait_ns); forget and num_requeues
 * are inner's.
 *
 * Ownership: takes inner, also on failure (then it is freed).
 * Errors: EINVAL (inner NULL, max_wait_ns < 0), ENOMEM.
 */
KWQ_API kwq_limiter_t *kwq_limiter_with_max_wait(kwq_limiter_t *inner,
						 int64_t max_wait_ns);

/*
 * kwq_limiter_default - client-go's DefaultControllerRateLimiter:
 * max_of(exponential(5 ms, 1000 s), bucket(10 qps, burst 100)), the bucket
 * on CLOCK_MONOTONIC.  (A queue given no limiter builds this same limiter
 * on the queue's own clock.)
 *
 * Errors: ENOMEM.
 */
KWQ_API kwq_limiter_t *kwq_limiter_default(void);

/*
 * kwq_limiter_when - count one failure of the key and return how long it
 * should wait, in nanoseconds (>= 0).
 *
 * Thread-safe; never blocks beyond a short internal lock (a custom limiter:
 * as its callbacks).
 *
 * Returns the wait, or -EINVAL (l NULL, key NULL with len > 0,
 * len > KWQ_KEY_MAX; nothing is counted), -ENOMEM (a per-key limiter could
 * not store a new key, and did not count this failure).
 */
KWQ_API int64_t kwq_limiter_when(kwq_limiter_t *l, const void *key, size_t len);

/*
 * kwq_limiter_forget - end the key's failures: its count goes back to 0
 * and the memory it took is freed.  Thread-safe; never blocks beyond a
 * short internal lock.
 *
 * Returns 0, or -EINVAL (as kwq_limiter_when).
 */
KWQ_API int kwq_limiter_forget(kwq_limiter_t *l, const void *key, size_t len);

/*
 * kwq_limiter_num_requeues - the number of failures the limiter counts for
 * the key (0 for a key it does not know).  Thread-safe; never blocks beyond
 * a short internal lock.
 *
 * Returns the count (>= 0), or -EINVAL (as kwq_limiter_when).
 */
KWQ_API int kwq_limiter_num_requeues(kwq_limiter_t *l, const void *key,
				     size_t len);

/*
 * kwq_limiter_free - free a limiter and every limiter it owns (a custom
 * limiter's destroy callback is called once).  NULL is accepted.
 *
 * Exclusive: no other thread may be inside, or later enter, any call on l;
 * a limiter given to a queue or to another limiter is freed by its owner.
 */
KWQ_API void kwq_limiter_free(kwq_limiter_t *l);

/*
 * kwq_limiter_set_max_keys - cap how many keys a per-key limiter remembers
 * (exponential, fast_slow, and the children of max_of and with_max_wait);
 * 0 = unlimited, the default (0.2).
 *
 * When a failure of a key the limiter does not remember would pass the
 * cap, the key whose last failure is the oldest is forgotten first (its
 * count goes back to 0); a cap below the number of keys remembered
 * forgets the oldest at once.  Keys last failed while no cap was set count
 * as older than any failed since.  Each eviction is O(1); setting a cap
 * where there was none visits every remembered key once.  max_of and
 * with_max_wait pass the cap to their children and skip custom ones.  The
 * bucket remembers no keys (0, no effect).  Thread-safe: may run beside
 * when, forget and num_requeues; with a cap set, when and forget also
 * take one limiter-wide lock.
 *
 * Returns 0, -EINVAL (l NULL), -ENOTSUP (l is a custom limiter).
 */
KWQ_API int kwq_limiter_set_max_keys(kwq_limiter_t *l, size_t max_keys);

/*
 * kwq_limiter - the queue's limiter (the one given in kwq_config, or the
 * default one), borrowed: the queue owns it and frees it in kwq_free.
 * NULL for q NULL.  Never blocks (0.2).
 */
KWQ_API kwq_limiter_t *kwq_limiter(kwq_t *q);

/*
 * struct kwq_limiter_ops - the callbacks of a custom limiter.  Set size to
 * sizeof(struct kwq_limiter_ops).  when is required; the others may be
 * NULL (forget does nothing, num_requeues is 0, nothing to destroy).
 *
 * Every callback but destroy may be called from many threads at once, with
 * the key as (key, len) (key never NULL; the bytes are valid during the
 * call only).  A negative wait from when counts as 0, a negative count
 * from num_requeues as 0.  destroy is called exactly once, by
 * kwq_limiter_free() (or by a failing kwq_limiter_custom()).
 */
struct kwq_limiter_ops {
	size_t size;
	int64_t (*when)(void *ctx, const void *key, size_t len);
	void (*forget)(void *ctx, const void *key, size_t len);
	int (*num_requeues)(void *ctx, const void *key, size_t len);
	void (*destroy)(void *ctx);
};

/*
 * kwq_limiter_custom - a limiter whose decisions are the caller's.
 *
 * ops is copied (it need not outlive the call); ctx is passed to every
 * callback.  Ownership: once ops is found valid, ctx belongs to the limiter,
 * also if the call then fails with ENOMEM (ops->destroy(ctx) is called
 * before it returns); with EINVAL nothing is called and ctx stays the
 * caller's.
 *
 * Errors: EINVAL (ops NULL, ops->size smaller than the first published
 * struct kwq_limiter_ops, ops->when NULL), ENOMEM.
 */
KWQ_API kwq_limiter_t *kwq_limiter_custom(const struct kwq_limiter_ops *ops,
					  void *ctx);

/* ------------------------------------------------------------------------ */
/* Metrics (client-go's seven workqueue metrics)                             */

/*
 * A named queue (kwq_config.name) keeps client-go's workqueue metrics; an
 * unnamed one keeps none and pays nothing for them.  There is no ticker
 * thread: the two gauges over held items are computed when read.  Every
 * time is read from the queue's clock.
 *
 *   depth             +1 per counted add, -1 per get: counts queued and
 *                     held+dirty items, so it can exceed kwq_len().  An add
 *                     is counted when the item is not already dirty: absent
 *                     -> queued, or the first re-add of a held item.  A
 *                     delayed add is counted when it fires.
 *   adds_total        counted adds.
 *   retries_total     accepted calls (returning 0) of kwq_add_after(),
 *                     whatever the delay, of kwq_add_rate_limited(), and of
 *                     kwq_add_with() with after_ns > 0 or rate_limited.
 *   queue_duration    per get: from the item's counted add to the get.
 *   work_duration     per done: from the get to kwq_done().
 *   unfinished_work_seconds
 *                     at the read: the sum over held items of the time since
 *                     their get.
 *   longest_running_processor_seconds
 *                     at the read: the largest of those.
 *   delayed           keys waiting on a delayed add (what kwq_len leaves
 *                     out): +1 when a key starts waiting, -1 when its wait
 *                     ends (it fired, an add or kwq_cancel ended it, or
 *                     shutdown dropped it) (0.2).
 *   give_ups_total    give-ups of kwq_config.max_attempts (kwq_finish) (0.2).
 *
 * Histogram buckets are cumulative, as in Prometheus: le[i] counts the
 * observations <= 10^(i+1) ns (1e-8 s, 1e-7 s, ... 1e1 s); count is the
 * +Inf bucket; sum_seconds is the sum of the observations.
 *
 * A read concurrent with other calls is a snapshot whose counters may be a
 * few operations apart; exact when no call is in flight.
 */
#define KWQ_HIST_BUCKETS 10 /* upper bounds 1e-8 s, 1e-7 s, ... 1e1 s */

struct kwq_histogram {
	uint64_t count;
	double sum_seconds;
	uint64_t le[KWQ_HIST_BUCKETS];
};

struct kwq_metrics {
	size_t size;                         /* set by the caller (sizeof) */
	int64_t depth;                       /* workqueue_depth */
	uint64_t adds_total;                 /* workqueue_adds_total */
	uint64_t retries_total;              /* workqueue_retries_total */
	struct kwq_histogram queue_duration; /* workqueue_queue_duration_seconds */
	struct kwq_histogram work_duration;  /* workqueue_work_duration_seconds */
	double unfinished_work_seconds;      /* workqueue_unfinished_work_seconds */
	/* workqueue_longest_running_processor_seconds */
	double longest_running_processor_seconds;
	/* 0.2 */
	int64_t delayed;                     /* workqueue_delayed_items */
	uint64_t give_ups_total;             /* workqueue_give_ups_total */
};

/*
 * kwq_metrics_read - read the queue's metrics into *m.
 *
 * The caller sets m->size (sizeof(struct kwq_metrics)); every field that
 * lies wholly within m->size bytes is written, the rest of *m (fields past
 * it, and m->size itself) is left untouched, so a caller built against an
 * older or newer header gets the fields both know.  An unnamed queue reads
 * all zeros.  Thread-safe; does not block beyond the queue's internal
 * locks, taken while the held items are walked.
 *
 * Returns 0, or -EINVAL (q or m NULL, m->size smaller than
 * offsetof(struct kwq_metrics, depth)).
 */
KWQ_API int kwq_metrics_read(kwq_t *q, struct kwq_metrics *m);

/*
 * kwq_metrics_prometheus - the queue's metrics in the Prometheus text
 * exposition format (version 0.0.4), as client-go registers them.
 *
 * One family per metric, in name order, each with client-go's # HELP and
 * # TYPE lines and one sample labelled {name="<queue name>"} (backslash,
 * double quote and newline in the name escaped as \\, \" and \n):
 *
 *   workqueue_adds_total, workqueue_depth,
 *   workqueue_longest_running_processor_seconds,
 *   workqueue_queue_duration_seconds (histogram: _bucket with le="1e-08",
 *   "1e-07", "1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1", "1", "10",
 *   "+Inf", then _sum and _count), workqueue_retries_total,
 *   workqueue_unfinished_work_seconds,
 *   workqueue_work_duration_seconds (histogram, the same buckets).
 *
 * followed by the two families of 0.2: workqueue_delayed_items (gauge) and
 * workqueue_give_ups_total (counter).
 *
 * Counts are written as integers, seconds as Go's Prometheus client writes
 * a float (shortest round-trip digits: 7.5e-05, 0.001, 2.5).  Each line
 * ends in '\n'.  The text does not depend on the locale.
 *
 * As snprintf: writes at most cap bytes including a terminating NUL (when
 * cap > 0; buf may be NULL when cap is 0) and returns the length of the
 * whole text, excluding the NUL, whatever cap is: a return >= cap means the
 * text was cut, and the caller retries with a buffer of return + 1 bytes.
 * An unnamed queue writes nothing (an empty string when cap > 0) and
 * returns 0.  Thread-safe; blocks as kwq_metrics_read().
 *
 * Returns the length, or -EINVAL (q NULL, buf NULL with cap > 0),
 * -EOVERFLOW (the text would be longer than INT_MAX bytes).
 */
KWQ_API int kwq_metrics_prometheus(kwq_t *q, char *buf, size_t cap);

/*
 * kwq_metrics_prometheus_all - one exposition for several queues, for a
 * service's single /metrics endpoint (the text format allows each family
 * once per scrape): every family's # HELP and # TYPE once, followed by the
 * series of every named queue in array order (unnamed queues and NULL
 * entries are skipped), families in the order kwq_metrics_prometheus
 * writes them (0.2).  kwq_metrics_prometheus(q, buf, cap) writes exactly
 * what kwq_metrics_prometheus_all(&q, 1, buf, cap) writes.  queues is read
 * during the call only.  Thread-safe; blocks as kwq_metrics_read on each.
 *
 * Returns as kwq_metrics_prometheus (the bytes needed, as snprintf; 0 when
 * no queue is named), or -EINVAL (queues NULL with n > 0, buf NULL with
 * cap > 0, two named queues with the same name: duplicate series make a
 * scrape invalid), -EOVERFLOW, -ENOMEM (more than eight named queues, and
 * the array of their snapshots could not be allocated).
 */
KWQ_API int kwq_metrics_prometheus_all(kwq_t *const *queues, size_t n, char *buf,
				       size_t cap);

/* ------------------------------------------------------------------------ */
/* Worker pool and parallelize (0.2)                                          */

/*
 * The work function of a pool: process the held item (read its key with
 * kwq_item_key) and return the outcome; for KWQ_RETRY_AFTER set *after_ns
 * (0 on every call; a negative value counts as 0).  It must not call
 * kwq_done or kwq_finish on the item; an outcome outside the enum is taken
 * as KWQ_RETRY.
 */
typedef enum kwq_outcome (*kwq_work_fn)(void *ctx, kwq_item_t *item, int64_t *after_ns);
typedef struct kwq_workers kwq_workers_t;

/*
 * kwq_workers_start - start n threads, each looping: kwq_get; outcome =
 * fn(ctx, item, &after_ns); kwq_finish(q, item, outcome, after_ns); until
 * the get answers -ESHUTDOWN (the queue is shut down and nothing is
 * queued).  (A mutex-design get that fails for memory is retried after a
 * millisecond; so is a retry that kwq_finish could not record for memory,
 * the item still held, so that the pool loses no retry to a failing
 * allocation: the limiter may then count that failure more than once.)  q must outlive the pool (kwq_workers_join before
 * kwq_free).  fn runs on the pool's threads, concurrently with itself for
 * different keys.
 *
 * Returns the pool, or NULL with errno EINVAL (q or fn NULL, n 0 or above
 * 1024), EAGAIN (a thread could not be created: the started ones were
 * stopped and joined before they got anything; the queue is not shut
 * down), ENOMEM.
 */
KWQ_API kwq_workers_t *kwq_workers_start(kwq_t *q, unsigned n, kwq_work_fn fn, void *ctx);

/*
 * kwq_workers_join - wait until every worker of the pool has exited (they
 * exit once the queue is shut down and nothing is queued), join them, free
 * the pool.  Blocks until then; does not shut the queue down.  The usual
 * ending: kwq_shutdown_drain(q); kwq_workers_join(w); kwq_free(q).
 * Exclusive on w: one join per pool.
 *
 * Returns 0, or -EINVAL (w NULL).
 */
KWQ_API int kwq_workers_join(kwq_workers_t *w);

/*
 * kwq_parallelize - call fn(ctx, i) once for every piece i in
 * 0..pieces-1 on at most `workers` threads (never more threads than
 * chunks; the calling thread is one of them), each taking `chunk`
 * consecutive pieces at a time (chunk 0 = 1) (client-go ParallelizeUntil).
 * When cancelled is set it is called with ctx before each chunk, the first
 * included; once it returns true no further chunk starts (a chunk that
 * started runs to its end).  fn and cancelled run concurrently on several
 * threads.  Blocks until every started chunk has ended and the threads it
 * made are joined.  Threads that cannot be created are done without: the
 * pieces run on the threads that could be.
 *
 * Returns 0 when every piece ran, -ECANCELED otherwise, -EINVAL (workers
 * == 0, fn NULL).
 */
KWQ_API int kwq_parallelize(unsigned workers, size_t pieces, size_t chunk,
			    void (*fn)(void *ctx, size_t piece), void *ctx,
			    bool (*cancelled)(void *ctx));

/* ------------------------------------------------------------------------ */
/* Clocks                                                                    */

/*
 * kwq_clock_now - the clock's time in nanoseconds.  NULL reads
 * CLOCK_MONOTONIC.  Thread-safe, never blocks.
 */
KWQ_API int64_t kwq_clock_now(const kwq_clock_t *c);

/*
 * kwq_clock_fake_new - a fake clock that reads start_ns until stepped.
 * Returns NULL with errno ENOMEM on failure.  The caller owns it and frees it
 * with kwq_clock_free() after every queue that uses it.
 */
KWQ_API kwq_clock_t *kwq_clock_fake_new(int64_t start_ns);

/*
 * kwq_clock_fake_step - move a fake clock forward by delta_ns (negative
 * values are ignored: the clock never goes back; the sum saturates), and
 * wake the timer thread of every queue that uses the clock, so that what
 * became due is added.  Ignored for NULL.  Thread-safe; takes the clock's
 * internal lock briefly.
 */
KWQ_API void kwq_clock_fake_step(kwq_clock_t *c, int64_t delta_ns);

/*
 * kwq_clock_free - free a fake clock.  NULL is accepted.  Exclusive: no
 * queue may still use it.
 */
KWQ_API void kwq_clock_free(kwq_clock_t *c);

#ifdef __cplusplus
}
#endif

#endif /* KWQ_H */
