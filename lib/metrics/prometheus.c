/*
 * prometheus.c - the Prometheus text exposition (format 0.0.4) of the
 * metrics of one queue or several, as client-go's registration in
 * k8s.io/component-base names them: one family per metric, a `name` label,
 * HELP and TYPE lines once per family followed by every queue's series,
 * client-go's seven families in name order (as Go's registry gathers
 * them), then kwq's two of 0.2 (delayed items, give-ups).
 *
 * Numbers: counts (depth, adds, retries, buckets, _count) are written as
 * exact integers; seconds as Go's Prometheus client writes a float64:
 * strconv 'g' with the shortest digits that read back as the same double,
 * an exponent (two digits at least) below 1e-4 and from 1e6 on.  The
 * histograms' le labels are fixed strings, exactly the bounds 1e-8 s to
 * 1e1 s written that way.
 *
 * The output never depends on the locale: a radix character other than '.'
 * from printf is read past, never copied.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

/* snprintf-style output: counts every byte, stores what fits before the
 * NUL. */
struct out {
	char *buf;
	size_t cap;
	size_t len;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->len < o->cap) {
		size_t room = o->cap - 1 - o->len;
		memcpy(o->buf + o->len, s, n < room ? n : room);
	}
	o->len += n;
}

static void put_str(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static void put_u64(struct out *o, uint64_t v)
{
	char s[24];
	int n = snprintf(s, sizeof s, "%llu", (unsigned long long)v);
	put(o, s, (size_t)n);
}

static void put_i64(struct out *o, int64_t v)
{
	char s[24];
	int n = snprintf(s, sizeof s, "%lld", (long long)v);
	put(o, s, (size_t)n);
}

/*
 * The shortest decimal digits of a finite v > 0 that read back as v, and
 * its decimal exponent (v = 0.d1d2... * 10^(exp10 + 1)).  The correctly
 * rounded p-digit decimal is the closest one, so the first p that round
 * trips gives the digits Go's shortest formatting gives.
 */
static size_t shortest_digits(double v, char digits[24], int *exp10)
{
	char s[40];
	for (int p = 1; p <= 17; p++) {
		snprintf(s, sizeof s, "%.*e", p - 1, v);
		if (strtod(s, NULL) == v)
			break;
	}
	size_t nd = 0;
	const char *c = s;
	while (*c != 'e') {
		if (*c >= '0' && *c <= '9')
			digits[nd++] = *c;
		c++;
	}
	*exp10 = atoi(c + 1);
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	return nd;
}

static void put_float(struct out *o, double v)
{
	if (v == 0) {
		put_str(o, "0");
		return;
	}
	if (isnan(v)) {
		put_str(o, "NaN");
		return;
	}
	if (isinf(v)) {
		put_str(o, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	if (v < 0) {
		put_str(o, "-");
		v = -v;
	}
	char d[24];
	int exp10;
	size_t nd = shortest_digits(v, d, &exp10);

	if (exp10 < -4 || exp10 >= 6) {
		put(o, d, 1);
		if (nd > 1) {
			put_str(o, ".");
			put(o, d + 1, nd - 1);
		}
		char e[8];
		int n = snprintf(e, sizeof e, "e%c%02d", exp10 < 0 ? '-' : '+',
				 exp10 < 0 ? -exp10 : exp10);
		put(o, e, (size_t)n);
		return;
	}
	long dp = exp10 + 1; /* digits before the point */
	if (dp <= 0) {
		put_str(o, "0.");
		for (long i = 0; i < -dp; i++)
			put_str(o, "0");
		put(o, d, nd);
		return;
	}
	for (long i = 0; i < dp; i++)
		put(o, (size_t)i < nd ? &d[i] : "0", 1);
	if (nd > (size_t)dp) {
		put_str(o, ".");
		put(o, d + dp, nd - (size_t)dp);
	}
}

/* A label value: backslash, double quote and newline escaped. */
static void put_label_value(struct out *o, const char *s)
{
	const char *run = s;
	for (; *s != '\0'; s++) {
		const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;
		if (esc == NULL)
			continue;
		put(o, run, (size_t)(s - run));
		put_str(o, esc);
		run = s + 1;
	}
	put(o, run, (size_t)(s - run));
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
	put_str(o, "# HELP ");
	put_str(o, name);
	put_str(o, " ");
	put_str(o, help);
	put_str(o, "\n# TYPE ");
	put_str(o, name);
	put_str(o, " ");
	put_str(o, type);
	put_str(o, "\n");
}

/* `metric{name="..."` with the label open for more. */
static void sample_start(struct out *o, const char *metric, const char *suffix,
			 const char *qname)
{
	put_str(o, metric);
	put_str(o, suffix);
	put_str(o, "{name=\"");
	put_label_value(o, qname);
	put_str(o, "\"");
}

static void sample_u64(struct out *o, const char *metric, const char *qname, uint64_t v)
{
	sample_start(o, metric, "", qname);
	put_str(o, "} ");
	put_u64(o, v);
	put_str(o, "\n");
}

static void sample_i64(struct out *o, const char *metric, const char *qname, int64_t v)
{
	sample_start(o, metric, "", qname);
	put_str(o, "} ");
	put_i64(o, v);
	put_str(o, "\n");
}

static void sample_float(struct out *o, const char *metric, const char *suffix,
			 const char *qname, double v)
{
	sample_start(o, metric, suffix, qname);
	put_str(o, "} ");
	put_float(o, v);
	put_str(o, "\n");
}

static const char *const le_label[KWQ_HIST_BUCKETS] = {
	"1e-08", "1e-07", "1e-06", "1e-05", "0.0001",
	"0.001", "0.01",  "0.1",   "1",     "10",
};

static void histogram(struct out *o, const char *metric, const char *qname,
		      const struct kwq_histogram *h)
{
	for (unsigned i = 0; i <= KWQ_HIST_BUCKETS; i++) {
		sample_start(o, metric, "_bucket", qname);
		put_str(o, ",le=\"");
		put_str(o, i < KWQ_HIST_BUCKETS ? le_label[i] : "+Inf");
		put_str(o, "\"} ");
		put_u64(o, i < KWQ_HIST_BUCKETS ? h->le[i] : h->count);
		put_str(o, "\n");
	}
	sample_float(o, metric, "_sum", qname, h->sum_seconds);
	sample_start(o, metric, "_count", qname);
	put_str(o, "} ");
	put_u64(o, h->count);
	put_str(o, "\n");
}

/* How a family's value is read from struct kwq_metrics and written. */
enum value { U64, I64, SECONDS, HISTOGRAM };

/*
 * The families in the order they are written: client-go's seven in name
 * order, then the two of 0.2.
 */
static const struct family {
	const char *name;
	const char *type;
	const char *help;
	enum value value;
	size_t offset; /* of the value in struct kwq_metrics */
} families[] = {
#define AT(f) offsetof(struct kwq_metrics, f)
	{ "workqueue_adds_total", "counter",
	  "Total number of adds handled by workqueue", U64, AT(adds_total) },
	{ "workqueue_depth", "gauge", "Current depth of workqueue", I64, AT(depth) },
	{ "workqueue_longest_running_processor_seconds", "gauge",
	  "How many seconds has the longest running processor for workqueue been running.",
	  SECONDS, AT(longest_running_processor_seconds) },
	{ "workqueue_queue_duration_seconds", "histogram",
	  "How long in seconds an item stays in workqueue before being requested.",
	  HISTOGRAM, AT(queue_duration) },
	{ "workqueue_retries_total", "counter",
	  "Total number of retries handled by workqueue", U64, AT(retries_total) },
	{ "workqueue_unfinished_work_seconds", "gauge",
	  "How many seconds of work has done that is in progress and hasn't been "
	  "observed by work_duration. Large values indicate stuck threads. One can "
	  "deduce the number of stuck threads by observing the rate at which this "
	  "increases.",
	  SECONDS, AT(unfinished_work_seconds) },
	{ "workqueue_work_duration_seconds", "histogram",
	  "How long in seconds processing an item from workqueue takes.",
	  HISTOGRAM, AT(work_duration) },
	/* 0.2: after client-go's seven, not in name order with them */
	{ "workqueue_delayed_items", "gauge",
	  "How many keys are waiting on a delayed add to workqueue", I64, AT(delayed) },
	{ "workqueue_give_ups_total", "counter",
	  "Total number of retries given up after max_attempts by workqueue", U64,
	  AT(give_ups_total) },
#undef AT
};

/* One queue's series of family f. */
static void series(struct out *o, const struct family *f, const struct kwq__metrics_series *s)
{
	const void *at = (const char *)&s->m + f->offset;
	switch (f->value) {
	case U64:
		sample_u64(o, f->name, s->name, *(const uint64_t *)at);
		break;
	case I64:
		sample_i64(o, f->name, s->name, *(const int64_t *)at);
		break;
	case SECONDS:
		sample_float(o, f->name, "", s->name, *(const double *)at);
		break;
	case HISTOGRAM:
		histogram(o, f->name, s->name, at);
		break;
	}
}

size_t kwq__metrics_prometheus_write(const struct kwq__metrics_series *s, size_t n,
				     char *buf, size_t cap)
{
	struct out o = { buf, cap, 0 };

	for (size_t f = 0; n > 0 && f < sizeof families / sizeof families[0]; f++) {
		family(&o, families[f].name, families[f].type, families[f].help);
		for (size_t i = 0; i < n; i++)
			series(&o, &families[f], &s[i]);
	}
	if (cap > 0)
		buf[o.len < cap ? o.len : cap - 1] = '\0';
	return o.len;
}
