/*
 * delay.h - delayed adds (client-go's DelayingInterface), once for every
 * implementation: they sit above struct kwq_ops.
 */
#ifndef KWQ_DELAY_DELAY_H
#define KWQ_DELAY_DELAY_H

#include <stdint.h>

#include "../core/key.h"

struct kwq;
struct kwq_delay;

/*
 * kwq_add_after() and friends with delay_ns > 0 on a validated key: absorb
 * into a queued or held+dirty key (ops->absorb), else hand the timer
 * thread a request to add k at the queue clock's now + delay_ns (a key
 * already waiting keeps the earlier time and the higher priority).
 * Starts the timer thread on first use.  Never blocks: one allocation and
 * a wait-free append.  0, -ESHUTDOWN or -ENOMEM.
 */
int kwq__delay_add(struct kwq *q, const struct kwq_key *k, int64_t delay_ns, int priority);

/*
 * An immediate add (kwq_add, a delay <= 0) on a queue that has delays
 * (q->delay is set).  While delayed adds are pending it takes the timer's
 * consumer lock: ops->add with the priority raised to the key's wait, and
 * the wait cancelled, in one critical section.  Otherwise ops->add alone.
 * Returns what ops->add returns.
 */
int kwq__delay_add_now(struct kwq *q, const struct kwq_key *k, int priority);

/*
 * After an immediate add that ran while q->delay was NULL and found it set
 * after: cancel a wait of k that began meanwhile, applying its priority.
 */
void kwq__delay_settle(struct kwq *q, const struct kwq_key *k);

/* Stop the timer thread and drop every pending delayed add (shutdown). */
void kwq__delay_stop(struct kwq *q);

/* kwq_free: stop, join and free everything. */
void kwq__delay_free(struct kwq *q);

#endif
