/*
 * st_file.c - opening a safetensors file on the mmap or the pread backend.
 *
 * Ownership and lifetime
 *   An st_file is reference counted (C11 atomic counter). st_file_open hands
 *   back one reference. Anything that keeps a pointer into the mapping (a
 *   tensor view exported by the binding) takes its own reference with
 *   st_file_retain and drops it with st_file_release. The last release
 *   unmaps the file (mmap backend), closes the descriptor and frees the
 *   parsed header. Nothing else is ever freed, so a pointer
 *   obtained from st_file_map/st_file_header stays valid for as long as the
 *   holder owns a reference.
 *
 * States
 *   There is only one state after st_file_open succeeds: open and immutable.
 *   Fields are written once, before the pointer is handed out, and only read
 *   afterwards, so any thread may use a file it holds a reference to.
 *
 * Backends
 *   mmap:  the whole file is mapped PROT_READ|PROT_WRITE, MAP_PRIVATE|
 *          MAP_NORESERVE: copy-on-write (writes through a view never reach the
 *          file) and nothing is reserved up front (files larger than RAM+swap
 *          open; pages come in lazily). The descriptor stays open until the
 *          last release: st_file_map_private maps each handed-out tensor on
 *          its own from it. st_file_read works by memcpy from the mapping.
 *          Caveat (same as any mmap reader): if another process truncates the
 *          file while it is mapped, touching the lost pages raises SIGBUS.
 *   pread: the descriptor is kept, nothing is mapped; st_file_read loops over
 *          pread and reports a file that shrank as an I/O error.
 *
 * Opening never blocks on special files: the file is opened O_NONBLOCK (a
 * FIFO without a writer would otherwise block forever) and anything that is
 * not a regular file is rejected before reading a byte.
 */
#define _GNU_SOURCE
#define _DEFAULT_SOURCE

#include "st_core.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

struct st_file {
    atomic_size_t refcount;
    int fd; /* both backends: pread reads, private maps */
    st_backend backend;
    uint64_t size; /* file size at open (fstat) */
    uint8_t *map;  /* mmap backend: base of the whole-file mapping */
    size_t map_len;
    st_header *header;
};

/* Largest single pread request: keeps every request well within ssize_t and
 * what Linux transfers in one call (0x7ffff000). */
#define ST_PREAD_CHUNK ((size_t)1 << 30)

/* Reads exactly len bytes at offset. 0 on success; else sets err. */
static st_code read_exact(int fd, uint64_t offset, void *dst, size_t len, st_error *err)
{
    uint8_t *p = dst;
    while (len > 0) {
        size_t want = len < ST_PREAD_CHUNK ? len : ST_PREAD_CHUNK;
        if (offset > (uint64_t)INT64_MAX) {
            return st_error_io(err, EOVERFLOW, offset);
        }
        ssize_t got = pread(fd, p, want, (off_t)offset);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            return st_error_io(err, errno, offset);
        }
        if (got == 0) {
            st_error_set(err, ST_ERR_IO, offset,
                         "unexpected end of file at byte %llu: the file shrank "
                         "after it was opened",
                         (unsigned long long)offset);
            if (err) {
                err->sys_errno = EIO;
            }
            return ST_ERR_IO;
        }
        p += got;
        len -= (size_t)got;
        offset += (uint64_t)got;
    }
    return ST_OK;
}

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

/* Opens path read-only and checks that it is a regular file; *size from
 * fstat. Never blocks on a FIFO (O_NONBLOCK, cleared again after). */
static st_code open_regular(const char *path, int *fd, uint64_t *size, st_error *err)
{
    struct stat st;
    st_code rc;
    do {
        *fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    } while (*fd < 0 && errno == EINTR);
    if (*fd < 0)
        return st_error_io(err, errno, 0);
    if (fstat(*fd, &st) != 0)
        return st_error_io(err, errno, 0);
    if ((rc = st_file_check_regular(st.st_mode, err)) != ST_OK)
        return rc;
    /* O_NONBLOCK means nothing for a regular file: cleared so the
     * descriptor behaves like a plain one. */
    int fl = fcntl(*fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(*fd, F_SETFL, fl & ~O_NONBLOCK);
    *size = (uint64_t)st.st_size;
    return ST_OK;
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
    if ((rc = read_exact(fd, 0, prefix, prefix_len, err)) != ST_OK ||
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
    if ((rc = read_exact(fd, 8, json, (size_t)n, err)) == ST_OK)
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
    uint64_t size = 0;
    st_header *header = NULL;
    st_file *file = NULL;

    *out = NULL;
    if (backend != ST_BACKEND_MMAP && backend != ST_BACKEND_PREAD)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "unknown backend %d", (int)backend);
    if ((rc = open_regular(path, &fd, &size, err)) != ST_OK ||
        (rc = load_header(fd, size, backend, &map, &map_len, &header, err)) != ST_OK)
        goto exit;
    if ((file = st_malloc(sizeof *file)) == NULL) {
        rc = st_error_code(err, ST_ERR_NOMEM, 0);
        goto exit;
    }
    /* fd stays open while the file lives, on both backends:
     * st_file_map_private maps each handed-out tensor on its own from it. */
    atomic_init(&file->refcount, 1);
    file->fd = fd;
    file->backend = backend;
    file->size = size;
    file->map = map;
    file->map_len = map_len;
    file->header = header;
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
    if (file->fd >= 0) {
        close(file->fd);
    }
    st_header_free(file->header);
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

st_code st_file_map_private(const st_file *file, uint64_t offset, uint64_t len, st_private_map *out,
                            st_error *err)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t start = offset - offset % page, span = offset - start + len;
    void *base;
    memset(out, 0, sizeof(*out));
    if (len == 0 || offset > file->size || len > file->size - offset || span > (uint64_t)SIZE_MAX)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "private map out of the file");
    base = mmap(NULL, (size_t)span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, file->fd,
                (off_t)start);
    if (base == MAP_FAILED)
        return st_error_io(err, errno, offset);
    out->base = base;
    out->len = (size_t)span;
    out->data = (uint8_t *)base + (offset - start);
    return ST_OK;
}

void st_private_map_release(st_private_map *map)
{
    if (map->base != NULL)
        munmap(map->base, map->len);
    memset(map, 0, sizeof(*map));
}

/* One contiguous piece of a read: by memcpy from the mapping, or pread. */
static st_code read_piece(const st_file *file, uint64_t offset, uint8_t *dst, size_t len,
                          st_error *err)
{
    if (file->map != NULL) {
        memcpy(dst, file->map + offset, len);
        return ST_OK;
    }
    return read_exact(file->fd, offset, dst, len, err);
}

/*
 * Large reads are split across threads: one core copies ~10 GB/s from the
 * page cache, several copy several times that.
 * Below ST_PARALLEL_MIN a thread costs more than it saves.
 */
#define ST_PARALLEL_MIN     ((size_t)32 << 20)
#define ST_MAX_READ_THREADS 8

typedef struct {
    const st_file *file;
    uint64_t offset;
    uint8_t *dst;
    size_t len;
    st_code code;
    st_error err;
} read_job;

static void *read_job_run(void *arg)
{
    read_job *job = arg;
    job->code = read_piece(job->file, job->offset, job->dst, job->len, &job->err);
    return NULL;
}

/* Fresh destinations fault in 4 KiB at a time; ask for huge pages where the
 * kernel gives them on request (THP "madvise" mode). */
static void advise_huge_pages(uint8_t *dst, size_t len)
{
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t start = ((uintptr_t)dst + huge - 1) & ~(huge - 1);
    uintptr_t end = ((uintptr_t)dst + len) & ~(huge - 1);
    if (end > start)
        (void)madvise((void *)start, end - start, MADV_HUGEPAGE);
#else
    (void)dst;
    (void)len;
#endif
}

st_code st_file_read(const st_file *file, uint64_t offset, void *dst, size_t len, st_error *err)
{
    read_job jobs[ST_MAX_READ_THREADS];
    pthread_t threads[ST_MAX_READ_THREADS];
    size_t nthreads = 1, started = 0, piece;
    long ncpu;
    st_code rc = ST_OK;

    if (offset > file->size || len > file->size - offset) {
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, offset,
                            "read of %zu bytes at offset %llu is outside the file (%llu bytes)",
                            len, (unsigned long long)offset, (unsigned long long)file->size);
    }
    if (len < ST_PARALLEL_MIN) {
        return len == 0 ? ST_OK : read_piece(file, offset, dst, len, err);
    }
    advise_huge_pages(dst, len);
    ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu > 1)
        nthreads = (size_t)ncpu < ST_MAX_READ_THREADS ? (size_t)ncpu : ST_MAX_READ_THREADS;
    if (nthreads > len / (ST_PARALLEL_MIN / 4))
        nthreads = len / (ST_PARALLEL_MIN / 4);
    /* Pieces are 2 MiB multiples so each thread fills whole huge pages. */
    piece = ((len / nthreads) + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1);
    for (size_t i = 0; i < nthreads; i++) {
        size_t start = i * piece;
        jobs[i] = (read_job){.file = file,
                             .offset = offset + start,
                             .dst = (uint8_t *)dst + start,
                             .len = start >= len ? 0 : (len - start < piece ? len - start : piece),
                             .code = ST_OK};
    }
    /* Threads for pieces 1.., piece 0 here; a thread that cannot start is
     * done here too. */
    for (size_t i = 1; i < nthreads; i++) {
        if (jobs[i].len == 0 || pthread_create(&threads[i], NULL, read_job_run, &jobs[i]) != 0)
            read_job_run(&jobs[i]);
        else
            started |= (size_t)1 << i;
    }
    read_job_run(&jobs[0]);
    for (size_t i = 1; i < nthreads; i++) {
        if (started & ((size_t)1 << i))
            pthread_join(threads[i], NULL);
    }
    for (size_t i = 0; i < nthreads; i++) {
        if (jobs[i].code != ST_OK) {
            *err = jobs[i].err;
            rc = jobs[i].code;
            break;
        }
    }
    return rc;
}
