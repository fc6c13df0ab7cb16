/*
 * st_private_map.c - copy-on-write mappings of pieces of a file, each of its
 * own (st_file_map_private), what one handed-out tensor owns; giving their
 * pages back (st_private_map_discard) and unmapping them. Ownership:
 * docs/design.md, "Ownership of file memory".
 */
#define _GNU_SOURCE
#define _DEFAULT_SOURCE

#include "st_file_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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
    if ((rc = st_fd_borrow(file, &fd, err)) == ST_OK) {
        base = mmap(NULL, (size_t)span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd,
                    (off_t)start);
        if (base == MAP_FAILED)
            rc = st_error_io(err, errno, offset);
        st_fd_return(file);
    } else if (file->map != NULL) {
        /* The path no longer leads to the file opened: the whole-file mapping still holds
         * it. A copy in anonymous memory is as private as a mapping of the file. */
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
