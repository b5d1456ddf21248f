/*
 * delay.h - delayed adds (client-go's DelayingInterface), once for every
 * implementation: they sit above struct kwq_ops.
 */
#ifndef KWQ_DELAY_DELAY_H
#define KWQ_DELAY_DELAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/key.h"

struct kwq;
struct kwq_delay;

/*
 * Queue a delayed add of k, due at the queue clock's time `ready`, with
 * `priority`.  Starts the timer thread on first use.  Never blocks on the
 * timer thread or on other callers (a wait-free enqueue), except that the
 * first call of a queue starts its thread.  0 or -ENOMEM.
 */
int kwq__delay_add(struct kwq *q, const struct kwq_key *k, int64_t ready, int priority);

/* An immediate add of k happened: drop a pending delayed add of k. */
void kwq__delay_cancel(struct kwq *q, const struct kwq_key *k);

/* Stop the timer thread and drop every pending delayed add (shutdown). */
void kwq__delay_stop(struct kwq *q);

/* kwq_free: stop, join and free everything. */
void kwq__delay_free(struct kwq *q);

/* Delayed adds queued and not yet fired or dropped (approximate while
 * calls are in flight). */
long kwq__delay_pending(struct kwq *q);

#endif
