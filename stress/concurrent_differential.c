/*
 * concurrent_differential.c - several threads drive one queue at once; the
 * history they record must be linearizable against a model of the
 * contract in kwq.h.
 *
 *   concurrent_differential ROW [--seconds S] [--seed N]
 *
 * Why a linearizability check, and not per-thread key ranges: the races
 * worth catching are on one key from two threads (a worker's retry while
 * a producer's add of the same key is in flight; an add inside another
 * thread's delayed add of that key), and per-thread keys would keep them
 * apart.  Histories are short, so checking them is cheap: each round,
 * three threads run four random operations each, on two shared keys, at
 * the same instant (a barrier, then no pause): kwq_add_with (priority 0
 * or 1), kwq_add_after / kwq_add_with with a delay (1 or 2 ms on the fake
 * clock, priority 0 or 1), kwq_try_get, kwq_get_timeout (100 us),
 * kwq_get_batch (max 2, timeout 0), kwq_cancel, and kwq_done or kwq_finish
 * (each outcome; RETRY_AFTER 0 or 1 ms) of a handle the thread holds; each
 * thread then dones what it still holds.  Every call records its
 * invocation and response on one global counter.
 *
 * The rounds run on one queue, and tests/concurrent_engine.c runs and
 * checks each (its opening comment says how calls are recorded, how the
 * queue is drained and what the checker searches for; tests/fuzz_concurrent
 * runs the same engine on plans decoded from a fuzzer's bytes).  None
 * found: the history is printed and the run fails.
 *
 * What it catches: a retry lost (the model says the key's wait fires; the
 * drain does not have it), a wait left behind (the drain hands a key out
 * twice), a get that hands out a held key or the wrong priority, an add
 * that is neither absorbed nor queued.  Exit status 0 when every round
 * was linearizable.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kwq.h>

#include "concurrent_engine.h"
#include "row.h"

#define NTHREADS CDIFF_THREADS
#define NOPS CDIFF_OPS
#define NKEYS CDIFF_KEYS
#define MS CDIFF_MS

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void plan_round(struct cdiff_plan *plan, uint64_t *seed)
{
	for (int t = 0; t < NTHREADS; t++) {
		plan->nops[t] = NOPS;
		for (int i = 0; i < NOPS; i++) {
			uint64_t r = splitmix(seed);
			struct cdiff_op *o = &plan->op[t][i];
			memset(o, 0, sizeof *o);
			unsigned w = (unsigned)(r % 100);
			o->kind = w < 22 ? CDIFF_ADD : w < 42 ? CDIFF_ADD_AFTER : w < 56 ? CDIFF_TRY_GET
				: w < 64 ? CDIFF_GET_TIMEOUT : w < 72 ? CDIFF_DONE : w < 80 ? CDIFF_CANCEL
				: w < 88 ? CDIFF_GET_BATCH : CDIFF_FINISH;
			o->key = (int)((r >> 8) % NKEYS);
			o->prio = (int)((r >> 16) % 2);
			o->delay = (int64_t)((r >> 24) % 2 + 1) * MS;
			o->outcome = (int)((r >> 32) % 4);
			if (o->kind == CDIFF_FINISH)
				o->delay = (int64_t)((r >> 40) % 2) * MS;
		}
	}
}

int main(int argc, char **argv)
{
	enum kwq_impl impl;
	double seconds = 5;
	uint64_t seed = (uint64_t)time(NULL);
	if (!stress_row_args(argc, argv, &impl, &seconds)) {
		fprintf(stderr, "usage: %s mutex|sharded [--seconds S] [--seed N]\n", argv[0]);
		return 2;
	}
	for (int i = 2; i + 1 < argc; i++)
		if (strcmp(argv[i], "--seed") == 0)
			seed = strtoull(argv[i + 1], NULL, 0);
	printf("%s: seed %" PRIu64 "\n", argv[1], seed);

	struct cdiff_engine *e = cdiff_engine_new(impl);
	if (e == NULL) {
		perror("kwq_new");
		return 1;
	}

	int64_t end = stress_now_ns() + (int64_t)(seconds * 1e9);
	long rounds = 0, overlapped = 0;
	unsigned long nodes = 0;
	int failed = 0;
	while (!failed && stress_now_ns() < end) {
		struct cdiff_plan plan;
		struct cdiff_result res = { 0 };
		plan_round(&plan, &seed);
		int rc = cdiff_engine_run(e, &plan, rounds, stderr, &res);
		if (rc < 0) {
			fprintf(stderr, "round %ld: the plan is out of range\n", rounds);
			failed = 1;
		} else {
			failed = rc;
		}
		overlapped += res.overlapped;
		nodes += res.nodes;
		rounds++;
	}

	cdiff_engine_free(e);
	printf("%s: %ld rounds (%ld with calls of two threads overlapping), %lu "
	       "model states searched, %s\n", argv[1], rounds, overlapped, nodes,
	       failed ? "FAILED" : "ok");
	return failed;
}
