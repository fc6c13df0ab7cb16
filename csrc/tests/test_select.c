/*
 * test_select.c - st_select / st_selection_gather against a brute-force
 * reference of NumPy basic indexing, plus error cases and the sub-byte rules.
 */
#define _GNU_SOURCE
#include "harness.h"

static void random_index(st_index *ix, const uint64_t *shape, size_t ndim, int d)
{
    memset(ix, 0, sizeof *ix);
    int64_t n = d < (int)ndim ? (int64_t)shape[d] : 3;
    int r = (int)rnd_range(0, 99);
    if (r < 30) {
        ix->kind = ST_INDEX_INT;
        ix->value = rnd_range(-n - 2, n + 1);
    } else if (r < 85) {
        ix->kind = ST_INDEX_SLICE;
        if ((ix->has_start = rnd() % 3 != 0))
            ix->start = rnd_range(-n - 3, n + 3);
        if ((ix->has_stop = rnd() % 3 != 0))
            ix->stop = rnd_range(-n - 3, n + 3);
        if ((ix->has_step = rnd() % 2 != 0)) {
            ix->step = rnd_range(-4, 4);
            if (ix->step == 0 && rnd() % 4 != 0)
                ix->step = 1;
        }
        if (rnd() % 40 == 0) {
            ix->has_start = true;
            ix->start = (rnd() & 1) ? INT64_MAX : INT64_MIN;
        }
        if (rnd() % 40 == 0) {
            ix->has_stop = true;
            ix->stop = (rnd() & 1) ? INT64_MAX : INT64_MIN;
        }
        if (rnd() % 60 == 0) {
            ix->has_step = true;
            ix->step = (rnd() & 1) ? INT64_MAX : INT64_MIN;
        }
    } else if (r < 92) {
        ix->kind = ST_INDEX_ELLIPSIS;
    } else {
        ix->kind = ST_INDEX_NEWAXIS;
    }
}

static void test_random(void)
{
    int ok_cases = 0, err_cases = 0;
    static const st_dtype dtypes[] = {ST_U8, ST_I16, ST_F32, ST_F64};
    for (int iter = 0; iter < 200000; iter++) {
        size_t ndim = (size_t)rnd_range(0, 4);
        uint64_t shape[4], total = 1;
        for (size_t k = 0; k < ndim; k++) {
            shape[k] = (uint64_t)rnd_range(0, 6);
            total *= shape[k];
        }
        st_dtype dtype = dtypes[rnd_range(0, 3)];
        size_t isz = st_dtype_bits(dtype) / 8;
        st_tensor t = {"t", 1, dtype, ndim, shape, 0, total * isz};
        st_index ix[8];
        size_t count = (size_t)rnd_range(0, (int64_t)ndim + 2);
        int ell = 0;
        for (size_t i = 0; i < count; i++) {
            random_index(&ix[i], shape, ndim, (int)i);
            if (ix[i].kind == ST_INDEX_ELLIPSIS && ell++ && rnd() % 4 != 0)
                ix[i].kind = ST_INDEX_NEWAXIS;
        }
        ref_sel ref;
        int want = ref_select(&t, ix, count, &ref);
        st_selection sel;
        st_error err = {0};
        st_code rc = st_select(&t, ix, count, &sel, &err);
        CHECK((rc == ST_OK) == (want == REF_OK) && (rc == ST_OK || rc == ST_ERR_INVALID_SLICE),
              "iter %d: rc %d, model %d (%s)", iter, rc, want, err.msg);
        if (rc != ST_OK || want != REF_OK) {
            err_cases++;
            continue;
        }
        ok_cases++;
        uint64_t nel = ref_nelements(&ref);
        CHECK(sel.ndim == ref.ndim, "iter %d ndim %zu vs %zu", iter, sel.ndim, ref.ndim);
        for (size_t k = 0; k < ref.ndim; k++)
            CHECK(sel.shape[k] == ref.shape[k], "iter %d dim %zu: %llu vs %llu", iter, k,
                  (unsigned long long)sel.shape[k], (unsigned long long)ref.shape[k]);
        CHECK(sel.nelements == nel, "iter %d nelements", iter);
        /* source: element i holds value i in its first bytes */
        uint8_t src[1300 * 8], dst[1300 * 8], want_dst[1300 * 8];
        for (uint64_t i = 0; i < total; i++) {
            uint16_t v = (uint16_t)i;
            memset(src + i * isz, 0, isz);
            memcpy(src + i * isz, &v, isz < 2 ? 1 : 2);
        }
        memset(dst, 0xEE, sizeof dst);
        st_selection_gather(&sel, isz, src, dst);
        CHECK(dst[nel * isz] == 0xEE, "iter %d gather overran", iter);
        if (nel == 0) {
            CHECK(sel.span_len == 0, "iter %d empty span", iter);
            continue;
        }
        i128 lo, hi;
        ref_gather(&ref, isz, src, want_dst, &lo, &hi);
        CHECK(memcmp(dst, want_dst, nel * isz) == 0, "iter %d gathered data differs", iter);
        CHECK(sel.span_offset == (uint64_t)lo * isz &&
                  sel.span_len == (uint64_t)(hi - lo + 1) * isz,
              "iter %d span %llu+%llu vs %lld+%lld", iter, (unsigned long long)sel.span_offset,
              (unsigned long long)sel.span_len, (long long)lo * (long long)isz,
              (long long)(hi - lo + 1) * (long long)isz);
        CHECK(sel.span_offset + sel.span_len <= total * isz, "iter %d span out of tensor", iter);
    }
    CHECK(ok_cases > 50000 && err_cases > 10000, "coverage ok=%d err=%d", ok_cases, err_cases);
    printf("random: %d ok, %d errors\n", ok_cases, err_cases);
}

static st_index I(int64_t v)
{
    st_index x = {0};
    x.kind = ST_INDEX_INT;
    x.value = v;
    return x;
}
static st_index S(int hs, int64_t s, int he, int64_t e, int hst, int64_t st)
{
    st_index x = {0};
    x.kind = ST_INDEX_SLICE;
    x.has_start = hs;
    x.start = s;
    x.has_stop = he;
    x.stop = e;
    x.has_step = hst;
    x.step = st;
    return x;
}
static st_index E(void)
{
    st_index x = {0};
    x.kind = ST_INDEX_ELLIPSIS;
    return x;
}
static st_index N(void)
{
    st_index x = {0};
    x.kind = ST_INDEX_NEWAXIS;
    return x;
}

static void expect_err(const st_tensor *t, const st_index *ix, size_t n, st_code code,
                       const char *msg)
{
    st_selection sel;
    st_error err = {0};
    st_code rc = st_select(t, ix, n, &sel, &err);
    CHECK(rc == code, "rc %d want %d (%s)", rc, code, err.msg);
    CHECK(strcmp(err.msg, msg) == 0, "msg '%s' want '%s'", err.msg, msg);
}

static void test_errors(void)
{
    uint64_t shape[2] = {10, 5};
    st_tensor t = {"t", 1, ST_F32, 2, shape, 0, 200};
    st_index a[3];
    a[0] = I(10);
    expect_err(&t, a, 1, ST_ERR_INVALID_SLICE, "Invalid index 10 for dimension 0 of size 10");
    a[0] = I(-11);
    expect_err(&t, a, 1, ST_ERR_INVALID_SLICE, "Invalid index -11 for dimension 0 of size 10");
    a[0] = E();
    a[1] = I(5);
    expect_err(&t, a, 2, ST_ERR_INVALID_SLICE, "Invalid index 5 for dimension 1 of size 5");
    a[0] = I(0);
    a[1] = I(0);
    a[2] = I(0);
    expect_err(&t, a, 3, ST_ERR_INVALID_SLICE,
               "too many indices for tensor: tensor is 2-dimensional, but 3 were indexed");
    a[0] = S(0, 0, 0, 0, 1, 0);
    expect_err(&t, a, 1, ST_ERR_INVALID_SLICE, "slice step cannot be zero");
    a[0] = E();
    a[1] = E();
    expect_err(&t, a, 2, ST_ERR_INVALID_SLICE, "an index can only have a single ellipsis ('...')");

    /* too many output dims */
    st_index many[ST_MAX_DIMS + 1];
    for (int i = 0; i < ST_MAX_DIMS + 1; i++)
        many[i] = N();
    st_selection sel;
    st_error err = {0};
    CHECK(st_select(&t, many, ST_MAX_DIMS - 2, &sel, &err) == ST_OK, "%s", err.msg);
    CHECK(sel.ndim == ST_MAX_DIMS, "ndim %zu", sel.ndim);
    CHECK(st_select(&t, many, ST_MAX_DIMS - 1, &sel, &err) == ST_ERR_INVALID_SLICE, "%s", err.msg);

    /* scalar: () and ... and newaxis */
    uint64_t none[1];
    st_tensor sc = {"s", 1, ST_F64, 0, none, 0, 8};
    CHECK(st_select(&sc, NULL, 0, &sel, &err) == ST_OK && sel.ndim == 0 && sel.nelements == 1 &&
              sel.span_len == 8,
          "scalar");
    a[0] = N();
    a[1] = E();
    CHECK(st_select(&sc, a, 2, &sel, &err) == ST_OK && sel.ndim == 1 && sel.shape[0] == 1 &&
              sel.strides[0] == 0,
          "scalar newaxis");
    a[0] = I(0);
    CHECK(st_select(&sc, a, 1, &sel, &err) == ST_ERR_INVALID_SLICE, "scalar int");

    /* strides and offsets for a known case: [::-2, 1] of [10,5] f32 */
    a[0] = S(0, 0, 0, 0, 1, -2);
    a[1] = I(1);
    CHECK(st_select(&t, a, 2, &sel, &err) == ST_OK, "%s", err.msg);
    CHECK(sel.ndim == 1 && sel.shape[0] == 5 && sel.strides[0] == -40 && sel.offset == 9 * 20 + 4,
          "neg stride: shape %llu stride %lld off %lld", (unsigned long long)sel.shape[0],
          (long long)sel.strides[0], (long long)sel.offset);
    CHECK(sel.span_offset == 1 * 20 + 4 && sel.span_len == 8 * 20 + 4, "neg span");

    /* empty tensor with dims whose strides would overflow */
    uint64_t big[3] = {0, (uint64_t)1 << 40, (uint64_t)1 << 40};
    st_tensor e = {"e", 1, ST_F64, 3, big, 0, 0};
    a[0] = E();
    a[1] = I(5);
    CHECK(st_select(&e, a, 2, &sel, &err) == ST_OK && sel.nelements == 0 && sel.span_len == 0 &&
              sel.offset == 0,
          "empty big: %s", err.msg);
}

static void test_subbyte(void)
{
    const char *mis = UPSTREAM_MISALIGNED;
    uint64_t shape[2] = {4, 6}; /* 24 F4 elements, 12 bytes; row = 3 bytes */
    st_tensor t = {"f4", 2, ST_F4, 2, shape, 0, 12};
    uint8_t src[12];
    for (int i = 0; i < 12; i++)
        src[i] = (uint8_t)(0x10 + i);
    st_index a[3];
    st_selection sel, bs;
    st_error err = {0};

    a[0] = S(0, 0, 0, 0, 0, 0);
    a[1] = S(1, 2, 1, 6, 0, 0); /* [:, 2:6] */
    CHECK(st_select(&t, a, 2, &sel, &err) == ST_OK, "%s", err.msg);
    CHECK(sel.ndim == 2 && sel.shape[0] == 4 && sel.shape[1] == 4 && sel.strides[0] == 3 &&
              sel.strides[1] == 1 && sel.offset == 1 && sel.span_offset == 1 && sel.span_len == 11,
          "f4 [:,2:6] off %lld span %llu+%llu", (long long)sel.offset,
          (unsigned long long)sel.span_offset, (unsigned long long)sel.span_len);
    CHECK(st_selection_bytes(&sel, 4, &bs, &err) == ST_OK && bs.shape[1] == 2 && bs.nelements == 8,
          "bytes");
    uint8_t out[12];
    st_selection_gather(&bs, 1, src, out);
    const uint8_t want[8] = {0x11, 0x12, 0x14, 0x15, 0x17, 0x18, 0x1a, 0x1b};
    CHECK(memcmp(out, want, 8) == 0, "f4 gather");

    a[0] = I(1); /* a whole row: bytes 3..6 */
    CHECK(st_select(&t, a, 1, &sel, &err) == ST_OK && sel.offset == 3 && sel.span_len == 3,
          "f4 row: %s", err.msg);
    a[0] = I(-1);
    a[1] = N(); /* trailing newaxis after the run */
    a[0] = S(0, 0, 0, 0, 1, -1);
    a[1] = E();
    a[2] = N();
    CHECK(st_select(&t, a, 3, &sel, &err) == ST_OK && sel.ndim == 3 && sel.strides[0] == -3 &&
              sel.span_offset == 0 && sel.span_len == 12,
          "f4 reversed rows: %s", err.msg);
    CHECK(st_selection_bytes(&sel, 4, &bs, &err) == ST_OK && bs.shape[1] == 3, "bytes rev");
    st_selection_gather(&bs, 1, src, out);
    CHECK(out[0] == 0x19 && out[11] == 0x12, "reversed gather");

    a[0] = S(0, 0, 0, 0, 0, 0);
    a[1] = S(1, 1, 1, 3, 0, 0); /* [:, 1:3] */
    expect_err(&t, a, 2, ST_ERR_MISALIGNED_SLICE, mis);
    a[1] = S(0, 0, 0, 0, 1, 2); /* [:, ::2] */
    expect_err(&t, a, 2, ST_ERR_MISALIGNED_SLICE, mis);
    a[0] = E();
    a[1] = I(0); /* [..., 0] */
    expect_err(&t, a, 2, ST_ERR_MISALIGNED_SLICE, mis);
    a[0] = S(0, 0, 0, 0, 0, 0);
    a[1] = S(1, 0, 1, 3, 0, 0); /* [:, 0:3] */
    expect_err(&t, a, 2, ST_ERR_MISALIGNED_SLICE, mis);
    a[1] = S(1, 3, 1, 3, 0, 0); /* empty: allowed */
    CHECK(st_select(&t, a, 2, &sel, &err) == ST_OK && sel.nelements == 0, "empty f4");

    uint64_t odd[2] = {2, 3}; /* rows of 12 bits */
    st_tensor u = {"u", 1, ST_F4, 2, odd, 0, 3};
    a[0] = I(1);
    expect_err(&u, a, 1, ST_ERR_MISALIGNED_SLICE, mis);
    a[0] = S(0, 0, 0, 0, 0, 0);
    a[1] = S(1, 0, 1, 2, 0, 0); /* [:, 0:2] rows move 1.5 B */
    expect_err(&u, a, 2, ST_ERR_MISALIGNED_SLICE, mis);
    a[0] = S(1, 0, 1, 1, 0, 0); /* [0:1, 0:2] */
    CHECK(st_select(&u, a, 2, &sel, &err) == ST_OK && sel.span_len == 1 && sel.offset == 0,
          "f4 [0:1,0:2]: %s", err.msg);

    uint64_t f6s[1] = {8}; /* F6: 48 bits, 6 bytes */
    st_tensor f6 = {"f6", 2, ST_F6_E2M3, 1, f6s, 0, 6};
    a[0] = S(1, 4, 0, 0, 0, 0);
    CHECK(st_select(&f6, a, 1, &sel, &err) == ST_OK && sel.offset == 3 && sel.span_len == 3,
          "f6 [4:]: %s", err.msg);
    a[0] = S(1, 2, 0, 0, 0, 0);
    expect_err(&f6, a, 1, ST_ERR_MISALIGNED_SLICE, mis);
}

int main(void)
{
    test_errors();
    test_subbyte();
    test_random();
    return harness_finish("test_select");
}
