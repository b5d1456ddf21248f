/*
 * expect.h - the check of the white-box unit tests (ring, park, timeline):
 * report a failed expectation, count it in the including file's
 * `failures`, and leave the test function.
 */
#ifndef KWQ_TESTS_EXPECT_H
#define KWQ_TESTS_EXPECT_H

#include <stdio.h>

#define EXPECT(cond)                                                            \
	do {                                                                    \
		if (!(cond)) {                                                   \
			fprintf(stderr, "%s:%d: %s: expected %s\n", __FILE__,     \
				__LINE__, __func__, #cond);                      \
			failures++;                                              \
			return;                                                  \
		}                                                                \
	} while (0)

#endif
