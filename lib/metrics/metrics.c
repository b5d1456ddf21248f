/*
 * metrics.c - metric blocks and the retries counter: allocation and the
 * sums taken when metrics are read.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "metrics.h"
#include "../core/alloc.h"

static_assert(sizeof(struct kwq__metrics_block) % 64 == 0,
	      "metric blocks must not share lines");
static_assert(sizeof(struct kwq__retry_stripe) == 64, "one stripe per line");

static void hist_init(struct kwq__hist_block *h)
{
	atomic_init(&h->sum_ns, 0);
	for (unsigned i = 0; i < KWQ__HIST_SLOTS; i++)
		atomic_init(&h->slot[i], 0);
}

struct kwq__metrics_block *kwq__metrics_blocks_new(size_t n)
{
	if (n == 0 || n > SIZE_MAX / sizeof(struct kwq__metrics_block)) {
		errno = ENOMEM;
		return NULL;
	}
	struct kwq__metrics_block *b =
		kwq__aligned_alloc(alignof(struct kwq__metrics_block), n * sizeof *b);
	if (b == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		atomic_init(&b[i].adds, 0);
		atomic_init(&b[i].gets, 0);
		atomic_init(&b[i].cancels, 0);
		atomic_init(&b[i].delayed, 0);
		hist_init(&b[i].queue);
		hist_init(&b[i].work);
	}
	return b;
}

void kwq__metrics_blocks_free(struct kwq__metrics_block *blocks)
{
	free(blocks);
}

/* The hooks only add; these loads read whatever each counter holds now. */
static uint64_t load(const _Atomic uint64_t *p)
{
	return atomic_load_explicit((_Atomic uint64_t *)p, memory_order_relaxed);
}

/* One histogram's slots and sum over several blocks. */
struct hist_acc {
	uint64_t slot[KWQ__HIST_SLOTS];
	uint64_t sum_ns;
};

static void hist_add(struct hist_acc *a, const struct kwq__hist_block *h)
{
	a->sum_ns += load(&h->sum_ns);
	for (unsigned j = 0; j < KWQ__HIST_SLOTS; j++)
		a->slot[j] += load(&h->slot[j]);
}

static void hist_out(const struct hist_acc *a, struct kwq_histogram *out)
{
	uint64_t cum = 0;
	for (unsigned j = 0; j < KWQ_HIST_BUCKETS; j++) {
		cum += a->slot[j];
		out->le[j] += cum;
	}
	out->count += cum + a->slot[KWQ_HIST_BUCKETS];
	/* Divide the nanosecond total once: 75000 ns reads 7.5e-05 exactly, as
	 * the reference's float seconds would. */
	out->sum_seconds += (double)a->sum_ns / 1e9;
}

void kwq__metrics_sum(const struct kwq__metrics_block *blocks, size_t n,
		      struct kwq_metrics *out)
{
	struct hist_acc queue = { { 0 }, 0 }, work = { { 0 }, 0 };
	uint64_t adds = 0, gets = 0, cancels = 0, delayed = 0;

	/* gets before adds: every add of a get counted here is counted below */
	for (size_t i = 0; i < n; i++)
		/* MET.G2: pairs with MET.G1. */
		gets += atomic_load_explicit((_Atomic uint64_t *)&blocks[i].gets,
					     memory_order_acquire);
	for (size_t i = 0; i < n; i++) {
		adds += load(&blocks[i].adds);
		cancels += load(&blocks[i].cancels);
		delayed += load(&blocks[i].delayed);
		hist_add(&queue, &blocks[i].queue);
		hist_add(&work, &blocks[i].work);
	}
	int64_t depth = (int64_t)(adds - gets - cancels);
	out->depth += depth > 0 ? depth : 0;
	out->delayed += (int64_t)delayed;
	out->adds_total += adds;
	hist_out(&queue, &out->queue_duration);
	hist_out(&work, &out->work_duration);
}

struct kwq__retry_stripe *kwq__retries_new(void)
{
	struct kwq__retry_stripe *r =
		kwq__aligned_alloc(alignof(struct kwq__retry_stripe), KWQ__RETRY_STRIPES * sizeof *r);
	if (r == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	for (unsigned i = 0; i < KWQ__RETRY_STRIPES; i++)
		atomic_init(&r[i].n, 0);
	return r;
}

void kwq__retries_free(struct kwq__retry_stripe *r)
{
	free(r);
}

uint64_t kwq__retries_sum(const struct kwq__retry_stripe *r)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < KWQ__RETRY_STRIPES; i++)
		n += load(&r[i].n);
	return n;
}
