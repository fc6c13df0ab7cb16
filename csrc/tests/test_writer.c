/*
 * test_writer.c - st_write_layout / st_write_to_memory / st_write_file:
 * reference files (docs/format.md §8), ordering, escaping, padding, limits,
 * validation, read-back on both backends, and failure atomicity.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define T(name, dt, nd, shp, dat, len)                                                             \
    {                                                                                              \
        (name), sizeof(name) - 1, (dt), (nd), (shp), (dat), (len)                                  \
    }

/* Fills *l with the input and lays it out. */
static st_code layout_of(st_layout *l, const st_write_tensor *ts, size_t n,
                         const st_metadata_item *md, size_t mdn, bool has_md, size_t *order,
                         st_error *err)
{
    *l = (st_layout){.tensors = ts,
                     .count = n,
                     .metadata = md,
                     .metadata_count = mdn,
                     .has_metadata = has_md,
                     .order = order};
    return st_write_layout(l, err);
}

/* Lays out + serialises to memory; returns a malloc'ed buffer. */
static uint8_t *serialize(const st_write_tensor *ts, size_t n, const st_metadata_item *md,
                          size_t mdn, bool has_md, size_t *size, st_code *rc_out, st_error *err)
{
    size_t order[64];
    st_layout l;
    st_code rc = layout_of(&l, ts, n, md, mdn, has_md, order, err);
    *rc_out = rc;
    if (rc != ST_OK)
        return NULL;
    uint8_t *out = malloc((size_t)l.total_size);
    st_write_to_memory(&l, out);
    st_free(l.header);
    *size = (size_t)l.total_size;
    return out;
}

/* Compares the file image with prefix N, header text (+ spaces) and data. */
static void check_image(const char *what, const uint8_t *img, size_t size, uint64_t n,
                        const char *json, const uint8_t *data, size_t dlen)
{
    size_t jl = strlen(json);
    CHECK(size == 8 + n + dlen, "%s: size %zu want %llu", what, size,
          (unsigned long long)(8 + n + dlen));
    if (size != 8 + n + dlen)
        return;
    uint64_t got = 0;
    for (int i = 0; i < 8; i++)
        got |= (uint64_t)img[i] << (8 * i);
    CHECK(got == n, "%s: N %llu want %llu", what, (unsigned long long)got, (unsigned long long)n);
    CHECK(memcmp(img + 8, json, jl) == 0, "%s: header '%.*s' want '%s'", what, (int)jl,
          (const char *)img + 8, json);
    for (size_t i = jl; i < n; i++)
        CHECK(img[8 + i] == ' ', "%s: padding byte %zu", what, i);
    if (dlen)
        CHECK(memcmp(img + 8 + n, data, dlen) == 0, "%s: data", what);
}

static void test_golden(void)
{
    st_error err = {0};
    st_code rc;
    size_t size;
    uint8_t *img;
    uint8_t zeros[64] = {0};
    uint64_t s22[2] = {2, 2};

    st_write_tensor a[] = {T("test", ST_I32, 2, s22, zeros, 16)};
    img = serialize(a, 1, NULL, 0, false, &size, &rc, &err);
    CHECK(rc == ST_OK, "%s", err.msg);
    check_image("test", img, size, 64,
                "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", zeros,
                16);
    free(img);

    st_metadata_item md = {"framework", 9, "pt", 2};
    st_write_tensor b[] = {T("test1", ST_I32, 2, s22, zeros, 16)};
    img = serialize(b, 1, &md, 1, true, &size, &rc, &err);
    CHECK(rc == ST_OK, "%s", err.msg);
    check_image(
        "meta", img, size, 96,
        "{\"__metadata__\":{\"framework\":\"pt\"},\"test1\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}",
        zeros, 16);
    free(img);

    uint8_t d1[16], d2[8];
    for (int i = 0; i < 16; i++)
        d1[i] = (uint8_t)i;
    for (int i = 0; i < 8; i++)
        d2[i] = (uint8_t)(0xA0 + i);
    uint8_t both[24];
    memcpy(both, d1, 16);
    memcpy(both + 16, d2, 8);
    const char *j2 =
        "{\"test1\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]},\"test2\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[16,24]}}";
    st_write_tensor c1[] = {T("test1", ST_I32, 2, s22, d1, 16), T("test2", ST_F16, 2, s22, d2, 8)};
    st_write_tensor c2[] = {T("test2", ST_F16, 2, s22, d2, 8), T("test1", ST_I32, 2, s22, d1, 16)};
    img = serialize(c1, 2, NULL, 0, false, &size, &rc, &err);
    check_image("two", img, size, 128, j2, both, 24);
    free(img);
    img = serialize(c2, 2, NULL, 0, false, &size, &rc, &err);
    check_image("two reversed", img, size, 128, j2, both, 24);
    free(img);

    float f[6] = {0, 1, 2, 3, 4, 5};
    uint64_t s123[3] = {1, 2, 3}, s1123[4] = {1, 1, 2, 3};
    const uint8_t fbytes[24] = {0, 0, 0,    0,    0, 0, 0x80, 0x3F, 0, 0, 0,    0x40,
                                0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40, 0, 0, 0xA0, 0x40};
    st_write_tensor d[] = {T("attn.0", ST_F32, 3, s123, f, 24)};
    img = serialize(d, 1, NULL, 0, false, &size, &rc, &err);
    check_image("attn.0", img, size, 64,
                "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}",
                fbytes, 24);
    free(img);
    st_write_tensor e[] = {T("attn0", ST_F32, 4, s1123, f, 24)};
    img = serialize(e, 1, NULL, 0, false, &size, &rc, &err);
    check_image("attn0", img, size, 72,
                "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}",
                fbytes, 24);
    free(img);

    uint64_t s12[2] = {1, 2};
    uint8_t one = 0x5A;
    st_write_tensor g[] = {T("attn.0", ST_F4, 2, s12, &one, 1)};
    img = serialize(g, 1, NULL, 0, false, &size, &rc, &err);
    check_image("f4", img, size, 64,
                "{\"attn.0\":{\"dtype\":\"F4\",\"shape\":[1,2],\"data_offsets\":[0,1]}}", &one, 1);
    free(img);

    img = serialize(NULL, 0, NULL, 0, false, &size, &rc, &err);
    const uint8_t empty[16] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    CHECK(rc == ST_OK && size == 16 && memcmp(img, empty, 16) == 0, "empty file");
    free(img);

    img = serialize(NULL, 0, &md, 1, true, &size, &rc, &err);
    check_image("empty+meta", img, size, 40, "{\"__metadata__\":{\"framework\":\"pt\"}}", NULL, 0);
    free(img);

    /* upstream bug fixed: zero tensors + empty metadata is valid JSON */
    st_metadata_item none[1];
    img = serialize(NULL, 0, none, 0, true, &size, &rc, &err);
    check_image("empty+{}", img, size, 24, "{\"__metadata__\":{}}", NULL, 0);
    free(img);
    /* one tensor + {} */
    img = serialize(a, 1, none, 0, true, &size, &rc, &err);
    check_image(
        "one+{}", img, size, 80,
        "{\"__metadata__\":{},\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}",
        zeros, 16);
    free(img);

    /* scalar and zero-size tensors */
    uint64_t s0[2] = {2, 0};
    st_write_tensor h[] = {T("s", ST_F64, 0, s0, zeros, 8), T("z", ST_F64, 2, s0, zeros, 0)};
    img = serialize(h, 2, NULL, 0, false, &size, &rc, &err);
    check_image(
        "scalar", img, size, 112,
        "{\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]},\"z\":{\"dtype\":\"F64\",\"shape\":[2,0],\"data_offsets\":[8,8]}}",
        zeros, 8);
    free(img);
}

static void test_order_and_escape(void)
{
    st_error err = {0};
    uint64_t s1[1] = {1};
    uint8_t buf[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    /* names in scrambled order, two dtypes */
    st_write_tensor ts[] = {
        T("b", ST_U8, 1, s1, buf, 1),    T("\xc3\xa9", ST_U8, 1, s1, buf, 1),
        T("a.9", ST_U8, 1, s1, buf, 1),  T("B", ST_U8, 1, s1, buf, 1),
        T("aa", ST_U8, 1, s1, buf, 1),   T("a", ST_U8, 1, s1, buf, 1),
        T("a.10", ST_U8, 1, s1, buf, 1), T("zz", ST_U64, 1, s1, buf, 8),
        T("", ST_BOOL, 1, s1, buf, 1),   T("m", ST_F32, 1, s1, buf, 4),
    };
    size_t order[10];
    st_layout lay;
    CHECK(layout_of(&lay, ts, 10, NULL, 0, false, order, &err) == ST_OK, "%s", err.msg);
    const char *want[] = {"zz", "m", "B", "a", "a.10", "a.9", "aa", "b", "\xc3\xa9", ""};
    for (int i = 0; i < 10; i++) {
        const st_write_tensor *t = &ts[order[i]];
        CHECK(t->name_len == strlen(want[i]) && memcmp(t->name, want[i], t->name_len) == 0,
              "order[%d] = '%.*s' want '%s'", i, (int)t->name_len, t->name, want[i]);
    }
    CHECK(lay.total_size == lay.header_size + 8 + 4 + 8 * 1, "lay.total_size %llu",
          (unsigned long long)lay.total_size);
    CHECK(memmem(lay.header, lay.header_size,
                 "\"zz\":{\"dtype\":\"U64\",\"shape\":[1],\"data_offsets\":[0,8]}", 52) != NULL,
          "zz entry");
    CHECK(memmem(lay.header, lay.header_size,
                 "\"\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[19,20]}}", 53) != NULL,
          "empty name entry");
    st_free(lay.header);

    /* serde_json escaping */
    const char nm[] = "q\"b\\n\nt\tr\rb\bf\f\x01\x1f\x7f/\xc3\xa9";
    st_write_tensor e[] = {{nm, sizeof nm - 1, ST_U8, 1, s1, buf, 1}};
    st_metadata_item md = {"k\x00z", 3, "v\"\x1b", 3};
    CHECK(layout_of(&lay, e, 1, &md, 1, true, order, &err) == ST_OK, "%s", err.msg);
    const char *wj = "{\"__metadata__\":{\"k\\u0000z\":\"v\\\"\\u001b\"},"
                     "\"q\\\"b\\\\n\\nt\\tr\\rb\\bf\\f\\u0001\\u001f\x7f/\xc3\xa9\":"
                     "{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
    CHECK(lay.header_size >= 8 + strlen(wj) && memcmp(lay.header + 8, wj, strlen(wj)) == 0,
          "escape: got '%.*s'", (int)(lay.header_size - 8), (const char *)lay.header + 8);
    CHECK((lay.header_size - 8) % 8 == 0 && lay.header_size - 8 - strlen(wj) < 8, "padding");
    st_free(lay.header);

    /* many tensors: sort + offsets */
    enum { M = 5000 };
    st_write_tensor *many = calloc(M, sizeof *many);
    char(*names)[16] = calloc(M, 16);
    size_t *ord = calloc(M, sizeof *ord);
    for (int i = 0; i < M; i++) {
        snprintf(names[i], 16, "t%05d", (i * 7919) % M);
        many[i].name = names[i];
        many[i].name_len = strlen(names[i]);
        many[i].dtype = ST_U8;
        many[i].ndim = 1;
        many[i].shape = s1;
        many[i].data = buf;
        many[i].data_len = 1;
    }
    CHECK(layout_of(&lay, many, M, NULL, 0, false, ord, &err) == ST_OK, "%s", err.msg);
    for (int i = 1; i < M; i++)
        CHECK(strcmp(many[ord[i - 1]].name, many[ord[i]].name) < 0, "sorted %d", i);
    CHECK(lay.total_size == lay.header_size + M, "lay.total_size");
    st_free(lay.header);
    free(many);
    free(names);
    free(ord);
}

static void test_validation(void)
{
    st_error err = {0};
    uint8_t buf[16] = {0};
    uint64_t s22[2] = {2, 2}, s3[1] = {3};
    uint64_t big[2] = {2, UINT64_MAX - 1};
    size_t order[2];
    st_layout lay;
    st_write_tensor a[] = {T("a", ST_I32, 2, s22, buf, 15)};
    CHECK(layout_of(&lay, a, 1, NULL, 0, false, order, &err) == ST_ERR_TENSOR_INVALID_INFO &&
              strcmp(err.msg, "invalid shape, data type, or offset for tensor") == 0,
          "mismatch: %s", err.msg);
    st_write_tensor b[] = {T("a", ST_F4, 1, s3, buf, 1)};
    CHECK(layout_of(&lay, b, 1, NULL, 0, false, order, &err) == ST_ERR_MISALIGNED_SLICE &&
              strstr(err.msg, "byte boundary") != NULL,
          "f4 odd: %s", err.msg);
    st_write_tensor c[] = {T("a", ST_U8, 2, big, buf, 0)};
    CHECK(layout_of(&lay, c, 1, NULL, 0, false, order, &err) == ST_ERR_VALIDATION_OVERFLOW,
          "overflow: %s", err.msg);

    /* header size limit: JSON of exactly 100,000,000 bytes is fine, one more is not */
    size_t vlen = 100000000 - 25;
    char *v = malloc(vlen + 1);
    memset(v, 'x', vlen + 1);
    st_metadata_item md = {"k", 1, v, vlen};
    CHECK(layout_of(&lay, NULL, 0, &md, 1, true, order, &err) == ST_OK &&
              lay.header_size == 8 + 100000000,
          "at limit: %s", err.msg);
    st_free(lay.header);
    md.value_len = vlen + 1;
    CHECK(layout_of(&lay, NULL, 0, &md, 1, true, order, &err) == ST_ERR_HEADER_TOO_LARGE &&
              strcmp(err.msg, "header too large") == 0,
          "too large: %s", err.msg);
    free(v);

    /* allocation failures are reported, not crashes */
    st_write_tensor ok[] = {T("a", ST_I32, 2, s22, buf, 16)};
    for (uint64_t n = 1; n < 6; n++) {
        st_alloc_fail_after(n);
        st_code rc = layout_of(&lay, ok, 1, NULL, 0, false, order, &err);
        st_alloc_fail_after(0);
        CHECK(rc == ST_OK || rc == ST_ERR_NOMEM, "alloc fail %llu: rc %d", (unsigned long long)n,
              rc);
        if (rc == ST_OK)
            st_free(lay.header);
    }
}

/* ---- files ---- */

static const char *tmpdir;

static int count_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' && strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    }
    closedir(d);
    return n;
}

static st_code write_file(const char *path, const st_write_tensor *ts, size_t n,
                          const st_metadata_item *md, size_t mdn, st_error *err)
{
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    st_layout l;
    st_code rc = layout_of(&l, ts, n, md, mdn, md != NULL, order, err);
    if (rc == ST_OK) {
        rc = st_write_file(path, &l, err);
        st_free(l.header);
    }
    free(order);
    return rc;
}

static void test_file_roundtrip(void)
{
    st_error err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t bv[4] = {1, 2, 3, 4};
    uint64_t s23[2] = {2, 3}, s4[1] = {4};
    st_write_tensor ts[] = {T("w", ST_F32, 2, s23, a, 24), T("b", ST_I16, 1, s4, bv, 8)};
    st_metadata_item md = {"format", 6, "pt", 2};
    mode_t old = umask(022);
    CHECK(write_file(path, ts, 2, &md, 1, &err) == ST_OK, "%s", err.msg);
    umask(old);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644, "new file mode %o",
          st.st_mode & 0777);
    CHECK(count_temp_files(tmpdir) == 0, "temp files left");

    /* same bytes as the in-memory serialisation */
    size_t flen, mlen;
    st_code rc;
    uint8_t *fb = harness_read_file(path, &flen);
    uint8_t *mb = serialize(ts, 2, &md, 1, true, &mlen, &rc, &err);
    CHECK(fb && mb && flen == mlen && memcmp(fb, mb, flen) == 0, "file == memory image");
    free(fb);
    free(mb);

    for (int be = 0; be < 2; be++) {
        st_file *f = NULL;
        rc = st_file_open(path, be ? ST_BACKEND_PREAD : ST_BACKEND_MMAP, &f, &err);
        CHECK(rc == ST_OK, "open backend %d: %s", be, err.msg);
        if (rc != ST_OK)
            continue;
        const st_header *h = st_file_header(f);
        CHECK(st_header_count(h) == 2, "count");
        CHECK(st_header_has_metadata(h) && st_header_metadata_count(h) == 1, "metadata");
        const st_tensor *t = st_header_find(h, "w", 1);
        CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[1] == 3 && t->begin == 0 &&
                  t->end == 24,
              "w");
        float got[6];
        CHECK(t && st_file_read(f, st_header_data_start(h) + t->begin, got, 24, &err) == ST_OK &&
                  memcmp(got, a, 24) == 0,
              "w data");
        t = st_header_find(h, "b", 1);
        uint16_t gb[4];
        CHECK(t && st_file_read(f, st_header_data_start(h) + t->begin, gb, 8, &err) == ST_OK &&
                  memcmp(gb, bv, 8) == 0,
              "b data");
        st_file_release(f);
    }

    /* replacing keeps the destination's mode */
    chmod(path, 0640);
    ts[0].name = "x";
    CHECK(write_file(path, ts, 2, NULL, 0, &err) == ST_OK, "%s", err.msg);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0640, "kept mode %o", st.st_mode & 0777);
    st_file *f = NULL;
    CHECK(st_file_open(path, ST_BACKEND_MMAP, &f, &err) == ST_OK &&
              st_header_find(st_file_header(f), "x", 1),
          "rewritten: %s", err.msg);
    /* writing over a file that is mapped: the mapping keeps the old bytes */
    if (f) {
        const uint8_t *map = st_file_map(f);
        ts[0].name = "y";
        CHECK(write_file(path, ts, 2, NULL, 0, &err) == ST_OK, "%s", err.msg);
        CHECK(memmem(map + 8, 60, "\"x\"", 3) != NULL, "old mapping intact");
        st_file_release(f);
        f = NULL;
    }

    /* more tensors than IOV_MAX, data checked on read-back */
    enum { M = 3000 };
    st_write_tensor *many = calloc(M, sizeof *many);
    char(*names)[16] = calloc(M, 16);
    uint32_t *vals = calloc(M, sizeof *vals);
    uint64_t s1[1] = {1};
    for (int i = 0; i < M; i++) {
        snprintf(names[i], 16, "n%05d", i);
        vals[i] = (uint32_t)i * 2654435761u;
        many[i] = (st_write_tensor){names[i], 6, ST_U32, 1, s1, &vals[i], 4};
    }
    CHECK(write_file(path, many, M, NULL, 0, &err) == ST_OK, "%s", err.msg);
    f = NULL;
    CHECK(st_file_open(path, ST_BACKEND_PREAD, &f, &err) == ST_OK, "%s", err.msg);
    if (f) {
        const st_header *h = st_file_header(f);
        CHECK(st_header_count(h) == M, "count");
        for (int i = 0; i < M; i += 7) {
            const st_tensor *t = st_header_find(h, names[i], 6);
            uint32_t v = 0;
            CHECK(t && st_file_read(f, st_header_data_start(h) + t->begin, &v, 4, &err) == ST_OK &&
                      v == vals[i],
                  "value %d", i);
        }
        st_file_release(f);
    }
    free(many);
    free(names);
    free(vals);

    /* destination is a directory: error, nothing left behind */
    char dpath[512];
    snprintf(dpath, sizeof dpath, "%s/adir", tmpdir);
    mkdir(dpath, 0755);
    CHECK(write_file(dpath, ts, 2, NULL, 0, &err) == ST_ERR_IO && err.sys_errno == EISDIR,
          "dir dest: %s", err.msg);
    CHECK(count_temp_files(tmpdir) == 0, "temp files left after dir dest");
    rmdir(dpath);

    /* missing directory */
    snprintf(dpath, sizeof dpath, "%s/nope/x.safetensors", tmpdir);
    CHECK(write_file(dpath, ts, 2, NULL, 0, &err) == ST_ERR_IO && err.sys_errno == ENOENT,
          "missing dir: %s", err.msg);
    unlink(path);
}

/* st_write_file writes in pieces of at most 8 MiB (st_writer.c, ST_WRITE_PIECE)
 * aligned in the file: tensors ending just before, on and just after piece
 * borders, one spanning several pieces, and more tensors than one writev
 * takes (IOV_MAX), each file byte-identical to st_write_to_memory's. */
static void test_file_pieces(void)
{
    enum { PIECE = 8 << 20, SMALL = 1100 };
    static const uint64_t cases[][3] = {
        {PIECE - 1, 0, 0},  {PIECE, 0, 0},      {PIECE + 1, 0, 0},     {1, PIECE - 81, 1},
        {1, PIECE - 80, 1}, {1, PIECE - 79, 1}, {2 * PIECE + 7, 3, 0}, {PIECE - 4096, 4096, 1},
    };
    st_error err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/pieces.safetensors", tmpdir);
    uint8_t *pool = malloc(2 * (size_t)PIECE + 16);
    for (size_t i = 0; i < 2 * (size_t)PIECE + 16; i++)
        pool[i] = (uint8_t)(i * 131 + (i >> 13));
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        static char names[3][4] = {"a", "b", "c"};
        uint64_t shapes[3][1];
        st_write_tensor ts[3];
        size_t n = 0, order[3], len_file = 0;
        for (size_t k = 0; k < 3 && cases[c][k] > 0; k++, n++) {
            shapes[k][0] = cases[c][k];
            ts[k] = (st_write_tensor){names[k], 1, ST_U8, 1, shapes[k], pool + k, cases[c][k]};
        }
        st_layout l;
        CHECK(layout_of(&l, ts, n, NULL, 0, false, order, &err) == ST_OK, "%s", err.msg);
        uint8_t *expect = malloc((size_t)l.total_size);
        st_write_to_memory(&l, expect);
        CHECK(st_write_file(path, &l, &err) == ST_OK, "case %zu: %s", c, err.msg);
        uint8_t *got = harness_read_file(path, &len_file);
        CHECK(got && len_file == l.total_size && memcmp(got, expect, len_file) == 0,
              "case %zu: file differs from memory", c);
        free(got);
        free(expect);
        st_free(l.header);
    }
    /* more segments than IOV_MAX before a piece border, then a large tensor */
    st_write_tensor *many = calloc(SMALL + 1, sizeof *many);
    char(*names)[16] = calloc(SMALL + 1, 16);
    uint64_t one[1] = {1}, big[1] = {PIECE + 3};
    for (int i = 0; i < SMALL; i++) {
        snprintf(names[i], 16, "s%05d", i);
        many[i] = (st_write_tensor){names[i], 6, ST_U8, 1, one, pool + i, 1};
    }
    many[SMALL] = (st_write_tensor){"z", 1, ST_U8, 1, big, pool + 5, PIECE + 3};
    size_t *order = calloc(SMALL + 1, sizeof *order), len_file = 0;
    st_layout l;
    CHECK(layout_of(&l, many, SMALL + 1, NULL, 0, false, order, &err) == ST_OK, "%s", err.msg);
    uint8_t *expect = malloc((size_t)l.total_size);
    st_write_to_memory(&l, expect);
    CHECK(st_write_file(path, &l, &err) == ST_OK, "many: %s", err.msg);
    uint8_t *got = harness_read_file(path, &len_file);
    CHECK(got && len_file == l.total_size && memcmp(got, expect, len_file) == 0,
          "many small + large: file differs from memory");
    free(got);
    free(expect);
    st_free(l.header);
    free(order);
    free(names);
    free(many);
    free(pool);
    unlink(path);
}

static void test_file_failures(void)
{
    st_error err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/keep.safetensors", tmpdir);
    uint64_t s1[1] = {1};
    uint8_t v = 7;
    st_write_tensor small[] = {T("a", ST_U8, 1, s1, &v, 1)};
    CHECK(write_file(path, small, 1, NULL, 0, &err) == ST_OK, "%s", err.msg);
    size_t before_len;
    uint8_t *before = harness_read_file(path, &before_len);

    /* EFBIG from a file-size limit */
    enum { BIG = 1 << 20 };
    uint8_t *big = calloc(BIG, 1);
    uint64_t sb[1] = {BIG};
    st_write_tensor large[] = {T("a", ST_U8, 1, sb, big, BIG)};
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 65536;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit");
    st_code rc = write_file(path, large, 1, NULL, 0, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    CHECK(rc == ST_ERR_IO && err.sys_errno == EFBIG, "EFBIG: rc %d %s", rc, err.msg);
    size_t after_len;
    uint8_t *after = harness_read_file(path, &after_len);
    CHECK(after_len == before_len && memcmp(before, after, before_len) == 0,
          "destination unchanged");
    CHECK(count_temp_files(tmpdir) == 0, "temp files left after EFBIG");
    free(after);
    free(big);

    /* read-only directory (root ignores permissions: skip) */
    if (geteuid() != 0) {
        char ro[512], dst[600];
        snprintf(ro, sizeof ro, "%s/ro", tmpdir);
        mkdir(ro, 0755);
        snprintf(dst, sizeof dst, "%s/x.safetensors", ro);
        chmod(ro, 0555);
        rc = write_file(dst, small, 1, NULL, 0, &err);
        CHECK(rc == ST_ERR_IO && err.sys_errno == EACCES, "read-only dir: %s", err.msg);
        chmod(ro, 0755);
        CHECK(count_temp_files(ro) == 0, "temp in ro");
        rmdir(ro);
    } else {
        printf("test_writer: running as root, read-only directory check skipped\n");
    }
    free(before);
    unlink(path);
}

int main(void)
{
    tmpdir = harness_tmpdir("test_writer");
    test_golden();
    test_order_and_escape();
    test_validation();
    test_file_roundtrip();
    test_file_pieces();
    test_file_failures();
    rmdir(tmpdir);
    return harness_finish("test_writer");
}
