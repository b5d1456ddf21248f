// The public header compiles as C++ and its declarations link from C++.
#include <kwq.h>

#include <cerrno>
#include <cstdio>

static kwq_config static_cfg = KWQ_CONFIG_INITIALIZER;
static kwq_add_opts static_opts = KWQ_ADD_OPTS_INITIALIZER;

int main()
{
	if (static_cfg.size != sizeof static_cfg || static_opts.size != sizeof static_opts)
		return 1;
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = KWQ_IMPL_MUTEX;
	kwq_t *q = kwq_new(&cfg);
	if (q == nullptr)
		return 1;
	kwq_item_t *it = nullptr;
	int rc = kwq_add(q, "cxx", 3);
	rc |= kwq_try_get(q, &it);
	size_t len = 0;
	const void *k = kwq_item_key(it, &len);
	rc |= kwq_done(q, it);
	kwq_free(q);
	if (rc != 0 || k == nullptr || len != 3) {
		std::printf("rc=%d len=%zu\n", rc, len);
		return 1;
	}
	return 0;
}
