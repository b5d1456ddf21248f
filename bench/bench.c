/*
 * bench.c - the implementation rows, keys, run mode and helpers shared by
 * the cases.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* The one table of implementations every case runs over. */
const struct bench_row bench_rows[] = {
	{ "mutex", KWQ_IMPL_MUTEX },
	{ "sharded", KWQ_IMPL_SHARDED },
};
const size_t bench_nrows = sizeof bench_rows / sizeof bench_rows[0];

/* Probed once: a probe builds and frees a queue. */
static signed char row_available[sizeof bench_rows / sizeof bench_rows[0]];

bool bench_row_available(const struct bench_row *row)
{
	size_t i = (size_t)(row - bench_rows);
	if (row_available[i] == 0) {
		struct kwq_config cfg = KWQ_CONFIG_INIT;
		cfg.impl = row->impl;
		kwq_t *q = kwq_new(&cfg);
		row_available[i] = q != NULL || errno != ENOTSUP ? 1 : -1;
		kwq_free(q);
	}
	return row_available[i] > 0;
}

kwq_t *bench_queue_new(kb_state *st, const struct bench_row *row)
{
	return bench_queue_new_named(st, row, NULL);
}

kwq_t *bench_queue_new_named(kb_state *st, const struct bench_row *row, const char *name)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = row->impl;
	cfg.name = name;
	kwq_t *q = kwq_new(&cfg);
	if (q == NULL) {
		char why[128];
		snprintf(why, sizeof why, "kwq_new(%s): %s", row->name, kwq_strerror(errno));
		kb_skip(st, why);
	}
	return q;
}

const struct bench_key *bench_keys;

struct bench_key *bench_keys_build(size_t n)
{
	/* "ns/obj-" plus at most 10 digits and a NUL, after the key array, so
	 * that the keys of a case are as close together as a caller's own. */
	size_t max = sizeof "ns/obj-" + 10;
	struct bench_key *keys = malloc(n * (sizeof *keys + max));
	if (keys == NULL)
		return NULL;
	char *p = (char *)(keys + n);
	for (size_t i = 0; i < n; i++) {
		int len = snprintf(p, max, "ns/obj-%zu", i);
		keys[i].bytes = p;
		keys[i].len = (size_t)len;
		p += len + 1;
	}
	return keys;
}

enum bench_mode bench_mode = BENCH_FULL;

static uint64_t mode_divisor(void)
{
	switch (bench_mode) {
	case BENCH_QUICK:
		return 10;
	case BENCH_SMOKE:
		return 1000;
	case BENCH_FULL:
		break;
	}
	return 1;
}

uint64_t bench_scaled(uint64_t full)
{
	uint64_t n = full / mode_divisor();
	return n > 0 ? n : 1;
}

double bench_scaled_seconds(double full)
{
	return full / (double)mode_divisor();
}

void bench_label(kb_state *st, const char *row)
{
	char label[96];
	if (bench_mode == BENCH_FULL)
		snprintf(label, sizeof label, "%s", row);
	else
		snprintf(label, sizeof label, "%s %s (work/%llu)", row,
			 bench_mode == BENCH_QUICK ? "quick" : "smoke",
			 (unsigned long long)mode_divisor());
	kb_set_label(st, label);
}

kb_case *bench_register_once(const char *name, kb_fn *fn, void *arg)
{
	kb_case *c = kb_register(name, fn, arg);
	kb_iterations(c, 1);
	kb_manual_time(c);
	kb_time_unit(c, KB_MS);
	return c;
}

int64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int bench_cpus(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) == 0)
		return CPU_COUNT(&set);
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

void bench_spawn(pthread_t *tids, size_t n, void *(*fn)(void *), void *args, size_t sz)
{
	for (size_t i = 0; i < n; i++) {
		int err = pthread_create(&tids[i], NULL, fn, (char *)args + i * sz);
		if (err != 0) {
			fprintf(stderr, "kwq-bench: pthread_create: %s\n", strerror(err));
			exit(2);
		}
	}
}

void bench_join(pthread_t *tids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		pthread_join(tids[i], NULL);
}
