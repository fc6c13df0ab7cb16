/*
 * st_file_internal.h - internal: what st_file.c (open, lifetime), st_read.c,
 * st_private_map.c, st_descriptors.c (the descriptor cache) and st_storage.c share. Include
 * it after defining _GNU_SOURCE (struct stat's st_mtim).
 */
#ifndef ST_FILE_INTERNAL_H
#define ST_FILE_INTERNAL_H

#include "st_core.h"

#include <stdatomic.h>
#include <sys/stat.h>

#define ST_REASON_MAX 64

struct st_file {
    atomic_size_t refcount;
    st_backend backend;
    char backend_reason[ST_REASON_MAX]; /* why: st_file_backend_reason */
    uint64_t size;                      /* file size at open (fstat) */
    uint8_t *map; /* mmap backend: base of the whole-file mapping (size bytes) */
    st_header *header;
    char *path;         /* absolute where the working directory was known */
    struct stat opened; /* what fstat said at open: the identity to check */
    /* Guarded by the descriptor cache's lock (st_descriptors.c). */
    int fd;                        /* -1 while closed */
    size_t users;                  /* borrowers of fd: it is not closed under them */
    struct st_file *newer, *older; /* the cache's list, while fd >= 0 */
    st_source source; /* st_file_open_source: every read goes to it; read_many NULL for a path */
};

/* Opens path read-only, never blocking on a FIFO (O_NONBLOCK, cleared after), and checks
 * it is a regular file; *st from fstat. On failure *fd is -1. (st_file.c) */
st_code st_file_open_regular(const char *path, int *fd, struct stat *st, st_error *err);

/* ST_BACKEND_AUTO's choice for the open file fd: pread on a network, cluster or FUSE file
 * system, else mmap; why in reason ("nfs: network file system"). (st_storage.c) */
st_backend st_storage_backend(int fd, char *reason, size_t cap);

/* Reads exactly len bytes at offset from fd; a file that ends first is an I/O error. */
st_code st_read_exact(int fd, uint64_t offset, void *dst, size_t len, st_error *err);

/* The descriptor cache (st_descriptors.c): st_fd_adopt hands it st_file_open's fd;
 * st_fd_borrow gives file's descriptor (reopened if closed) until st_fd_return;
 * st_fd_forget closes it at the file's last release. */
void st_fd_adopt(st_file *file, int fd);
st_code st_fd_borrow(const st_file *file, int *fd, st_error *err);
void st_fd_return(const st_file *file);
void st_fd_forget(st_file *file);

#endif
