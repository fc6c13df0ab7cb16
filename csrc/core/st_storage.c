/*
 * st_storage.c - storage-aware reading (docs/design.md, "Choosing how a file is read"): which
 * file systems ST_BACKEND_AUTO reads with pread (network, cluster and FUSE ones, by statfs
 * f_type), how much of a mapped file is in the page cache (mincore), and the rule that sends a
 * read of a whole, mostly uncached file through pread instead of page faults.
 */
#define _GNU_SOURCE
#define _DEFAULT_SOURCE

#include "st_file_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

/* f_type values from statfs(2) and linux/magic.h, plus the out-of-tree file systems' own
 * (Lustre's LL_SUPER_MAGIC, GPFS, BeeGFS, PanFS). FUSE covers every FUSE file system:
 * virtiofs, GlusterFS, s3fs, gcsfuse, blobfuse, sshfs, ... */
static const struct {
    uint32_t magic;
    const char *name;
    const char *kind;
} remote_fs[] = {
    {0x6969, "nfs", "network file system"},       {0x517B, "smb", "network file system"},
    {0xFE534D42, "smb2", "network file system"},  {0xFF534D42, "cifs", "network file system"},
    {0x00C36400, "ceph", "network file system"},  {0x0BD00BD0, "lustre", "network file system"},
    {0x47504653, "gpfs", "network file system"},  {0x19830326, "beegfs", "network file system"},
    {0xAAD7AAEA, "panfs", "network file system"}, {0x01021997, "9p", "network file system"},
    {0x5346414F, "afs", "network file system"},   {0x6B414653, "kafs", "network file system"},
    {0x73757245, "coda", "network file system"},  {0x564C, "ncp", "network file system"},
    {0x7461636F, "ocfs2", "cluster file system"}, {0x01161970, "gfs2", "cluster file system"},
    {0x65735546, "fuse", "FUSE file system"},
};

#define REMOTE_FS_COUNT (sizeof remote_fs / sizeof remote_fs[0])

/* The row of f_type, or REMOTE_FS_COUNT. f_type is a long whose upper half may be the sign
 * extension of a magic above 0x7fffffff: every magic is 32 bits. */
static size_t remote_fs_row(uint64_t f_type)
{
    size_t i = 0;
    while (i < REMOTE_FS_COUNT && remote_fs[i].magic != (uint32_t)f_type)
        i++;
    return i;
}

const char *st_fs_remote_name(uint64_t f_type)
{
    size_t i = remote_fs_row(f_type);
    return i < REMOTE_FS_COUNT ? remote_fs[i].name : NULL;
}

st_backend st_storage_backend(int fd, char *reason, size_t cap)
{
    struct statfs fs;
    size_t i;
    if (fstatfs(fd, &fs) != 0) {
        snprintf(reason, cap, "file system unknown (fstatfs: %s)", strerror(errno));
        return ST_BACKEND_MMAP;
    }
    i = remote_fs_row((uint64_t)fs.f_type);
    if (i == REMOTE_FS_COUNT) {
        snprintf(reason, cap, "local file system");
        return ST_BACKEND_MMAP;
    }
    snprintf(reason, cap, "%s: %s", remote_fs[i].name, remote_fs[i].kind);
    return ST_BACKEND_PREAD;
}

/* Looking up every page is too slow before every load: 14-24 ms for the 134,000 pages of a
 * 548 MB file, whose warm load takes 0.4 ms. mincore probes RESIDENT_WINDOWS evenly spaced
 * windows of RESIDENT_WINDOW_PAGES pages, first and last included (a call costs about 1.5 us,
 * a page 0.1 us), or every page of a range of at most that many. */
#define RESIDENT_WINDOWS      8
#define RESIDENT_WINDOW_PAGES 4

st_code st_file_resident(const st_file *file, uint64_t offset, uint64_t len, double *fraction,
                         st_error *err)
{
    const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    unsigned char vec[RESIDENT_WINDOWS * RESIDENT_WINDOW_PAGES];
    uint64_t start, pages, windows, per, resident = 0;
    *fraction = 1.0;
    if (file->map == NULL || offset > file->size || len > file->size - offset)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, offset,
                            "residency of a range outside the file's mapping");
    if (len == 0)
        return ST_OK;
    start = offset - offset % page;
    pages = (offset + len - start + page - 1) / page;
    windows = pages <= sizeof vec ? 1 : RESIDENT_WINDOWS;
    per = windows == 1 ? pages : RESIDENT_WINDOW_PAGES;
    for (uint64_t w = 0; w < windows; w++) {
        uint64_t first = windows == 1 ? 0 : w * (pages - per) / (windows - 1);
        uint8_t *addr = file->map + start + first * page;
        if (mincore(addr, (size_t)(per * page), vec) != 0)
            return st_error_io(err, errno, start + first * page);
        for (uint64_t i = 0; i < per; i++)
            resident += vec[i] & 1;
    }
    *fraction = (double)resident / (double)(windows * per);
    return ST_OK;
}

bool st_read_all_prefers_pread(double resident, uint64_t len, uint64_t memory)
{
    return resident < ST_COLD_FRACTION && len <= memory / 2;
}
