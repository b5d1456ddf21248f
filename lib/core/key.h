/*
 * key.h - key hashing and interned key storage shared by implementations.
 *
 * struct kwq_item is the public item handle.  An implementation embeds it as
 * the LAST member of its per-key entry (it ends in the key bytes), so the
 * entry is one allocation: implementation state, then the interned key.
 */
#ifndef KWQ_CORE_KEY_H
#define KWQ_CORE_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A validated key as the core hands it to an implementation. */
struct kwq_key {
	const unsigned char *bytes; /* never NULL, even for len == 0 */
	uint32_t len;
	uint64_t hash;
};

struct kwq_item {
	uint64_t hash;
	const unsigned char *key;   /* == bytes for an interned key; a lookup
	                               probe points it at the caller's buffer */
	uint32_t len;
	int32_t priority;           /* priority it was handed out with */
	unsigned char bytes[];
};

uint64_t kwq__hash(const void *key, size_t len, uint64_t seed);

/* A fresh 64-bit seed from the kernel's entropy (falls back to a clock mix). */
uint64_t kwq__random_seed(void);

/*
 * Allocate an entry of entry_size bytes whose struct kwq_item member sits at
 * item_offset, copy the key into it and zero the rest.  NULL on ENOMEM.
 */
void *kwq__entry_new(size_t entry_size, size_t item_offset, const struct kwq_key *k);

/* Set up a lookup probe for k (no allocation). */
static inline void kwq__item_probe(struct kwq_item *probe, const struct kwq_key *k)
{
	probe->hash = k->hash;
	probe->key = k->bytes;
	probe->len = k->len;
	probe->priority = 0;
}

static inline bool kwq__item_equal(const struct kwq_item *a, const struct kwq_item *b)
{
	return a->hash == b->hash && a->len == b->len &&
	       memcmp(a->key, b->key, a->len) == 0;
}

/* ck_hs callbacks for sets of struct kwq_item pointers (object mode). */
unsigned long kwq__item_hs_hash(const void *item, unsigned long seed);
bool kwq__item_hs_compare(const void *a, const void *b);
extern struct ck_malloc kwq__ck_allocator;

#define kwq__container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#endif
