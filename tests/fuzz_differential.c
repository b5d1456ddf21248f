/*
 * fuzz_differential.c - libFuzzer target: the input bytes are an operation
 * sequence for the differential driver (differential_driver.c: one header
 * byte, then 4 bytes per operation), run on the model and on every
 * implementation.  A mismatch prints the operation log and aborts, so
 * libFuzzer keeps the input; replay it with the fuzzer binary, or with
 * `differential --file CRASH` in any build (which also shrinks it).
 *
 * Built with -Dfuzz=true by clang only (README.md, "Differential fuzzing";
 * tests/fuzz-campaign runs a campaign).  Environment:
 *   KWQ_DIFF_QUIRKS   the model's quirk bits (default DIFF_KNOWN_QUIRKS:
 *                     the library's known deviations from the contract in
 *                     lib/kwq.h, none today: 0, the header exactly)
 *   KWQ_DIFF_MUTATE   a mutation name (differential --list-mutations): a
 *                     negative control, the fuzzer must then find a crash
 */
#include <stdlib.h>
#include <string.h>

#include "differential_driver.h"

/* Longer inputs are cut: each operation may wait for three timer threads. */
#define MAX_OPS 2000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct diff_options opts;
static bool opts_ready;

static void opts_init(void)
{
	opts.quirks = DIFF_KNOWN_QUIRKS;
	opts.report = stderr;
	opts.prefix = "";
	const char *q = getenv("KWQ_DIFF_QUIRKS");
	if (q != NULL && *q != '\0')
		opts.quirks = (unsigned)strtoul(q, NULL, 0);
	const char *m = getenv("KWQ_DIFF_MUTATE");
	for (int i = 1; m != NULL && i < DIFF_MUT_COUNT; i++)
		if (strcmp(m, diff_mutation_name((enum diff_mutation)i)) == 0)
			opts.mutation = (enum diff_mutation)i;
	opts_ready = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!opts_ready)
		opts_init();
	if (size > DIFF_HEADER_BYTES + (size_t)MAX_OPS * DIFF_OP_BYTES)
		size = DIFF_HEADER_BYTES + (size_t)MAX_OPS * DIFF_OP_BYTES;
	int rc = diff_run(data, size, &opts);
	if (rc == 1)
		abort(); /* the mismatch and the operation log are on stderr */
	return 0;
}
