/*
 * st_stream.c - the streaming writer: declare every tensor up front, then
 * write each one's bytes when it is ready, in any order, from any thread.
 *
 * Because names, dtypes and shapes are known at open, st_write_layout (the
 * same code save_file uses) fixes the header and every tensor's offset
 * before any data exists; the header is written at once and each tensor is
 * one pwrite at its own offset. The file is therefore byte-identical to
 * save_file of the same tensors, and the writer never holds more than the
 * caller's current tensor.
 *
 * Atomicity and the destination rules are st_write_file's, through the same
 * st_staged_file: everything goes to a temporary file in the destination's
 * directory; only st_stream_commit renames it over the destination, after
 * checking every tensor was written. Freeing a stream that was not committed
 * removes the temporary file.
 *
 * Threads: each tensor's state is an atomic (pending -> writing -> written),
 * so two threads writing the same tensor are told so instead of racing, and
 * pwrite at distinct offsets needs no lock. commit and free must not overlap
 * a write (the caller joins its writers first).
 */
#define _GNU_SOURCE

#include "st_core.h"
#include "st_staged.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { PENDING = 0, WRITING = 1, WRITTEN = 2 };

typedef struct stream_entry {
    const char *name; /* into the stream's arena */
    size_t name_len;
    st_dtype dtype;
    size_t ndim;
    const uint64_t *shape; /* into the arena */
    uint64_t nbytes;
    uint64_t offset; /* absolute, in the file */
    atomic_int state;
} stream_entry;

struct st_stream {
    st_staged_file file; /* file.fd is -1 once committed or aborted */
    char *path;          /* destination; file.base points into it */
    size_t count;
    stream_entry *entries; /* declaration order */
    size_t *by_name;       /* entry indices sorted by name, for st_stream_find */
    uint8_t *arena;        /* names and shapes */
    uint64_t total_size;
};

/* Longest part of a tensor name quoted in a message. */
#define NAME_IN_MSG 200

static int cmp_names(const stream_entry *a, const stream_entry *b)
{
    size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = n ? memcmp(a->name, b->name, n) : 0;
    if (c != 0)
        return c;
    return a->name_len < b->name_len ? -1 : (a->name_len > b->name_len);
}

/* qsort has no context argument: sort pairs carrying the entry pointer. */
typedef struct name_ref {
    const stream_entry *entry;
    size_t index;
} name_ref;

static int cmp_name_ref(const void *pa, const void *pb)
{
    return cmp_names(((const name_ref *)pa)->entry, ((const name_ref *)pb)->entry);
}

static int min_int(size_t a, int b)
{
    return a < (size_t)b ? (int)a : b;
}

static st_code pwrite_all(int fd, const uint8_t *data, uint64_t len, uint64_t offset, st_error *err)
{
    while (len > 0) {
        size_t chunk = len > ((size_t)1 << 30) ? ((size_t)1 << 30) : (size_t)len;
        ssize_t w = pwrite(fd, data, chunk, (off_t)offset);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return st_error_io(err, errno, offset);
        }
        if (w == 0)
            return st_error_io(err, EIO, offset);
        data += w;
        len -= (uint64_t)w;
        offset += (uint64_t)w;
    }
    return ST_OK;
}

/* Allocates the stream and copies the destination and every declaration's
 * name and shape into it (the caller's may go away after st_stream_open). */
static st_code new_stream(const char *path, const st_write_tensor *tensors, size_t count,
                          st_stream **out, st_error *err)
{
    size_t path_len = strlen(path), arena_size = 0, n = count ? count : 1;
    st_stream *s = st_calloc(1, sizeof *s);

    *out = s;
    if (s == NULL)
        return st_error_code(err, ST_ERR_NOMEM, 0);
    s->file = (st_staged_file){.dir_fd = -1, .fd = -1};
    s->count = count;
    for (size_t i = 0; i < count; i++) {
        if (tensors[i].ndim > ST_MAX_DIMS)
            return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                                "tensor `%.*s` has %zu dimensions, at most %d are supported",
                                min_int(tensors[i].name_len, NAME_IN_MSG), tensors[i].name,
                                tensors[i].ndim, ST_MAX_DIMS);
        arena_size += tensors[i].ndim * sizeof(uint64_t) + tensors[i].name_len;
    }
    s->path = st_malloc(path_len + 1);
    s->entries = st_calloc(n, sizeof *s->entries);
    s->by_name = st_calloc(n, sizeof *s->by_name);
    s->arena = st_malloc(arena_size ? arena_size : 1);
    if (s->path == NULL || s->entries == NULL || s->by_name == NULL || s->arena == NULL)
        return st_error_code(err, ST_ERR_NOMEM, 0);
    memcpy(s->path, path, path_len + 1);

    /* Shapes first (8-byte aligned), names after. */
    uint8_t *cursor = s->arena;
    for (size_t i = 0; i < count; i++) {
        size_t shape_bytes = tensors[i].ndim * sizeof(uint64_t);
        if (shape_bytes)
            memcpy(cursor, tensors[i].shape, shape_bytes);
        s->entries[i].shape = (const uint64_t *)(void *)cursor;
        cursor += shape_bytes;
    }
    for (size_t i = 0; i < count; i++) {
        stream_entry *e = &s->entries[i];
        if (tensors[i].name_len)
            memcpy(cursor, tensors[i].name, tensors[i].name_len);
        e->name = (const char *)cursor;
        e->name_len = tensors[i].name_len;
        cursor += tensors[i].name_len;
        e->dtype = tensors[i].dtype;
        e->ndim = tensors[i].ndim;
        atomic_init(&e->state, PENDING);
        if ((unsigned)e->dtype >= (unsigned)ST_DTYPE__COUNT)
            return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                                "invalid dtype %d for tensor `%.*s`", (int)e->dtype,
                                min_int(e->name_len, NAME_IN_MSG), e->name);
    }
    return ST_OK;
}

/* Sorts the entries by name into s->by_name (for st_stream_find) and
 * refuses a name declared twice: a dict cannot hold one twice, a list can. */
static st_code index_names(st_stream *s, st_error *err)
{
    st_code rc = ST_OK;
    name_ref *refs = st_calloc(s->count ? s->count : 1, sizeof *refs);

    if (refs == NULL)
        return st_error_code(err, ST_ERR_NOMEM, 0);
    for (size_t i = 0; i < s->count; i++)
        refs[i] = (name_ref){&s->entries[i], i};
    qsort(refs, s->count, sizeof *refs, cmp_name_ref);
    for (size_t i = 0; i < s->count && rc == ST_OK; i++) {
        s->by_name[i] = refs[i].index;
        if (i > 0 && cmp_names(refs[i - 1].entry, refs[i].entry) == 0)
            rc = st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "tensor `%.*s` is declared twice",
                              min_int(refs[i].entry->name_len, NAME_IN_MSG), refs[i].entry->name);
    }
    st_free(refs);
    return rc;
}

/* Lays the file out as st_write_file would (each tensor with data_len =
 * its size) and records every tensor's size and absolute offset. */
static st_code lay_out(st_stream *s, const st_metadata_item *metadata, size_t metadata_count,
                       bool has_metadata, st_layout *layout, st_error *err)
{
    size_t n = s->count ? s->count : 1;
    st_write_tensor *sized = st_calloc(n, sizeof *sized);
    st_code rc = ST_OK;

    layout->order = st_calloc(n, sizeof *layout->order);
    if (sized == NULL || layout->order == NULL) {
        rc = st_error_code(err, ST_ERR_NOMEM, 0);
        goto exit;
    }
    for (size_t i = 0; i < s->count; i++) {
        stream_entry *e = &s->entries[i];
        if ((rc = st_tensor_nbytes(e->dtype, e->shape, e->ndim, &e->nbytes, err)) != ST_OK)
            goto exit;
        sized[i] =
            (st_write_tensor){e->name, e->name_len, e->dtype, e->ndim, e->shape, NULL, e->nbytes};
    }
    layout->tensors = sized;
    layout->count = s->count;
    layout->metadata = metadata;
    layout->metadata_count = metadata_count;
    layout->has_metadata = has_metadata;
    if ((rc = st_write_layout(layout, err)) != ST_OK)
        goto exit;
    s->total_size = layout->total_size;
    uint64_t offset = layout->header_size;
    for (size_t i = 0; i < s->count; i++) {
        s->entries[layout->order[i]].offset = offset;
        offset += s->entries[layout->order[i]].nbytes;
    }
exit:
    layout->tensors = NULL; /* the caller frees header and order only */
    st_free(sized);
    return rc;
}

st_code st_stream_open(const char *path, const st_write_tensor *tensors, size_t count,
                       const st_metadata_item *metadata, size_t metadata_count, bool has_metadata,
                       st_stream **out, st_error *err)
{
    st_stream *s = NULL;
    st_layout layout = {0};
    st_code rc;

    *out = NULL;
    if ((rc = new_stream(path, tensors, count, &s, err)) != ST_OK ||
        (rc = index_names(s, err)) != ST_OK ||
        (rc = lay_out(s, metadata, metadata_count, has_metadata, &layout, err)) != ST_OK)
        goto exit;
    /* The whole file is reserved now: a full disk shows up here, not after
     * an hour of writing. */
    if ((rc = st_staged_open(s->path, s->total_size, &s->file, err)) != ST_OK ||
        (rc = pwrite_all(s->file.fd, layout.header, layout.header_size, 0, err)) != ST_OK)
        goto exit;
    *out = s;
    s = NULL;
exit:
    st_stream_free(s); /* on failure: closes and removes the temporary file */
    st_free(layout.header);
    st_free(layout.order);
    return rc;
}

size_t st_stream_count(const st_stream *stream)
{
    return stream->count;
}

bool st_stream_find(const st_stream *stream, const char *name, size_t name_len, size_t *index)
{
    stream_entry key = {.name = name, .name_len = name_len};
    size_t lo = 0, hi = stream->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_names(&stream->entries[stream->by_name[mid]], &key);
        if (c == 0) {
            *index = stream->by_name[mid];
            return true;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

uint64_t st_stream_tensor_nbytes(const st_stream *stream, size_t index)
{
    return index < stream->count ? stream->entries[index].nbytes : 0;
}

st_code st_stream_write(st_stream *stream, size_t index, const void *data, uint64_t len,
                        st_error *err)
{
    if (stream->file.fd < 0)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "the stream is already closed");
    if (index >= stream->count)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                            "no tensor number %zu: %zu tensors were declared", index,
                            stream->count);
    stream_entry *e = &stream->entries[index];
    int nm = min_int(e->name_len, NAME_IN_MSG);
    if (len != e->nbytes)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                            "tensor `%.*s` was declared as %s with %llu bytes, but %llu bytes "
                            "were given",
                            nm, e->name, st_dtype_name(e->dtype), (unsigned long long)e->nbytes,
                            (unsigned long long)len);
    int expected = PENDING;
    if (!atomic_compare_exchange_strong(&e->state, &expected, WRITING))
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                            expected == WRITTEN
                                ? "tensor `%.*s` was already written"
                                : "tensor `%.*s` is being written by another thread",
                            nm, e->name);
    st_code rc = pwrite_all(stream->file.fd, data, len, e->offset, err);
    atomic_store(&e->state, rc == ST_OK ? WRITTEN : PENDING); /* a failed write may be retried */
    return rc;
}

st_code st_stream_commit(st_stream *stream, st_error *err)
{
    st_code rc = ST_OK;
    if (stream->file.fd < 0)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "the stream is already closed");
    size_t missing = 0, first_missing = 0;
    for (size_t i = 0; i < stream->count; i++) {
        if (atomic_load(&stream->entries[i].state) != WRITTEN && missing++ == 0)
            first_missing = i;
    }
    if (missing > 0) {
        const stream_entry *e = &stream->entries[first_missing];
        rc = st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                          "tensor `%.*s` was never written (%zu of %zu declared tensors are "
                          "missing); nothing was written to %s",
                          min_int(e->name_len, NAME_IN_MSG), e->name, missing, stream->count,
                          stream->path);
        goto exit;
    }
    rc = st_staged_commit(&stream->file, err);
exit:
    st_staged_discard(&stream->file); /* a failed commit leaves nothing behind either */
    return rc;
}

void st_stream_abort(st_stream *stream)
{
    if (stream != NULL)
        st_staged_discard(&stream->file);
}

void st_stream_free(st_stream *stream)
{
    if (stream == NULL)
        return;
    st_staged_discard(&stream->file);
    st_free(stream->path);
    st_free(stream->entries);
    st_free(stream->by_name);
    st_free(stream->arena);
    st_free(stream);
}

int st_api_version(void)
{
    return ST_API_VERSION;
}
