//! pass no-lost-wakeup: 
//! pass close-wakes-all: -DCLOSE
//! fail broken-handoff: -DBROKEN_HANDOFF
//! fail broken-recheck: -DBROKEN_RECHECK
//! fail broken-close: -DCLOSE -DBROKEN_CLOSE
/*
 * park.pml - the parking protocol of lib/core/park.c, for spin.
 *
 * What is modelled: the source as a count of queued items (a take is one
 * atomic step, as the ring's claim is); nidle, nspinning and closed; the
 * park lock; the idle list as a set (a wake may pop any member: park.c
 * pops the most recent, which is one of the behaviours); each waiter's
 * futex word.  Producers publish, then notify (N1); workers run
 * kwq__park_get in a loop: take, spin (a bounded spin is a nondeterministic
 * choice: it sees the work or gives up at any point), register (E1),
 * re-check (E2), sleep, cancel; the token is handed off after a take and
 * given back on leaving.  Promela's interleaving is sequentially
 * consistent, which is what the protocol's seq_cst atomics give.
 *
 * What is abstracted away: timeouts and deadlines (no get gives up), the
 * spinners' CPU cap (max_spinning is a parameter), the futex syscall's
 * spurious wakes (a sleeper waits for its word to change, which covers
 * them), the items themselves (only their count matters here) and the
 * memory they point to.
 *
 * Properties, checked when the whole system is blocked (spin's timeout):
 *   no lost wake-up      without a close: nothing is queued while every
 *                        worker sleeps (a get parked while an item is
 *                        queued is always woken);
 *   nobody left parked   with a close (-DCLOSE): every worker has returned
 *                        -ESHUTDOWN, and the queue is empty.
 * Plus the token's bookkeeping: nspinning never goes below zero.
 *
 * Negative controls (tests/models/check must see spin reject each; the
 * //! lines above list the checks it runs):
 *   -DBROKEN_HANDOFF  a woken worker that found work keeps its token (the
 *                     wake gate's pending flag left set): later producers
 *                     see a wake in flight and wake nobody;
 *   -DBROKEN_RECHECK  a worker sleeps right after registering, without
 *                     the re-check E2;
 *   -DBROKEN_CLOSE    close sets the flag but wakes no one (with -DCLOSE).
 */

#ifndef NWORKERS
#define NWORKERS 2
#endif
#ifndef NPRODUCERS
#define NPRODUCERS 2
#endif
#ifndef MAX_SPINNING
#define MAX_SPINNING 1
#endif

#define PARKED 0
#define WOKEN 1
#define CLOSED 2

byte items;            /* queued */
byte nidle;
byte nspinning;
bool closed;
bool lock;
bool onlist[NWORKERS];
byte state[NWORKERS];  /* the futex words */
byte produced;         /* producers finished */
byte exited;           /* workers that returned -ESHUTDOWN */

inline acquire() { atomic { lock == 0 -> lock = 1 } }
inline release() { lock = 0 }

inline unlink(w) {
	onlist[w] = 0;
	nidle--
}

/* kwq__park_wake */
inline wake() {
	do
	:: atomic {
		if
		:: nspinning == 0 -> nspinning = 1
		:: else -> break   /* its holder looks for work after it */
		fi
	   }
	   acquire();
	   if
	   :: (onlist[0] || onlist[1]) ->
		if
		:: onlist[0] -> unlink(0); state[0] = WOKEN
		:: onlist[1] -> unlink(1); state[1] = WOKEN
		fi;
		release();
		break
	   :: else ->
		release();
		nspinning--;
		if
		:: nidle == 0 -> break
		:: else -> skip
		fi
	   fi
	od
}

/* hand_off: after a take, with the token */
inline hand_off() {
	byte old;
	atomic { old = nspinning; nspinning-- };
	if
	:: old == 1 && nidle != 0 && items > 0 -> wake()
	:: else -> skip
	fi
}

/* give_up: leaving without an item, with the token */
inline give_up() {
	nspinning--;
	if
	:: nidle != 0 && items > 0 -> wake()
	:: else -> skip
	fi
}

proctype producer()
{
	atomic { items++ };                /* publish (seq_cst RMW) */
	if                                 /* N1: kwq__park_notify */
	:: nidle != 0 && nspinning == 0 -> wake()
	:: else -> skip
	fi;
	produced++
}

proctype worker(byte me)
{
	bool token = 0;
	bool got;
	byte s;

get:
	atomic {
		if
		:: items > 0 -> items--; got = 1
		:: else -> got = 0
		fi
	};
	if
	:: !got && closed ->
		atomic {
			if
			:: items > 0 -> items--; got = 1
			:: else -> got = 0
			fi
		};
		if
		:: !got ->
			if
			:: token -> give_up(); token = 0
			:: else -> skip
			fi;
			exited++;
			goto done
		:: else -> skip
		fi
	:: else -> skip
	fi;
	if
	:: got ->
#ifdef BROKEN_HANDOFF
		token = 0;             /* forgets to give the token back */
#else
		if
		:: token -> hand_off(); token = 0
		:: else -> skip
		fi;
#endif
		goto get               /* processed; the next get */
	:: else -> skip
	fi;

	/* spin_begin */
	if
	:: !token && nspinning < MAX_SPINNING -> nspinning++; token = 1
	:: else -> skip
	fi;
	if
	:: token ->
		if
		:: items > 0 || closed -> goto get   /* the spin saw work */
		:: true -> skip                      /* budget spent */
		fi;
		give_up();                           /* E3 (and the chain), then E2 */
		token = 0;
		if
		:: items > 0 -> goto get
		:: else -> skip
		fi
	:: else -> skip
	fi;

	/* prepare */
	state[me] = PARKED;
	acquire();
	if
	:: closed -> release(); goto get
	:: else -> skip
	fi;
	onlist[me] = 1;
	nidle++;                                     /* E1 */
	release();

#ifndef BROKEN_RECHECK
	/* E2 */
	if
	:: items > 0 || closed ->
		acquire();                           /* cancel */
		s = state[me];
		if
		:: s == PARKED -> unlink(me)
		:: else -> skip
		fi;
		release();
		if
		:: s == WOKEN -> token = 1
		:: else -> skip
		fi;
		goto get
	:: else -> skip
	fi;
#endif
	/* sleep_on */
end_sleep:
	state[me] != PARKED;
	if
	:: state[me] == WOKEN -> token = 1
	:: else -> skip
	fi;
	goto get
done:
	skip
}

#ifdef CLOSE
/* kwq__park_close, once the producers are done */
proctype closer()
{
	produced == NPRODUCERS;
	closed = 1;
#ifndef BROKEN_CLOSE
	acquire();
	do
	:: onlist[0] -> unlink(0); state[0] = CLOSED
	:: onlist[1] -> unlink(1); state[1] = CLOSED
	:: else -> break
	od;
	release()
#endif
}
#endif

/* Checked when nothing else can move. */
active proctype monitor()
{
end_mon:
	timeout ->
#ifdef CLOSE
	assert(exited == NWORKERS && items == 0)
#else
	assert(items == 0)
#endif
}

/* never negative: a byte would wrap to 255 */
#define TOKEN_OK (nspinning < 128)
active proctype token_watch()
{
end_tw:
	do
	:: !TOKEN_OK -> assert(TOKEN_OK)
	od
}

init
{
	atomic {
		byte i;
		for (i : 0 .. NWORKERS - 1) { run worker(i) }
		for (i : 1 .. NPRODUCERS) { run producer() }
#ifdef CLOSE
		run closer()
#endif
	}
}
