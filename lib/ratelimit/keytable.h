/*
 * keytable.h - per-key failure counts for the per-item limiters.
 *
 * A map from key bytes to a count, split into shards that each have their
 * own mutex, so calls on keys of different shards do not contend.  Every
 * call may run concurrently with every other except kwq__keytable_free;
 * calls on one key are linearizable (each takes that key's shard lock, so
 * ThreadSanitizer sees the ordering).  A key that is absent counts 0.
 */
#ifndef KWQ_RATELIMIT_KEYTABLE_H
#define KWQ_RATELIMIT_KEYTABLE_H

#include <stddef.h>

struct kwq__keytable;

/* An empty table with a fresh random hash seed; NULL with errno ENOMEM. */
struct kwq__keytable *kwq__keytable_new(void);

/* Free the table and every entry in it.  NULL is accepted.  Exclusive. */
void kwq__keytable_free(struct kwq__keytable *t);

/*
 * Add one to key's count (it saturates at INT_MAX) and return the count it
 * had before, or -ENOMEM when a new key could not be stored (nothing
 * changes then).  key must not be NULL.
 */
int kwq__keytable_bump(struct kwq__keytable *t, const void *key, size_t len);

/* key's count, 0 when absent. */
int kwq__keytable_count(struct kwq__keytable *t, const void *key, size_t len);

/* Remove key and free its memory; nothing happens when it is absent. */
void kwq__keytable_forget(struct kwq__keytable *t, const void *key, size_t len);

/*
 * Keep at most max_keys keys (0: no limit, the default): a bump of a new
 * key past the cap forgets the key whose last bump is the oldest, and a cap
 * below the number stored forgets the oldest at once.  Each eviction is
 * O(1).  Keys stored while no cap was set count as older than any bumped
 * since.  With a cap set, bump and forget also take a table-wide lock.
 */
void kwq__keytable_set_max_keys(struct kwq__keytable *t, size_t max_keys);

/* The number of keys stored (a snapshot while calls are in flight). */
size_t kwq__keytable_size(struct kwq__keytable *t);

#endif
