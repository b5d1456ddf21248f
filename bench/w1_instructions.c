/*
 * w1_instructions - the W1 cycle (add(key[i & 1023]), get, done on one
 * thread) for callgrind: instructions per cycle, which repeat on a shared
 * machine where times do not (within about 2%: the hash seed is random per
 * queue, and with it which keys share a set of the sharded design's
 * lookaside and pay a ck_hs probe).
 *
 *   valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null \
 *       w1_instructions mutex|sharded [--named] [--cycles N]
 *
 * Runs 100,000 warm-up cycles uninstrumented (the keys' entries exist and
 * the ring has its segments, as in kwq-bench's W1 after its warm-up), then
 * N measured cycles (default 100,000) between CALLGRIND_START_INSTRUMENTATION
 * and CALLGRIND_STOP_INSTRUMENTATION; callgrind's "Collected" line is then
 * the instructions of those cycles.  --named names the queue ("w1"), which
 * turns the metrics on.  --batch makes the same cycles 32 at a time
 * (kwq_add_many of 32 consecutive keys, kwq_get_batch(32), kwq_done_many:
 * W8's calls), N a multiple of 32.  Outside valgrind the requests do nothing and the
 * program just runs.  Exit status 0, or 1 if a call failed.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <valgrind/callgrind.h>

#include <kwq.h>

#define WARMUP 100000

/* kwq-bench's keys: "ns/obj-<i>" */
static char keys[1024][24];
static size_t key_len[1024];

#define BATCH 32

static bool batch;

static int batch_cycles(kwq_t *q, uint64_t from, uint64_t n)
{
	struct kwq_key_ref refs[BATCH];
	kwq_item_t *items[BATCH];
	int err = 0;

	for (uint64_t i = from; i < from + n; i += BATCH) {
		for (unsigned j = 0; j < BATCH; j++)
			refs[j] = (struct kwq_key_ref){ keys[(i + j) & 1023], key_len[(i + j) & 1023] };
		err |= kwq_add_many(q, refs, BATCH, NULL) != BATCH;
		int got = kwq_get_batch(q, items, BATCH, 0);
		err |= got != BATCH;
		if (got > 0)
			err |= kwq_done_many(q, items, (size_t)got);
	}
	return err;
}

static int cycles(kwq_t *q, uint64_t from, uint64_t n)
{
	if (batch)
		return batch_cycles(q, from, n);
	int err = 0;
	for (uint64_t i = from; i < from + n; i++) {
		kwq_item_t *it;
		err |= kwq_add(q, keys[i & 1023], key_len[i & 1023]);
		if (kwq_get(q, &it) == 0)
			err |= kwq_done(q, it);
		else
			err = 1;
	}
	return err;
}

int main(int argc, char **argv)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	uint64_t n = 100000;

	if (argc < 2)
		goto usage;
	if (strcmp(argv[1], "mutex") == 0)
		cfg.impl = KWQ_IMPL_MUTEX;
	else if (strcmp(argv[1], "sharded") == 0)
		cfg.impl = KWQ_IMPL_SHARDED;
	else
		goto usage;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--named") == 0)
			cfg.name = "w1";
		else if (strcmp(argv[i], "--batch") == 0)
			batch = true;
		else if (strcmp(argv[i], "--cycles") == 0 && i + 1 < argc)
			n = strtoull(argv[++i], NULL, 0);
		else
			goto usage;
	}
	for (unsigned i = 0; i < 1024; i++)
		key_len[i] = (size_t)snprintf(keys[i], sizeof keys[i], "ns/obj-%u", i);

	kwq_t *q = kwq_new(&cfg);
	if (q == NULL) {
		perror("kwq_new");
		return 1;
	}
	int err = cycles(q, 0, WARMUP);
	CALLGRIND_START_INSTRUMENTATION;
	err |= cycles(q, WARMUP, n);
	CALLGRIND_STOP_INSTRUMENTATION;
	kwq_free(q);
	if (err != 0)
		fprintf(stderr, "w1_instructions: a call failed\n");
	return err != 0;

usage:
	fprintf(stderr, "usage: %s mutex|sharded [--named] [--batch] [--cycles N]\n", argv[0]);
	return 2;
}
