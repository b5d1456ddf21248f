/*
 * transport.h - W1 and W2 run through one body over three transports: a kwq
 * queue (any row of bench_rows[]), and the two floors, which carry key
 * pointers with no dedup and no exclusion:
 *
 *   floor_ck_ring     ConcurrencyKit's bounded MPMC ring, workers spin and
 *                     yield on empty.  Only where threads <= cores: a
 *                     producer preempted between claiming and publishing a
 *                     slot stalls every consumer (lib/sharded/ring.h).
 *   floor_mutex_fifo  a bounded ring under one mutex with two condition
 *                     variables, the textbook blocking queue.
 *
 * The floors are bounded (FLOOR_CAP) so their memory stays flat and they
 * measure the transport, not page faults; a full floor makes its producers
 * wait, which is fair: without dedup every add must be got.
 *
 * The calls are inline and switch on the kind, a branch that never changes
 * in a run: cheaper than an indirect call, and the floors are fast enough
 * for a call to show.
 */
#ifndef KWQ_BENCH_TRANSPORT_H
#define KWQ_BENCH_TRANSPORT_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include <ck_ring.h>

#include "bench.h"

#define FLOOR_CAP 65536u /* a power of two, as ck_ring wants */

enum tp_kind {
	TP_KWQ,
	TP_CK_RING,
	TP_MUTEX_FIFO,
};

/* A W1/W2 row: a kwq design or a floor. */
struct tp_row {
	const char *name;
	enum tp_kind kind;
	const struct bench_row *kwq; /* TP_KWQ only */
	const char *qname;           /* TP_KWQ only: the queue's name, or NULL */
};

struct tp_fifo {
	pthread_mutex_t lock;
	pthread_cond_t nonempty, nonfull;
	const struct bench_key *slots[FLOOR_CAP];
	unsigned head, count;
	bool closed;
};

struct tp {
	enum tp_kind kind;
	kwq_t *q;
	ck_ring_t ring;
	ck_ring_buffer_t *ring_buf;
	atomic_bool ring_closed;
	struct tp_fifo *fifo;
};

/* An item handed out: a kwq handle, or a floor's key pointer. */
typedef void *tp_item;

static inline int tp_open(struct tp *t, const struct tp_row *row, kb_state *st)
{
	t->kind = row->kind;
	switch (row->kind) {
	case TP_KWQ:
		t->q = bench_queue_new_named(st, row->kwq, row->qname);
		return t->q != NULL ? 0 : -1;
	case TP_CK_RING:
		t->ring_buf = calloc(FLOOR_CAP, sizeof *t->ring_buf);
		if (t->ring_buf == NULL)
			break;
		ck_ring_init(&t->ring, FLOOR_CAP);
		atomic_init(&t->ring_closed, false);
		return 0;
	case TP_MUTEX_FIFO:
		t->fifo = calloc(1, sizeof *t->fifo);
		if (t->fifo == NULL)
			break;
		pthread_mutex_init(&t->fifo->lock, NULL);
		pthread_cond_init(&t->fifo->nonempty, NULL);
		pthread_cond_init(&t->fifo->nonfull, NULL);
		return 0;
	}
	kb_skip(st, "out of memory for the floor");
	return -1;
}

static inline void tp_free(struct tp *t)
{
	switch (t->kind) {
	case TP_KWQ:
		kwq_free(t->q);
		break;
	case TP_CK_RING:
		free(t->ring_buf);
		break;
	case TP_MUTEX_FIFO:
		pthread_mutex_destroy(&t->fifo->lock);
		pthread_cond_destroy(&t->fifo->nonempty);
		pthread_cond_destroy(&t->fifo->nonfull);
		free(t->fifo);
		break;
	}
}

static inline int tp_add(struct tp *t, const struct bench_key *k)
{
	switch (t->kind) {
	case TP_KWQ:
		return kwq_add(t->q, k->bytes, k->len);
	case TP_CK_RING:
		for (unsigned spins = 0; !ck_ring_enqueue_mpmc(&t->ring, t->ring_buf, k); spins++) {
			if (spins < 64)
				bench_cpu_relax();
			else
				sched_yield();
		}
		return 0;
	case TP_MUTEX_FIFO: {
		struct tp_fifo *f = t->fifo;
		pthread_mutex_lock(&f->lock);
		while (f->count == FLOOR_CAP)
			pthread_cond_wait(&f->nonfull, &f->lock);
		f->slots[(f->head + f->count++) & (FLOOR_CAP - 1)] = k;
		pthread_cond_signal(&f->nonempty);
		pthread_mutex_unlock(&f->lock);
		return 0;
	}
	}
	return -EINVAL;
}

/* 0 and *it set, or -ESHUTDOWN once closed and empty (blocks meanwhile). */
static inline int tp_get(struct tp *t, tp_item *it)
{
	switch (t->kind) {
	case TP_KWQ:
		return kwq_get(t->q, (kwq_item_t **)it);
	case TP_CK_RING:
		for (unsigned spins = 0;; spins++) {
			if (ck_ring_dequeue_mpmc(&t->ring, t->ring_buf, it))
				return 0;
			/* Closed is published after the last enqueue, so one
			 * more dequeue after seeing it cannot miss an item. */
			if (atomic_load_explicit(&t->ring_closed, memory_order_acquire)) {
				if (ck_ring_dequeue_mpmc(&t->ring, t->ring_buf, it))
					return 0;
				return -ESHUTDOWN;
			}
			if (spins < 64)
				bench_cpu_relax();
			else
				sched_yield();
		}
	case TP_MUTEX_FIFO: {
		struct tp_fifo *f = t->fifo;
		int ret = 0;
		pthread_mutex_lock(&f->lock);
		while (f->count == 0 && !f->closed)
			pthread_cond_wait(&f->nonempty, &f->lock);
		if (f->count > 0) {
			*it = (void *)f->slots[f->head];
			f->head = (f->head + 1) & (FLOOR_CAP - 1);
			f->count--;
			pthread_cond_signal(&f->nonfull);
		} else {
			ret = -ESHUTDOWN;
		}
		pthread_mutex_unlock(&f->lock);
		return ret;
	}
	}
	return -EINVAL;
}

static inline void tp_done(struct tp *t, tp_item it)
{
	if (t->kind == TP_KWQ)
		kwq_done(t->q, it);
}

/* After the last add: workers finish what is queued, then gets fail. */
static inline void tp_close(struct tp *t)
{
	switch (t->kind) {
	case TP_KWQ:
		kwq_shutdown_drain(t->q);
		break;
	case TP_CK_RING:
		atomic_store_explicit(&t->ring_closed, true, memory_order_release);
		break;
	case TP_MUTEX_FIFO:
		pthread_mutex_lock(&t->fifo->lock);
		t->fifo->closed = true;
		pthread_cond_broadcast(&t->fifo->nonempty);
		pthread_mutex_unlock(&t->fifo->lock);
		break;
	}
}

/*
 * The W1/W2 rows: every available kwq design, then the floors.  Returns the
 * number of rows written to rows[] (room for bench_nrows + 2).
 */
static inline size_t tp_rows(struct tp_row *rows)
{
	size_t n = 0;
	for (size_t i = 0; i < bench_nrows; i++)
		if (bench_row_available(&bench_rows[i]))
			rows[n++] = (struct tp_row){ bench_rows[i].name, TP_KWQ, &bench_rows[i], NULL };
	rows[n++] = (struct tp_row){ "floor_ck_ring", TP_CK_RING, NULL, NULL };
	rows[n++] = (struct tp_row){ "floor_mutex_fifo", TP_MUTEX_FIFO, NULL, NULL };
	return n;
}

/*
 * The available kwq designs only, on queues named qname (NULL: unnamed):
 * the rows of the variants the floors have no counterpart for.  Returns the
 * number of rows written to rows[] (room for bench_nrows).
 */
static inline size_t tp_kwq_rows(struct tp_row *rows, const char *qname)
{
	size_t n = 0;
	for (size_t i = 0; i < bench_nrows; i++)
		if (bench_row_available(&bench_rows[i]))
			rows[n++] = (struct tp_row){ bench_rows[i].name, TP_KWQ, &bench_rows[i], qname };
	return n;
}

#endif /* KWQ_BENCH_TRANSPORT_H */
