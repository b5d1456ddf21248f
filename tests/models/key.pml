//! pass contract: 
//! pass contract-with-shutdown: -DSHUTDOWN
//! fail broken-two-phase-add: -DBROKEN_TWO_PHASE
//! fail broken-no-cancel: -DBROKEN_NO_CANCEL
//! fail broken-no-stale-check: -DBROKEN_NO_STALE_CHECK
//! fail broken-drain: -DSHUTDOWN -DBROKEN_DRAIN
//! fail broken-cancel-keeps-wait: -DBROKEN_CANCEL_KEEPS_WAIT
//! fail broken-cancel-keeps-dirty: -DBROKEN_CANCEL_KEEPS_DIRTY
/*
 * key.pml - one key's state machine with its waiting state, as both
 * designs keep it (lib/core/wait.h, lib/mutex/mutex.c, lib/sharded/
 * sharded.c, lib/delay/delay.c), for spin.
 *
 * What is modelled: the key's state (absent, queued, held, held+dirty) and
 * its current wait record, changed only in the key's critical section (one
 * atomic step: the shard lock, or the queue lock of the mutex design); a
 * producer making immediate and delayed adds; two workers that get, may
 * retry with a delayed add while holding the key (the controller's
 * pattern), and done; the timer thread firing the records it was handed,
 * in any order and at any time (its clock is abstracted into that
 * nondeterminism), each firing applied only if its record is still the
 * key's current wait; a canceller making kwq_cancel calls at any moment;
 * and, with -DSHUTDOWN, a kwq_shutdown_drain from a third thread at any
 * moment.
 *
 * What is abstracted away: other keys (a key's transitions do not depend
 * on them), priorities and ready times (a delayed add to a waiting key
 * either keeps the wait or replaces its record: both are explored), the
 * ring and the lanes (a queued key is handed out by the next get that
 * looks), memory (no allocation fails), the rate limiter (it only chooses
 * the delay), and blocking (a get that finds nothing just tries again).
 *
 * Properties:
 *   never two holders   a get never finds the key held;
 *   no lost update      at quiescence, an add made after the last get
 *                       began, and not cancelled since, has left the key
 *                       queued;
 *   nothing cancelled   a get hands the key out only for an add made
 *   handed out          since the last get began or the last cancel;
 *   no retry lost       at quiescence, a delayed add that made a wait has
 *                       been fired, or dropped by the shutdown, or was
 *                       cancelled by an immediate add, which then owes
 *                       the hand-out (no lost update covers it);
 *   no wait left behind a record an immediate add cancelled never adds;
 *   drain               kwq_shutdown_drain returns, and only once nothing
 *                       is queued or held: nothing is queued after it.
 * Negative controls (each must be rejected):
 *   -DBROKEN_TWO_PHASE       the add publishes the key, then cancels the
 *                            wait in a second critical section (0.1's
 *                            settle): a retry made in between is lost;
 *   -DBROKEN_NO_CANCEL       the add leaves the wait in place;
 *   -DBROKEN_NO_STALE_CHECK  a firing applies whatever record it carries;
 *   -DBROKEN_DRAIN           the drain returns once the key is not queued
 *                            (a held+dirty key is queued again after it);
 *   -DBROKEN_CANCEL_KEEPS_WAIT   a cancel marks the wait cancelled but leaves
 *                            it current (the timer fires it);
 *   -DBROKEN_CANCEL_KEEPS_DIRTY  a cancel of a held+dirty key leaves it
 *                            dirty (its done queues it again).
 */

#define ABSENT 0
#define QUEUED 1
#define HELD 2
#define DIRTY 3  /* held+dirty */

#define MAXREC 4       /* wait records made, in all */
#define MAXRETRY 2     /* retries a worker makes, in all */
#define NOPS 3         /* the producer's calls */
#define NCANCEL 2      /* the canceller's calls */

byte st;
byte cur;              /* the key's current wait record, 0 = none */
bool live[MAXREC + 1]; /* records handed to the timer, not yet fired */
bool cancelled[MAXREC + 1];
byte nrec;
bool shut;
bool drained;
byte holders;
bool owed;             /* an add since the last get began or cancel */
bool wait_owed;        /* a wait made and not yet resolved */
bool producer_done;
bool drain_done;

/* Queue the key by an accepted add (immediate, or a firing). */
inline publish() {
	if
	:: st == ABSENT -> st = QUEUED; assert(!drained)
	:: st == HELD -> st = DIRTY
	:: else -> skip
	fi;
	owed = 1
}

/* The key's current wait ends without a firing. */
inline end_wait() {
	cur = 0;
	wait_owed = 0
}

inline add() {
	atomic {
		if
		:: !shut ->
#ifndef BROKEN_TWO_PHASE
			if
			:: cur != 0 ->
				cancelled[cur] = 1;
#ifndef BROKEN_NO_CANCEL
				end_wait();
				owed = 1   /* the retry is now owed by this add */
#endif
			:: else -> skip
			fi;
#endif
			publish()
		:: else -> skip   /* -ESHUTDOWN */
		fi
	}
#ifdef BROKEN_TWO_PHASE
	atomic {
		if
		:: cur != 0 -> cancelled[cur] = 1; end_wait(); owed = 1
		:: else -> skip
		fi
	}
#endif
}

inline add_after() {
	atomic {
		if
		:: !shut && (st == QUEUED || st == DIRTY) ->
			owed = 1         /* absorbed: the key is handed out anyway */
		:: !shut && (st == ABSENT || st == HELD) && nrec < MAXREC ->
			if
			:: cur == 0 -> nrec++; cur = nrec; live[cur] = 1; wait_owed = 1
			:: cur != 0 -> skip                               /* later: kept */
			:: cur != 0 -> nrec++; cur = nrec; live[cur] = 1  /* earlier: moved */
			fi
		:: else -> skip      /* refused, or out of records (ends the search) */
		fi
	}
}

/* kwq_cancel (kwq__ops.cancel): one critical section.  A wait exists only
 * while the key is absent or held, so at most one branch below applies. */
inline cancel() {
	atomic {
		if
		:: cur != 0 ->
			cancelled[cur] = 1;
#ifndef BROKEN_CANCEL_KEEPS_WAIT
			end_wait()
#else
			wait_owed = 0
#endif
		:: else -> skip
		fi;
		if
		:: st == QUEUED -> st = ABSENT
#ifndef BROKEN_CANCEL_KEEPS_DIRTY
		:: st == DIRTY -> st = HELD
#endif
		:: else -> skip
		fi;
		owed = 0
	}
}

proctype canceller()
{
	byte i;
	for (i : 1 .. NCANCEL) {
		cancel()
	}
}

proctype producer()
{
	byte i;
	for (i : 1 .. NOPS) {
		if
		:: true -> add()
		:: true -> add_after()
		fi
	}
	producer_done = 1
}

proctype worker()
{
	byte retries = 0;
end_get:
	do
	:: atomic {
		st == QUEUED ->
		assert(holders == 0);
		assert(owed);   /* nothing cancelled handed out */
		holders++;
		st = HELD;
		owed = 0
	   };
	   if
	   :: retries < MAXRETRY -> retries++; add_after()   /* failed: retry */
	   :: true -> skip                                   /* succeeded */
	   fi;
	   atomic {
		holders--;
		if
		:: st == HELD -> st = ABSENT
		:: st == DIRTY -> st = QUEUED; assert(!drained)
		fi
	   }
	od
}

/* The timer thread's firing of record r (kwq__ops.fire). */
inline fire(r) {
	live[r] = 0;
#ifdef BROKEN_NO_STALE_CHECK
	if
	:: !shut ->
		assert(!cancelled[r]);
		if
		:: cur == r -> end_wait()
		:: else -> skip
		fi;
		publish()
	:: else -> skip
	fi
#else
	if
	:: !shut && cur == r ->
		assert(!cancelled[r]);
		end_wait();
		publish()
	:: else -> skip      /* stale, or after the shutdown */
	fi
#endif
}

/* The timer thread: fires any record it holds, at any time. */
proctype timer()
{
end_timer:
	do
	:: atomic { live[1] -> fire(1) }
	:: atomic { live[2] -> fire(2) }
	:: atomic { live[3] -> fire(3) }
	:: atomic { live[4] -> fire(4) }
	od
}

#ifdef SHUTDOWN
proctype drainer()
{
	atomic { shut = 1; end_wait() };   /* shutdown drops the wait */
#ifdef BROKEN_DRAIN
	st != QUEUED;
#else
	st == ABSENT;
#endif
	drained = 1;
	drain_done = 1
}
#endif

/* When nothing can move: the quiescent state. */
active proctype monitor()
{
end_mon:
	timeout ->
	assert(producer_done);
	assert(!owed || st == QUEUED || shut);
	assert(!wait_owed);
#ifdef SHUTDOWN
	assert(drain_done)
#endif
}

init
{
	atomic {
		run producer();
		run worker();
		run worker();
		run timer();
		run canceller();
#ifdef SHUTDOWN
		run drainer()
#endif
	}
}
