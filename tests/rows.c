/* rows.c - see rows.h. */
#include "rows.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct row rows[] = {
	{ "mutex", KWQ_IMPL_MUTEX },
	{ "sharded", KWQ_IMPL_SHARDED },
};

const struct row *row;

kwq_t *row_queue(const char *name, kwq_clock_t *clock, kwq_limiter_t *limiter)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = row->impl;
	cfg.name = name;
	cfg.clock = clock;
	cfg.limiter = limiter;
	kwq_t *q = kwq_new(&cfg);
	if (q == NULL) {
		printf("Bail out! kwq_new(%s): %s\n", row->name, kwq_strerror(errno));
		exit(1);
	}
	return q;
}

void pause_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

int rows_main(int argc, char **argv, const struct tap_case *cases, size_t n)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s ROW\n", argv[0]);
		return 2;
	}
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		if (strcmp(rows[i].name, argv[1]) == 0)
			row = &rows[i];
	}
	if (row == NULL) {
		fprintf(stderr, "unknown row %s\n", argv[1]);
		return 2;
	}
	return tap_run(row->name, cases, n);
}
