/*
 * pool_stress.c - producers against a worker pool: exclusion, no lost
 * update, conservation.
 *
 *   pool_stress ROW [--seconds S]
 *
 * PRODUCERS threads add keys drawn at random from one key space (so they
 * overlap) while a pool of WORKERS threads started by kwq_workers_start
 * processes them.  Before each kwq_add(k) a producer bumps the key's add
 * sequence number seq[k]; the work function reads seq[k] when it starts
 * and records it as the key's last seen number.  It mostly answers KWQ_OK,
 * sometimes KWQ_RETRY (a fast exponential limiter) or KWQ_RETRY_AFTER (a
 * few microseconds, or a negative delay), so that the pool's kwq_finish
 * re-adds race the producers' adds.
 *
 * Oracles:
 *   exclusion      a per-key in-flight flag, set by the work function with
 *                  an atomic exchange and cleared before it returns: never
 *                  two holders;
 *   no lost update an add made after a processing of the key started is
 *                  followed by a processing that starts after the add: so
 *                  the processing that starts last sees the key's final
 *                  sequence number (every processing that starts after
 *                  the last bump sees it, and one must start after the
 *                  last add took effect);
 *   conservation   after the producers stop and kwq_shutdown_drain
 *                  returns, every key added was processed, and its last
 *                  seen number is its final one; kwq_len is 0;
 *   joined         kwq_workers_join returns 0 (every worker exited once
 *                  the queue was shut down and empty), and no processing
 *                  runs after it.
 * Exit 0 when every oracle held, 1 otherwise (the counts are printed).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kwq.h>

#include "row.h"

#define SEC 1000000000LL
#define PRODUCERS 4
#define WORKERS 4
#define NKEYS 512

struct key_state {
	_Atomic uint64_t seq;       /* adds issued (bumped before each kwq_add) */
	_Atomic uint64_t last_seen; /* seq read when the latest processing started */
	_Atomic uint64_t processed; /* processings */
	_Atomic int busy;           /* a processing is in flight */
};

static kwq_t *q;
static struct key_state keys[NKEYS];
static _Atomic bool stop;
static _Atomic bool joined;
static _Atomic long overlaps;
static _Atomic long regressions;  /* a processing saw a smaller seq than the previous one */
static _Atomic long after_join;   /* processings after kwq_workers_join returned */
static _Atomic long add_failures;
static _Atomic uint64_t adds;

static uint32_t xorshift(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

static enum kwq_outcome work(void *ctx, kwq_item_t *item, int64_t *after_ns)
{
	(void)ctx;
	if (atomic_load(&joined))
		atomic_fetch_add(&after_join, 1);
	size_t len;
	const void *kp = kwq_item_key(item, &len);
	uint32_t k;
	memcpy(&k, kp, sizeof k);
	struct key_state *ks = &keys[k % NKEYS];
	if (atomic_exchange(&ks->busy, 1) != 0)
		atomic_fetch_add(&overlaps, 1);
	uint64_t seen = atomic_load(&ks->seq);
	if (seen < atomic_load(&ks->last_seen))
		atomic_fetch_add(&regressions, 1);
	atomic_store(&ks->last_seen, seen);
	uint64_t n = atomic_fetch_add(&ks->processed, 1);
	atomic_store(&ks->busy, 0);

	switch ((n * 2654435761u + k) % 16) {
	case 0:
	case 1:
		return KWQ_RETRY;
	case 2:
		*after_ns = 2000;
		return KWQ_RETRY_AFTER;
	case 3:
		*after_ns = -1; /* counts as 0 */
		return KWQ_RETRY_AFTER;
	default:
		return KWQ_OK;
	}
}

static void *producer(void *arg)
{
	uint32_t x = (uint32_t)(uintptr_t)arg * 2654435761u | 1u;
	uint64_t n = 0;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		uint32_t k = xorshift(&x) % NKEYS;
		atomic_fetch_add(&keys[k].seq, 1);
		if (kwq_add(q, &k, sizeof k) != 0)
			atomic_fetch_add(&add_failures, 1);
		n++;
		if ((n & 63) == 0)
			sched_yield();
	}
	atomic_fetch_add(&adds, n);
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
	cfg.limiter = kwq_limiter_exponential(1000, 100000);
	q = kwq_new(&cfg);
	if (q == NULL) {
		perror("kwq_new");
		return 1;
	}
	kwq_workers_t *w = kwq_workers_start(q, WORKERS, work, NULL);
	if (w == NULL) {
		perror("kwq_workers_start");
		return 1;
	}
	pthread_t tp[PRODUCERS];
	for (int i = 0; i < PRODUCERS; i++)
		if (pthread_create(&tp[i], NULL, producer, (void *)(uintptr_t)(i + 1)) != 0) {
			perror("pthread_create");
			return 1;
		}

	stress_sleep_ns((int64_t)(seconds * SEC));
	atomic_store(&stop, true);
	for (int i = 0; i < PRODUCERS; i++)
		pthread_join(tp[i], NULL);

	kwq_shutdown_drain(q);
	int jrc = kwq_workers_join(w);
	atomic_store(&joined, true);

	long lost = 0, unprocessed = 0;
	uint64_t processings = 0;
	for (int k = 0; k < NKEYS; k++) {
		struct key_state *ks = &keys[k];
		uint64_t seq = atomic_load(&ks->seq);
		processings += atomic_load(&ks->processed);
		if (seq == 0)
			continue;
		if (atomic_load(&ks->processed) == 0) {
			if (unprocessed++ < 5)
				fprintf(stderr, "key %d: %llu adds, never processed\n", k,
					(unsigned long long)seq);
		} else if (atomic_load(&ks->last_seen) != seq) {
			if (lost++ < 5)
				fprintf(stderr, "key %d: last add %llu, last processing saw %llu\n", k,
					(unsigned long long)seq,
					(unsigned long long)atomic_load(&ks->last_seen));
		}
	}
	size_t left = kwq_len(q);
	kwq_free(q);

	long excl = atomic_load(&overlaps), reg = atomic_load(&regressions);
	long late = atomic_load(&after_join), af = atomic_load(&add_failures);
	printf("%s: %llu adds, %llu processings by %d workers; %ld overlaps, %ld lost "
	       "updates, %ld keys unprocessed, %ld regressions, %ld add failures, "
	       "join %d, %ld after join, kwq_len %zu\n",
	       argv[1], (unsigned long long)atomic_load(&adds),
	       (unsigned long long)processings, WORKERS, excl, lost, unprocessed, reg, af,
	       jrc, late, left);
	return excl == 0 && lost == 0 && unprocessed == 0 && reg == 0 && af == 0 &&
		       jrc == 0 && late == 0 && left == 0
		       ? 0
		       : 1;
}
