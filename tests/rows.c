/* rows.c - see rows.h. */
#include "rows.h"

#include <stdio.h>
#include <string.h>

static const struct row rows[] = {
	{ "mutex", KWQ_IMPL_MUTEX },
	{ "sharded", KWQ_IMPL_SHARDED },
};

const struct row *row;

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
