/*
 * Memory: bytes per queued key, the RSS delta over 1,000,000 queued keys.
 *
 * Measured in a fresh process (this program re-executed with
 * BENCH_MEMORY_CHILD): in this one, earlier cases leave freed memory in the
 * allocator that the adds would reuse without growing the RSS.  The child
 * builds its keys, creates the queue, reads its RSS, adds every key once,
 * reads its RSS again, and writes the delta and the time the adds took to
 * its stdout, a pipe to the case.
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define MEM_KEYS 1000000

static long rss_pages(void)
{
	long size, resident = -1;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f == NULL)
		return -1;
	if (fscanf(f, "%ld %ld", &size, &resident) != 2)
		resident = -1;
	fclose(f);
	return resident;
}

int bench_memory_child(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = (enum kwq_impl)atoi(argv[2]);
	size_t n = strtoull(argv[3], NULL, 10);
	struct bench_key *keys = bench_keys_build(n);
	kwq_t *q = kwq_new(&cfg);
	int ret = 0;
	if (keys == NULL || q == NULL) {
		ret = 3;
		goto out;
	}

	long before = rss_pages();
	int64_t t0 = bench_now_ns();
	for (size_t i = 0; i < n && ret == 0; i++)
		if (kwq_add(q, keys[i].bytes, keys[i].len) != 0)
			ret = 4;
	int64_t t1 = bench_now_ns();
	long after = rss_pages();
	if (ret == 0 && (before < 0 || after < 0 || kwq_len(q) != n))
		ret = 5;
	if (ret == 0)
		printf("%lld %lld\n", (long long)(after - before) * sysconf(_SC_PAGESIZE),
		       (long long)(t1 - t0));
out:
	/* Freed after measuring, so that leak checkers stay quiet. */
	kwq_free(q);
	free(keys);
	return ret;
}

/* Run the child for row; fills *bytes and *ns, or returns why not. */
static const char *run_child(const struct bench_row *row, size_t n, long long *bytes,
			     long long *ns)
{
	char impl[16], count[24];
	snprintf(impl, sizeof impl, "%d", (int)row->impl);
	snprintf(count, sizeof count, "%zu", n);
	char *argv[] = { "kwq-bench", BENCH_MEMORY_CHILD, impl, count, NULL };

	int fds[2];
	if (pipe2(fds, O_CLOEXEC) != 0)
		return "pipe failed";
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
	pid_t pid;
	int err = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(fds[1]);
	if (err != 0) {
		close(fds[0]);
		return "posix_spawn failed";
	}

	char buf[128];
	size_t len = 0;
	ssize_t r;
	while (len < sizeof buf - 1 &&
	       ((r = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0 || (r < 0 && errno == EINTR)))
		len += r > 0 ? (size_t)r : 0;
	buf[len] = '\0';
	close(fds[0]);

	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return "the measuring child failed";
	if (sscanf(buf, "%lld %lld", bytes, ns) != 2)
		return "the measuring child wrote no figures";
	return NULL;
}

static void memory(kb_state *st, void *arg)
{
	const struct bench_row *row = arg;
	const size_t n = bench_scaled(MEM_KEYS);
	long long bytes = 0, ns = 0;

	while (kb_keep_running(st)) {
		const char *why = run_child(row, n, &bytes, &ns);
		if (why != NULL) {
			kb_skip(st, why);
			return;
		}
		kb_set_iteration_time(st, (double)ns / 1e9);
	}
	kb_counter(st, "bytes_per_key", (double)bytes / (double)n, KB_PLAIN);
	kb_counter(st, "keys", (double)n, KB_PLAIN);
	bench_label(st, row->name);
}

void bench_register_memory(void)
{
	for (size_t r = 0; r < bench_nrows; r++) {
		if (!bench_row_available(&bench_rows[r]))
			continue;
		char name[64];
		snprintf(name, sizeof name, "memory/%s", bench_rows[r].name);
		bench_register_once(name, memory, (void *)&bench_rows[r]);
	}
}
