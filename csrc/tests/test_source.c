/*
 * test_source.c - st_file_open_source over an in-memory byte source: the
 * header read through read_many, tensor reads handed to the source in one
 * call, a failing source, short and invalid headers (the same errors as the
 * same bytes in a local file), and the source's release.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <fcntl.h>
#include <unistd.h>

typedef struct {
    const uint8_t *bytes;
    size_t calls, requests, released;
    size_t fail_at; /* the read_many call (1-based) that fails; 0: none */
} memory_source;

static st_code memory_read_many(void *ctx, const st_read_request *requests, size_t count,
                                st_error *err)
{
    memory_source *m = ctx;
    m->calls++;
    if (m->fail_at == m->calls)
        return st_error_set(err, ST_ERR_EXTERNAL, 0, "%s", "connection reset");
    for (size_t i = 0; i < count; i++) {
        memcpy(requests[i].dst, m->bytes + requests[i].offset, requests[i].len);
        m->requests++;
    }
    return ST_OK;
}

static void memory_release(void *ctx)
{
    ((memory_source *)ctx)->released++;
}

static st_source source_of(memory_source *m, size_t size)
{
    return (st_source){
        .ctx = m, .size = size, .read_many = memory_read_many, .release = memory_release};
}

/* 8-byte N + json padded with spaces to a multiple of 8 + data; *len set. */
static uint8_t *file_bytes(const char *json, const uint8_t *data, size_t dlen, size_t *len)
{
    size_t jl = strlen(json), n = (jl + 7) & ~(size_t)7;
    uint8_t *b = calloc(1, 8 + n + dlen);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, json, jl);
    memset(b + 8 + jl, ' ', n - jl);
    if (dlen > 0)
        memcpy(b + 8 + n, data, dlen);
    *len = 8 + n + dlen;
    return b;
}

static void test_reads(void)
{
    uint8_t data[64];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7 + 1);
    size_t len;
    uint8_t *bytes = file_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[4,8],\"data_offsets\":[0,32]},"
                                "\"b\":{\"dtype\":\"U8\",\"shape\":[32],\"data_offsets\":[32,64]}}",
                                data, sizeof data, &len);
    memory_source m = {.bytes = bytes};
    st_source source = source_of(&m, len);
    st_file *file = NULL;
    st_error err;
    CHECK(st_file_open_source(&source, &file, &err) == ST_OK, "open: %s", err.msg);
    CHECK(m.calls == 2, "prefix and header: two reads, got %zu", m.calls);
    CHECK(st_file_backend(file) == ST_BACKEND_PREAD && st_file_map(file) == NULL &&
              st_file_size(file) == len && !st_file_has_descriptor(file),
          "no mapping, no descriptor");
    const st_header *h = st_file_header(file);
    CHECK(st_header_count(h) == 2, "two tensors");
    uint64_t start = st_header_data_start(h);

    uint8_t a[32], b[32];
    st_read_request requests[2] = {{start, a, 32}, {start + 32, b, 32}};
    m.calls = 0;
    CHECK(st_file_read_many(file, requests, 2, &err) == ST_OK, "read_many: %s", err.msg);
    CHECK(m.calls == 1 && m.requests == 4, "one call with every request");
    CHECK(memcmp(a, data, 32) == 0 && memcmp(b, data + 32, 32) == 0, "bytes");
    memset(a, 0, sizeof a);
    CHECK(st_file_read(file, start + 3, a, 5, &err) == ST_OK && memcmp(a, data + 3, 5) == 0,
          "st_file_read");
    st_read_request outside = {len - 1, a, 2};
    m.calls = 0;
    CHECK(st_file_read_many(file, &outside, 1, &err) == ST_ERR_INVALID_ARGUMENT && m.calls == 0,
          "outside the file: refused before the source is asked");

    /* [:, 1::3] of a (4 x 8): strided, read through the source. */
    st_index idx[2] = {
        {.kind = ST_INDEX_SLICE},
        {.kind = ST_INDEX_SLICE, .start = 1, .has_start = true, .step = 3, .has_step = true}};
    st_selection sel;
    uint8_t got[12];
    CHECK(st_select(st_header_find(h, "a", 1), idx, 2, &sel, &err) == ST_OK, "select");
    CHECK(st_file_read_selection(file, start, &sel, 1, got, &err) == ST_OK, "selection: %s",
          err.msg);
    for (size_t r = 0, k = 0; r < 4; r++)
        for (size_t c = 1; c < 8; c += 3)
            CHECK(got[k++] == data[r * 8 + c], "selected [%zu, %zu]", r, c);

    st_private_map map;
    CHECK(st_file_map_private(file, start, 32, &map, &err) != ST_OK, "no private map");

    st_file_retain(file);
    st_file_release(file);
    CHECK(m.released == 0, "not released while held");
    st_file_release(file);
    CHECK(m.released == 1, "released at the last release");
    free(bytes);
}

static void test_failing_source(void)
{
    size_t len;
    uint8_t data[4] = {1, 2, 3, 4};
    uint8_t *bytes = file_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                                data, 4, &len);
    st_file *file = NULL;
    st_error err;
    for (size_t at = 1; at <= 2; at++) {
        memory_source m = {.bytes = bytes, .fail_at = at};
        st_source source = source_of(&m, len);
        CHECK(st_file_open_source(&source, &file, &err) == ST_ERR_EXTERNAL && file == NULL,
              "header read %zu fails", at);
        CHECK(strstr(err.msg, "connection reset") != NULL, "its message: %s", err.msg);
        CHECK(m.released == 0, "a failed open leaves the source to the caller");
    }
    memory_source m = {.bytes = bytes, .fail_at = 3};
    st_source source = source_of(&m, len);
    CHECK(st_file_open_source(&source, &file, &err) == ST_OK, "open");
    uint8_t out[4];
    CHECK(st_file_read(file, len - 4, out, 4, &err) == ST_ERR_EXTERNAL, "a tensor read fails");
    st_file_release(file);
    CHECK(m.released == 1, "released");
    free(bytes);
}

/* The same bytes through a source and in a local file: the same code and message. */
static void check_like_local(const char *dir, const uint8_t *bytes, size_t len, const char *what)
{
    char path[512];
    snprintf(path, sizeof path, "%s/f.safetensors", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0 && write(fd, bytes, len) == (ssize_t)len, "write");
    close(fd);
    st_file *file = NULL;
    st_error local, remote;
    st_code want = st_file_open(path, ST_BACKEND_PREAD, &file, &local);
    st_file_release(file);
    file = NULL;
    memory_source m = {.bytes = bytes};
    st_source source = source_of(&m, len);
    st_code got = st_file_open_source(&source, &file, &remote);
    st_file_release(file);
    CHECK(want != ST_OK && got == want && strcmp(local.msg, remote.msg) == 0 &&
              local.offset == remote.offset,
          "%s: local %d '%s', source %d '%s'", what, want, local.msg, got, remote.msg);
    unlink(path);
}

static void test_bad_headers(void)
{
    const char *dir = harness_tmpdir("test_source");
    size_t len;
    uint8_t *bytes;
    check_like_local(dir, (const uint8_t *)"\x01\x00\x00", 3, "shorter than the prefix");
    bytes = file_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                       (const uint8_t *)"xxxx", 4, &len);
    check_like_local(dir, bytes, 20, "header cut short");
    check_like_local(dir, bytes, len - 1, "data cut short");
    free(bytes);
    bytes = file_bytes("{\"a\":1,}", NULL, 0, &len);
    check_like_local(dir, bytes, len, "bad JSON");
    free(bytes);
    rmdir(dir);
}

int main(void)
{
    test_reads();
    test_failing_source();
    test_bad_headers();
    return harness_finish("test_source");
}
