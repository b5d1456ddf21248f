/*
 * keytable.c - per-key failure counts: sharded open-addressing tables.
 *
 * The top bits of a key's seeded hash pick one of SHARDS shards; the low
 * bits pick the home slot in that shard's linear-probing table.  A slot
 * keeps the full hash beside the entry pointer, so a probe compares key
 * bytes only when the hashes match.  Deletion shifts later entries of the
 * probe run back instead of leaving tombstones: a limiter that does
 * when/forget pairs forever (the common retry pattern) would otherwise fill
 * its table with tombstones and rehash over and over.
 *
 * Each shard is guarded by its own pthread mutex, held only for a probe and
 * at most one resize; entries are allocated outside it.  The seed is random
 * per table so that keys chosen by an attacker cannot be aimed at one probe
 * run.  A table shrinks when it falls below 1/8 full, so forgetting keys
 * gives their memory back, but never below MIN_CAP once allocated: a shard
 * that sees one key come and go does not reallocate on every pair.
 *
 * The cap (kwq__keytable_set_max_keys).  With max_keys 0, the default, the
 * table is as above and an entry's LRU link is dead data: bump and forget
 * read max_keys once under the shard lock and take no other lock.  With a
 * cap set, every entry is also on one table-wide list, most recent failure
 * at the head, so that the entry to evict is always the tail: O(1), no
 * scan.  The list, its length and every entry's link are guarded by
 * lru_lock; bump and forget of a capped table take lru_lock, then the
 * key's shard lock, and an eviction takes the victim's shard lock only
 * after the key's is released.  So the lock order is lru_lock before any
 * shard lock, and nobody holds two shard locks.
 *
 * Invariants, for whoever holds lru_lock and reads max_keys != 0: every
 * entry in the table is on the list exactly once, and lru_len counts them;
 * so lru_len <= max_keys once the holder is done.  max_keys is written only
 * under lru_lock:
 *
 *   0 -> n  stores n first, then links every entry shard by shard (under
 *           each shard lock).  A bump that read 0 under a shard lock ran
 *           before that shard was scanned, so the scan finds its entry;
 *           one that reads n goes to the capped path and waits for
 *           lru_lock.  Keys failed before the cap count as older than any
 *           failure since, in no set order among themselves.
 *   n -> 0  empties the list (the links become dead data), then stores 0.
 *   n -> m  stores m, then evicts from the tail while lru_len > m.
 *
 *   LIM.S1  set_max_keys stores max_keys (release)  pairs with LIM.A1 (bump)
 *           and LIM.A2 (forget), the acquire loads under a shard lock: a
 *           thread that reads 0 there frees or reuses entries whose links
 *           capped callers wrote under lru_lock only, which that store
 *           follows.
 *
 * A thread that read a nonzero cap under the shard lock drops it and takes
 * lru_lock, then the shard lock again, and reads max_keys again; if the cap
 * went back to 0 meanwhile it starts over on the uncapped path.
 */
#include "keytable.h"
#include "../core/alloc.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/dlist.h"
#include "../core/key.h"

/*
 * 64 shards: enough that a few dozen threads rarely meet on one lock, few
 * enough (4 KiB of shard headers) that every limiter can afford its own.
 */
#define SHARD_BITS 6
#define SHARDS (1u << SHARD_BITS)
#define MIN_CAP 8u
#define CACHE_LINE 64

struct entry {
	struct kwq__dlink lru; /* under lru_lock; dead data while uncapped */
	int count;
	uint32_t len;
	unsigned char bytes[];
};

struct slot {
	uint64_t hash;
	struct entry *e; /* NULL: empty */
};

/* Cache-line aligned so that two shards' locks never share a line. */
struct shard {
	alignas(CACHE_LINE) pthread_mutex_t lock;
	struct slot *slots; /* NULL until the first key arrives */
	size_t cap;         /* a power of two, or 0 with slots NULL */
	size_t used;
};

static_assert(sizeof(struct shard) % CACHE_LINE == 0, "shards straddle cache lines");

struct kwq__keytable {
	uint64_t seed;
	struct shard shards[SHARDS];
	_Atomic size_t max_keys; /* 0: no cap; written under lru_lock */
	/* Its own line: capped callers write it, every caller reads max_keys. */
	alignas(CACHE_LINE) pthread_mutex_t lru_lock;
	struct kwq__dlist lru;   /* head: the latest failure */
	size_t lru_len;
};

static struct shard *shard_of(struct kwq__keytable *t, uint64_t h)
{
	return &t->shards[h >> (64 - SHARD_BITS)];
}

static bool entry_is(const struct slot *s, uint64_t h, const void *key, size_t len)
{
	return s->hash == h && s->e->len == len &&
	       (len == 0 || memcmp(s->e->bytes, key, len) == 0);
}

/* The slot holding key, or the empty slot that ends its probe run. */
static size_t probe(const struct shard *s, uint64_t h, const void *key, size_t len)
{
	size_t mask = s->cap - 1;
	size_t i = (size_t)h & mask;

	while (s->slots[i].e != NULL && !entry_is(&s->slots[i], h, key, len))
		i = (i + 1) & mask;
	return i;
}

static struct slot *lookup(const struct shard *s, uint64_t h, const void *key, size_t len)
{
	if (s->cap == 0)
		return NULL;
	struct slot *sl = &s->slots[probe(s, h, key, len)];
	return sl->e != NULL ? sl : NULL;
}

/* Move every entry into a table of ncap slots; false (nothing changed) on ENOMEM. */
static bool resize(struct shard *s, size_t ncap)
{
	struct slot *n = kwq__calloc(ncap, sizeof *n);
	if (n == NULL)
		return false;
	for (size_t i = 0; i < s->cap; i++) {
		if (s->slots[i].e == NULL)
			continue;
		size_t j = (size_t)s->slots[i].hash & (ncap - 1);
		while (n[j].e != NULL)
			j = (j + 1) & (ncap - 1);
		n[j] = s->slots[i];
	}
	free(s->slots);
	s->slots = n;
	s->cap = ncap;
	return true;
}

/* Empty slot i, closing the gap so that every later key stays reachable. */
static void remove_at(struct shard *s, size_t i)
{
	size_t mask = s->cap - 1;

	for (size_t j = (i + 1) & mask; s->slots[j].e != NULL; j = (j + 1) & mask) {
		size_t home = (size_t)s->slots[j].hash & mask;
		/* An entry whose home lies in (i, j] would be cut off from it. */
		bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
		if (!stays) {
			s->slots[i] = s->slots[j];
			i = j;
		}
	}
	s->slots[i].e = NULL;
	s->used--;
}

/* Empty slot i for good: the table may shrink. */
static void remove_slot(struct shard *s, size_t i)
{
	remove_at(s, i);
	/* A failed shrink only keeps the larger table. */
	if (s->cap > MIN_CAP && 8 * s->used < s->cap)
		(void)resize(s, s->cap / 2);
}

/* Remove entry e, whose hash is h, from s (it must be there). */
static void remove_entry(struct shard *s, uint64_t h, const struct entry *e)
{
	size_t i = (size_t)h & (s->cap - 1);

	/* Pointers, not key bytes: e is the one entry with its key. */
	while (s->slots[i].e != e)
		i = (i + 1) & (s->cap - 1);
	remove_slot(s, i);
}

/*
 * Forget the entry whose last failure is the oldest.  lru_lock held, no
 * shard lock held, the list not empty.  Returns the entry, for the caller
 * to free once it has dropped lru_lock.
 */
static struct entry *evict_oldest(struct kwq__keytable *t)
{
	struct entry *e = kwq__container_of(t->lru.tail, struct entry, lru);
	uint64_t h = kwq__hash(e->bytes, e->len, t->seed);
	struct shard *s = shard_of(t, h);

	kwq__dlist_unlink(&t->lru, &e->lru);
	t->lru_len--;
	pthread_mutex_lock(&s->lock);
	remove_entry(s, h, e);
	pthread_mutex_unlock(&s->lock);
	return e;
}

struct kwq__keytable *kwq__keytable_new(void)
{
	struct kwq__keytable *t = kwq__aligned_alloc(CACHE_LINE, sizeof *t);
	if (t == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	t->seed = kwq__random_seed();
	for (size_t i = 0; i < SHARDS; i++) {
		struct shard *s = &t->shards[i];
		pthread_mutex_init(&s->lock, NULL);
		s->slots = NULL;
		s->cap = 0;
		s->used = 0;
	}
	atomic_init(&t->max_keys, 0);
	pthread_mutex_init(&t->lru_lock, NULL);
	kwq__dlist_init(&t->lru);
	t->lru_len = 0;
	return t;
}

void kwq__keytable_free(struct kwq__keytable *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < SHARDS; i++) {
		struct shard *s = &t->shards[i];
		for (size_t j = 0; j < s->cap; j++)
			free(s->slots[j].e);
		free(s->slots);
		pthread_mutex_destroy(&s->lock);
	}
	pthread_mutex_destroy(&t->lru_lock);
	free(t);
}

/* What the capped paths return when the cap went back to 0 under them. */
#define UNCAPPED INT_MIN

/*
 * kwq__keytable_bump with a cap set: as the uncapped path, but under
 * lru_lock, moving the key to the head of the list and evicting the tail
 * when a new key takes the list past the cap.  *fresh is an entry the
 * caller allocated (or NULL); it is consumed or freed unless UNCAPPED is
 * returned.
 */
static int bump_capped(struct kwq__keytable *t, struct shard *s, uint64_t h,
		       const void *key, size_t len, struct entry **fresh)
{
	struct entry *gone = NULL;
	int ret = 0;

	for (;;) {
		pthread_mutex_lock(&t->lru_lock);
		/* Written under lru_lock only: relaxed reads the current value. */
		if (atomic_load_explicit(&t->max_keys, memory_order_relaxed) == 0) {
			pthread_mutex_unlock(&t->lru_lock);
			return UNCAPPED;
		}
		pthread_mutex_lock(&s->lock);
		struct slot *sl = lookup(s, h, key, len);
		if (sl != NULL) {
			struct entry *e = sl->e;
			ret = e->count;
			if (ret < INT_MAX)
				e->count = ret + 1;
			pthread_mutex_unlock(&s->lock);
			kwq__dlist_unlink(&t->lru, &e->lru);
			kwq__dlist_push_front(&t->lru, &e->lru);
			goto out;
		}
		if (*fresh != NULL)
			break;
		/* Allocate outside both locks; the key is looked up again after. */
		pthread_mutex_unlock(&s->lock);
		pthread_mutex_unlock(&t->lru_lock);
		*fresh = kwq__malloc(sizeof **fresh + len);
		if (*fresh == NULL)
			return -ENOMEM;
		(*fresh)->count = 1;
		(*fresh)->len = (uint32_t)len;
		if (len > 0)
			memcpy((*fresh)->bytes, key, len);
	}

	if (2 * (s->used + 1) > s->cap &&
	    !resize(s, s->cap == 0 ? MIN_CAP : 2 * s->cap)) {
		/* Nothing changed: no key is evicted for a failure not counted. */
		pthread_mutex_unlock(&s->lock);
		ret = -ENOMEM;
		goto out;
	}
	size_t i = probe(s, h, key, len);
	s->slots[i].hash = h;
	s->slots[i].e = *fresh;
	s->used++;
	pthread_mutex_unlock(&s->lock);
	kwq__dlist_push_front(&t->lru, &(*fresh)->lru);
	*fresh = NULL;
	/* The new key is the head, so with a cap >= 1 it is never the victim. */
	if (++t->lru_len > atomic_load_explicit(&t->max_keys, memory_order_relaxed))
		gone = evict_oldest(t);
out:
	pthread_mutex_unlock(&t->lru_lock);
	free(gone);
	free(*fresh); /* another thread stored the key first, or ENOMEM */
	*fresh = NULL;
	return ret;
}

int kwq__keytable_bump(struct kwq__keytable *t, const void *key, size_t len)
{
	uint64_t h = kwq__hash(key, len, t->seed);
	struct shard *s = shard_of(t, h);
	struct entry *fresh = NULL;

	for (;;) {
		pthread_mutex_lock(&s->lock);
		/* LIM.A1: pairs with LIM.S1 (a 0 read here is the cap's end). */
		if (atomic_load_explicit(&t->max_keys, memory_order_acquire) != 0) {
			pthread_mutex_unlock(&s->lock);
			int ret = bump_capped(t, s, h, key, len, &fresh);
			if (ret != UNCAPPED)
				return ret;
			continue;
		}
		struct slot *sl = lookup(s, h, key, len);
		if (sl != NULL) {
			int before = sl->e->count;
			if (before < INT_MAX)
				sl->e->count = before + 1;
			pthread_mutex_unlock(&s->lock);
			free(fresh); /* another thread stored the key first */
			return before;
		}
		if (fresh != NULL)
			break;
		/* Allocate outside the lock; the key is looked up again after. */
		pthread_mutex_unlock(&s->lock);
		fresh = kwq__malloc(sizeof *fresh + len);
		if (fresh == NULL)
			return -ENOMEM;
		fresh->count = 1;
		fresh->len = (uint32_t)len;
		if (len > 0)
			memcpy(fresh->bytes, key, len);
	}

	/* Grow at half full: linear probing degrades fast beyond that. */
	if (2 * (s->used + 1) > s->cap &&
	    !resize(s, s->cap == 0 ? MIN_CAP : 2 * s->cap)) {
		pthread_mutex_unlock(&s->lock);
		free(fresh);
		return -ENOMEM;
	}
	size_t i = probe(s, h, key, len);
	s->slots[i].hash = h;
	s->slots[i].e = fresh;
	s->used++;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int kwq__keytable_count(struct kwq__keytable *t, const void *key, size_t len)
{
	uint64_t h = kwq__hash(key, len, t->seed);
	struct shard *s = shard_of(t, h);

	pthread_mutex_lock(&s->lock);
	struct slot *sl = lookup(s, h, key, len);
	int count = sl != NULL ? sl->e->count : 0;
	pthread_mutex_unlock(&s->lock);
	return count;
}

/* kwq__keytable_forget with a cap set; false when the cap went back to 0. */
static bool forget_capped(struct kwq__keytable *t, struct shard *s, uint64_t h,
			  const void *key, size_t len)
{
	struct entry *gone = NULL;

	pthread_mutex_lock(&t->lru_lock);
	if (atomic_load_explicit(&t->max_keys, memory_order_relaxed) == 0) {
		pthread_mutex_unlock(&t->lru_lock);
		return false;
	}
	pthread_mutex_lock(&s->lock);
	struct slot *sl = lookup(s, h, key, len);
	if (sl != NULL) {
		gone = sl->e;
		remove_slot(s, (size_t)(sl - s->slots));
	}
	pthread_mutex_unlock(&s->lock);
	if (gone != NULL) {
		kwq__dlist_unlink(&t->lru, &gone->lru);
		t->lru_len--;
	}
	pthread_mutex_unlock(&t->lru_lock);
	free(gone);
	return true;
}

void kwq__keytable_forget(struct kwq__keytable *t, const void *key, size_t len)
{
	uint64_t h = kwq__hash(key, len, t->seed);
	struct shard *s = shard_of(t, h);
	struct entry *gone = NULL;

	pthread_mutex_lock(&s->lock);
	/* LIM.A2: pairs with LIM.S1 (a 0 read here is the cap's end). */
	while (atomic_load_explicit(&t->max_keys, memory_order_acquire) != 0) {
		pthread_mutex_unlock(&s->lock);
		if (forget_capped(t, s, h, key, len))
			return;
		pthread_mutex_lock(&s->lock);
	}
	struct slot *sl = lookup(s, h, key, len);
	if (sl != NULL) {
		gone = sl->e;
		remove_slot(s, (size_t)(sl - s->slots));
	}
	pthread_mutex_unlock(&s->lock);
	free(gone);
}

size_t kwq__keytable_size(struct kwq__keytable *t)
{
	size_t n = 0;

	for (size_t i = 0; i < SHARDS; i++) {
		struct shard *s = &t->shards[i];
		pthread_mutex_lock(&s->lock);
		n += s->used;
		pthread_mutex_unlock(&s->lock);
	}
	return n;
}

void kwq__keytable_set_max_keys(struct kwq__keytable *t, size_t max_keys)
{
	pthread_mutex_lock(&t->lru_lock);
	size_t old = atomic_load_explicit(&t->max_keys, memory_order_relaxed);
	if (max_keys == 0) {
		/* The links become dead data before anyone can read 0. */
		kwq__dlist_init(&t->lru);
		t->lru_len = 0;
	}
	/* LIM.S1: pairs with LIM.A1 and LIM.A2. */
	atomic_store_explicit(&t->max_keys, max_keys, memory_order_release);
	if (old == 0 && max_keys != 0) {
		/*
		 * Stored first: a bump that still reads 0 holds its shard's
		 * lock, so its entry is in place before that shard is scanned.
		 */
		for (size_t i = 0; i < SHARDS; i++) {
			struct shard *s = &t->shards[i];
			pthread_mutex_lock(&s->lock);
			for (size_t j = 0; j < s->cap; j++) {
				if (s->slots[j].e != NULL)
					kwq__dlist_push_back(&t->lru, &s->slots[j].e->lru);
			}
			t->lru_len += s->used;
			pthread_mutex_unlock(&s->lock);
		}
	}
	/* Each victim is unreachable once evicted: free it right away. */
	while (max_keys != 0 && t->lru_len > max_keys)
		free(evict_oldest(t));
	pthread_mutex_unlock(&t->lru_lock);
}
