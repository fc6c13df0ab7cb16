/*
 * st_hash.h - internal: keyed hashing for the tensor-name table. Names come
 * from untrusted files: with a fixed hash a crafted header puts every name in
 * one probe chain (20 s to open 100,000 names). SipHash-1-3 with a random key
 * per header (CPython's str hash) makes collisions unpredictable.
 */
#ifndef ST_HASH_H
#define ST_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct st_hash_key {
    uint64_t k0, k1;
} st_hash_key;

/* A fresh unpredictable key (getrandom; a time/address mix if that fails); the
 * writer names its temporary files with one too. */
st_hash_key st_hash_new_key(void);
uint64_t st_hash(st_hash_key key, const void *data, size_t len);

#endif /* ST_HASH_H */
