/*
 * concurrent_replay.c - replay inputs of the concurrent fuzz target
 * (tests/fuzz_concurrent; the format is in concurrent_engine.h) without
 * libFuzzer, in any build.
 *
 *   concurrent_replay --corpus DIR [--repeat N]   every file of DIR, N rounds
 *                                                 (default 16) on each design:
 *                                                 one TAP point per file
 *   concurrent_replay --file PATH [--repeat N]    one input (a fuzzer's crash
 *                                                 file): its plan, then N rounds
 *                                                 on each design
 *   concurrent_replay --print PATH                the plan an input decodes to
 *   concurrent_replay --generate DIR [--count N] [--seed S]
 *                                                 write N (default 32) random
 *                                                 inputs to DIR, named by
 *                                                 their bytes' FNV-1a hash
 *
 * The replay ignores the input's design and round bits: every input runs
 * on both designs, N rounds each.  Which interleaving a round gets is up
 * to the scheduler, so each runs several times; a round that no
 * linearization explains prints its history (as TAP diagnostics with
 * --corpus) and the replay fails.  Exit status 0 when every round of
 * every input was linearizable, 1 when one was not, 2 on a usage or setup
 * error.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kwq.h>

#include "concurrent_engine.h"

static const struct {
	const char *name;
	enum kwq_impl impl;
} designs[] = { { "mutex", KWQ_IMPL_MUTEX }, { "sharded", KWQ_IMPL_SHARDED } };

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The first CDIFF_MAX_INPUT bytes of path (the rest decodes to nothing);
 * -1 when it cannot be read. */
static long read_input(const char *path, uint8_t *buf)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		perror(path);
		return -1;
	}
	size_t n = fread(buf, 1, CDIFF_MAX_INPUT, f);
	bool err = ferror(f);
	fclose(f);
	if (err) {
		perror(path);
		return -1;
	}
	return (long)n;
}

/* repeat rounds of in's plan on each design, each on a fresh queue; 0 all
 * linearizable, 1 one not (its history on report, prefixed), 2 setup. */
static int replay(const struct cdiff_input *in, unsigned long repeat, FILE *report,
		  const char *prefix)
{
	for (size_t d = 0; d < sizeof designs / sizeof designs[0]; d++) {
		struct cdiff_engine *e = cdiff_engine_new(designs[d].impl);
		if (e == NULL) {
			fprintf(report, "%s%s: the queue or its threads: %s\n", prefix,
				designs[d].name, strerror(errno));
			return 2;
		}
		for (unsigned long r = 0; r < repeat; r++) {
			/* into memory first, to prefix every line */
			char *text = NULL;
			size_t len = 0;
			FILE *m = open_memstream(&text, &len);
			int rc = cdiff_engine_run(e, &in->plan, (long)r, m, NULL);
			if (m != NULL)
				fclose(m);
			if (rc != 0) {
				fprintf(report, "%s%s, round %lu of %lu:\n", prefix, designs[d].name,
					r + 1, repeat);
				cdiff_plan_print(&in->plan, report, prefix);
				for (char *line = text, *nl; line != NULL && *line != '\0'; line = nl) {
					nl = strchr(line, '\n');
					if (nl != NULL)
						*nl++ = '\0';
					fprintf(report, "%s%s\n", prefix, line);
				}
			}
			free(text);
			if (rc != 0) {
				cdiff_engine_free(e);
				return rc < 0 ? 2 : 1;
			}
		}
		cdiff_engine_free(e);
	}
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int corpus(const char *dir, unsigned long repeat)
{
	DIR *d = opendir(dir);
	if (d == NULL) {
		perror(dir);
		return 2;
	}
	size_t n = 0, cap = 0;
	char **names = NULL;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			char **nn = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *nn);
			if (nn == NULL)
				exit(2);
			names = nn;
		}
		if ((names[n] = strdup(de->d_name)) == NULL)
			exit(2);
		n++;
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof *names, name_cmp);
	printf("1..%zu\n", n);
	int bad = 0;
	double t0 = now_s();
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		uint8_t buf[CDIFF_MAX_INPUT];
		long len = read_input(path, buf);
		int rc = 2, ops = 0;
		if (len >= 0) {
			struct cdiff_input in;
			cdiff_decode(buf, (size_t)len, &in);
			for (int t = 0; t < CDIFF_THREADS; t++)
				ops += in.plan.nops[t];
			rc = replay(&in, repeat, stdout, "# ");
		}
		printf("%s %zu - %s (%d operations) x %lu on each design\n", rc ? "not ok" : "ok",
		       i + 1, names[i], ops, repeat);
		fflush(stdout);
		bad += rc != 0;
		free(names[i]);
	}
	free(names);
	printf("# %zu inputs x %lu rounds x 2 designs in %.1f s, %d failed\n", n, repeat,
	       now_s() - t0, bad);
	return bad ? 1 : 0;
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* count random inputs: a header, then 1 to CDIFF_OPS operations per thread,
 * every byte random (all decode), each thread ending where its count says. */
static int generate(const char *dir, unsigned long count, uint64_t seed)
{
	for (unsigned long i = 0; i < count; i++) {
		uint8_t buf[CDIFF_MAX_INPUT];
		size_t n = 0;
		buf[n++] = (uint8_t)(splitmix(&seed) & 0x0f);
		for (int t = 0; t < CDIFF_THREADS; t++) {
			int k = 1 + (int)(splitmix(&seed) % CDIFF_OPS);
			for (int j = 0; j < k; j++) {
				uint64_t r = splitmix(&seed);
				buf[n++] = (uint8_t)r;
				/* spin mostly 0: short ones */
				int spin = (r >> 8) % 4 == 0 ? (int)((r >> 16) % 8) : 0;
				buf[n++] = (uint8_t)((j + 1 == k) | spin << 1);
			}
		}
		uint32_t h = 2166136261u;
		for (size_t j = 0; j < n; j++)
			h = (h ^ buf[j]) * 16777619u;
		char path[4096];
		snprintf(path, sizeof path, "%s/gen-%08" PRIx32, dir, h);
		FILE *f = fopen(path, "wb");
		if (f == NULL || fwrite(buf, 1, n, f) != n || fclose(f) != 0) {
			perror(path);
			return 2;
		}
	}
	return 0;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s --corpus DIR [--repeat N] | --file PATH [--repeat N] | "
		"--print PATH | --generate DIR [--count N] [--seed S]\n", argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *corpus_dir = NULL, *file = NULL, *print = NULL, *gen = NULL;
	unsigned long repeat = 16, count = 32;
	uint64_t seed = 1;
	for (int i = 1; i < argc; i += 2) { /* OPTION VALUE pairs */
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v == NULL)
			usage(argv[0]);
		if (strcmp(a, "--corpus") == 0)
			corpus_dir = v;
		else if (strcmp(a, "--file") == 0)
			file = v;
		else if (strcmp(a, "--print") == 0)
			print = v;
		else if (strcmp(a, "--generate") == 0)
			gen = v;
		else if (strcmp(a, "--repeat") == 0)
			repeat = strtoul(v, NULL, 0);
		else if (strcmp(a, "--count") == 0)
			count = strtoul(v, NULL, 0);
		else if (strcmp(a, "--seed") == 0)
			seed = strtoull(v, NULL, 0);
		else
			usage(argv[0]);
	}
	if (corpus_dir != NULL)
		return corpus(corpus_dir, repeat);
	if (gen != NULL)
		return generate(gen, count, seed);
	const char *path = file != NULL ? file : print;
	if (path == NULL)
		usage(argv[0]);
	uint8_t buf[CDIFF_MAX_INPUT];
	long len = read_input(path, buf);
	if (len < 0)
		return 2;
	struct cdiff_input in;
	cdiff_decode(buf, (size_t)len, &in);
	printf("header: %s%s, %d rounds each (the fuzz target's; the replay runs "
	       "both, --repeat)\n", in.mutex ? "mutex " : "", in.sharded ? "sharded" : "",
	       in.rounds);
	cdiff_plan_print(&in.plan, stdout, "");
	if (file == NULL)
		return 0;
	int rc = replay(&in, repeat, stdout, "");
	printf("%s: %lu rounds on each design, %s\n", path, repeat,
	       rc == 0 ? "every one linearizable" : rc == 1 ? "FAILED" : "setup error");
	return rc;
}
