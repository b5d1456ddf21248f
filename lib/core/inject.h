/*
 * inject.h - random yields at publish and CAS points (meson -Dinject_yields).
 *
 * KWQ__YIELD() marks a point where a thread that is descheduled widens a race
 * window: between claiming a ring slot and publishing into it, between a
 * load and the CAS that depends on it, between announcing a waiter and
 * re-checking.  With the option off it compiles to nothing.
 */
#ifndef KWQ_CORE_INJECT_H
#define KWQ_CORE_INJECT_H

#if defined(KWQ__INJECT_YIELDS) && KWQ__INJECT_YIELDS
#include <sched.h>
#include <stdint.h>

/* xorshift32 per thread and translation unit; yields about 1 time in 8. */
static inline void kwq__inject_yield(void)
{
	static _Thread_local uint32_t x;

	if (x == 0)
		x = (uint32_t)(uintptr_t)&x | 1u;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	if ((x & 7u) == 0)
		sched_yield();
}
#define KWQ__YIELD() kwq__inject_yield()
#else
#define KWQ__YIELD() ((void)0)
#endif

/* A spin-wait hint: lets the sibling hyperthread run, saves power. */
static inline void kwq__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif
