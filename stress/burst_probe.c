/*
 * burst_probe.c - lost wake-up probe for any implementation.
 *
 *   burst_probe ROW [--seconds S] [--workers W]
 *
 * Each round waits until every worker has sat in kwq_get long enough to
 * be parked, then adds a burst of fresh keys and watches:
 *
 *   bounded delivery   every item of the burst is got within 2 s;
 *   no idle worker     no worker sits in kwq_get for more than 30 ms
 *                      while the queue has been non-empty all that time,
 *                      with no worker runnable (no wake under way).
 *
 * A worker that was woken but that the scheduler has not run yet also sits
 * in kwq_get: on a loaded machine (two cores, other test programs, the
 * sched_yield calls of an injected-yields build) that lasts tens of
 * milliseconds.  Its thread is then runnable (R), not asleep.  And the
 * wakes are a chain (the woken worker wakes the next once it has taken an
 * item), so a worker may sleep, rightly, while an earlier link of the
 * chain waits for a CPU.  The oracle therefore reads the threads' states
 * (/proc/self/task/TID/stat) and blames the queue only when every worker
 * is asleep (parked, or sleeping through its work): none is runnable, so
 * no wake, and no lock being handed over (the mutex design's workers
 * sleep on its lock while a preempted holder waits for a CPU), is under
 * way.  On the sharded design it also reads the park's token count
 * (lib/core/park.h): a woken worker holds the token until it has looked
 * for work, so all workers asleep with a token out is a wake the kernel
 * has not yet carried out (its target not yet made runnable), not a lost
 * one; the probe counts
 * those and fails only when no token is out, the state the protocol must
 * never leave with a parked worker and queued items.  A token that is
 * never given back stops every later wake, which bounded delivery
 * catches.
 *
 * Rounds alternate a burst of 3 items per worker that take 10 ms each to
 * process (every worker must be woken, and soon: one worker alone would
 * leave the others idle for 90 ms of queued work), a single item (one
 * wake into a fully parked pool), and 1000 items processed at once (the
 * wake gate under a flood).  Conformance, stress and TSan runs can all pass
 * a wake gate that loses wake-ups permanently; this catches it.
 * Exit status 0 when every round held, 1 otherwise.
 */
#include <errno.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kwq.h>

#include "core/ops.h"
#include "core/park.h"

#define MAX_WORKERS 64
#define DELIVERY_BOUND_NS 2000000000LL
#define IDLE_BOUND_NS 30000000LL
#define PARKED_NS 20000000LL

struct probe {
	kwq_t *q;
	int workers;
	_Atomic int64_t in_get_since[MAX_WORKERS]; /* 0: not in get */
	_Atomic long got;
	_Atomic int64_t work_ns;                   /* processing time per item */
	_Atomic int tid[MAX_WORKERS];              /* the workers' thread ids */
	struct kwq__park *park;                     /* sharded: its park, else NULL */
	long token_out;                            /* all asleep, a wake undelivered */
};

struct worker_arg {
	struct probe *p;
	int id;
};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ns(int64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* Whether the thread is asleep ('S' in /proc/self/task/TID/stat). */
static int asleep(int tid)
{
	char path[64], buf[256];
	snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0; /* cannot tell (not started: tid 0): do not blame */
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *c = strrchr(buf, ')'); /* "pid (comm) S ..." */
	return c == NULL || c[1] == '\0' || c[2] == 'S' || c[2] == 'D';
}

/* Every worker is asleep (parked, or in its 10 ms of work): none is
 * runnable, so no wake and no lock hand-over is under way. */
static int no_worker_runnable(struct probe *p)
{
	for (int i = 0; i < p->workers; i++)
		if (!asleep(atomic_load(&p->tid[i])))
			return 0;
	return 1;
}

/* On failure: each worker's state and the system call it sleeps in
 * (/proc/self/task/TID/syscall: number, then arguments; 202 is futex, its
 * first argument the word), to tell a parked worker from one waiting on a
 * lock. */
static void explain_workers(struct probe *p)
{
	for (int i = 0; i < p->workers; i++) {
		int tid = atomic_load(&p->tid[i]);
		char path[64], buf[256] = "?";
		snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
		FILE *f = fopen(path, "r");
		if (f != NULL) {
			if (fgets(buf, sizeof buf, f) == NULL)
				snprintf(buf, sizeof buf, "?");
			fclose(f);
		}
		buf[strcspn(buf, "\n")] = '\0';
		fprintf(stderr, "  worker %d: %s, in get since %lld ms, syscall %s\n", i,
			asleep(tid) ? "asleep" : "runnable",
			atomic_load(&p->in_get_since[i]) == 0 ? -1LL
			: (long long)((now_ns() - atomic_load(&p->in_get_since[i])) / 1000000), buf);
	}
}

/* Whether a wake token is out (sharded): some woken worker has yet to
 * look for work and will pass the chain on when it does. */
static int token_out(struct probe *p)
{
	return p->park != NULL && atomic_load(&p->park->nspinning) != 0;
}

static void *worker(void *arg)
{
	struct worker_arg *a = arg;
	struct probe *p = a->p;
	kwq_item_t *it;

	atomic_store(&p->tid[a->id], (int)syscall(SYS_gettid));

	for (;;) {
		atomic_store(&p->in_get_since[a->id], now_ns());
		int rc = kwq_get(p->q, &it);
		atomic_store(&p->in_get_since[a->id], 0);
		if (rc != 0)
			return NULL;
		int64_t w = atomic_load(&p->work_ns);
		if (w > 0)
			sleep_ns(w);
		atomic_fetch_add(&p->got, 1);
		kwq_done(p->q, it);
	}
}

/* Wait until every worker has been in get for PARKED_NS. */
static void wait_all_parked(struct probe *p)
{
	for (;;) {
		int64_t t = now_ns();
		int ok = 0;
		for (int i = 0; i < p->workers; i++) {
			int64_t s = atomic_load(&p->in_get_since[i]);
			ok += s != 0 && t - s >= PARKED_NS;
		}
		if (ok == p->workers)
			return;
		sleep_ns(2000000);
	}
}

/* One round; returns 0 or 1 (failed). */
static int round_run(struct probe *p, long round, long *next_key, long burst, int64_t work)
{
	atomic_store(&p->work_ns, work);
	wait_all_parked(p);
	long target = atomic_load(&p->got) + burst;

	for (long i = 0; i < burst; i++) {
		long k = (*next_key)++;
		if (kwq_add(p->q, &k, sizeof k) != 0) {
			fprintf(stderr, "round %ld: add failed\n", round);
			return 1;
		}
	}
	int64_t start = now_ns(), nonempty_since = 0;
	int counted = 0; /* this round's token_out episode */
	while (atomic_load(&p->got) < target) {
		int64_t t = now_ns();
		if (t - start > DELIVERY_BOUND_NS) {
			fprintf(stderr, "round %ld: %ld of %ld items got after 2 s "
				"(lost wake-up?), len %zu\n", round,
				burst - (target - atomic_load(&p->got)), burst, kwq_len(p->q));
			return 1;
		}
		if (kwq_len(p->q) == 0) {
			nonempty_since = 0;
		} else {
			if (nonempty_since == 0)
				nonempty_since = t;
			for (int i = 0; i < p->workers; i++) {
				int64_t s = atomic_load(&p->in_get_since[i]);
				if (s == 0)
					continue;
				int64_t idle_from = s > nonempty_since ? s : nonempty_since;
				/* A round only takes items away: still non-empty
				 * after the workers were seen asleep means non-empty
				 * all along (the first len may be long stale by then
				 * on a loaded machine, the last item taken since). */
				if (t - idle_from > IDLE_BOUND_NS && no_worker_runnable(p) &&
				    atomic_load(&p->in_get_since[i]) == s &&
				    kwq_len(p->q) != 0) {
					if (token_out(p)) {
						if (!counted) {
							p->token_out++;
							counted = 1;
						}
						continue;
					}
					fprintf(stderr, "round %ld: worker %d idle in get for "
						"%lld ms, no worker runnable, while %zu "
						"items queued", round, i,
						(long long)((t - idle_from) / 1000000), kwq_len(p->q));
					if (p->park != NULL)
						fprintf(stderr, "; park: nidle %u, nspinning %u, "
							"%llu wakes, lock at %p", atomic_load(&p->park->nidle),
							atomic_load(&p->park->nspinning),
							(unsigned long long)atomic_load(&p->park->wakes),
							(void *)&p->park->lock);
					fputc('\n', stderr);
					explain_workers(p);
					return 1;
				}
			}
		}
		sleep_ns(200000);
	}
	return 0;
}

int main(int argc, char **argv)
{
	double seconds = 5;
	int workers = 4;
	enum kwq_impl impl;

	if (argc < 2) {
usage:
		fprintf(stderr, "usage: %s mutex|sharded [--seconds S] [--workers W]\n", argv[0]);
		return 2;
	}
	if (strcmp(argv[1], "mutex") == 0)
		impl = KWQ_IMPL_MUTEX;
	else if (strcmp(argv[1], "sharded") == 0)
		impl = KWQ_IMPL_SHARDED;
	else
		goto usage;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
			workers = atoi(argv[++i]);
		else
			goto usage;
	}
	if (workers < 1 || workers > MAX_WORKERS || seconds <= 0)
		goto usage;

	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = impl;
	static struct probe p;
	p.q = kwq_new(&cfg);
	if (p.q == NULL) {
		perror("kwq_new");
		return 1;
	}
	p.workers = workers;
	p.park = kwq__sharded_park(p.q);
	pthread_t t[MAX_WORKERS];
	struct worker_arg wa[MAX_WORKERS];
	for (int i = 0; i < workers; i++) {
		/* in_get_since stays 0 until the worker itself enters get:
		 * round 0 waits for every worker to have started and parked. */
		wa[i] = (struct worker_arg){ &p, i };
		pthread_create(&t[i], NULL, worker, &wa[i]);
	}

	int64_t end = now_ns() + (int64_t)(seconds * 1e9);
	long rounds = 0, next_key = 0, added = 0;
	int failed = 0;
	while (!failed && now_ns() < end) {
		long burst;
		int64_t work;
		switch (rounds % 3) {
		case 0:
			burst = 3L * workers;
			work = 10000000;
			break;
		case 1:
			burst = 1;
			work = 0;
			break;
		default:
			burst = 1000;
			work = 0;
			break;
		}
		failed = round_run(&p, rounds, &next_key, burst, work);
		added += burst;
		rounds++;
	}

	kwq_shutdown_drain(p.q);
	for (int i = 0; i < workers; i++)
		pthread_join(t[i], NULL);
	if (!failed && atomic_load(&p.got) != added) {
		fprintf(stderr, "got %ld items, added %ld\n", atomic_load(&p.got), added);
		failed = 1;
	}
	kwq_free(p.q);
	printf("%s: %ld rounds, %ld items, %ld rounds with a wake undelivered "
	       "past %d ms, %s\n", argv[1], rounds, added, p.token_out,
	       (int)(IDLE_BOUND_NS / 1000000), failed ? "FAILED" : "ok");
	return failed;
}
