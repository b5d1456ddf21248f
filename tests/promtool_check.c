/*
 * promtool_check.c - the Prometheus text of busy named queues through
 * `promtool check metrics`, on each design:
 *
 *   promtool_check     PROMTOOL in the environment names promtool
 *
 * For each design, one queue's text (kwq_metrics_prometheus) and two
 * queues' (kwq_metrics_prometheus_all).  Each queue has made every family
 * non-zero: an item worked (the two durations), one held (unfinished,
 * longest), one queued (depth), keys waiting on a long delayed add
 * (retries, delayed) and a give-up of max_attempts through kwq_finish.
 * promtool must exit 0 and print nothing.  A family missing from the text
 * or a sample of 0 (a bucket aside) fails too: promtool is to see every
 * kind of value, and a library that does not produce one must not pass.
 *
 * Exit status 0 (passed), 1 (failed), 77 (skipped: no promtool).
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kwq.h>

#define MS 1000000LL
#define SEC 1000000000LL
#define FAMILIES 9

static int failures;

#define FAIL(...)                                                               \
	do {                                                                    \
		printf("FAIL %s:%d: ", __FILE__, __LINE__);                       \
		printf(__VA_ARGS__);                                             \
		printf("\n");                                                    \
		failures++;                                                      \
	} while (0)

static void pause_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* The head once the timer thread has added what became due (10 s at
 * most), checked to be key; NULL (and a failure) otherwise. */
static kwq_item_t *get_key(kwq_t *q, const char *key)
{
	kwq_item_t *it;
	for (int i = 0; i < 10000; i++) {
		if (kwq_try_get(q, &it) == 0) {
			size_t len;
			const void *k = kwq_item_key(it, &len);
			if (len != strlen(key) || memcmp(k, key, len) != 0) {
				FAIL("got \"%.*s\", not \"%s\"", (int)len, (const char *)k, key);
				kwq_done(q, it);
				return NULL;
			}
			return it;
		}
		pause_ms(1);
	}
	FAIL("no \"%s\" to get", key);
	return NULL;
}

#define ADDS(q, s) kwq_add((q), (s), strlen(s))

/*
 * A named queue on the fake clock c, with every family non-zero; *held is
 * the item it holds (the caller finishes it).  NULL on a failure.
 */
static kwq_t *busy_queue(enum kwq_impl impl, const char *name, kwq_clock_t *c,
			 kwq_item_t **held)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = impl;
	cfg.name = name;
	cfg.clock = c;
	cfg.limiter = kwq_limiter_exponential(1 * MS, 1 * SEC);
	cfg.max_attempts = 1;
	kwq_t *q = kwq_new(&cfg);
	if (q == NULL) {
		FAIL("kwq_new(%s): %s", name, kwq_strerror(errno));
		return NULL;
	}
	kwq_item_t *it;

	/* a give-up: with max_attempts 1 the second KWQ_RETRY gives up */
	if (ADDS(q, "g") != 0 || (it = get_key(q, "g")) == NULL)
		goto fail;
	int rc = kwq_finish(q, it, KWQ_RETRY, 0); /* retried after 1 ms */
	if (rc != 0) {
		FAIL("kwq_finish(KWQ_RETRY): %s", kwq_strerror(rc));
		goto fail;
	}
	kwq_clock_fake_step(c, 1 * MS);
	if ((it = get_key(q, "g")) == NULL)
		goto fail;
	rc = kwq_finish(q, it, KWQ_RETRY, 0); /* given up */
	if (rc != 0) {
		FAIL("kwq_finish(KWQ_RETRY), the give-up: %s", kwq_strerror(rc));
		goto fail;
	}

	/* an item worked: queued 3 ms, worked 2 ms */
	if (ADDS(q, "w") != 0)
		goto fail;
	kwq_clock_fake_step(c, 3 * MS);
	if ((it = get_key(q, "w")) == NULL)
		goto fail;
	kwq_clock_fake_step(c, 2 * MS);
	if (kwq_done(q, it) != 0)
		goto fail;

	/* one held 1.5 s, one queued, three waiting an hour */
	if (ADDS(q, "h") != 0 || (*held = get_key(q, "h")) == NULL)
		goto fail;
	if (ADDS(q, "q") != 0)
		goto fail;
	for (int k = 0; k < 3; k++) {
		char key[8];
		snprintf(key, sizeof key, "d%d", k);
		if (kwq_add_after(q, key, strlen(key), 3600 * SEC) != 0)
			goto fail;
	}
	kwq_clock_fake_step(c, 1500 * MS);
	return q;

fail:
	FAIL("%s: could not make every family non-zero", name);
	kwq_free(q);
	return NULL;
}

/* Every family in the text, each sample but a bucket non-zero. */
static void check_nonzero(const char *text, const char *what)
{
	int families = 0;
	for (const char *s = text; *s != '\0';) {
		const char *eol = strchr(s, '\n');
		if (eol == NULL) {
			FAIL("%s: the last line does not end in a newline", what);
			return;
		}
		if (strncmp(s, "# TYPE ", 7) == 0) {
			families++;
		} else if (s[0] != '#') {
			size_t name = strcspn(s, "{ ");
			const char *value = eol;
			while (value > s && value[-1] != ' ')
				value--;
			bool bucket = name > 7 && strncmp(s + name - 7, "_bucket", 7) == 0;
			if (!bucket && eol - value == 1 && value[0] == '0')
				FAIL("%s: %.*s is 0", what, (int)(eol - s), s);
		}
		s = eol + 1;
	}
	if (families != FAMILIES)
		FAIL("%s: %d families, not %d", what, families, FAMILIES);
}

/*
 * promtool check metrics with text on its standard input; any line it
 * prints (standard output and error together) is a problem.
 */
static void promtool_check(const char *promtool, const char *text, const char *what)
{
	int in[2], out[2];
	if (pipe(in) != 0 || pipe(out) != 0) {
		FAIL("pipe: %s", strerror(errno));
		return;
	}
	pid_t pid = fork();
	if (pid < 0) {
		FAIL("fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(out[1], 2);
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		execl(promtool, promtool, "check", "metrics", (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", promtool, strerror(errno));
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	/* promtool reads the whole text before it writes: no deadlock */
	size_t len = strlen(text), done = 0;
	while (done < len) {
		ssize_t n = write(in[1], text + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			FAIL("%s: writing to promtool: %s", what, strerror(errno));
			break;
		}
		done += (size_t)n;
	}
	close(in[1]);
	FILE *f = fdopen(out[0], "r");
	char line[512];
	int lines = 0;
	while (f != NULL && fgets(line, sizeof line, f) != NULL) {
		printf("promtool (%s): %s", what, line);
		if (strchr(line, '\n') == NULL)
			printf("\n");
		if (strspn(line, " \t\r\n") != strlen(line))
			lines++;
	}
	if (f != NULL)
		fclose(f);
	else
		close(out[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		FAIL("%s: promtool check metrics exited %d", what,
		     WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	if (lines > 0)
		FAIL("%s: promtool printed %d line(s)", what, lines);
}

/* The text of queues[0..n), whole (an allocated string), or NULL. */
static char *text_of(kwq_t *const *queues, size_t n, const char *what)
{
	int len = kwq_metrics_prometheus_all(queues, n, NULL, 0);
	if (len <= 0) {
		FAIL("%s: kwq_metrics_prometheus_all returned %d", what, len);
		return NULL;
	}
	char *text = malloc((size_t)len + 1);
	if (text == NULL) {
		FAIL("out of memory");
		return NULL;
	}
	int again = n == 1 ? kwq_metrics_prometheus(queues[0], text, (size_t)len + 1)
			   : kwq_metrics_prometheus_all(queues, n, text, (size_t)len + 1);
	if (again != len) { /* a fake clock and no call in flight: exact */
		FAIL("%s: the text was %d bytes, then %d", what, len, again);
		free(text);
		return NULL;
	}
	return text;
}

static void check_design(const char *promtool, enum kwq_impl impl, const char *design)
{
	kwq_clock_t *c = kwq_clock_fake_new(1000 * SEC);
	kwq_item_t *held[2] = { NULL, NULL };
	kwq_t *q[2];
	char what[64];

	if (c == NULL) {
		FAIL("kwq_clock_fake_new: %s", kwq_strerror(errno));
		return;
	}
	q[0] = busy_queue(impl, "reconcile", c, &held[0]);
	q[1] = busy_queue(impl, "ns/\"sync\"", c, &held[1]);
	for (size_t n = 1; n <= 2 && q[0] != NULL && q[1] != NULL; n++) {
		snprintf(what, sizeof what, "%s, %zu queue%s", design, n, n > 1 ? "s" : "");
		char *text = text_of(q, n, what);
		if (text == NULL)
			break;
		check_nonzero(text, what);
		promtool_check(promtool, text, what);
		free(text);
	}
	for (int i = 0; i < 2; i++) {
		if (held[i] != NULL)
			kwq_done(q[i], held[i]);
		kwq_free(q[i]);
	}
	kwq_clock_free(c);
}

int main(void)
{
	const char *promtool = getenv("PROMTOOL");
	if (promtool == NULL || *promtool == '\0' || access(promtool, X_OK) != 0) {
		printf("promtool not found (PROMTOOL names none): skipped\n");
		return 77;
	}
	signal(SIGPIPE, SIG_IGN); /* a promtool that exits early is a failure */
	setvbuf(stdout, NULL, _IOLBF, 0);

	check_design(promtool, KWQ_IMPL_MUTEX, "mutex");
	check_design(promtool, KWQ_IMPL_SHARDED, "sharded");
	if (failures > 0) {
		printf("%d failure(s)\n", failures);
		return 1;
	}
	printf("promtool check metrics: every text accepted, every family non-zero\n");
	return 0;
}
