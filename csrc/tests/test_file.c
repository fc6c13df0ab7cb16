/*
 * test_file.c - st_file_open / read / map / refcount on both backends:
 * open errors, special files, copy-on-write mapping, truncated and extended
 * files, a file that shrinks after opening, a sparse 64 GiB file, and the
 * descriptor cache (its bound, reopening, a file changed under a closed
 * descriptor, threads borrowing while others evict), ST_BACKEND_AUTO's rules.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *tmpdir;
static const st_backend backends[2] = {ST_BACKEND_MMAP, ST_BACKEND_PREAD};

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* Writes 8-byte N + json (+ spaces to a multiple of 8) + data. */
static void write_raw(const char *path, const char *json, const void *data, size_t dlen)
{
    size_t jl = strlen(json);
    size_t n = (jl + 7) & ~(size_t)7;
    uint8_t *b = calloc(1, 8 + n + dlen + 1);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, json, jl);
    memset(b + 8 + jl, ' ', n - jl);
    if (dlen)
        memcpy(b + 8 + n, data, dlen);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, b, 8 + n + dlen) != (ssize_t)(8 + n + dlen)) {
        perror("write_raw");
        exit(2);
    }
    close(fd);
    free(b);
}

/* Writes a file of one U8 tensor of len patterned bytes; returns them
 * (the caller frees). */
static uint8_t *write_u8_tensor(const char *path, size_t len)
{
    char json[160];
    uint8_t *data = malloc(len);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)(i * 131 + (i >> 12));
    snprintf(json, sizeof json,
             "{\"x\":{\"dtype\":\"U8\",\"shape\":[%zu],\"data_offsets\":[0,%zu]}}", len, len);
    write_raw(path, json, data, len);
    return data;
}

static void path_in(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

static void test_open_errors(void)
{
    st_error err = {0};
    st_file *f = (st_file *)0x1;
    char p[512];
    int fds = count_fds();
    for (int b = 0; b < 2; b++) {
        path_in(p, sizeof p, "does-not-exist");
        CHECK(st_file_open(p, backends[b], &f, &err) == ST_ERR_IO && err.sys_errno == ENOENT &&
                  f == NULL,
              "ENOENT: %s", err.msg);
        CHECK(strstr(err.msg, "(os error 2)") != NULL, "msg %s", err.msg);
        CHECK(st_file_open(tmpdir, backends[b], &f, &err) == ST_ERR_IO && err.sys_errno == EISDIR,
              "dir: %s", err.msg);
        path_in(p, sizeof p, "fifo");
        unlink(p);
        CHECK(mkfifo(p, 0644) == 0, "mkfifo");
        /* must not block although nobody writes to it */
        CHECK(st_file_open(p, backends[b], &f, &err) == ST_ERR_IO &&
                  strstr(err.msg, "FIFO") != NULL,
              "fifo: %s", err.msg);
        unlink(p);
        CHECK(st_file_open("/dev/null", backends[b], &f, &err) == ST_ERR_IO, "chr dev: %s",
              err.msg);
        if (geteuid() != 0) {
            path_in(p, sizeof p, "noperm");
            write_raw(p, "{}", NULL, 0);
            chmod(p, 0);
            CHECK(st_file_open(p, backends[b], &f, &err) == ST_ERR_IO && err.sys_errno == EACCES,
                  "EACCES: %s", err.msg);
            unlink(p);
        }
    }
    CHECK(count_fds() == fds, "fd leak on errors: %d -> %d", fds, count_fds());
}

static void test_backends(void)
{
    st_error err = {0};
    char p[512];
    path_in(p, sizeof p, "ok.safetensors");
    float v[6] = {1.5f, -2, 3, 4, 5, 6};
    write_raw(p,
              "{\"__metadata__\":{\"format\":\"pt\"},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
              "\"e\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[24,24]}}",
              v, 24);
    int fds = count_fds();
    for (int b = 0; b < 2; b++) {
        st_file *f = NULL;
        CHECK(st_file_open(p, backends[b], &f, &err) == ST_OK, "open %d: %s", b, err.msg);
        if (!f)
            continue;
        CHECK(st_file_backend(f) == backends[b], "backend");
        const st_header *h = st_file_header(f);
        uint64_t ds = st_header_data_start(h);
        CHECK(st_file_size(f) == ds + 24, "size %llu", (unsigned long long)st_file_size(f));
        CHECK(st_header_count(h) == 2, "count");
        const st_tensor *t = st_header_find(h, "a", 1);
        CHECK(t && t->begin == 0 && t->end == 24, "tensor a");
        float got[6] = {0};
        CHECK(st_file_read(f, ds, got, 24, &err) == ST_OK && memcmp(got, v, 24) == 0, "read");
        CHECK(st_file_read(f, ds + 20, got, 4, &err) == ST_OK && got[0] == 6, "read last");
        CHECK(st_file_read(f, ds + 24, got, 0, &err) == ST_OK, "empty read at EOF");
        CHECK(st_file_read(f, ds + 21, got, 4, &err) != ST_OK, "read past EOF");
        CHECK(st_file_read(f, UINT64_MAX, got, 4, &err) != ST_OK, "read far past EOF");
        if (backends[b] == ST_BACKEND_MMAP) {
            uint8_t *m = st_file_map(f);
            CHECK(m != NULL && memcmp(m + ds, v, 24) == 0, "map contents");
            /* one descriptor is kept while the file lives (private maps) */
            CHECK(count_fds() == fds + 1, "mmap backend keeps one fd");
            /* a private mapping of a tensor: same bytes, writes seen nowhere else */
            st_private_map pm;
            CHECK(st_file_map_private(f, ds, 24, &pm, &err) == ST_OK && memcmp(pm.data, v, 24) == 0,
                  "private map contents");
            pm.data[0] ^= 0xFF;
            CHECK(memcmp(m + ds, v, 24) == 0, "private map writes stay private");
            st_private_map_release(&pm);
            CHECK(pm.base == NULL, "private map released");
            CHECK(st_file_map_private(f, ds + 1, 24, &pm, &err) != ST_OK, "private map past EOF");
            /* refcount: the mapping outlives the handle's reference */
            st_file_retain(f);
            st_file_release(f);
            CHECK(memcmp(m + ds, v, 24) == 0, "retained map readable");
            /* MAP_PRIVATE: writes do not reach the file */
            m[ds] ^= 0xFF;
            int fd = open(p, O_RDONLY);
            uint8_t first;
            CHECK(pread(fd, &first, 1, (off_t)ds) == 1 && first == ((uint8_t *)v)[0],
                  "file unchanged by map write");
            close(fd);
            st_file_release(f);
        } else {
            CHECK(st_file_map(f) == NULL, "pread has no map");
            CHECK(count_fds() == fds + 1, "pread backend keeps one fd");
            st_file_retain(f);
            st_file_release(f);
            CHECK(st_file_read(f, ds, got, 4, &err) == ST_OK && got[0] == 1.5f, "retained read");
            st_file_release(f);
        }
        CHECK(count_fds() == fds, "fd leak after release");
    }
    unlink(p);
}

static void test_bad_sizes(void)
{
    st_error err = {0};
    char p[512];
    path_in(p, sizeof p, "bad.safetensors");
    uint8_t d[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const char *j = "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}";
    for (int b = 0; b < 2; b++) {
        st_file *f = NULL;
        write_raw(p, j, d, 7); /* truncated */
        CHECK(st_file_open(p, backends[b], &f, &err) == ST_ERR_METADATA_INCOMPLETE, "truncated: %s",
              err.msg);
        write_raw(p, j, d, 9); /* extended */
        CHECK(st_file_open(p, backends[b], &f, &err) == ST_ERR_METADATA_INCOMPLETE, "extended: %s",
              err.msg);
        int fd = open(p, O_WRONLY | O_TRUNC);
        CHECK(write(fd, "\x08\0\0\0", 4) == 4, "w");
        close(fd);
        CHECK(st_file_open(p, backends[b], &f, &err) == ST_ERR_HEADER_TOO_SMALL, "small: %s",
              err.msg);
        fd = open(p, O_WRONLY | O_TRUNC);
        CHECK(write(fd, "\x10\0\0\0\0\0\0\0{}", 10) == 10, "w");
        close(fd);
        CHECK(st_file_open(p, backends[b], &f, &err) == ST_ERR_INVALID_HEADER_LENGTH, "hdr len: %s",
              err.msg);
        fd = open(p, O_WRONLY | O_TRUNC);
        close(fd);
        CHECK(st_file_open(p, backends[b], &f, &err) == ST_ERR_HEADER_TOO_SMALL, "empty: %s",
              err.msg);
        write_raw(p, "{\"a\":{\"dtype\":\"X8\",\"shape\":[8],\"data_offsets\":[0,8]}}", d, 8);
        CHECK(st_file_open(p, backends[b], &f, &err) == ST_ERR_INVALID_JSON, "bad json: %s",
              err.msg);
        write_raw(p, "{}", NULL, 0);
        CHECK(st_file_open(p, backends[b], &f, &err) == ST_OK &&
                  st_header_count(st_file_header(f)) == 0,
              "empty valid file: %s", err.msg);
        st_file_release(f);
    }

    /* pread backend: the file shrinks after it was opened */
    write_raw(p, j, d, 8);
    st_file *f = NULL;
    CHECK(st_file_open(p, ST_BACKEND_PREAD, &f, &err) == ST_OK, "%s", err.msg);
    if (f) {
        CHECK(truncate(p, 70) == 0, "truncate");
        uint8_t got[8];
        uint64_t ds = st_header_data_start(st_file_header(f));
        st_code rc = st_file_read(f, ds, got, 8, &err);
        CHECK(rc == ST_ERR_IO && strstr(err.msg, "shrank") != NULL, "shrunk: rc %d %s", rc,
              err.msg);
        st_file_release(f);
    }
    unlink(p);
}

static void test_sparse_64g(void)
{
    st_error err = {0};
    char p[512];
    path_in(p, sizeof p, "sparse.safetensors");
    const uint64_t total = (uint64_t)64 << 30;
    char json[256];
    uint64_t n = 0, x = 0;
    for (int it = 0; it < 4; it++) {
        x = total - 8 - n;
        int jl = snprintf(json, sizeof json,
                          "{\"big\":{\"dtype\":\"U8\",\"shape\":[%llu],\"data_offsets\":[0,%llu]}}",
                          (unsigned long long)x, (unsigned long long)x);
        n = ((uint64_t)jl + 7) & ~(uint64_t)7;
    }
    write_raw(p, json, NULL, 0);
    if (truncate(p, (off_t)total) != 0) {
        printf("test_file: cannot make a sparse 64 GiB file (%s), skipped\n", strerror(errno));
        unlink(p);
        return;
    }
    /* mark a byte near the end */
    int fd = open(p, O_WRONLY);
    CHECK(pwrite(fd, "Z", 1, (off_t)(total - 3)) == 1, "pwrite");
    close(fd);
    for (int b = 0; b < 2; b++) {
        st_file *f = NULL;
        CHECK(st_file_open(p, backends[b], &f, &err) == ST_OK, "sparse open %d: %s", b, err.msg);
        if (!f)
            continue;
        CHECK(st_file_size(f) == total, "size");
        const st_tensor *t = st_header_find(st_file_header(f), "big", 3);
        CHECK(t && t->end == x, "big tensor");
        uint8_t buf[4] = {1, 1, 1, 1};
        CHECK(st_file_read(f, total - 4, buf, 4, &err) == ST_OK && buf[0] == 0 && buf[1] == 'Z' &&
                  buf[3] == 0,
              "tail read: %s", err.msg);
        CHECK(st_file_read(f, 8 + n, buf, 4, &err) == ST_OK && buf[0] == 0, "head read");
        if (backends[b] == ST_BACKEND_MMAP) {
            CHECK(st_file_map(f)[total - 3] == 'Z', "map tail");
        }
        st_file_release(f);
    }
    unlink(p);
}

/* st_file_read_consumed's consumer: each request's chunks in order, each checked against the
 * file's bytes right after its read; fail_at > 0 fails that call. */
typedef struct {
    pthread_mutex_t lock;
    const uint8_t *want; /* the data section */
    const st_read_request *req;
    uint64_t data_start;
    size_t next[16]; /* per request: the byte expected next */
    size_t calls, fail_at, bad;
} consumed;

static st_code consume_check(void *ctx, size_t request, size_t at, const uint8_t *chunk, size_t len,
                             st_error *err)
{
    consumed *c = ctx;
    st_code code = ST_OK;
    pthread_mutex_lock(&c->lock);
    c->calls++;
    if (at != c->next[request] || len == 0 || len > ((size_t)1 << 20) ||
        chunk != (const uint8_t *)c->req[request].dst + at ||
        memcmp(chunk, c->want + (c->req[request].offset - c->data_start) + at, len) != 0)
        c->bad++;
    c->next[request] = at + len;
    if (c->calls == c->fail_at)
        code = st_error_set(err, ST_ERR_EXTERNAL, 0, "%s", "consumer failed");
    pthread_mutex_unlock(&c->lock);
    return code;
}

static void test_read_consumed(void)
{
    enum { LEN = 12 * 1024 * 1024 + 5, NREQ = 5 };
    static const size_t sizes[NREQ] = {3 << 20, 1, (1 << 20) + 7, 0, 5 << 20};
    st_error err = {0};
    char p[512];
    uint8_t *got = malloc(LEN);
    path_in(p, sizeof p, "consumed.safetensors");
    uint8_t *data = write_u8_tensor(p, LEN);
    for (int b = 0; b < 2; b++) {
        for (int pread = 0; pread < 2; pread++) {
            st_file *f = NULL;
            st_read_request req[NREQ];
            size_t at = 0;
            CHECK(st_file_open(p, backends[b], &f, &err) == ST_OK, "open %d: %s", b, err.msg);
            if (!f)
                continue;
            uint64_t ds = st_header_data_start(st_file_header(f));
            for (size_t i = 0; i < NREQ; i++) {
                req[i] = (st_read_request){.offset = ds + at, .dst = got + at, .len = sizes[i]};
                at += sizes[i];
            }
            for (size_t fail_at = 0; fail_at < 3; fail_at += 2) {
                consumed c = {.lock = PTHREAD_MUTEX_INITIALIZER,
                              .want = data,
                              .req = req,
                              .data_start = ds,
                              .fail_at = fail_at};
                st_read_consumer consumer = {.consume = consume_check, .ctx = &c};
                memset(got, 0, LEN);
                st_code rc = st_file_read_consumed(f, req, NREQ, pread, &consumer, &err);
                CHECK(c.bad == 0, "chunks in order and read before consumed (%d %d)", b, pread);
                if (fail_at == 0) {
                    CHECK(rc == ST_OK && memcmp(got, data, at) == 0, "consumed read %d %d: %s", b,
                          pread, err.msg);
                    CHECK(c.calls == 3 + 1 + 2 + 5, "one call per chunk: %zu", c.calls);
                    for (size_t i = 0; i < NREQ; i++)
                        CHECK(c.next[i] == sizes[i], "request %zu consumed whole", i);
                } else {
                    CHECK(rc == ST_ERR_EXTERNAL && strstr(err.msg, "consumer failed") != NULL,
                          "a failing consumer stops the read: rc %d %s", rc, err.msg);
                    CHECK(c.calls < 3 + 1 + 2 + 5, "no chunk after the stop is read: %zu", c.calls);
                }
            }
            st_file_release(f);
        }
    }
    unlink(p);
    free(data);
    free(got);
}

/* st_file_read_many: requests larger than the 1 MiB chunk and around its
 * edges, enough bytes in all for the threads; an out-of-file request fails
 * before a byte is read; a file that shrinks fails the whole call. */
static void test_read_many(void)
{
    enum { LEN = 9 * 1024 * 1024 + 13 };
    static const size_t sizes[] = {0,       1,  4095,         1 << 20, (1 << 20) + 1, (2 << 20) - 1,
                                   3 << 20, 77, (1 << 20) - 1};
    enum { NREQ = sizeof sizes / sizeof sizes[0] };
    st_error err = {0};
    char p[512];
    uint8_t *data, *got = malloc(LEN);
    path_in(p, sizeof p, "many.safetensors");
    data = write_u8_tensor(p, LEN);
    for (int b = 0; b < 2; b++) {
        st_file *f = NULL;
        st_read_request req[NREQ + 1];
        size_t at = 0;
        CHECK(st_file_open(p, backends[b], &f, &err) == ST_OK, "open %d: %s", b, err.msg);
        if (!f)
            continue;
        uint64_t ds = st_header_data_start(st_file_header(f));
        /* consecutive pieces of the tensor, read back to back into got */
        for (size_t i = 0; i < NREQ; i++) {
            req[i] = (st_read_request){.offset = ds + at, .dst = got + at, .len = sizes[i]};
            at += sizes[i];
        }
        req[NREQ] = (st_read_request){.offset = ds + at, .dst = got + at, .len = LEN - at};
        memset(got, 0, LEN);
        CHECK(st_file_read_many(f, req, NREQ + 1, &err) == ST_OK, "read many %d: %s", b, err.msg);
        CHECK(memcmp(got, data, LEN) == 0, "read many bytes %d", b);
        memset(got, 0, LEN);
        CHECK(st_file_read(f, ds, got, LEN, &err) == ST_OK && memcmp(got, data, LEN) == 0,
              "one large read %d", b);
        /* the last request is out of the file: nothing is read */
        memset(got, 0, LEN);
        req[NREQ].len += 1;
        CHECK(st_file_read_many(f, req, NREQ + 1, &err) == ST_ERR_INVALID_ARGUMENT,
              "out of file %d", b);
        CHECK(got[LEN / 2] == 0 && got[1] == 0, "nothing read before the check %d", b);
        req[NREQ].len -= 1;
        if (backends[b] == ST_BACKEND_PREAD) {
            CHECK(truncate(p, (off_t)(ds + LEN / 2)) == 0, "truncate");
            st_code rc = st_file_read_many(f, req, NREQ + 1, &err);
            CHECK(rc == ST_ERR_IO && strstr(err.msg, "shrank") != NULL, "shrunk many: rc %d %s", rc,
                  err.msg);
            rc = st_file_read(f, ds, got, LEN, &err);
            CHECK(rc == ST_ERR_IO && strstr(err.msg, "shrank") != NULL, "shrunk one: rc %d %s", rc,
                  err.msg);
        }
        st_file_release(f);
    }
    unlink(p);
    free(data);
    free(got);
}

/* st_private_map_discard: whole pages inside the range read as the file
 * again; the partial pages at its ends keep what was written there. */
static void test_discard(void)
{
    enum { LEN = 64 * 1024 + 100 };
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    st_error err = {0};
    st_private_map pm;
    st_file *f = NULL;
    char p[512];
    uint8_t *data;
    path_in(p, sizeof p, "discard.safetensors");
    data = write_u8_tensor(p, LEN);
    CHECK(st_file_open(p, ST_BACKEND_MMAP, &f, &err) == ST_OK, "open: %s", err.msg);
    if (f == NULL)
        goto exit;
    uint64_t ds = st_header_data_start(st_file_header(f));
    CHECK(st_file_map_private(f, ds, LEN, &pm, &err) == ST_OK, "map: %s", err.msg);
    uint8_t *from = pm.data + 100, *whole = (uint8_t *)(((uintptr_t)from + page - 1) / page * page);
    memset(from, 0xEE, 3 * page);
    st_private_map_discard(from, 3 * page);
    CHECK(memcmp(whole, data + (whole - pm.data), 2 * page) == 0, "whole pages read as the file");
    CHECK(whole == from || (from[0] == 0xEE && from[3 * page - 1] == 0xEE), "partial pages kept");
    st_private_map_release(&pm);
    CHECK(pm.base == NULL, "released");
    st_file_release(f);
exit:
    unlink(p);
    free(data);
}

/* ======================================================================
 * MARK: descriptors
 * ====================================================================== */

enum { FD_FILES = 4, FD_HANDLES = 300, FD_LEN = 5000, FD_BIG = (5 << 20) + 7 };

/* Byte i of file k of the descriptor tests (one U8 tensor): bytes read from
 * the wrong file show. */
static uint8_t fd_byte(int k, size_t i)
{
    return (uint8_t)(k * 61 + i * 7 + (i >> 9));
}

static void write_fd_file(const char *path, int k, size_t len)
{
    char json[160];
    uint8_t *data = malloc(len);
    for (size_t i = 0; i < len; i++)
        data[i] = fd_byte(k, i);
    snprintf(json, sizeof json,
             "{\"x\":{\"dtype\":\"U8\",\"shape\":[%zu],\"data_offsets\":[0,%zu]}}", len, len);
    write_raw(path, json, data, len);
    free(data);
}

/* Whether f reads the bytes [at, at + len) of file k: pread, or a private
 * map on mmap. */
static bool fd_reads_right(st_file *f, int k, size_t at, size_t len, st_error *err)
{
    uint64_t ds = st_header_data_start(st_file_header(f));
    uint8_t *got = malloc(len);
    st_private_map pm;
    bool right = got != NULL;
    if (st_file_backend(f) == ST_BACKEND_PREAD) {
        right = right && st_file_read(f, ds + at, got, len, err) == ST_OK;
    } else if ((right = right && st_file_map_private(f, ds + at, len, &pm, err) == ST_OK)) {
        memcpy(got, pm.data, len);
        st_private_map_release(&pm);
    }
    for (size_t i = 0; right && i < len; i++)
        right = got[i] == fd_byte(k, at + i);
    free(got);
    return right;
}

typedef struct {
    st_file **files; /* FD_HANDLES of them, handle h on file h % FD_FILES */
    st_file *big;    /* file FD_FILES, FD_BIG bytes, pread */
    int id, wrong;
} fd_worker_arg;

/* Worker 0 also reads the big file whole (threads of its own use its
 * borrowed descriptor) while the others reopen and evict. */
static void *fd_worker(void *p)
{
    fd_worker_arg *arg = p;
    st_error err;
    for (int round = 0; round < 3; round++) {
        if (arg->id == 0 && !fd_reads_right(arg->big, FD_FILES, 0, FD_BIG, &err))
            arg->wrong++;
        for (int h = arg->id; h < FD_HANDLES; h += 3) {
            size_t at = (size_t)h * 13 % FD_LEN;
            if (!fd_reads_right(arg->files[h], h % FD_FILES, at, FD_LEN - at, &err))
                arg->wrong++;
        }
    }
    return NULL;
}

/* Reads one byte through every handle from files[from] on: the oldest
 * descriptors go. */
static void fd_crowd(st_file **files, int from)
{
    st_error err;
    for (int h = from; h < FD_HANDLES; h++)
        (void)fd_reads_right(files[h], h % FD_FILES, 0, 1, &err);
}

static void test_descriptors(void)
{
    enum { THREADS = 6 };
    const size_t bound = 16; /* a sixteenth of the soft limit set below */
    struct rlimit was, low;
    st_file *files[FD_HANDLES] = {0}, *big = NULL, *target[2] = {0}, *kept = NULL;
    st_error err = {0};
    char paths[FD_FILES + 1][512], p[512], fresh[520], cwd[512];
    pthread_t threads[THREADS];
    fd_worker_arg args[THREADS];
    st_code rc;
    CHECK(getrlimit(RLIMIT_NOFILE, &was) == 0 && getcwd(cwd, sizeof cwd) != NULL, "getrlimit");
    low = was;
    low.rlim_cur = 256; /* below FD_HANDLES: a descriptor per handle would fail */
    CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0, "setrlimit");
    for (int k = 0; k <= FD_FILES; k++) {
        char name[32];
        snprintf(name, sizeof name, "fd%d.safetensors", k);
        path_in(paths[k], sizeof paths[k], name);
        write_fd_file(paths[k], k, k < FD_FILES ? FD_LEN : FD_BIG);
    }
    /* two targets, opened first, so the crowd evicts them; the mmap one by
     * a relative path, the working directory changed after */
    path_in(p, sizeof p, "target.safetensors");
    write_fd_file(p, 0, FD_LEN);
    CHECK(chdir(tmpdir) == 0 &&
              st_file_open("target.safetensors", ST_BACKEND_MMAP, &target[0], &err) == ST_OK &&
              chdir("/") == 0,
          "relative open: %s", err.msg);
    CHECK(st_file_open(p, ST_BACKEND_PREAD, &target[1], &err) == ST_OK, "%s", err.msg);
    for (int h = 0; h < FD_HANDLES; h++) {
        CHECK(st_file_open(paths[h % FD_FILES], backends[h / FD_FILES % 2], &files[h], &err) ==
                  ST_OK,
              "open %d: %s", h, err.msg);
        if (!files[h])
            goto exit;
    }
    CHECK(st_file_open(paths[FD_FILES], ST_BACKEND_PREAD, &big, &err) == ST_OK, "%s", err.msg);
    if (!big || !target[0] || !target[1])
        goto exit;
    /* the bound: the newest files hold descriptors, the oldest none */
    CHECK(st_file_descriptors() <= bound, "%zu descriptors held", st_file_descriptors());
    CHECK(!st_file_has_descriptor(files[0]) && st_file_has_descriptor(big), "LRU order");
    CHECK(!st_file_has_descriptor(target[0]) && !st_file_has_descriptor(target[1]), "evicted");
    /* reopened: every handle reads its own file, the cache stays bounded */
    for (int h = 0; h < FD_HANDLES; h++)
        CHECK(fd_reads_right(files[h], h % FD_FILES, 0, FD_LEN, &err), "read %d: %s", h, err.msg);
    CHECK(st_file_has_descriptor(files[FD_HANDLES - 1]) && !st_file_has_descriptor(files[0]),
          "reopened in turn");
    CHECK(st_file_descriptors() <= bound, "%zu descriptors held", st_file_descriptors());
    /* threads borrowing while others evict: a descriptor closed under a
     * read (its number then reused for another file) would read wrong bytes */
    for (int t = 0; t < THREADS; t++) {
        args[t] = (fd_worker_arg){.files = files, .big = big, .id = t};
        CHECK(pthread_create(&threads[t], NULL, fd_worker, &args[t]) == 0, "thread %d", t);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        CHECK(args[t].wrong == 0, "thread %d: %d wrong reads", t, args[t].wrong);
    }
    CHECK(st_file_descriptors() <= bound, "%zu held after the threads", st_file_descriptors());
    /* the relative path still finds its file from another directory */
    CHECK(fd_reads_right(target[0], 0, 0, FD_LEN, &err), "relative reopen: %s", err.msg);
    CHECK(st_file_has_descriptor(target[0]), "reopened");
    /* replaced by a file of the same size, other bytes: pread fails
     * clearly, mmap copies from its whole-file mapping, and a handle that
     * still holds its descriptor reads the old inode (as before) */
    CHECK(st_file_open(p, ST_BACKEND_PREAD, &kept, &err) == ST_OK, "%s", err.msg);
    fd_crowd(files, 0);
    CHECK(kept && !st_file_has_descriptor(target[0]) && !st_file_has_descriptor(target[1]),
          "evicted again");
    CHECK(fd_reads_right(kept, 0, 0, 1, &err) && st_file_has_descriptor(kept), "kept");
    snprintf(fresh, sizeof fresh, "%s.new", p);
    write_fd_file(fresh, 1, FD_LEN);
    CHECK(rename(fresh, p) == 0, "replace");
    rc = fd_reads_right(target[1], 0, 0, 8, &err) ? ST_OK : err.code;
    CHECK(rc == ST_ERR_IO && err.sys_errno == ESTALE &&
              strstr(err.msg, "changed after it was opened") != NULL && strstr(err.msg, p),
          "replaced, pread: %d %s", rc, err.msg);
    CHECK(fd_reads_right(target[0], 0, 0, FD_LEN, &err), "replaced, mmap: %s", err.msg);
    CHECK(fd_reads_right(kept, 0, 0, FD_LEN, &err), "replaced, kept: %s", err.msg);
    /* deleted: ENOENT, the same message */
    CHECK(unlink(p) == 0, "unlink");
    rc = fd_reads_right(target[1], 0, 0, 8, &err) ? ST_OK : err.code;
    CHECK(rc == ST_ERR_IO && err.sys_errno == ENOENT &&
              strstr(err.msg, "changed after it was opened") != NULL,
          "deleted, pread: %d %s", rc, err.msg);
    CHECK(fd_reads_right(target[0], 0, 0, FD_LEN, &err), "deleted, mmap: %s", err.msg);
    /* modified in place (the same inode, another mtime): files[FD_FILES]
     * reads file 0 on pread */
    fd_crowd(files, FD_FILES + 1);
    CHECK(!st_file_has_descriptor(files[FD_FILES]), "evicted for the touch");
    CHECK(utimensat(AT_FDCWD, paths[0], (struct timespec[2]){{.tv_nsec = UTIME_OMIT}, {12345, 0}},
                    0) == 0,
          "utimensat");
    rc = fd_reads_right(files[FD_FILES], 0, 0, 8, &err) ? ST_OK : err.code;
    CHECK(rc == ST_ERR_IO && err.sys_errno == ESTALE, "touched: %d %s", rc, err.msg);
    /* a forked child reads through inherited and reopened descriptors */
    pid_t child = fork();
    if (child == 0)
        _exit(fd_reads_right(files[FD_HANDLES - 1], (FD_HANDLES - 1) % FD_FILES, 0, FD_LEN, &err) &&
                      fd_reads_right(files[1], 1, 0, FD_LEN, &err) &&
                      fd_reads_right(files[FD_FILES + 1], 1, 0, FD_LEN, &err)
                  ? 0
                  : 1);
    int status = -1;
    CHECK(child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0,
          "forked child reads: status %d", status);
exit:
    for (int h = 0; h < FD_HANDLES; h++)
        st_file_release(files[h]);
    st_file_release(big);
    st_file_release(target[0]);
    st_file_release(target[1]);
    st_file_release(kept);
    CHECK(st_file_descriptors() == 0, "%zu left open", st_file_descriptors());
    for (int k = 0; k <= FD_FILES; k++)
        unlink(paths[k]);
    CHECK(setrlimit(RLIMIT_NOFILE, &was) == 0 && chdir(cwd) == 0, "restore");
}

/* ST_BACKEND_AUTO and its rules (st_storage.c): the f_type table, the choice on a local file,
 * the residency of a mapped file, the whole-file load rule. */
static void test_storage(void)
{
    static const struct {
        uint64_t magic;
        const char *name;
    } remote[] = {
        {0x6969, "nfs"},
        {0x517B, "smb"},
        {0xFE534D42, "smb2"},
        {0xFF534D42, "cifs"},
        {0x00C36400, "ceph"},
        {0x0BD00BD0, "lustre"},
        {0x47504653, "gpfs"},
        {0x19830326, "beegfs"},
        {0xAAD7AAEA, "panfs"},
        {0x01021997, "9p"},
        {0x5346414F, "afs"},
        {0x6B414653, "kafs"},
        {0x73757245, "coda"},
        {0x564C, "ncp"},
        {0x7461636F, "ocfs2"},
        {0x01161970, "gfs2"},
        {0x65735546, "fuse"},
        {0xFFFFFFFFFE534D42u, "smb2"}, /* a 32-bit magic sign-extended in a long f_type */
    };
    /* ext4, tmpfs, xfs, btrfs, overlayfs, zfs, squashfs, 0 */
    static const uint64_t local[] = {0xEF53,     0x01021994, 0x58465342, 0x9123683E,
                                     0x794C7630, 0x2FC12FC1, 0x73717368, 0};
    char path[512];
    st_file *file = NULL;
    st_error err;
    double fraction = -1;
    for (size_t i = 0; i < sizeof remote / sizeof remote[0]; i++) {
        const char *name = st_fs_remote_name(remote[i].magic);
        CHECK(name && strcmp(name, remote[i].name) == 0, "0x%llx: %s",
              (unsigned long long)remote[i].magic, name ? name : "NULL");
    }
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++)
        CHECK(st_fs_remote_name(local[i]) == NULL, "0x%llx is local", (unsigned long long)local[i]);

    CHECK(st_read_all_prefers_pread(0.0, 1, 100), "cold");
    CHECK(st_read_all_prefers_pread(0.4999, 50, 100), "just under half cached, half of memory");
    CHECK(!st_read_all_prefers_pread(0.5, 1, 100), "half cached");
    CHECK(!st_read_all_prefers_pread(1.0, 1, 100), "warm");
    CHECK(!st_read_all_prefers_pread(0.0, 51, 100), "over half of memory");

    path_in(path, sizeof path, "storage.st");
    free(write_u8_tensor(path, 3 * 65536 + 5));
    /* The scratch directory is local (a tmpfs or a disk). */
    CHECK(st_file_open(path, ST_BACKEND_AUTO, &file, &err) == ST_OK, "%s", err.msg);
    CHECK(st_file_backend(file) == ST_BACKEND_MMAP, "auto on a local file maps it");
    CHECK(strcmp(st_file_backend_reason(file), "local file system") == 0, "%s",
          st_file_backend_reason(file));
    /* Read through the page cache just now: every page is there. */
    uint64_t start = st_header_data_start(st_file_header(file));
    CHECK(st_file_resident(file, start, st_file_size(file) - start, &fraction, &err) == ST_OK, "%s",
          err.msg);
    CHECK(fraction == 1.0, "resident %f", fraction);
    CHECK(st_file_resident(file, st_file_size(file), 0, &fraction, &err) == ST_OK &&
              fraction == 1.0,
          "an empty range");
    CHECK(st_file_resident(file, 1, st_file_size(file), &fraction, &err) == ST_ERR_INVALID_ARGUMENT,
          "past the end");
    st_file_release(file);
    for (int b = 0; b < 2; b++) {
        CHECK(st_file_open(path, backends[b], &file, &err) == ST_OK, "%s", err.msg);
        CHECK(st_file_backend(file) == backends[b] &&
                  strcmp(st_file_backend_reason(file), "chosen by the caller") == 0,
              "%s", st_file_backend_reason(file));
        CHECK((st_file_resident(file, 0, 8, &fraction, &err) == ST_OK) == (b == 0),
              "residency needs the mapping");
        st_file_release(file);
    }
    CHECK(st_file_open(path, (st_backend)3, &file, &err) == ST_ERR_INVALID_ARGUMENT,
          "unknown backend");
    /* 4 MiB, just written: sampled windows, every one in the page cache. */
    free(write_u8_tensor(path, (size_t)4 << 20));
    CHECK(st_file_open(path, ST_BACKEND_AUTO, &file, &err) == ST_OK, "%s", err.msg);
    CHECK(st_file_resident(file, 0, st_file_size(file), &fraction, &err) == ST_OK &&
              fraction == 1.0,
          "resident %f", fraction);
    st_file_release(file);
    unlink(path);
}

int main(void)
{
    tmpdir = harness_tmpdir("test_file");
    test_open_errors();
    test_backends();
    test_bad_sizes();
    test_read_many();
    test_read_consumed();
    test_discard();
    test_descriptors();
    test_sparse_64g();
    test_storage();
    rmdir(tmpdir);
    return harness_finish("test_file");
}
