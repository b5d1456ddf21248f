/*
 * differential_driver.h - run one operation sequence on a tiny executable
 * model of the contract in lib/kwq.h and on every implementation, in lockstep, and compare.
 *
 * Shared by the seeded test (differential.c, run by meson test) and the
 * libFuzzer target (fuzz_differential.c): both hand the driver a byte
 * string, which decodes to the operation sequence (see the .c file for the
 * encoding).  The seeded test makes its bytes with diff_generate().
 */
#ifndef KWQ_TESTS_DIFFERENTIAL_DRIVER_H
#define KWQ_TESTS_DIFFERENTIAL_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* An input is one header byte, then DIFF_OP_BYTES per operation (a
 * trailing partial operation is ignored).  Header bit 7 selects the 0.2
 * alphabet (the 0.1 operations and kwq_finish, kwq_cancel, replace, the
 * batch calls, kwq_item_dirty and two metrics; see the .c file); without
 * it an input decodes exactly as it did before 0.2. */
#define DIFF_HEADER_BYTES 1
#define DIFF_OP_BYTES 4
#define DIFF_HEADER_V2 0x80

/*
 * Model variants.  quirks: rules in which the library is known to differ
 * from the contract in lib/kwq.h, reproduced in the model so that everything else can still
 * be compared (empty once the library follows the header).  mutation:
 * deliberately wrong rules (a negative control: the comparison must fail).
 */
enum diff_quirk {
	DIFF_QUIRK_NONE = 0,
	/* an immediate add of a waiting key is made with its own priority
	 * only: the wait's priority is dropped with the wait */
	DIFF_QUIRK_ADD_DROPS_WAIT_PRIO = 1u << 0,
	/* a delayed add absorbed by a queued or held+dirty key raises its
	 * priority only when the add's priority is > 0 */
	DIFF_QUIRK_ABSORB_POSITIVE_ONLY = 1u << 1,
	/* shutdown's drop of the waiting adds left to the timer thread, as
	 * the library did before its shutdown dropped them in each key's
	 * critical section: a kwq_cancel of a key whose wait it dropped may
	 * answer 1 (the model takes 0 or 1), and the delayed gauge lags (a
	 * re-read allows for it anyway) */
	DIFF_QUIRK_SHUTDOWN_DROPS_LATE = 1u << 2,
};

/* The quirks the library is known to have today (differential.c also runs
 * the strict model, as a TAP TODO, while this is not 0). */
#define DIFF_KNOWN_QUIRKS 0u

/* The known quirks that show in some runs only (a race with the timer
 * thread): their TODO point runs its seeds several rounds. */
#define DIFF_RACY_QUIRKS DIFF_QUIRK_SHUTDOWN_DROPS_LATE

enum diff_mutation {
	DIFF_MUT_NONE = 0,
	DIFF_MUT_RAISE_KEEPS_POSITION,  /* a raise does not move to the tail */
	DIFF_MUT_DIRTY_KEEPS_HELD_PRIO, /* done re-queues with the handed-out priority */
	DIFF_MUT_LATER_READY_WINS,      /* a waiting key takes the later time */
	DIFF_MUT_TIES_LIFO,             /* equal ready times: last call first */
	DIFF_MUT_NO_ABSORB,             /* a queued key's delayed add waits */
	DIFF_MUT_ADD_KEEPS_WAIT,        /* an immediate add does not cancel */
	DIFF_MUT_SHUTDOWN_KEEPS_WAITS,  /* shutdown does not drop waiting adds */
	DIFF_MUT_LEN_COUNTS_DIRTY,      /* kwq_len counts held+dirty items */
	DIFF_MUT_READY_STRICT,          /* due only after the ready time */
	DIFF_MUT_FORGET_KEEPS_COUNT,    /* kwq_forget does not reset */
	DIFF_MUT_WAIT_PRIO_LOWEST,      /* a waiting key keeps the lower priority */
	/* the 0.2 rules */
	DIFF_MUT_CANCEL_KEEPS_DIRTY,    /* cancel leaves a held+dirty key dirty */
	DIFF_MUT_CANCEL_KEEPS_WAIT,     /* cancel does not drop a wait */
	DIFF_MUT_DROP_DROPS_DIRTY,      /* KWQ_DROP also drops the dirty re-queue */
	DIFF_MUT_DROP_KEEPS_WAIT,       /* KWQ_DROP does not cancel the wait */
	DIFF_MUT_RETRY_AFTER_COUNTS,    /* KWQ_RETRY_AFTER counts a failure */
	DIFF_MUT_GIVE_UP_LATE,          /* give up past m + 1 failures, not m */
	DIFF_MUT_REPLACE_IGNORED,       /* replace is ignored */
	DIFF_MUT_REPLACE_KEEPS_TIE,     /* replace at an equal ready time keeps
	                                   the old call's place */
	DIFF_MUT_ADD_MANY_REVERSED,     /* kwq_add_many adds last key first */
	DIFF_MUT_BATCH_REVERSED,        /* kwq_get_batch lists its items reversed */
	DIFF_MUT_DONE_MANY_REVERSED,    /* kwq_done_many does the last handle first */
	DIFF_MUT_DIRTY_COUNTS_WAIT,     /* kwq_item_dirty is true for a pending wait */
	DIFF_MUT_DEPTH_IGNORES_CANCEL,  /* the depth metric counts cancelled items */
	DIFF_MUT_COUNT
};

/* Counts of what the sequences exercised, summed over runs. */
struct diff_stats {
	unsigned long runs, ops;
	unsigned long gets, gets_empty, dones, requeues_on_done;
	unsigned long adds, adds_refused, einval;
	unsigned long raises, dirty_adds, absorbed, waits_new, waits_earlier,
		waits_kept, cancels, fired, fired_into_held, ties, steps,
		shutdowns, drains, rate_limited;
	unsigned long len_transient; /* kwq_len off at first, right on a re-read */
	/* the 0.2 alphabet */
	unsigned long finishes[4], give_ups, finish_refused, cancels_removed,
		cancels_dirty, replaces, replace_ties, many_calls, many_keys,
		batches, batch_items, batch_full, done_many_calls, done_many_items,
		dirty_true, dirty_false, metric_reads, metrics_transient;
};

struct diff_options {
	unsigned quirks;                /* enum diff_quirk bits */
	enum diff_mutation mutation;
	FILE *report;                   /* the mismatch and the operation log */
	const char *prefix;             /* before every report line ("# ") */
	bool log_all;                   /* print the log even when all agree */
	struct diff_stats *stats;       /* optional, accumulated */
	size_t *failed_op;              /* optional out: the index of the input
	                                   operation that mismatched (SIZE_MAX:
	                                   the final flush) */
	unsigned patience_ms;           /* the longest wait for a queue (for
	                                   the barrier, a blocking get); 0 =
	                                   10 s.  Only a wrong answer waits
	                                   that long: shrinking uses less */
};

/*
 * Run the sequence `data` decodes to.  Returns 0 when the model and every
 * implementation agreed on every return value, key, priority and length;
 * 1 at the first mismatch (described, with the operation log, on
 * opts->report); 2 when a queue could not be set up.
 */
int diff_run(const uint8_t *data, size_t size, const struct diff_options *opts);

/*
 * Fill buf (DIFF_HEADER_BYTES + nops * DIFF_OP_BYTES bytes) with a seeded
 * random sequence: the fuzzer's encoding, with shutdowns only in the last
 * sixth of the sequence.  Returns the number of bytes written.
 */
size_t diff_generate(uint64_t seed, size_t nops, uint8_t *buf);

/* What a quirk (one bit) is, in words. */
const char *diff_quirk_text(unsigned quirk);

/* The name of a mutation (for --mutate), or NULL past the last. */
const char *diff_mutation_name(enum diff_mutation m);

void diff_stats_print(const struct diff_stats *s, FILE *f, const char *prefix);

#endif
