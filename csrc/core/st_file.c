/*
 * st_file.c - opening a safetensors file (a path on the mmap or the pread
 * backend, or a byte source), its header, its lifetime and accessors. Its
 * reads are st_read.c's, its private mappings st_private_map.c's and its
 * descriptor the cache's (st_descriptors.c); struct st_file is in
 * st_file_internal.h.
 *
 * Ownership and lifetime
 *   An st_file is reference counted (C11 atomic counter). st_file_open hands
 *   back one reference. Anything that keeps a pointer into the mapping (a
 *   tensor view exported by the binding) takes its own reference with
 *   st_file_retain and drops it with st_file_release. The last release
 *   unmaps the file (mmap backend), closes its descriptor if it holds one
 *   and frees the parsed header. Nothing else is ever freed, so a pointer
 *   obtained from st_file_map/st_file_header stays valid for as long as the
 *   holder owns a reference.
 *
 * States
 *   There is only one state after st_file_open succeeds: open and immutable.
 *   Fields are written once, before the pointer is handed out, and only read
 *   afterwards, so any thread may use a file it holds a reference to. The
 *   one exception is the descriptor (fd, users, the list links), which the
 *   process-wide descriptor cache opens and closes under its lock
 *   (st_descriptors.c).
 *
 * Backends
 *   mmap:  the whole file is mapped PROT_READ|PROT_WRITE, MAP_PRIVATE|
 *          MAP_NORESERVE: copy-on-write (writes through a view never reach the
 *          file) and nothing is reserved up front (files larger than RAM+swap
 *          open; pages come in lazily). st_file_map_private maps each
 *          handed-out tensor on its own from a descriptor borrowed from the
 *          cache; where the file can no longer be reopened as the same file,
 *          it copies from the whole-file mapping instead. st_file_read works
 *          by memcpy from the mapping.
 *          Caveat (same as any mmap reader): if another process truncates the
 *          file while it is mapped, touching the lost pages raises SIGBUS.
 *   pread: nothing is mapped; st_file_read borrows a descriptor, loops over
 *          pread and reports a file that shrank as an I/O error.
 *
 * Opening never blocks on special files: the file is opened O_NONBLOCK (a
 * FIFO without a writer would otherwise block forever) and anything that is
 * not a regular file is rejected before reading a byte.
 */
#define _GNU_SOURCE
#define _DEFAULT_SOURCE

#include "st_file_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *file_kind(mode_t mode)
{
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a regular file";
}

st_code st_file_check_regular(unsigned int mode, st_error *err)
{
    if (S_ISREG(mode))
        return ST_OK;
    if (S_ISDIR(mode))
        return st_error_io(err, EISDIR, 0);
    st_error_set(err, ST_ERR_IO, 0, "not a regular file (%s)", file_kind(mode));
    if (err)
        err->sys_errno = EINVAL;
    return ST_ERR_IO;
}

st_code st_file_open_regular(const char *path, int *fd, struct stat *st, st_error *err)
{
    st_code rc = ST_OK;
    do {
        *fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    } while (*fd < 0 && errno == EINTR);
    if (*fd < 0)
        return st_error_io(err, errno, 0);
    if (fstat(*fd, st) != 0)
        rc = st_error_io(err, errno, 0);
    else
        rc = st_file_check_regular(st->st_mode, err);
    if (rc != ST_OK) {
        close(*fd);
        *fd = -1;
        return rc;
    }
    /* O_NONBLOCK means nothing for a regular file: cleared so the
     * descriptor behaves like a plain one. */
    int fl = fcntl(*fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(*fd, F_SETFL, fl & ~O_NONBLOCK);
    return ST_OK;
}

/* path made absolute with the working directory of now, so that a later
 * chdir does not change which file a reopen finds; as given where the
 * working directory is unknown. NULL when out of memory. */
static char *absolute_path(const char *path)
{
    char cwd[PATH_MAX];
    const char *dir = path[0] == '/' || getcwd(cwd, sizeof cwd) == NULL ? "" : cwd;
    size_t len = strlen(dir) + strlen(path) + 2;
    char *out = st_malloc(len);
    if (out != NULL)
        snprintf(out, len, "%s%s%s", dir, dir[0] != '\0' ? "/" : "", path);
    return out;
}

/* Reads and parses the header of an open file of `size` bytes, from a
 * temporary buffer on both backends; on the mmap backend the whole file is
 * mapped too (*map, *map_len). Not parsed in place in the mapping: its
 * pages would then stay resident while the file is open (76 MB for a
 * million tensors), where the buffer is freed at once and its memory
 * reused by the next open. */
static st_code load_header(int fd, uint64_t size, st_backend backend, uint8_t **map,
                           size_t *map_len, st_header **header, st_error *err)
{
    uint8_t prefix[8], *json = NULL;
    size_t prefix_len = size < 8 ? (size_t)size : 8;
    uint64_t n = 0;
    st_code rc;
    if ((rc = st_read_exact(fd, 0, prefix, prefix_len, err)) != ST_OK ||
        (rc = st_header_length(prefix, prefix_len, size, &n, err)) != ST_OK)
        return rc;
    /* st_header_length guarantees 8 + n <= size and n <= ST_MAX_HEADER_SIZE. */
    if (backend == ST_BACKEND_MMAP) {
        if (size > (uint64_t)SIZE_MAX)
            return st_error_io(err, EFBIG, 0);
        void *m =
            mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
        if (m == MAP_FAILED)
            return st_error_io(err, errno, 0);
        *map = m;
        *map_len = (size_t)size; /* >= 8 here */
    }
    if ((json = st_malloc(n > 0 ? (size_t)n : 1)) == NULL)
        return st_error_code(err, ST_ERR_NOMEM, 0);
    if ((rc = st_read_exact(fd, 8, json, (size_t)n, err)) == ST_OK)
        rc = st_header_parse(json, (size_t)n, size, header, err);
    st_free(json);
    return rc;
}

st_code st_file_open(const char *path, st_backend backend, st_file **out, st_error *err)
{
    st_code rc;
    int fd = -1;
    uint8_t *map = NULL;
    size_t map_len = 0;
    struct stat st;
    st_header *header = NULL;
    st_file *file = NULL;

    *out = NULL;
    if (backend != ST_BACKEND_MMAP && backend != ST_BACKEND_PREAD)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "unknown backend %d", (int)backend);
    if ((rc = st_file_open_regular(path, &fd, &st, err)) != ST_OK ||
        (rc = load_header(fd, (uint64_t)st.st_size, backend, &map, &map_len, &header, err)) !=
            ST_OK)
        goto exit;
    if ((file = st_calloc(1, sizeof *file)) == NULL || (file->path = absolute_path(path)) == NULL) {
        st_free(file);
        rc = st_error_code(err, ST_ERR_NOMEM, 0);
        goto exit;
    }
    atomic_init(&file->refcount, 1);
    file->backend = backend;
    file->size = (uint64_t)st.st_size;
    file->opened = st;
    file->map = map;
    file->map_len = map_len;
    file->header = header;
    st_fd_adopt(file, fd); /* the cache owns the descriptor from here */
    *out = file;
    return ST_OK;

exit:
    st_header_free(header);
    if (map != NULL)
        munmap(map, map_len);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* One read of len bytes at offset through a byte source. */
static st_code source_read(const st_source *source, uint64_t offset, void *dst, size_t len,
                           st_error *err)
{
    st_read_request request = {.offset = offset, .dst = dst, .len = len};
    return len == 0 ? ST_OK : source->read_many(source->ctx, &request, 1, err);
}

/* The header of a file over a byte source: two reads through it, the 8-byte
 * length prefix then the header, checked by load_header's rules and
 * messages. */
static st_code load_source_header(const st_source *source, st_header **header, st_error *err)
{
    uint8_t prefix[8], *json = NULL;
    size_t prefix_len = source->size < 8 ? (size_t)source->size : 8;
    uint64_t n = 0;
    st_code rc;
    *header = NULL;
    if ((rc = source_read(source, 0, prefix, prefix_len, err)) != ST_OK ||
        (rc = st_header_length(prefix, prefix_len, source->size, &n, err)) != ST_OK)
        return rc;
    /* st_header_length guarantees 8 + n <= size and n <= ST_MAX_HEADER_SIZE. */
    if ((json = st_malloc(n > 0 ? (size_t)n : 1)) == NULL)
        return st_error_code(err, ST_ERR_NOMEM, 0);
    if ((rc = source_read(source, 8, json, (size_t)n, err)) == ST_OK)
        rc = st_header_parse(json, (size_t)n, source->size, header, err);
    st_free(json);
    return rc;
}

st_code st_file_open_source(const st_source *source, st_file **out, st_error *err)
{
    st_header *header = NULL;
    st_file *file = NULL;
    st_code rc;
    *out = NULL;
    if ((rc = load_source_header(source, &header, err)) != ST_OK)
        return rc;
    if ((file = st_calloc(1, sizeof *file)) == NULL ||
        (file->source = st_malloc(sizeof *source)) == NULL) {
        st_free(file);
        st_header_free(header);
        return st_error_code(err, ST_ERR_NOMEM, 0);
    }
    atomic_init(&file->refcount, 1);
    *file->source = *source;
    file->backend = ST_BACKEND_PREAD;
    file->size = source->size;
    file->header = header;
    file->fd = -1;
    *out = file;
    return ST_OK;
}

void st_file_retain(st_file *file)
{
    atomic_fetch_add_explicit(&file->refcount, 1, memory_order_relaxed);
}

void st_file_release(st_file *file)
{
    if (file == NULL) {
        return;
    }
    /* acq_rel: the last releaser must see every other holder's accesses
     * completed before it tears the mapping down. */
    if (atomic_fetch_sub_explicit(&file->refcount, 1, memory_order_acq_rel) != 1) {
        return;
    }
    if (file->map != NULL) {
        munmap(file->map, file->map_len);
    }
    st_fd_forget(file);
    if (file->source != NULL) {
        file->source->release(file->source->ctx);
        st_free(file->source);
    }
    st_header_free(file->header);
    st_free(file->path);
    st_free(file);
}

const st_header *st_file_header(const st_file *file)
{
    return file->header;
}

st_backend st_file_backend(const st_file *file)
{
    return file->backend;
}

uint64_t st_file_size(const st_file *file)
{
    return file->size;
}

uint8_t *st_file_map(const st_file *file)
{
    return file->map;
}
