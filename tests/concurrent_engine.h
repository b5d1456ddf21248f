/*
 * concurrent_engine.h - short concurrent histories on one queue, checked
 * for a linearization against a model of the contract in kwq.h.
 *
 * A plan is what each of CDIFF_THREADS threads calls, at most CDIFF_OPS
 * operations each, on CDIFF_KEYS shared keys.  A round runs the plan once:
 * the threads start at the same instant (a barrier), each records every
 * call's invocation and response on one counter, each dones what it still
 * holds; then the fake clock steps past every delay, the queue is drained,
 * and the checker searches for an order of the calls, respecting real
 * time, in which the model gives every answer recorded and drains to what
 * the queue drained.  concurrent_engine.c's opening comment says what
 * exactly is recorded and checked.
 *
 * Users: stress/concurrent_differential (random plans from a seed, many
 * rounds on one queue), tests/fuzz_concurrent (libFuzzer: plans decoded
 * from the input bytes) and tests/concurrent_replay (the committed corpus
 * tests/fuzz-corpus-concurrent, in meson test).
 */
#ifndef KWQ_TESTS_CONCURRENT_ENGINE_H
#define KWQ_TESTS_CONCURRENT_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <kwq.h>

#define CDIFF_THREADS 3
#define CDIFF_OPS 4   /* per thread */
#define CDIFF_KEYS 2
#define CDIFF_BATCH 2 /* kwq_get_batch's max */
#define CDIFF_MS 1000000LL

enum cdiff_kind {
	CDIFF_ADD,         /* kwq_add_with(key, prio) */
	CDIFF_ADD_AFTER,   /* kwq_add_after(key, delay) (prio 0), kwq_add_with
			    * with after_ns = delay (prio 1) */
	CDIFF_TRY_GET,     /* kwq_try_get */
	CDIFF_GET_TIMEOUT, /* kwq_get_timeout, 100 us */
	CDIFF_DONE,        /* kwq_done of the oldest handle held (none: no call) */
	CDIFF_CANCEL,      /* kwq_cancel(key) */
	CDIFF_GET_BATCH,   /* kwq_get_batch, max CDIFF_BATCH, timeout 0 */
	CDIFF_FINISH,      /* kwq_finish(oldest held, outcome, delay) */
	CDIFF_NKINDS
};

struct cdiff_op {
	enum cdiff_kind kind;
	int key;        /* 0 .. CDIFF_KEYS - 1: add, add_after, cancel */
	int prio;       /* 0 or 1: add, add_after */
	int64_t delay;  /* add_after: 1 ns .. 9 ms; finish: RETRY_AFTER's
			 * after_ns, 0 .. 9 ms */
	int outcome;    /* finish: an enum kwq_outcome */
	int spin;       /* 0 .. 7: busy-wait 4^spin iterations before the
			 * call (0: none), to shift the interleaving */
};

struct cdiff_plan {
	int nops[CDIFF_THREADS];
	struct cdiff_op op[CDIFF_THREADS][CDIFF_OPS];
};

/* What a round saw, besides its verdict. */
struct cdiff_result {
	bool overlapped;     /* calls of two threads overlapped in time */
	unsigned long nodes; /* model states the checker searched */
};

/* One queue (fake clock, limiter exponential(1 ms, 1 ms)) of design impl
 * and its CDIFF_THREADS threads; NULL when it cannot be made. */
struct cdiff_engine *cdiff_engine_new(enum kwq_impl impl);

/*
 * One round of plan on e's queue; the queue is empty again afterwards.
 * 0: a linearization explains the history; 1: none does (or the drain
 * went wrong), and the history is printed to report (when not NULL) as
 * "round ROUND: ..."; -EINVAL: the plan is out of range (nothing run).
 * res, when not NULL, gets what the round saw.
 */
int cdiff_engine_run(struct cdiff_engine *e, const struct cdiff_plan *plan, long round,
		     FILE *report, struct cdiff_result *res);

void cdiff_engine_free(struct cdiff_engine *e);

/* One round of plan on a fresh queue of design impl: as cdiff_engine_run,
 * negative also when the queue or its threads cannot be made. */
int cdiff_run_plan(enum kwq_impl impl, const struct cdiff_plan *plan, FILE *report);

/*
 * The fuzzing input format (tests/fuzz_concurrent, tests/concurrent_replay).
 * Every byte string decodes; missing bytes end the plan early, bytes past
 * the last thread's last operation are ignored.
 *
 *   header:  bits 0-1  designs: 1 mutex, 2 sharded, 0 or 3 both
 *            bits 2-3  rounds per design: 4, 8, 12, 16
 *            bits 4-7  unused
 *   then per operation, thread 0's first, 2 bytes:
 *     byte 0 bits 0-2  kind (enum cdiff_kind)
 *            bit  3    key
 *            bit  4    prio
 *            bit  5    delay: add_after 1 or 2 ms, finish 0 or 1 ms
 *            bits 6-7  finish's outcome (enum kwq_outcome)
 *     byte 1 bit  0    the thread's last operation (so is its CDIFF_OPS-th)
 *            bits 1-3  spin
 *            bits 4-7  unused
 */
#define CDIFF_HEADER_BYTES 1
#define CDIFF_OP_BYTES 2
#define CDIFF_MAX_INPUT (CDIFF_HEADER_BYTES + CDIFF_THREADS * CDIFF_OPS * CDIFF_OP_BYTES)

struct cdiff_input {
	bool mutex, sharded; /* the designs to run on */
	int rounds;          /* per design */
	struct cdiff_plan plan;
};

void cdiff_decode(const uint8_t *data, size_t size, struct cdiff_input *in);

/* The plan, one line per thread, each line starting with prefix. */
void cdiff_plan_print(const struct cdiff_plan *plan, FILE *f, const char *prefix);

#endif
