/*
 * ratelimit_test.c - the rate limiters: client-go's default_rate_limiters
 * tests with their exact sequences, the token bucket on a fake clock, the
 * per-key table white-box, the cap on remembered keys, concurrency (run
 * it under ThreadSanitizer) and bad input (run it under AddressSanitizer:
 * ownership taken on failure must not leak).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <kwq.h>

#include "ratelimit/keytable.h"
#include "ratelimit/limiter.h"
#include "tap.h"

#define MS 1000000LL
#define S 1000000000LL

#define WHEN(l, s) kwq_limiter_when((l), (s), strlen(s))
#define FORGET(l, s) kwq_limiter_forget((l), (s), strlen(s))
#define REQUEUES(l, s) kwq_limiter_num_requeues((l), (s), strlen(s))

/* ------------------------------------------------------- client-go ports */

static void t_exponential(void)
{
	kwq_limiter_t *l = kwq_limiter_exponential(1 * MS, 1 * S);
	CHECK(l != NULL);

	CHECK_EQ(WHEN(l, "one"), 1 * MS);
	CHECK_EQ(WHEN(l, "one"), 2 * MS);
	CHECK_EQ(WHEN(l, "one"), 4 * MS);
	CHECK_EQ(WHEN(l, "one"), 8 * MS);
	CHECK_EQ(WHEN(l, "one"), 16 * MS);
	CHECK_EQ(REQUEUES(l, "one"), 5);

	CHECK_EQ(WHEN(l, "two"), 1 * MS);
	CHECK_EQ(WHEN(l, "two"), 2 * MS);
	CHECK_EQ(REQUEUES(l, "two"), 2);

	CHECK_EQ(FORGET(l, "one"), 0);
	CHECK_EQ(REQUEUES(l, "one"), 0);
	CHECK_EQ(WHEN(l, "one"), 1 * MS);
	CHECK_EQ(REQUEUES(l, "two"), 2);
	kwq_limiter_free(l);
}

static void t_exponential_overflow(void)
{
	kwq_limiter_t *l = kwq_limiter_exponential(1 * MS, 1000 * S);
	CHECK(l != NULL);
	for (int i = 0; i < 5; i++)
		WHEN(l, "one");
	CHECK_EQ(WHEN(l, "one"), 32 * MS);
	for (int i = 0; i < 1000; i++)
		WHEN(l, "overflow1");
	CHECK_EQ(WHEN(l, "overflow1"), 1000 * S);
	kwq_limiter_free(l);

	l = kwq_limiter_exponential(60 * S, 1000 * 3600 * S);
	CHECK(l != NULL);
	for (int i = 0; i < 2; i++)
		WHEN(l, "two");
	CHECK_EQ(WHEN(l, "two"), 4 * 60 * S);
	for (int i = 0; i < 1000; i++)
		WHEN(l, "overflow2");
	CHECK_EQ(WHEN(l, "overflow2"), 1000 * 3600 * S);
	kwq_limiter_free(l);

	/* 1 ns doubles past 10 s at the 35th call; every later one is capped. */
	l = kwq_limiter_exponential(1, 10 * S);
	CHECK(l != NULL);
	for (int n = 1; n <= 100000; n++) {
		int64_t want = n <= 34 ? (int64_t)1 << (n - 1) : 10 * S;
		CHECK_EQ(WHEN(l, "k"), want);
	}
	CHECK_EQ(REQUEUES(l, "k"), 100000);
	kwq_limiter_free(l);

	/* The extremes of int64: no shift or product may overflow. */
	l = kwq_limiter_exponential(INT64_MAX, INT64_MAX);
	CHECK(l != NULL);
	CHECK_EQ(WHEN(l, "k"), INT64_MAX);
	CHECK_EQ(WHEN(l, "k"), INT64_MAX);
	kwq_limiter_free(l);

	l = kwq_limiter_exponential((int64_t)1 << 62, INT64_MAX);
	CHECK(l != NULL);
	CHECK_EQ(WHEN(l, "k"), (int64_t)1 << 62);
	CHECK_EQ(WHEN(l, "k"), INT64_MAX);
	kwq_limiter_free(l);

	/* base 0 never waits; max below base always gives max. */
	l = kwq_limiter_exponential(0, 10 * S);
	CHECK(l != NULL);
	for (int i = 0; i < 100; i++)
		CHECK_EQ(WHEN(l, "k"), 0);
	kwq_limiter_free(l);
	l = kwq_limiter_exponential(5 * S, 1 * S);
	CHECK(l != NULL);
	CHECK_EQ(WHEN(l, "k"), 1 * S);
	kwq_limiter_free(l);
}

static void t_fast_slow(void)
{
	kwq_limiter_t *l = kwq_limiter_fast_slow(5 * MS, 10 * S, 3);
	CHECK(l != NULL);

	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	CHECK_EQ(WHEN(l, "one"), 10 * S);
	CHECK_EQ(WHEN(l, "one"), 10 * S);
	CHECK_EQ(REQUEUES(l, "one"), 5);

	CHECK_EQ(WHEN(l, "two"), 5 * MS);
	CHECK_EQ(WHEN(l, "two"), 5 * MS);
	CHECK_EQ(REQUEUES(l, "two"), 2);

	CHECK_EQ(FORGET(l, "one"), 0);
	CHECK_EQ(REQUEUES(l, "one"), 0);
	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	kwq_limiter_free(l);

	l = kwq_limiter_fast_slow(5 * MS, 10 * S, 0);
	CHECK(l != NULL);
	CHECK_EQ(WHEN(l, "one"), 10 * S);
	kwq_limiter_free(l);
}

/* client-go's TestMaxOfRateLimiter: fast_slow and exponential. */
static void t_max_of(void)
{
	kwq_limiter_t *kids[] = {
		kwq_limiter_fast_slow(5 * MS, 3 * S, 3),
		kwq_limiter_exponential(1 * MS, 1 * S),
	};
	kwq_limiter_t *l = kwq_limiter_max_of(kids, 2);
	CHECK(l != NULL);

	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	CHECK_EQ(WHEN(l, "one"), 3 * S);
	CHECK_EQ(WHEN(l, "one"), 3 * S);
	CHECK_EQ(REQUEUES(l, "one"), 5);

	CHECK_EQ(WHEN(l, "two"), 5 * MS);
	CHECK_EQ(WHEN(l, "two"), 5 * MS);
	CHECK_EQ(REQUEUES(l, "two"), 2);

	CHECK_EQ(FORGET(l, "one"), 0);
	CHECK_EQ(REQUEUES(l, "one"), 0);
	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	kwq_limiter_free(l);
}

/* Two fast_slow children: each call is the worst of both. */
static void t_max_of_fast_slow_pair(void)
{
	kwq_limiter_t *kids[] = {
		kwq_limiter_fast_slow(5 * MS, 3 * S, 3),
		kwq_limiter_fast_slow(2 * MS, 10 * S, 3),
	};
	kwq_limiter_t *l = kwq_limiter_max_of(kids, 2);
	CHECK(l != NULL);

	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	CHECK_EQ(WHEN(l, "one"), 10 * S);
	CHECK_EQ(WHEN(l, "one"), 10 * S);
	CHECK_EQ(REQUEUES(l, "one"), 5);
	CHECK_EQ(FORGET(l, "one"), 0);
	CHECK_EQ(REQUEUES(l, "one"), 0);
	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	kwq_limiter_free(l);
}

static void t_max_of_empty(void)
{
	kwq_limiter_t *l = kwq_limiter_max_of(NULL, 0);
	CHECK(l != NULL);
	CHECK_EQ(WHEN(l, "k"), 0);
	CHECK_EQ(REQUEUES(l, "k"), 0);
	CHECK_EQ(FORGET(l, "k"), 0);
	kwq_limiter_free(l);
}

/* client-go's StepRateLimiter, as a custom limiter. */
struct step {
	atomic_int count;
	int threshold;
	int64_t base_ns, max_ns;
};

static int64_t step_when(void *ctx, const void *key, size_t len)
{
	(void)key;
	(void)len;
	struct step *s = ctx;
	return atomic_fetch_add(&s->count, 1) + 1 <= s->threshold ? s->base_ns : s->max_ns;
}

/* client-go's TestWithMaxWaitRateLimiter. */
static void t_with_max_wait(void)
{
	static struct step st = { .threshold = 100, .base_ns = 5 * MS, .max_ns = 1000 * S };
	struct kwq_limiter_ops ops = { .size = sizeof ops, .when = step_when };
	kwq_limiter_t *l = kwq_limiter_with_max_wait(kwq_limiter_custom(&ops, &st), 500 * S);
	CHECK(l != NULL);

	for (int i = 0; i < 100; i++)
		CHECK_EQ(kwq_limiter_when(l, &i, sizeof i), 5 * MS);
	for (int i = 100; i < 200; i++)
		CHECK_EQ(kwq_limiter_when(l, &i, sizeof i), 500 * S);
	kwq_limiter_free(l);
}

static void t_with_max_wait_exponential(void)
{
	kwq_limiter_t *l = kwq_limiter_with_max_wait(
		kwq_limiter_exponential(1 * S, 1000 * S), 10 * S);
	CHECK(l != NULL);

	CHECK_EQ(WHEN(l, "one"), 1 * S);
	CHECK_EQ(WHEN(l, "one"), 2 * S);
	CHECK_EQ(WHEN(l, "one"), 4 * S);
	CHECK_EQ(WHEN(l, "one"), 8 * S);
	CHECK_EQ(WHEN(l, "one"), 10 * S);
	CHECK_EQ(WHEN(l, "one"), 10 * S);
	CHECK_EQ(REQUEUES(l, "one"), 6);
	CHECK_EQ(FORGET(l, "one"), 0);
	CHECK_EQ(REQUEUES(l, "one"), 0);
	CHECK_EQ(WHEN(l, "one"), 1 * S);
	kwq_limiter_free(l);
}

/* ------------------------------------------------------------- the bucket */

static void t_bucket_fake_clock(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(12345);
	CHECK(c != NULL);
	kwq_limiter_t *l = kwq_limiter_bucket(10.0, 100, c);
	CHECK(l != NULL);

	/* The burst: every key shares the one bucket. */
	for (int i = 0; i < 100; i++)
		CHECK_EQ(kwq_limiter_when(l, &i, sizeof i), 0);
	/* Debt: the k-th call past the burst waits k / qps. */
	CHECK_EQ(WHEN(l, "one"), 100 * MS);
	CHECK_EQ(WHEN(l, "two"), 200 * MS);
	CHECK_EQ(REQUEUES(l, "one"), 0);
	CHECK_EQ(FORGET(l, "one"), 0);

	/* One second repays the 2 tokens of debt and leaves 8. */
	kwq_clock_fake_step(c, 1 * S);
	for (int i = 0; i < 8; i++)
		CHECK_EQ(WHEN(l, "one"), 0);
	CHECK_EQ(WHEN(l, "one"), 100 * MS);

	/* A long idle time refills to the burst, never beyond it. */
	kwq_clock_fake_step(c, 1000 * S);
	for (int i = 0; i < 100; i++)
		CHECK_EQ(WHEN(l, "one"), 0);
	CHECK_EQ(WHEN(l, "one"), 100 * MS);

	/* Half a token's time halves the wait of the next one. */
	kwq_clock_fake_step(c, 50 * MS);
	CHECK_EQ(WHEN(l, "one"), 150 * MS);
	kwq_limiter_free(l);
	kwq_clock_free(c);
}

/* A fractional interval adds up without drift. */
static void t_bucket_fractional(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	CHECK(c != NULL);
	kwq_limiter_t *l = kwq_limiter_bucket(3.0, 1, c);
	CHECK(l != NULL);

	CHECK_EQ(WHEN(l, "k"), 0);
	CHECK_EQ(WHEN(l, "k"), 333333333);
	CHECK_EQ(WHEN(l, "k"), 666666667);
	CHECK_EQ(WHEN(l, "k"), 1 * S);
	for (int k = 5; k <= 30000; k++)
		CHECK_EQ(WHEN(l, "k"), ((k - 1) * S + 1) / 3);
	kwq_limiter_free(l);
	kwq_clock_free(c);
}

static void t_bucket_extremes(void)
{
	/* One token in more than INT64_MAX ns: the wait saturates. */
	kwq_limiter_t *l = kwq_limiter_bucket(1e-300, 1, NULL);
	CHECK(l != NULL);
	CHECK_EQ(WHEN(l, "k"), 0);
	CHECK_EQ(WHEN(l, "k"), INT64_MAX);
	CHECK_EQ(WHEN(l, "k"), INT64_MAX);
	kwq_limiter_free(l);

	l = kwq_limiter_bucket(1e300, 1, NULL);
	CHECK(l != NULL);
	for (int i = 0; i < 1000; i++)
		CHECK_EQ(WHEN(l, "k"), 0);
	kwq_limiter_free(l);

	/* A fake clock at the ends of its range. */
	kwq_clock_t *c = kwq_clock_fake_new(INT64_MIN);
	CHECK(c != NULL);
	l = kwq_limiter_bucket(1.0, 1, c);
	CHECK(l != NULL);
	CHECK_EQ(WHEN(l, "k"), 0);
	CHECK_EQ(WHEN(l, "k"), 1 * S);
	kwq_clock_fake_step(c, INT64_MAX);
	kwq_clock_fake_step(c, INT64_MAX);
	kwq_clock_fake_step(c, INT64_MAX);
	CHECK_EQ(kwq_clock_now(c), INT64_MAX);
	CHECK_EQ(WHEN(l, "k"), 0);
	kwq_limiter_free(l);
	kwq_clock_free(c);
}

/* On CLOCK_MONOTONIC: only bounds can be checked. */
static void t_bucket_monotonic(void)
{
	kwq_limiter_t *l = kwq_limiter_bucket(0.001, 1, NULL);
	CHECK(l != NULL);
	CHECK_EQ(WHEN(l, "k"), 0);
	int64_t d = WHEN(l, "k");
	CHECK_INT(d, <=, 1000 * S);
	CHECK_INT(d, >, 999 * S);
	kwq_limiter_free(l);
}

/* ------------------------------------------------------------ the default */

static void t_default(void)
{
	kwq_limiter_t *l = kwq_limiter_default();
	CHECK(l != NULL);
	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	CHECK_EQ(WHEN(l, "one"), 10 * MS);
	CHECK_EQ(WHEN(l, "one"), 20 * MS);
	CHECK_EQ(REQUEUES(l, "one"), 3);
	CHECK_EQ(FORGET(l, "one"), 0);
	CHECK_EQ(REQUEUES(l, "one"), 0);
	CHECK_EQ(WHEN(l, "one"), 5 * MS);
	kwq_limiter_free(l);
}

static void t_default_on_fake_clock(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	CHECK(c != NULL);
	kwq_limiter_t *l = kwq__limiter_default_on(c);
	CHECK(l != NULL);

	/* Distinct keys: the exponential part gives 5 ms each... */
	for (int i = 0; i < 100; i++)
		CHECK_EQ(kwq_limiter_when(l, &i, sizeof i), 5 * MS);
	/* ...until the bucket's burst of 100 is spent. */
	int i = 100;
	CHECK_EQ(kwq_limiter_when(l, &i, sizeof i), 100 * MS);
	i = 101;
	CHECK_EQ(kwq_limiter_when(l, &i, sizeof i), 200 * MS);

	/* One key backs off to the cap of 1000 s. */
	kwq_clock_fake_step(c, 1000 * S);
	int64_t d = 0;
	for (int n = 0; n < 40; n++)
		d = WHEN(l, "hot");
	CHECK_EQ(d, 1000 * S);
	CHECK_EQ(REQUEUES(l, "hot"), 40);
	kwq_limiter_free(l);
	kwq_clock_free(c);
}

/* ----------------------------------------------------------------- custom */

struct probe {
	atomic_int whens, forgets, destroys;
	int64_t answer;
};

static int64_t probe_when(void *ctx, const void *key, size_t len)
{
	struct probe *p = ctx;
	if (key == NULL || (len > 0 && ((const char *)key)[0] != 'k'))
		return 12345; /* the tests pass keys that start with 'k' */
	atomic_fetch_add(&p->whens, 1);
	return p->answer;
}

static void probe_forget(void *ctx, const void *key, size_t len)
{
	(void)key;
	(void)len;
	atomic_fetch_add(&((struct probe *)ctx)->forgets, 1);
}

static int probe_num_requeues(void *ctx, const void *key, size_t len)
{
	(void)key;
	(void)len;
	return atomic_load(&((struct probe *)ctx)->whens) - 1000;
}

static void probe_destroy(void *ctx)
{
	atomic_fetch_add(&((struct probe *)ctx)->destroys, 1);
}

static void t_custom(void)
{
	struct probe p = { .answer = -5 };
	struct kwq_limiter_ops ops = {
		.size = sizeof ops,
		.when = probe_when,
		.forget = probe_forget,
		.num_requeues = probe_num_requeues,
		.destroy = probe_destroy,
	};
	kwq_limiter_t *l = kwq_limiter_custom(&ops, &p);
	CHECK(l != NULL);
	/* ops is copied: the caller's struct may go away. */
	memset(&ops, 0, sizeof ops);

	CHECK_EQ(WHEN(l, "k1"), 0);
	p.answer = INT64_MIN;
	CHECK_EQ(WHEN(l, "k1"), 0);
	p.answer = 7 * MS;
	CHECK_EQ(WHEN(l, "k1"), 7 * MS);
	/* A zero-length key arrives as non-NULL bytes. */
	CHECK_EQ(kwq_limiter_when(l, NULL, 0), 7 * MS);
	CHECK_EQ(atomic_load(&p.whens), 4);
	/* A negative count reads as 0, never as an error. */
	CHECK_EQ(REQUEUES(l, "k1"), 0);
	CHECK_EQ(FORGET(l, "k1"), 0);
	CHECK_EQ(atomic_load(&p.forgets), 1);
	CHECK_EQ(atomic_load(&p.destroys), 0);
	kwq_limiter_free(l);
	CHECK_EQ(atomic_load(&p.destroys), 1);
}

static void t_custom_optional_ops(void)
{
	struct probe p = { .answer = 3 };
	/* A newer, larger layout: the fields past ours are not read. */
	struct {
		struct kwq_limiter_ops ops;
		void *future;
	} big = { { .size = sizeof big, .when = probe_when }, &big };
	kwq_limiter_t *l = kwq_limiter_custom(&big.ops, &p);
	CHECK(l != NULL);
	CHECK_EQ(WHEN(l, "k"), 3);
	CHECK_EQ(REQUEUES(l, "k"), 0);
	CHECK_EQ(FORGET(l, "k"), 0);
	kwq_limiter_free(l);
}

/* Custom children of combinators are destroyed exactly once. */
static void t_custom_owned_by_combinators(void)
{
	struct probe a = { .answer = 2 * S }, b = { .answer = 1 * S };
	struct kwq_limiter_ops ops = {
		.size = sizeof ops,
		.when = probe_when,
		.forget = probe_forget,
		.destroy = probe_destroy,
	};
	kwq_limiter_t *kids[] = {
		kwq_limiter_custom(&ops, &a),
		kwq_limiter_with_max_wait(kwq_limiter_custom(&ops, &b), 500 * MS),
		kwq_limiter_exponential(1 * MS, 1 * S),
	};
	kwq_limiter_t *l = kwq_limiter_max_of(kids, 3);
	CHECK(l != NULL);
	CHECK_EQ(WHEN(l, "k"), 2 * S);
	CHECK_EQ(atomic_load(&a.whens), 1);
	CHECK_EQ(atomic_load(&b.whens), 1);
	CHECK_EQ(REQUEUES(l, "k"), 1);
	CHECK_EQ(FORGET(l, "k"), 0);
	CHECK_EQ(atomic_load(&a.forgets), 1);
	CHECK_EQ(atomic_load(&b.forgets), 1);
	CHECK_EQ(REQUEUES(l, "k"), 0);
	kwq_limiter_free(l);
	CHECK_EQ(atomic_load(&a.destroys), 1);
	CHECK_EQ(atomic_load(&b.destroys), 1);
}

/* -------------------------------------------------------------- bad input */

static void t_bad_calls(void)
{
	kwq_limiter_t *l = kwq_limiter_exponential(1 * MS, 1 * S);
	CHECK(l != NULL);
	static unsigned char big[KWQ_KEY_MAX + 1];

	CHECK_EQ(kwq_limiter_when(NULL, "k", 1), -EINVAL);
	CHECK_EQ(kwq_limiter_forget(NULL, "k", 1), -EINVAL);
	CHECK_EQ(kwq_limiter_num_requeues(NULL, "k", 1), -EINVAL);
	CHECK_EQ(kwq_limiter_when(l, NULL, 1), -EINVAL);
	CHECK_EQ(kwq_limiter_forget(l, NULL, 1), -EINVAL);
	CHECK_EQ(kwq_limiter_num_requeues(l, NULL, 1), -EINVAL);
	CHECK_EQ(kwq_limiter_when(l, big, KWQ_KEY_MAX + 1), -EINVAL);
	CHECK_EQ(kwq_limiter_forget(l, big, KWQ_KEY_MAX + 1), -EINVAL);
	CHECK_EQ(kwq_limiter_num_requeues(l, big, KWQ_KEY_MAX + 1), -EINVAL);
	CHECK_EQ(kwq_limiter_when(l, big, SIZE_MAX), -EINVAL);
	/* Refused calls counted nothing. */
	CHECK_EQ(kwq_limiter_num_requeues(l, big, KWQ_KEY_MAX), 0);

	/* The edges that are valid. */
	CHECK_EQ(kwq_limiter_when(l, big, KWQ_KEY_MAX), 1 * MS);
	CHECK_EQ(kwq_limiter_when(l, big, KWQ_KEY_MAX), 2 * MS);
	CHECK_EQ(kwq_limiter_num_requeues(l, big, KWQ_KEY_MAX), 2);
	CHECK_EQ(kwq_limiter_num_requeues(l, big, KWQ_KEY_MAX - 1), 0);
	/* NULL with len 0 is the empty key, the same as "". */
	CHECK_EQ(kwq_limiter_when(l, NULL, 0), 1 * MS);
	CHECK_EQ(kwq_limiter_when(l, "", 0), 2 * MS);
	CHECK_EQ(kwq_limiter_num_requeues(l, NULL, 0), 2);
	CHECK_EQ(kwq_limiter_forget(l, NULL, 0), 0);
	CHECK_EQ(kwq_limiter_num_requeues(l, "", 0), 0);
	kwq_limiter_free(l);
	kwq_limiter_free(NULL);
}

#define CHECK_EINVAL(expr)                                                      \
	do {                                                                    \
		errno = 0;                                                       \
		CHECK_PTR((expr), ==, NULL);                                      \
		CHECK_EQ(errno, EINVAL);                                         \
	} while (0)

static void t_bad_constructors(void)
{
	CHECK_EINVAL(kwq_limiter_exponential(-1, 1 * S));
	CHECK_EINVAL(kwq_limiter_exponential(1, -1));
	CHECK_EINVAL(kwq_limiter_fast_slow(-1, 1, 1));
	CHECK_EINVAL(kwq_limiter_fast_slow(1, -1, 1));
	CHECK_EINVAL(kwq_limiter_fast_slow(1, 1, -1));
	CHECK_EINVAL(kwq_limiter_bucket(0.0, 1, NULL));
	CHECK_EINVAL(kwq_limiter_bucket(-10.0, 1, NULL));
	CHECK_EINVAL(kwq_limiter_bucket(NAN, 1, NULL));
	CHECK_EINVAL(kwq_limiter_bucket(INFINITY, 1, NULL));
	CHECK_EINVAL(kwq_limiter_bucket(-INFINITY, 1, NULL));
	CHECK_EINVAL(kwq_limiter_bucket(10.0, 0, NULL));
	CHECK_EINVAL(kwq_limiter_bucket(10.0, -1, NULL));
	CHECK_EINVAL(kwq_limiter_max_of(NULL, 1));
	CHECK_EINVAL(kwq_limiter_with_max_wait(NULL, 1));
}

/* Ownership passes also on failure: ASan reports a leak otherwise. */
static void t_bad_combinators_free_children(void)
{
	kwq_limiter_t *kids[] = {
		kwq_limiter_exponential(1, 2),
		NULL,
		kwq_limiter_default(),
	};
	CHECK(kids[0] != NULL && kids[2] != NULL);
	CHECK_EINVAL(kwq_limiter_max_of(kids, 3));

	/* A child listed twice is freed once. */
	kwq_limiter_t *one = kwq_limiter_fast_slow(1, 2, 3);
	CHECK(one != NULL);
	kwq_limiter_t *twice[] = { one, kwq_limiter_exponential(1, 2), one };
	CHECK_EINVAL(kwq_limiter_max_of(twice, 3));

	CHECK_EINVAL(kwq_limiter_with_max_wait(kwq_limiter_default(), -1));

	struct probe p = { .answer = 0 };
	struct kwq_limiter_ops ops = { .size = sizeof ops, .when = probe_when,
				       .destroy = probe_destroy };
	kwq_limiter_t *kid = kwq_limiter_custom(&ops, &p);
	CHECK(kid != NULL);
	kwq_limiter_t *withnull[] = { kid, NULL };
	CHECK_EINVAL(kwq_limiter_max_of(withnull, 2));
	CHECK_EQ(atomic_load(&p.destroys), 1);
}

static void t_bad_custom(void)
{
	struct probe p = { .answer = 0 };
	struct kwq_limiter_ops ops = { .size = sizeof ops, .when = probe_when,
				       .destroy = probe_destroy };

	CHECK_EINVAL(kwq_limiter_custom(NULL, &p));
	ops.size = offsetof(struct kwq_limiter_ops, destroy);
	CHECK_EINVAL(kwq_limiter_custom(&ops, &p));
	ops.size = 0;
	CHECK_EINVAL(kwq_limiter_custom(&ops, &p));
	ops.size = sizeof ops;
	ops.when = NULL;
	CHECK_EINVAL(kwq_limiter_custom(&ops, &p));
	/* With invalid ops the limiter never owned ctx. */
	CHECK_EQ(atomic_load(&p.destroys), 0);
}

/* ------------------------------------------------------ the per-key table */

static void t_keytable(void)
{
	struct kwq__keytable *t = kwq__keytable_new();
	CHECK(t != NULL);
	enum { N = 20000 };

	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < N; i++) {
			for (int n = 0; n <= i % 3; n++)
				CHECK_EQ(kwq__keytable_bump(t, &i, sizeof i), n);
		}
		CHECK_EQ(kwq__keytable_size(t), N);
		/* Removing every other key shifts probe runs back... */
		for (int i = 0; i < N; i += 2)
			kwq__keytable_forget(t, &i, sizeof i);
		CHECK_EQ(kwq__keytable_size(t), N / 2);
		/* ...and every remaining key must still be found. */
		for (int i = 0; i < N; i++)
			CHECK_EQ(kwq__keytable_count(t, &i, sizeof i), i % 2 ? i % 3 + 1 : 0);
		for (int i = 1; i < N; i += 2)
			kwq__keytable_forget(t, &i, sizeof i);
		CHECK_EQ(kwq__keytable_size(t), 0);
	}

	/* Keys that differ in length only, and the empty key. */
	static const unsigned char zeros[16];
	for (size_t len = 0; len <= 16; len++)
		CHECK_EQ(kwq__keytable_bump(t, zeros, len), 0);
	for (size_t len = 0; len <= 16; len++)
		CHECK_EQ(kwq__keytable_count(t, zeros, len), 1);
	kwq__keytable_forget(t, zeros, 0);
	kwq__keytable_forget(t, "absent", 6);
	CHECK_EQ(kwq__keytable_size(t), 16);
	/* Entries still stored are freed with the table (ASan checks). */
	kwq__keytable_free(t);
	kwq__keytable_free(NULL);
}

/* Random bumps and forgets against a plain array of counts. */
static void t_keytable_model(void)
{
	struct kwq__keytable *t = kwq__keytable_new();
	CHECK(t != NULL);
	enum { KEYS = 500, OPS = 200000 };
	static int model[KEYS];
	uint64_t x = 88172645463325252ULL;
	size_t live = 0;

	for (int op = 0; op < OPS; op++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		int k = (int)(x % KEYS);
		/* Phases that fill the table and drain it make it grow and shrink. */
		bool filling = (op / 20000) % 2 == 0;
		if ((x >> 32) % 4 != 0 ? filling : !filling) {
			CHECK_EQ(kwq__keytable_bump(t, &k, sizeof k), model[k]);
			live += model[k]++ == 0;
		} else {
			kwq__keytable_forget(t, &k, sizeof k);
			live -= model[k] != 0;
			model[k] = 0;
		}
		CHECK_EQ(kwq__keytable_count(t, &k, sizeof k), model[k]);
		if (op % 1000 == 0) {
			CHECK_EQ(kwq__keytable_size(t), live);
			for (int j = 0; j < KEYS; j++)
				CHECK_EQ(kwq__keytable_count(t, &j, sizeof j), model[j]);
		}
	}
	kwq__keytable_free(t);
}

/* ------------------------------------------------------------ concurrency */

#define THREADS 8
#define SHARED_KEYS 16
#define ROUNDS 400

struct conc {
	kwq_limiter_t *l;
	int id;
	pthread_barrier_t *start;
};

/*
 * Each thread fails its own keys (forgetting them midway) and every shared
 * key; the counts at the end are exact only if no update was lost.
 */
static void *conc_worker(void *arg)
{
	struct conc *c = arg;
	char key[32];

	pthread_barrier_wait(c->start);
	for (int r = 0; r < ROUNDS; r++) {
		for (int k = 0; k < SHARED_KEYS; k++) {
			snprintf(key, sizeof key, "shared-%d", k);
			if (WHEN(c->l, key) < 0)
				return (void *)1;
		}
		snprintf(key, sizeof key, "own-%d-%d", c->id, r % 32);
		if (WHEN(c->l, key) < 0)
			return (void *)1;
		if (r == ROUNDS / 2) {
			for (int k = 0; k < 32; k++) {
				snprintf(key, sizeof key, "own-%d-%d", c->id, k);
				FORGET(c->l, key);
			}
		}
		snprintf(key, sizeof key, "gone-%d-%d", c->id, r);
		WHEN(c->l, key);
		REQUEUES(c->l, key);
		FORGET(c->l, key);
	}
	return NULL;
}

static void run_concurrent(kwq_limiter_t *l)
{
	pthread_t th[THREADS];
	struct conc cs[THREADS];
	pthread_barrier_t start;
	char key[32];

	pthread_barrier_init(&start, NULL, THREADS);
	for (int i = 0; i < THREADS; i++) {
		cs[i] = (struct conc){ .l = l, .id = i, .start = &start };
		CHECK_EQ(pthread_create(&th[i], NULL, conc_worker, &cs[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		void *ret;
		pthread_join(th[i], &ret);
		CHECK_PTR(ret, ==, NULL);
	}
	pthread_barrier_destroy(&start);

	for (int k = 0; k < SHARED_KEYS; k++) {
		snprintf(key, sizeof key, "shared-%d", k);
		CHECK_EQ(REQUEUES(l, key), THREADS * ROUNDS);
	}
	/*
	 * Own key j was failed in rounds r = j mod 32; the forget after round
	 * ROUNDS / 2 cleared the earlier ones.
	 */
	for (int i = 0; i < THREADS; i++) {
		for (int j = 0; j < 32; j++) {
			int want = 0;
			for (int r = ROUNDS / 2 + 1; r < ROUNDS; r++)
				want += r % 32 == j;
			snprintf(key, sizeof key, "own-%d-%d", i, j);
			CHECK_EQ(REQUEUES(l, key), want);
		}
		for (int r = 0; r < ROUNDS; r++) {
			snprintf(key, sizeof key, "gone-%d-%d", i, r);
			CHECK_EQ(REQUEUES(l, key), 0);
		}
	}
}

static void t_concurrent_exponential(void)
{
	kwq_limiter_t *l = kwq_limiter_exponential(1, 1 * S);
	CHECK(l != NULL);
	run_concurrent(l);
	kwq_limiter_free(l);
}

static void t_concurrent_fast_slow(void)
{
	kwq_limiter_t *l = kwq_limiter_fast_slow(1, 2, 5);
	CHECK(l != NULL);
	run_concurrent(l);
	kwq_limiter_free(l);
}

/* The default limiter: counts through max_of, the bucket under contention. */
static void t_concurrent_default(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	CHECK(c != NULL);
	kwq_limiter_t *l = kwq__limiter_default_on(c);
	CHECK(l != NULL);
	run_concurrent(l);
	kwq_limiter_free(l);

	/*
	 * Every bucket call takes exactly one token: after the threads made
	 * `calls` calls at one instant, the next waits (calls + 1 - burst) / qps.
	 */
	kwq_limiter_t *kids[] = {
		kwq_limiter_exponential(1, 1 * S),
		kwq_limiter_bucket(1000.0, 10, c),
	};
	l = kwq_limiter_max_of(kids, 2);
	CHECK(l != NULL);
	run_concurrent(l);
	int64_t calls = (int64_t)THREADS * ROUNDS * (SHARED_KEYS + 2);
	CHECK_EQ(WHEN(l, "last"), (calls + 1 - 10) * MS);
	kwq_limiter_free(l);
	kwq_clock_free(c);
}

/* ------------------------------------------------------------ the key cap */

/* Keys "a".."e" remembered (1) or not (0), as a string such as "01101". */
#define REMEMBERED(l, want)                                                     \
	do {                                                                    \
		char got_[6];                                                   \
		for (int k_ = 0; k_ < 5; k_++) {                                \
			char key_[2] = { (char)('a' + k_), 0 };                  \
			got_[k_] = REQUEUES(l, key_) > 0 ? '1' : '0';              \
		}                                                               \
		got_[5] = 0;                                                    \
		CHECK_MEM(got_, 5, want, strlen(want));                           \
	} while (0)

/* The cap's semantics, on one per-key limiter. */
static void check_cap(kwq_limiter_t *l)
{
	CHECK_EQ(kwq_limiter_set_max_keys(l, 3), 0);
	WHEN(l, "a");
	WHEN(l, "b");
	WHEN(l, "c");
	REMEMBERED(l, "11100");
	/* A fourth key forgets the one failed longest ago. */
	WHEN(l, "d");
	REMEMBERED(l, "01110");
	/* A re-failure makes b the latest: c goes next, not b. */
	WHEN(l, "b");
	CHECK_EQ(REQUEUES(l, "b"), 2);
	WHEN(l, "e");
	REMEMBERED(l, "01011");
	CHECK_EQ(REQUEUES(l, "b"), 2);
	/* An evicted key starts over. */
	CHECK_EQ(REQUEUES(l, "a"), 0);
	/* Recent to old: e b d.  A lower cap keeps the latest at once. */
	CHECK_EQ(kwq_limiter_set_max_keys(l, 2), 0);
	REMEMBERED(l, "01001");
	/* forget takes the key off the list too: no eviction to make room. */
	CHECK_EQ(FORGET(l, "b"), 0);
	WHEN(l, "c");
	REMEMBERED(l, "00101");
	WHEN(l, "a");
	REMEMBERED(l, "10100");
	/* A cap that is already met changes nothing. */
	CHECK_EQ(kwq_limiter_set_max_keys(l, 2), 0);
	CHECK_EQ(kwq_limiter_set_max_keys(l, 5), 0);
	REMEMBERED(l, "10100");
	/* 0: no cap again. */
	CHECK_EQ(kwq_limiter_set_max_keys(l, 0), 0);
	for (int i = 0; i < 100; i++)
		CHECK_EQ(kwq_limiter_when(l, &i, sizeof i) >= 0, 1);
	REMEMBERED(l, "10100");
	for (int i = 0; i < 100; i++)
		CHECK_EQ(kwq_limiter_num_requeues(l, &i, sizeof i), 1);
	/*
	 * A cap where there was none: the keys failed before it count as
	 * older than any failure since, and the excess goes at once.
	 */
	CHECK_EQ(kwq_limiter_set_max_keys(l, 10), 0);
	int left = 0;
	for (int i = 0; i < 100; i++)
		left += kwq_limiter_num_requeues(l, &i, sizeof i) > 0;
	left += REQUEUES(l, "a") > 0;
	left += REQUEUES(l, "c") > 0;
	CHECK_EQ(left, 10);
	for (int k = 0; k < 5; k++) {
		char key[2] = { (char)('a' + k), 0 };
		FORGET(l, key);
	}
	for (int k = 0; k < 5; k++) {
		char key[2] = { (char)('a' + k), 0 };
		WHEN(l, key);
	}
	REMEMBERED(l, "11111");
	left = 0;
	for (int i = 0; i < 100; i++)
		left += kwq_limiter_num_requeues(l, &i, sizeof i) > 0;
	CHECK_EQ(left, 5);
	/* The zero-length key is a key like any other. */
	CHECK_EQ(kwq_limiter_set_max_keys(l, 1), 0);
	kwq_limiter_when(l, NULL, 0);
	CHECK_EQ(kwq_limiter_num_requeues(l, NULL, 0), 1);
	REMEMBERED(l, "00000");
	WHEN(l, "a");
	CHECK_EQ(kwq_limiter_num_requeues(l, NULL, 0), 0);
}

static void t_cap_exponential(void)
{
	kwq_limiter_t *l = kwq_limiter_exponential(1 * MS, 1 * S);
	CHECK(l != NULL);
	check_cap(l);
	if (tap_failed)
		goto out;
	/* An evicted key's backoff starts over too. */
	CHECK_EQ(kwq_limiter_set_max_keys(l, 1), 0);
	CHECK_EQ(WHEN(l, "x"), 1 * MS);
	CHECK_EQ(WHEN(l, "x"), 2 * MS);
	CHECK_EQ(WHEN(l, "y"), 1 * MS);
	CHECK_EQ(WHEN(l, "x"), 1 * MS);
out:
	/* Freed with keys on the list (ASan checks). */
	kwq_limiter_free(l);
}

static void t_cap_fast_slow(void)
{
	kwq_limiter_t *l = kwq_limiter_fast_slow(1, 2, 1);
	CHECK(l != NULL);
	check_cap(l);
	if (tap_failed)
		goto out;
	CHECK_EQ(kwq_limiter_set_max_keys(l, 1), 0);
	CHECK_EQ(WHEN(l, "x"), 1);
	CHECK_EQ(WHEN(l, "x"), 2);
	CHECK_EQ(WHEN(l, "y"), 1);
	CHECK_EQ(WHEN(l, "x"), 1);
out:
	kwq_limiter_free(l);
}

static void t_cap_kinds(void)
{
	CHECK_EQ(kwq_limiter_set_max_keys(NULL, 1), -EINVAL);
	CHECK_EQ(kwq_limiter_set_max_keys(NULL, 0), -EINVAL);

	/* The bucket remembers no keys: nothing to cap, not an error. */
	kwq_limiter_t *b = kwq_limiter_bucket(10.0, 5, NULL);
	CHECK(b != NULL);
	CHECK_EQ(kwq_limiter_set_max_keys(b, 1), 0);
	CHECK_EQ(kwq_limiter_set_max_keys(b, 0), 0);
	kwq_limiter_free(b);

	/* A custom limiter's keys are its own: -ENOTSUP, and it is not called. */
	struct probe p = { .answer = 1 };
	struct kwq_limiter_ops ops = {
		.size = sizeof ops,
		.when = probe_when,
		.forget = probe_forget,
		.destroy = probe_destroy,
	};
	kwq_limiter_t *c = kwq_limiter_custom(&ops, &p);
	CHECK(c != NULL);
	CHECK_EQ(kwq_limiter_set_max_keys(c, 1), -ENOTSUP);
	CHECK_EQ(kwq_limiter_set_max_keys(c, 0), -ENOTSUP);
	CHECK_EQ(atomic_load(&p.whens) + atomic_load(&p.forgets), 0);
	kwq_limiter_free(c);
	CHECK_EQ(atomic_load(&p.destroys), 1);
}

/* max_of and with_max_wait pass the cap down and skip custom children. */
static void t_cap_combinators(void)
{
	struct probe p = { .answer = 1 };
	struct kwq_limiter_ops ops = {
		.size = sizeof ops,
		.when = probe_when,
		.forget = probe_forget,
		.destroy = probe_destroy,
	};
	kwq_limiter_t *kids[] = {
		kwq_limiter_exponential(1 * MS, 1 * S),
		kwq_limiter_custom(&ops, &p),
		kwq_limiter_fast_slow(1, 2, 5),
		kwq_limiter_bucket(1000.0, 1000, NULL),
	};
	kwq_limiter_t *ex = kids[0], *fs = kids[2];
	kwq_limiter_t *l = kwq_limiter_max_of(kids, 4);
	CHECK(l != NULL);
	CHECK_EQ(kwq_limiter_set_max_keys(l, 2), 0);
	/* Keys start with 'k' for the probe, which counts them all. */
	WHEN(l, "k1");
	WHEN(l, "k2");
	WHEN(l, "k3");
	CHECK_EQ(atomic_load(&p.whens), 3);
	CHECK_EQ(REQUEUES(ex, "k1"), 0);
	CHECK_EQ(REQUEUES(fs, "k1"), 0);
	CHECK_EQ(REQUEUES(l, "k1"), 0);
	CHECK_EQ(REQUEUES(l, "k2"), 1);
	CHECK_EQ(REQUEUES(l, "k3"), 1);
	CHECK_EQ(kwq_limiter_set_max_keys(l, 0), 0);
	WHEN(l, "k1");
	CHECK_EQ(REQUEUES(ex, "k1") + REQUEUES(fs, "k1"), 2);
	CHECK_EQ(REQUEUES(l, "k2"), 1);
	kwq_limiter_free(l);
	CHECK_EQ(atomic_load(&p.destroys), 1);

	/* with_max_wait over a per-key limiter, and over a custom one. */
	l = kwq_limiter_with_max_wait(kwq_limiter_exponential(1 * MS, 1 * S), 1 * S);
	CHECK(l != NULL);
	check_cap(l);
	kwq_limiter_free(l);
	l = kwq_limiter_with_max_wait(kwq_limiter_custom(&ops, &p), 1 * S);
	CHECK(l != NULL);
	CHECK_EQ(kwq_limiter_set_max_keys(l, 2), 0);
	kwq_limiter_free(l);
	CHECK_EQ(atomic_load(&p.destroys), 2);

	/* Nested: max_of(with_max_wait(exponential)) reaches the leaf. */
	kwq_limiter_t *inner[] = {
		kwq_limiter_with_max_wait(kwq_limiter_exponential(1, 1 * S), 1 * S),
	};
	CHECK(inner[0] != NULL);
	l = kwq_limiter_max_of(inner, 1);
	CHECK(l != NULL);
	check_cap(l);
	kwq_limiter_free(l);

	/* The default limiter: max_of(exponential, bucket). */
	l = kwq_limiter_default();
	CHECK(l != NULL);
	check_cap(l);
	kwq_limiter_free(l);
}

/* A queue's limiter, reached through kwq_limiter(q). */
static void t_cap_queue(void)
{
	CHECK_PTR(kwq_limiter(NULL), ==, NULL);
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	kwq_t *q = kwq_new(&cfg);
	CHECK(q != NULL);
	kwq_limiter_t *l = kwq_limiter(q);
	CHECK(l != NULL);
	CHECK_EQ(kwq_limiter_set_max_keys(l, 1), 0);
	CHECK_EQ(kwq_add_rate_limited(q, "a", 1), 0);
	CHECK_EQ(kwq_num_requeues(q, "a", 1), 1);
	CHECK_EQ(kwq_add_rate_limited(q, "b", 1), 0);
	CHECK_EQ(kwq_num_requeues(q, "a", 1), 0);
	CHECK_EQ(kwq_num_requeues(q, "b", 1), 1);
	kwq_free(q);

	/* A queue given a limiter hands back that one. */
	cfg.limiter = kwq_limiter_exponential(1, 1 * S);
	CHECK(cfg.limiter != NULL);
	l = cfg.limiter;
	q = kwq_new(&cfg);
	CHECK(q != NULL);
	CHECK_PTR(kwq_limiter(q), ==, l);
	CHECK_EQ(kwq_limiter_set_max_keys(kwq_limiter(q), 4), 0);
	kwq_free(q);
}

/* Bytes the allocator hands out now, or 0 where it cannot tell. */
static size_t heap_in_use(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
	return mallinfo2().uordblks;
#else
	return 0;
#endif
}

/*
 * A million keys that each fail once, under a cap of 1,000: the table keeps
 * the last 1,000 and its memory stays bounded.  Uncapped, the same run
 * holds about 80 MB, and every sampled early key would still count 1.
 */
static void t_cap_bounded(void)
{
	enum { N = 1000000, CAP = 1000 };
	/* Generous: a thousand entries and their slots take ~150 KB. */
	const size_t bound = 4u << 20;
	kwq_limiter_t *l = kwq_limiter_exponential(1, 1 * S);
	CHECK(l != NULL);
	CHECK_EQ(kwq_limiter_set_max_keys(l, CAP), 0);
	size_t base = heap_in_use(), peak = base;

	for (uint32_t i = 0; i < N; i++) {
		CHECK_EQ(kwq_limiter_when(l, &i, sizeof i), 1);
		if (i % 50000 == 0) {
			size_t now = heap_in_use();
			if (now > peak)
				peak = now;
		}
	}
	size_t end = heap_in_use();
	if (end > peak)
		peak = end;
	CHECK_INT(peak - base, <, bound);

	/* Every one of the last CAP keys is remembered, no earlier one is. */
	for (uint32_t i = N - CAP; i < N; i++)
		CHECK_EQ(kwq_limiter_num_requeues(l, &i, sizeof i), 1);
	for (uint32_t i = 0; i < N - CAP; i += 997)
		CHECK_EQ(kwq_limiter_num_requeues(l, &i, sizeof i), 0);
	uint32_t just_gone = N - CAP - 1;
	CHECK_EQ(kwq_limiter_num_requeues(l, &just_gone, sizeof just_gone), 0);
	kwq_limiter_free(l);
}

#define CAP_THREADS 4
#define CAP_KEYS 64
#define CAP_MAX 16
#define CAP_OPS 20000

struct cap_worker {
	kwq_limiter_t *l;
	struct kwq__keytable *t;
	uint64_t seed;
	pthread_barrier_t *start;
};

/* Failures, forgets and reads of keys every thread shares. */
static void *cap_hammer(void *arg)
{
	struct cap_worker *w = arg;
	uint64_t x = w->seed;

	pthread_barrier_wait(w->start);
	for (int op = 0; op < CAP_OPS; op++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		int k = (int)(x % CAP_KEYS);
		int what = (int)((x >> 32) % 4);
		if (w->l != NULL) {
			if (what == 0)
				kwq_limiter_forget(w->l, &k, sizeof k);
			else if (what == 1)
				kwq_limiter_num_requeues(w->l, &k, sizeof k);
			else if (kwq_limiter_when(w->l, &k, sizeof k) < 0)
				return (void *)1;
		} else {
			if (what == 0)
				kwq__keytable_forget(w->t, &k, sizeof k);
			else if (what == 1)
				kwq__keytable_count(w->t, &k, sizeof k);
			else if (kwq__keytable_bump(w->t, &k, sizeof k) < 0)
				return (void *)1;
		}
	}
	return NULL;
}

struct cap_toggler {
	struct kwq__keytable *t;
	atomic_int *running;
};

/* Caps on, off and lowered while the workers run; it ends on CAP_MAX. */
static void *cap_toggle(void *arg)
{
	struct cap_toggler *g = arg;
	static const size_t caps[] = { 0, CAP_MAX, 4, 0, 1, CAP_MAX };
	unsigned n = 0;

	while (atomic_load(g->running) > 0)
		kwq__keytable_set_max_keys(g->t, caps[n++ % 6]);
	kwq__keytable_set_max_keys(g->t, CAP_MAX);
	return NULL;
}


/* Four threads on overlapping keys under a cap: never more than it at rest. */
static void t_cap_concurrent(void)
{
	kwq_limiter_t *l = kwq_limiter_exponential(1, 1 * S);
	CHECK(l != NULL);
	CHECK_EQ(kwq_limiter_set_max_keys(l, CAP_MAX), 0);
	pthread_t th[CAP_THREADS];
	struct cap_worker ws[CAP_THREADS];
	pthread_barrier_t start;

	pthread_barrier_init(&start, NULL, CAP_THREADS);
	for (int i = 0; i < CAP_THREADS; i++) {
		ws[i] = (struct cap_worker){ .l = l, .seed = 0x9e3779b97f4a7c15ULL * (i + 1),
					     .start = &start };
		CHECK_EQ(pthread_create(&th[i], NULL, cap_hammer, &ws[i]), 0);
	}
	for (int i = 0; i < CAP_THREADS; i++) {
		void *ret;
		pthread_join(th[i], &ret);
		CHECK_PTR(ret, ==, NULL);
	}
	pthread_barrier_destroy(&start);

	int remembered = 0;
	for (int k = 0; k < CAP_KEYS; k++)
		remembered += kwq_limiter_num_requeues(l, &k, sizeof k) > 0;
	CHECK_INT(remembered, <=, CAP_MAX);
	/* Still a working cap: CAP_MAX new keys push every old one out. */
	for (int k = CAP_KEYS; k < CAP_KEYS + CAP_MAX; k++)
		CHECK_EQ(kwq_limiter_when(l, &k, sizeof k), 1);
	for (int k = 0; k < CAP_KEYS; k++)
		CHECK_EQ(kwq_limiter_num_requeues(l, &k, sizeof k), 0);
	kwq_limiter_free(l);
}

struct cap_counted {
	struct cap_worker w;
	atomic_int *running;
};

static void *cap_hammer_then_leave(void *arg)
{
	struct cap_counted *c = arg;
	void *ret = cap_hammer(&c->w);
	atomic_fetch_sub(c->running, 1);
	return ret;
}

/* The table itself, with the cap set, lowered and lifted under the workers. */
static void t_cap_concurrent_toggle(void)
{
	struct kwq__keytable *t = kwq__keytable_new();
	CHECK(t != NULL);
	pthread_t th[CAP_THREADS], tg;
	struct cap_counted cs[CAP_THREADS];
	pthread_barrier_t start;
	atomic_int running = CAP_THREADS;
	struct cap_toggler g = { .t = t, .running = &running };

	pthread_barrier_init(&start, NULL, CAP_THREADS);
	for (int i = 0; i < CAP_THREADS; i++) {
		cs[i] = (struct cap_counted){
			.w = { .t = t, .seed = 0x2545f4914f6cdd1dULL * (i + 1), .start = &start },
			.running = &running,
		};
		CHECK_EQ(pthread_create(&th[i], NULL, cap_hammer_then_leave, &cs[i]), 0);
	}
	CHECK_EQ(pthread_create(&tg, NULL, cap_toggle, &g), 0);
	for (int i = 0; i < CAP_THREADS; i++) {
		void *ret;
		pthread_join(th[i], &ret);
		CHECK_PTR(ret, ==, NULL);
	}
	pthread_join(tg, NULL);
	pthread_barrier_destroy(&start);

	size_t remembered = 0;
	for (int k = 0; k < CAP_KEYS; k++)
		remembered += kwq__keytable_count(t, &k, sizeof k) > 0;
	CHECK_EQ(kwq__keytable_size(t), remembered);
	CHECK_INT(remembered, <=, CAP_MAX);
	/* Every entry is on the list: CAP_MAX new keys evict all the others. */
	for (int k = CAP_KEYS; k < CAP_KEYS + CAP_MAX; k++)
		CHECK_EQ(kwq__keytable_bump(t, &k, sizeof k), 0);
	CHECK_EQ(kwq__keytable_size(t), CAP_MAX);
	for (int k = 0; k < CAP_KEYS; k++)
		CHECK_EQ(kwq__keytable_count(t, &k, sizeof k), 0);
	kwq__keytable_free(t);
}

/* ------------------------------------------------------------------ table */

static const struct tap_case cases[] = {
	{ "exponential", t_exponential },
	{ "exponential_overflow", t_exponential_overflow },
	{ "fast_slow", t_fast_slow },
	{ "max_of", t_max_of },
	{ "max_of_fast_slow_pair", t_max_of_fast_slow_pair },
	{ "max_of_empty", t_max_of_empty },
	{ "with_max_wait", t_with_max_wait },
	{ "with_max_wait_exponential", t_with_max_wait_exponential },
	{ "bucket_fake_clock", t_bucket_fake_clock },
	{ "bucket_fractional", t_bucket_fractional },
	{ "bucket_extremes", t_bucket_extremes },
	{ "bucket_monotonic", t_bucket_monotonic },
	{ "default", t_default },
	{ "default_on_fake_clock", t_default_on_fake_clock },
	{ "custom", t_custom },
	{ "custom_optional_ops", t_custom_optional_ops },
	{ "custom_owned_by_combinators", t_custom_owned_by_combinators },
	{ "bad_calls", t_bad_calls },
	{ "bad_constructors", t_bad_constructors },
	{ "bad_combinators_free_children", t_bad_combinators_free_children },
	{ "bad_custom", t_bad_custom },
	{ "keytable", t_keytable },
	{ "keytable_model", t_keytable_model },
	{ "concurrent_exponential", t_concurrent_exponential },
	{ "concurrent_fast_slow", t_concurrent_fast_slow },
	{ "concurrent_default", t_concurrent_default },
	{ "cap_exponential", t_cap_exponential },
	{ "cap_fast_slow", t_cap_fast_slow },
	{ "cap_kinds", t_cap_kinds },
	{ "cap_combinators", t_cap_combinators },
	{ "cap_queue", t_cap_queue },
	{ "cap_bounded", t_cap_bounded },
	{ "cap_concurrent", t_cap_concurrent },
	{ "cap_concurrent_toggle", t_cap_concurrent_toggle },
};

int main(void)
{
	return tap_run("ratelimit", cases, sizeof cases / sizeof cases[0]);
}
