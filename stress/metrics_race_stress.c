/*
 * metrics_race_stress.c - a named queue's metrics under gets racing adds:
 * no queue duration timed from a time the add had not yet recorded, and
 * depth never below zero.
 *
 *   metrics_race_stress ROW [--seconds S]
 *
 * The queue is named and runs on a fake clock that never moves (at 100 s):
 * every counted add records 100 s and every get reads 100 s, so every
 * queue duration is exactly 0.  One producer adds fresh keys (each key's
 * entry is new: its recorded add time starts at 0) in batches; two workers
 * spin in kwq_try_get and take each item as soon as it is published; a
 * reader thread reads the metrics all along.
 *
 * Oracle: at the end, the queue-duration histogram counts every item, all
 * of them in its first bucket, with a sum of 0 (an item got before its add
 * recorded the time reads a duration of 100 s); no read ever saw depth
 * below 0; depth is 0 and adds_total is the number of items at the end.
 * Exit 0 when the oracle held, 1 otherwise.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <kwq.h>

#include "row.h"

#define SEC 1000000000LL
#define BATCH 1024
#define WORKERS 2

static kwq_t *q;
static _Atomic bool quit, producing = true;
static _Atomic long got;
static _Atomic long reads, negative;
static _Atomic int64_t lowest;

static void *worker(void *arg)
{
	(void)arg;
	kwq_item_t *it;
	for (;;) {
		if (kwq_try_get(q, &it) == 0) {
			kwq_done(q, it);
			atomic_fetch_add(&got, 1);
		} else if (!atomic_load(&producing)) {
			/* Every add returned before producing went false, so
			 * what the queue still holds is visible now: take it
			 * (the failed get above may have come before the last
			 * batch). */
			while (kwq_try_get(q, &it) == 0) {
				kwq_done(q, it);
				atomic_fetch_add(&got, 1);
			}
			return NULL;
		}
	}
}

static void *reader(void *arg)
{
	(void)arg;
	while (!atomic_load(&quit)) {
		struct kwq_metrics m = { .size = sizeof m };
		if (kwq_metrics_read(q, &m) != 0)
			continue;
		atomic_fetch_add(&reads, 1);
		if (m.depth < 0) {
			atomic_fetch_add(&negative, 1);
			if (m.depth < atomic_load(&lowest))
				atomic_store(&lowest, m.depth);
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	enum kwq_impl impl;
	double seconds = 8;

	if (!stress_row_args(argc, argv, &impl, &seconds))
		return 2;

	kwq_clock_t *clock = kwq_clock_fake_new(100 * SEC);
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = impl;
	cfg.name = "metrics_race";
	cfg.clock = clock;
	q = kwq_new(&cfg);
	if (clock == NULL || q == NULL) {
		perror("kwq_new");
		return 1;
	}
	pthread_t w[WORKERS], r;
	for (int i = 0; i < WORKERS; i++)
		pthread_create(&w[i], NULL, worker, NULL);
	pthread_create(&r, NULL, reader, NULL);

	const int64_t end = stress_now_ns() + (int64_t)(seconds * SEC);
	uint64_t key = 0;
	long added = 0;
	while (stress_now_ns() < end) {
		for (int i = 0; i < BATCH; i++, key++) {
			if (kwq_add(q, &key, sizeof key) != 0) {
				fprintf(stderr, "add failed\n");
				return 1;
			}
			added++;
		}
		/* let the workers catch up: fresh keys keep the sets growing */
		while (atomic_load(&got) < added - 4 * BATCH)
			;
	}
	atomic_store(&producing, false);
	for (int i = 0; i < WORKERS; i++)
		pthread_join(w[i], NULL);
	atomic_store(&quit, true);
	pthread_join(r, NULL);

	struct kwq_metrics m = { .size = sizeof m };
	kwq_metrics_read(q, &m);
	kwq_free(q);
	kwq_clock_free(clock);

	uint64_t late = m.queue_duration.count - m.queue_duration.le[0];
	printf("%s: %ld items, %ld metric reads; queue durations: %llu counted, "
	       "%llu above 0 (sum %.3f s); reads with depth < 0: %ld (lowest %lld); "
	       "at the end depth %lld, adds_total %llu\n",
	       argv[1], added, atomic_load(&reads),
	       (unsigned long long)m.queue_duration.count, (unsigned long long)late,
	       m.queue_duration.sum_seconds, atomic_load(&negative),
	       (long long)atomic_load(&lowest), (long long)m.depth,
	       (unsigned long long)m.adds_total);
	bool ok = m.queue_duration.count == (uint64_t)added && late == 0 &&
		  m.queue_duration.sum_seconds == 0.0 && atomic_load(&negative) == 0 &&
		  m.depth == 0 && m.adds_total == (uint64_t)added && atomic_load(&got) == added;
	printf("%s\n", ok ? "PASS" : "FAIL");
	return ok ? 0 : 1;
}
