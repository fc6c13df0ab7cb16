/*
 * test_stream.c - the streaming writer (st_stream_*): byte-identical to the
 * one-shot writer, any order, many threads, and every failure leaves the
 * destination untouched with no temporary file behind.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *dir;

static size_t entries_in_dir(void)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* The one-shot writer's file for the same tensors, for comparison. */
static void write_one_shot(const char *path, const st_write_tensor *tensors, size_t count,
                           const st_metadata_item *metadata, size_t metadata_count,
                           bool has_metadata, uint64_t *total)
{
    size_t order[64];
    st_error err;
    st_layout layout = {.tensors = tensors,
                        .count = count,
                        .metadata = metadata,
                        .metadata_count = metadata_count,
                        .has_metadata = has_metadata,
                        .order = order};
    CHECK(st_write_layout(&layout, &err) == ST_OK, "%s", err.msg);
    CHECK(st_write_file(path, &layout, &err) == ST_OK, "%s", err.msg);
    *total = layout.total_size;
    st_free(layout.header);
}

/* Three tensors of different dtypes (so file order != declaration order). */
static const uint64_t shape_a[2] = {2, 3}, shape_b[1] = {4}, shape_c[1] = {0};
static float data_a[6] = {1, 2, 3, 4, 5, 6};
static uint8_t data_b[4] = {9, 8, 7, 6};
static st_write_tensor tensors[3] = {
    {"b", 1, ST_U8, 1, shape_b, data_b, 4},
    {"a", 1, ST_F32, 2, shape_a, data_a, 24},
    {"empty", 5, ST_I64, 1, shape_c, NULL, 0},
};
static const st_metadata_item metadata[1] = {{"format", 6, "pt", 2}};

static void test_identical_to_write_file(void)
{
    st_error err = {0};
    char one_shot[300], streamed[300];
    snprintf(one_shot, sizeof one_shot, "%s/one_shot.safetensors", dir);
    snprintf(streamed, sizeof streamed, "%s/streamed.safetensors", dir);

    uint64_t total;
    write_one_shot(one_shot, tensors, 3, metadata, 1, true, &total);

    st_stream *s;
    CHECK(st_stream_open(streamed, tensors, 3, metadata, 1, true, &s, &err) == ST_OK, "%s",
          err.msg);
    size_t index;
    CHECK(st_stream_find(s, "a", 1, &index) && index == 1, "find a");
    CHECK(!st_stream_find(s, "z", 1, &index), "find z");
    /* before commit the destination does not exist */
    CHECK(access(streamed, F_OK) != 0, "destination exists before commit");
    CHECK(st_stream_write(s, 2, NULL, 0, &err) == ST_OK, "%s", err.msg);
    CHECK(st_stream_write(s, 1, data_a, 24, &err) == ST_OK, "%s", err.msg);
    CHECK(st_stream_write(s, 1, data_a, 24, &err) == ST_ERR_INVALID_ARGUMENT &&
              strstr(err.msg, "`a` was already written"),
          "twice: %s", err.msg);
    CHECK(st_stream_write(s, 0, data_b, 3, &err) == ST_ERR_INVALID_ARGUMENT &&
              strstr(err.msg, "4 bytes, but 3 bytes"),
          "size: %s", err.msg);
    CHECK(st_stream_write(s, 7, data_b, 4, &err) == ST_ERR_INVALID_ARGUMENT, "index");
    CHECK(st_stream_write(s, 0, data_b, 4, &err) == ST_OK, "%s", err.msg);
    CHECK(st_stream_commit(s, &err) == ST_OK, "%s", err.msg);
    CHECK(st_stream_write(s, 0, data_b, 4, &err) == ST_ERR_INVALID_ARGUMENT &&
              strstr(err.msg, "closed"),
          "after commit: %s", err.msg);
    st_stream_free(s);

    size_t n1 = 0, n2 = 0;
    uint8_t *b1 = harness_read_file(one_shot, &n1), *b2 = harness_read_file(streamed, &n2);
    CHECK(b1 && b2 && n1 == n2 && n1 > 0 && memcmp(b1, b2, n1) == 0, "files differ (%zu vs %zu)",
          n1, n2);
    free(b1);
    free(b2);
    st_file *f;
    CHECK(st_file_open(streamed, ST_BACKEND_PREAD, &f, &err) == ST_OK, "%s", err.msg);
    if (f)
        st_file_release(f);
    unlink(one_shot);
    unlink(streamed);
    CHECK(entries_in_dir() == 0, "left-over files");
}

static void test_failures_leave_nothing(void)
{
    st_error err = {0};
    char path[300];
    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    st_stream *s;

    /* a missing tensor: commit fails, nothing at the destination */
    CHECK(st_stream_open(path, tensors, 3, NULL, 0, false, &s, &err) == ST_OK, "%s", err.msg);
    st_stream_write(s, 0, data_b, 4, &err);
    CHECK(st_stream_commit(s, &err) == ST_ERR_INVALID_ARGUMENT &&
              strstr(err.msg, "tensor `a` was never written (2 of 3"),
          "missing: %s", err.msg);
    st_stream_free(s);
    CHECK(entries_in_dir() == 0, "missing tensor left files");

    /* freed without commit (an abandoned writer) */
    CHECK(st_stream_open(path, tensors, 3, NULL, 0, false, &s, &err) == ST_OK, "%s", err.msg);
    CHECK(entries_in_dir() == 1, "temporary file expected");
    st_stream_free(s);
    CHECK(entries_in_dir() == 0, "abandoned stream left files");

    /* abort keeps an older file at the destination as it was */
    FILE *old = fopen(path, "wb");
    fputs("old", old);
    fclose(old);
    CHECK(st_stream_open(path, tensors, 3, NULL, 0, false, &s, &err) == ST_OK, "%s", err.msg);
    st_stream_abort(s);
    CHECK(st_stream_commit(s, &err) == ST_ERR_INVALID_ARGUMENT, "commit after abort");
    st_stream_free(s);
    size_t n = 0;
    uint8_t *b = harness_read_file(path, &n);
    CHECK(n == 3 && memcmp(b, "old", 3) == 0, "destination changed");
    free(b);
    unlink(path);

    /* declaration errors: a name twice, a bad dtype, a directory that is not there */
    st_write_tensor twice[2] = {tensors[0], tensors[0]};
    CHECK(st_stream_open(path, twice, 2, NULL, 0, false, &s, &err) == ST_ERR_INVALID_ARGUMENT &&
              strstr(err.msg, "`b` is declared twice") && s == NULL,
          "twice: %s", err.msg);
    st_write_tensor bad = tensors[0];
    bad.dtype = (st_dtype)99;
    CHECK(st_stream_open(path, &bad, 1, NULL, 0, false, &s, &err) == ST_ERR_INVALID_ARGUMENT,
          "dtype: %s", err.msg);
    char nodir[300];
    snprintf(nodir, sizeof nodir, "%s/no/such.safetensors", dir);
    CHECK(st_stream_open(nodir, tensors, 3, NULL, 0, false, &s, &err) == ST_ERR_IO, "nodir");
    CHECK(entries_in_dir() == 0, "declaration errors left files");

    /* every allocation failing in turn: an error, never a leak or a file */
    for (uint64_t k = 1; k < 20; k++) {
        st_alloc_fail_after(k);
        st_code rc = st_stream_open(path, tensors, 3, metadata, 1, true, &s, &err);
        st_alloc_fail_after(0);
        if (rc == ST_OK)
            st_stream_free(s);
        else
            CHECK(rc == ST_ERR_NOMEM && s == NULL, "alloc %llu: %s", (unsigned long long)k,
                  err.msg);
    }
    CHECK(entries_in_dir() == 0, "allocation failures left files");
}

/* Many threads, each writing every k-th tensor. */
#define THREADS 4
#define MANY    64
static st_stream *shared_stream;
static uint32_t payload[MANY][256];

static void *writer_thread(void *arg)
{
    size_t first = (size_t)(uintptr_t)arg;
    for (size_t i = first; i < MANY; i += THREADS) {
        st_error err;
        if (st_stream_write(shared_stream, i, payload[i], sizeof payload[i], &err) != ST_OK)
            return (void *)1;
    }
    return NULL;
}

static void test_threads(void)
{
    static char names[MANY][16];
    static const uint64_t shape[1] = {256};
    st_write_tensor decl[MANY];
    for (size_t i = 0; i < MANY; i++) {
        int len = snprintf(names[i], sizeof names[i], "t.%zu", i);
        for (size_t k = 0; k < 256; k++)
            payload[i][k] = (uint32_t)(i * 1000 + k);
        decl[i] = (st_write_tensor){names[i], (size_t)len, ST_U32,           1,
                                    shape,    payload[i],  sizeof payload[i]};
    }
    st_error err;
    char one_shot[300], streamed[300];
    snprintf(one_shot, sizeof one_shot, "%s/one_shot.safetensors", dir);
    snprintf(streamed, sizeof streamed, "%s/streamed.safetensors", dir);
    uint64_t total;
    write_one_shot(one_shot, decl, MANY, NULL, 0, false, &total);

    CHECK(st_stream_open(streamed, decl, MANY, NULL, 0, false, &shared_stream, &err) == ST_OK, "%s",
          err.msg);
    pthread_t threads[THREADS];
    for (size_t t = 0; t < THREADS; t++)
        pthread_create(&threads[t], NULL, writer_thread, (void *)(uintptr_t)t);
    for (size_t t = 0; t < THREADS; t++) {
        void *result;
        pthread_join(threads[t], &result);
        CHECK(result == NULL, "thread %zu failed", t);
    }
    CHECK(st_stream_commit(shared_stream, &err) == ST_OK, "%s", err.msg);
    st_stream_free(shared_stream);
    size_t n1 = 0, n2 = 0;
    uint8_t *b1 = harness_read_file(one_shot, &n1), *b2 = harness_read_file(streamed, &n2);
    CHECK(n1 == n2 && n1 == total && memcmp(b1, b2, n1) == 0, "threaded file differs");
    free(b1);
    free(b2);
    unlink(one_shot);
    unlink(streamed);
}

/* Aligned layouts (the core's padding rule), and the pieces of the digests: file order, reading
 * back, and the header rewritten in place only at its own length. */
#define LONG_VALUE "a value longer than the 64 bytes of padding there may be, by a good margin"

static void test_alignment_and_rewrite(void)
{
    st_error err = {0};
    char path[300];
    size_t order[3];
    snprintf(path, sizeof path, "%s/aligned.safetensors", dir);
    for (uint64_t alignment = 8; alignment <= ST_MAX_ALIGNMENT; alignment *= 2) {
        st_layout layout = {.tensors = tensors, .count = 3, .order = order};
        CHECK(st_write_layout_aligned(&layout, alignment, &err) == ST_OK, "%s", err.msg);
        CHECK(layout.header_size % alignment == 0 && layout.header_size - alignment < 8 + 200,
              "alignment %llu: header %zu", (unsigned long long)alignment, layout.header_size);
        size_t end = layout.header_size;
        while (end > 8 && layout.header[end - 1] == ' ')
            end--;
        CHECK(layout.header[end - 1] == '}' && layout.header_size - end < alignment,
              "padding of %zu spaces", layout.header_size - end);
        st_free(layout.header);
    }
    uint64_t bad[] = {1, 4, 12, 8192, 1ull << 40};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        st_layout layout = {.tensors = tensors, .count = 3, .order = order};
        CHECK(st_write_layout_aligned(&layout, bad[i], &err) == ST_ERR_INVALID_ARGUMENT &&
                  strstr(err.msg, "power of two from 8 to 4096") && layout.header == NULL,
              "bad alignment %llu accepted", (unsigned long long)bad[i]);
        CHECK(st_check_alignment(bad[i], &err) == ST_ERR_INVALID_ARGUMENT, "check");
    }
    CHECK(st_check_alignment(0, &err) == ST_OK && st_check_alignment(4096, &err) == ST_OK, "good");

    st_stream *s;
    const st_metadata_item one[1] = {{"k", 1, "0000", 4}}, same[1] = {{"k", 1, "abcd", 4}},
                           longer[1] = {{"k", 1, LONG_VALUE, sizeof LONG_VALUE - 1}};
    CHECK(st_stream_open_aligned(path, tensors, 3, one, 1, true, 64, &s, &err) == ST_OK, "%s",
          err.msg);
    size_t index;
    uint64_t offset, len;
    st_stream_tensor(s, 1, &index, &offset, &len); /* I64, F32, U8: dtype descending */
    CHECK(index == 1 && offset % 64 == 0 && len == 24, "first: %zu %llu", index,
          (unsigned long long)offset);
    CHECK(st_stream_write(s, 1, data_a, 24, &err) == ST_OK, "%s", err.msg);
    float back[6];
    CHECK(st_stream_read(s, offset, back, sizeof back, &err) == ST_OK &&
              memcmp(back, data_a, sizeof back) == 0,
          "read back: %s", err.msg);
    CHECK(st_stream_read(s, offset + 1000, back, 4, &err) == ST_ERR_INVALID_ARGUMENT, "past end");
    CHECK(st_stream_rewrite_metadata(s, longer, 1, true, &err) == ST_ERR_INVALID_ARGUMENT &&
              strstr(err.msg, "cannot be rewritten in place"),
          "longer: %s", err.msg);
    CHECK(st_stream_rewrite_metadata(s, same, 1, true, &err) == ST_OK, "%s", err.msg);
    CHECK(st_stream_write(s, 0, data_b, 4, &err) == ST_OK &&
              st_stream_write(s, 2, NULL, 0, &err) == ST_OK,
          "%s", err.msg);
    CHECK(st_stream_commit(s, &err) == ST_OK, "%s", err.msg);
    CHECK(st_stream_read(s, offset, back, 4, &err) == ST_ERR_INVALID_ARGUMENT, "after commit");
    st_stream_free(s);

    char expected_path[300];
    snprintf(expected_path, sizeof expected_path, "%s/expected.safetensors", dir);
    st_layout layout = {.tensors = tensors,
                        .count = 3,
                        .metadata = same,
                        .metadata_count = 1,
                        .has_metadata = true,
                        .order = order};
    CHECK(st_write_layout_aligned(&layout, 64, &err) == ST_OK, "%s", err.msg);
    CHECK(st_write_file(expected_path, &layout, &err) == ST_OK, "%s", err.msg);
    st_free(layout.header);
    size_t n1 = 0, n2 = 0;
    uint8_t *b1 = harness_read_file(expected_path, &n1), *b2 = harness_read_file(path, &n2);
    CHECK(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0, "rewritten file differs");
    free(b1);
    free(b2);
    unlink(path);
    unlink(expected_path);
    CHECK(entries_in_dir() == 0, "left-over files");
}

int main(void)
{
    dir = harness_tmpdir("test_stream");
    CHECK(st_api_version() == ST_API_VERSION, "api version");
    test_identical_to_write_file();
    test_failures_leave_nothing();
    test_threads();
    test_alignment_and_rewrite();
    rmdir(dir);
    return harness_finish("test_stream");
}
