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
struct kwq__key {
	const unsigned char *bytes; /* never NULL, even for len == 0 */
	uint32_t len;
	uint64_t hash;
};

struct kwq_item {
	uint64_t hash;
	uint32_t len;
	int32_t priority;           /* priority it was handed out with */
	unsigned char bytes[];
};

/*
 * A lookup probe: a key in the caller's buffer, shaped like the head of a
 * struct kwq_item (same hash and len offsets) with KWQ__PROBE set in len,
 * so that one ck_hs compare callback takes either: ck_hs passes a probe on
 * get and the new item on put.  Keeping the key pointer out of struct
 * kwq_item saves 8 bytes on every interned key.
 */
struct kwq__probe {
	uint64_t hash;
	uint32_t len;               /* | KWQ__PROBE */
	uint32_t unused;
	const unsigned char *key;
};

#define KWQ__PROBE 0x80000000u

_Static_assert(offsetof(struct kwq__probe, hash) == offsetof(struct kwq_item, hash) &&
	       offsetof(struct kwq__probe, len) == offsetof(struct kwq_item, len),
	       "a probe reads as an item's head");

uint64_t kwq__hash(const void *key, size_t len, uint64_t seed);

/* A fresh 64-bit seed from the kernel's entropy (falls back to a clock mix). */
uint64_t kwq__random_seed(void);

/*
 * Where a struct kwq_item sits in an allocation that starts with a header
 * of type `hdr` (an implementation's entry, a delayed-add request): just
 * past it, aligned.  The item ends in the key bytes, so it comes last.
 */
#define KWQ__ITEM_OFFSET(hdr) \
	((sizeof(hdr) + _Alignof(struct kwq_item) - 1) & ~(_Alignof(struct kwq_item) - 1))

/*
 * Allocate an entry of entry_size bytes whose struct kwq_item member sits at
 * item_offset, copy the key into it and zero the rest.  NULL on ENOMEM.
 */
void *kwq__entry_new(size_t entry_size, size_t item_offset, const struct kwq__key *k);

/* Set up a lookup probe for k (no allocation). */
static inline void kwq__item_probe(struct kwq__probe *probe, const struct kwq__key *k)
{
	probe->hash = k->hash;
	probe->len = k->len | KWQ__PROBE;
	probe->unused = 0;
	probe->key = k->bytes;
}

/*
 * Whether n bytes at a and b are equal.  Keys are mostly short names: up
 * to 16 bytes take two overlapping loads a side and no call (every byte
 * loaded lies inside both keys); longer ones go to memcmp.
 */
static inline bool kwq__bytes_eq(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	uint64_t u, v, s, t;

	if (n >= 8 && n <= 16) {
		memcpy(&u, x, 8);
		memcpy(&v, y, 8);
		memcpy(&s, x + n - 8, 8);
		memcpy(&t, y + n - 8, 8);
		return ((u ^ v) | (s ^ t)) == 0;
	}
	if (n >= 4 && n < 8) {
		uint32_t p, q, r, w;
		memcpy(&p, x, 4);
		memcpy(&q, y, 4);
		memcpy(&r, x + n - 4, 4);
		memcpy(&w, y + n - 4, 4);
		return ((p ^ q) | (r ^ w)) == 0;
	}
	return memcmp(x, y, n) == 0;
}

/* Whether item it holds key k (its hash first: one compare rejects). */
static inline bool kwq__item_is(const struct kwq_item *it, const struct kwq__key *k)
{
	return it->hash == k->hash && it->len == k->len && kwq__bytes_eq(it->bytes, k->bytes, k->len);
}

/* ck_hs callbacks for sets of struct kwq_item pointers (object mode). */
unsigned long kwq__item_hs_hash(const void *item, unsigned long seed);
bool kwq__item_hs_compare(const void *a, const void *b);
extern struct ck_malloc kwq__ck_allocator;

#define kwq__container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#endif
