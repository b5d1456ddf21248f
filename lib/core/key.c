/*
 * key.c - key hashing and interning.
 *
 * The hash is a 64-bit multiply-fold (the shape of wyhash): one 64x64->128
 * multiply per 16-byte block, each half folded into the other, and two
 * more to finish.  It is seeded per queue so that keys an attacker chooses
 * cannot be aimed at one hash chain or one shard.  Shards take bits 48 and
 * up of the hash and ck_hs the low ones: both halves are mixed.
 */
#include "key.h"
#include "alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

#include <ck_malloc.h>

__extension__ typedef unsigned __int128 kwq_u128;

#define P0 0xa0761d6478bd642fULL
#define P1 0xe7037ed1a0b428dbULL
#define P2 0x8ebc6af09c88c6e3ULL
#define P3 0x589965cc75374cc3ULL

static inline uint64_t mulfold(uint64_t a, uint64_t b)
{
	kwq_u128 r = (kwq_u128)a * b;
	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t load64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof v);
	return v;
}

static uint64_t fmix64(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static inline uint64_t load32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof v);
	return v;
}

/*
 * Short keys (the common case: object names) take no loop and no
 * variable-length copy: overlapping fixed-size loads cover every byte, as
 * in wyhash.  Two multiply-folds mix the result; the length is mixed in
 * so that keys differing only by trailing NUL bytes differ.
 */
uint64_t kwq__hash(const void *key, size_t len, uint64_t seed)
{
	const unsigned char *p = key;
	uint64_t a, b;

	seed ^= P0;
	if (len <= 16) {
		if (len >= 4) {
			size_t m = (len >> 3) << 2; /* 0 for 4..7, 4 for 8..16 */
			a = load32(p) << 32 | load32(p + m);
			b = load32(p + len - 4) << 32 | load32(p + len - 4 - m);
		} else if (len > 0) {
			a = (uint64_t)p[0] << 16 | (uint64_t)p[len >> 1] << 8 | p[len - 1];
			b = 0;
		} else {
			a = b = 0;
		}
	} else {
		size_t n = len;
		while (n > 16) {
			seed = mulfold(load64(p) ^ P1, load64(p + 8) ^ seed);
			p += 16;
			n -= 16;
		}
		a = load64(p + n - 16);
		b = load64(p + n - 8);
	}
	return mulfold(P1 ^ (uint64_t)len, mulfold(a ^ P1, b ^ seed) ^ P3);
}

uint64_t kwq__random_seed(void)
{
	uint64_t s;

	if (getrandom(&s, sizeof s, GRND_NONBLOCK) == (ssize_t)sizeof s)
		return s;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return fmix64((uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec ^
		      (uint64_t)(uintptr_t)&s);
}

void *kwq__entry_new(size_t entry_size, size_t item_offset, const struct kwq__key *k)
{
	char *e = kwq__calloc(1, entry_size + k->len);
	if (e == NULL)
		return NULL;
	struct kwq_item *it = (struct kwq_item *)(void *)(e + item_offset);
	it->hash = k->hash;
	it->len = k->len;
	if (k->len > 0)
		memcpy(it->bytes, k->bytes, k->len);
	return e;
}

unsigned long kwq__item_hs_hash(const void *item, unsigned long seed)
{
	(void)seed;
	return (unsigned long)((const struct kwq_item *)item)->hash;
}

/* a is a stored item; b an item or a probe (see struct kwq__probe).  The
 * head is read with memcpy: b's effective type may be either struct. */
bool kwq__item_hs_compare(const void *a, const void *b)
{
	const struct kwq_item *x = a;
	uint64_t hash;
	uint32_t len;

	memcpy(&hash, (const char *)b + offsetof(struct kwq_item, hash), sizeof hash);
	memcpy(&len, (const char *)b + offsetof(struct kwq_item, len), sizeof len);
	if (x->hash != hash || x->len != (len & ~KWQ__PROBE))
		return false;
	const unsigned char *bytes = (len & KWQ__PROBE) ? ((const struct kwq__probe *)b)->key
							: ((const struct kwq_item *)b)->bytes;
	return kwq__bytes_eq(x->bytes, bytes, x->len);
}

static void *hs_malloc(size_t n)
{
	return kwq__malloc(n);
}

static void *hs_realloc(void *p, size_t old, size_t n, bool defer)
{
	(void)old;
	(void)defer;
	return kwq__realloc(p, n);
}

/*
 * Every ck_hs of ours is touched only under the lock that owns it, so no
 * reader can still be inside a map that is freed: deferral is not needed.
 */
static void hs_free(void *p, size_t n, bool defer)
{
	(void)n;
	(void)defer;
	free(p);
}

struct ck_malloc kwq__ck_allocator = {
	.malloc = hs_malloc,
	.realloc = hs_realloc,
	.free = hs_free,
};
