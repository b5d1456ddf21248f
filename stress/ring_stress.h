/* ring_stress.h - what the ring stress programs share: item encoding and
 * their command line. */
#ifndef KWQ_STRESS_RING_STRESS_H
#define KWQ_STRESS_RING_STRESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Item v as a ring item: non-NULL, the two low bits clear. */
static inline void *ring_stress_enc(uint64_t v)
{
	return (void *)(uintptr_t)((v + 1) << 2);
}

static inline uint64_t ring_stress_dec(void *p)
{
	return ((uint64_t)(uintptr_t)p >> 2) - 1;
}

/* [--seconds S] [--threads T] into *seconds and *threads (2..max_threads);
 * false (and a message) on bad arguments. */
static inline int ring_stress_args(int argc, char **argv, double *seconds, int *threads,
				   int max_threads)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
			*seconds = atof(argv[++i]);
		} else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
			*threads = atoi(argv[++i]);
		} else {
			fprintf(stderr, "usage: %s [--seconds S] [--threads T]\n", argv[0]);
			return 0;
		}
	}
	if (*threads < 2 || *threads > max_threads || *seconds <= 0) {
		fprintf(stderr, "threads must be 2..%d, seconds > 0\n", max_threads);
		return 0;
	}
	return 1;
}

#endif
