/*
 * main.c - kwq-bench: registers every case for every implementation row
 * and hands over to Google Benchmark.
 *
 *   kwq-bench [--quick | --smoke] [Google Benchmark flags]
 *
 * --quick does a tenth of each workload's work and --smoke a thousandth
 * (every run is labelled so); both are for checking, never for figures.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "bench.h"
#include "bench_version.h"

static void *nothing(void *arg)
{
	return arg;
}

/* "model name" from /proc/cpuinfo: Google Benchmark's context lacks it. */
static void cpu_model(char *buf, size_t cap)
{
	char line[512];
	FILE *f = fopen("/proc/cpuinfo", "r");
	snprintf(buf, cap, "unknown");
	if (f == NULL)
		return;
	while (fgets(line, sizeof line, f) != NULL) {
		char *colon = strchr(line, ':');
		if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
			snprintf(buf, cap, "%s", colon + 2);
			buf[strcspn(buf, "\n")] = '\0';
			break;
		}
	}
	fclose(f);
}

static void stamp_context(void)
{
	char buf[512];
	struct utsname u;

	kb_context("kwq_commit", KWQ_BENCH_COMMIT);
	kb_context("kwq_compiler", KWQ_BENCH_COMPILER);
	kb_context("kwq_cflags", KWQ_BENCH_CFLAGS);
	kb_context("kwq_build_type", KWQ_BENCH_BUILDTYPE);
	cpu_model(buf, sizeof buf);
	kb_context("cpu_model", buf);
	if (uname(&u) == 0) {
		snprintf(buf, sizeof buf, "%s %s %s", u.sysname, u.release, u.machine);
		kb_context("kernel", buf);
	}
	kb_context("kwq_mode", bench_mode == BENCH_FULL	   ? "full"
			       : bench_mode == BENCH_QUICK ? "quick (work/10)"
							   : "smoke (work/1000)");
	buf[0] = '\0';
	for (size_t r = 0; r < bench_nrows; r++) {
		size_t len = strlen(buf);
		snprintf(buf + len, sizeof buf - len, "%s%s%s", r > 0 ? ", " : "",
			 bench_rows[r].name,
			 bench_row_available(&bench_rows[r]) ? "" : " (not built: ENOTSUP)");
	}
	kb_context("kwq_rows", buf);
	snprintf(buf, sizeof buf, "W2 only where P + C <= %d usable CPUs", bench_cpus());
	kb_context("kwq_floor_ck_ring", buf);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], BENCH_MEMORY_CHILD) == 0)
		return bench_memory_child(argc, argv);

	/* glibc drops the lock prefix from its atomics while a process has
	 * only ever had one thread: single-threaded cases would flatter every
	 * lock.  One thread started and joined ends that for good. */
	pthread_t t;
	if (pthread_create(&t, NULL, nothing, NULL) != 0 || pthread_join(t, NULL) != 0) {
		fprintf(stderr, "kwq-bench: cannot start a thread\n");
		return 2;
	}

	/* Our flags go before Google Benchmark parses the rest. */
	int n = 1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--quick") == 0)
			bench_mode = BENCH_QUICK;
		else if (strcmp(argv[i], "--smoke") == 0)
			bench_mode = BENCH_SMOKE;
		else
			argv[n++] = argv[i];
	}
	argc = n;
	argv[argc] = NULL;

	struct bench_key *keys = bench_keys_build(BENCH_NKEYS);
	if (keys == NULL) {
		fprintf(stderr, "kwq-bench: out of memory\n");
		return 2;
	}
	bench_keys = keys;

	stamp_context();
	bench_register_w1();
	bench_register_w2();
	bench_register_w3();
	bench_register_w4();
	bench_register_w5();
	bench_register_w6();
	bench_register_w7();
	bench_register_prio_mix();
	bench_register_named();
	bench_register_coalesce();
	bench_register_memory();
	bench_register_idle();

	int ret = kb_main(argc, argv);
	free(keys);
	return ret;
}
