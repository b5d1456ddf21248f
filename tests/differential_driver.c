/*
 * differential_driver.c - see differential_driver.h.
 *
 * The model
 * =========
 * A plain transcription of the contract in lib/kwq.h for a small fixed set of keys (NKEYS),
 * single-threaded, with no shortcuts: per key a state (absent, queued,
 * held, held+dirty), the queued position (priority, then the sequence
 * number of the moment it last became queued or was raised), the priority
 * a held+dirty key asked for (dprio), and a pending delayed add (waiting:
 * ready time, priority, and the sequence number of the call that set the
 * ready time).  The rules, as lib/kwq.h gives them:
 *
 *   add(p)        absent -> queued at the tail of p; queued -> raised to
 *                 the tail of p if p is higher; held -> held+dirty with
 *                 dprio p; held+dirty -> dprio max(dprio, p).  Cancels a
 *                 wait: the key is added now, and a waiting key "keeps the
 *                 earlier ready time and the higher priority", so the add
 *                 is made with max(p, the wait's priority).
 *   add_after(d)  d <= 0: add.  Queued or held+dirty: absorbed, except that
 *                 it may raise the priority (as add(p), minus the cancel).
 *                 Absent or held: waiting at now + d (saturated); already
 *                 waiting: the earlier ready time (a strictly earlier one
 *                 takes the call's sequence number), the higher priority.
 *   clock step    everything with ready <= now is added, by (ready time,
 *                 sequence number), each as add(its priority).
 *   get           the highest priority, then the lowest sequence number.
 *   done          held -> absent; held+dirty -> queued at the tail of dprio.
 *   shutdown      adds refused (-ESHUTDOWN), waiting adds dropped, gets go
 *                 on until nothing is queued, then -ESHUTDOWN.
 *   rate limited  the queue's limiter is exponential(1 ms, 16 ms): the n-th
 *                 when() since forget waits min(16 ms, 1 ms * 2^(n-1)); it
 *                 counts even when the add is then refused; bad arguments
 *                 count nothing.
 *
 * The 0.2 calls (header bit 7), as lib/kwq.h gives them:
 *
 *   finish        OK: forget.  RETRY: with max_attempts m > 0 and the key's
 *                 count already >= m a give-up (forget, give_ups_total + 1,
 *                 on_give_up called once with the key), else
 *                 add_rate_limited.  RETRY_AFTER: add_after(after_ns), the
 *                 limiter untouched.  DROP: forget and cancel the wait only.
 *                 Then the done, in every case: a held+dirty key is queued
 *                 again.  0, or the add's -ESHUTDOWN (the done happened);
 *                 -EINVAL (outcome outside the enum, RETRY_AFTER with
 *                 after_ns < 0, which no other outcome reads): nothing
 *                 happened, the handle is still held.
 *   cancel        queued -> absent; a wait dropped; held+dirty -> held (no
 *                 re-queue, item_dirty false); held, absent unchanged.  1
 *                 when something was removed.  Also after shutdown.
 *   replace       (a wait > 0) a waiting key takes the call's ready time and
 *                 priority, and the call's sequence number even at an equal
 *                 ready time; otherwise as without it.
 *   add_many      add_with (opts NULL: add) of each key in array order, so
 *                 repeated keys meet the rules above; n, or -ESHUTDOWN.
 *   get_batch     what up to max consecutive gets take; -EAGAIN when it
 *                 did not wait (timeout <= 0), -ETIMEDOUT when it did.
 *   done_many     a done of each handle in order.
 *   item_dirty    the held key is held+dirty (a wait counts once fired).
 *   metrics       depth: +1 per counted add (absent -> queued, held ->
 *                 held+dirty, a fired wait as its add), -1 per get, -1 per
 *                 queued or held+dirty item a cancel removed; delayed: +1
 *                 when a key starts waiting, -1 when its wait ends (fired,
 *                 an add, a cancel, a DROP, shutdown); give_ups_total.
 *
 * Where the library is known to differ from lib/kwq.h, a quirk bit
 * (DIFF_QUIRK_*, differential_driver.h) makes the model do what the
 * library does, so that the rest can still be compared.
 *
 * The implementations
 * ===================
 * Three queues, each on its own fake clock: mutex, sharded with the
 * default shard count, and sharded with 1, 2, 4 or 64 shards (from the
 * input's header byte), so that keys collide in a shard.  The operations
 * run in lockstep on the model and the three; every return value, every
 * got key and its kwq_item_priority, and kwq_len after every operation
 * must agree.
 *
 * Delayed adds are fired by each queue's timer thread.  A clock step is
 * followed by a barrier that makes the single-threaded comparison
 * deterministic.  Before its last 1 ns step the driver makes two delayed
 * adds due 1 ns later: the barrier key at priority BARRIER_PRIO, then a
 * fresh "trailer" key at TRAIL_PRIO (below every other).  The timer adds
 * what is due in (ready time, call) order, so the barrier and the trailer
 * come last, in that order.  Once kwq_len counts the trailer (the model's
 * length after the step, plus the trailers, plus 2) its add has begun, so
 * every earlier add has returned: the barrier is published and, having the
 * highest priority, it is the head; a try_get must return it, and its done
 * leaves it absent.  Waiting for the barrier itself is not enough: in the
 * sharded design kwq_len counts a put that has claimed its slot before the
 * slot is published, and a get may pass over a lane whose put is still in
 * flight.  The trailers stay queued below everything: kwq_len is compared
 * less their number, and as soon as the model has nothing queued they are
 * taken with blocking gets (the only thing queued then, so a get cannot
 * take anything else, and blocking waits out a put still in flight).  The
 * model counts the barrier's 1 ns.
 *
 * The encoding
 * ============
 * Header byte: bit 0 flush at the end (done everything held, step 1000 s,
 * get and done until nothing is queued; with bit 5 then a drain), bits 1-2
 * the third queue's shard count, bits 3-4 the clocks' start, bit 7 the 0.2
 * alphabet: the kind byte goes through a second weight table that adds
 * the 0.2 calls, the queues are named (for the metrics) and, with bit 6
 * clear, have max_attempts 2 (else 0).  Without bit 7 an input decodes
 * exactly as before 0.2 (bits 6-7 were ignored; the committed corpus had
 * its bit 7 cleared).  Then 4 bytes
 * per operation: kind (through a 256-entry weight table), key (bits 0-3
 * the key, bit 4 pass key 0 as NULL, bit 5 pass the key through a buffer
 * overwritten after the call), a, b (the operation's parameters: a delay
 * or step from a table, a held key to finish, the kind of bad input; a
 * priority, flags).  Operations are resolved against the model's state (a
 * done picks among the keys the model says are held; a get that the model
 * says would block gets a short timeout instead), so every input is valid.
 * The 0.2 kinds: finish (x a held key, y & 3 the outcome, (y >> 2) & 15
 * after_ns from the delay table, passed with every outcome), cancel (the
 * key byte), add_with with replace (as add_with; x & 0x10 picks a delay
 * from a grid-heavy table), add_many (1 + (y & 3) keys: the key byte's and
 * x's nibbles; y & 4 opts NULL, else priority, after_ns and replace from
 * y's high bits), get_batch (max 1 + (y & 3); timeout 0, -1, or
 * KWQ_FOREVER where the model says it cannot block, a short one where it
 * must time out), done_many (the held handles x's bits pick, y & 1
 * reversed), item_dirty (x a held key), a metrics read, and the 0.2
 * calls' bad inputs.
 */
#include "differential_driver.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kwq.h>

#define NKEYS 16
#define NPARTS 3
#define MS 1000000LL
#define SEC 1000000000LL
#define BARRIER_PRIO 1000000
#define LIMIT_BASE (1 * MS)
#define LIMIT_MAX (16 * MS)

/* key indexes of what a get returned, other than 0..NKEYS-1 */
#define KEY_NONE (-1)
#define KEY_BARRIER (-2)
#define KEY_UNKNOWN (-3)   /* bytes of no known key */
#define KEY_NULLPTR (-4)   /* kwq_item_key returned NULL */
#define KEY_DOUBLE (-5)    /* a key whose handle is already held */
#define KEY_TRAILER (-6)   /* a barrier's trailer */

static const char barrier_key[] = "\x01" "barrier";
#define BARRIER_LEN (sizeof barrier_key - 1)
#define TRAIL_PRIO (-1000000)
#define TRAIL_LEN 14 /* "\x01trailer" and a 6-byte counter */

static void trail_key(unsigned char *k, uint64_t n)
{
	memcpy(k, "\x01trailer", 8);
	for (int i = 0; i < 6; i++)
		k[8 + i] = (unsigned char)(n >> (8 * i));
}

/* ---------------------------------------------------------------- keys */

static unsigned char big[KWQ_KEY_MAX + 1];  /* also read by bad lengths */
static unsigned char scratch[KWQ_KEY_MAX + 1];
static const uint64_t key15 = 0x0102030405060708ULL;

static struct {
	const void *p;
	size_t len;
} keys[NKEYS];

static void keys_init(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (unsigned char)(i * 131u + 7u);
	static const char k64[] = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk";
	keys[0].p = "";          keys[0].len = 0;
	keys[1].p = "a";         keys[1].len = 1;
	keys[2].p = "b";         keys[2].len = 1;
	keys[3].p = "ab";        keys[3].len = 2;
	keys[4].p = "ba";        keys[4].len = 2;
	keys[5].p = "a\0";       keys[5].len = 2; /* "a" and a NUL */
	keys[6].p = "\0";        keys[6].len = 1;
	keys[7].p = "\0\0";      keys[7].len = 2;
	keys[8].p = "\xff";      keys[8].len = 1;
	keys[9].p = "key-0009";  keys[9].len = 8;
	keys[10].p = "key-0010"; keys[10].len = 8;
	keys[11].p = k64;        keys[11].len = 64;
	keys[12].p = k64;        keys[12].len = 65; /* a prefix of it is key 11 */
	keys[13].p = big;        keys[13].len = 1000;
	keys[14].p = big;        keys[14].len = KWQ_KEY_MAX;
	keys[15].p = &key15;     keys[15].len = sizeof key15;
}

static int key_index(const void *p, size_t len)
{
	if (p == NULL)
		return KEY_NULLPTR;
	if (len == BARRIER_LEN && memcmp(p, barrier_key, len) == 0)
		return KEY_BARRIER;
	if (len == TRAIL_LEN && memcmp(p, "\x01trailer", 8) == 0)
		return KEY_TRAILER;
	for (int i = 0; i < NKEYS; i++) {
		if (keys[i].len == len && (len == 0 || memcmp(keys[i].p, p, len) == 0))
			return i;
	}
	return KEY_UNKNOWN;
}

/* -------------------------------------------------------------- actions */

enum kind {
	K_ADD,
	K_ADD_AFTER,
	K_ADD_WITH,
	K_ADD_RL,
	K_TRY_GET,
	K_GET_TIMEOUT0,
	K_GET,
	K_DONE,
	K_LEN,
	K_STEP,
	K_SHUTTING_DOWN,
	K_FORGET,
	K_NUM_REQUEUES,
	K_INVALID,
	K_SHUTDOWN,
	K_DRAIN,
	/* the 0.2 alphabet only (header bit 7) */
	K_FINISH,
	K_CANCEL,
	K_ADD_REPLACE,
	K_ADD_MANY,
	K_GET_BATCH,
	K_DONE_MANY,
	K_ITEM_DIRTY,
	K_METRICS,
	K_INVALID2,
	K_COUNT
};

/* weights out of 256: [0] the 0.1 alphabet (its table is what it was
 * before 0.2, so that inputs without header bit 7 decode as they did),
 * [1] the 0.2 alphabet */
static const unsigned char kind_weight[2][K_COUNT] = {
	{
		[K_ADD] = 30, [K_ADD_AFTER] = 30, [K_ADD_WITH] = 36, [K_ADD_RL] = 10,
		[K_TRY_GET] = 24, [K_GET_TIMEOUT0] = 6, [K_GET] = 14, [K_DONE] = 40,
		[K_LEN] = 14, [K_STEP] = 22, [K_SHUTTING_DOWN] = 4, [K_FORGET] = 6,
		[K_NUM_REQUEUES] = 6, [K_INVALID] = 10, [K_SHUTDOWN] = 2, [K_DRAIN] = 2,
	},
	{
		[K_ADD] = 20, [K_ADD_AFTER] = 18, [K_ADD_WITH] = 20, [K_ADD_RL] = 6,
		[K_TRY_GET] = 16, [K_GET_TIMEOUT0] = 4, [K_GET] = 10, [K_DONE] = 18,
		[K_LEN] = 6, [K_STEP] = 20, [K_SHUTTING_DOWN] = 2, [K_FORGET] = 4,
		[K_NUM_REQUEUES] = 4, [K_INVALID] = 4, [K_SHUTDOWN] = 2, [K_DRAIN] = 2,
		[K_FINISH] = 26, [K_CANCEL] = 12, [K_ADD_REPLACE] = 14, [K_ADD_MANY] = 12,
		[K_GET_BATCH] = 14, [K_DONE_MANY] = 6, [K_ITEM_DIRTY] = 6, [K_METRICS] = 6,
		[K_INVALID2] = 4,
	},
};

static unsigned char kind_of_byte[2][256];

static void kinds_init(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	for (int v = 0; v < 2; v++) {
		int b = 0;
		for (int k = 0; k < K_COUNT; k++)
			for (int w = 0; w < kind_weight[v][k] && b < 256; w++)
				kind_of_byte[v][b++] = (unsigned char)k;
		while (b < 256) /* weights sum to 256; keep any rest harmless */
			kind_of_byte[v][b++] = K_LEN;
	}
}

/* delays for add_after / add_with (a & 15); GRID_n: due at the n-th next
 * whole millisecond, so that many keys share a ready time */
#define GRID1 (INT64_MIN + 1)
#define GRID2 (INT64_MIN + 2)
static const int64_t delay_table[16] = {
	0, -1, 1, MS - 1, MS, MS, 2 * MS, 3 * MS,
	5 * MS, 8 * MS, 13 * MS, 21 * MS, GRID1, GRID2, INT64_MAX, INT64_MIN,
};

static const int64_t step_table[8] = { 0, -3, 1, MS - 1, MS, 2 * MS, 5 * MS, 30 * MS };

static const int prio_table[8] = { 0, 0, 1, 2, 3, -1, -2, 1 };

/* add_with with replace (x & 7): mostly the grid, so that a replace often
 * lands on a ready time other keys share */
static const int64_t replace_delay[8] = { GRID1, GRID1, GRID2, GRID2, MS, 3 * MS, 0, 21 * MS };

/* add_many's opts: priority ((y >> 3) & 3), after_ns ((y >> 5) & 3) */
static const int many_prio[4] = { 0, 1, 2, -1 };
static const int64_t many_delay[4] = { 0, MS, GRID1, 3 * MS };

#define MANY_MAX 4  /* add_many's keys */
#define BATCH_MAX 4 /* get_batch's max */

enum invalid {
	INV_ADD_NULL, INV_ADD_LONG, INV_AFTER_NULL, INV_AFTER_LONG,
	INV_WITH_NULL_OPTS, INV_WITH_SIZE0, INV_WITH_SIZE_SHORT, INV_WITH_NULL_KEY,
	INV_RL_NULL, INV_RL_LONG, INV_TRY_GET_NULL, INV_GET_TIMEOUT_NULL,
	INV_GET_NULL, INV_DONE_NULL, INV_FORGET_NULL, INV_REQUEUES_LONG,
	INV_COUNT
};

/* the 0.2 calls' bad inputs (K_INVALID2; K_INVALID keeps its 16) */
enum invalid2 {
	INV2_FINISH_NULL, INV2_FINISH_OUTCOME, INV2_FINISH_NEG_AFTER, INV2_CANCEL_NULL,
	INV2_CANCEL_LONG, INV2_CANCEL_QNULL, INV2_MANY_NULL, INV2_MANY_BAD_KEY,
	INV2_MANY_BAD_OPTS, INV2_MANY_ZERO, INV2_BATCH_NULL, INV2_BATCH_MAX0,
	INV2_DONE_MANY_NULL, INV2_DONE_MANY_NULL_HANDLE, INV2_DONE_MANY_ZERO,
	INV2_DIRTY_NULL, INV2_DIRTY_QNULL,
	INV2_COUNT
};

static const char *const invalid2_name[INV2_COUNT] = {
	"finish(NULL)", "finish(outcome outside the enum)", "finish(RETRY_AFTER, after < 0)",
	"cancel(NULL, len>0)", "cancel(len>KWQ_KEY_MAX)", "cancel(q NULL)",
	"add_many(keys NULL, n 2)", "add_many(a good key, then NULL with len>0)",
	"add_many(opts.size 0)", "add_many(NULL, 0)", "get_batch(items NULL)",
	"get_batch(max 0)", "done_many(NULL, 1)", "done_many(held handles and a NULL)",
	"done_many(NULL, 0)", "item_dirty(NULL)", "item_dirty(q NULL, a held handle)",
};

static const char *const outcome_name[4] = { "OK", "RETRY", "RETRY_AFTER", "DROP" };

static const char *const invalid_name[INV_COUNT] = {
	"add(NULL, len>0)", "add(len>KWQ_KEY_MAX)", "add_after(NULL, len>0)",
	"add_after(len>KWQ_KEY_MAX)", "add_with(opts NULL)", "add_with(opts.size 0, rl)",
	"add_with(opts.size short)", "add_with(NULL key, rl)", "add_rate_limited(NULL, len>0)",
	"add_rate_limited(len>KWQ_KEY_MAX)", "try_get(item NULL)", "get_timeout(item NULL)",
	"get(item NULL)", "done(NULL)", "forget(NULL, len>0)", "num_requeues(len>KWQ_KEY_MAX)",
};

/* An operation resolved against the model's state. */
struct act {
	enum kind kind;
	int key;
	bool key_null, scratch;
	int64_t delay;  /* add_after, add_with after_ns; step: delta */
	int prio;
	bool rl;
	int variant;    /* get flavour; bad input kind; long length choice;
	                   finish: the outcome */
	int target;     /* done, finish, item_dirty: the key whose handle is
	                   passed, -1 NULL */
	int64_t timeout;
	bool replace;   /* add_with, add_many */
	bool no_opts;   /* add_many: opts NULL (kwq_add) */
	int n;          /* add_many: keys; get_batch: max; done_many: handles */
	int many[NKEYS]; /* add_many: the keys; done_many: the handles' keys */
};

/* What a call returned. */
struct res {
	int rc;
	int key;   /* gets: the key got (KEY_*), else KEY_NONE */
	int prio;  /* gets: kwq_item_priority */
	long val;  /* len, shutting_down, num_requeues, item_dirty; barrier:
	              done's rc; finish: on_give_up's key + 1 (0: not called,
	              -1: called twice or with bytes of no known key) */
	int bkey[BATCH_MAX], bprio[BATCH_MAX]; /* get_batch: the items */
	long depth, delayed, give_ups;         /* metrics */
	bool rc_or_1;   /* the model's answer only: rc 0, or 1 will do (a quirk) */
};

/* ---------------------------------------------------------------- model */

enum mstate { M_ABSENT, M_QUEUED, M_HELD, M_DIRTY };

struct mkey {
	enum mstate state;
	int qprio, dprio, hprio;
	uint64_t qseq;
	bool waiting;
	int64_t ready;
	uint64_t wseq;
	int wprio;
	int requeues;
	bool lingers;   /* DIFF_QUIRK_SHUTDOWN_DROPS_LATE: shutdown dropped its
	                   wait, and no cancel has looked since */
};

struct model {
	struct mkey k[NKEYS];
	bool shut;
	int64_t now;
	uint64_t qseq, wseq;
	int max_attempts;       /* kwq_config.max_attempts */
	long depth, delayed, give_ups; /* the metrics, counted as kwq.h says */
	unsigned quirks;
	enum diff_mutation mut;
	struct diff_stats *st;
};

static int64_t sat_add(int64_t a, int64_t b)
{
	int64_t r;
	if (__builtin_add_overflow(a, b, &r))
		return b > 0 ? INT64_MAX : INT64_MIN;
	return r;
}

static int max_int(int a, int b)
{
	return a > b ? a : b;
}

static size_t m_len(const struct model *m)
{
	size_t n = 0;
	for (int i = 0; i < NKEYS; i++)
		n += m->k[i].state == M_QUEUED ||
		     (m->mut == DIFF_MUT_LEN_COUNTS_DIRTY && m->k[i].state == M_DIRTY);
	return n;
}

static bool m_busy(const struct model *m)
{
	for (int i = 0; i < NKEYS; i++)
		if (m->k[i].state != M_ABSENT)
			return true;
	return false;
}

static int m_head(const struct model *m)
{
	int h = -1;
	for (int i = 0; i < NKEYS; i++) {
		const struct mkey *k = &m->k[i];
		if (k->state != M_QUEUED)
			continue;
		if (h < 0 || k->qprio > m->k[h].qprio ||
		    (k->qprio == m->k[h].qprio && k->qseq < m->k[h].qseq))
			h = i;
	}
	return h;
}

/* The implementation's add (ops->add): no cancel, no shutdown check. */
static void m_add(struct model *m, int i, int p)
{
	struct mkey *k = &m->k[i];
	switch (k->state) {
	case M_ABSENT:
		k->state = M_QUEUED;
		k->qprio = p;
		k->qseq = ++m->qseq;
		m->depth++; /* a counted add */
		break;
	case M_QUEUED:
		if (p > k->qprio) {
			k->qprio = p;
			if (m->mut != DIFF_MUT_RAISE_KEEPS_POSITION)
				k->qseq = ++m->qseq;
			m->st->raises++;
		}
		break;
	case M_HELD:
		k->state = M_DIRTY;
		k->dprio = p;
		m->depth++; /* the first re-add of a held item is counted */
		m->st->dirty_adds++;
		break;
	case M_DIRTY:
		k->dprio = max_int(k->dprio, p);
		break;
	}
}

/* A wait ends (fired, cancelled, dropped): the delayed gauge's -1. */
static void m_unwait(struct model *m, struct mkey *k)
{
	k->waiting = false;
	m->delayed--;
}

static int m_add_now(struct model *m, int i, int p)
{
	struct mkey *k = &m->k[i];
	if (m->shut) {
		m->st->adds_refused++;
		return -ESHUTDOWN;
	}
	m->st->adds++;
	if (k->waiting && m->mut != DIFF_MUT_ADD_KEEPS_WAIT) {
		if (!(m->quirks & DIFF_QUIRK_ADD_DROPS_WAIT_PRIO))
			p = max_int(p, k->wprio);
		m_unwait(m, k);
		m->st->cancels++;
	}
	m_add(m, i, p);
	return 0;
}

/* replace: kwq_add_opts.replace (a waiting key takes this call's ready
 * time and priority, and its place among equal ready times) */
static int m_delayed(struct model *m, int i, int64_t d, int p, bool replace)
{
	struct mkey *k = &m->k[i];
	if (d <= 0)
		return m_add_now(m, i, p);
	if (m->shut) {
		m->st->adds_refused++;
		return -ESHUTDOWN;
	}
	m->st->adds++;
	if ((k->state == M_QUEUED || k->state == M_DIRTY) && m->mut != DIFF_MUT_NO_ABSORB) {
		m->st->absorbed++;
		if (!((m->quirks & DIFF_QUIRK_ABSORB_POSITIVE_ONLY) && p <= 0))
			m_add(m, i, p);
		return 0;
	}
	int64_t ready = sat_add(m->now, d);
	uint64_t seq = ++m->wseq;
	if (!k->waiting) {
		k->waiting = true;
		k->ready = ready;
		k->wseq = seq;
		k->wprio = p;
		m->delayed++;
		m->st->waits_new++;
		return 0;
	}
	if (replace && m->mut != DIFF_MUT_REPLACE_IGNORED) {
		bool tie = ready == k->ready;
		m->st->replaces++;
		m->st->replace_ties += tie;
		k->ready = ready;
		k->wprio = p;
		if (!(tie && m->mut == DIFF_MUT_REPLACE_KEEPS_TIE))
			k->wseq = seq; /* a new call setting that time */
		return 0;
	}
	k->wprio = m->mut == DIFF_MUT_WAIT_PRIO_LOWEST ? (p < k->wprio ? p : k->wprio)
						       : max_int(k->wprio, p);
	bool take = m->mut == DIFF_MUT_LATER_READY_WINS ? ready > k->ready : ready < k->ready;
	if (take) {
		k->ready = ready;
		k->wseq = seq;
		m->st->waits_earlier++;
	} else {
		m->st->waits_kept++;
	}
	return 0;
}

static bool m_due(const struct model *m, const struct mkey *k)
{
	return k->waiting && (m->mut == DIFF_MUT_READY_STRICT ? k->ready < m->now
							      : k->ready <= m->now);
}

/* Add everything due, in (ready time, call) order. */
static void m_fire(struct model *m)
{
	for (;;) {
		int f = -1;
		for (int i = 0; i < NKEYS; i++) {
			const struct mkey *k = &m->k[i];
			if (!m_due(m, k))
				continue;
			if (f < 0 || k->ready < m->k[f].ready) {
				f = i;
			} else if (k->ready == m->k[f].ready) {
				m->st->ties++;
				bool first = m->mut == DIFF_MUT_TIES_LIFO ? k->wseq > m->k[f].wseq
									  : k->wseq < m->k[f].wseq;
				if (first)
					f = i;
			}
		}
		if (f < 0)
			return;
		struct mkey *k = &m->k[f];
		m_unwait(m, k);
		m->st->fired++;
		m->st->fired_into_held += k->state == M_HELD;
		m_add(m, f, k->wprio);
	}
}

static int64_t m_when(struct model *m, int i)
{
	int n = ++m->k[i].requeues;
	m->st->rate_limited++;
	if (n - 1 >= 5)
		return LIMIT_MAX;
	int64_t w = LIMIT_BASE << (n - 1);
	return w < LIMIT_MAX ? w : LIMIT_MAX;
}

static void m_shutdown(struct model *m)
{
	m->shut = true;
	if (m->mut != DIFF_MUT_SHUTDOWN_KEEPS_WAITS)
		for (int i = 0; i < NKEYS; i++)
			if (m->k[i].waiting) {
				m_unwait(m, &m->k[i]);
				m->k[i].lingers = (m->quirks & DIFF_QUIRK_SHUTDOWN_DROPS_LATE) != 0;
			}
}

/* kwq_done of the held key i. */
static void m_done(struct model *m, int i)
{
	struct mkey *k = &m->k[i];
	m->st->dones++;
	if (k->state == M_DIRTY) {
		k->state = M_QUEUED;
		k->qprio = m->mut == DIFF_MUT_DIRTY_KEEPS_HELD_PRIO ? k->hprio : k->dprio;
		k->qseq = ++m->qseq;
		m->st->requeues_on_done++;
	} else {
		k->state = M_ABSENT;
	}
}

/* A get (kwq_get_batch takes what consecutive ones would): the head, or -1. */
static int m_take(struct model *m)
{
	int h = m_head(m);
	m->st->gets++;
	if (h < 0) {
		m->st->gets_empty++;
		return -1;
	}
	struct mkey *k = &m->k[h];
	k->state = M_HELD;
	k->hprio = k->qprio;
	m->depth--;
	return h;
}

/*
 * kwq_cancel: queued -> absent; a wait dropped; held+dirty -> held (the
 * re-queue dropped, kwq_item_dirty false again); held and absent
 * unchanged.  A removed queued or held+dirty item leaves depth, a removed
 * wait delayed.  1 when something was removed.  Works after shutdown; does
 * not touch the limiter.
 */
static int m_cancel(struct model *m, int i)
{
	struct mkey *k = &m->k[i];
	int removed = 0;
	if (k->waiting && m->mut != DIFF_MUT_CANCEL_KEEPS_WAIT) {
		m_unwait(m, k);
		removed = 1;
	}
	if (k->state == M_QUEUED) {
		k->state = M_ABSENT;
		removed = 1;
	} else if (k->state == M_DIRTY) {
		m->st->cancels_dirty++;
		removed = 1;
		if (m->mut == DIFF_MUT_CANCEL_KEEPS_DIRTY)
			return removed;
		k->state = M_HELD;
	} else {
		return removed;
	}
	if (m->mut != DIFF_MUT_DEPTH_IGNORES_CANCEL)
		m->depth--;
	return removed;
}

/*
 * kwq_finish of the held key i (outcome and after_ns checked): what a
 * client-go worker does after processing, then the done.
 *   OK           forget;
 *   RETRY        with max_attempts m > 0 and the count already >= m: a
 *                give-up (forget, give_ups_total + 1, on_give_up once),
 *                else add_rate_limited (when() counts even if shutdown
 *                refuses the add);
 *   RETRY_AFTER  add_after(after_ns), the limiter untouched;
 *   DROP         forget, and the key's wait (only) cancelled: a held+dirty
 *                key stays dirty.
 * Then the done: a held+dirty key is queued again in every case.  0, or the
 * add's -ESHUTDOWN (the done still happened).  *gave_up: on_give_up ran.
 */
static int m_finish(struct model *m, int i, int outcome, int64_t after, bool *gave_up)
{
	struct mkey *k = &m->k[i];
	int rc = 0;
	*gave_up = false;
	m->st->finishes[outcome]++;
	switch (outcome) {
	case KWQ_OK:
		k->requeues = 0;
		break;
	case KWQ_RETRY: {
		int m_ = m->max_attempts;
		if (m_ > 0 && (m->mut == DIFF_MUT_GIVE_UP_LATE ? k->requeues > m_
							       : k->requeues >= m_)) {
			k->requeues = 0;
			m->give_ups++;
			m->st->give_ups++;
			*gave_up = true;
		} else {
			rc = m_delayed(m, i, m_when(m, i), 0, false);
		}
		break;
	}
	case KWQ_RETRY_AFTER:
		if (m->mut == DIFF_MUT_RETRY_AFTER_COUNTS)
			k->requeues++;
		rc = m_delayed(m, i, after, 0, false);
		break;
	case KWQ_DROP:
		k->requeues = 0;
		if (k->waiting && m->mut != DIFF_MUT_DROP_KEEPS_WAIT) {
			m_unwait(m, k);
			m->st->cancels++;
		}
		if (k->state == M_DIRTY && m->mut == DIFF_MUT_DROP_DROPS_DIRTY) {
			k->state = M_HELD;
			m->depth--;
		}
		break;
	}
	m->st->finish_refused += rc != 0;
	m_done(m, i);
	return rc;
}

/* kwq_add_many: an add_with (kwq_add with opts NULL) per key, in order. */
static int m_add_many(struct model *m, const struct act *a)
{
	if (m->shut) {
		m->st->adds_refused++;
		return -ESHUTDOWN;
	}
	m->st->many_calls++;
	for (int j = 0; j < a->n; j++) {
		int i = a->many[m->mut == DIFF_MUT_ADD_MANY_REVERSED ? a->n - 1 - j : j];
		m->st->many_keys++;
		if (a->no_opts)
			m_add_now(m, i, 0);
		else
			m_delayed(m, i, a->delay > 0 ? a->delay : 0, a->prio, a->replace);
	}
	return a->n;
}

static struct res res_rc(int rc)
{
	return (struct res){ .rc = rc, .key = KEY_NONE };
}

/* The model's answer to an action (and its state change). */
static struct res m_exec(struct model *m, const struct act *a)
{
	int i = a->key;
	switch (a->kind) {
	case K_ADD:
		return res_rc(m_add_now(m, i, 0));
	case K_ADD_AFTER:
		return res_rc(m_delayed(m, i, a->delay, 0, false));
	case K_ADD_WITH:
	case K_ADD_REPLACE: {
		int64_t wait = a->delay > 0 ? a->delay : 0;
		if (a->rl) {
			int64_t w = m_when(m, i);
			if (wait == 0 || w < wait)
				wait = w;
		}
		return res_rc(m_delayed(m, i, wait, a->prio, a->replace));
	}
	case K_ADD_RL:
		return res_rc(m_delayed(m, i, m_when(m, i), 0, false));
	case K_TRY_GET:
	case K_GET_TIMEOUT0:
	case K_GET: {
		int h = m_take(m);
		if (h < 0) {
			if (m->shut)
				return res_rc(-ESHUTDOWN);
			return res_rc(a->kind == K_TRY_GET ? -EAGAIN : -ETIMEDOUT);
		}
		return (struct res){ .rc = 0, .key = h, .prio = m->k[h].qprio };
	}
	case K_DONE:
		if (a->target < 0) {
			m->st->einval++;
			return res_rc(-EINVAL);
		}
		m_done(m, a->target);
		return res_rc(0);
	case K_LEN:
		return (struct res){ .key = KEY_NONE, .val = (long)m_len(m) };
	case K_STEP: {
		m->st->steps++;
		if (a->delay > 0)
			m->now = sat_add(m->now, a->delay);
		if (!m->shut) {
			m->now = sat_add(m->now, 1); /* the barrier's step */
			m_fire(m);
			return (struct res){ .key = KEY_BARRIER, .prio = BARRIER_PRIO };
		}
		m_fire(m); /* nothing waits after a shutdown (unless mutated) */
		return res_rc(0);
	}
	case K_SHUTTING_DOWN:
		return (struct res){ .key = KEY_NONE, .val = m->shut };
	case K_FORGET:
		if (m->mut != DIFF_MUT_FORGET_KEEPS_COUNT)
			m->k[i].requeues = 0;
		return res_rc(0);
	case K_NUM_REQUEUES:
		return (struct res){ .key = KEY_NONE, .val = m->k[i].requeues };
	case K_INVALID:
		m->st->einval++;
		return res_rc(-EINVAL);
	case K_SHUTDOWN:
		m->st->shutdowns++;
		m_shutdown(m);
		return res_rc(0);
	case K_DRAIN:
		m->st->drains++;
		m_shutdown(m); /* only run when nothing is queued or held */
		return res_rc(0);
	case K_FINISH: {
		bool gave_up;
		if (a->target < 0) {
			m->st->einval++;
			return res_rc(-EINVAL); /* finish(q, NULL) */
		}
		if (a->variant == KWQ_RETRY_AFTER && a->delay < 0) {
			m->st->einval++;
			return res_rc(-EINVAL); /* nothing happened: still held */
		}
		int rc = m_finish(m, a->target, a->variant, a->delay, &gave_up);
		return (struct res){ .rc = rc, .key = KEY_NONE, .val = gave_up ? a->target + 1 : 0 };
	}
	case K_CANCEL: {
		int rc = m_cancel(m, i);
		m->st->cancels_removed += rc;
		struct res r = res_rc(rc);
		r.rc_or_1 = rc == 0 && m->k[i].lingers;
		m->k[i].lingers = false; /* gone now, whichever removed it */
		return r;
	}
	case K_ADD_MANY:
		return res_rc(m_add_many(m, a));
	case K_GET_BATCH: {
		struct res r = { .key = KEY_NONE };
		m->st->batches++;
		int n = 0;
		for (; n < a->n; n++) {
			int h = m_take(m);
			if (h < 0)
				break;
			r.bkey[n] = h;
			r.bprio[n] = m->k[h].qprio;
		}
		if (n == 0) {
			if (m->shut)
				r.rc = -ESHUTDOWN;
			else
				r.rc = a->timeout > 0 ? -ETIMEDOUT : -EAGAIN;
			return r;
		}
		m->st->batch_items += (unsigned long)n;
		m->st->batch_full += n == a->n;
		if (m->mut == DIFF_MUT_BATCH_REVERSED)
			for (int j = 0; j < n / 2; j++) {
				int t = r.bkey[j], tp = r.bprio[j];
				r.bkey[j] = r.bkey[n - 1 - j];
				r.bprio[j] = r.bprio[n - 1 - j];
				r.bkey[n - 1 - j] = t;
				r.bprio[n - 1 - j] = tp;
			}
		r.rc = n;
		return r;
	}
	case K_DONE_MANY:
		m->st->done_many_calls++;
		for (int j = 0; j < a->n; j++) {
			m->st->done_many_items++;
			m_done(m, a->many[m->mut == DIFF_MUT_DONE_MANY_REVERSED ? a->n - 1 - j : j]);
		}
		return res_rc(0);
	case K_ITEM_DIRTY: {
		bool d = false;
		if (a->target >= 0) {
			const struct mkey *k = &m->k[a->target];
			d = k->state == M_DIRTY ||
			    (m->mut == DIFF_MUT_DIRTY_COUNTS_WAIT && k->waiting);
		}
		m->st->dirty_true += d;
		m->st->dirty_false += !d;
		return (struct res){ .key = KEY_NONE, .val = d };
	}
	case K_METRICS:
		m->st->metric_reads++;
		return (struct res){ .key = KEY_NONE, .depth = m->depth, .delayed = m->delayed,
				     .give_ups = m->give_ups };
	case K_INVALID2:
		if (a->variant == INV2_MANY_ZERO || a->variant == INV2_DONE_MANY_ZERO)
			return res_rc(0); /* n == 0 returns 0 (also after shutdown) */
		m->st->einval++;
		if (a->variant == INV2_DIRTY_NULL || a->variant == INV2_DIRTY_QNULL)
			return (struct res){ .key = KEY_NONE, .val = 0 }; /* false */
		return res_rc(-EINVAL);
	case K_COUNT:
		break;
	}
	return res_rc(-9999);
}

static const char *errname(int rc, char *buf, size_t n)
{
	switch (rc) {
	case 0: return "0";
	case -EINVAL: return "-EINVAL";
	case -ESHUTDOWN: return "-ESHUTDOWN";
	case -EAGAIN: return "-EAGAIN";
	case -ETIMEDOUT: return "-ETIMEDOUT";
	case -ENOMEM: return "-ENOMEM";
	default:
		snprintf(buf, n, "%d", rc);
		return buf;
	}
}

static void fmt_key(char *buf, size_t n, int key)
{
	switch (key) {
	case KEY_BARRIER: snprintf(buf, n, "barrier"); break;
	case KEY_UNKNOWN: snprintf(buf, n, "UNKNOWN-BYTES"); break;
	case KEY_NULLPTR: snprintf(buf, n, "NULL-KEY-POINTER"); break;
	case KEY_DOUBLE: snprintf(buf, n, "ALREADY-HELD-KEY"); break;
	case KEY_TRAILER: snprintf(buf, n, "trailer"); break;
	default: snprintf(buf, n, "k%d", key); break;
	}
}

/* ------------------------------------------------------- implementations */

struct part {
	const char *name;
	char name_buf[32];
	kwq_t *q;
	kwq_clock_t *clock;
	kwq_item_t *held[NKEYS];
	int64_t patience;       /* ns */
	size_t trailing;        /* barrier trailers queued (see p_barrier) */
	uint64_t trail_next;
	int give_up_calls, give_up_key; /* on_give_up since the last finish */
};

/* kwq_config.on_give_up: what it was called with, checked by the finish */
static void on_give_up(void *ctx, const void *key, size_t len)
{
	struct part *p = ctx;
	p->give_up_calls++;
	p->give_up_key = key_index(key, len);
}

static const void *key_arg(const struct act *a, size_t *len)
{
	*len = keys[a->key].len;
	if (a->key_null && *len == 0)
		return NULL;
	if (a->scratch) {
		memcpy(scratch, keys[a->key].p, *len);
		return scratch;
	}
	return keys[a->key].p;
}

/* After the call: the queue must have copied the key. */
static void key_scribble(const struct act *a)
{
	if (a->scratch)
		memset(scratch, 0xa5, keys[a->key].len);
}

static struct res got(struct part *p, int rc, kwq_item_t *it)
{
	if (rc != 0)
		return res_rc(rc);
	size_t len = 0;
	const void *kp = kwq_item_key(it, &len);
	struct res r = { .rc = 0, .key = key_index(kp, len), .prio = kwq_item_priority(it) };
	if (r.key >= 0) {
		if (p->held[r.key] != NULL)
			r.key = KEY_DOUBLE;
		else
			p->held[r.key] = it;
	}
	/* an unknown item stays held: kwq_free frees it */
	return r;
}

static struct res p_invalid(struct part *p, const struct act *a)
{
	kwq_t *q = p->q;
	size_t klen;
	const void *k = key_arg(a, &klen);
	size_t longlen = a->variant & 1 ? SIZE_MAX : (size_t)KWQ_KEY_MAX + 1;
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	int rc = -9999;

	o.rate_limited = true;
	o.priority = 1;
	switch (a->variant >> 1) {
	case INV_ADD_NULL: rc = kwq_add(q, NULL, 1); break;
	case INV_ADD_LONG: rc = kwq_add(q, big, longlen); break;
	case INV_AFTER_NULL: rc = kwq_add_after(q, NULL, 3, MS); break;
	case INV_AFTER_LONG: rc = kwq_add_after(q, big, longlen, 0); break;
	case INV_WITH_NULL_OPTS: rc = kwq_add_with(q, k, klen, NULL); break;
	case INV_WITH_SIZE0:
		o.size = 0;
		rc = kwq_add_with(q, k, klen, &o);
		break;
	case INV_WITH_SIZE_SHORT:
		o.size = offsetof(struct kwq_add_opts, priority);
		rc = kwq_add_with(q, k, klen, &o);
		break;
	case INV_WITH_NULL_KEY: rc = kwq_add_with(q, NULL, 2, &o); break;
	case INV_RL_NULL: rc = kwq_add_rate_limited(q, NULL, 4); break;
	case INV_RL_LONG: rc = kwq_add_rate_limited(q, big, longlen); break;
	case INV_TRY_GET_NULL: rc = kwq_try_get(q, NULL); break;
	case INV_GET_TIMEOUT_NULL: rc = kwq_get_timeout(q, NULL, 0); break;
	case INV_GET_NULL: rc = kwq_get(q, NULL); break;
	case INV_DONE_NULL: rc = kwq_done(q, NULL); break;
	case INV_FORGET_NULL: rc = kwq_forget(q, NULL, 1); break;
	case INV_REQUEUES_LONG: rc = kwq_num_requeues(q, big, longlen); break;
	default: break;
	}
	key_scribble(a);
	return res_rc(rc);
}

/* Any handle the model says is held (the lowest key), or NULL. */
static kwq_item_t *some_held(const struct part *p)
{
	for (int i = 0; i < NKEYS; i++)
		if (p->held[i] != NULL)
			return p->held[i];
	return NULL;
}

static struct res p_invalid2(struct part *p, const struct act *a)
{
	kwq_t *q = p->q;
	size_t klen;
	const void *k = key_arg(a, &klen);
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	struct kwq_key_ref refs[NKEYS + 1];
	kwq_item_t *items[NKEYS + 1];
	int rc = -9999, n = 0;

	switch (a->variant) {
	case INV2_FINISH_NULL: rc = kwq_finish(q, NULL, KWQ_OK, 0); break;
	case INV2_FINISH_OUTCOME:
		rc = kwq_finish(q, some_held(p), a->n ? (enum kwq_outcome)-1 : (enum kwq_outcome)4, 0);
		break;
	case INV2_FINISH_NEG_AFTER:
		rc = kwq_finish(q, some_held(p), KWQ_RETRY_AFTER, a->n ? INT64_MIN : -1);
		break;
	case INV2_CANCEL_NULL: rc = kwq_cancel(q, NULL, 1); break;
	case INV2_CANCEL_LONG:
		rc = kwq_cancel(q, big, a->n ? SIZE_MAX : (size_t)KWQ_KEY_MAX + 1);
		break;
	case INV2_CANCEL_QNULL: rc = kwq_cancel(NULL, k, klen); break;
	case INV2_MANY_NULL: rc = kwq_add_many(q, NULL, 2, a->n ? &o : NULL); break;
	case INV2_MANY_BAD_KEY:
		refs[0] = (struct kwq_key_ref){ k, klen };
		refs[1] = a->n ? (struct kwq_key_ref){ big, (size_t)KWQ_KEY_MAX + 1 }
			       : (struct kwq_key_ref){ NULL, 1 };
		rc = kwq_add_many(q, refs, 2, NULL);
		break;
	case INV2_MANY_BAD_OPTS:
		refs[0] = (struct kwq_key_ref){ k, klen };
		o.size = a->n ? offsetof(struct kwq_add_opts, priority) : 0;
		rc = kwq_add_many(q, refs, 1, &o);
		break;
	case INV2_MANY_ZERO: rc = kwq_add_many(q, NULL, 0, a->n ? &o : NULL); break;
	case INV2_BATCH_NULL: rc = kwq_get_batch(q, NULL, 2, 0); break;
	case INV2_BATCH_MAX0: rc = kwq_get_batch(q, items, 0, 0); break;
	case INV2_DONE_MANY_NULL: rc = kwq_done_many(q, NULL, 1); break;
	case INV2_DONE_MANY_NULL_HANDLE:
		for (int i = 0; i < NKEYS; i++)
			if (p->held[i] != NULL)
				items[n++] = p->held[i];
		items[n] = NULL; /* last, after every held handle: none may be done */
		rc = kwq_done_many(q, items, (size_t)n + 1);
		break;
	case INV2_DONE_MANY_ZERO: rc = kwq_done_many(q, NULL, 0); break;
	case INV2_DIRTY_NULL:
		return (struct res){ .key = KEY_NONE, .val = kwq_item_dirty(q, NULL) };
	case INV2_DIRTY_QNULL:
		return (struct res){ .key = KEY_NONE, .val = kwq_item_dirty(NULL, some_held(p)) };
	default: break;
	}
	key_scribble(a);
	return res_rc(rc);
}

/*
 * The barrier after a clock step: see the header comment.  want_len is the
 * model's kwq_len once what was due has been added.
 */
static struct res p_barrier(struct part *p, size_t want_len)
{
	struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
	unsigned char tk[TRAIL_LEN];
	o.after_ns = 1;
	o.priority = BARRIER_PRIO;
	int rc = kwq_add_with(p->q, barrier_key, BARRIER_LEN, &o);
	if (rc != 0)
		return res_rc(rc);
	trail_key(tk, p->trail_next++);
	o.priority = TRAIL_PRIO;
	rc = kwq_add_with(p->q, tk, sizeof tk, &o);
	if (rc != 0)
		return res_rc(rc);
	kwq_clock_fake_step(p->clock, 1);

	/* the trailer claimed its place: everything before it has been added */
	size_t target = want_len + p->trailing + 2, len;
	int64_t give_up = kwq_clock_now(NULL) + p->patience;
	for (int i = 0; (len = kwq_len(p->q)) < target && kwq_clock_now(NULL) < give_up; i++) {
		struct timespec ts = { 0, i < 100 ? 10000 : 1000000 };
		nanosleep(&ts, NULL);
	}
	if (len < target)
		return (struct res){ .rc = -ETIMEDOUT, .key = KEY_NONE, .val = (long)len };
	p->trailing++;
	kwq_item_t *it = NULL;
	rc = kwq_try_get(p->q, &it);
	struct res r = got(p, rc, it);
	if (rc == 0 && r.key == KEY_BARRIER)
		r.val = kwq_done(p->q, it);
	return r;
}

/* Nothing is queued in the model: take the trailers (a blocking get: the
 * last one may still be on its way).  0, or -1 when something else came. */
static int p_untrail(struct part *p, char *what, size_t n)
{
	while (p->trailing > 0) {
		kwq_item_t *it = NULL;
		int rc = kwq_get_timeout(p->q, &it, p->patience);
		struct res r = got(p, rc, it);
		if (rc != 0 || r.key != KEY_TRAILER || r.prio != TRAIL_PRIO) {
			char kb[24], e[16];
			fmt_key(kb, sizeof kb, r.key);
			snprintf(what, n, "%s: taking a barrier's trailer (nothing else queued): "
				 "got %s %s prio %d", p->name, errname(rc, e, sizeof e), kb, r.prio);
			return -1;
		}
		p->trailing--;
		rc = kwq_done(p->q, it);
		if (rc != 0) {
			snprintf(what, n, "%s: done of a trailer: %d", p->name, rc);
			return -1;
		}
	}
	return 0;
}

/*
 * kwq_get_batch.  With the model's queue shorter than max, the batch also
 * takes barrier trailers (queued below everything, see p_barrier): they
 * must come after every other item, are done at once and not counted.
 */
static struct res p_get_batch(struct part *p, const struct act *a)
{
	kwq_item_t *items[BATCH_MAX];
	int64_t t = a->timeout;
	if (a->variant == 3) /* KWQ_FOREVER only where it cannot block */
		t = kwq_len(p->q) > 0 || kwq_shutting_down(p->q) ? KWQ_FOREVER : p->patience;
	int rc = kwq_get_batch(p->q, items, (size_t)a->n, t);
	if (rc <= 0)
		return res_rc(rc);
	struct res r = { .key = KEY_NONE };
	int n = 0;
	bool trailers = false;
	for (int j = 0; j < rc && j < BATCH_MAX; j++) {
		struct res x = got(p, 0, items[j]);
		if (x.key == KEY_TRAILER && x.prio == TRAIL_PRIO && p->trailing > 0) {
			p->trailing--;
			kwq_done(p->q, items[j]);
			trailers = true;
			continue;
		}
		r.bkey[n] = trailers ? KEY_TRAILER : x.key; /* a trailer came first */
		r.bprio[n] = x.prio;
		n++;
	}
	r.rc = rc > BATCH_MAX ? rc : n;
	if (n == 0) /* only trailers: the model had nothing queued */
		r.rc = -9996;
	return r;
}

static struct res p_exec(struct part *p, const struct act *a, bool shut, size_t want_len)
{
	kwq_t *q = p->q;
	size_t klen;
	const void *k;
	kwq_item_t *it = NULL;
	struct res r;
	int rc;

	switch (a->kind) {
	case K_ADD:
		k = key_arg(a, &klen);
		rc = kwq_add(q, k, klen);
		key_scribble(a);
		return res_rc(rc);
	case K_ADD_AFTER:
		k = key_arg(a, &klen);
		rc = kwq_add_after(q, k, klen, a->delay);
		key_scribble(a);
		return res_rc(rc);
	case K_ADD_WITH:
	case K_ADD_REPLACE: {
		struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
		o.after_ns = a->delay;
		o.rate_limited = a->rl;
		o.priority = a->prio;
		o.replace = a->replace;
		k = key_arg(a, &klen);
		rc = kwq_add_with(q, k, klen, &o);
		key_scribble(a);
		return res_rc(rc);
	}
	case K_ADD_RL:
		k = key_arg(a, &klen);
		rc = kwq_add_rate_limited(q, k, klen);
		key_scribble(a);
		return res_rc(rc);
	case K_TRY_GET:
		rc = kwq_try_get(q, &it);
		return got(p, rc, it);
	case K_GET_TIMEOUT0:
		rc = kwq_get_timeout(q, &it, a->timeout);
		return got(p, rc, it);
	case K_GET:
		/* kwq_get only where it cannot block (the model and the
		 * queue itself say so): a wrong answer then reads as
		 * -ETIMEDOUT after 10 s rather than as a hang */
		if (a->variant == 0 && (kwq_len(q) > 0 || kwq_shutting_down(q)))
			rc = kwq_get(q, &it);
		else
			rc = kwq_get_timeout(q, &it, a->variant == 2 ? a->timeout : p->patience);
		return got(p, rc, it);
	case K_DONE:
		if (a->target < 0)
			return res_rc(kwq_done(q, NULL));
		it = p->held[a->target];
		p->held[a->target] = NULL;
		if (it == NULL)
			return res_rc(-9998); /* cannot happen after agreeing gets */
		return res_rc(kwq_done(q, it));
	case K_LEN: /* less the barriers' trailers */
		return (struct res){ .key = KEY_NONE, .val = (long)kwq_len(q) - (long)p->trailing };
	case K_STEP:
		kwq_clock_fake_step(p->clock, a->delay);
		if (!shut)
			return p_barrier(p, want_len);
		return res_rc(0);
	case K_SHUTTING_DOWN:
		return (struct res){ .key = KEY_NONE, .val = kwq_shutting_down(q) };
	case K_FORGET:
		k = key_arg(a, &klen);
		rc = kwq_forget(q, k, klen);
		key_scribble(a);
		return res_rc(rc);
	case K_NUM_REQUEUES:
		k = key_arg(a, &klen);
		rc = kwq_num_requeues(q, k, klen);
		key_scribble(a);
		r = (struct res){ .key = KEY_NONE, .val = rc };
		return r;
	case K_INVALID:
		return p_invalid(p, a);
	case K_SHUTDOWN:
		kwq_shutdown(q);
		return res_rc(0);
	case K_DRAIN:
		if (kwq_len(q) != 0)
			return res_rc(-9997); /* it would wait for a worker forever */
		kwq_shutdown_drain(q);
		return res_rc(0);
	case K_FINISH:
		if (a->target < 0)
			return res_rc(kwq_finish(q, NULL, (enum kwq_outcome)a->variant, a->delay));
		it = p->held[a->target];
		if (it == NULL)
			return res_rc(-9998);
		p->give_up_calls = 0;
		rc = kwq_finish(q, it, (enum kwq_outcome)a->variant, a->delay);
		if (rc != -EINVAL) /* every other return consumes the handle */
			p->held[a->target] = NULL;
		r = res_rc(rc);
		if (p->give_up_calls == 1)
			r.val = p->give_up_key >= 0 ? p->give_up_key + 1 : -1;
		else if (p->give_up_calls > 1)
			r.val = -1;
		return r;
	case K_CANCEL:
		k = key_arg(a, &klen);
		rc = kwq_cancel(q, k, klen);
		key_scribble(a);
		return res_rc(rc);
	case K_ADD_MANY: {
		struct kwq_add_opts o = KWQ_ADD_OPTS_INIT;
		struct kwq_key_ref refs[MANY_MAX];
		o.after_ns = a->delay;
		o.priority = a->prio;
		o.replace = a->replace;
		for (int j = 0; j < a->n; j++) /* key 0 ("") as NULL, len 0 */
			refs[j] = (struct kwq_key_ref){ a->many[j] == 0 ? NULL : keys[a->many[j]].p,
							keys[a->many[j]].len };
		return res_rc(kwq_add_many(q, refs, (size_t)a->n, a->no_opts ? NULL : &o));
	}
	case K_GET_BATCH:
		return p_get_batch(p, a);
	case K_DONE_MANY: {
		kwq_item_t *items[NKEYS];
		for (int j = 0; j < a->n; j++) {
			items[j] = p->held[a->many[j]];
			p->held[a->many[j]] = NULL;
			if (items[j] == NULL)
				return res_rc(-9998);
		}
		return res_rc(kwq_done_many(q, items, (size_t)a->n));
	}
	case K_ITEM_DIRTY:
		return (struct res){ .key = KEY_NONE,
				     .val = kwq_item_dirty(q, a->target < 0 ? NULL : p->held[a->target]) };
	case K_METRICS: {
		struct kwq_metrics mt = { .size = sizeof mt };
		rc = kwq_metrics_read(q, &mt);
		if (rc != 0)
			return res_rc(rc);
		/* less the barriers' trailers, queued, so in depth */
		return (struct res){ .key = KEY_NONE, .depth = (long)mt.depth - (long)p->trailing,
				     .delayed = (long)mt.delayed, .give_ups = (long)mt.give_ups_total };
	}
	case K_INVALID2:
		return p_invalid2(p, a);
	case K_COUNT:
		break;
	}
	return res_rc(-9999);
}

/* ----------------------------------------------------------------- run */

struct run {
	const struct diff_options *o;
	struct model m;
	struct part p[NPARTS];
	struct diff_stats st;
	char *log;
	size_t log_len, log_cap;
	size_t opno;
	int alphabet;   /* 0: 0.1, 1: 0.2 (header bit 7) */
};

static void logf_(struct run *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void logf_(struct run *r, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		size_t room = r->log_cap - r->log_len;
		va_start(ap, fmt);
		int n = vsnprintf(r->log ? r->log + r->log_len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if ((size_t)n < room) {
			r->log_len += (size_t)n;
			return;
		}
		size_t cap = r->log_cap ? r->log_cap * 2 : 4096;
		while (cap - r->log_len <= (size_t)n)
			cap *= 2;
		char *nl = realloc(r->log, cap);
		if (nl == NULL)
			return;
		r->log = nl;
		r->log_cap = cap;
	}
}

static void fmt_res(char *buf, size_t n, const struct act *a, const struct res *x)
{
	char e[16], kb[24];
	switch (a->kind) {
	case K_LEN: snprintf(buf, n, "len %ld", x->val); return;
	case K_SHUTTING_DOWN: snprintf(buf, n, "%s", x->val ? "true" : "false"); return;
	case K_NUM_REQUEUES: snprintf(buf, n, "%ld", x->val); return;
	case K_ITEM_DIRTY: snprintf(buf, n, "%s", x->val ? "true" : "false"); return;
	case K_CANCEL:
		if (x->rc_or_1) {
			snprintf(buf, n, "0 or 1 (quirk 0x%x)", DIFF_QUIRK_SHUTDOWN_DROPS_LATE);
			return;
		}
		break;
	case K_METRICS:
		snprintf(buf, n, "depth %ld, delayed %ld, give_ups_total %ld", x->depth,
			 x->delayed, x->give_ups);
		return;
	case K_FINISH:
		if (x->val != 0) {
			snprintf(buf, n, "%s, on_give_up(k%ld)", errname(x->rc, e, sizeof e),
				 x->val - 1);
			return;
		}
		break;
	case K_INVALID2:
		if (a->variant == INV2_DIRTY_NULL || a->variant == INV2_DIRTY_QNULL) {
			snprintf(buf, n, "%s", x->val ? "true" : "false");
			return;
		}
		break;
	case K_GET_BATCH:
		if (x->rc > 0) {
			size_t o = (size_t)snprintf(buf, n, "%d:", x->rc);
			for (int j = 0; j < x->rc && j < BATCH_MAX && o < n; j++) {
				fmt_key(kb, sizeof kb, x->bkey[j]);
				o += (size_t)snprintf(buf + o, n - o, " %s prio %d", kb, x->bprio[j]);
			}
			return;
		}
		break;
	default: break;
	}
	if (x->key == KEY_NONE) {
		snprintf(buf, n, "%s", errname(x->rc, e, sizeof e));
		return;
	}
	fmt_key(kb, sizeof kb, x->key);
	if (a->kind == K_STEP)
		snprintf(buf, n, "%s, barrier got %s prio %d, done %ld",
			 errname(x->rc, e, sizeof e), kb, x->prio, x->val);
	else
		snprintf(buf, n, "%s %s prio %d", errname(x->rc, e, sizeof e), kb, x->prio);
}

static void fmt_delay(char *buf, size_t n, int64_t d)
{
	if (d == INT64_MAX)
		snprintf(buf, n, "INT64_MAX");
	else if (d == INT64_MIN)
		snprintf(buf, n, "INT64_MIN");
	else if (d != 0 && d % MS == 0)
		snprintf(buf, n, "%lldms", (long long)(d / MS));
	else
		snprintf(buf, n, "%lldns", (long long)d);
}

static void fmt_act(char *buf, size_t n, const struct act *a)
{
	char kb[40], d[32];
	snprintf(kb, sizeof kb, "k%d%s%s", a->key,
		 a->key_null && keys[a->key].len == 0 ? "(NULL)" : "",
		 a->scratch ? "(copy)" : "");
	fmt_delay(d, sizeof d, a->delay);
	switch (a->kind) {
	case K_ADD: snprintf(buf, n, "add(%s)", kb); break;
	case K_ADD_AFTER: snprintf(buf, n, "add_after(%s, %s)", kb, d); break;
	case K_ADD_WITH:
		snprintf(buf, n, "add_with(%s, after %s, prio %d%s)", kb, d, a->prio,
			 a->rl ? ", rate_limited" : "");
		break;
	case K_ADD_RL: snprintf(buf, n, "add_rate_limited(%s)", kb); break;
	case K_TRY_GET: snprintf(buf, n, "try_get"); break;
	case K_GET_TIMEOUT0:
		snprintf(buf, n, "get_timeout(%lld)", (long long)a->timeout);
		break;
	case K_GET:
		if (a->variant == 0)
			snprintf(buf, n, "get");
		else
			snprintf(buf, n, "get_timeout(%lldns)", (long long)a->timeout);
		break;
	case K_DONE:
		if (a->target < 0)
			snprintf(buf, n, "done(NULL)");
		else
			snprintf(buf, n, "done(k%d)", a->target);
		break;
	case K_LEN: snprintf(buf, n, "len"); break;
	case K_STEP: snprintf(buf, n, "step(%s) + barrier", d); break;
	case K_SHUTTING_DOWN: snprintf(buf, n, "shutting_down"); break;
	case K_FORGET: snprintf(buf, n, "forget(%s)", kb); break;
	case K_NUM_REQUEUES: snprintf(buf, n, "num_requeues(%s)", kb); break;
	case K_INVALID:
		snprintf(buf, n, "bad input: %s%s", invalid_name[a->variant >> 1],
			 (a->variant >> 1) == INV_ADD_LONG || (a->variant >> 1) == INV_AFTER_LONG ||
			 (a->variant >> 1) == INV_RL_LONG || (a->variant >> 1) == INV_REQUEUES_LONG
				 ? (a->variant & 1 ? " [SIZE_MAX]" : " [KWQ_KEY_MAX+1]")
				 : "");
		break;
	case K_SHUTDOWN: snprintf(buf, n, "shutdown"); break;
	case K_DRAIN: snprintf(buf, n, "shutdown_drain"); break;
	case K_FINISH:
		if (a->target < 0)
			snprintf(buf, n, "finish(NULL, %s)", outcome_name[a->variant]);
		else
			snprintf(buf, n, "finish(k%d, %s, %s)", a->target, outcome_name[a->variant], d);
		break;
	case K_CANCEL: snprintf(buf, n, "cancel(%s)", kb); break;
	case K_ADD_REPLACE:
		snprintf(buf, n, "add_with(%s, after %s, prio %d%s, replace)", kb, d, a->prio,
			 a->rl ? ", rate_limited" : "");
		break;
	case K_ADD_MANY: {
		size_t o = (size_t)snprintf(buf, n, "add_many(");
		for (int j = 0; j < a->n && o < n; j++)
			o += (size_t)snprintf(buf + o, n - o, "%sk%d", j ? " " : "", a->many[j]);
		if (o >= n)
			break;
		if (a->no_opts)
			snprintf(buf + o, n - o, ", NULL)");
		else
			snprintf(buf + o, n - o, ", after %s, prio %d%s)", d, a->prio,
				 a->replace ? ", replace" : "");
		break;
	}
	case K_GET_BATCH:
		if (a->variant == 3)
			snprintf(buf, n, "get_batch(%d, KWQ_FOREVER)", a->n);
		else
			snprintf(buf, n, "get_batch(%d, %lldns)", a->n, (long long)a->timeout);
		break;
	case K_DONE_MANY: {
		size_t o = (size_t)snprintf(buf, n, "done_many(");
		for (int j = 0; j < a->n && o < n; j++)
			o += (size_t)snprintf(buf + o, n - o, "%sk%d", j ? " " : "", a->many[j]);
		if (o < n)
			snprintf(buf + o, n - o, ")");
		break;
	}
	case K_ITEM_DIRTY:
		if (a->target < 0)
			snprintf(buf, n, "item_dirty(NULL)");
		else
			snprintf(buf, n, "item_dirty(k%d)", a->target);
		break;
	case K_METRICS: snprintf(buf, n, "metrics_read"); break;
	case K_INVALID2:
		snprintf(buf, n, "bad input: %s%s", invalid2_name[a->variant], a->n ? " [2]" : "");
		break;
	case K_COUNT: snprintf(buf, n, "?"); break;
	}
}

/* x: an implementation's answer, y: the model's */
static bool res_eq(const struct res *x, const struct res *y)
{
	return (x->rc == y->rc || (y->rc_or_1 && x->rc == 1)) && x->key == y->key && x->prio == y->prio && x->val == y->val &&
	       memcmp(x->bkey, y->bkey, sizeof x->bkey) == 0 &&
	       memcmp(x->bprio, y->bprio, sizeof x->bprio) == 0 && x->depth == y->depth &&
	       x->delayed == y->delayed && x->give_ups == y->give_ups;
}

static void report(struct run *r, const char *what)
{
	FILE *f = r->o->report;
	const char *pre = r->o->prefix ? r->o->prefix : "";
	if (f == NULL)
		return;
	if (what != NULL)
		fprintf(f, "%sMISMATCH at operation %zu: %s\n", pre, r->opno, what);
	else
		fprintf(f, "%sall agree on all %zu operations\n", pre, r->opno);
	fprintf(f, "%soperation log (op: call -> model's answer):\n", pre);
	const char *s = r->log;
	while (s != NULL && *s != '\0') {
		const char *e = strchr(s, '\n');
		size_t len = e ? (size_t)(e - s) : strlen(s);
		fprintf(f, "%s  %.*s\n", pre, (int)len, s);
		s = e ? e + 1 : s + len;
	}
	fflush(f);
}

/* kwq_len must be exact between calls; allow a re-read (and count it) */
static bool len_agrees(struct run *r, struct part *p, size_t want)
{
	if (kwq_len(p->q) == want)
		return true;
	for (int64_t i = 0; i < p->patience / 5 / 1000000; i++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
		if (kwq_len(p->q) == want) {
			r->st.len_transient++;
			return true;
		}
	}
	return false;
}

/* Run one action everywhere; 0 when all agree. */
static int exec(struct run *r, const struct act *a)
{
	char desc[160], mres[160], pres[160], what[640];

	fmt_act(desc, sizeof desc, a);
	r->opno++;
	r->st.ops++;
	bool was_shut = r->m.shut;
	struct res want = m_exec(&r->m, a);
	fmt_res(mres, sizeof mres, a, &want);
	logf_(r, "%4zu: %-52s -> %s\n", r->opno, desc, mres);

	for (int i = 0; i < NPARTS; i++) {
		struct part *p = &r->p[i];
		struct res x = p_exec(p, a, was_shut, m_len(&r->m));
		/* the metrics are exact between calls, as kwq_len: a re-read */
		for (int64_t t = 0; a->kind == K_METRICS && !res_eq(&x, &want) &&
				    t < p->patience / 5 / 1000000; t++) {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
			x = p_exec(p, a, was_shut, m_len(&r->m));
			r->st.metrics_transient += res_eq(&x, &want);
		}
		if (!res_eq(&x, &want)) {
			fmt_res(pres, sizeof pres, a, &x);
			snprintf(what, sizeof what, "%s: model %s, %s %s", desc, mres,
				 p->name, pres);
			report(r, what);
			return 1;
		}
		if (a->kind == K_STEP && kwq_clock_now(p->clock) != r->m.now) {
			snprintf(what, sizeof what, "%s: %s's clock reads %lld, the model's %lld "
				 "(a driver bug)", desc, p->name,
				 (long long)kwq_clock_now(p->clock), (long long)r->m.now);
			report(r, what);
			return 1;
		}
	}
	size_t want_len = m_len(&r->m);
	for (int i = 0; i < NPARTS; i++) {
		struct part *p = &r->p[i];
		if (!len_agrees(r, p, want_len + p->trailing)) {
			snprintf(what, sizeof what, "after %s: model kwq_len %zu (+%zu barrier "
				 "trailers), %s %zu", desc, want_len, p->trailing, p->name,
				 kwq_len(p->q));
			report(r, what);
			return 1;
		}
		if (want_len == 0 && p_untrail(p, what, sizeof what) != 0) {
			report(r, what);
			return 1;
		}
	}
	return 0;
}

/* Decode one 4-byte operation against the model's current state. */
static struct act resolve(const struct run *r, const uint8_t *op)
{
	const struct model *m = &r->m;
	struct act a = { .kind = (enum kind)kind_of_byte[r->alphabet][op[0]], .target = -1 };
	uint8_t kb = op[1], x = op[2], y = op[3];

	a.key = kb & 15;
	a.key_null = (kb & 0x10) != 0;
	a.scratch = (kb & 0x20) != 0;
	a.prio = prio_table[y & 7];
	a.rl = (y & 0x40) != 0;
	int64_t d = delay_table[x & 15];
	if (d == GRID1 || d == GRID2) {
		int64_t grid = (m->now / MS + (d == GRID1 ? 1 : 2)) * MS;
		d = grid - m->now;
	}
	switch (a.kind) {
	case K_ADD_AFTER:
		a.delay = d;
		break;
	case K_ADD_WITH:
		a.delay = (x & 0x10) ? 0 : d;
		break;
	case K_STEP:
		a.delay = step_table[x & 7];
		break;
	case K_GET_TIMEOUT0: {
		static const int64_t t0[4] = { 0, -1, INT64_MIN, 0 };
		a.timeout = t0[y & 3];
		break;
	}
	case K_GET:
		if (m_head(m) >= 0 || m->shut) {
			a.variant = y & 1; /* kwq_get or a 10 s timeout */
			a.timeout = 10 * SEC;
		} else {
			a.variant = 2; /* must time out */
			a.timeout = 1 + (y & 15) * 1000;
		}
		break;
	case K_DONE:
	case K_FINISH:
	case K_ITEM_DIRTY:
	case K_DONE_MANY: {
		int held[NKEYS], n = 0;
		for (int i = 0; i < NKEYS; i++)
			if (m->k[i].state == M_HELD || m->k[i].state == M_DIRTY)
				held[n++] = i;
		a.target = n > 0 ? held[x % n] : -1;
		if (a.kind == K_FINISH) {
			/* after_ns is passed with every outcome: only
			 * RETRY_AFTER reads it (a negative one: -EINVAL) */
			a.variant = y & 3;
			a.delay = delay_table[(y >> 2) & 15];
			if (a.delay == GRID1 || a.delay == GRID2)
				a.delay = (m->now / MS + (a.delay == GRID1 ? 1 : 2)) * MS - m->now;
		} else if (a.kind == K_DONE_MANY) {
			/* the held handles whose place (mod 8) bit x has, in
			 * key order or (y & 1) reversed */
			a.target = -1;
			for (int j = 0; j < n; j++)
				if (x & (1u << (j & 7)))
					a.many[a.n++] = held[(y & 1) ? n - 1 - j : j];
		}
		break;
	}
	case K_ADD_REPLACE:
		a.replace = true;
		a.delay = (x & 0x10) ? replace_delay[x & 7] : d;
		if (a.delay == GRID1 || a.delay == GRID2)
			a.delay = (m->now / MS + (a.delay == GRID1 ? 1 : 2)) * MS - m->now;
		break;
	case K_ADD_MANY:
		/* up to four keys from the key byte and x, repeats allowed */
		a.n = 1 + (y & 3);
		a.many[0] = kb & 15;
		a.many[1] = kb >> 4;
		a.many[2] = x & 15;
		a.many[3] = x >> 4;
		a.no_opts = (y & 4) != 0;
		a.prio = many_prio[(y >> 3) & 3];
		a.delay = many_delay[(y >> 5) & 3];
		if (a.delay == GRID1)
			a.delay = (m->now / MS + 1) * MS - m->now;
		a.replace = (y & 0x80) != 0;
		break;
	case K_GET_BATCH: {
		static const int64_t t0[3] = { 0, 0, -1 };
		a.n = 1 + (y & 3);
		a.variant = (y >> 2) & 3;
		if (a.variant < 3) {
			a.timeout = t0[a.variant];
		} else if (m_head(m) >= 0 || m->shut) {
			a.timeout = 10 * SEC; /* KWQ_FOREVER where it cannot block */
		} else {
			a.variant = 4; /* must time out */
			a.timeout = 1 + (y >> 4) * 1000;
		}
		break;
	}
	case K_INVALID2:
		a.variant = x % INV2_COUNT;
		a.n = y & 1;
		break;
	case K_INVALID:
		a.variant = ((x % INV_COUNT) << 1) | (y & 1);
		break;
	case K_DRAIN:
		/* a drain with work left would wait for a worker: none here */
		if (m_busy(m))
			a.kind = K_SHUTDOWN;
		break;
	default:
		break;
	}
	return a;
}

static int flush(struct run *r, bool drain)
{
	struct act a = { .kind = K_DONE };
	for (int i = 0; i < NKEYS; i++) {
		if (r->m.k[i].state == M_HELD || r->m.k[i].state == M_DIRTY) {
			a.target = i;
			if (exec(r, &a) != 0)
				return 1;
		}
	}
	if (!r->m.shut) {
		a = (struct act){ .kind = K_STEP, .delay = 1000 * SEC };
		if (exec(r, &a) != 0)
			return 1;
	}
	for (;;) {
		int h = m_head(&r->m);
		a = (struct act){ .kind = K_TRY_GET };
		if (exec(r, &a) != 0)
			return 1;
		if (h < 0)
			break;
		a = (struct act){ .kind = K_DONE, .target = h };
		if (exec(r, &a) != 0)
			return 1;
	}
	if (drain) {
		a = (struct act){ .kind = K_DRAIN };
		return exec(r, &a);
	}
	return 0;
}

static void stats_add(struct diff_stats *to, const struct diff_stats *s)
{
	unsigned long *t = (unsigned long *)(void *)to;
	const unsigned long *f = (const unsigned long *)(const void *)s;
	for (size_t i = 0; i < sizeof *s / sizeof(unsigned long); i++)
		t[i] += f[i];
}

static const char *const shard_names[4] = { "sharded/1", "sharded/2", "sharded/4", "sharded/64" };
static const unsigned shard_counts[4] = { 1, 2, 4, 64 };
static const int64_t clock_starts[4] = { 0, 1, 1000000007, 1000000000000000LL };

int diff_run(const uint8_t *data, size_t size, const struct diff_options *o)
{
	keys_init();
	kinds_init();

	struct run *r = calloc(1, sizeof *r);
	if (r == NULL)
		return 2;
	r->o = o;
	uint8_t hdr = size > 0 ? data[0] : 0;
	r->m.quirks = o->quirks;
	r->m.mut = o->mutation;
	r->m.st = &r->st;
	r->m.now = clock_starts[(hdr >> 3) & 3];
	r->alphabet = (hdr & DIFF_HEADER_V2) != 0;
	/* max_attempts 2 (bit 6 clear) or 0, never (bit 6 set).  2 is the
	 * smallest count at which an off-by-one give-up differs from the
	 * rule both ways (>= 2 against > 2 or >= 1) while a key of sixteen
	 * still reaches it within a few of the sequence's RETRY finishes
	 * (add_rate_limited and rate-limited add_with count towards it too);
	 * 0 checks that a queue without the option never gives up. */
	r->m.max_attempts = r->alphabet && !(hdr & 0x40) ? 2 : 0;

	int rc = 0;
	for (int i = 0; i < NPARTS; i++) {
		struct part *p = &r->p[i];
		struct kwq_config cfg = KWQ_CONFIG_INIT;
		cfg.impl = i == 0 ? KWQ_IMPL_MUTEX : KWQ_IMPL_SHARDED;
		cfg.shards = i == 2 ? shard_counts[(hdr >> 1) & 3] : 0;
		p->name = i == 0 ? "mutex" : i == 1 ? "sharded" : shard_names[(hdr >> 1) & 3];
		p->patience = (o->patience_ms ? o->patience_ms : 10000) * 1000000LL;
		p->clock = kwq_clock_fake_new(r->m.now);
		cfg.clock = p->clock;
		if (r->alphabet) { /* named: it keeps the metrics K_METRICS reads */
			cfg.name = p->name;
			cfg.max_attempts = r->m.max_attempts;
			cfg.on_give_up = on_give_up;
			cfg.give_up_ctx = p;
		}
		cfg.limiter = kwq_limiter_exponential(LIMIT_BASE, LIMIT_MAX);
		p->q = p->clock != NULL && cfg.limiter != NULL ? kwq_new(&cfg) : NULL;
		if (p->q == NULL) {
			if (o->report)
				fprintf(o->report, "%skwq_new(%s) failed\n",
					o->prefix ? o->prefix : "", p->name);
			rc = 2;
			goto out;
		}
	}
	logf_(r, "header 0x%02x: %s, clocks start at %lld, %s, %s\n", hdr, r->p[2].name,
	      (long long)r->m.now, !(hdr & 1) ? "no flush (kwq_free frees)"
			     : (hdr & 0x20) ? "flush and drain at the end" : "flush at the end",
	      !r->alphabet ? "0.1 alphabet"
	      : r->m.max_attempts ? "0.2 alphabet, max_attempts 2" : "0.2 alphabet, max_attempts 0");

	for (size_t off = DIFF_HEADER_BYTES; off + DIFF_OP_BYTES <= size; off += DIFF_OP_BYTES) {
		struct act a = resolve(r, data + off);
		rc = exec(r, &a);
		if (rc != 0) {
			if (o->failed_op)
				*o->failed_op = (off - DIFF_HEADER_BYTES) / DIFF_OP_BYTES;
			goto out;
		}
	}
	if (hdr & 1)
		rc = flush(r, (hdr & 0x20) != 0);
	if (rc != 0 && o->failed_op)
		*o->failed_op = SIZE_MAX;
	if (rc == 0 && o->log_all && o->report)
		report(r, NULL);
out:
	for (int i = 0; i < NPARTS; i++) {
		kwq_free(r->p[i].q);
		kwq_clock_free(r->p[i].clock);
	}
	r->st.runs++;
	if (o->stats)
		stats_add(o->stats, &r->st);
	free(r->log);
	free(r);
	return rc;
}

/* ------------------------------------------------------------ generator */

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

size_t diff_generate(uint64_t seed, size_t nops, uint8_t *buf)
{
	kinds_init();
	uint64_t s = seed;
	size_t n = 0;
	buf[n++] = (uint8_t)splitmix(&s) | DIFF_HEADER_V2; /* the 0.2 alphabet */
	for (size_t i = 0; i < nops; i++) {
		uint64_t x;
		for (;;) {
			x = splitmix(&s);
			enum kind k = (enum kind)kind_of_byte[1][x & 0xff];
			if ((k != K_SHUTDOWN && k != K_DRAIN) || i >= nops - nops / 6)
				break;
		}
		buf[n] = (uint8_t)x; /* byte order independent of the host */
		buf[n + 1] = (uint8_t)(x >> 8);
		buf[n + 2] = (uint8_t)(x >> 16);
		buf[n + 3] = (uint8_t)(x >> 24);
		n += DIFF_OP_BYTES;
	}
	return n;
}

const char *diff_quirk_text(unsigned quirk)
{
	switch (quirk) {
	case DIFF_QUIRK_ADD_DROPS_WAIT_PRIO:
		return "an immediate add of a waiting key drops the wait's priority "
		       "(the contract: the waiting key keeps the higher priority)";
	case DIFF_QUIRK_ABSORB_POSITIVE_ONLY:
		return "a delayed add absorbed by a queued or held+dirty key raises its "
		       "priority only when the add's priority is > 0 (the contract: any higher one)";
	case DIFF_QUIRK_SHUTDOWN_DROPS_LATE:
		return "shutdown leaves its drop of the waiting adds to the timer thread: a "
		       "kwq_cancel right after kwq_shutdown may still find a wait and return 1 "
		       "(the contract: shutdown drops every waiting add)";
	default:
		return "unknown quirk";
	}
}

const char *diff_mutation_name(enum diff_mutation m)
{
	static const char *const names[DIFF_MUT_COUNT] = {
		[DIFF_MUT_NONE] = "none",
		[DIFF_MUT_RAISE_KEEPS_POSITION] = "raise-keeps-position",
		[DIFF_MUT_DIRTY_KEEPS_HELD_PRIO] = "dirty-keeps-held-prio",
		[DIFF_MUT_LATER_READY_WINS] = "later-ready-wins",
		[DIFF_MUT_TIES_LIFO] = "ties-lifo",
		[DIFF_MUT_NO_ABSORB] = "no-absorb",
		[DIFF_MUT_ADD_KEEPS_WAIT] = "add-keeps-wait",
		[DIFF_MUT_SHUTDOWN_KEEPS_WAITS] = "shutdown-keeps-waits",
		[DIFF_MUT_LEN_COUNTS_DIRTY] = "len-counts-dirty",
		[DIFF_MUT_READY_STRICT] = "ready-strict",
		[DIFF_MUT_FORGET_KEEPS_COUNT] = "forget-keeps-count",
		[DIFF_MUT_WAIT_PRIO_LOWEST] = "wait-prio-lowest",
		[DIFF_MUT_CANCEL_KEEPS_DIRTY] = "cancel-keeps-dirty",
		[DIFF_MUT_CANCEL_KEEPS_WAIT] = "cancel-keeps-wait",
		[DIFF_MUT_DROP_DROPS_DIRTY] = "drop-drops-dirty",
		[DIFF_MUT_DROP_KEEPS_WAIT] = "drop-keeps-wait",
		[DIFF_MUT_RETRY_AFTER_COUNTS] = "retry-after-counts",
		[DIFF_MUT_GIVE_UP_LATE] = "give-up-late",
		[DIFF_MUT_REPLACE_IGNORED] = "replace-ignored",
		[DIFF_MUT_REPLACE_KEEPS_TIE] = "replace-keeps-tie",
		[DIFF_MUT_ADD_MANY_REVERSED] = "add-many-reversed",
		[DIFF_MUT_BATCH_REVERSED] = "batch-reversed",
		[DIFF_MUT_DONE_MANY_REVERSED] = "done-many-reversed",
		[DIFF_MUT_DIRTY_COUNTS_WAIT] = "dirty-counts-wait",
		[DIFF_MUT_DEPTH_IGNORES_CANCEL] = "depth-ignores-cancel",
	};
	return (unsigned)m < DIFF_MUT_COUNT ? names[m] : NULL;
}

void diff_stats_print(const struct diff_stats *s, FILE *f, const char *prefix)
{
	const char *p = prefix ? prefix : "";
	fprintf(f, "%s%lu runs, %lu operations\n", p, s->runs, s->ops);
	fprintf(f, "%sgets %lu (%lu found nothing), dones %lu (%lu re-queued a dirty key)\n",
		p, s->gets, s->gets_empty, s->dones, s->requeues_on_done);
	fprintf(f, "%sadds accepted %lu, refused by shutdown %lu; bad input %lu\n", p,
		s->adds, s->adds_refused, s->einval);
	fprintf(f, "%sraises %lu, held->dirty %lu, delayed adds absorbed %lu\n", p,
		s->raises, s->dirty_adds, s->absorbed);
	fprintf(f, "%swaits: new %lu, moved earlier %lu, kept %lu, cancelled %lu, "
		   "fired %lu (%lu into a held key), ready-time ties %lu\n",
		p, s->waits_new, s->waits_earlier, s->waits_kept, s->cancels, s->fired,
		s->fired_into_held, s->ties);
	fprintf(f, "%sclock steps %lu, shutdowns %lu, drains %lu, limiter calls %lu, "
		   "kwq_len right only on a re-read %lu\n",
		p, s->steps, s->shutdowns, s->drains, s->rate_limited, s->len_transient);
	fprintf(f, "%sfinishes OK %lu, RETRY %lu, RETRY_AFTER %lu, DROP %lu (give-ups %lu, "
		   "refused by shutdown %lu)\n",
		p, s->finishes[0], s->finishes[1], s->finishes[2], s->finishes[3], s->give_ups,
		s->finish_refused);
	fprintf(f, "%scancels that removed something %lu (%lu a dirty re-queue); replaces of "
		   "a wait %lu (%lu at an equal ready time)\n",
		p, s->cancels_removed, s->cancels_dirty, s->replaces, s->replace_ties);
	fprintf(f, "%sadd_many %lu (%lu keys), get_batch %lu (%lu items, %lu full), "
		   "done_many %lu (%lu handles)\n",
		p, s->many_calls, s->many_keys, s->batches, s->batch_items, s->batch_full,
		s->done_many_calls, s->done_many_items);
	fprintf(f, "%sitem_dirty true %lu, false %lu; metrics reads %lu (right only on a "
		   "re-read %lu)\n",
		p, s->dirty_true, s->dirty_false, s->metric_reads, s->metrics_transient);
}
