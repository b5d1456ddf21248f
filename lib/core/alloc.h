/*
 * alloc.h - every allocation the library makes, and every thread it
 * starts, goes through here, so that a test build (KWQ__FAILPOINTS, the
 * kwq-failpoints archive of lib/meson.build) can fail the n-th one.  In
 * the library as shipped the failpoint is a constant false.
 */
#ifndef KWQ_CORE_ALLOC_H
#define KWQ_CORE_ALLOC_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if defined(KWQ__FAILPOINTS) && KWQ__FAILPOINTS
/* Whether this allocation fails (counts it). */
bool kwq__failpoint(void);

/*
 * Tests: from now on count allocations from 0, and fail the n-th one
 * (n < 0: none), only that one or (persist) every one from it on.
 * Thread-safe: the timer thread's allocations count too.
 */
void kwq__failpoint_arm(long n, bool persist);

/* Allocations counted since the last kwq__failpoint_arm. */
long kwq__failpoint_count(void);
#else
static inline bool kwq__failpoint(void)
{
	return false;
}
#endif

/* A failing allocation sets errno as libc's does. */
static inline bool kwq__alloc_fails(void)
{
	if (!kwq__failpoint())
		return false;
	errno = ENOMEM;
	return true;
}

static inline void *kwq__malloc(size_t n)
{
	return kwq__alloc_fails() ? NULL : malloc(n);
}

static inline void *kwq__calloc(size_t n, size_t size)
{
	return kwq__alloc_fails() ? NULL : calloc(n, size);
}

static inline void *kwq__realloc(void *p, size_t n)
{
	return kwq__alloc_fails() ? NULL : realloc(p, n);
}

static inline void *kwq__aligned_alloc(size_t align, size_t n)
{
	return kwq__alloc_fails() ? NULL : aligned_alloc(align, n);
}

static inline char *kwq__strdup(const char *s)
{
	return kwq__alloc_fails() ? NULL : strdup(s);
}

/* pthread_create with default attributes: 0 or its error number. */
static inline int kwq__thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
	if (kwq__failpoint())
		return EAGAIN;
	return pthread_create(t, NULL, fn, arg);
}

#endif
