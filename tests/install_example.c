/* Built by tests/run against an installed kwq, found with pkg-config. */
#include <kwq.h>

#include <stdio.h>

int main(void)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = KWQ_IMPL_MUTEX;
	kwq_t *q = kwq_new(&cfg);
	kwq_item_t *it;

	if (q == NULL || kwq_add(q, "installed", 9) != 0 || kwq_try_get(q, &it) != 0 ||
	    kwq_done(q, it) != 0) {
		fprintf(stderr, "installed kwq does not work\n");
		return 1;
	}
	kwq_free(q);
	return 0;
}
