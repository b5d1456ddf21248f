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
 */
#include "keytable.h"
#include "../core/alloc.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
	free(t);
}

int kwq__keytable_bump(struct kwq__keytable *t, const void *key, size_t len)
{
	uint64_t h = kwq__hash(key, len, t->seed);
	struct shard *s = shard_of(t, h);
	struct entry *fresh = NULL;

	for (;;) {
		pthread_mutex_lock(&s->lock);
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

void kwq__keytable_forget(struct kwq__keytable *t, const void *key, size_t len)
{
	uint64_t h = kwq__hash(key, len, t->seed);
	struct shard *s = shard_of(t, h);
	struct entry *gone = NULL;

	pthread_mutex_lock(&s->lock);
	struct slot *sl = lookup(s, h, key, len);
	if (sl != NULL) {
		gone = sl->e;
		remove_at(s, (size_t)(sl - s->slots));
		/* A failed shrink only keeps the larger table. */
		if (s->cap > MIN_CAP && 8 * s->used < s->cap)
			(void)resize(s, s->cap / 2);
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
