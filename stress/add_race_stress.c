/*
 * add_race_stress.c - an immediate add racing a delayed add of the same
 * key: no wait is left behind.
 *
 *   add_race_stress ROW [--seconds S]
 *
 * Each round races BATCH fresh keys: thread A calls kwq_add_after(k, 5 ms)
 * while thread B calls kwq_add(k), the two released together by a spin
 * barrier; each takes CLOCK_MONOTONIC just before and just after its call,
 * so a round records whether B's whole call lay inside A's ("proven
 * overlap").  After both returned the key is queued whatever the
 * interleaving: B's add queued it and A's delayed add was then absorbed,
 * or A's came first and B's cancelled the wait.  The main thread gets and
 * dones every key of the batch, waits 10 ms (past the 5 ms delay) and
 * polls again.
 *
 * Oracle (for every linearization, so every round is judged): after the
 * one hand-out, no key of the batch is handed out again (a left-behind
 * wait would fire it).  kwq_len is 0 at the end.  Exit 0 when the oracle
 * held, 1 otherwise; the counts of pairs, proven overlaps and extra
 * hand-outs are printed.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kwq.h>

#include "row.h"

#define MS 1000000LL
#define SEC 1000000000LL
#define BATCH 256

static kwq_t *q;
static _Atomic unsigned go;       /* barrier generation */
static _Atomic unsigned arrived;
static _Atomic bool quit;
static uint64_t base_key;
static int64_t a_span[BATCH][2], b_span[BATCH][2];
static _Atomic unsigned pair_turn[BATCH]; /* per-pair start: both arrive */

/* Both racers meet here before each pair; the main thread releases them. */
static void meet(unsigned gen)
{
	atomic_fetch_add(&arrived, 1);
	while (atomic_load(&go) == gen && !atomic_load(&quit))
		sched_yield();
}

static void *racer(void *arg)
{
	bool delayed = arg != NULL;
	unsigned gen = 0;

	for (;;) {
		meet(gen++);
		if (atomic_load(&quit))
			return NULL;
		for (int i = 0; i < BATCH; i++) {
			uint64_t k = base_key + (uint64_t)i;
			int64_t (*span)[2] = delayed ? a_span : b_span;
			/* both sides spin until the pair's start */
			unsigned want = 2 * (gen / 2 + 1);
			atomic_fetch_add(&pair_turn[i], 1);
			while (atomic_load(&pair_turn[i]) < want && !atomic_load(&quit))
				;
			span[i][0] = stress_now_ns();
			if (delayed)
				kwq_add_after(q, &k, sizeof k, 5 * MS);
			else
				kwq_add(q, &k, sizeof k);
			span[i][1] = stress_now_ns();
		}
		meet(gen++);
		if (atomic_load(&quit))
			return NULL;
	}
}

static void release(unsigned *gen)
{
	while (atomic_load(&arrived) < 2)
		sched_yield();
	atomic_store(&arrived, 0);
	atomic_store(&go, ++*gen);
}

int main(int argc, char **argv)
{
	enum kwq_impl impl;
	double seconds = 8;

	if (!stress_row_args(argc, argv, &impl, &seconds))
		return 2;

	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = impl;
	q = kwq_new(&cfg);
	if (q == NULL) {
		perror("kwq_new");
		return 1;
	}
	pthread_t ta, tb;
	pthread_create(&ta, NULL, racer, (void *)1);
	pthread_create(&tb, NULL, racer, NULL);

	const int64_t end = stress_now_ns() + (int64_t)(seconds * SEC);
	unsigned gen = 0;
	long pairs = 0, overlap = 0, extra = 0, missing = 0;
	while (stress_now_ns() < end) {
		release(&gen); /* the racers run the batch */
		release(&gen); /* and are back at the barrier */
		for (int i = 0; i < BATCH; i++)
			if (a_span[i][0] <= b_span[i][0] && b_span[i][1] <= a_span[i][1])
				overlap++;
		pairs += BATCH;
		for (int i = 0; i < BATCH; i++) {
			kwq_item_t *it;
			if (kwq_get_timeout(q, &it, 1 * SEC) != 0) {
				missing++;
				break;
			}
			kwq_done(q, it);
		}
		struct timespec ts = { 0, 10 * MS };
		nanosleep(&ts, NULL);
		kwq_item_t *it;
		while (kwq_try_get(q, &it) == 0) {
			if (extra < 5) {
				uint64_t k;
				memcpy(&k, kwq_item_key(it, NULL), sizeof k);
				fprintf(stderr, "key %llu handed out again after its delay\n",
					(unsigned long long)k);
			}
			extra++;
			kwq_done(q, it);
		}
		base_key += BATCH;
	}
	atomic_store(&quit, true);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	size_t left = kwq_len(q);
	kwq_free(q);

	printf("%s: %ld pairs, %ld with proven overlap; %ld extra hand-outs, "
	       "%ld never handed out, kwq_len at end %zu\n",
	       argv[1], pairs, overlap, extra, missing, left);
	bool ok = extra == 0 && missing == 0 && left == 0;
	printf("%s\n", ok ? "PASS" : "FAIL");
	return ok ? 0 : 1;
}
