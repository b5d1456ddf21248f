/*
 * tap.h - a tiny TAP producer for meson's 'tap' protocol.
 *
 * A test is a void function; a failed check prints both operands as a TAP
 * diagnostic, marks the test failed and returns from it.  Checks are plain
 * code, never assert(), so NDEBUG cannot compile them out.
 */
#ifndef KWQ_TESTS_TAP_H
#define KWQ_TESTS_TAP_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tap_case {
	const char *name;
	void (*fn)(void);
};

extern bool tap_failed;

#define TAP_FAIL_AT(...)                                                        \
	do {                                                                    \
		printf("# %s:%d: ", __FILE__, __LINE__);                         \
		printf(__VA_ARGS__);                                             \
		printf("\n");                                                    \
		fflush(stdout);                                                  \
		tap_failed = true;                                               \
	} while (0)

/* Integers of any kind, compared and printed as intmax_t. */
#define CHECK_INT(a, op, b)                                                     \
	do {                                                                    \
		intmax_t va_ = (intmax_t)(a), vb_ = (intmax_t)(b);              \
		if (!(va_ op vb_)) {                                             \
			TAP_FAIL_AT("CHECK(%s %s %s): %jd vs %jd", #a, #op, #b,    \
				    va_, vb_);                                   \
			return;                                                  \
		}                                                                \
	} while (0)

#define CHECK_EQ(a, b) CHECK_INT(a, ==, b)

#define CHECK(cond)                                                             \
	do {                                                                    \
		if (!(cond)) {                                                   \
			TAP_FAIL_AT("CHECK(%s) is false", #cond);                   \
			return;                                                  \
		}                                                                \
	} while (0)

#define CHECK_PTR(a, op, b)                                                     \
	do {                                                                    \
		const void *pa_ = (a), *pb_ = (b);                               \
		if (!(pa_ op pb_)) {                                             \
			TAP_FAIL_AT("CHECK(%s %s %s): %p vs %p", #a, #op, #b, pa_, \
				    pb_);                                        \
			return;                                                  \
		}                                                                \
	} while (0)

/* Byte strings, printed escaped. */
void tap_print_bytes(const char *label, const void *p, size_t n);

#define CHECK_MEM(p, n, q, m)                                                   \
	do {                                                                    \
		const void *p_ = (p), *q_ = (q);                                 \
		size_t n_ = (n), m_ = (m);                                       \
		if (n_ != m_ || (n_ > 0 && memcmp(p_, q_, n_) != 0)) {           \
			TAP_FAIL_AT("CHECK_MEM(%s, %s) differ", #p, #q);            \
			tap_print_bytes("left ", p_, n_);                        \
			tap_print_bytes("right", q_, m_);                        \
			return;                                                  \
		}                                                                \
	} while (0)

/* Runs cases and prints the plan and results; returns the exit status. */
int tap_run(const char *prefix, const struct tap_case *cases, size_t n);

#endif
