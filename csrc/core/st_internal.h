/*
 * st_internal.h - internal to the core (not installed, not exported): helpers
 * its files share.
 */
#ifndef ST_INTERNAL_H
#define ST_INTERNAL_H

#include "st_core.h"

#include <string.h>

/* Grows *arr (*cap elements of elem bytes) to hold at least need, doubling; false when out
 * of memory. (st_alloc.c) */
bool st_grow(void **arr, size_t *cap, size_t need, size_t elem);

/* Names come from untrusted files: with a fixed hash a crafted header puts every name in
 * one probe chain (20 s to open 100,000 names). The name table uses SipHash-1-3 with a
 * random key per header (CPython's str hash), so collisions are unpredictable. (st_hash.c) */
typedef struct st_hash_key {
    uint64_t k0, k1;
} st_hash_key;
/* A fresh unpredictable key (getrandom; a time/address mix if that fails); the writer
 * names its temporary files with one too. */
st_hash_key st_hash_new_key(void);
uint64_t st_hash(st_hash_key key, const void *data, size_t len);
/* Bytewise order of two names (a prefix first); inline: sorts call it a lot. */
static inline int st_name_cmp(const char *a, size_t a_len, const char *b, size_t b_len)
{
    int c = a_len && b_len ? memcmp(a, b, a_len < b_len ? a_len : b_len) : 0;
    return c ? c : (a_len > b_len) - (a_len < b_len);
}

#endif
