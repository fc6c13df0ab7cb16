/*
 * test_read_selection.c - st_file_read_selection against st_selection_gather
 * over the same bytes in memory, on the pread backend, for selections that
 * take each of its three paths: long runs read in place, sparse elements read
 * one by one, and short runs gathered from one read of their span.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <unistd.h>

static st_index random_slice(uint64_t n)
{
    st_index ix = {0};
    ix.kind = ST_INDEX_SLICE;
    ix.has_start = rnd() % 2;
    ix.has_stop = rnd() % 2;
    ix.has_step = rnd() % 2;
    ix.start = (int64_t)(rnd() % (n + 2)) - 1;
    ix.stop = (int64_t)(rnd() % (n + 2));
    int64_t steps[] = {1, 1, 1, -1, 2, 3, -7, 300};
    ix.step = ix.has_step ? steps[rnd() % 8] : 1;
    return ix;
}

int main(void)
{
    const uint64_t shape[3] = {6, 5, 70000}; /* last dim: 70,000-byte runs */
    const uint64_t nbytes = shape[0] * shape[1] * shape[2];
    uint8_t *data = malloc(nbytes), *got = malloc(nbytes), *want = malloc(nbytes);
    const char *tmp = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/st_read_selection_XXXXXX", tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    st_error err;
    if (data == NULL || got == NULL || want == NULL || fd < 0)
        return 2;
    close(fd);
    for (uint64_t i = 0; i < nbytes; i++)
        data[i] = (uint8_t)rnd();

    st_write_tensor w = {"t", 1, ST_U8, 3, shape, data, nbytes};
    size_t order[1];
    st_layout layout = {.tensors = &w, .count = 1, .order = order};
    CHECK(st_write_layout(&layout, &err) == ST_OK, "layout: %s", err.msg);
    CHECK(st_write_file(path, &layout, &err) == ST_OK, "write: %s", err.msg);
    st_free(layout.header);

    st_file *file = NULL;
    CHECK(st_file_open(path, ST_BACKEND_PREAD, &file, &err) == ST_OK, "open: %s", err.msg);
    if (file == NULL)
        return 1;
    const st_tensor *t = st_header_tensor(st_file_header(file), 0);
    uint64_t start = st_header_data_start(st_file_header(file)) + t->begin;

    int cases = 0;
    for (int iter = 0; iter < 3000; iter++) {
        st_index ix[3];
        size_t count = (size_t)(rnd() % 4);
        for (size_t k = 0; k < count; k++) {
            ix[k] = random_slice(shape[k]);
            if (rnd() % 5 == 0) {
                ix[k].kind = ST_INDEX_INT;
                ix[k].value = (int64_t)(rnd() % shape[k]);
            }
        }
        st_selection sel;
        if (st_select(t, ix, count, &sel, &err) != ST_OK)
            continue;
        cases++;
        memset(got, 0xA5, nbytes);
        memset(want, 0x5A, nbytes);
        st_selection_gather(&sel, 1, data, want);
        CHECK(st_file_read_selection(file, start, &sel, 1, got, &err) == ST_OK, "read: %s",
              err.msg);
        CHECK(memcmp(got, want, (size_t)sel.nelements) == 0, "iter %d: bytes differ", iter);
    }
    st_file_release(file);
    unlink(path);
    free(data);
    free(got);
    free(want);
    printf("test_read_selection: %d selections read\n", cases);
    return harness_finish("test_read_selection");
}
