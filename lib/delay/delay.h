/*
 * delay.h - delayed adds (client-go's DelayingInterface), once for every
 * implementation: they sit above struct kwq__ops.
 */
#ifndef KWQ_DELAY_DELAY_H
#define KWQ_DELAY_DELAY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/key.h"

struct kwq;
struct kwq__delay;

/*
 * What a queue holds of the delay layer (struct kwq's delays member):
 * the timer and its inbox start on the first delayed add, under lock, and
 * are then read lock-free.  stopped is the one stop flag: set at shutdown
 * under lock, after which nothing starts and the timer thread leaves.
 */
struct kwq__delays {
	_Atomic(struct kwq__delay *) d; /* NULL until the first delayed add */
	pthread_mutex_t lock;            /* starting and stopping */
	_Atomic bool stopped;
};

/* Initialize a queue's delays (nothing started; cannot fail). */
void kwq__delay_init(struct kwq__delays *ds);

/*
 * kwq_add_after() and friends with delay_ns > 0 on a validated key: the
 * implementation decides in the key's critical section (kwq__ops.add_after:
 * absorbed into a queued or held+dirty key, or the key waits until the
 * queue clock's now + delay_ns, a waiting key keeping the earlier time and
 * the higher priority, or with replace taking this call's); a new or moved
 * wait's record goes to the timer thread.  Starts the timer thread on
 * first use.  Never blocks: at most one allocation and a wait-free append.
 * 0, -ESHUTDOWN or -ENOMEM.
 */
int kwq__delay_add(struct kwq *q, const struct kwq__key *k, int64_t delay_ns,
		   int priority, bool replace);

/* Stop the timer thread and drop every pending delayed add (shutdown). */
void kwq__delay_stop(struct kwq *q);

/* kwq_free: stop, join and free everything, and finish q->delays. */
void kwq__delay_fini(struct kwq *q);

#endif
