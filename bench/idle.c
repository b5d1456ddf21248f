/*
 * Idle cost: the CPU time burnt per second of wall time by 8 workers
 * blocked in get on an empty queue.  A design that spins before parking,
 * or polls, pays here on every machine that runs it, all day.
 *
 * Process CPU time (CLOCK_PROCESS_CPUTIME_ID) over a 1 s wall interval,
 * while this thread sleeps; the workers get 100 ms to settle first, so
 * their spin-then-park is over.  Context switches (getrusage) show a design
 * that wakes its idle workers.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>

#include "bench.h"

#define IDLE_WORKERS 8
#define IDLE_SETTLE_S 0.1
#define IDLE_SECONDS 1.0

struct idle_run {
	kwq_t *q;
	pthread_barrier_t start;
	atomic_int err;
};

static void *idle_worker(void *arg)
{
	struct idle_run *run = arg;
	kwq_item_t *it;

	pthread_barrier_wait(&run->start);
	int err = kwq_get(run->q, &it);
	if (err != -ESHUTDOWN)
		atomic_store(&run->err, -EPROTO); /* empty: only shutdown ends it */
	return NULL;
}

static void sleep_s(double s)
{
	struct timespec ts = { .tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int64_t process_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double context_switches(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_nvcsw + (double)ru.ru_nivcsw;
}

static void idle(kb_state *st, void *arg)
{
	const struct bench_row *row = arg;
	double cpu_s = 0, wall_s = 0, switches = 0;

	while (kb_keep_running(st)) {
		struct idle_run run;
		pthread_t tid[IDLE_WORKERS];

		run.q = bench_queue_new(st, row);
		if (run.q == NULL)
			return;
		atomic_init(&run.err, 0);
		pthread_barrier_init(&run.start, NULL, IDLE_WORKERS + 1);
		bench_spawn(tid, IDLE_WORKERS, idle_worker, &run, 0);
		pthread_barrier_wait(&run.start);
		sleep_s(bench_scaled_seconds(IDLE_SETTLE_S));

		double sw0 = context_switches();
		int64_t cpu0 = process_cpu_ns(), t0 = bench_now_ns();
		sleep_s(bench_scaled_seconds(IDLE_SECONDS));
		int64_t cpu1 = process_cpu_ns(), t1 = bench_now_ns();
		double sw1 = context_switches();

		kwq_shutdown(run.q);
		bench_join(tid, IDLE_WORKERS);
		pthread_barrier_destroy(&run.start);
		kwq_free(run.q);
		if (atomic_load(&run.err) != 0) {
			kb_skip(st, "a get on the empty queue returned before shutdown");
			return;
		}
		cpu_s += (double)(cpu1 - cpu0) / 1e9;
		wall_s += (double)(t1 - t0) / 1e9;
		switches += sw1 - sw0;
		kb_set_iteration_time(st, (double)(t1 - t0) / 1e9);
	}
	kb_counter(st, "cpu_us_per_s", cpu_s * 1e6 / wall_s, KB_PLAIN);
	kb_counter(st, "switches_per_s", switches / wall_s, KB_PLAIN);
	bench_label(st, row->name);
}

void bench_register_idle(void)
{
	for (size_t r = 0; r < bench_nrows; r++) {
		if (!bench_row_available(&bench_rows[r]))
			continue;
		char name[64];
		snprintf(name, sizeof name, "idle/%s", bench_rows[r].name);
		bench_register_once(name, idle, (void *)&bench_rows[r]);
	}
}
