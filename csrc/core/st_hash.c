/*
 * st_hash.c - SipHash-1-3 (Aumasson and Bernstein's SipHash with one compression and three
 * finalization rounds, written from the paper's description).
 */
#define _GNU_SOURCE
#include "st_internal.h"

#include <endian.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND(v0, v1, v2, v3)                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13) ^ v0;                                                                    \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16) ^ v2;                                                                    \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21) ^ v0;                                                                    \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17) ^ v2;                                                                    \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

uint64_t st_hash(st_hash_key key, const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t v0 = key.k0 ^ UINT64_C(0x736f6d6570736575);
    uint64_t v1 = key.k1 ^ UINT64_C(0x646f72616e646f6d);
    uint64_t v2 = key.k0 ^ UINT64_C(0x6c7967656e657261);
    uint64_t v3 = key.k1 ^ UINT64_C(0x7465646279746573);
    uint64_t last = (uint64_t)len << 56;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t m;
        memcpy(&m, p + i, 8);
        m = le64toh(m);
        v3 ^= m;
        SIPROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    for (size_t j = 0; i + j < len; j++)
        last |= (uint64_t)p[i + j] << (8 * j);
    v3 ^= last;
    SIPROUND(v0, v1, v2, v3);
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

st_hash_key st_hash_new_key(void)
{
    st_hash_key key = {0, 0};
    if (getrandom(&key, sizeof key, GRND_NONBLOCK) != (ssize_t)sizeof key) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        key.k0 = (uint64_t)ts.tv_nsec * UINT64_C(0x9E3779B97F4A7C15) ^ (uint64_t)(uintptr_t)&key;
        key.k1 = (uint64_t)ts.tv_sec ^ ROTL(key.k0, 29);
    }
    return key;
}
