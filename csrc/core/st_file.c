/*
 * st_file.c - opening a safetensors file on the mmap or the pread backend.
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
 *   process-wide descriptor cache opens and closes under its lock (MARK:
 *   descriptors).
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

#include "st_core.h"
#include "st_source.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

struct st_file {
    atomic_size_t refcount;
    st_backend backend;
    uint64_t size; /* file size at open (fstat) */
    uint8_t *map;  /* mmap backend: base of the whole-file mapping */
    size_t map_len;
    st_header *header;
    char *path;         /* absolute where the working directory was known */
    struct stat opened; /* what fstat said at open: the identity to check */
    /* Guarded by the descriptor cache's lock (MARK: descriptors). */
    int fd;                        /* -1 while closed */
    size_t users;                  /* borrowers of fd: it is not closed under them */
    struct st_file *newer, *older; /* the cache's list, while fd >= 0 */
    st_source *source;             /* st_file_open_source: every read goes to it; NULL for a path */
};

static void fd_adopt(st_file *file, int fd);
static st_code fd_borrow(const st_file *file, int *fd, st_error *err);
static void fd_return(const st_file *file);
static void fd_forget(st_file *file);

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

/* Opens path read-only and checks that it is a regular file; *st from
 * fstat. Never blocks on a FIFO (O_NONBLOCK, cleared again after). On
 * failure *fd is -1 (nothing is left open). */
static st_code open_regular(const char *path, int *fd, struct stat *st, st_error *err)
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
    struct stat st;
    st_header *header = NULL;
    st_file *file = NULL;

    *out = NULL;
    if (backend != ST_BACKEND_MMAP && backend != ST_BACKEND_PREAD)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "unknown backend %d", (int)backend);
    if ((rc = open_regular(path, &fd, &st, err)) != ST_OK ||
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
    fd_adopt(file, fd); /* the cache owns the descriptor from here */
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

st_code st_file_open_source(const st_source *source, st_file **out, st_error *err)
{
    st_header *header = NULL;
    st_file *file = NULL;
    st_code rc;
    *out = NULL;
    if ((rc = st_source_load_header(source, &header, err)) != ST_OK)
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
    fd_forget(file);
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

st_code st_file_map_private(const st_file *file, uint64_t offset, uint64_t len, st_private_map *out,
                            st_error *err)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t start = offset - offset % page, span = offset - start + len;
    void *base = MAP_FAILED;
    int fd;
    st_code rc;
    memset(out, 0, sizeof(*out));
    if (len == 0 || offset > file->size || len > file->size - offset || span > (uint64_t)SIZE_MAX)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "private map out of the file");
    if ((rc = fd_borrow(file, &fd, err)) == ST_OK) {
        base = mmap(NULL, (size_t)span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd,
                    (off_t)start);
        if (base == MAP_FAILED)
            rc = st_error_io(err, errno, offset);
        fd_return(file);
    } else if (file->map != NULL) {
        /* The path no longer leads to the file opened (or cannot be opened
         * now): the whole-file mapping still holds it. A copy of the bytes
         * in anonymous memory, as private as a mapping of the file. */
        base = mmap(NULL, (size_t)span, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        rc = base == MAP_FAILED ? st_error_io(err, errno, offset) : ST_OK;
        if (rc == ST_OK)
            memcpy((uint8_t *)base + (offset - start), file->map + offset, (size_t)len);
    }
    if (rc != ST_OK)
        return rc;
    out->base = base;
    out->len = (size_t)span;
    out->data = (uint8_t *)base + (offset - start);
    return ST_OK;
}

/* ======================================================================
 * MARK: descriptors (the process-wide cache)
 *
 * A file keeps no descriptor of its own for its whole life: the process
 * would run out of them with a few thousand open handles. Descriptors sit in
 * one list, newest first, of at most fd_bound() (64, or a sixteenth of
 * RLIMIT_NOFILE's soft limit if lower) beyond those in use. A pread read or
 * a private map borrows its file's descriptor (fd_borrow, fd_return): one in
 * use is never closed; the oldest unused ones are closed when the list is
 * over the bound. A file whose descriptor was closed reopens its path and
 * checks it finds the file it opened (device, inode, size and modification
 * time as fstat gave them at open); anything else is an error (the mmap
 * backend copies from its whole-file mapping instead). The file owns fd;
 * only the cache opens and closes it, under fds.lock, and the file's last
 * release closes it. A forked child inherits the descriptors and the list:
 * the lock is held across fork (pthread_atfork) and the child's copy, whose
 * borrowers did not come along, counts no users.
 * ====================================================================== */

#define ST_FD_CACHE_MAX 64

static struct {
    pthread_mutex_t lock;
    pthread_once_t once;
    st_file *newest, *oldest;
    size_t open, bound; /* descriptors in the list; fd_bound() at the last insert */
} fds = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_ONCE_INIT, NULL, NULL, 0, 1};

static void fds_lock(void)
{
    pthread_mutex_lock(&fds.lock);
}

static void fds_unlock(void)
{
    pthread_mutex_unlock(&fds.lock);
}

static void fds_child(void)
{
    for (st_file *f = fds.newest; f != NULL; f = f->older)
        f->users = 0;
    fds_unlock();
}

static void fds_at_fork(void)
{
    (void)pthread_atfork(fds_lock, fds_unlock, fds_child);
}

static size_t fd_bound(void)
{
    struct rlimit limit;
    rlim_t soft = getrlimit(RLIMIT_NOFILE, &limit) == 0 ? limit.rlim_cur : 1024;
    rlim_t bound = soft == RLIM_INFINITY ? ST_FD_CACHE_MAX : soft / 16;
    return bound > ST_FD_CACHE_MAX ? ST_FD_CACHE_MAX : bound < 1 ? 1 : (size_t)bound;
}

/* Lock held from here to fd_close. */
static void fd_unlink(st_file *f)
{
    *(f->newer ? &f->newer->older : &fds.newest) = f->older;
    *(f->older ? &f->older->newer : &fds.oldest) = f->newer;
    f->newer = f->older = NULL;
}

static void fd_link_newest(st_file *f)
{
    f->older = fds.newest;
    *(fds.newest ? &fds.newest->newer : &fds.oldest) = f;
    fds.newest = f;
}

static void fd_close(st_file *f)
{
    fd_unlink(f);
    close(f->fd);
    f->fd = -1;
    fds.open--;
}

/* Closes the oldest unused descriptors while the list is over `bound`. */
static void fd_trim(size_t bound)
{
    for (st_file *f = fds.oldest, *newer; f != NULL && fds.open > bound; f = newer) {
        newer = f->newer;
        if (f->users == 0)
            fd_close(f);
    }
}

/* Takes fd (open, not yet in the list) as file's descriptor: file has none. */
static void fd_insert(st_file *file, int fd)
{
    file->fd = fd;
    fd_link_newest(file);
    fds.open++;
    fds.bound = fd_bound();
}

static void fd_adopt(st_file *file, int fd)
{
    pthread_once(&fds.once, fds_at_fork);
    fds_lock();
    fd_insert(file, fd);
    fd_trim(fds.bound);
    fds_unlock();
}

/* Opens file's path again, checking that it finds the file opened. */
static st_code fd_reopen(const st_file *file, int *fd, st_error *err)
{
    const struct stat *was = &file->opened;
    struct stat now;
    st_error why;
    st_code rc = open_regular(file->path, fd, &now, &why);
    if (rc == ST_ERR_IO && (why.sys_errno == EMFILE || why.sys_errno == ENFILE)) {
        fds_lock(); /* out of descriptors: give back the unused ones, once */
        fd_trim(0);
        fds_unlock();
        rc = open_regular(file->path, fd, &now, &why);
    }
    if (rc == ST_OK && now.st_dev == was->st_dev && now.st_ino == was->st_ino &&
        now.st_size == was->st_size && now.st_mtim.tv_sec == was->st_mtim.tv_sec &&
        now.st_mtim.tv_nsec == was->st_mtim.tv_nsec)
        return ST_OK;
    if (rc == ST_OK) { /* another file, or this one modified */
        close(*fd);
        *fd = -1;
        why.sys_errno = ESTALE;
    } else if (why.sys_errno != ENOENT && why.sys_errno != ENOTDIR) {
        if (err != NULL)
            *err = why;
        return rc;
    }
    st_error_set(err, ST_ERR_IO, 0,
                 "the file changed after it was opened (replaced, deleted or modified): %s; "
                 "open it again to read it",
                 file->path);
    if (err != NULL)
        err->sys_errno = why.sys_errno;
    return ST_ERR_IO;
}

/* file's descriptor, open until the matching fd_return. */
static st_code fd_borrow(const st_file *file, int *fd, st_error *err)
{
    if (file->source != NULL)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                            "a file opened over a byte source has no descriptor");
    st_file *f = (st_file *)file; /* its descriptor fields change under fds.lock */
    int opened = -1;
    st_code rc = ST_OK;
    fds_lock();
    if (f->fd < 0) {
        fds_unlock();
        if ((rc = fd_reopen(f, &opened, err)) != ST_OK)
            return rc;
        fds_lock();
        if (f->fd < 0) { /* else another thread reopened it meanwhile */
            fd_insert(f, opened);
            opened = -1;
        }
    }
    f->users++;
    fd_unlink(f);
    fd_link_newest(f);
    fd_trim(fds.bound);
    *fd = f->fd;
    fds_unlock();
    if (opened >= 0)
        close(opened);
    return rc;
}

static void fd_return(const st_file *file)
{
    st_file *f = (st_file *)file;
    fds_lock();
    f->users--;
    fd_trim(fds.bound);
    fds_unlock();
}

/* The file's last release. */
static void fd_forget(st_file *file)
{
    fds_lock();
    if (file->fd >= 0)
        fd_close(file);
    fds_unlock();
}

bool st_file_has_descriptor(const st_file *file)
{
    bool has;
    fds_lock();
    has = file->fd >= 0;
    fds_unlock();
    return has;
}

size_t st_file_descriptors(void)
{
    size_t open;
    fds_lock();
    open = fds.open;
    fds_unlock();
    return open;
}

/* ======================================================================
 * MARK: giving pages back, unmapping
 * ====================================================================== */

void st_private_map_discard(uint8_t *addr, size_t len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t low = ((uintptr_t)addr + page - 1) & ~(page - 1);
    uintptr_t high = ((uintptr_t)addr + len) & ~(page - 1);
    if (high > low)
        (void)madvise((void *)low, high - low, MADV_DONTNEED);
}

void st_private_map_release(st_private_map *map)
{
    if (map->base != NULL)
        munmap(map->base, map->len);
    memset(map, 0, sizeof(*map));
}

/*
 * Large reads go through a queue of ST_READ_CHUNK pieces that up to
 * ST_READ_THREADS threads (the caller among them) take in file order:
 * on a warm file several cores copy from the page cache at once; on a cold
 * one ST_READ_THREADS reads of ST_READ_CHUNK are in flight, which the disk
 * needs to reach its throughput (one large pread keeps only the kernel's
 * readahead window in flight). Threads live for one call: nothing outlives
 * it. Below ST_PARALLEL_MIN bytes in all a thread costs more than it saves.
 */
#define ST_READ_CHUNK   ((size_t)1 << 20)
#define ST_PARALLEL_MIN ((size_t)4 << 20)
#define ST_READ_THREADS 8
#define ST_POPULATE_MIN ((size_t)64 << 10)
#define ST_READ_STACK   ((size_t)256 << 10)

/*
 * Reads: MADV_POPULATE_WRITE (Linux 5.14) before each chunk. A fresh
 * destination otherwise takes one page fault per 4 KiB inside pread's copy;
 * populating the chunk first makes those pages in one call. Measured here
 * (548 MB, warm page cache, fresh anonymous destination, 2 threads x 1 MiB
 * chunks, 4 runs): 0.22-0.29 s of CPU with it, 0.29-0.36 s without. Fails
 * harmlessly (EINVAL) on older kernels and costs a page-table walk where the
 * memory is already there (malloc reusing freed memory).
 *
 * No MADV_HUGEPAGE on destinations: with THP "enabled=madvise defrag=madvise"
 * (this machine, a common default) a region so marked compacts memory
 * synchronously on each huge-page fault. Measured here on the same read:
 * 0.09-1.19 s of CPU with the hint (compact_stall rose by ~370 over 3 runs)
 * against a steady 0.28-0.47 s with 4 KiB pages; an hour later, 8 threads,
 * 5 runs each: 0.13-0.53 s with it (bimodal: 0.51, 0.53, 0.30, 0.13, 0.13)
 * against 0.27-0.34 s populated; later still, torch get_tensor of every
 * key of that file with the hint on reads of 32 MiB or more (the 154 MB
 * embedding), 4 processes x 4 loads: 0.15-0.37 s against 0.19-0.32 s.
 * Issue 10 measured 0.57 s against 0.16 s on another machine. The hint wins
 * by up to a quarter when free 2 MiB blocks happen to be at hand and loses
 * 2-3.5x when they are not (no userspace way to ask for huge pages only if
 * free under defrag=madvise): steady beats sometimes-faster. (NumPy
 * madvises its own large arrays; that is its call.)
 */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static void populate_destination(uint8_t *dst, size_t len)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)dst & ~(page - 1);
    (void)madvise((void *)start, (uintptr_t)dst + len - start, MADV_POPULATE_WRITE);
}

/* One contiguous piece of a read: by memcpy from the mapping, or pread from
 * fd (borrowed for the whole call). */
static st_code read_piece(const st_file *file, int fd, uint64_t offset, uint8_t *dst, size_t len,
                          st_error *err)
{
    if (len >= ST_POPULATE_MIN)
        populate_destination(dst, len);
    if (file->map != NULL) {
        memcpy(dst, file->map + offset, len);
        return ST_OK;
    }
    return read_exact(fd, offset, dst, len, err);
}

typedef struct {
    const st_file *file;
    int fd; /* pread backend: borrowed until the call returns */
    const st_read_request *requests;
    size_t count;
    pthread_mutex_t lock; /* guards everything below */
    size_t next_request;  /* the next chunk: requests[next_request] ... */
    size_t next_offset;   /* ... from this byte of it */
    bool failed;          /* a read failed: no more chunks are handed out */
    st_code code;         /* the first failure */
    st_error err;
} read_queue;

/* The next chunk (file offset, destination, length); false when none is
 * left or a read failed. */
static bool take_chunk(read_queue *queue, uint64_t *offset, uint8_t **dst, size_t *len)
{
    bool taken = false;
    pthread_mutex_lock(&queue->lock);
    while (!queue->failed && queue->next_request < queue->count) {
        const st_read_request *r = &queue->requests[queue->next_request];
        if (queue->next_offset < r->len) {
            size_t left = r->len - queue->next_offset;
            *len = left < ST_READ_CHUNK ? left : ST_READ_CHUNK;
            *offset = r->offset + queue->next_offset;
            *dst = (uint8_t *)r->dst + queue->next_offset;
            queue->next_offset += *len;
            taken = true;
            break;
        }
        queue->next_request++;
        queue->next_offset = 0;
    }
    pthread_mutex_unlock(&queue->lock);
    return taken;
}

static void *read_worker(void *arg)
{
    read_queue *queue = arg;
    uint64_t offset;
    uint8_t *dst;
    size_t len;
    while (take_chunk(queue, &offset, &dst, &len)) {
        st_error err;
        st_code code = read_piece(queue->file, queue->fd, offset, dst, len, &err);
        if (code != ST_OK) {
            pthread_mutex_lock(&queue->lock);
            if (!queue->failed) {
                queue->failed = true;
                queue->code = code;
                queue->err = err;
            }
            pthread_mutex_unlock(&queue->lock);
        }
    }
    return NULL;
}

static st_code read_in_turn(const read_queue *queue, st_error *err)
{
    for (size_t i = 0; i < queue->count; i++) {
        const st_read_request *r = &queue->requests[i];
        st_code code = r->len == 0
                           ? ST_OK
                           : read_piece(queue->file, queue->fd, r->offset, r->dst, r->len, err);
        if (code != ST_OK)
            return code;
    }
    return ST_OK;
}

st_code st_file_read_many(const st_file *file, const st_read_request *requests, size_t count,
                          st_error *err)
{
    pthread_t threads[ST_READ_THREADS - 1];
    size_t started = 0, chunks = 0, total = 0;
    read_queue queue = {
        .file = file, .fd = -1, .requests = requests, .count = count, .code = ST_OK};

    for (size_t i = 0; i < count; i++) {
        const st_read_request *r = &requests[i];
        if (r->offset > file->size || r->len > file->size - r->offset)
            return st_error_set(err, ST_ERR_INVALID_ARGUMENT, r->offset,
                                "read of %zu bytes at offset %llu is outside the file (%llu "
                                "bytes)",
                                r->len, (unsigned long long)r->offset,
                                (unsigned long long)file->size);
        chunks += r->len / ST_READ_CHUNK + (r->len % ST_READ_CHUNK != 0);
        total += r->len;
    }
    if (file->source != NULL) /* it does its own concurrency */
        return count == 0 ? ST_OK
                          : file->source->read_many(file->source->ctx, requests, count, err);
    if (file->map == NULL && total > 0 && (queue.code = fd_borrow(file, &queue.fd, err)) != ST_OK)
        return queue.code;
    /* Small reads, and no lock for the queue: one after the other, here. */
    if (total < ST_PARALLEL_MIN || pthread_mutex_init(&queue.lock, NULL) != 0) {
        queue.code = read_in_turn(&queue, err);
        goto exit;
    }
    /* A thread that cannot start leaves its share to the others and to this
     * one, which works the queue too. Small stacks: a worker needs a few
     * KiB, and 7 default 8 MiB stacks overflow glibc's 40 MiB stack cache,
     * so every call would map and unmap some afresh. */
    pthread_attr_t attr;
    bool have_attr = pthread_attr_init(&attr) == 0;
    if (have_attr)
        (void)pthread_attr_setstacksize(&attr, ST_READ_STACK);
    while (started + 1 < ST_READ_THREADS && started + 1 < chunks &&
           pthread_create(&threads[started], have_attr ? &attr : NULL, read_worker, &queue) == 0)
        started++;
    if (have_attr)
        pthread_attr_destroy(&attr);
    read_worker(&queue);
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&queue.lock);
    if (queue.failed && err != NULL)
        *err = queue.err;
exit:
    if (queue.fd >= 0)
        fd_return(file);
    return queue.code;
}

st_code st_file_read(const st_file *file, uint64_t offset, void *dst, size_t len, st_error *err)
{
    st_read_request request = {.offset = offset, .dst = dst, .len = len};
    return st_file_read_many(file, &request, 1, err);
}
