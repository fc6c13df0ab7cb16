/*
 * st_staged.h - internal: a file written under a temporary name in its
 * destination's directory and renamed over the destination when complete;
 * st_write_file and the streaming writer share its rules (docs/format.md
 * §5.6): only a regular file or nothing is replaced, names are resolved
 * through a descriptor of the directory (any path the OS accepts works), and
 * a failure leaves the destination untouched and no temporary file behind.
 */
#ifndef ST_STAGED_H
#define ST_STAGED_H

#include "st_core.h"

#include <sys/types.h>

typedef struct st_staged_file {
    int dir_fd;       /* the destination's directory; -1 when closed */
    int fd;           /* the temporary file, open for writing; -1 when closed */
    const char *base; /* the destination's name in dir_fd: points into the caller's path */
    bool replacing;   /* a regular file is there now */
    mode_t mode;      /* ... with this mode, which the new file gets */
    bool created;     /* tmp exists and is ours to remove */
    char tmp[64];     /* the temporary file's name in dir_fd */
} st_staged_file;

/* Checks the destination, creates the temporary file and reserves `size` bytes for it
 * (path must outlive f). st_staged_discard is always safe, also after a failure. */
st_code st_staged_open(const char *path, uint64_t size, st_staged_file *f, st_error *err);

/* Closes the temporary file and renames it over the destination. */
st_code st_staged_commit(st_staged_file *f, st_error *err);

/* Releases everything; removes the temporary file unless it was committed. */
void st_staged_discard(st_staged_file *f);

#endif
