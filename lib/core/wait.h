/*
 * wait.h - a key's pending delayed add, as the implementations keep it.
 *
 * Whether a key is waiting, and until when, is per-key state: each
 * implementation's entry holds a pointer to its current wait record (NULL
 * when not waiting), changed only in the key's critical section, the same
 * one that decides its adds, gets and dones.  The record is also the
 * timer's (lib/delay): the timer keeps it in time order and, when it comes
 * due, hands it back through kwq__ops.fire, which adds the key only if the
 * record is still the key's current wait.  A record that stopped being
 * current (an immediate add or kwq_cancel ended the wait, a delayed add
 * moved it earlier or, with replace, anywhere) is stale: the implementation marks it dropped and forgets it;
 * the timer frees it when it surfaces.  The record's address names the
 * wait: a record is freed only by the timer, after the implementation
 * stopped pointing to it, so a stale record never matches a later wait.
 */
#ifndef KWQ_CORE_WAIT_H
#define KWQ_CORE_WAIT_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "key.h"

/* The head of every wait record (the delay layer's struct begins with it). */
struct kwq__wait {
	int64_t ready;            /* the queue clock's due time; fixed when made */
	int32_t priority;         /* highest asked; raised under the key's lock */
	_Atomic uint32_t dropped; /* 1 once no entry points to it (DLY.D1) */
};

/* A delayed add as the delay layer hands it down (kwq__ops.add_after). */
struct kwq__wait_req {
	int64_t ready;            /* in: the queue clock's due time */
	int priority;             /* in */
	bool replace;             /* in: a waiting key takes this time and priority */
	size_t rec_size;          /* in: a new record's size, key bytes excluded */
	size_t rec_item_offset;   /* in: where its struct kwq_item goes */
	struct kwq__wait *rec;    /* out: a new record for the timer, or NULL */
};

/*
 * The record is no longer the key's wait (under the key's lock): after
 * this store the implementation never touches w again.
 */
static inline void kwq__wait_drop(struct kwq__wait *w)
{
	/* DLY.D1: pairs with DLY.D2 (the timer frees w after seeing it). */
	atomic_store_explicit(&w->dropped, 1, memory_order_release);
}

/*
 * Apply req to a key's wait slot *slot (NULL: not waiting), under the
 * key's lock: merge into the current wait (earlier ready time and higher
 * priority win) or make a new record.  Nothing changes on -ENOMEM.
 */
static inline int kwq__wait_update(struct kwq__wait **slot, struct kwq__wait_req *req,
				   const struct kwq__key *k)
{
	struct kwq__wait *w = *slot;

	req->rec = NULL;
	if (w != NULL && !req->replace && req->ready >= w->ready) {
		if (req->priority > w->priority)
			w->priority = req->priority;
		return 0;
	}
	struct kwq__wait *n = kwq__entry_new(req->rec_size, req->rec_item_offset, k);
	if (n == NULL)
		return -ENOMEM;
	n->ready = req->ready;
	n->priority = req->priority;
	if (w != NULL && !req->replace && w->priority > n->priority)
		n->priority = w->priority;
	atomic_init(&n->dropped, 0);
	if (w != NULL)
		kwq__wait_drop(w);
	*slot = n;
	req->rec = n;
	return 0;
}

#endif
