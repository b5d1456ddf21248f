/*
 * rows.h - the table of implementations every conformance-style test runs
 * over, and the main that picks one row from argv[1] and runs the cases.
 */
#ifndef KWQ_TESTS_ROWS_H
#define KWQ_TESTS_ROWS_H

#include <kwq.h>

#include "tap.h"

struct row {
	const char *name;
	enum kwq_impl impl;
};

/* The row being run (set by rows_main before any case runs). */
extern const struct row *row;

/*
 * A queue of the current row with the given name, clock and limiter (each
 * may be NULL); bails out of the TAP run if kwq_new fails.
 */
kwq_t *row_queue(const char *name, kwq_clock_t *clock, kwq_limiter_t *limiter);

/* Sleep ms milliseconds (the tests' pauses that let a wrong design show). */
void pause_ms(int ms);

/* usage: PROG ROW.  Runs cases on that row; the exit status for main. */
int rows_main(int argc, char **argv, const struct tap_case *cases, size_t n);

#endif
