/*
 * c_header.c - the public header under -std=c11 -pedantic -Werror: both
 * initializer forms, the brace one on statics, work as documented.
 */
#include <kwq.h>

#include <stdio.h>

static struct kwq_config static_cfg = KWQ_CONFIG_INITIALIZER;
static struct kwq_add_opts static_opts = KWQ_ADD_OPTS_INITIALIZER;

int main(void)
{
	int rc = 0;
	if (static_cfg.size != sizeof(struct kwq_config) || static_cfg.impl != KWQ_IMPL_SHARDED ||
	    static_opts.size != sizeof(struct kwq_add_opts) || static_opts.priority != 0) {
		puts("not ok: a static initializer left a field wrong");
		return 1;
	}
	for (int impl = 0; impl < 2; impl++) {
		struct kwq_config cfg = KWQ_CONFIG_INIT;
		cfg.impl = impl == 0 ? KWQ_IMPL_MUTEX : KWQ_IMPL_SHARDED;
		static_cfg.impl = cfg.impl;
		kwq_t *q = kwq_new(impl == 0 ? &cfg : &static_cfg);
		if (q == NULL) {
			perror("kwq_new");
			return 1;
		}
		struct kwq_add_opts opts = KWQ_ADD_OPTS_INIT;
		opts.priority = 3;
		static_opts.priority = 5;
		rc |= kwq_add_with(q, "low", 3, &opts);
		rc |= kwq_add_with(q, "high", 4, &static_opts);
		kwq_item_t *it = NULL;
		rc |= kwq_try_get(q, &it);
		size_t len = 0;
		kwq_item_key(it, &len);
		if (rc != 0 || len != 4 || kwq_item_priority(it) != 5) {
			printf("not ok: rc %d, len %zu: the priority-5 key first\n", rc, len);
			return 1;
		}
		rc |= kwq_done(q, it);
		kwq_free(q);
	}
	return rc != 0;
}
