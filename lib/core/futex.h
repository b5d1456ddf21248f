/*
 * futex.h - the library's one futex wrapper (process-private futexes).
 *
 * Every caller sleeps on a word of its own choosing and re-checks what it
 * waits for on return: FUTEX_WAIT returns on a wake, a signal, a timeout,
 * or at once when the word no longer holds val, and a wake may reach a
 * word whose owner has already moved on (FUTEX_WAKE only hashes the
 * address), so every user tolerates a spurious return.
 */
#ifndef KWQ_CORE_FUTEX_H
#define KWQ_CORE_FUTEX_H

#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Sleep while *word == val, until deadline (absolute CLOCK_MONOTONIC
 * nanoseconds; INT64_MAX: no deadline). */
static inline void kwq__futex_wait(_Atomic uint32_t *word, uint32_t val, int64_t deadline)
{
	struct timespec ts, *tp = NULL;

	if (deadline != INT64_MAX) {
		ts.tv_sec = (time_t)(deadline / 1000000000);
		ts.tv_nsec = (long)(deadline % 1000000000);
		tp = &ts;
	}
	/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout. */
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, val, tp,
		NULL, FUTEX_BITSET_MATCH_ANY);
}

/* Wake up to n sleepers on word (INT_MAX: all). */
static inline void kwq__futex_wake(_Atomic uint32_t *word, int n)
{
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n, NULL, NULL, 0);
}

#endif
