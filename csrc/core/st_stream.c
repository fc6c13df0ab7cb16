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
 * Atomicity is st_write_file's: everything goes to a temporary file in the
 * destination's directory (".<basename>.<pid>.<random>.tmp", O_EXCL, mode
 * of the file it replaces or 0666 & ~umask); only st_stream_commit renames
 * it over the destination, after checking every tensor was written. Freeing
 * a stream that was not committed removes the temporary file.
 *
 * Threads: each tensor's state is an atomic (pending -> writing -> written),
 * so two threads writing the same tensor are told so instead of racing, and
 * pwrite at distinct offsets needs no lock. commit and free must not overlap
 * a write (the caller joins its writers first).
 */
#define _GNU_SOURCE

#include "st_core.h"
#include "st_hash.h"

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
    int fd; /* -1 once closed */
    bool committed;
    char *path;     /* destination */
    char *tmp_path; /* temporary file, removed unless committed */
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

/* Creates the temporary file next to path; sets s->tmp_path and s->fd. */
static st_code create_temp(st_stream *s, st_error *err)
{
    const char *slash = strrchr(s->path, '/');
    size_t dir_len = slash ? (size_t)(slash - s->path) + 1 : 0;
    const char *base = s->path + dir_len;
    size_t base_len = strlen(base);
    if (base_len == 0)
        return st_error_io(err, EISDIR, 0);
    size_t base_keep = base_len > 200 ? 200 : base_len; /* stay within NAME_MAX */
    size_t cap = dir_len + base_keep + 64;
    s->tmp_path = st_malloc(cap);
    if (s->tmp_path == NULL)
        return st_error_code(err, ST_ERR_NOMEM, 0);
    st_hash_key key = st_hash_new_key(); /* random bits */
    for (int attempt = 0; attempt < 100; attempt++) {
        snprintf(s->tmp_path, cap, "%.*s.%.*s.%ld.%016llx.tmp", (int)dir_len, s->path,
                 (int)base_keep, base, (long)getpid(),
                 (unsigned long long)(key.k0 ^ ((uint64_t)attempt * 0x9E3779B97F4A7C15ull)));
        s->fd = open(s->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0666);
        if (s->fd >= 0 || (errno != EEXIST && errno != EINTR))
            break;
    }
    if (s->fd < 0) {
        st_code rc = st_error_io(err, errno, 0);
        st_free(s->tmp_path); /* nothing was created */
        s->tmp_path = NULL;
        return rc;
    }
    struct stat st;
    if (stat(s->path, &st) == 0 && S_ISREG(st.st_mode) && fchmod(s->fd, st.st_mode & 07777) != 0)
        return st_error_io(err, errno, 0);
    return ST_OK;
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

st_code st_stream_open(const char *path, const st_write_tensor *tensors, size_t count,
                       const st_metadata_item *metadata, size_t metadata_count, bool has_metadata,
                       st_stream **out, st_error *err)
{
    st_code rc = ST_OK;
    st_stream *s = NULL;
    st_write_tensor *tensors_sized = NULL; /* tensors with data_len = their size */
    st_layout layout = {0};
    name_ref *refs = NULL;

    *out = NULL;
    s = st_calloc(1, sizeof *s);
    if (s == NULL)
        return st_error_code(err, ST_ERR_NOMEM, 0);
    s->fd = -1;
    s->count = count;
    size_t path_len = strlen(path);
    s->path = st_malloc(path_len + 1);
    size_t arena_size = 0;
    for (size_t i = 0; i < count; i++) {
        if (tensors[i].ndim > ST_MAX_DIMS) {
            rc = st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                              "tensor `%.*s` has %zu dimensions, at most %d are supported",
                              min_int(tensors[i].name_len, NAME_IN_MSG), tensors[i].name,
                              tensors[i].ndim, ST_MAX_DIMS);
            goto exit;
        }
        arena_size += tensors[i].ndim * sizeof(uint64_t) + tensors[i].name_len;
    }
    size_t n = count ? count : 1;
    s->entries = st_calloc(n, sizeof *s->entries);
    s->by_name = st_calloc(n, sizeof *s->by_name);
    s->arena = st_malloc(arena_size ? arena_size : 1);
    tensors_sized = st_calloc(n, sizeof *tensors_sized);
    layout.order = st_calloc(n, sizeof *layout.order);
    refs = st_calloc(n, sizeof *refs);
    if (s->path == NULL || s->entries == NULL || s->by_name == NULL || s->arena == NULL ||
        tensors_sized == NULL || layout.order == NULL || refs == NULL) {
        rc = st_error_code(err, ST_ERR_NOMEM, 0);
        goto exit;
    }
    memcpy(s->path, path, path_len + 1);

    /* Copy the declarations: shapes first (8-byte aligned), names after. */
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
        if ((unsigned)e->dtype >= (unsigned)ST_DTYPE__COUNT) {
            rc = st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "invalid dtype %d for tensor `%.*s`",
                              (int)e->dtype, min_int(e->name_len, NAME_IN_MSG), e->name);
            goto exit;
        }
        if ((rc = st_tensor_nbytes(e->dtype, e->shape, e->ndim, &e->nbytes, err)) != ST_OK)
            goto exit;
        tensors_sized[i] =
            (st_write_tensor){e->name, e->name_len, e->dtype, e->ndim, e->shape, NULL, e->nbytes};
        refs[i] = (name_ref){e, i};
    }

    /* A dict cannot hold a name twice; a declaration list can: refuse it. */
    qsort(refs, count, sizeof *refs, cmp_name_ref);
    for (size_t i = 0; i < count; i++) {
        s->by_name[i] = refs[i].index;
        if (i > 0 && cmp_names(refs[i - 1].entry, refs[i].entry) == 0) {
            rc = st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "tensor `%.*s` is declared twice",
                              min_int(refs[i].entry->name_len, NAME_IN_MSG), refs[i].entry->name);
            goto exit;
        }
    }

    layout.tensors = tensors_sized;
    layout.count = count;
    layout.metadata = metadata;
    layout.metadata_count = metadata_count;
    layout.has_metadata = has_metadata;
    if ((rc = st_write_layout(&layout, err)) != ST_OK)
        goto exit;
    s->total_size = layout.total_size;
    uint64_t offset = layout.header_size;
    for (size_t i = 0; i < count; i++) {
        s->entries[layout.order[i]].offset = offset;
        offset += s->entries[layout.order[i]].nbytes;
    }

    if ((rc = create_temp(s, err)) != ST_OK)
        goto exit;
    /* Reserve the whole file now: a full disk shows up here, not after an
     * hour of writing. Where unsupported the writes allocate as they go. */
    if (s->total_size <= (uint64_t)INT64_MAX && fallocate(s->fd, 0, 0, (off_t)s->total_size) != 0 &&
        errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL) {
        rc = st_error_io(err, errno, 0);
        goto exit;
    }
    if ((rc = pwrite_all(s->fd, layout.header, layout.header_size, 0, err)) != ST_OK)
        goto exit;
    *out = s;
    s = NULL;
exit:
    st_stream_free(s); /* on failure: closes and removes the temporary file */
    st_free(layout.header);
    st_free(layout.order);
    st_free(tensors_sized);
    st_free(refs);
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
    if (stream->fd < 0)
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
    st_code rc = pwrite_all(stream->fd, data, len, e->offset, err);
    atomic_store(&e->state, rc == ST_OK ? WRITTEN : PENDING); /* a failed write may be retried */
    return rc;
}

/* Closes the descriptor and removes the temporary file. */
static void discard(st_stream *stream)
{
    if (stream->fd >= 0) {
        close(stream->fd);
        stream->fd = -1;
    }
    if (stream->tmp_path != NULL && !stream->committed)
        unlink(stream->tmp_path);
}

st_code st_stream_commit(st_stream *stream, st_error *err)
{
    st_code rc = ST_OK;
    if (stream->fd < 0)
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
    int fd = stream->fd;
    stream->fd = -1;
    if (close(fd) != 0 && errno != EINTR) {
        rc = st_error_io(err, errno, 0);
        goto exit;
    }
    if (rename(stream->tmp_path, stream->path) != 0) {
        rc = st_error_io(err, errno, 0);
        goto exit;
    }
    stream->committed = true;
exit:
    discard(stream); /* a failed commit leaves nothing behind either */
    return rc;
}

void st_stream_abort(st_stream *stream)
{
    if (stream != NULL)
        discard(stream);
}

void st_stream_free(st_stream *stream)
{
    if (stream == NULL)
        return;
    discard(stream);
    st_free(stream->path);
    st_free(stream->tmp_path);
    st_free(stream->entries);
    st_free(stream->by_name);
    st_free(stream->arena);
    st_free(stream);
}

int st_api_version(void)
{
    return ST_API_VERSION;
}
