/*
 * examples/reconciler.c - a controller-style service on kwq, with its
 * metrics served to Prometheus.
 *
 * What it shows: the shape of a Kubernetes controller's work loop in C.
 * An event source (here: keys, one a line, from a file or standard input)
 * adds keys to a named queue ("reconcile"); a kwq_workers_start pool
 * reconciles them; failures are retried with per-key exponential backoff
 * (kwq_limiter_exponential, 1 ms doubling to 100 ms, so that the example
 * ends quickly) and given up after --max-attempts retries (on_give_up logs
 * them); the queue's client-go metrics are served on GET /metrics for a
 * Prometheus server to scrape.  The simulated reconcile takes --work-ms and
 *
 *   fail/...    fails every time: retried --max-attempts times, then given up
 *   flaky/...   fails once, then succeeds
 *   anything    else succeeds
 *
 * When the input ends, the service waits until every key has settled
 * (succeeded or been given up: pending retries included, which a shutdown
 * would drop), drains the queue (kwq_shutdown_drain), prints one summary
 * line, keeps serving /metrics for --linger-ms more milliseconds so that a
 * scraper can read the final values (SIGINT or SIGTERM ends the linger, or
 * the input, early), then joins the pool, closes the socket and frees the
 * queue.
 *
 * Run it (after `ninja -C build`):
 *
 *   printf 'default/web\nflaky/db\nfail/cache\n' |
 *       build/examples/reconciler --listen 127.0.0.1:0 --linger-ms 60000
 *
 * It prints "reconciler: serving http://127.0.0.1:PORT/metrics"; then
 * `curl http://127.0.0.1:PORT/metrics`, or Prometheus with
 * examples/prometheus.yml (its target is the default --listen address,
 * 127.0.0.1:9464).  tests/prometheus_scrape.py runs it against a real
 * Prometheus server (`meson test -C build --suite example`).
 *
 * Options: --workers N (4), --work-ms N (2), --max-attempts N (3),
 * --listen ADDR:PORT (127.0.0.1:9464; port 0 picks a free one),
 * --linger-ms N (0), and one optional input file ("-" or none: stdin).
 * --max-attempts 0 never gives up: fail/ keys are then retried (100 ms
 * apart at most) until SIGINT or SIGTERM.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <kwq.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000LL

/* ------------------------------------------------------------------------ */
/* Options                                                                   */

struct options {
	unsigned workers;
	long work_ms;
	int max_attempts;
	long linger_ms;
	struct sockaddr_in listen;
	const char *input; /* NULL: standard input */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: reconciler [--workers N] [--work-ms N] [--max-attempts N]\n"
		"                  [--listen ADDR:PORT] [--linger-ms N] [FILE|-]\n"
		"Reads keys, one a line, from FILE or standard input, reconciles them\n"
		"on a kwq worker pool and serves the queue's metrics on GET /metrics.\n");
}

/* A decimal integer in [lo, hi]; false if s is anything else. */
static bool parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* "A.B.C.D:PORT", the address numeric IPv4. */
static bool parse_listen(const char *s, struct sockaddr_in *sa)
{
	const char *colon = strrchr(s, ':');
	char host[INET_ADDRSTRLEN];
	long port;

	if (colon == NULL || (size_t)(colon - s) >= sizeof host)
		return false;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	if (!parse_long(colon + 1, 0, 65535, &port))
		return false;
	memset(sa, 0, sizeof *sa);
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1;
}

/* 0 on success, 2 on a usage error (printed), -1 for --help (printed). */
static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "workers", required_argument, NULL, 'w' },
		{ "work-ms", required_argument, NULL, 't' },
		{ "max-attempts", required_argument, NULL, 'm' },
		{ "listen", required_argument, NULL, 'l' },
		{ "linger-ms", required_argument, NULL, 'g' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long v;
	int c;

	o->workers = 4;
	o->work_ms = 2;
	o->max_attempts = 3;
	o->linger_ms = 0;
	o->input = NULL;
	if (!parse_listen("127.0.0.1:9464", &o->listen))
		return 2;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'w':
			if (!parse_long(optarg, 1, 1024, &v))
				goto bad;
			o->workers = (unsigned)v;
			break;
		case 't':
			if (!parse_long(optarg, 0, 60000, &o->work_ms))
				goto bad;
			break;
		case 'm':
			if (!parse_long(optarg, 0, 1000, &v))
				goto bad;
			o->max_attempts = (int)v;
			break;
		case 'l':
			if (!parse_listen(optarg, &o->listen))
				goto bad;
			break;
		case 'g':
			if (!parse_long(optarg, 0, 24L * 3600 * 1000, &o->linger_ms))
				goto bad;
			break;
		case 'h':
			usage(stdout);
			return -1;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind > 1) {
		fprintf(stderr, "reconciler: one input file at most\n");
		usage(stderr);
		return 2;
	}
	if (optind < argc && strcmp(argv[optind], "-") != 0)
		o->input = argv[optind];
	return 0;
bad:
	for (const struct option *lo = longopts; lo->name != NULL; lo++)
		if (lo->val == c)
			fprintf(stderr, "reconciler: bad value for --%s: %s\n", lo->name, optarg);
	usage(stderr);
	return 2;
}

/* ------------------------------------------------------------------------ */
/* Keys still pending                                                        */

/*
 * The service waits, once the input ends, until every key it added has
 * settled.  kwq_shutdown_drain alone would not do: it shuts the queue down
 * first, which drops the retries waiting on their backoff.  The queue
 * coalesces a key added again while it is queued, waiting or held, so the
 * count of pending keys cannot come from the lines read: this table keeps a
 * "pending" flag per distinct key, set by the add that starts a key's run
 * and cleared when the run settles (see settle()).
 */
struct key_slot {
	char *bytes; /* NULL: an empty slot */
	size_t len;
	uint64_t hash;
	bool pending;
};

struct key_table {
	struct key_slot *slots;
	size_t cap; /* a power of two */
	size_t used;
};

static uint64_t key_hash(const void *key, size_t len)
{
	const unsigned char *p = key;
	uint64_t h = 14695981039346656037ULL; /* FNV-1a */
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

/* The key's slot, or the empty slot where it would go. */
static struct key_slot *table_slot(struct key_slot *slots, size_t cap,
				   const void *key, size_t len, uint64_t h)
{
	for (size_t i = (size_t)h & (cap - 1);; i = (i + 1) & (cap - 1)) {
		struct key_slot *s = &slots[i];
		if (s->bytes == NULL ||
		    (s->hash == h && s->len == len && memcmp(s->bytes, key, len) == 0))
			return s;
	}
}

static int table_init(struct key_table *t)
{
	t->cap = 1024;
	t->used = 0;
	t->slots = calloc(t->cap, sizeof *t->slots);
	return t->slots == NULL ? -ENOMEM : 0;
}

/* The key's slot, or NULL when it is not in the table. */
static struct key_slot *table_find(struct key_table *t, const void *key, size_t len)
{
	struct key_slot *s = table_slot(t->slots, t->cap, key, len, key_hash(key, len));
	return s->bytes == NULL ? NULL : s;
}

/* The key's slot, inserted if new; NULL when out of memory. */
static struct key_slot *table_get(struct key_table *t, const void *key, size_t len)
{
	uint64_t h = key_hash(key, len);
	struct key_slot *s = table_slot(t->slots, t->cap, key, len, h);

	if (s->bytes != NULL)
		return s;
	if (2 * (t->used + 1) > t->cap) { /* keep the load at most 1/2 */
		size_t cap = 2 * t->cap;
		struct key_slot *slots = calloc(cap, sizeof *slots);
		if (slots == NULL)
			return NULL;
		for (size_t i = 0; i < t->cap; i++)
			if (t->slots[i].bytes != NULL)
				*table_slot(slots, cap, t->slots[i].bytes, t->slots[i].len,
					    t->slots[i].hash) = t->slots[i];
		free(t->slots);
		t->slots = slots;
		t->cap = cap;
		s = table_slot(slots, cap, key, len, h);
	}
	s->bytes = malloc(len > 0 ? len : 1);
	if (s->bytes == NULL)
		return NULL;
	memcpy(s->bytes, key, len);
	s->len = len;
	s->hash = h;
	s->pending = false;
	t->used++;
	return s;
}

static void table_free(struct key_table *t)
{
	for (size_t i = 0; i < t->cap; i++)
		free(t->slots[i].bytes);
	free(t->slots);
}

/* ------------------------------------------------------------------------ */
/* The service: the queue, the work function, the give-up callback          */

struct service {
	kwq_t *q;
	int64_t work_ns;
	int max_attempts;
	pthread_mutex_t lock;   /* keys, outstanding, stopping */
	pthread_cond_t changed; /* outstanding reached 0, or stopping was set */
	struct key_table keys;
	size_t outstanding;     /* keys whose flag is pending */
	atomic_bool stopping;   /* SIGINT or SIGTERM came (set under lock) */
	atomic_ulong processed; /* calls of the work function */
	atomic_ulong retried;   /* failures retried (not given up) */
	atomic_ulong given_up;  /* on_give_up calls */
};

/* Add a key read from the input, marking it pending if it starts a run. */
static int submit(struct service *s, const char *key, size_t len)
{
	int rc = -ENOMEM;

	pthread_mutex_lock(&s->lock);
	struct key_slot *k = table_get(&s->keys, key, len);
	if (k != NULL) {
		rc = kwq_add(s->q, key, len);
		if (rc == 0 && !k->pending) {
			k->pending = true;
			s->outstanding++;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/*
 * The held item's run ends here (it succeeded, or kwq_finish is about to
 * give it up).  If the key was added again while held, the done will queue
 * it again and it stays pending until that run settles.  submit() adds
 * under the same lock, so an add either made the item dirty before this
 * check, or comes after it and marks the key pending again itself.
 */
static void settle(struct service *s, kwq_item_t *item, const char *key, size_t len)
{
	pthread_mutex_lock(&s->lock);
	if (!kwq_item_dirty(s->q, item)) {
		struct key_slot *k = table_find(&s->keys, key, len);
		if (k != NULL && k->pending) {
			k->pending = false;
			if (--s->outstanding == 0)
				pthread_cond_broadcast(&s->changed);
		}
	}
	pthread_mutex_unlock(&s->lock);
}

static bool has_prefix(const char *key, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);
	return len >= n && memcmp(key, prefix, n) == 0;
}

static void sleep_ns(int64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* The pool's work function: a simulated reconcile of the held key. */
static enum kwq_outcome reconcile(void *ctx, kwq_item_t *item, int64_t *after_ns)
{
	struct service *s = ctx;
	size_t len;
	const char *key = kwq_item_key(item, &len);
	/* The key's failures so far.  Only kwq_finish of the held key changes
	 * the count, and the key is held here: it cannot move meanwhile. */
	int failures = kwq_num_requeues(s->q, key, len);
	bool ok;

	(void)after_ns; /* for KWQ_RETRY_AFTER only */
	atomic_fetch_add(&s->processed, 1);
	sleep_ns(s->work_ns);
	if (has_prefix(key, len, "fail/"))
		ok = false;
	else if (has_prefix(key, len, "flaky/"))
		ok = failures > 0;
	else
		ok = true;

	if (ok) {
		settle(s, item, key, len);
		return KWQ_OK; /* kwq_finish forgets the key's failures */
	}
	if (s->max_attempts > 0 && failures >= s->max_attempts)
		settle(s, item, key, len); /* kwq_finish gives up (gave_up) */
	else
		atomic_fetch_add(&s->retried, 1);
	return KWQ_RETRY; /* kwq_finish: kwq_add_rate_limited, or the give-up */
}

/* kwq_config.on_give_up: called by kwq_finish on the worker's thread. */
static void gave_up(void *ctx, const void *key, size_t len)
{
	struct service *s = ctx;

	atomic_fetch_add(&s->given_up, 1);
	fprintf(stderr, "reconciler: giving up on %.*s after %d retries\n",
		(int)len, (const char *)key, s->max_attempts);
}

/* ------------------------------------------------------------------------ */
/* GET /metrics                                                              */

/*
 * Plain POSIX sockets rather than an HTTP library: the service answers one
 * fixed GET from a scraper, which is about 100 lines here, while Debian's C
 * HTTP servers (libmicrohttpd, libevent's evhttp, libonion) would add a
 * build dependency and a library's worth of threading and configuration
 * to what is an example of the queue, not of HTTP.  Connections are
 * served one at a time on one thread, each closed after its answer, with a
 * 2 s timeout on reads and writes so that a stuck client cannot hold the
 * loop.  Real services keep their existing HTTP stack and call
 * kwq_metrics_prometheus from its handler.
 */
struct http {
	int listen_fd;
	int stop[2]; /* a pipe: a byte written to stop[1] ends the loop */
	kwq_t *q;
	pthread_t thread;
};

/* Write all n bytes: partial writes continued, EINTR retried. */
static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL); /* no SIGPIPE on a closed peer */
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int respond(int fd, int status, const char *reason, const char *type,
		   const char *extra, const char *body, size_t len)
{
	char head[512];
	int n = snprintf(head, sizeof head,
			 "HTTP/1.1 %d %s\r\n"
			 "Content-Type: %s\r\n"
			 "Content-Length: %zu\r\n"
			 "%s"
			 "Connection: close\r\n\r\n",
			 status, reason, type, len, extra);
	if (n < 0 || (size_t)n >= sizeof head)
		return -EOVERFLOW;
	int rc = send_all(fd, head, (size_t)n);
	return rc != 0 ? rc : send_all(fd, body, len);
}

static int respond_text(int fd, int status, const char *reason, const char *extra,
			const char *body)
{
	return respond(fd, status, reason, "text/plain; charset=utf-8", extra, body,
		       strlen(body));
}

/* The queue's exposition, as README.md's handler builds it: snprintf-style,
 * with a larger buffer when the stack one is too short. */
static int serve_metrics(int fd, kwq_t *q)
{
	char stack[8192], *text = stack;
	size_t cap = sizeof stack;
	int n = kwq_metrics_prometheus(q, text, cap);

	while (n >= 0 && (size_t)n >= cap) {
		if (text != stack)
			free(text);
		cap = (size_t)n + 256; /* counters may grow meanwhile */
		text = malloc(cap);
		if (text == NULL) {
			n = -ENOMEM;
			break;
		}
		n = kwq_metrics_prometheus(q, text, cap);
	}
	int rc;
	if (n >= 0)
		rc = respond(fd, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", "",
			     text, (size_t)n);
	else
		rc = respond_text(fd, 500, "Internal Server Error", "", kwq_strerror(n));
	if (text != stack)
		free(text);
	return rc;
}

/* The end of the request head ("\r\n\r\n", or a bare "\n\n"), or NULL. */
static const char *head_end(const char *buf, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if (buf[i] == '\n' && buf[i + 1] == '\n')
			return buf + i + 2;
		if (i + 3 < n && memcmp(buf + i, "\r\n\r\n", 4) == 0)
			return buf + i + 4;
	}
	return NULL;
}

/* Read one request head and answer it. */
static void serve_connection(int fd, kwq_t *q)
{
	char req[8192];
	size_t got = 0;
	struct timeval tv = { .tv_sec = 2, .tv_usec = 0 };

	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	/* The whole head is read before answering: closing a socket with unread
	 * bytes resets the connection, which may lose the answer. */
	while (head_end(req, got) == NULL) {
		if (got == sizeof req) {
			(void)respond_text(fd, 431, "Request Header Fields Too Large", "",
					   "request head too large\n");
			return;
		}
		ssize_t r = recv(fd, req + got, sizeof req - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return; /* closed, timed out or failed before a whole head */
		got += (size_t)r;
	}

	/* The request line: METHOD SP TARGET SP HTTP/1.x */
	char *line_end = memchr(req, '\n', got);
	*line_end = '\0';
	char *method = req;
	char *sp1 = strchr(method, ' ');
	char *target = sp1 != NULL ? sp1 + 1 : NULL;
	char *sp2 = target != NULL ? strchr(target, ' ') : NULL;
	if (sp1 == NULL || sp2 == NULL || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
		(void)respond_text(fd, 400, "Bad Request", "", "bad request\n");
		return;
	}
	*sp1 = '\0';
	*sp2 = '\0';
	if (strcmp(method, "GET") != 0) {
		(void)respond_text(fd, 405, "Method Not Allowed", "Allow: GET\r\n",
				   "only GET\n");
		return;
	}
	size_t plen = strcspn(target, "?");
	if (plen == strlen("/metrics") && memcmp(target, "/metrics", plen) == 0)
		(void)serve_metrics(fd, q);
	else
		(void)respond_text(fd, 404, "Not Found", "", "not found: try /metrics\n");
	(void)shutdown(fd, SHUT_WR);
}

static void *http_main(void *arg)
{
	struct http *h = arg;
	struct pollfd p[2] = {
		{ .fd = h->listen_fd, .events = POLLIN },
		{ .fd = h->stop[0], .events = POLLIN },
	};

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("reconciler: poll");
			break;
		}
		if (p[1].revents != 0)
			break; /* stopped */
		if (p[0].revents == 0)
			continue;
		/* The listening socket is non-blocking: a connection that went away
		 * between poll and accept gives EAGAIN, not a blocked accept that
		 * would miss the stop. */
		int fd = accept(h->listen_fd, NULL, NULL);
		if (fd < 0) {
			if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != ECONNABORTED) {
				perror("reconciler: accept");
				sleep_ns(10 * MS); /* EMFILE and the like: no busy loop */
			}
			continue;
		}
		int fl = fcntl(fd, F_GETFL);
		if (fl >= 0 && (fl & O_NONBLOCK) != 0) /* inherited on some systems */
			(void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
		serve_connection(fd, h->q);
		close(fd);
	}
	return NULL;
}

/* Bind and listen (the port written back to *sa), make the stop pipe.
 * 0 or a negative errno, with nothing left open. */
static int http_open(struct http *h, struct sockaddr_in *sa, kwq_t *q)
{
	int one = 1, rc;
	socklen_t salen = sizeof *sa;

	h->q = q;
	h->stop[0] = h->stop[1] = -1;
	h->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	if (h->listen_fd < 0)
		return -errno;
	if (setsockopt(h->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(h->listen_fd, (struct sockaddr *)sa, sizeof *sa) != 0 ||
	    listen(h->listen_fd, 16) != 0 ||
	    getsockname(h->listen_fd, (struct sockaddr *)sa, &salen) != 0 ||
	    fcntl(h->listen_fd, F_SETFL, fcntl(h->listen_fd, F_GETFL) | O_NONBLOCK) != 0 ||
	    pipe(h->stop) != 0) {
		rc = -errno;
		close(h->listen_fd);
		return rc;
	}
	return 0;
}

static void http_close(struct http *h)
{
	close(h->stop[0]);
	close(h->stop[1]);
	close(h->listen_fd);
}

static void http_stop(struct http *h)
{
	while (write(h->stop[1], "x", 1) < 0 && errno == EINTR)
		;
	pthread_join(h->thread, NULL);
	http_close(h);
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */

/*
 * SIGINT and SIGTERM: blocked in every thread and taken by one thread with
 * sigwait, which sets s->stopping, wakes the waits of main (the condition
 * variable) and the input loop (a pipe it polls beside the input).  No
 * asynchronous handler: nothing runs at an arbitrary point of a thread.
 */
struct stopper {
	struct service *s;
	sigset_t signals;
	int wake[2];      /* a pipe: a byte in wake[1] wakes read_keys */
	atomic_bool quit; /* main is done with it: the thread returns */
	pthread_t thread;
};

static void *stopper_main(void *arg)
{
	struct stopper *st = arg;

	for (;;) {
		int sig;
		if (sigwait(&st->signals, &sig) != 0)
			continue;
		if (atomic_load(&st->quit))
			return NULL;
		pthread_mutex_lock(&st->s->lock);
		atomic_store(&st->s->stopping, true);
		pthread_cond_broadcast(&st->s->changed);
		pthread_mutex_unlock(&st->s->lock);
		/* non-blocking: a full pipe already wakes the loop */
		while (write(st->wake[1], "x", 1) < 0 && errno == EINTR)
			;
	}
}

/* Ends the thread: the signal it waits for, with quit set. */
static void stopper_end(struct stopper *st)
{
	atomic_store(&st->quit, true);
	pthread_kill(st->thread, SIGTERM);
	pthread_join(st->thread, NULL);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void abs_deadline(struct timespec *ts, int64_t at_ns)
{
	ts->tv_sec = (time_t)(at_ns / 1000000000);
	ts->tv_nsec = (long)(at_ns % 1000000000);
}

/* One input line (its '\n' removed): a key to add. */
static void take_line(struct service *s, char *line, size_t len, unsigned long *nread,
		      unsigned long *refused)
{
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len == 0)
		return; /* blank line */
	if (len > KWQ_KEY_MAX) {
		fprintf(stderr, "reconciler: key of %zu bytes skipped (at most %d)\n", len,
			KWQ_KEY_MAX);
		++*refused;
		return;
	}
	++*nread;
	int rc = submit(s, line, len);
	if (rc != 0) {
		fprintf(stderr, "reconciler: add %.*s: %s\n", (int)len, line, kwq_strerror(rc));
		++*refused;
	}
}

/*
 * Read keys, one a line, from fd until its end or a stop; false on a read
 * error.  read(2) under poll(2) beside the stopper's pipe rather than
 * stdio, so that a signal ends a read blocked on a terminal or a pipe.
 */
static bool read_keys(int fd, struct stopper *st, unsigned long *nread,
		      unsigned long *refused)
{
	struct service *s = st->s;
	size_t cap = 4 * ((size_t)KWQ_KEY_MAX + 1), len = 0;
	char *buf = malloc(cap);
	bool skipping = false; /* inside a line longer than the buffer */
	bool ok = true;
	struct pollfd p[2] = {
		{ .fd = fd, .events = POLLIN },
		{ .fd = st->wake[0], .events = POLLIN },
	};

	if (buf == NULL) {
		fprintf(stderr, "reconciler: %s\n", kwq_strerror(-ENOMEM));
		return false;
	}
	while (!atomic_load(&s->stopping)) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("reconciler: poll");
			ok = false;
			break;
		}
		if (p[1].revents != 0)
			break; /* stopping */
		ssize_t r = read(fd, buf + len, cap - len);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			perror("reconciler: read");
			ok = false;
			break;
		}
		if (r == 0) { /* the end: a last line without '\n' too */
			if (skipping)
				++*refused;
			else if (len > 0)
				take_line(s, buf, len, nread, refused);
			break;
		}
		len += (size_t)r;
		size_t start = 0;
		char *nl;
		while ((nl = memchr(buf + start, '\n', len - start)) != NULL) {
			size_t end = (size_t)(nl - buf);
			if (skipping) {
				fprintf(stderr, "reconciler: key of over %zu bytes skipped\n", cap);
				++*refused;
				skipping = false;
			} else {
				take_line(s, buf + start, end - start, nread, refused);
			}
			start = end + 1;
		}
		memmove(buf, buf + start, len - start);
		len -= start;
		if (len == cap) { /* no '\n' in a full buffer: far too long a key */
			skipping = true;
			len = 0;
		}
	}
	free(buf);
	return ok;
}

/* Wait until every key added has settled, or a signal asks to stop.  (A
 * retry the pool could not record, -ENOMEM, would leave its key pending:
 * a signal ends the wait then.) */
static void wait_settled(struct service *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->outstanding > 0 && !atomic_load(&s->stopping))
		pthread_cond_wait(&s->changed, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

/* Keep serving ms milliseconds more, or until a signal. */
static void linger(struct service *s, long ms)
{
	struct timespec dl;

	abs_deadline(&dl, now_ns() + (int64_t)ms * MS);
	pthread_mutex_lock(&s->lock);
	while (!atomic_load(&s->stopping) &&
	       pthread_cond_timedwait(&s->changed, &s->lock, &dl) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&s->lock);
}

int main(int argc, char **argv)
{
	struct options o;
	int rc = parse_options(argc, argv, &o);
	if (rc != 0)
		return rc < 0 ? 0 : rc;

	int in = STDIN_FILENO;
	if (o.input != NULL && (in = open(o.input, O_RDONLY)) < 0) {
		perror(o.input);
		return 1;
	}

	/* Blocked before any thread is made: every thread inherits the mask
	 * (the queue's timer thread too, made by a worker), and only the
	 * stopper takes the signals. */
	struct stopper st = { .wake = { -1, -1 } };
	sigemptyset(&st.signals);
	sigaddset(&st.signals, SIGINT);
	sigaddset(&st.signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &st.signals, NULL);
	atomic_init(&st.quit, false);

	rc = 1;
	struct service s = { .work_ns = o.work_ms * MS, .max_attempts = o.max_attempts };
	st.s = &s;
	atomic_init(&s.stopping, false);
	atomic_init(&s.processed, 0);
	atomic_init(&s.retried, 0);
	atomic_init(&s.given_up, 0);
	pthread_condattr_t ca;
	if (pthread_condattr_init(&ca) != 0)
		goto out_input;
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	int err = pthread_cond_init(&s.changed, &ca);
	pthread_condattr_destroy(&ca);
	if (err != 0)
		goto out_input;
	if (pthread_mutex_init(&s.lock, NULL) != 0)
		goto out_cond;
	if (table_init(&s.keys) != 0) {
		fprintf(stderr, "reconciler: %s\n", kwq_strerror(-ENOMEM));
		goto out_mutex;
	}
	if (pipe(st.wake) != 0 ||
	    fcntl(st.wake[1], F_SETFL, fcntl(st.wake[1], F_GETFL) | O_NONBLOCK) != 0) {
		perror("reconciler: pipe");
		goto out_pipe;
	}
	err = pthread_create(&st.thread, NULL, stopper_main, &st);
	if (err != 0) {
		fprintf(stderr, "reconciler: pthread_create: %s\n", strerror(err));
		goto out_pipe;
	}

	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.name = "reconcile"; /* named: it keeps metrics, label name="reconcile" */
	cfg.max_attempts = o.max_attempts;
	cfg.on_give_up = gave_up;
	cfg.give_up_ctx = &s;
	cfg.limiter = kwq_limiter_exponential(1 * MS, 100 * MS);
	if (cfg.limiter == NULL) {
		perror("reconciler: kwq_limiter_exponential");
		goto out_stopper;
	}
	s.q = kwq_new(&cfg); /* owns the limiter from here on, also on failure */
	if (s.q == NULL) {
		perror("reconciler: kwq_new");
		goto out_stopper;
	}

	struct http h;
	err = http_open(&h, &o.listen, s.q);
	if (err != 0) {
		fprintf(stderr, "reconciler: listen: %s\n", strerror(-err));
		goto out_queue;
	}
	err = pthread_create(&h.thread, NULL, http_main, &h);
	if (err != 0) {
		fprintf(stderr, "reconciler: pthread_create: %s\n", strerror(err));
		http_close(&h);
		goto out_queue;
	}
	kwq_workers_t *w = kwq_workers_start(s.q, o.workers, reconcile, &s);
	if (w == NULL) {
		perror("reconciler: kwq_workers_start");
		goto out_http;
	}

	char addr[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &o.listen.sin_addr, addr, sizeof addr);
	printf("reconciler: serving http://%s:%u/metrics\n", addr,
	       (unsigned)ntohs(o.listen.sin_port));
	fflush(stdout);

	unsigned long nread = 0, refused = 0;
	bool read_ok = read_keys(in, &st, &nread, &refused);
	wait_settled(&s);
	kwq_shutdown_drain(s.q); /* nothing is waiting now: nothing is dropped */

	printf("reconciler: %lu keys read, %lu processed, %lu retried, %lu given up\n",
	       nread, (unsigned long)atomic_load(&s.processed),
	       (unsigned long)atomic_load(&s.retried),
	       (unsigned long)atomic_load(&s.given_up));
	fflush(stdout);
	if (atomic_load(&s.stopping))
		fprintf(stderr, "reconciler: stopped by a signal\n");
	else if (o.linger_ms > 0)
		linger(&s, o.linger_ms);
	rc = read_ok && refused == 0 ? 0 : 1;

	kwq_workers_join(w);
out_http:
	http_stop(&h);
out_queue:
	kwq_free(s.q);
out_stopper:
	stopper_end(&st);
out_pipe:
	if (st.wake[0] >= 0) {
		close(st.wake[0]);
		close(st.wake[1]);
	}
	table_free(&s.keys);
out_mutex:
	pthread_mutex_destroy(&s.lock);
out_cond:
	pthread_cond_destroy(&s.changed);
out_input:
	if (in != STDIN_FILENO)
		close(in);
	return rc;
}
