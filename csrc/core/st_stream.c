/*
 * st_stream.c - the streaming writer (st_core.h): every tensor is declared up front, so
 * st_write_layout (save_file's code) fixes the header and every offset before any data exists; the
 * header is written at once and each tensor is one pwrite at its own offset, through the same
 * st_staged_file as st_write_file (temporary file, rename at commit). Each tensor's state is an
 * atomic (pending -> writing -> written): two threads writing one tensor are told so instead of
 * racing, and pwrites at distinct offsets need no lock. For digests (docs/integrity.md) the caller
 * reads written tensors back (st_stream_read) and rewrites the header, same length, at the end.
 */
#define _GNU_SOURCE

#include "st_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { PENDING = 0, WRITING = 1, WRITTEN = 2 };

typedef struct slot {
    uint64_t offset; /* absolute, in the file */
    atomic_int state;
} slot;

struct st_stream {
    st_staged_file file; /* file.fd is -1 once committed or aborted */
    const char *path;    /* destination, in the arena; file.base points into it */
    size_t count;
    st_write_tensor *tensors; /* declaration order: copies (names and shapes in the
                               * arena), data_len = the tensor's size */
    slot *slots;
    size_t *by_name; /* declaration indices sorted by name, for st_stream_find */
    size_t *order;   /* declaration indices in file order */
    uint8_t *arena;  /* shapes, names, path */
    uint64_t alignment;
    size_t header_size; /* as written at open; st_stream_rewrite_metadata keeps it */
};

/* Longest part of a tensor name quoted in a message. */
#define NAME_IN_MSG 200

static int cmp_names(const st_write_tensor *a, const st_write_tensor *b)
{
    return st_name_cmp(a->name, a->name_len, b->name, b->name_len);
}

/* Orders indices of the tensors (ctx) by name. */
static int cmp_index(const void *pa, const void *pb, void *ctx)
{
    const st_write_tensor *tensors = ctx;
    return cmp_names(&tensors[*(const size_t *)pa], &tensors[*(const size_t *)pb]);
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
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return st_error_io(err, w < 0 ? errno : EIO, offset);
        data += w;
        len -= (uint64_t)w;
        offset += (uint64_t)w;
    }
    return ST_OK;
}

/* Copies n bytes to *cursor and moves it past them; returns where they went. */
static void *copy_in(uint8_t **cursor, const void *src, size_t n)
{
    void *at = *cursor;
    if (n > 0)
        memcpy(at, src, n);
    *cursor += n;
    return at;
}

/* Copies the destination and every declaration's name and shape into the stream's arena (each
 * tensor's size goes to data_len), refuses a name declared twice (a dict cannot hold one twice,
 * a list can), lays the file out and writes its header. */
st_code st_stream_open(const char *path, const st_write_tensor *tensors, size_t count,
                       const st_metadata_item *metadata, size_t metadata_count, bool has_metadata,
                       st_stream **out, st_error *err)
{
    return st_stream_open_aligned(path, tensors, count, metadata, metadata_count, has_metadata, 0,
                                  out, err);
}

st_code st_stream_open_aligned(const char *path, const st_write_tensor *tensors, size_t count,
                               const st_metadata_item *metadata, size_t metadata_count,
                               bool has_metadata, uint64_t alignment, st_stream **out,
                               st_error *err)
{
    size_t arena_size = strlen(path) + 1;
    st_stream *s = st_calloc(1, sizeof *s);
    st_layout layout = {.count = count,
                        .metadata = metadata,
                        .metadata_count = metadata_count,
                        .has_metadata = has_metadata};
    st_code rc = ST_OK;

    *out = NULL;
    for (size_t i = 0; i < count; i++)
        arena_size += tensors[i].ndim * sizeof(uint64_t) + tensors[i].name_len;
    if (s != NULL) {
        s->file = (st_staged_file){.dir_fd = -1, .fd = -1};
        s->count = count;
        layout.tensors = s->tensors = st_calloc(count, sizeof *s->tensors);
        s->slots = st_calloc(count, sizeof *s->slots);
        s->by_name = st_calloc(count, sizeof *s->by_name);
        layout.order = s->order = st_calloc(count, sizeof *s->order);
        s->arena = st_malloc(arena_size);
        s->alignment = alignment;
    }
    if (s == NULL || s->tensors == NULL || s->slots == NULL || s->by_name == NULL ||
        s->arena == NULL || s->order == NULL) {
        rc = st_error_code(err, ST_ERR_NOMEM, 0);
        goto exit;
    }
    uint8_t *cursor = s->arena;
    for (size_t i = 0; i < count && rc == ST_OK; i++) { /* shapes first: 8-byte aligned */
        s->tensors[i] = tensors[i];
        s->tensors[i].shape =
            copy_in(&cursor, tensors[i].shape, tensors[i].ndim * sizeof(uint64_t));
        s->tensors[i].data = NULL;
        s->by_name[i] = i;
        atomic_init(&s->slots[i].state, PENDING);
        rc = st_tensor_nbytes(tensors[i].dtype, tensors[i].shape, tensors[i].ndim,
                              &s->tensors[i].data_len, err);
    }
    for (size_t i = 0; i < count; i++)
        s->tensors[i].name = copy_in(&cursor, tensors[i].name, tensors[i].name_len);
    s->path = copy_in(&cursor, path, strlen(path) + 1);
    qsort_r(s->by_name, count, sizeof *s->by_name, cmp_index, s->tensors);
    for (size_t i = 1; i < count && rc == ST_OK; i++) {
        const st_write_tensor *t = &s->tensors[s->by_name[i]];
        if (cmp_names(&s->tensors[s->by_name[i - 1]], t) == 0)
            rc = st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "tensor `%.*s` is declared twice",
                              min_int(t->name_len, NAME_IN_MSG), t->name);
    }
    if (rc != ST_OK || (rc = st_write_layout_aligned(&layout, alignment, err)) != ST_OK)
        goto exit;
    s->header_size = layout.header_size;
    uint64_t offset = layout.header_size;
    for (size_t i = 0; i < count; i++) {
        s->slots[layout.order[i]].offset = offset;
        offset += s->tensors[layout.order[i]].data_len;
    }
    /* The whole file is reserved now: a full disk shows up here, not after an hour of writing. */
    if ((rc = st_staged_open(s->path, layout.total_size, &s->file, err)) != ST_OK ||
        (rc = pwrite_all(s->file.fd, layout.header, layout.header_size, 0, err)) != ST_OK)
        goto exit;
    *out = s;
    s = NULL;
exit:
    st_stream_free(s); /* on failure: closes and removes the temporary file */
    st_free(layout.header);
    return rc;
}

void st_stream_tensor(const st_stream *stream, size_t position, size_t *index, uint64_t *offset,
                      uint64_t *len)
{
    *index = stream->order[position];
    *offset = stream->slots[*index].offset;
    *len = stream->tensors[*index].data_len;
}

st_code st_stream_read(const st_stream *stream, uint64_t offset, void *dst, size_t len,
                       st_error *err)
{
    uint8_t *out = dst;
    if (stream->file.fd < 0)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "the stream is already closed");
    while (len > 0) {
        ssize_t r = pread(stream->file.fd, out, len, (off_t)offset);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return st_error_io(err, errno, offset);
        if (r == 0)
            return st_error_set(err, ST_ERR_INVALID_ARGUMENT, offset,
                                "cannot read back byte %llu: past the end of the file",
                                (unsigned long long)offset);
        out += r;
        len -= (size_t)r;
        offset += (uint64_t)r;
    }
    return ST_OK;
}

st_code st_stream_rewrite_metadata(st_stream *stream, const st_metadata_item *metadata,
                                   size_t metadata_count, bool has_metadata, st_error *err)
{
    st_layout layout = {.tensors = stream->tensors,
                        .count = stream->count,
                        .metadata = metadata,
                        .metadata_count = metadata_count,
                        .has_metadata = has_metadata,
                        .order = st_calloc(stream->count, sizeof(size_t))};
    st_code rc = ST_OK;
    if (stream->file.fd < 0)
        rc = st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "the stream is already closed");
    else if (layout.order == NULL)
        rc = st_error_code(err, ST_ERR_NOMEM, 0);
    else
        rc = st_write_layout_aligned(&layout, stream->alignment, err);
    if (rc == ST_OK && layout.header_size != stream->header_size)
        rc = st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                          "the new header has %zu bytes, the file's has %zu: it cannot be "
                          "rewritten in place",
                          layout.header_size, stream->header_size);
    else if (rc == ST_OK)
        rc = pwrite_all(stream->file.fd, layout.header, layout.header_size, 0, err);
    st_free(layout.header);
    st_free(layout.order);
    return rc;
}

bool st_stream_find(const st_stream *stream, const char *name, size_t name_len, size_t *index)
{
    st_write_tensor key = {.name = name, .name_len = name_len};
    size_t lo = 0, hi = stream->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_names(&stream->tensors[stream->by_name[mid]], &key);
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

st_code st_stream_write(st_stream *stream, size_t index, const void *data, uint64_t len,
                        st_error *err)
{
    if (stream->file.fd < 0)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "the stream is already closed");
    if (index >= stream->count)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                            "no tensor number %zu: %zu tensors were declared", index,
                            stream->count);
    const st_write_tensor *t = &stream->tensors[index];
    int nm = min_int(t->name_len, NAME_IN_MSG), expected = PENDING;
    if (len != t->data_len)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                            "tensor `%.*s` was declared as %s with %llu bytes, but %llu bytes "
                            "were given",
                            nm, t->name, st_dtype_name(t->dtype), (unsigned long long)t->data_len,
                            (unsigned long long)len);
    if (!atomic_compare_exchange_strong(&stream->slots[index].state, &expected, WRITING))
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                            expected == WRITTEN
                                ? "tensor `%.*s` was already written"
                                : "tensor `%.*s` is being written by another thread",
                            nm, t->name);
    st_code rc = pwrite_all(stream->file.fd, data, len, stream->slots[index].offset, err);
    /* a failed write may be retried */
    atomic_store(&stream->slots[index].state, rc == ST_OK ? WRITTEN : PENDING);
    return rc;
}

st_code st_stream_commit(st_stream *stream, st_error *err)
{
    st_code rc = ST_OK;
    size_t missing = 0, first = 0;
    if (stream->file.fd < 0)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "the stream is already closed");
    for (size_t i = 0; i < stream->count; i++)
        if (atomic_load(&stream->slots[i].state) != WRITTEN && missing++ == 0)
            first = i;
    if (missing > 0)
        rc = st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                          "tensor `%.*s` was never written (%zu of %zu declared tensors are "
                          "missing); nothing was written to %s",
                          min_int(stream->tensors[first].name_len, NAME_IN_MSG),
                          stream->tensors[first].name, missing, stream->count, stream->path);
    else
        rc = st_staged_commit(&stream->file, err);
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
    st_free(stream->tensors);
    st_free(stream->slots);
    st_free(stream->by_name);
    st_free(stream->order);
    st_free(stream->arena);
    st_free(stream);
}

int st_api_version(void)
{
    return ST_API_VERSION;
}
