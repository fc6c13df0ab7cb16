/*
 * st_file.c - opening a file (a path on the mmap or pread backend, the one st_storage.c picks for
 * ST_BACKEND_AUTO, or a byte source), its lifetime and accessors; reads are st_read.c's, private maps st_private_map.c's, descriptors the cache's
 * (st_descriptors.c). Fields are written once before the file is handed out, but the descriptor,
 * which the cache changes under its lock. Opening never blocks: O_NONBLOCK (a FIFO without a
 * writer), and only a regular file is read. As with any mmap reader, pages another process
 * truncates away raise SIGBUS when touched. Who owns the mapping and what keeps it alive:
 * docs/design.md, "Ownership of file memory".
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

st_code st_file_check_regular(unsigned int mode, st_error *err)
{
    if (S_ISREG(mode))
        return ST_OK;
    if (S_ISDIR(mode))
        return st_error_io(err, EISDIR, 0);
    st_error_set(err, ST_ERR_IO, 0, "not a regular file (%s)",
                 S_ISFIFO(mode)   ? "a FIFO"
                 : S_ISCHR(mode)  ? "a character device"
                 : S_ISBLK(mode)  ? "a block device"
                 : S_ISSOCK(mode) ? "a socket"
                                  : "not a regular file");
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

/* path made absolute now (a later chdir must not change what a reopen finds), as given
 * where the working directory is unknown; NULL when out of memory. */
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

/* Reads and parses the header through a buffer freed at once: parsed in place in a mapping, its
 * pages would stay resident while the file is open (76 MB for a million tensors). */
static st_code load_header(st_file *file, st_error *err)
{
    uint8_t prefix[8], *json = NULL;
    size_t prefix_len = file->size < 8 ? (size_t)file->size : 8;
    uint64_t n = 0;
    st_code rc;
    if ((rc = st_file_read(file, 0, prefix, prefix_len, err)) != ST_OK ||
        (rc = st_header_length(prefix, prefix_len, file->size, &n, err)) != ST_OK)
        return rc;
    /* st_header_length guarantees 8 + n <= size and n <= ST_MAX_HEADER_SIZE. */
    if ((json = st_malloc((size_t)n)) == NULL)
        return st_error_code(err, ST_ERR_NOMEM, 0);
    if ((rc = st_file_read(file, 8, json, (size_t)n, err)) == ST_OK)
        rc = st_header_parse(json, (size_t)n, file->size, &file->header, err);
    st_free(json);
    return rc;
}

/* A file with one reference and no header yet; NULL when out of memory. */
static st_file *new_file(st_backend backend, const char *reason, uint64_t size)
{
    st_file *file = st_calloc(1, sizeof *file);
    if (file != NULL) {
        atomic_init(&file->refcount, 1);
        file->backend = backend;
        snprintf(file->backend_reason, sizeof file->backend_reason, "%s", reason);
        file->size = size;
        file->fd = -1;
    }
    return file;
}

/* Maps the whole file (of >= 8 bytes: the header was read) with a borrowed descriptor. */
static st_code map_file(st_file *file, st_error *err)
{
    int fd, e;
    st_code rc;
    if (file->size > (uint64_t)SIZE_MAX)
        return st_error_io(err, EFBIG, 0);
    if ((rc = st_fd_borrow(file, &fd, err)) != ST_OK)
        return rc;
    void *map =
        mmap(NULL, (size_t)file->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
    e = errno;
    st_fd_return(file);
    if (map == MAP_FAILED)
        return st_error_io(err, e, 0);
    file->map = map;
    return ST_OK;
}

st_code st_file_open(const char *path, st_backend backend, st_file **out, st_error *err)
{
    st_code rc;
    int fd;
    struct stat st;
    st_file *file;
    char reason[ST_REASON_MAX] = "chosen by the caller";

    *out = NULL;
    if (backend != ST_BACKEND_MMAP && backend != ST_BACKEND_PREAD && backend != ST_BACKEND_AUTO)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "unknown backend %d", (int)backend);
    if ((rc = st_file_open_regular(path, &fd, &st, err)) != ST_OK)
        return rc;
    if (backend == ST_BACKEND_AUTO)
        backend = st_storage_backend(fd, reason, sizeof reason);
    if ((file = new_file(backend, reason, (uint64_t)st.st_size)) == NULL) {
        close(fd);
        return st_error_code(err, ST_ERR_NOMEM, 0);
    }
    file->opened = st;
    st_fd_adopt(file, fd); /* the cache owns the descriptor from here */
    if ((file->path = absolute_path(path)) == NULL)
        rc = st_error_code(err, ST_ERR_NOMEM, 0);
    else if ((rc = load_header(file, err)) == ST_OK && backend == ST_BACKEND_MMAP)
        rc = map_file(file, err);
    if (rc != ST_OK)
        st_file_release(file);
    else
        *out = file;
    return rc;
}

st_code st_file_open_source(const st_source *source, st_file **out, st_error *err)
{
    st_file *file = new_file(ST_BACKEND_PREAD, "read through a byte source", source->size);
    st_code rc;
    *out = NULL;
    if (file == NULL)
        return st_error_code(err, ST_ERR_NOMEM, 0);
    file->source = *source;
    if ((rc = load_header(file, err)) != ST_OK) {
        file->source.read_many = NULL; /* on failure the caller keeps the source */
        st_file_release(file);
        return rc;
    }
    *out = file;
    return ST_OK;
}

void st_file_retain(st_file *file)
{
    atomic_fetch_add_explicit(&file->refcount, 1, memory_order_relaxed);
}

void st_file_release(st_file *file)
{
    if (file == NULL)
        return;
    /* acq_rel: the last releaser must see every other holder's accesses
     * completed before it tears the mapping down. */
    if (atomic_fetch_sub_explicit(&file->refcount, 1, memory_order_acq_rel) != 1)
        return;
    if (file->map != NULL)
        munmap(file->map, (size_t)file->size);
    st_fd_forget(file);
    if (file->source.read_many != NULL)
        file->source.release(file->source.ctx);
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

const char *st_file_backend_reason(const st_file *file)
{
    return file->backend_reason;
}

uint64_t st_file_size(const st_file *file)
{
    return file->size;
}

uint8_t *st_file_map(const st_file *file)
{
    return file->map;
}
