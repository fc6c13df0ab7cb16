/*
 * st_internal.h - internal to the core (not installed, not exported): helpers its files share.
 */
#ifndef ST_INTERNAL_H
#define ST_INTERNAL_H

#include "st_core.h"

#include <string.h>
#include <sys/types.h>

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

/* A file written under a temporary name in its destination's directory and renamed over
 * the destination when complete; st_write_file and the streaming writer share its rules
 * (docs/format.md §5.6): only a regular file or nothing is replaced, names are resolved
 * through a descriptor of the directory, and a failure leaves the destination untouched and
 * no temporary file behind. (st_writer.c) */
typedef struct st_staged_file {
    int dir_fd;       /* the destination's directory; -1 when closed */
    int fd;           /* the temporary file, open for writing; -1 when closed */
    const char *base; /* the destination's name in dir_fd: points into the caller's path */
    bool replacing;   /* a regular file is there now */
    mode_t mode;      /* ... with this mode, which the new file gets */
    bool created;     /* tmp exists and is ours to remove */
    char tmp[64];     /* the temporary file's name in dir_fd */
} st_staged_file;
/* Checks the destination, creates the temporary file and reserves `size` bytes for it
 * (path must outlive f). st_staged_discard is always safe, also after a failure. */
st_code st_staged_open(const char *path, uint64_t size, st_staged_file *f, st_error *err);
/* Closes the temporary file and renames it over the destination. */
st_code st_staged_commit(st_staged_file *f, st_error *err);
/* Releases everything; removes the temporary file unless it was committed. */
void st_staged_discard(st_staged_file *f);

#endif
