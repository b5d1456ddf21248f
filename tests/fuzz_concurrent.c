/*
 * fuzz_concurrent.c - libFuzzer target: the input bytes are a plan of
 * short concurrent histories (concurrent_engine.h: a header byte, then 2
 * bytes per operation, thread 0's first), run on the designs the header
 * names, as many rounds as it says on each (which interleaving a round
 * gets is up to the scheduler), every history checked for a
 * linearization against the model of the contract in concurrent_engine.c.
 * A history that none explains is printed with the plan, and the target
 * aborts, so libFuzzer keeps the input; replay it with the fuzzer binary,
 * or with `concurrent_replay --file CRASH` in any build.  Every input
 * decodes (a short one to a short plan).
 *
 * Each input gets a fresh queue (and threads) per design, freed before it
 * returns: the rounds of one input share it (each leaves it empty: held
 * handles done, waits fired, drained), no state passes between inputs,
 * and LeakSanitizer sees every allocation freed (a queue kept across
 * inputs would read as leaks: the sharded ring packs its segment pointers
 * with counters).
 *
 * Built with -Dfuzz=true by clang only, as fuzz_differential.
 */
#include <stdio.h>
#include <stdlib.h>

#include "concurrent_engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum kwq_impl impls[2] = { KWQ_IMPL_MUTEX, KWQ_IMPL_SHARDED };
	static const char *const names[2] = { "mutex", "sharded" };
	struct cdiff_input in;
	cdiff_decode(data, size, &in);
	for (int d = 0; d < 2; d++) {
		if (!(d == 0 ? in.mutex : in.sharded))
			continue;
		struct cdiff_engine *e = cdiff_engine_new(impls[d]);
		if (e == NULL) {
			perror("cdiff_engine_new");
			abort();
		}
		for (int r = 0; r < in.rounds; r++) {
			int rc = cdiff_engine_run(e, &in.plan, r, stderr, NULL);
			if (rc != 0) {
				fprintf(stderr, "%s, round %d of %d (%s); the plan:\n", names[d],
					r + 1, in.rounds, rc < 0 ? "out of range" : "not linearizable");
				cdiff_plan_print(&in.plan, stderr, "  ");
				abort();
			}
		}
		cdiff_engine_free(e);
	}
	return 0;
}
