/*
 * done_nomem.c - kwq_done of a held+dirty key never fails, even when the
 * re-queue would need memory and none can be had.
 *
 * The test interposes the allocator (malloc, calloc, realloc,
 * aligned_alloc, posix_memalign: its definitions take the place of libc's
 * for the library too) with a switch that fails every allocation.  For
 * each design it makes the one re-queue that needs memory:
 *   sharded  the held+dirty key's done puts it into a lane whose ring
 *            segment is full, with no spare segment left: the put needs a
 *            new segment;
 *   mutex    the done queues the key at a priority that has no level yet,
 *            with the level array full: the push needs a realloc.
 * With every allocation failing, kwq_done must return 0 (the header: done
 * consumes the handle and returns 0 or -EINVAL); then, memory back, the
 * key is handed out again after everything queued before it, and
 * kwq_shutdown_drain returns (watched: a stranded key would hang it).
 *
 * Sanitizer builds bring allocators of their own: the test skips there.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kwq.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
	__has_feature(memory_sanitizer)
#define SANITIZED 1
#endif
#endif

#ifndef SANITIZED
/* glibc's own entry points, under the names it exports for this. */
void *__libc_malloc(size_t size);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t size);
void *__libc_memalign(size_t align, size_t size);

static _Atomic bool failing;

void *malloc(size_t size)
{
	if (atomic_load_explicit(&failing, memory_order_relaxed)) {
		errno = ENOMEM;
		return NULL;
	}
	return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	if (atomic_load_explicit(&failing, memory_order_relaxed)) {
		errno = ENOMEM;
		return NULL;
	}
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
	if (atomic_load_explicit(&failing, memory_order_relaxed)) {
		errno = ENOMEM;
		return NULL;
	}
	return __libc_realloc(p, size);
}

void *aligned_alloc(size_t align, size_t size)
{
	if (atomic_load_explicit(&failing, memory_order_relaxed)) {
		errno = ENOMEM;
		return NULL;
	}
	return __libc_memalign(align, size);
}

int posix_memalign(void **out, size_t align, size_t size)
{
	if (atomic_load_explicit(&failing, memory_order_relaxed))
		return ENOMEM;
	void *p = __libc_memalign(align, size);
	if (p == NULL)
		return ENOMEM;
	*out = p;
	return 0;
}

static int tests;
static int failures;

static void ok(bool cond, const char *what)
{
	tests++;
	if (!cond)
		failures++;
	printf("%sok %d - %s\n", cond ? "" : "not ", tests, what);
}

struct drain_arg {
	kwq_t *q;
	_Atomic bool done;
};

static void *drainer(void *p)
{
	struct drain_arg *a = p;
	kwq_shutdown_drain(a->q);
	atomic_store(&a->done, true);
	return NULL;
}

/* Gets everything queued; true if the last one is `key` and it is the
 * only hand-out of it.  Then a drain must return within 5 s. */
static void check_requeued(kwq_t *q, int key, size_t expect, const char *row)
{
	char what[128];
	kwq_item_t *it;
	size_t n = 0;
	int last = -1, seen = 0;

	while (kwq_try_get(q, &it) == 0) {
		memcpy(&last, kwq_item_key(it, NULL), sizeof last);
		seen += last == key;
		n++;
		kwq_done(q, it);
	}
	snprintf(what, sizeof what, "%s: the held+dirty key is handed out again, last", row);
	ok(n == expect && last == key && seen == 1, what);

	struct drain_arg a = { .q = q };
	pthread_t t;
	pthread_create(&t, NULL, drainer, &a);
	for (int i = 0; i < 500 && !atomic_load(&a.done); i++) {
		struct timespec ts = { 0, 10000000 };
		nanosleep(&ts, NULL);
	}
	snprintf(what, sizeof what, "%s: kwq_shutdown_drain returns", row);
	ok(atomic_load(&a.done), what);
	if (!atomic_load(&a.done)) {
		printf("Bail out! drain hangs: a stranded key\n");
		exit(1);
	}
	pthread_join(t, NULL);
}

static void sharded_segment(void)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = KWQ_IMPL_SHARDED;
	kwq_t *q = kwq_new(&cfg);
	kwq_item_t *held;
	const int h = -1;

	kwq_add(q, &h, sizeof h);
	kwq_get(q, &held); /* lane 0's slot 0, taken */
	/* Slots 1..1023 of the first segment: the tail is at its end, and
	 * nothing was recycled, so no spare segment exists. */
	for (int i = 0; i < 1023; i++)
		kwq_add(q, &i, sizeof i);
	kwq_add(q, &h, sizeof h); /* held -> held+dirty */

	atomic_store(&failing, true);
	int rc = kwq_done(q, held);
	atomic_store(&failing, false);
	printf("# sharded: kwq_done -> %d\n", rc);
	ok(rc == 0, "sharded: kwq_done of held+dirty with a full segment and no memory returns 0");
	check_requeued(q, h, 1024, "sharded");
	kwq_free(q);
}

static void mutex_level(void)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = KWQ_IMPL_MUTEX;
	kwq_t *q = kwq_new(&cfg);
	kwq_item_t *held;
	const int h = -1;

	kwq_add(q, &h, sizeof h);
	kwq_get(q, &held);
	/* Four levels in use: the level array (4 to start) is full. */
	for (int i = 0; i < 4; i++) {
		struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
		o.priority = i + 1;
		kwq_add_with(q, &i, sizeof i, &o);
	}
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	o.priority = -5; /* no level yet: queued last */
	kwq_add_with(q, &h, sizeof h, &o);

	atomic_store(&failing, true);
	int rc = kwq_done(q, held);
	atomic_store(&failing, false);
	printf("# mutex: kwq_done -> %d\n", rc);
	ok(rc == 0, "mutex: kwq_done of held+dirty with a new level and no memory returns 0");
	check_requeued(q, h, 5, "mutex");
	kwq_free(q);
}

int main(void)
{
	printf("TAP version 13\n1..6\n");
	sharded_segment();
	mutex_level();
	return failures == 0 ? 0 : 1;
}
#else
int main(void)
{
	printf("1..0 # SKIP the sanitizer's allocator cannot be interposed\n");
	return 0;
}
#endif
