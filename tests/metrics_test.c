/*
 * metrics_test.c - client-go's workqueue metrics (the header's metrics contract), run
 * against one implementation, as a row of a table:
 *
 *   metrics_test ROW     runs every case on one row ("mutex", "sharded")
 *
 * Values are checked exactly on a fake clock.  Every Prometheus text the
 * cases produce goes through a strict parser of the text format written
 * here, and through `promtool check metrics` when the environment names it
 * in PROMTOOL.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <kwq.h>

#include "rows.h"

#define US 1000LL
#define MS 1000000LL
#define SEC 1000000000LL


/* kwq_len once the timer thread has added what became due (10 s at most). */
static size_t wait_len(kwq_t *q, size_t want)
{
	for (int i = 0; i < 10000 && kwq_len(q) < want; i++)
		pause_ms(1);
	return kwq_len(q);
}

#define ADDS(q, s) kwq_add((q), (s), strlen(s))

#define READ(q, m)                                                              \
	do {                                                                    \
		*(m) = (struct kwq_metrics){ .size = sizeof(struct kwq_metrics) }; \
		CHECK_EQ(kwq_metrics_read((q), (m)), 0);                          \
	} while (0)

/* Get the head without blocking and check its key. */
#define CHECK_GET(q, s, out)                                                    \
	do {                                                                    \
		kwq_item_t *it_ = NULL;                                          \
		CHECK_EQ(kwq_try_get((q), &it_), 0);                              \
		size_t l_;                                                       \
		const void *k_ = kwq_item_key(it_, &l_);                          \
		CHECK_MEM(k_, l_, (s), strlen(s));                                \
		*(out) = it_;                                                    \
	} while (0)

/* Doubles that must be equal to the last bit. */
#define CHECK_DBL(a, b)                                                         \
	do {                                                                    \
		double da_ = (a), db_ = (b);                                     \
		if (!(da_ == db_)) {                                             \
			TAP_FAIL_AT("CHECK_DBL(%s, %s): %.17g vs %.17g", #a, #b,   \
				    da_, db_);                                   \
			return;                                                  \
		}                                                                \
	} while (0)

/* ------------------------------------------- a strict text-format parser */

/*
 * The Prometheus text exposition format 0.0.4, read strictly: every line
 * is "# HELP", "# TYPE" or a sample and ends in '\n'; names and label
 * names match the format's patterns; a label value uses only the escapes
 * \\, \" and \n; a value is a Go float (or NaN, +Inf, -Inf); no timestamp
 * here (kwq writes none).  A family has at most one HELP and one TYPE,
 * both before its samples, which are contiguous; no series repeats.  Each
 * queue's histogram (a family may hold several) has buckets with
 * increasing le ending in +Inf, non-decreasing counts, +Inf equal to
 * _count, and a _sum.
 */

#define MAX_SAMPLES 512 /* 12 queues of 33 samples (prometheus_all) */
#define MAX_FAMILIES 16

struct sample {
	char family[80];
	char name[96];          /* sample name: family plus _bucket etc. */
	char qname[256];        /* the decoded name label */
	char le[32];            /* the le label, or "" */
	double value;
};

struct doc {
	struct sample s[MAX_SAMPLES];
	size_t n;
	struct {
		char name[80];
		char type[16];
		bool help, samples;
	} fam[MAX_FAMILIES];
	size_t nfam;
	char err[160];
};

/* Copy a string that must fit. */
static bool copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);
	if (n >= cap)
		return false;
	memcpy(dst, src, n + 1);
	return true;
}

static bool name_start(char c, bool colon)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
}

static bool name_char(char c, bool colon)
{
	return name_start(c, colon) || (c >= '0' && c <= '9');
}

/* A name at *p up to the first non-name character; false if none. */
static bool parse_name(const char **p, char *out, size_t cap, bool colon)
{
	const char *s = *p;
	size_t n = 0;
	if (!name_start(*s, colon))
		return false;
	while (name_char(s[n], colon))
		n++;
	if (n >= cap)
		return false;
	memcpy(out, s, n);
	out[n] = '\0';
	*p = s + n;
	return true;
}

/* A Go float: [+-]digits[.digits][e[+-]digits], or NaN, +Inf, -Inf. */
static bool parse_value(const char *s, size_t len, double *v)
{
	char buf[64];
	if (len == 0 || len >= sizeof buf)
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (strcmp(buf, "NaN") == 0) {
		*v = NAN;
		return true;
	}
	if (strcmp(buf, "+Inf") == 0 || strcmp(buf, "-Inf") == 0) {
		*v = buf[0] == '+' ? INFINITY : -INFINITY;
		return true;
	}
	size_t i = 0;
	if (buf[i] == '+' || buf[i] == '-')
		i++;
	size_t digits = 0;
	while (buf[i] >= '0' && buf[i] <= '9')
		i++, digits++;
	if (buf[i] == '.') {
		i++;
		while (buf[i] >= '0' && buf[i] <= '9')
			i++, digits++;
	}
	if (digits == 0)
		return false;
	if (buf[i] == 'e' || buf[i] == 'E') {
		i++;
		if (buf[i] == '+' || buf[i] == '-')
			i++;
		if (!(buf[i] >= '0' && buf[i] <= '9'))
			return false;
		while (buf[i] >= '0' && buf[i] <= '9')
			i++;
	}
	if (buf[i] != '\0')
		return false;
	char *end;
	*v = strtod(buf, &end);
	return *end == '\0';
}

static int fam_find(struct doc *d, const char *name)
{
	for (size_t i = 0; i < d->nfam; i++)
		if (strcmp(d->fam[i].name, name) == 0)
			return (int)i;
	return -1;
}

static int fam_get(struct doc *d, const char *name)
{
	int i = fam_find(d, name);
	if (i >= 0 || d->nfam == MAX_FAMILIES)
		return i;
	snprintf(d->fam[d->nfam].name, sizeof d->fam[0].name, "%s", name);
	return (int)d->nfam++;
}

/* The family a sample name belongs to: a histogram's suffixes stripped. */
static int fam_of_sample(struct doc *d, const char *name)
{
	static const char *const suffix[] = { "_bucket", "_sum", "_count" };
	int f = fam_find(d, name);
	if (f >= 0 && strcmp(d->fam[f].type, "histogram") != 0)
		return f;
	for (size_t i = 0; i < 3; i++) {
		size_t n = strlen(name), m = strlen(suffix[i]);
		if (n > m && strcmp(name + n - m, suffix[i]) == 0) {
			char base[80];
			snprintf(base, sizeof base, "%.*s", (int)(n - m), name);
			int h = fam_find(d, base);
			if (h >= 0 && strcmp(d->fam[h].type, "histogram") == 0)
				return h;
		}
	}
	return f;
}

#define PARSE_FAIL(d, line, ...)                                                \
	do {                                                                    \
		int o_ = snprintf((d)->err, sizeof (d)->err, "line %d: ", (line)); \
		snprintf((d)->err + o_, sizeof (d)->err - (size_t)o_, __VA_ARGS__); \
		return false;                                                    \
	} while (0)

static bool parse_sample(struct doc *d, const char *s, const char *eol, int line)
{
	if (d->n == MAX_SAMPLES)
		PARSE_FAIL(d, line, "too many samples");
	struct sample *x = &d->s[d->n];
	memset(x, 0, sizeof *x);
	if (!parse_name(&s, x->name, sizeof x->name, true))
		PARSE_FAIL(d, line, "bad metric name");
	bool has_name = false;
	if (*s == '{') {
		s++;
		while (*s != '}') {
			char lname[64], val[256];
			size_t vn = 0;
			if (!parse_name(&s, lname, sizeof lname, false))
				PARSE_FAIL(d, line, "bad label name");
			if (s[0] != '=' || s[1] != '"')
				PARSE_FAIL(d, line, "expected =\" after %s", lname);
			s += 2;
			for (; *s != '"'; s++) {
				char c = *s;
				if (s >= eol)
					PARSE_FAIL(d, line, "unterminated label value");
				if (c == '\\') {
					s++;
					c = *s == '\\' ? '\\' : *s == '"' ? '"' : *s == 'n' ? '\n' : 0;
					if (c == 0)
						PARSE_FAIL(d, line, "bad escape \\%c", *s);
				}
				if (vn + 1 >= sizeof val)
					PARSE_FAIL(d, line, "label value too long");
				val[vn++] = c;
			}
			val[vn] = '\0';
			s++;
			if (strcmp(lname, "name") == 0) {
				if (has_name)
					PARSE_FAIL(d, line, "name label twice");
				has_name = true;
				if (!copy_str(x->qname, sizeof x->qname, val))
					PARSE_FAIL(d, line, "name label too long");
			} else if (strcmp(lname, "le") == 0) {
				if (x->le[0] != '\0')
					PARSE_FAIL(d, line, "le label twice");
				if (!copy_str(x->le, sizeof x->le, val))
					PARSE_FAIL(d, line, "le label too long");
			} else {
				PARSE_FAIL(d, line, "unexpected label %s", lname);
			}
			if (*s == ',')
				s++;
			else if (*s != '}')
				PARSE_FAIL(d, line, "expected , or }");
		}
		s++;
	}
	if (*s != ' ')
		PARSE_FAIL(d, line, "expected a space before the value");
	s++;
	if (!parse_value(s, (size_t)(eol - s), &x->value))
		PARSE_FAIL(d, line, "bad value \"%.*s\"", (int)(eol - s), s);
	if (!has_name)
		PARSE_FAIL(d, line, "no name label");

	int f = fam_of_sample(d, x->name);
	if (f < 0 || d->fam[f].type[0] == '\0')
		PARSE_FAIL(d, line, "sample %s before its TYPE", x->name);
	copy_str(x->family, sizeof x->family, d->fam[f].name); /* same size */
	bool hist = strcmp(d->fam[f].type, "histogram") == 0;
	bool bucket = hist && strcmp(x->name + strlen(x->family), "_bucket") == 0;
	if (bucket != (x->le[0] != '\0'))
		PARSE_FAIL(d, line, "le label on a non-bucket, or a bucket without it");
	if (hist && strcmp(x->name, x->family) == 0)
		PARSE_FAIL(d, line, "histogram sample without a suffix");
	if (d->n > 0 && strcmp(d->s[d->n - 1].family, x->family) != 0 && d->fam[f].samples)
		PARSE_FAIL(d, line, "family %s is not contiguous", x->family);
	for (size_t i = 0; i < d->n; i++) {
		if (strcmp(d->s[i].name, x->name) == 0 && strcmp(d->s[i].qname, x->qname) == 0 &&
		    strcmp(d->s[i].le, x->le) == 0)
			PARSE_FAIL(d, line, "series %s repeated", x->name);
	}
	d->fam[f].samples = true;
	d->n++;
	return true;
}

/* Whether sample i is the first of its family and name label. */
static bool first_of_series(const struct doc *d, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (strcmp(d->s[j].family, d->s[i].family) == 0 &&
		    strcmp(d->s[j].qname, d->s[i].qname) == 0)
			return false;
	return true;
}

/* Each histogram of each queue (a family may hold several queues'). */
static bool check_histograms(struct doc *d)
{
	for (size_t f = 0; f < d->nfam; f++) {
		if (strcmp(d->fam[f].type, "histogram") != 0)
			continue;
		for (size_t first = 0; first < d->n; first++) {
			if (strcmp(d->s[first].family, d->fam[f].name) != 0 ||
			    !first_of_series(d, first))
				continue;
			const char *qname = d->s[first].qname;
			double prev_le = -INFINITY, prev_count = 0, inf = -1, count = -1;
			bool sum = false;
			for (size_t i = first; i < d->n; i++) {
				struct sample *x = &d->s[i];
				if (strcmp(x->family, d->fam[f].name) != 0 ||
				    strcmp(x->qname, qname) != 0)
					continue;
				const char *suffix = x->name + strlen(x->family);
				if (strcmp(suffix, "_bucket") == 0) {
					double le;
					if (!parse_value(x->le, strlen(x->le), &le) ||
					    !(le > prev_le) || inf >= 0)
						PARSE_FAIL(d, 0, "%s: le=\"%s\" out of order",
							   x->family, x->le);
					if (x->value < prev_count)
						PARSE_FAIL(d, 0, "%s: buckets not cumulative",
							   x->family);
					prev_le = le;
					prev_count = x->value;
					if (isinf(le))
						inf = x->value;
				} else if (strcmp(suffix, "_sum") == 0) {
					sum = true;
				} else if (strcmp(suffix, "_count") == 0) {
					count = x->value;
				}
			}
			if (inf < 0 || count < 0 || !sum || inf != count)
				PARSE_FAIL(d, 0,
					   "%s: +Inf bucket, _sum or _count missing or unequal",
					   d->fam[f].name);
		}
	}
	return true;
}

static bool parse_text(const char *text, size_t len, struct doc *d)
{
	memset(d, 0, sizeof *d);
	if (strlen(text) != len)
		PARSE_FAIL(d, 0, "a NUL inside the text");
	if (len > 0 && text[len - 1] != '\n')
		PARSE_FAIL(d, 0, "the last line does not end in a newline");
	int line = 0;
	for (const char *s = text; *s != '\0';) {
		const char *eol = strchr(s, '\n');
		line++;
		if (eol == s)
			PARSE_FAIL(d, line, "empty line");
		if (s[0] == '#') {
			bool help = strncmp(s, "# HELP ", 7) == 0;
			bool type = strncmp(s, "# TYPE ", 7) == 0;
			if (!help && !type)
				PARSE_FAIL(d, line, "a comment other than HELP or TYPE");
			const char *p = s + 7;
			char name[80];
			if (!parse_name(&p, name, sizeof name, true) || *p != ' ')
				PARSE_FAIL(d, line, "bad name in a HELP or TYPE line");
			p++;
			int f = fam_get(d, name);
			if (f < 0)
				PARSE_FAIL(d, line, "too many families");
			if (d->fam[f].samples)
				PARSE_FAIL(d, line, "%s after samples of %s", help ? "HELP" : "TYPE", name);
			if (help) {
				if (d->fam[f].help)
					PARSE_FAIL(d, line, "second HELP for %s", name);
				d->fam[f].help = true;
				for (; p < eol; p++) {
					if (*p == '\\' && p[1] != '\\' && p[1] != 'n')
						PARSE_FAIL(d, line, "bad escape in HELP");
					if (*p == '\\')
						p++;
				}
			} else {
				size_t n = (size_t)(eol - p);
				static const char *const types[] = { "counter", "gauge", "histogram",
								     "summary", "untyped" };
				bool ok = false;
				for (size_t i = 0; i < 5; i++)
					ok |= n == strlen(types[i]) && strncmp(p, types[i], n) == 0;
				if (!ok)
					PARSE_FAIL(d, line, "bad TYPE");
				if (d->fam[f].type[0] != '\0')
					PARSE_FAIL(d, line, "second TYPE for %s", name);
				snprintf(d->fam[f].type, sizeof d->fam[f].type, "%.*s", (int)n, p);
			}
		} else if (!parse_sample(d, s, eol, line)) {
			return false;
		}
		s = eol + 1;
	}
	for (size_t f = 0; f < d->nfam; f++) {
		if (!d->fam[f].help || d->fam[f].type[0] == '\0' || !d->fam[f].samples)
			PARSE_FAIL(d, 0, "family %s lacks HELP, TYPE or samples", d->fam[f].name);
	}
	return check_histograms(d);
}

/* The value of a sample, or NAN. */
static double doc_value(const struct doc *d, const char *name, const char *le)
{
	for (size_t i = 0; i < d->n; i++) {
		if (strcmp(d->s[i].name, name) == 0 && strcmp(d->s[i].le, le) == 0)
			return d->s[i].value;
	}
	return NAN;
}

/* `promtool check metrics` on the text, when PROMTOOL names it: 0 = passed
 * or not run. */
static int promtool_check(const char *text)
{
	const char *promtool = getenv("PROMTOOL");
	if (promtool == NULL || *promtool == '\0')
		return 0;
	char path[] = "/tmp/kwq-metrics-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0)
		return -1;
	size_t len = strlen(text);
	bool ok = write(fd, text, len) == (ssize_t)len;
	close(fd);
	int rc = -1;
	if (ok) {
		char cmd[512];
		snprintf(cmd, sizeof cmd, "'%s' check metrics < '%s' 2>&1", promtool, path);
		FILE *p = popen(cmd, "r");
		if (p != NULL) {
			char line[256];
			while (fgets(line, sizeof line, p) != NULL)
				printf("# promtool: %s", line);
			int st = pclose(p);
			rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		}
	}
	unlink(path);
	return rc;
}

/* The queue's whole text, parsed strictly and checked by promtool. */
#define PROM_TEXT(q, text, cap, doc)                                            \
	do {                                                                    \
		int n_ = kwq_metrics_prometheus((q), (text), (cap));             \
		CHECK_INT(n_, >, 0);                                             \
		CHECK_INT((size_t)n_, <, (cap));                                 \
		CHECK_EQ(strlen(text), n_);                                      \
		if (!parse_text((text), (size_t)n_, (doc))) {                    \
			TAP_FAIL_AT("strict parser: %s", (doc)->err);              \
			return;                                                  \
		}                                                                \
		CHECK_EQ(promtool_check(text), 0);                                \
	} while (0)

/* ------------------------------------------------------------- cases */

/* The parser is a check only if it rejects: each text breaks one rule. */
static void t_strict_parser_rejects(void)
{
	static const char *const bad[] = {
		/* sample before TYPE */
		"a_total{name=\"x\"} 1\n",
		/* no HELP */
		"# TYPE a_total counter\na_total{name=\"x\"} 1\n",
		/* HELP after samples */
		"# TYPE a gauge\na{name=\"x\"} 1\n# HELP a h\n",
		/* second TYPE */
		"# HELP a h\n# TYPE a gauge\n# TYPE a gauge\na{name=\"x\"} 1\n",
		/* bad escape in a label value */
		"# HELP a h\n# TYPE a gauge\na{name=\"x\\t\"} 1\n",
		/* raw newline inside a label value */
		"# HELP a h\n# TYPE a gauge\na{name=\"x\ny\"} 1\n",
		/* bad value */
		"# HELP a h\n# TYPE a gauge\na{name=\"x\"} 0x10\n",
		"# HELP a h\n# TYPE a gauge\na{name=\"x\"} inf\n",
		/* no final newline */
		"# HELP a h\n# TYPE a gauge\na{name=\"x\"} 1",
		/* empty line */
		"# HELP a h\n\n# TYPE a gauge\na{name=\"x\"} 1\n",
		/* repeated series */
		"# HELP a h\n# TYPE a gauge\na{name=\"x\"} 1\na{name=\"x\"} 2\n",
		/* bad metric name */
		"# HELP a h\n# TYPE a gauge\n1a{name=\"x\"} 1\n",
		/* histogram: +Inf differs from _count */
		"# HELP h h\n# TYPE h histogram\nh_bucket{name=\"x\",le=\"1\"} 1\n"
		"h_bucket{name=\"x\",le=\"+Inf\"} 2\nh_sum{name=\"x\"} 1\nh_count{name=\"x\"} 3\n",
		/* histogram: not cumulative */
		"# HELP h h\n# TYPE h histogram\nh_bucket{name=\"x\",le=\"1\"} 2\n"
		"h_bucket{name=\"x\",le=\"+Inf\"} 1\nh_sum{name=\"x\"} 1\nh_count{name=\"x\"} 1\n",
		/* histogram: le out of order */
		"# HELP h h\n# TYPE h histogram\nh_bucket{name=\"x\",le=\"1\"} 0\n"
		"h_bucket{name=\"x\",le=\"0.1\"} 0\nh_bucket{name=\"x\",le=\"+Inf\"} 0\n"
		"h_sum{name=\"x\"} 0\nh_count{name=\"x\"} 0\n",
		/* two queues: a family again after another */
		"# HELP a h\n# TYPE a gauge\na{name=\"x\"} 1\n# HELP b h\n# TYPE b gauge\n"
		"b{name=\"x\"} 1\na{name=\"y\"} 1\n",
		/* two queues: a series repeated after the other's */
		"# HELP a h\n# TYPE a gauge\na{name=\"x\"} 1\na{name=\"y\"} 1\na{name=\"x\"} 1\n",
		/* two queues: the second's histogram lacks its +Inf bucket */
		"# HELP h h\n# TYPE h histogram\nh_bucket{name=\"x\",le=\"+Inf\"} 1\n"
		"h_sum{name=\"x\"} 1\nh_count{name=\"x\"} 1\nh_bucket{name=\"y\",le=\"1\"} 1\n"
		"h_sum{name=\"y\"} 1\nh_count{name=\"y\"} 1\n",
		/* histogram: no _sum */
		"# HELP h h\n# TYPE h histogram\nh_bucket{name=\"x\",le=\"+Inf\"} 0\n"
		"h_count{name=\"x\"} 0\n",
	};
	static const char good[] =
		"# HELP a h \\\\ \\n\n# TYPE a gauge\na{name=\"x\\\\\\\"\\n\"} -1.5e-07\n"
		"# HELP h h\n# TYPE h histogram\nh_bucket{name=\"x\",le=\"1\"} 1\n"
		"h_bucket{name=\"x\",le=\"+Inf\"} 2\nh_sum{name=\"x\"} 3\nh_count{name=\"x\"} 2\n"
		"h_bucket{name=\"y\",le=\"1\"} 0\nh_bucket{name=\"y\",le=\"+Inf\"} 0\n"
		"h_sum{name=\"y\"} 0\nh_count{name=\"y\"} 0\n";
	static struct doc doc;

	CHECK(parse_text(good, strlen(good), &doc));
	CHECK_MEM(doc.s[0].qname, strlen(doc.s[0].qname), "x\\\"\n", 4);
	CHECK_DBL(doc.s[0].value, -1.5e-07);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (parse_text(bad[i], strlen(bad[i]), &doc)) {
			TAP_FAIL_AT("accepted bad text %zu", i);
			return;
		}
	}
}

/* client-go metrics_test.go TestMetrics, step by step, its values exactly */
static void t_client_go_test_metrics(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue("test", c, NULL);
	struct kwq_metrics m;
	kwq_item_t *i;

	CHECK_EQ(ADDS(q, "foo"), 0);
	READ(q, &m);
	CHECK_EQ(m.adds_total, 1);
	CHECK_EQ(m.depth, 1);

	kwq_clock_fake_step(c, 50 * US);
	CHECK_GET(q, "foo", &i);
	READ(q, &m);
	CHECK_DBL(m.queue_duration.sum_seconds, 5e-05); /* the observation */
	CHECK_EQ(m.queue_duration.count, 1);

	/* Added back while processing: counted once, de-duped after. */
	for (int k = 0; k < 5; k++)
		CHECK_EQ(ADDS(q, "foo"), 0);
	READ(q, &m);
	CHECK_EQ(m.adds_total, 2);
	CHECK_EQ(m.depth, 1);

	kwq_clock_fake_step(c, 25 * US);
	CHECK_EQ(kwq_done(q, i), 0);
	READ(q, &m);
	CHECK_DBL(m.work_duration.sum_seconds, 2.5e-05);
	CHECK_EQ(m.work_duration.count, 1);
	CHECK_EQ(m.depth, 1);

	CHECK_GET(q, "foo", &i);
	READ(q, &m);
	/* the second observation is 2.5e-05: both are below 1e-4, above 1e-5 */
	CHECK_EQ(m.queue_duration.count, 2);
	CHECK_DBL(m.queue_duration.sum_seconds, 7.5e-05);
	CHECK_EQ(m.queue_duration.le[3], 0);
	CHECK_EQ(m.queue_duration.le[4], 2);
	CHECK_EQ(m.depth, 0);

	kwq_clock_fake_step(c, 1 * MS);
	READ(q, &m);
	CHECK_DBL(m.unfinished_work_seconds, .001);
	CHECK_DBL(m.longest_running_processor_seconds, .001);

	CHECK_EQ(kwq_done(q, i), 0);
	READ(q, &m);
	/* the second observation is .001: the 1e-3 bucket, not the 1e-4 one */
	CHECK_EQ(m.work_duration.count, 2);
	CHECK_DBL(m.work_duration.sum_seconds, 2.5e-05 + .001);
	CHECK_EQ(m.work_duration.le[4], 1);
	CHECK_EQ(m.work_duration.le[5], 2);
	CHECK_DBL(m.unfinished_work_seconds, 0);
	CHECK_DBL(m.longest_running_processor_seconds, 0);
	CHECK_EQ(m.adds_total, 2);
	CHECK_EQ(m.depth, 0);
	CHECK_EQ(m.retries_total, 0);
	kwq_free(q);
	kwq_clock_free(c);
}

/* A duration equal to a bound is in that bucket (le is inclusive); one
 * nanosecond more is in the next; above 10 s only in +Inf. */
static void t_histogram_bounds(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(1000);
	kwq_t *q = row_queue("bounds", c, NULL);
	struct kwq_metrics m;
	kwq_item_t *i;
	int64_t bound = 10; /* 1e-8 s */

	for (unsigned b = 0; b < KWQ_HIST_BUCKETS; b++, bound *= 10) {
		for (int64_t d = bound; d <= bound + 1; d++) {
			READ(q, &m);
			struct kwq_histogram before = m.queue_duration;
			CHECK_EQ(ADDS(q, "k"), 0);
			kwq_clock_fake_step(c, d);
			CHECK_GET(q, "k", &i);
			CHECK_EQ(kwq_done(q, i), 0);
			READ(q, &m);
			/* d == bound lands in bucket b, d == bound + 1 in b + 1 */
			unsigned want = d == bound ? b : b + 1;
			for (unsigned j = 0; j < KWQ_HIST_BUCKETS; j++)
				CHECK_EQ(m.queue_duration.le[j] - before.le[j], j >= want);
			CHECK_EQ(m.queue_duration.count - before.count, 1);
		}
	}
	/* a zero duration is in the first bucket */
	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &i);
	CHECK_EQ(kwq_done(q, i), 0);
	READ(q, &m);
	CHECK_EQ(m.queue_duration.le[0], 2);
	CHECK_EQ(m.work_duration.le[0], 2 * KWQ_HIST_BUCKETS + 1);

	/* cumulative: every bucket holds the ones below it */
	for (unsigned j = 1; j < KWQ_HIST_BUCKETS; j++)
		CHECK_INT(m.queue_duration.le[j], >=, m.queue_duration.le[j - 1]);
	CHECK_EQ(m.queue_duration.le[KWQ_HIST_BUCKETS - 1], 2 * KWQ_HIST_BUCKETS);
	CHECK_EQ(m.queue_duration.count, 2 * KWQ_HIST_BUCKETS + 1);
	for (unsigned j = 0; j < KWQ_HIST_BUCKETS; j++)
		CHECK_EQ(m.queue_duration.le[j], 2 * j + 2);

	/* the same buckets for work durations: exactly 1 ms, then 10 s + 1 ns */
	CHECK_EQ(ADDS(q, "w"), 0);
	CHECK_GET(q, "w", &i);
	kwq_clock_fake_step(c, 1 * MS);
	CHECK_EQ(kwq_done(q, i), 0);
	CHECK_EQ(ADDS(q, "w"), 0);
	CHECK_GET(q, "w", &i);
	kwq_clock_fake_step(c, 10 * SEC + 1);
	CHECK_EQ(kwq_done(q, i), 0);
	struct kwq_histogram before = m.work_duration;
	READ(q, &m);
	CHECK_EQ(m.work_duration.le[4] - before.le[4], 0);
	CHECK_EQ(m.work_duration.le[5] - before.le[5], 1);
	CHECK_EQ(m.work_duration.le[KWQ_HIST_BUCKETS - 1] - before.le[KWQ_HIST_BUCKETS - 1], 1);
	CHECK_EQ(m.work_duration.count - before.count, 2);
	CHECK_DBL(m.work_duration.sum_seconds - before.sum_seconds, 10.001000001);
	kwq_free(q);
	kwq_clock_free(c);
}

/* depth counts queued and held+dirty items: it can exceed kwq_len */
static void t_depth_counts_dirty(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue("depth", c, NULL);
	struct kwq_metrics m;
	kwq_item_t *a, *b;
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_EQ(ADDS(q, "b"), 0); /* queued: not counted */
	o.priority = 5;
	CHECK_EQ(kwq_add_with(q, "b", 1, &o), 0); /* a raise: not counted */
	READ(q, &m);
	CHECK_EQ(m.depth, 2);
	CHECK_EQ(m.adds_total, 2);
	CHECK_GET(q, "b", &b);
	CHECK_GET(q, "a", &a);
	READ(q, &m);
	CHECK_EQ(m.depth, 0);
	CHECK_EQ(ADDS(q, "a"), 0); /* held -> held+dirty: counted */
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	CHECK_EQ(ADDS(q, "c"), 0);
	READ(q, &m);
	CHECK_EQ(m.depth, 3);
	CHECK_EQ(kwq_len(q), 1);
	CHECK_EQ(m.adds_total, 5);
	/* done re-queues a: depth already counted it */
	CHECK_EQ(kwq_done(q, a), 0);
	READ(q, &m);
	CHECK_EQ(m.depth, 3);
	CHECK_EQ(kwq_len(q), 2);
	CHECK_EQ(m.adds_total, 5);
	CHECK_EQ(kwq_done(q, b), 0);
	CHECK_EQ(kwq_len(q), 3);
	READ(q, &m);
	CHECK_EQ(m.depth, 3);
	CHECK_EQ(m.work_duration.count, 2);
	CHECK_EQ(m.queue_duration.count, 2);
	kwq_free(q);
	kwq_clock_free(c);
}

/* A re-add of a held item (held -> held+dirty) starts its next queue
 * duration; its work still runs from its get: the unfinished-work gauges
 * and the work duration of its done count from there. */
static void t_readd_keeps_work_time(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue("readd", c, NULL);
	struct kwq_metrics m;
	kwq_item_t *a;

	CHECK_EQ(ADDS(q, "a"), 0);
	kwq_clock_fake_step(c, 1 * SEC);
	CHECK_GET(q, "a", &a);            /* queued 1 s; work from t = 1 s */
	kwq_clock_fake_step(c, 1 * SEC);
	CHECK_EQ(ADDS(q, "a"), 0);        /* t = 2 s: held -> held+dirty */
	kwq_clock_fake_step(c, 1 * SEC);
	READ(q, &m);                      /* t = 3 s */
	CHECK_DBL(m.unfinished_work_seconds, 2.0);
	CHECK_DBL(m.longest_running_processor_seconds, 2.0);
	CHECK_EQ(kwq_done(q, a), 0);      /* re-queued at t = 3 s */
	READ(q, &m);
	CHECK_EQ(m.work_duration.count, 1);
	CHECK_DBL(m.work_duration.sum_seconds, 2.0);
	kwq_clock_fake_step(c, 1 * SEC);
	CHECK_GET(q, "a", &a);            /* t = 4 s: queued since the re-add */
	READ(q, &m);
	CHECK_EQ(m.queue_duration.count, 2);
	CHECK_DBL(m.queue_duration.sum_seconds, 1.0 + 2.0);
	CHECK_EQ(kwq_done(q, a), 0);
	kwq_free(q);
	kwq_clock_free(c);
}

/* retries: every accepted add_after, add_rate_limited, and add_with with a
 * delay or rate_limited; a delayed add counts as an add when it fires */
static void t_retries(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue("retries", c, kwq_limiter_exponential(1 * MS, 1 * SEC));
	struct kwq_metrics m;
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;

	CHECK_EQ(ADDS(q, "plain"), 0);
	CHECK_EQ(kwq_add_with(q, "plain2", 6, &o), 0);
	READ(q, &m);
	CHECK_EQ(m.retries_total, 0);
	CHECK_EQ(m.adds_total, 2);

	CHECK_EQ(kwq_add_after(q, "now", 3, 0), 0); /* added at once */
	CHECK_EQ(kwq_add_after(q, "neg", 3, -5), 0);
	READ(q, &m);
	CHECK_EQ(m.retries_total, 2);
	CHECK_EQ(m.adds_total, 4);

	CHECK_EQ(kwq_add_after(q, "later", 5, 1 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "later", 5, 2 * MS), 0); /* earlier kept */
	CHECK_EQ(kwq_add_after(q, "plain", 5, 1 * MS), 0); /* absorbed */
	CHECK_EQ(kwq_add_rate_limited(q, "rl", 2), 0);     /* waits 1 ms */
	o.after_ns = 1 * MS;
	CHECK_EQ(kwq_add_with(q, "with", 4, &o), 0);
	o.after_ns = 0;
	o.rate_limited = true;
	CHECK_EQ(kwq_add_with(q, "withrl", 6, &o), 0);
	READ(q, &m);
	CHECK_EQ(m.retries_total, 8);
	CHECK_EQ(m.adds_total, 4); /* the delayed ones have not fired */
	CHECK_EQ(m.depth, 4);

	kwq_clock_fake_step(c, 1 * MS);
	CHECK_EQ(wait_len(q, 8), 8);
	READ(q, &m);
	CHECK_EQ(m.adds_total, 8);
	CHECK_EQ(m.depth, 8);
	CHECK_EQ(m.retries_total, 8);

	/* refused calls are not retries */
	CHECK_EQ(kwq_add_after(q, NULL, 1, 1), -EINVAL);
	CHECK_EQ(kwq_add_with(q, "x", 1, NULL), -EINVAL);
	kwq_shutdown(q);
	CHECK_EQ(kwq_add_after(q, "x", 1, 0), -ESHUTDOWN);
	CHECK_EQ(kwq_add_after(q, "x", 1, 1 * MS), -ESHUTDOWN);
	CHECK_EQ(kwq_add_rate_limited(q, "x", 1), -ESHUTDOWN);
	CHECK_EQ(kwq_add_with(q, "x", 1, &o), -ESHUTDOWN);
	READ(q, &m);
	CHECK_EQ(m.retries_total, 8);
	CHECK_EQ(m.adds_total, 8);
	kwq_free(q);
	kwq_clock_free(c);
}

/* m->size: fields wholly inside it are written, nothing else */
static void t_read_size(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue("size", c, NULL);
	struct {
		struct kwq_metrics m;
		unsigned char after[16];
	} big;
	struct kwq_metrics m, ref;
	const size_t first = offsetof(struct kwq_metrics, depth);

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_add_after(q, "b", 1, 0), 0);
	READ(q, &ref);
	CHECK_EQ(ref.depth, 2);
	CHECK_EQ(ref.retries_total, 1);

	CHECK_EQ(kwq_metrics_read(NULL, &ref), -EINVAL);
	CHECK_EQ(kwq_metrics_read(q, NULL), -EINVAL);
	memset(&m, 0xab, sizeof m);
	m.size = 0;
	CHECK_EQ(kwq_metrics_read(q, &m), -EINVAL);
	m.size = first - 1;
	CHECK_EQ(kwq_metrics_read(q, &m), -EINVAL);

	/* each prefix: fields before the cut equal a full read's, the rest
	 * keeps its bytes */
	for (size_t cut = first; cut <= sizeof m; cut++) {
		memset(&m, 0xab, sizeof m);
		m.size = cut;
		CHECK_EQ(kwq_metrics_read(q, &m), 0);
		CHECK_EQ(m.size, cut);
		const unsigned char *p = (const unsigned char *)&m;
		const unsigned char *r = (const unsigned char *)&ref;
		size_t whole = first;
		static const size_t ends[] = {
			offsetof(struct kwq_metrics, adds_total),
			offsetof(struct kwq_metrics, retries_total),
			offsetof(struct kwq_metrics, queue_duration),
			offsetof(struct kwq_metrics, work_duration),
			offsetof(struct kwq_metrics, unfinished_work_seconds),
			offsetof(struct kwq_metrics, longest_running_processor_seconds),
			offsetof(struct kwq_metrics, delayed),
			offsetof(struct kwq_metrics, give_ups_total),
			sizeof(struct kwq_metrics),
		};
		for (size_t e = 0; e < sizeof ends / sizeof ends[0]; e++)
			if (ends[e] <= cut)
				whole = ends[e];
		for (size_t b = sizeof(size_t); b < sizeof m; b++) {
			if (b < first)
				continue;
			if (b < whole && p[b] != r[b]) {
				TAP_FAIL_AT("cut %zu: byte %zu not written", cut, b);
				return;
			}
			if (b >= whole && p[b] != 0xab) {
				TAP_FAIL_AT("cut %zu: byte %zu written", cut, b);
				return;
			}
		}
	}

	/* a caller with a larger struct: what lies past ours is untouched */
	memset(&big, 0xcd, sizeof big);
	big.m.size = sizeof big;
	CHECK_EQ(kwq_metrics_read(q, &big.m), 0);
	CHECK_EQ(big.m.depth, 2);
	CHECK_EQ(big.m.size, sizeof big);
	for (size_t b = 0; b < sizeof big.after; b++)
		CHECK_EQ(big.after[b], 0xcd);
	kwq_free(q);
	kwq_clock_free(c);
}

/* An unnamed queue keeps nothing: zeros, and no text */
static void t_unnamed(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue(NULL, c, NULL);
	struct kwq_metrics m;
	kwq_item_t *i;
	char buf[64];

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(kwq_add_after(q, "b", 1, 0), 0);
	CHECK_EQ(kwq_add_rate_limited(q, "c", 1), 0);
	kwq_clock_fake_step(c, 1 * MS);
	CHECK_GET(q, "a", &i);
	kwq_clock_fake_step(c, 1 * MS);

	memset(&m, 0xff, sizeof m);
	m.size = sizeof m;
	CHECK_EQ(kwq_metrics_read(q, &m), 0);
	CHECK_EQ(m.size, sizeof m);
	CHECK_EQ(m.depth, 0);
	CHECK_EQ(m.adds_total, 0);
	CHECK_EQ(m.retries_total, 0);
	CHECK_EQ(m.queue_duration.count, 0);
	CHECK_DBL(m.queue_duration.sum_seconds, 0);
	CHECK_EQ(m.work_duration.count, 0);
	CHECK_DBL(m.work_duration.sum_seconds, 0);
	for (unsigned j = 0; j < KWQ_HIST_BUCKETS; j++) {
		CHECK_EQ(m.queue_duration.le[j], 0);
		CHECK_EQ(m.work_duration.le[j], 0);
	}
	CHECK_DBL(m.unfinished_work_seconds, 0);
	CHECK_DBL(m.longest_running_processor_seconds, 0);
	CHECK_EQ(m.delayed, 0);
	CHECK_EQ(m.give_ups_total, 0);

	memset(buf, 'x', sizeof buf);
	CHECK_EQ(kwq_metrics_prometheus(q, buf, sizeof buf), 0);
	CHECK_EQ(buf[0], '\0');
	CHECK_EQ(buf[1], 'x');
	CHECK_EQ(kwq_metrics_prometheus(q, NULL, 0), 0);
	CHECK_EQ(kwq_done(q, i), 0);
	kwq_free(q);
	kwq_clock_free(c);
}

static const char expected_text[] =
	"# HELP workqueue_adds_total Total number of adds handled by workqueue\n"
	"# TYPE workqueue_adds_total counter\n"
	"workqueue_adds_total{name=\"q1\"} 3\n"
	"# HELP workqueue_depth Current depth of workqueue\n"
	"# TYPE workqueue_depth gauge\n"
	"workqueue_depth{name=\"q1\"} 1\n"
	"# HELP workqueue_longest_running_processor_seconds How many seconds has the "
	"longest running processor for workqueue been running.\n"
	"# TYPE workqueue_longest_running_processor_seconds gauge\n"
	"workqueue_longest_running_processor_seconds{name=\"q1\"} 1.5\n"
	"# HELP workqueue_queue_duration_seconds How long in seconds an item stays in "
	"workqueue before being requested.\n"
	"# TYPE workqueue_queue_duration_seconds histogram\n"
	"workqueue_queue_duration_seconds_bucket{name=\"q1\",le=\"1e-08\"} 0\n"
	"workqueue_queue_duration_seconds_bucket{name=\"q1\",le=\"1e-07\"} 0\n"
	"workqueue_queue_duration_seconds_bucket{name=\"q1\",le=\"1e-06\"} 0\n"
	"workqueue_queue_duration_seconds_bucket{name=\"q1\",le=\"1e-05\"} 0\n"
	"workqueue_queue_duration_seconds_bucket{name=\"q1\",le=\"0.0001\"} 1\n"
	"workqueue_queue_duration_seconds_bucket{name=\"q1\",le=\"0.001\"} 1\n"
	"workqueue_queue_duration_seconds_bucket{name=\"q1\",le=\"0.01\"} 2\n"
	"workqueue_queue_duration_seconds_bucket{name=\"q1\",le=\"0.1\"} 2\n"
	"workqueue_queue_duration_seconds_bucket{name=\"q1\",le=\"1\"} 2\n"
	"workqueue_queue_duration_seconds_bucket{name=\"q1\",le=\"10\"} 2\n"
	"workqueue_queue_duration_seconds_bucket{name=\"q1\",le=\"+Inf\"} 2\n"
	"workqueue_queue_duration_seconds_sum{name=\"q1\"} 0.0021\n"
	"workqueue_queue_duration_seconds_count{name=\"q1\"} 2\n"
	"# HELP workqueue_retries_total Total number of retries handled by workqueue\n"
	"# TYPE workqueue_retries_total counter\n"
	"workqueue_retries_total{name=\"q1\"} 1\n"
	"# HELP workqueue_unfinished_work_seconds How many seconds of work has done that "
	"is in progress and hasn't been observed by work_duration. Large values indicate "
	"stuck threads. One can deduce the number of stuck threads by observing the rate "
	"at which this increases.\n"
	"# TYPE workqueue_unfinished_work_seconds gauge\n"
	"workqueue_unfinished_work_seconds{name=\"q1\"} 1.5\n"
	"# HELP workqueue_work_duration_seconds How long in seconds processing an item "
	"from workqueue takes.\n"
	"# TYPE workqueue_work_duration_seconds histogram\n"
	"workqueue_work_duration_seconds_bucket{name=\"q1\",le=\"1e-08\"} 0\n"
	"workqueue_work_duration_seconds_bucket{name=\"q1\",le=\"1e-07\"} 0\n"
	"workqueue_work_duration_seconds_bucket{name=\"q1\",le=\"1e-06\"} 0\n"
	"workqueue_work_duration_seconds_bucket{name=\"q1\",le=\"1e-05\"} 0\n"
	"workqueue_work_duration_seconds_bucket{name=\"q1\",le=\"0.0001\"} 0\n"
	"workqueue_work_duration_seconds_bucket{name=\"q1\",le=\"0.001\"} 0\n"
	"workqueue_work_duration_seconds_bucket{name=\"q1\",le=\"0.01\"} 1\n"
	"workqueue_work_duration_seconds_bucket{name=\"q1\",le=\"0.1\"} 1\n"
	"workqueue_work_duration_seconds_bucket{name=\"q1\",le=\"1\"} 1\n"
	"workqueue_work_duration_seconds_bucket{name=\"q1\",le=\"10\"} 1\n"
	"workqueue_work_duration_seconds_bucket{name=\"q1\",le=\"+Inf\"} 1\n"
	"workqueue_work_duration_seconds_sum{name=\"q1\"} 0.002\n"
	"workqueue_work_duration_seconds_count{name=\"q1\"} 1\n"
	"# HELP workqueue_delayed_items How many keys are waiting on a delayed add to "
	"workqueue\n"
	"# TYPE workqueue_delayed_items gauge\n"
	"workqueue_delayed_items{name=\"q1\"} 0\n"
	"# HELP workqueue_give_ups_total Total number of retries given up after "
	"max_attempts by workqueue\n"
	"# TYPE workqueue_give_ups_total counter\n"
	"workqueue_give_ups_total{name=\"q1\"} 0\n";

/* A small queue's whole text, byte for byte */
static void t_prometheus_exact(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(7 * SEC);
	kwq_t *q = row_queue("q1", c, NULL);
	kwq_item_t *a, *b;
	static char text[8192];
	static struct doc doc;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	kwq_clock_fake_step(c, 50 * US);
	CHECK_GET(q, "a", &a);           /* queued 50 us */
	kwq_clock_fake_step(c, 2 * MS);
	CHECK_EQ(kwq_done(q, a), 0);     /* worked 2 ms */
	CHECK_GET(q, "b", &b);           /* queued 2.05 ms */
	CHECK_EQ(kwq_add_after(q, "c", 1, 0), 0);
	kwq_clock_fake_step(c, 1500 * MS); /* b held 1.5 s */

	PROM_TEXT(q, text, sizeof text, &doc);
	CHECK_MEM(text, strlen(text), expected_text, strlen(expected_text));
	CHECK_EQ(doc.n, 2 * (2 + KWQ_HIST_BUCKETS + 1) + 5 + 2);
	CHECK_DBL(doc_value(&doc, "workqueue_queue_duration_seconds_sum", ""), 0.0021);
	CHECK_EQ(kwq_done(q, b), 0);
	kwq_free(q);
	kwq_clock_free(c);
}

/* Seconds as Go writes a float64: shortest digits, exponent below 1e-4 and
 * from 1e6 on */
static void t_prometheus_floats(void)
{
	static const struct {
		int64_t held_ns;
		const char *text;
	} cases[] = {
		{ 1, "1e-09" },
		{ 10, "1e-08" },
		{ 12345, "1.2345e-05" },
		{ 100 * US, "0.0001" },
		{ 123456789, "0.123456789" },
		{ 1 * SEC, "1" },
		{ 2500 * MS, "2.5" },
		{ 100 * SEC, "100" },
		{ 123456 * SEC + 789 * MS, "123456.789" },
		{ 999999 * SEC, "999999" },
		{ 1000000 * SEC, "1e+06" },
		{ 1234567 * SEC, "1.234567e+06" },
		{ 3333333333333333333, "3.3333333333333335e+09" },
	};
	static char text[8192];
	static struct doc doc;

	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		kwq_clock_t *c = kwq_clock_fake_new(0);
		kwq_t *q = row_queue("floats", c, NULL);
		kwq_item_t *i;
		char want[128];

		CHECK_EQ(ADDS(q, "a"), 0);
		CHECK_GET(q, "a", &i);
		kwq_clock_fake_step(c, cases[k].held_ns);
		PROM_TEXT(q, text, sizeof text, &doc);
		snprintf(want, sizeof want,
			 "\nworkqueue_longest_running_processor_seconds{name=\"floats\"} %s\n",
			 cases[k].text);
		if (strstr(text, want) == NULL) {
			TAP_FAIL_AT("held %" PRId64 " ns: no line%s", cases[k].held_ns, want);
			return;
		}
		CHECK_DBL(doc_value(&doc, "workqueue_longest_running_processor_seconds", ""),
			  (double)cases[k].held_ns / 1e9);
		CHECK_EQ(kwq_done(q, i), 0);
		kwq_free(q);
		kwq_clock_free(c);
	}
}

/* The name label: backslash, double quote and newline escaped */
static void t_prometheus_escaping(void)
{
	static const char name[] = "ns/\"quoted\"\\path\nline2 {x=\"y\"} é";
	kwq_t *q = row_queue(name, NULL, NULL);
	static char text[8192];
	static struct doc doc;

	CHECK_EQ(ADDS(q, "a"), 0);
	PROM_TEXT(q, text, sizeof text, &doc);
	CHECK(strstr(text, "workqueue_depth{name=\"ns/\\\"quoted\\\"\\\\path\\nline2 "
			   "{x=\\\"y\\\"} \xc3\xa9\"} 1\n") != NULL);
	for (size_t i = 0; i < doc.n; i++)
		CHECK_MEM(doc.s[i].qname, strlen(doc.s[i].qname), name, strlen(name));
	/* exactly one newline per line: none leaked from the name */
	size_t lines = 0;
	for (const char *p = text; *p; p++)
		lines += *p == '\n';
	CHECK_EQ(lines, doc.n + 2 * 9);
	kwq_free(q);
}

/* snprintf semantics: the length needed whatever cap is */
static void t_prometheus_snprintf(void)
{
	kwq_t *q = row_queue("snprintf", NULL, NULL);
	static char full[8192], buf[8192];

	CHECK_EQ(ADDS(q, "a"), 0);
	int n = kwq_metrics_prometheus(q, NULL, 0);
	CHECK_INT(n, >, 0);
	CHECK_INT(n, <, (int)sizeof full);
	CHECK_EQ(kwq_metrics_prometheus(q, full, sizeof full), n);
	CHECK_EQ(strlen(full), n);

	memset(buf, 'x', sizeof buf);
	CHECK_EQ(kwq_metrics_prometheus(q, buf, 0), n); /* cap 0: untouched */
	CHECK_EQ(buf[0], 'x');
	CHECK_EQ(kwq_metrics_prometheus(q, buf, 1), n);
	CHECK_EQ(buf[0], '\0');
	CHECK_EQ(buf[1], 'x');
	for (size_t cap = 2; cap <= (size_t)n + 1; cap++) {
		memset(buf, 'x', cap + 2);
		CHECK_EQ(kwq_metrics_prometheus(q, buf, cap), n);
		size_t kept = cap - 1 < (size_t)n ? cap - 1 : (size_t)n;
		CHECK_MEM(buf, strlen(buf), full, kept);
		CHECK_EQ(buf[kept], '\0');
		CHECK_EQ(buf[kept + 1], 'x');
	}
	/* exactly n + 1 bytes hold the whole text */
	memset(buf, 'x', sizeof buf);
	CHECK_EQ(kwq_metrics_prometheus(q, buf, (size_t)n + 1), n);
	CHECK_MEM(buf, strlen(buf), full, (size_t)n);

	CHECK_EQ(kwq_metrics_prometheus(NULL, buf, sizeof buf), -EINVAL);
	CHECK_EQ(kwq_metrics_prometheus(q, NULL, 1), -EINVAL);
	kwq_free(q);
}

/*
 * What kwq_metrics_prometheus_all must write for texts[0..n), each a
 * single queue's text: family by family (a block starts at "# HELP"), the
 * block's HELP and TYPE lines once, then the block's samples of each text
 * in turn.  Returns the length, or 0 when it does not fit or a text has
 * fewer blocks.
 */
static size_t merge_texts(const char *const *texts, size_t n, char *out, size_t cap)
{
	const char *at[16];
	size_t len = 0;

	if (n > 16 || n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		at[i] = texts[i];
	while (*at[0] != '\0') {
		for (size_t i = 0; i < n; i++) {
			/* the block: its two comment lines, then samples up to
			 * the next "# HELP" or the end */
			const char *b = at[i];
			if (strncmp(b, "# HELP ", 7) != 0)
				return 0;
			const char *samples = strchr(strchr(b, '\n') + 1, '\n') + 1;
			const char *end = strstr(samples, "# HELP ");
			if (end == NULL)
				end = samples + strlen(samples);
			const char *from = i == 0 ? b : samples;
			size_t l = (size_t)(end - from);
			if (len + l >= cap)
				return 0;
			memcpy(out + len, from, l);
			len += l;
			at[i] = end;
		}
	}
	for (size_t i = 1; i < n; i++)
		if (*at[i] != '\0')
			return 0;
	out[len] = '\0';
	return len;
}

/* Each text of kwq_metrics_prometheus on its own into texts[i]. */
static bool single_texts(kwq_t *const *q, size_t n, char (*texts)[8192])
{
	for (size_t i = 0; i < n; i++) {
		int l = kwq_metrics_prometheus(q[i], texts[i], sizeof texts[i]);
		if (l <= 0 || (size_t)l >= sizeof texts[i])
			return false;
	}
	return true;
}

/* prometheus_all with no named queue: nothing, as an unnamed queue */
static void t_prometheus_all_none(void)
{
	kwq_t *u = row_queue(NULL, NULL, NULL);
	kwq_t *const qs[] = { NULL, u, NULL };
	char buf[64];

	CHECK_EQ(ADDS(u, "a"), 0);
	CHECK_EQ(kwq_metrics_prometheus_all(NULL, 0, NULL, 0), 0);
	memset(buf, 'x', sizeof buf);
	CHECK_EQ(kwq_metrics_prometheus_all(NULL, 0, buf, sizeof buf), 0);
	CHECK_EQ(buf[0], '\0');
	CHECK_EQ(buf[1], 'x');
	CHECK_EQ(kwq_metrics_prometheus_all(qs, 0, buf, sizeof buf), 0);
	memset(buf, 'x', sizeof buf);
	CHECK_EQ(kwq_metrics_prometheus_all(qs, 3, buf, sizeof buf), 0);
	CHECK_EQ(buf[0], '\0');
	CHECK_EQ(buf[1], 'x');
	CHECK_EQ(kwq_metrics_prometheus_all(qs, 3, NULL, 0), 0);
	memset(buf, 'x', sizeof buf);
	CHECK_EQ(kwq_metrics_prometheus_all(qs, 3, buf, 0), 0); /* cap 0: untouched */
	CHECK_EQ(buf[0], 'x');

	CHECK_EQ(kwq_metrics_prometheus_all(NULL, 1, buf, sizeof buf), -EINVAL);
	CHECK_EQ(kwq_metrics_prometheus_all(NULL, 0, NULL, 1), -EINVAL);
	CHECK_EQ(kwq_metrics_prometheus_all(qs, 3, NULL, 1), -EINVAL);
	kwq_free(u);
}

/* prometheus_all of one queue is kwq_metrics_prometheus, cut or not */
static void t_prometheus_all_one(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(3 * SEC);
	kwq_t *q = row_queue("one", c, NULL);
	static char one[8192], all[8192];
	kwq_item_t *i;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	kwq_clock_fake_step(c, 3 * MS);
	CHECK_GET(q, "a", &i);
	kwq_clock_fake_step(c, 250 * MS);

	int n = kwq_metrics_prometheus(q, one, sizeof one);
	CHECK_INT(n, >, 0);
	CHECK_INT(n, <, (int)sizeof one);
	CHECK_EQ(kwq_metrics_prometheus_all(&q, 1, NULL, 0), n);
	CHECK_EQ(kwq_metrics_prometheus_all(&q, 1, all, sizeof all), n);
	CHECK_MEM(all, strlen(all), one, strlen(one));
	/* cut: the same prefix, the same NUL, the same return */
	for (size_t cap = 1; cap <= (size_t)n + 1; cap += cap < 64 ? 1 : 61) {
		memset(one, 'x', cap + 2);
		memset(all, 'y', cap + 2);
		CHECK_EQ(kwq_metrics_prometheus(q, one, cap), n);
		CHECK_EQ(kwq_metrics_prometheus_all(&q, 1, all, cap), n);
		CHECK_MEM(all, strlen(all), one, strlen(one));
		CHECK_EQ(strlen(all), cap - 1 < (size_t)n ? cap - 1 : (size_t)n);
		CHECK_EQ(all[cap + 1], 'y');
	}
	CHECK_EQ(kwq_done(q, i), 0);
	kwq_free(q);
	kwq_clock_free(c);
}

/* three named queues, an unnamed one and NULLs: each family once, the
 * named queues' series in array order */
static void t_prometheus_all_three(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *a = row_queue("zeta", c, NULL); /* not in name order */
	kwq_t *b = row_queue("alpha", c, NULL);
	kwq_t *d = row_queue("mu \"quoted\"", c, NULL);
	kwq_t *u = row_queue(NULL, c, NULL);
	kwq_t *const qs[] = { NULL, a, u, b, NULL, d };
	kwq_t *const named[] = { a, b, d };
	static char texts[3][8192], want[32768], all[32768], buf[32768];
	static struct doc doc;
	kwq_item_t *i;

	/* different values in each */
	CHECK_EQ(ADDS(a, "1"), 0);
	CHECK_EQ(ADDS(b, "1"), 0);
	CHECK_EQ(ADDS(b, "2"), 0);
	CHECK_EQ(kwq_add_after(d, "1", 1, 0), 0);
	CHECK_EQ(ADDS(u, "1"), 0);
	kwq_clock_fake_step(c, 20 * MS);
	CHECK_GET(b, "1", &i);
	kwq_clock_fake_step(c, 7 * MS);

	CHECK(single_texts(named, 3, texts));
	const char *const tp[] = { texts[0], texts[1], texts[2] };
	size_t wl = merge_texts(tp, 3, want, sizeof want);
	CHECK_INT(wl, >, 0);

	int n = kwq_metrics_prometheus_all(qs, 6, NULL, 0);
	CHECK_EQ(n, wl);
	CHECK_EQ(kwq_metrics_prometheus_all(qs, 6, all, sizeof all), n);
	CHECK_MEM(all, strlen(all), want, wl);
	if (!parse_text(all, (size_t)n, &doc)) {
		TAP_FAIL_AT("strict parser: %s", doc.err);
		return;
	}
	CHECK_EQ(doc.nfam, 9);
	CHECK_EQ(doc.n, 3 * (2 * (2 + KWQ_HIST_BUCKETS + 1) + 5 + 2));
	CHECK_EQ(promtool_check(all), 0);
	/* the samples of each family: zeta's, then alpha's, then mu's */
	static const char *const order[] = { "zeta", "alpha", "mu \"quoted\"" };
	size_t fams = 0;
	for (size_t s = 0; s < doc.n; fams++) {
		const char *fam = doc.s[s].family;
		for (size_t k = 0; k < 3; k++) {
			size_t from = s;
			while (s < doc.n && strcmp(doc.s[s].family, fam) == 0 &&
			       strcmp(doc.s[s].qname, order[k]) == 0)
				s++;
			if (s == from) {
				TAP_FAIL_AT("%s: no series of %s at sample %zu", fam, order[k], s);
				return;
			}
		}
		if (s < doc.n && strcmp(doc.s[s].family, fam) == 0) {
			TAP_FAIL_AT("%s: sample %zu after the last queue's", fam, s);
			return;
		}
	}
	CHECK_EQ(fams, 9);
	CHECK_DBL(doc_value(&doc, "workqueue_adds_total", ""), 1); /* zeta's, the first */

	/* cut buffers: as snprintf */
	for (size_t cap = 0; cap <= (size_t)n + 1; cap += cap < 64 ? 1 : 97) {
		memset(buf, 'x', cap + 2);
		CHECK_EQ(kwq_metrics_prometheus_all(qs, 6, buf, cap), n);
		if (cap == 0) {
			CHECK_EQ(buf[0], 'x');
			continue;
		}
		size_t kept = cap - 1 < (size_t)n ? cap - 1 : (size_t)n;
		CHECK_MEM(buf, strlen(buf), all, kept);
		CHECK_EQ(buf[kept + 1], 'x');
	}

	/* two named queues with one name: refused, nothing written */
	kwq_t *twin = row_queue("alpha", c, NULL);
	kwq_t *const dup[] = { b, a, u, NULL, twin };
	memset(buf, 'x', 4);
	CHECK_EQ(kwq_metrics_prometheus_all(dup, 5, buf, sizeof buf), -EINVAL);
	CHECK_EQ(kwq_metrics_prometheus_all(dup, 5, NULL, 0), -EINVAL);
	CHECK_EQ(buf[0], 'x');
	kwq_t *const same[] = { a, a };
	CHECK_EQ(kwq_metrics_prometheus_all(same, 2, buf, sizeof buf), -EINVAL);
	CHECK_INT(kwq_metrics_prometheus_all(dup, 4, NULL, 0), >, 0); /* without the twin */

	CHECK_EQ(kwq_done(b, i), 0);
	kwq_free(twin);
	kwq_free(a);
	kwq_free(b);
	kwq_free(d);
	kwq_free(u);
	kwq_clock_free(c);
}

/* more named queues than fit the writer's stack: the same rules */
static void t_prometheus_all_many(void)
{
	enum { N = 12 };
	kwq_t *q[N];
	static char texts[N][8192], want[N * 8192], all[N * 8192];
	static struct doc doc;
	const char *tp[N];

	for (int k = 0; k < N; k++) {
		char name[16];
		snprintf(name, sizeof name, "q%02d", N - k);
		q[k] = row_queue(name, NULL, NULL);
		for (int j = 0; j <= k; j++) {
			char key[8];
			snprintf(key, sizeof key, "%d", j);
			CHECK_EQ(kwq_add(q[k], key, strlen(key)), 0);
		}
		tp[k] = texts[k];
	}
	/* no held item: the texts do not depend on the time */
	CHECK(single_texts(q, N, texts));
	size_t wl = merge_texts(tp, N, want, sizeof want);
	CHECK_INT(wl, >, 0);
	int n = kwq_metrics_prometheus_all(q, N, all, sizeof all);
	CHECK_EQ(n, wl);
	CHECK_MEM(all, strlen(all), want, wl);
	if (!parse_text(all, (size_t)n, &doc)) {
		TAP_FAIL_AT("strict parser: %s", doc.err);
		return;
	}
	CHECK_EQ(doc.n, N * (2 * (2 + KWQ_HIST_BUCKETS + 1) + 5 + 2));
	CHECK_EQ(promtool_check(all), 0);

	/* the first and the last with one name */
	kwq_t *last = q[N - 1];
	q[N - 1] = row_queue("q12", NULL, NULL);
	CHECK_EQ(kwq_metrics_prometheus_all(q, N, all, sizeof all), -EINVAL);
	CHECK_INT(kwq_metrics_prometheus_all(q + 1, N - 1, NULL, 0), >, 0); /* without q[0] */
	kwq_free(q[N - 1]);
	q[N - 1] = last;
	for (int k = 0; k < N; k++)
		kwq_free(q[k]);
}

/* ----------------------------------------- concurrent reads under load */

#define LOAD_KEYS 256
#define LOAD_PRODUCERS 3
#define LOAD_WORKERS 2
#define LOAD_ADDS 20000
#define LOAD_READS 200 /* producers keep adding until the reader did these */

struct load {
	kwq_t *q;
	atomic_bool stop;
	atomic_uint_fast64_t gets, retries, reads;
	atomic_int failures;
	char msg[256];
};

static void *producer_main(void *arg)
{
	struct load *l = arg;
	unsigned seed = (unsigned)(uintptr_t)&seed;

	for (int i = 0; i < LOAD_ADDS || (atomic_load(&l->reads) < LOAD_READS &&
					  atomic_load(&l->failures) == 0); i++) {
		unsigned k = (unsigned)rand_r(&seed) % LOAD_KEYS;
		bool retry = i % 16 == 0;
		int rc = retry ? kwq_add_after(l->q, &k, sizeof k, 0) : kwq_add(l->q, &k, sizeof k);
		if (rc != 0)
			atomic_fetch_add(&l->failures, 1);
		else if (retry)
			atomic_fetch_add(&l->retries, 1);
	}
	return NULL;
}

static void *worker_main(void *arg)
{
	struct load *l = arg;
	kwq_item_t *it;

	while (kwq_get(l->q, &it) == 0) {
		atomic_fetch_add_explicit(&l->gets, 1, memory_order_relaxed);
		if (kwq_done(l->q, it) != 0)
			atomic_fetch_add(&l->failures, 1);
	}
	return NULL;
}

/* What holds of any snapshot, however many calls are in flight. */
static bool snapshot_ok(struct load *l, const struct kwq_metrics *m)
{
	const struct kwq_histogram *h[2] = { &m->queue_duration, &m->work_duration };
	for (int j = 0; j < 2; j++) {
		for (unsigned b = 1; b < KWQ_HIST_BUCKETS; b++) {
			if (h[j]->le[b] < h[j]->le[b - 1]) {
				snprintf(l->msg, sizeof l->msg, "le not cumulative");
				return false;
			}
		}
		if (h[j]->le[KWQ_HIST_BUCKETS - 1] > h[j]->count || h[j]->sum_seconds < 0) {
			snprintf(l->msg, sizeof l->msg, "le above count, or a negative sum");
			return false;
		}
	}
	if (m->unfinished_work_seconds < m->longest_running_processor_seconds ||
	    m->longest_running_processor_seconds < 0) {
		snprintf(l->msg, sizeof l->msg, "unfinished %g < longest %g",
			 m->unfinished_work_seconds, m->longest_running_processor_seconds);
		return false;
	}
	return true;
}

static void *reader_main(void *arg)
{
	struct load *l = arg;
	static char text[8192];
	static struct doc doc;
	uint64_t adds = 0, retries = 0, count = 0;

	while (!atomic_load(&l->stop)) {
		struct kwq_metrics m = { .size = sizeof m };
		if (kwq_metrics_read(l->q, &m) != 0 || !snapshot_ok(l, &m)) {
			atomic_fetch_add(&l->failures, 1);
			break;
		}
		/* counters never go back */
		if (m.adds_total < adds || m.retries_total < retries ||
		    m.queue_duration.count < count) {
			snprintf(l->msg, sizeof l->msg, "a counter went back");
			atomic_fetch_add(&l->failures, 1);
			break;
		}
		adds = m.adds_total;
		retries = m.retries_total;
		count = m.queue_duration.count;
		int n = kwq_metrics_prometheus(l->q, text, sizeof text);
		if (n <= 0 || (size_t)n >= sizeof text || !parse_text(text, (size_t)n, &doc)) {
			snprintf(l->msg, sizeof l->msg, "text: %s", doc.err);
			atomic_fetch_add(&l->failures, 1);
			break;
		}
		atomic_fetch_add(&l->reads, 1);
	}
	return NULL;
}

static void t_concurrent_reads(void)
{
	static struct load l;
	pthread_t prod[LOAD_PRODUCERS], work[LOAD_WORKERS], reader;
	struct kwq_metrics m;

	memset(&l, 0, sizeof l);
	l.q = row_queue("load", NULL, NULL);
	pthread_create(&reader, NULL, reader_main, &l);
	for (int i = 0; i < LOAD_WORKERS; i++)
		pthread_create(&work[i], NULL, worker_main, &l);
	for (int i = 0; i < LOAD_PRODUCERS; i++)
		pthread_create(&prod[i], NULL, producer_main, &l);
	for (int i = 0; i < LOAD_PRODUCERS; i++)
		pthread_join(prod[i], NULL);
	kwq_shutdown_drain(l.q);
	for (int i = 0; i < LOAD_WORKERS; i++)
		pthread_join(work[i], NULL);
	atomic_store(&l.stop, true);
	pthread_join(reader, NULL);
	if (l.msg[0] != '\0')
		TAP_FAIL_AT("%s", l.msg);
	CHECK_EQ(atomic_load(&l.failures), 0);

	/* quiescent: every counted add was got and done */
	READ(l.q, &m);
	uint64_t gets = atomic_load(&l.gets);
	CHECK_EQ(m.depth, 0);
	CHECK_EQ(m.adds_total, gets);
	CHECK_EQ(m.queue_duration.count, gets);
	CHECK_EQ(m.work_duration.count, gets);
	CHECK_EQ(m.retries_total, atomic_load(&l.retries));
	CHECK_INT(atomic_load(&l.reads), >=, LOAD_READS);
	CHECK_DBL(m.unfinished_work_seconds, 0);
	CHECK_INT(gets, >=, LOAD_KEYS / 2);
	kwq_free(l.q);
}

/* ------------------------------------------------------- 0.2 additions */

/* The delayed gauge once the timer thread has applied what became due, or
 * shutdown dropped the waits (10 s at most). */
static int64_t wait_delayed(kwq_t *q, int64_t want)
{
	struct kwq_metrics m = { .size = sizeof m };
	for (int i = 0; i < 10000; i++) {
		if (kwq_metrics_read(q, &m) != 0 || m.delayed == want)
			break;
		pause_ms(1);
	}
	return m.delayed;
}

/* delayed: +1 when a key starts waiting; -1 when the wait fires, an add or
 * a cancel ends it, or shutdown drops it */
static void t_delayed(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue("delayed", c, kwq_limiter_exponential(1 * MS, 1 * SEC));
	struct kwq_metrics m;
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	kwq_item_t *x;

	READ(q, &m);
	CHECK_EQ(m.delayed, 0);
	CHECK_EQ(kwq_add_after(q, "a", 1, 10 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "b", 1, 20 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "c", 1, 30 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "d", 1, 40 * MS), 0);
	READ(q, &m);
	CHECK_EQ(m.delayed, 4);
	CHECK_EQ(m.depth, 0);
	/* a key waits once, whatever its later delayed adds */
	CHECK_EQ(kwq_add_after(q, "a", 1, 5 * MS), 0);
	CHECK_EQ(kwq_add_after(q, "b", 1, 50 * MS), 0);
	o.after_ns = 60 * MS;
	o.replace = true;
	CHECK_EQ(kwq_add_with(q, "c", 1, &o), 0);
	/* added at once, or absorbed: not waiting */
	CHECK_EQ(kwq_add_after(q, "x", 1, 0), 0);
	CHECK_EQ(kwq_add_after(q, "x", 1, 10 * MS), 0);
	READ(q, &m);
	CHECK_EQ(m.delayed, 4);
	CHECK_EQ(m.depth, 1);
	CHECK_EQ(kwq_add_rate_limited(q, "r", 1), 0); /* 1 ms */
	READ(q, &m);
	CHECK_EQ(m.delayed, 5);

	/* fired */
	kwq_clock_fake_step(c, 1 * MS);
	CHECK_EQ(wait_len(q, 2), 2);
	CHECK_EQ(wait_delayed(q, 4), 4);
	kwq_clock_fake_step(c, 4 * MS); /* a, at 5 ms */
	CHECK_EQ(wait_len(q, 3), 3);
	CHECK_EQ(wait_delayed(q, 3), 3);
	READ(q, &m);
	CHECK_EQ(m.depth, 3);

	/* ended by an add, by a cancel */
	CHECK_EQ(ADDS(q, "b"), 0);
	READ(q, &m);
	CHECK_EQ(m.delayed, 2);
	CHECK_EQ(m.depth, 4);
	CHECK_EQ(kwq_cancel(q, "c", 1), 1);
	READ(q, &m);
	CHECK_EQ(m.delayed, 1);
	CHECK_EQ(m.depth, 4);

	/* a held key waits, and its wait fires into held+dirty */
	CHECK_GET(q, "x", &x);
	CHECK_EQ(kwq_add_after(q, "x", 1, 10 * MS), 0);
	READ(q, &m);
	CHECK_EQ(m.delayed, 2);
	CHECK_EQ(m.depth, 3);
	kwq_clock_fake_step(c, 10 * MS);
	CHECK_EQ(wait_delayed(q, 1), 1);
	READ(q, &m);
	CHECK_EQ(m.depth, 4);
	CHECK_EQ(kwq_done(q, x), 0);

	/* a held key's wait ended by KWQ_DROP */
	CHECK_GET(q, "r", &x);
	CHECK_EQ(kwq_add_after(q, "r", 1, 10 * MS), 0);
	READ(q, &m);
	CHECK_EQ(m.delayed, 2);
	CHECK_EQ(kwq_finish(q, x, KWQ_DROP, 0), 0);
	READ(q, &m);
	CHECK_EQ(m.delayed, 1);

	/* dropped by shutdown */
	CHECK_EQ(kwq_add_after(q, "e", 1, 100 * MS), 0);
	READ(q, &m);
	CHECK_EQ(m.delayed, 2);
	kwq_shutdown(q);
	CHECK_EQ(wait_delayed(q, 0), 0);
	kwq_clock_fake_step(c, 1 * SEC);
	pause_ms(20);
	CHECK_EQ(wait_delayed(q, 0), 0);
	kwq_free(q);
	kwq_clock_free(c);
}

/* kwq_cancel: a removed queued or held+dirty item leaves depth, a removed
 * wait leaves delayed; nothing else moves */
static void t_cancel_depth(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	kwq_t *q = row_queue("cancel", c, NULL);
	struct kwq_metrics m;
	kwq_item_t *b;

	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	READ(q, &m);
	CHECK_EQ(m.depth, 2);
	CHECK_EQ(kwq_cancel(q, "a", 1), 1);
	READ(q, &m);
	CHECK_EQ(m.depth, 1);
	CHECK_EQ(m.adds_total, 2);
	CHECK_EQ(m.queue_duration.count, 0);
	CHECK_EQ(kwq_cancel(q, "a", 1), 0);
	READ(q, &m);
	CHECK_EQ(m.depth, 1);

	CHECK_GET(q, "b", &b);
	CHECK_EQ(ADDS(q, "b"), 0); /* held+dirty: counted */
	READ(q, &m);
	CHECK_EQ(m.depth, 1);
	CHECK_EQ(m.adds_total, 3);
	CHECK_EQ(kwq_cancel(q, "b", 1), 1);
	READ(q, &m);
	CHECK_EQ(m.depth, 0);
	CHECK_EQ(kwq_cancel(q, "b", 1), 0); /* held */
	kwq_clock_fake_step(c, 1 * MS);
	CHECK_EQ(kwq_done(q, b), 0);
	READ(q, &m);
	CHECK_EQ(m.depth, 0);
	CHECK_EQ(m.work_duration.count, 1);
	CHECK_EQ(kwq_len(q), 0);

	/* a wait */
	CHECK_EQ(kwq_add_after(q, "w", 1, 10 * MS), 0);
	READ(q, &m);
	CHECK_EQ(m.delayed, 1);
	CHECK_EQ(m.retries_total, 1);
	CHECK_EQ(kwq_cancel(q, "w", 1), 1);
	READ(q, &m);
	CHECK_EQ(m.delayed, 0);
	CHECK_EQ(m.depth, 0);
	CHECK_EQ(m.retries_total, 1);
	CHECK_EQ(m.adds_total, 3);

	/* the counts go on from there: re-adds count again */
	CHECK_EQ(ADDS(q, "a"), 0);
	CHECK_EQ(ADDS(q, "b"), 0);
	READ(q, &m);
	CHECK_EQ(m.depth, 2);
	CHECK_EQ(m.adds_total, 5);
	kwq_shutdown(q);
	CHECK_EQ(kwq_cancel(q, "a", 1), 1); /* after shutdown too */
	READ(q, &m);
	CHECK_EQ(m.depth, 1);
	kwq_free(q);
	kwq_clock_free(c);
}

/* A named queue with max_attempts and on_give_up (or without). */
static kwq_t *give_up_queue(const char *name, kwq_clock_t *c, int max_attempts,
			    void (*fn)(void *, const void *, size_t), void *ctx)
{
	struct kwq_config cfg = KWQ_CONFIG_INIT;
	cfg.impl = row->impl;
	cfg.name = name;
	cfg.clock = c;
	cfg.limiter = kwq_limiter_exponential(1 * MS, 1 * SEC);
	cfg.max_attempts = max_attempts;
	cfg.on_give_up = fn;
	cfg.give_up_ctx = ctx;
	kwq_t *q = kwq_new(&cfg);
	if (q == NULL) {
		printf("Bail out! kwq_new(%s): %s\n", row->name, kwq_strerror(errno));
		exit(1);
	}
	return q;
}

static void count_give_up(void *ctx, const void *key, size_t len)
{
	(void)key;
	(void)len;
	(*(int *)ctx)++;
}

/* Count n failures of the key in the queue's limiter. */
static int fail_times(kwq_t *q, const char *k, int n)
{
	for (int i = 0; i < n; i++) {
		if (kwq_limiter_when(kwq_limiter(q), k, strlen(k)) < 0)
			return -1;
	}
	return kwq_num_requeues(q, k, strlen(k));
}

/* give_ups_total: +1 per give-up of kwq_finish, after shutdown too; a
 * give-up is no retry and no add, but its done is a done */
static void t_give_ups(void)
{
	kwq_clock_t *c = kwq_clock_fake_new(0);
	int calls = 0;
	kwq_t *q = give_up_queue("giveups", c, 2, count_give_up, &calls);
	struct kwq_metrics m, before;
	kwq_item_t *it;

	READ(q, &m);
	CHECK_EQ(m.give_ups_total, 0);
	CHECK_EQ(fail_times(q, "k", 2), 2);
	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &it);
	kwq_clock_fake_step(c, 1 * MS);
	READ(q, &before);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
	CHECK_EQ(calls, 1);
	READ(q, &m);
	CHECK_EQ(m.give_ups_total, 1);
	CHECK_EQ(m.retries_total, before.retries_total);
	CHECK_EQ(m.adds_total, before.adds_total);
	CHECK_EQ(m.depth, 0);
	CHECK_EQ(m.delayed, 0);
	CHECK_EQ(m.work_duration.count, before.work_duration.count + 1);
	CHECK_DBL(m.work_duration.sum_seconds, 0.001);

	/* a key that fails every time: retried twice, then given up */
	CHECK_EQ(ADDS(q, "j"), 0);
	for (int i = 0; i < 2; i++) {
		CHECK_GET(q, "j", &it);
		CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
		READ(q, &m);
		CHECK_EQ(m.give_ups_total, 1);
		CHECK_EQ(m.retries_total, (uint64_t)i + 1);
		CHECK_EQ(m.delayed, 1);
		kwq_clock_fake_step(c, 1 * SEC);
		CHECK_EQ(wait_len(q, 1), 1);
	}
	CHECK_GET(q, "j", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
	READ(q, &m);
	CHECK_EQ(m.give_ups_total, 2);
	CHECK_EQ(m.retries_total, 2);
	CHECK_EQ(m.delayed, 0);
	CHECK_EQ(calls, 2);

	/* KWQ_RETRY_AFTER never gives up */
	CHECK_EQ(fail_times(q, "r", 5), 5);
	CHECK_EQ(ADDS(q, "r"), 0);
	CHECK_GET(q, "r", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY_AFTER, 1 * MS), 0);
	READ(q, &m);
	CHECK_EQ(m.give_ups_total, 2);
	CHECK_EQ(m.retries_total, 3);
	kwq_clock_fake_step(c, 1 * MS);
	CHECK_EQ(wait_len(q, 1), 1);
	CHECK_GET(q, "r", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_OK, 0), 0);

	/* after shutdown */
	CHECK_EQ(fail_times(q, "s", 2), 2);
	CHECK_EQ(ADDS(q, "s"), 0);
	CHECK_GET(q, "s", &it);
	kwq_shutdown(q);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
	READ(q, &m);
	CHECK_EQ(m.give_ups_total, 3);
	CHECK_EQ(calls, 3);
	kwq_free(q);

	/* an unnamed queue gives up, and counts nothing */
	q = give_up_queue(NULL, c, 1, count_give_up, &calls);
	CHECK_EQ(fail_times(q, "k", 1), 1);
	CHECK_EQ(ADDS(q, "k"), 0);
	CHECK_GET(q, "k", &it);
	CHECK_EQ(kwq_finish(q, it, KWQ_RETRY, 0), 0);
	CHECK_EQ(calls, 4);
	READ(q, &m);
	CHECK_EQ(m.give_ups_total, 0);
	kwq_free(q);
	kwq_clock_free(c);
}

/* ---------------------------------------------------------------- table */

static const struct tap_case cases[] = {
	{ "strict_parser_rejects", t_strict_parser_rejects },
	{ "client_go_test_metrics", t_client_go_test_metrics },
	{ "histogram_bounds", t_histogram_bounds },
	{ "depth_counts_dirty", t_depth_counts_dirty },
	{ "readd_keeps_work_time", t_readd_keeps_work_time },
	{ "retries", t_retries },
	{ "read_size", t_read_size },
	{ "unnamed", t_unnamed },
	{ "prometheus_exact", t_prometheus_exact },
	{ "prometheus_floats", t_prometheus_floats },
	{ "prometheus_escaping", t_prometheus_escaping },
	{ "prometheus_snprintf", t_prometheus_snprintf },
	{ "prometheus_all_none", t_prometheus_all_none },
	{ "prometheus_all_one", t_prometheus_all_one },
	{ "prometheus_all_three", t_prometheus_all_three },
	{ "prometheus_all_many", t_prometheus_all_many },
	{ "concurrent_reads", t_concurrent_reads },
	/* 0.2 additions */
	{ "delayed", t_delayed },
	{ "cancel_depth", t_cancel_depth },
	{ "give_ups", t_give_ups },
};

int main(int argc, char **argv)
{
	return rows_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
