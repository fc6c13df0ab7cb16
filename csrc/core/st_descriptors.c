/*
 * st_descriptors.c - the process-wide cache of descriptors that pread reads and private maps borrow
 * (docs/design.md, "Descriptors"): one list, newest first, under fds.lock, of at most fd_bound()
 * unused ones (one in use is never closed). A file whose descriptor was closed reopens its path and
 * checks it is the file opened (device, inode, size, mtime). The lock is held across fork; the
 * child's list, whose borrowers did not come along, counts no users.
 */
#define _GNU_SOURCE
#define _DEFAULT_SOURCE

#include "st_file_internal.h"
#include "st_test_hooks.h"

#include <errno.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

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

void st_fd_adopt(st_file *file, int fd)
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
    st_code rc = st_file_open_regular(file->path, fd, &now, &why);
    if (rc == ST_ERR_IO && (why.sys_errno == EMFILE || why.sys_errno == ENFILE)) {
        fds_lock(); /* out of descriptors: give back the unused ones, once */
        fd_trim(0);
        fds_unlock();
        rc = st_file_open_regular(file->path, fd, &now, &why);
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

st_code st_fd_borrow(const st_file *file, int *fd, st_error *err)
{
    if (file->source.read_many != NULL)
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

void st_fd_return(const st_file *file)
{
    st_file *f = (st_file *)file;
    fds_lock();
    f->users--;
    fd_trim(fds.bound);
    fds_unlock();
}

void st_fd_forget(st_file *file)
{
    fds_lock();
    if (file->fd >= 0)
        fd_close(file);
    fds_unlock();
}

bool st_file_has_descriptor(const st_file *file)
{
    fds_lock();
    bool has = file->fd >= 0;
    fds_unlock();
    return has;
}

size_t st_file_descriptors(void)
{
    fds_lock();
    size_t open = fds.open;
    fds_unlock();
    return open;
}
