/* row.h - the implementation a stress program runs on, from its argv[1]. */
#ifndef KWQ_STRESS_ROW_H
#define KWQ_STRESS_ROW_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <kwq.h>

/* "mutex" or "sharded" into *impl; false (and a message) otherwise. */
static inline bool stress_row(const char *name, enum kwq_impl *impl)
{
	if (strcmp(name, "mutex") == 0)
		*impl = KWQ_IMPL_MUTEX;
	else if (strcmp(name, "sharded") == 0)
		*impl = KWQ_IMPL_SHARDED;
	else {
		fprintf(stderr, "unknown row %s\n", name);
		return false;
	}
	return true;
}

#endif
