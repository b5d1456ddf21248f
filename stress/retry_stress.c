/*
 * retry_stress.c - the controller retry pattern: no retry is ever lost.
 *
 *   retry_stress ROW [--seconds S]
 *
 * Workers park in kwq_get.  Each round a producer adds a fresh key k and
 * waits about 200 us before the next round, so the workers park between
 * rounds.  The worker that gets k fails it the way a controller does: in
 * mode "held" it calls kwq_add_after(k, 1 us) while still holding k (as
 * kwq_add_rate_limited would), then kwq_done; in mode "after" it calls
 * kwq_done and another thread (the producer, told by the worker) makes the
 * kwq_add_after right after the done.  Rounds alternate the modes.
 *
 * Oracles, per round:
 *   no lost retry   k is handed out a second time within 2 s (the contract: a
 *                   delayed add of an absent or held key makes it wait and
 *                   adds it when due; nothing may cancel it but an
 *                   immediate add, and none is made after it);
 *   exactly twice   k is never handed out a third time (checked when the
 *                   round ends, after a further wait);
 *   exclusion       a per-key owner word set after the get and cleared
 *                   before the done: never two holders.
 * At the end kwq_len is 0 and a drain returns.  Exit 0 when every oracle
 * held, 1 otherwise (the counts are printed).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kwq.h>

#include "row.h"

#define US 1000LL
#define MS 1000000LL
#define SEC 1000000000LL
#define WORKERS 2
#define MAX_ROUNDS 200000

enum mode { HELD, AFTER };

struct key_state {
	_Atomic int gets;       /* hand-outs of the key */
	_Atomic int owner;      /* worker holding it, or 0 */
};

static kwq_t *q;
static struct key_state keys[MAX_ROUNDS];
static _Atomic long exclusion_failures;
static _Atomic int after_pending = -1; /* mode AFTER: round whose key to re-add */

static enum mode mode_of(int round)
{
	return round % 2 == 0 ? HELD : AFTER;
}

static void *worker(void *arg)
{
	int id = (int)(intptr_t)arg;
	kwq_item_t *it;

	while (kwq_get(q, &it) == 0) {
		int round;
		size_t len;
		const void *key = kwq_item_key(it, &len);
		memcpy(&round, key, sizeof round);
		struct key_state *ks = &keys[round];
		int expected = 0;
		if (!atomic_compare_exchange_strong(&ks->owner, &expected, id))
			atomic_fetch_add(&exclusion_failures, 1);
		int n = atomic_fetch_add(&ks->gets, 1) + 1;
		bool fail = n == 1; /* the first processing fails, the retry succeeds */
		if (fail && mode_of(round) == HELD)
			kwq_add_after(q, &round, sizeof round, 1 * US);
		atomic_store(&ks->owner, 0);
		kwq_done(q, it);
		if (fail && mode_of(round) == AFTER)
			atomic_store(&after_pending, round);
	}
	return NULL;
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
	pthread_t tw[WORKERS];
	for (int i = 0; i < WORKERS; i++)
		pthread_create(&tw[i], NULL, worker, (void *)(intptr_t)(i + 1));

	const int64_t end = stress_now_ns() + (int64_t)(seconds * SEC);
	long lost[2] = { 0, 0 }, rounds[2] = { 0, 0 }, extra = 0;
	int r;
	for (r = 0; r < MAX_ROUNDS && stress_now_ns() < end; r++) {
		struct key_state *ks = &keys[r];
		enum mode m = mode_of(r);
		rounds[m]++;
		if (kwq_add(q, &r, sizeof r) != 0) {
			fprintf(stderr, "round %d: kwq_add failed\n", r);
			return 1;
		}
		/* Wait for the retry (the second hand-out), re-adding after
		 * the done in mode AFTER. */
		const int64_t give_up = stress_now_ns() + 2 * SEC;
		while (atomic_load(&ks->gets) < 2 && stress_now_ns() < give_up) {
			int p = r;
			if (m == AFTER && atomic_compare_exchange_strong(&after_pending, &p, -1))
				kwq_add_after(q, &r, sizeof r, 1 * US);
			stress_sleep_ns(20 * US);
		}
		if (atomic_load(&ks->gets) < 2) {
			lost[m]++;
			if (lost[0] + lost[1] <= 5)
				fprintf(stderr, "round %d (%s): retry lost, kwq_len %zu\n", r,
					m == HELD ? "held" : "after", kwq_len(q));
		}
		while (atomic_load(&ks->owner) != 0) /* the retry's done */
			stress_sleep_ns(10 * US);
		stress_sleep_ns(200 * US); /* the workers park */
	}
	/* A third hand-out would come 1 us after the second one's done. */
	stress_sleep_ns(20 * MS);
	for (int i = 0; i < r; i++)
		if (atomic_load(&keys[i].gets) > 2)
			extra += atomic_load(&keys[i].gets) - 2;
	size_t left = kwq_len(q);

	kwq_shutdown_drain(q);
	for (int i = 0; i < WORKERS; i++)
		pthread_join(tw[i], NULL);
	kwq_free(q);

	long excl = atomic_load(&exclusion_failures);
	printf("%s: %ld rounds held (%ld retries lost), %ld rounds after (%ld lost); "
	       "%ld extra hand-outs, %ld exclusion failures, kwq_len at end %zu\n",
	       argv[1], rounds[HELD], lost[HELD], rounds[AFTER], lost[AFTER], extra, excl, left);
	bool ok = lost[0] == 0 && lost[1] == 0 && extra == 0 && excl == 0 && left == 0;
	printf("%s\n", ok ? "PASS" : "FAIL");
	return ok ? 0 : 1;
}
