/*
 * test_core.c - unit tests of the parsing half of the C core: errors,
 * allocation hooks, dtypes, st_header_length / st_header_parse (every rule of
 * docs/format.md §6 with the outcome upstream gives, with exact code,
 * message (§7) and byte offset), lookups, a 100,000-tensor header and
 * allocation-failure injection. Exit status != 0 on any failure.
 */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <errno.h>
#include <time.h>

/* A string literal with its length (may contain NUL bytes). */
#define J(s) (const uint8_t *)(s), (sizeof(s) - 1)

/* Parses json as a header of a file with data_len data bytes after it. */
static st_code parse(const uint8_t *json, size_t len, uint64_t data_len, st_header **h, st_error *e)
{
    memset(e, 0, sizeof *e);
    *h = NULL;
    return st_header_parse(json, len, 8 + len + data_len, h, e);
}

static void expect_err_at(int line, const uint8_t *json, size_t len, uint64_t data_len,
                          st_code code, const char *msg, uint64_t offset)
{
    st_header *h;
    st_error e;
    st_code rc = parse(json, len, data_len, &h, &e);
    harness_checks++;
    if (rc != code || e.code != code || strcmp(e.msg, msg) != 0 || e.offset != offset ||
        h != NULL) {
        harness_failures++;
        fprintf(stderr,
                "test_core.c:%d: header %.*s\n  want %s \"%s\" @%llu\n  got  %s \"%s\" @%llu\n",
                line, (int)len, (const char *)json, st_code_name(code), msg,
                (unsigned long long)offset, st_code_name(rc), e.msg, (unsigned long long)e.offset);
    }
    st_header_free(h);
}
#define EXPECT_ERR(json, data_len, code, msg, offset)                                              \
    expect_err_at(__LINE__, J(json), data_len, code, msg, offset)

static st_header *expect_ok_at(int line, const uint8_t *json, size_t len, uint64_t data_len,
                               size_t count)
{
    st_header *h;
    st_error e;
    st_code rc = parse(json, len, data_len, &h, &e);
    harness_checks++;
    if (rc != ST_OK || h == NULL || st_header_count(h) != count) {
        harness_failures++;
        fprintf(stderr,
                "test_core.c:%d: header %.*s\n  want OK with %zu tensors, got %s \"%s\" (%zu)\n",
                line, (int)len, (const char *)json, count, st_code_name(rc), e.msg,
                h ? st_header_count(h) : (size_t)0);
    }
    return h;
}
#define EXPECT_OK(json, data_len, count) expect_ok_at(__LINE__, J(json), data_len, count)

#define INVJ "invalid JSON in header: "
#define DTYPE_LIST                                                                                 \
    "expected one of `BOOL`, `F4`, `F6_E2M3`, `F6_E3M2`, `U8`, `I8`, `F8_E5M2`, "                  \
    "`F8_E4M3`, `F8_E8M0`, `F8_E4M3FNUZ`, `F8_E5M2FNUZ`, `I16`, `U16`, `F16`, `BF16`, `I32`, "     \
    "`U32`, `F32`, `C64`, `F64`, `I64`, `U64`"
#define MISALIGNED UPSTREAM_MISALIGNED

/* ====================================================================== */

static void test_errors_and_alloc(void)
{
    st_error e;
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK(st_error_set(&e, ST_ERR_INVALID_ARGUMENT, 42, "%s", big) == ST_ERR_INVALID_ARGUMENT,
          "rc");
    CHECK(e.code == ST_ERR_INVALID_ARGUMENT && e.offset == 42 && e.sys_errno == 0, "fields");
    CHECK(strlen(e.msg) == ST_ERROR_MSG_MAX - 1, "truncated to %zu", strlen(e.msg));
    CHECK(st_error_io(&e, ENOENT, 7) == ST_ERR_IO, "io rc");
    CHECK(e.sys_errno == ENOENT && e.offset == 7, "io fields");
    CHECK(strcmp(e.msg, "I/O error: No such file or directory (os error 2)") == 0, "%s", e.msg);
    CHECK(st_error_io(&e, EACCES, 0) == ST_ERR_IO &&
              strcmp(e.msg, "I/O error: Permission denied (os error 13)") == 0,
          "%s", e.msg);

    static const char *names[] = {"Ok",
                                  "HeaderTooSmall",
                                  "HeaderTooLarge",
                                  "InvalidHeaderLength",
                                  "InvalidHeader",
                                  "InvalidHeaderDeserialization",
                                  "InvalidOffset",
                                  "ValidationOverflow",
                                  "MisalignedSlice",
                                  "TensorInvalidInfo",
                                  "MetadataIncompleteBuffer",
                                  "IoError",
                                  "OutOfMemory",
                                  "InvalidSlice",
                                  "InvalidArgument",
                                  "External"};
    for (int c = 0; c < ST_ERR__COUNT; c++)
        CHECK(strcmp(st_code_name((st_code)c), names[c]) == 0, "code %d: %s", c,
              st_code_name((st_code)c));

    /* allocation hook: the n-th allocation fails, then all succeed again */
    st_alloc_fail_after(2);
    void *a = st_malloc(10), *b = st_malloc(10), *c = st_calloc(2, 3), *d = st_realloc(NULL, 5);
    CHECK(a != NULL && b == NULL && c != NULL && d != NULL, "fail_after(2)");
    st_free(a);
    st_free(b);
    st_free(c);
    st_free(d);
    st_alloc_fail_after(1);
    CHECK(st_realloc(NULL, 4) == NULL, "realloc counts");
    a = st_malloc(0);
    CHECK(a != NULL, "malloc(0) gives a pointer");
    st_free(a);
    st_alloc_fail_after(0);
    a = st_malloc(1);
    CHECK(a != NULL, "disabled");
    st_free(a);
    st_free(NULL);
}

static void test_dtypes(void)
{
    st_error e0;
    static const char *names[] = {
        "BOOL",    "F4",          "F6_E2M3",     "F6_E3M2", "U8",  "I8",  "F8_E5M2", "F8_E4M3",
        "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16",     "U16", "F16", "BF16",    "I32",
        "U32",     "F32",         "C64",         "F64",     "I64", "U64"};
    static const unsigned bits[] = {8,  4,  6,  6,  8,  8,  8,  8,  8,  8,  8,
                                    16, 16, 16, 16, 32, 32, 32, 64, 64, 64, 64};
    _Static_assert(ST_DTYPE__COUNT == 22, "22 dtypes");
    for (int i = 0; i < ST_DTYPE__COUNT; i++) {
        st_dtype d = ST_DTYPE__COUNT;
        CHECK(strcmp(st_dtype_name((st_dtype)i), names[i]) == 0, "name %d", i);
        CHECK(st_dtype_bits((st_dtype)i) == bits[i], "bits %d", i);
        CHECK(st_dtype_from_name(names[i], strlen(names[i]), &d) && d == (st_dtype)i, "from %s",
              names[i]);
    }
    /* the names other layers use */
    static const char *type_names[] = {"bool",
                                       "float4_e2m1fn_x2",
                                       NULL,
                                       NULL,
                                       "uint8",
                                       "int8",
                                       "float8_e5m2",
                                       "float8_e4m3fn",
                                       "float8_e8m0fnu",
                                       "float8_e4m3fnuz",
                                       "float8_e5m2fnuz",
                                       "int16",
                                       "uint16",
                                       "float16",
                                       "bfloat16",
                                       "int32",
                                       "uint32",
                                       "float32",
                                       "complex64",
                                       "float64",
                                       "int64",
                                       "uint64"};
    for (int i = 0; i < ST_DTYPE__COUNT; i++) {
        const st_dtype_info *info = st_dtype_info_get((st_dtype)i);
        st_dtype d = ST_DTYPE__COUNT;
        CHECK(info != NULL && info->dtype == (st_dtype)i && info->bits == bits[i] &&
                  strcmp(info->name, names[i]) == 0,
              "info %d", i);
        CHECK(type_names[i] == NULL
                  ? info->type_name == NULL
                  : strcmp(info->type_name, type_names[i]) == 0 &&
                        st_dtype_from_type_name(type_names[i], strlen(type_names[i]), &d) &&
                        d == (st_dtype)i,
              "type name %d", i);
        CHECK(info->pack == (i == ST_F4 ? 2u : 1u), "pack %d", i);
        CHECK((info->numpy == ST_NUMPY_NONE) == (bits[i] < 8), "numpy %d", i);
        CHECK((info->numpy == ST_NUMPY_ML_DTYPES) ==
                  (i == ST_BF16 || (i >= ST_F8_E5M2 && i <= ST_F8_E5M2FNUZ)),
              "ml_dtypes %d", i);
    }
    CHECK(st_dtype_info_get(ST_DTYPE__COUNT) == NULL, "out of range");
    st_dtype d;
    CHECK(!st_dtype_from_type_name("F32", 3, &d) && !st_dtype_from_name("float32", 7, &d),
          "two vocabularies");

    /* F4 packing: two values per framework item along the last dim */
    uint64_t dim = 0;
    CHECK(st_dtype_packed_dim(ST_F4, 6, &dim, &e0) == ST_OK && dim == 3, "packed");
    CHECK(st_dtype_packed_dim(ST_F4, 3, &dim, &e0) == ST_ERR_INVALID_ARGUMENT, "odd: %s", e0.msg);
    CHECK(st_dtype_packed_dim(ST_F32, 3, &dim, &e0) == ST_OK && dim == 3, "unpacked dtype");
    CHECK(st_dtype_unpacked_dim(ST_F4, 3, &dim, &e0) == ST_OK && dim == 6, "unpacked");
    CHECK(st_dtype_unpacked_dim(ST_F4, UINT64_MAX / 2 + 1, &dim, &e0) == ST_ERR_INVALID_ARGUMENT &&
              strcmp(e0.msg,
                     "F4 last-dim 9223372036854775808 doubled to logical shape overflows usize") ==
                  0,
          "%s", e0.msg);

    CHECK(!st_dtype_from_name("f32", 3, &d), "case-sensitive");
    CHECK(!st_dtype_from_name("F128", 4, &d), "unknown");
    CHECK(!st_dtype_from_name("F32\0", 4, &d), "exact length");
    CHECK(!st_dtype_from_name("F3", 2, &d), "prefix");
    CHECK(!st_dtype_from_name("", 0, &d), "empty");

    uint64_t nb = 0;
    st_error e;
    uint64_t s1[] = {2, 3};
    CHECK(st_tensor_nbytes(ST_F32, s1, 2, &nb, &e) == ST_OK && nb == 24, "f32 2x3");
    CHECK(st_tensor_nbytes(ST_F64, NULL, 0, &nb, &e) == ST_OK && nb == 8, "scalar");
    uint64_t s2[] = {4};
    CHECK(st_tensor_nbytes(ST_F4, s2, 1, &nb, &e) == ST_OK && nb == 2, "f4");
    CHECK(st_tensor_nbytes(ST_F6_E2M3, s2, 1, &nb, &e) == ST_OK && nb == 3, "f6");
    uint64_t s3[] = {3};
    CHECK(st_tensor_nbytes(ST_F4, s3, 1, &nb, &e) == ST_ERR_MISALIGNED_SLICE &&
              strcmp(e.msg, MISALIGNED) == 0,
          "%s", e.msg);
    uint64_t s4[] = {2, UINT64_MAX / 2 + 1};
    CHECK(st_tensor_nbytes(ST_U8, s4, 2, &nb, &e) == ST_ERR_VALIDATION_OVERFLOW &&
              strcmp(e.msg, UPSTREAM_OVERFLOW) == 0,
          "%s", e.msg);
    uint64_t s5[] = {UINT64_MAX / 8 + 1};
    CHECK(st_tensor_nbytes(ST_U8, s5, 1, &nb, &e) == ST_ERR_VALIDATION_OVERFLOW, "bits overflow");
    uint64_t s6[] = {0, UINT64_MAX, 2}; /* checked sequentially, as upstream: 0 first */
    CHECK(st_tensor_nbytes(ST_U8, s6, 3, &nb, &e) == ST_OK && nb == 0, "zero first");
    uint64_t s7[] = {UINT64_MAX, 2, 0};
    CHECK(st_tensor_nbytes(ST_U8, s7, 3, &nb, &e) == ST_ERR_VALIDATION_OVERFLOW,
          "overflow before 0");
    /* an unknown dtype is a caller error (it divided by zero bits before) */
    CHECK(st_tensor_nbytes((st_dtype)99, s1, 2, &nb, &e) == ST_ERR_INVALID_ARGUMENT &&
              strcmp(e.msg, "invalid dtype 99") == 0,
          "unknown dtype: %s", e.msg);
}

static void test_header_length(void)
{
    st_error e;
    uint64_t n = 99;
    uint8_t p[8] = {5, 0, 0, 0, 0, 0, 0, 0};
    CHECK(st_header_length(p, 0, 0, &n, &e) == ST_ERR_HEADER_TOO_SMALL &&
              strcmp(e.msg, "header too small") == 0,
          "0 bytes");
    CHECK(st_header_length(p, 7, 7, &n, &e) == ST_ERR_HEADER_TOO_SMALL, "7 bytes");
    CHECK(st_header_length(p, 8, 8, &n, &e) == ST_ERR_INVALID_HEADER_LENGTH &&
              strcmp(e.msg, "invalid header length") == 0,
          "8 bytes N=5: %s", e.msg);
    CHECK(st_header_length(p, 8, 13, &n, &e) == ST_OK && n == 5, "N=5 fits");
    uint64_t v = 100000001;
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    CHECK(st_header_length(p, 8, UINT64_MAX, &n, &e) == ST_ERR_HEADER_TOO_LARGE &&
              strcmp(e.msg, "header too large") == 0,
          "N=1e8+1");
    memset(p, 0xFF, 8);
    CHECK(st_header_length(p, 8, 100, &n, &e) == ST_ERR_HEADER_TOO_LARGE, "N=u64max");
    v = 100000000;
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    CHECK(st_header_length(p, 8, 1000, &n, &e) == ST_ERR_INVALID_HEADER_LENGTH, "N=1e8 short");
    CHECK(st_header_length(p, 8, 8 + v, &n, &e) == ST_OK && n == v, "N=1e8 exactly");
}

/* Every rule of docs/format.md §6, with the outcome upstream gives for each. */
static void test_outcomes_table(void)
{
    st_header *h;

    /* N = 0 */
    EXPECT_ERR("", 0, ST_ERR_INVALID_JSON, INVJ "EOF while parsing a value at line 1 column 0", 8);
    EXPECT_ERR("   ", 0, ST_ERR_INVALID_JSON, INVJ "EOF while parsing a value at line 1 column 3",
               11);
    /* whitespace around the object */
    h = EXPECT_OK("  {}", 0, 0);
    st_header_free(h);
    h = EXPECT_OK("{}  \n\t", 0, 0);
    st_header_free(h);
    h = EXPECT_OK("{}", 0, 0);
    CHECK(h && st_header_data_start(h) == 10 && !st_header_has_metadata(h) &&
              st_header_metadata_count(h) == 0 && st_header_find(h, "a", 1) == NULL,
          "empty");
    st_header_free(h);
    /* trailing NUL / garbage */
    EXPECT_ERR("{}\0", 0, ST_ERR_INVALID_JSON, INVJ "trailing characters at line 1 column 3", 10);
    EXPECT_ERR("{} x", 0, ST_ERR_INVALID_JSON, INVJ "trailing characters at line 1 column 4", 11);
    EXPECT_ERR("{}\n\n  {}", 0, ST_ERR_INVALID_JSON, INVJ "trailing characters at line 3 column 3",
               14);

#define T1 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"
    h = EXPECT_OK(T1, 8, 1);
    st_header_free(h);
    EXPECT_ERR(T1, 9, ST_ERR_METADATA_INCOMPLETE, "incomplete metadata, file not fully covered",
               8 + 54 + 8);
    EXPECT_ERR(T1, 7, ST_ERR_METADATA_INCOMPLETE, "incomplete metadata, file not fully covered",
               8 + 54 + 8);
    EXPECT_ERR("{}", 1, ST_ERR_METADATA_INCOMPLETE, "incomplete metadata, file not fully covered",
               10);

    /* offsets */
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
               ST_ERR_INVALID_OFFSET, "invalid offset for tensor `a`", 9);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, ST_ERR_INVALID_OFFSET, "invalid offset for tensor `b`", 8 + 54);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
               20, ST_ERR_INVALID_OFFSET, "invalid offset for tensor `b`", 8 + 54);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
               ST_ERR_INVALID_OFFSET, "invalid offset for tensor `a`", 9);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
               ST_ERR_TENSOR_INVALID_INFO, "invalid shape, data type, or offset for tensor", 9);
    /* offsets sorted: tensors listed out of order are fine */
    h = EXPECT_OK("{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]},"
                  "\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}",
                  5, 2);
    if (h) {
        CHECK(st_header_tensor(h, 0)->name_len == 1 && st_header_tensor(h, 0)->name[0] == 'a',
              "offset order");
        CHECK(st_header_tensor(h, 1)->begin == 3 && st_header_tensor(h, 1)->end == 5, "b offsets");
        CHECK(st_header_tensor(h, 2) == NULL, "out of range");
    }
    st_header_free(h);

    /* duplicates */
    h = EXPECT_OK("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                  8, 1);
    st_header_free(h);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}",
               24, ST_ERR_INVALID_OFFSET, "invalid offset for tensor `b`", 8 + 54);
    h = EXPECT_OK("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,9]},"
                  "\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}",
                  3, 1);
    if (h) {
        const st_tensor *t = st_header_find(h, "a", 1);
        CHECK(t && t->dtype == ST_U8 && t->ndim == 1 && t->shape[0] == 3 && t->end == 3,
              "last wins");
    }
    st_header_free(h);
    EXPECT_ERR("{\"__metadata__\":{},\"__metadata__\":{}}", 0, ST_ERR_INVALID_JSON,
               INVJ "duplicate field `__metadata__` at line 1 column 33", 8 + 19);
    EXPECT_ERR("{\"__metadata__\":null,\"__metadata__\":null}", 0, ST_ERR_INVALID_JSON,
               INVJ "duplicate field `__metadata__` at line 1 column 35", 8 + 21);

    /* metadata */
    h = EXPECT_OK("{\"__metadata__\":null}", 0, 0);
    CHECK(h && !st_header_has_metadata(h), "null metadata");
    st_header_free(h);
    h = EXPECT_OK("{\"__metadata__\":{}}", 0, 0);
    CHECK(h && st_header_has_metadata(h) && st_header_metadata_count(h) == 0, "empty metadata");
    st_header_free(h);
    EXPECT_ERR("{\"__metadata__\":{\"k\":1}}", 0, ST_ERR_INVALID_JSON,
               INVJ "invalid type: integer `1`, expected a string at line 1 column 22", 8 + 21);
    EXPECT_ERR("{\"__metadata__\":{\"k\":{\"a\":\"b\"}}}", 0, ST_ERR_INVALID_JSON,
               INVJ "invalid type: map, expected a string at line 1 column 21", 8 + 21);
    EXPECT_ERR("{\"__metadata__\":\"x\"}", 0, ST_ERR_INVALID_JSON,
               INVJ "invalid type: string \"x\", expected a map at line 1 column 19", 8 + 16);
    EXPECT_ERR("{\"__metadata__\":{\"k\":null}}", 0, ST_ERR_INVALID_JSON,
               INVJ "invalid type: null, expected a string at line 1 column 25", 8 + 21);
    EXPECT_ERR("{\"__metadata__\":{\"k\":true}}", 0, ST_ERR_INVALID_JSON,
               INVJ "invalid type: boolean `true`, expected a string at line 1 column 25", 8 + 21);
    EXPECT_ERR("{\"__metadata__\":[1]}", 0, ST_ERR_INVALID_JSON,
               INVJ "invalid type: sequence, expected a map at line 1 column 16", 8 + 16);
    EXPECT_ERR("{\"__metadata__\":{\"k\":1.5}}", 0, ST_ERR_INVALID_JSON,
               INVJ "invalid type: floating point `1.5`, expected a string at line 1 column 24",
               8 + 21);
    /* a tensor named __metadata__ is unreadable, as upstream */
    EXPECT_ERR("{\"__metadata__\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
               ST_ERR_INVALID_JSON,
               INVJ "invalid type: sequence, expected a string at line 1 column 39", 8 + 39);

    /* unknown fields */
    h = EXPECT_OK("{\"a\":{\"dtype\":\"F32\",\"extra\":{\"x\":[1,2.5,\"s\",null]},\"shape\":[1],"
                  "\"data_offsets\":[0,4],\"z\":-1e5}}",
                  4, 1);
    st_header_free(h);
    EXPECT_ERR("{\"format\":\"pt\"}", 0, ST_ERR_INVALID_JSON,
               INVJ "invalid type: string \"pt\", expected struct TensorInfo at line 1 column 15",
               8 + 10);
    EXPECT_ERR("{\"a\":null}", 0, ST_ERR_INVALID_JSON,
               INVJ "invalid type: null, expected struct TensorInfo at line 1 column 10", 8 + 5);
    EXPECT_ERR("{\"a\":[\"F32\",[1],[0,4]]}", 4, ST_ERR_INVALID_JSON,
               INVJ "invalid type: sequence, expected struct TensorInfo at line 1 column 23",
               8 + 5);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 0, ST_ERR_INVALID_JSON,
               INVJ "missing field `data_offsets` at line 1 column 33", 8 + 5);
    EXPECT_ERR("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, ST_ERR_INVALID_JSON,
               INVJ "missing field `dtype` at line 1 column 40", 8 + 5);
    EXPECT_ERR("{\"a\":{}}", 0, ST_ERR_INVALID_JSON,
               INVJ "missing field `dtype` at line 1 column 8", 8 + 5);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
               4, ST_ERR_INVALID_JSON, INVJ "duplicate field `dtype` at line 1 column 68", 8 + 20);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 16,
               ST_ERR_INVALID_JSON,
               INVJ "unknown variant `F128`, " DTYPE_LIST " at line 1 column 56", 8 + 14);
    EXPECT_ERR("{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               ST_ERR_INVALID_JSON,
               INVJ "unknown variant `f32`, " DTYPE_LIST " at line 1 column 54", 8 + 14);
    EXPECT_ERR(
        "{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, ST_ERR_INVALID_JSON,
        INVJ "invalid type: integer `32`, expected string or map at line 1 column 51", 8 + 14);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,4]}}", 4,
               ST_ERR_INVALID_JSON,
               INVJ "invalid value: integer `-2`, expected usize at line 1 column 55", 8 + 29);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
               ST_ERR_INVALID_JSON,
               INVJ "invalid type: floating point `2.0`, expected usize at line 1 column 56",
               8 + 29);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1e0],\"data_offsets\":[0,4]}}", 4,
               ST_ERR_INVALID_JSON,
               INVJ "invalid type: floating point `1.0`, expected usize at line 1 column 56",
               8 + 29);
    EXPECT_ERR(
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[-0],\"data_offsets\":[0,0]}}", 0, ST_ERR_INVALID_JSON,
        INVJ "invalid type: floating point `-0.0`, expected usize at line 1 column 55", 8 + 29);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
               ST_ERR_INVALID_JSON,
               INVJ "invalid type: string \"1\", expected usize at line 1 column 56", 8 + 29);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4,
               ST_ERR_INVALID_JSON, INVJ "invalid number at line 1 column 31", 8 + 30);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]}}", 4,
               ST_ERR_INVALID_JSON,
               INVJ "invalid type: integer `3`, expected a sequence at line 1 column 52", 8 + 28);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
               ST_ERR_INVALID_JSON,
               INVJ "invalid length 3, expected 2 elements in sequence at line 1 column 56",
               8 + 47);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
               ST_ERR_INVALID_JSON,
               INVJ "invalid length 1, expected a tuple of size 2 at line 1 column 52", 8 + 47);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[]}}", 4,
               ST_ERR_INVALID_JSON,
               INVJ "invalid length 0, expected a tuple of size 2 at line 1 column 51", 8 + 47);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4,
               ST_ERR_INVALID_JSON,
               INVJ "invalid type: map, expected a tuple of size 2 at line 1 column 51", 8 + 47);
    EXPECT_ERR(
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}", 1,
        ST_ERR_INVALID_JSON,
        INVJ
        "invalid type: floating point `18446744073709552000.0`, expected usize at line 1 column 72",
        8 + 49);
    EXPECT_ERR("{\"a\":{\"dtype\":\"U8\",\"shape\":[18446744073709551615],\"data_offsets\":[0,0]}}",
               0, ST_ERR_VALIDATION_OVERFLOW, UPSTREAM_OVERFLOW, 9);
    EXPECT_ERR("{\"a\":{\"dtype\":\"U8\",\"shape\":[2305843009213693951],\"data_offsets\":[0,0]}}",
               0, ST_ERR_TENSOR_INVALID_INFO, "invalid shape, data type, or offset for tensor", 9);
    EXPECT_ERR("{\"a\":{\"dtype\":\"U8\",\"shape\":[1e400],\"data_offsets\":[0,0]}}", 0,
               ST_ERR_INVALID_JSON, INVJ "number out of range at line 1 column 33", 8 + 28);

    /* scalars, empty tensors, sub-byte dtypes */
    h = EXPECT_OK("{\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}", 8, 1);
    if (h) {
        const st_tensor *t = st_header_find(h, "s", 1);
        CHECK(t && t->ndim == 0 && t->dtype == ST_F64 && t->begin == 0 && t->end == 8, "scalar");
    }
    st_header_free(h);
    h = EXPECT_OK("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                  "\"b\":{\"dtype\":\"I64\",\"shape\":[2,0],\"data_offsets\":[0,0]}}",
                  0, 2);
    if (h) {
        const st_tensor *b = st_header_find(h, "b", 1);
        CHECK(b && b->ndim == 2 && b->shape[0] == 2 && b->shape[1] == 0, "empty b");
    }
    st_header_free(h);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2,
               ST_ERR_MISALIGNED_SLICE, MISALIGNED, 9);
    EXPECT_ERR("{\"a\":{\"dtype\":\"F6_E2M3\",\"shape\":[3],\"data_offsets\":[0,3]}}", 3,
               ST_ERR_MISALIGNED_SLICE, MISALIGNED, 9);
    h = EXPECT_OK("{\"a\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,2]}}", 2, 1);
    st_header_free(h);
    h = EXPECT_OK("{\"a\":{\"dtype\":\"F6_E3M2\",\"shape\":[4],\"data_offsets\":[0,3]}}", 3, 1);
    st_header_free(h);
    EXPECT_ERR(
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[2,18446744073709551614],\"data_offsets\":[0,0]}}", 0,
        ST_ERR_VALIDATION_OVERFLOW, UPSTREAM_OVERFLOW, 9);
    EXPECT_ERR(
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,9223372036854775807],\"data_offsets\":[0,0]}}", 0,
        ST_ERR_VALIDATION_OVERFLOW, UPSTREAM_OVERFLOW, 9);

    /* names */
    h = EXPECT_OK("{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                  "\"\\u00e9\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                  2, 2);
    if (h) {
        CHECK(st_header_find(h, "", 0) != NULL && st_header_find(h, "", 0)->end == 1, "empty name");
        const st_tensor *t = st_header_find(h, "\xc3\xa9", 2);
        CHECK(t && t->begin == 1, "e-acute");
    }
    st_header_free(h);

    /* encoding, syntax */
    EXPECT_ERR("\xef\xbb\xbf{}", 0, ST_ERR_INVALID_JSON, INVJ "expected value at line 1 column 1",
               8);
    EXPECT_ERR("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},}", 1,
               ST_ERR_INVALID_JSON, INVJ "trailing comma at line 1 column 54", 8 + 53);
    EXPECT_ERR("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,],\"data_offsets\":[0,1]}}", 1,
               ST_ERR_INVALID_JSON, INVJ "trailing comma at line 1 column 31", 8 + 30);
    EXPECT_ERR("{} // comment", 0, ST_ERR_INVALID_JSON,
               INVJ "trailing characters at line 1 column 4", 11);
    EXPECT_ERR("[]", 0, ST_ERR_INVALID_JSON,
               INVJ "invalid type: sequence, expected struct HashMetadata at line 1 column 0", 8);
    EXPECT_ERR("\"x\"", 0, ST_ERR_INVALID_JSON,
               INVJ "invalid type: string \"x\", expected struct HashMetadata at line 1 column 3",
               8);
    EXPECT_ERR("7", 0, ST_ERR_INVALID_JSON,
               INVJ "invalid type: integer `7`, expected struct HashMetadata at line 1 column 1",
               8);
    EXPECT_ERR("{", 0, ST_ERR_INVALID_JSON, INVJ "EOF while parsing an object at line 1 column 1",
               9);
    EXPECT_ERR("{\"a\"", 0, ST_ERR_INVALID_JSON,
               INVJ "EOF while parsing an object at line 1 column 4", 12);
    EXPECT_ERR("{\"a", 0, ST_ERR_INVALID_JSON, INVJ "EOF while parsing a string at line 1 column 3",
               11);
    EXPECT_ERR("{\"a\" 1}", 0, ST_ERR_INVALID_JSON, INVJ "expected `:` at line 1 column 6", 13);
    EXPECT_ERR("{1:2}", 0, ST_ERR_INVALID_JSON, INVJ "key must be a string at line 1 column 2", 9);
    EXPECT_ERR("{\"a\":{} \"b\":{}}", 0, ST_ERR_INVALID_JSON,
               INVJ "expected `,` or `}` at line 1 column 9", 16);
    EXPECT_ERR("{\"a\":tru}", 0, ST_ERR_INVALID_JSON, INVJ "expected ident at line 1 column 9", 16);
    EXPECT_ERR("{\"a\":\"\\x\"}", 0, ST_ERR_INVALID_JSON, INVJ "invalid escape at line 1 column 8",
               15);
    EXPECT_ERR("{\"a\":\"\\ud800\"}", 0, ST_ERR_INVALID_JSON,
               INVJ "unexpected end of hex escape at line 1 column 12", 20);
    EXPECT_ERR("{\"a\":\"\\udc00\"}", 0, ST_ERR_INVALID_JSON,
               INVJ "lone leading surrogate in hex escape at line 1 column 12", 19);
    EXPECT_ERR(
        "{\"a\":\"x\ny\"}", 0, ST_ERR_INVALID_JSON,
        INVJ "control character (\\u0000-\\u001F) found while parsing a string at line 2 column 0",
        15);
    EXPECT_ERR("{\n\"a\":\n{\"dtype\":\"F32\"}}", 0, ST_ERR_INVALID_JSON,
               INVJ "missing field `shape` at line 3 column 16", 8 + 7);
    /* a syntax error later in the document wins over a deferred entry error */
    EXPECT_ERR("{\"a\":{},\"b\":[}", 0, ST_ERR_INVALID_JSON,
               INVJ "expected value at line 1 column 14", 8 + 13);
    /* a metadata error later in the document wins too */
    EXPECT_ERR("{\"a\":{},\"__metadata__\":{\"k\":2}}", 0, ST_ERR_INVALID_JSON,
               INVJ "invalid type: integer `2`, expected a string at line 1 column 29", 8 + 28);
    /* the first deferred error in document order wins */
    EXPECT_ERR("{\"a\":{\"dtype\":\"X\"},\"b\":{}}", 0, ST_ERR_INVALID_JSON,
               INVJ "unknown variant `X`, " DTYPE_LIST " at line 1 column 26", 8 + 14);
    /* deferred errors come before trailing characters */
    EXPECT_ERR("{\"a\":{}} x", 0, ST_ERR_INVALID_JSON,
               INVJ "missing field `dtype` at line 1 column 8", 8 + 5);

    /* UTF-8 (rule 4 runs before JSON parsing) */
    EXPECT_ERR("\xff{}", 0, ST_ERR_INVALID_UTF8,
               "invalid UTF-8 in header: invalid utf-8 sequence of 1 bytes from index 0", 8);
    EXPECT_ERR("{\"\xe2\x82\":1}", 0, ST_ERR_INVALID_UTF8,
               "invalid UTF-8 in header: invalid utf-8 sequence of 2 bytes from index 2", 10);
    EXPECT_ERR("{\"\xf0\x9f\x98\":1}", 0, ST_ERR_INVALID_UTF8,
               "invalid UTF-8 in header: invalid utf-8 sequence of 3 bytes from index 2", 10);
    EXPECT_ERR("{}\xe2\x82", 0, ST_ERR_INVALID_UTF8,
               "invalid UTF-8 in header: incomplete utf-8 byte sequence from index 2", 10);
    EXPECT_ERR("{\"\xed\xa0\x80\":1}", 0, ST_ERR_INVALID_UTF8,
               "invalid UTF-8 in header: invalid utf-8 sequence of 1 bytes from index 2", 10);
    EXPECT_ERR("{\"\xc0\xaf\":1}", 0, ST_ERR_INVALID_UTF8,
               "invalid UTF-8 in header: invalid utf-8 sequence of 1 bytes from index 2", 10);
    EXPECT_ERR("{\"\xf4\x90\x80\x80\":1}", 0, ST_ERR_INVALID_UTF8,
               "invalid UTF-8 in header: invalid utf-8 sequence of 1 bytes from index 2", 10);
    EXPECT_ERR("\xc3(", 0, ST_ERR_INVALID_UTF8,
               "invalid UTF-8 in header: invalid utf-8 sequence of 1 bytes from index 0", 8);

    /* st_header_parse re-checks the lengths it is given */
    st_error e;
    CHECK(st_header_parse(J("{}"), 5, &h, &e) == ST_ERR_INVALID_HEADER_LENGTH && h == NULL,
          "short file");
}

static void test_depth(void)
{
    /* unknown field nested inside a tensor entry: top object (1) + entry (2)
     * + n arrays; serde_json allows 127 levels in total. */
    char buf[1024];
    for (int extra = 124; extra <= 126; extra++) {
        size_t o = 0;
        o += (size_t)sprintf(buf + o,
                             "{\"a\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1],\"x\":");
        for (int i = 0; i < extra; i++)
            buf[o++] = '[';
        for (int i = 0; i < extra; i++)
            buf[o++] = ']';
        o += (size_t)sprintf(buf + o, "}}");
        st_header *h;
        st_error e;
        st_code rc = parse((const uint8_t *)buf, o, 1, &h, &e);
        if (extra <= 125) {
            CHECK(rc == ST_OK, "depth %d: %s", extra + 2, e.msg);
        } else {
            CHECK(rc == ST_ERR_INVALID_JSON &&
                      strstr(e.msg, INVJ "recursion limit exceeded at line 1 column ") == e.msg,
                  "depth %d: %s", extra + 2, e.msg);
            CHECK(e.offset == 8 + 55 + 125, "offset %llu", (unsigned long long)e.offset);
        }
        st_header_free(h);
    }
    /* the same limit through st_json_validate */
    char deep[300];
    for (int i = 0; i < 127; i++) {
        deep[i] = '[';
        deep[127 + i] = ']';
    }
    st_error e;
    CHECK(st_json_validate((const uint8_t *)deep, 254, &e) == ST_OK, "127 deep: %s", e.msg);
    for (int i = 0; i < 128; i++) {
        deep[i] = '[';
        deep[128 + i] = ']';
    }
    CHECK(st_json_validate((const uint8_t *)deep, 256, &e) == ST_ERR_INVALID_JSON &&
              strcmp(e.msg, INVJ "recursion limit exceeded at line 1 column 128") == 0 &&
              e.offset == 127,
          "%s", e.msg);
}

static void test_json_validate(void)
{
    st_error e;
    struct {
        const char *s;
        bool ok;
        const char *msg;
    } cases[] = {
        {"0", true, NULL},
        {"-0.5e+10", true, NULL},
        {"\"\\ud83d\\ude00\"", true, NULL},
        {" [1, {\"a\": [true, false, null]}] \r\n\t", true, NULL},
        {"\"\xf0\x9f\x98\x80\"", true, NULL},
        {"", false, "EOF while parsing a value at line 1 column 0"},
        {"[1,]", false, "trailing comma at line 1 column 4"},
        {"[1 2]", false, "expected `,` or `]` at line 1 column 4"},
        {"[", false, "EOF while parsing a list at line 1 column 1"},
        {"[1,", false, "EOF while parsing a value at line 1 column 3"},
        {"-", false, "invalid number at line 1 column 1"},
        {"-a", false, "invalid number at line 1 column 2"},
        {"1.", false, "EOF while parsing a value at line 1 column 2"},
        {"1.e1", false, "invalid number at line 1 column 3"},
        {"1e", false, "EOF while parsing a value at line 1 column 2"},
        {"+1", false, "expected value at line 1 column 1"},
        {"nul", false, "EOF while parsing a value at line 1 column 3"},
        {"\"\xc0\x80\"", false, "invalid unicode code point at line 1 column 2"},
        {"\"\\ud800\\u0041\"", false, "lone leading surrogate in hex escape at line 1 column 13"},
        {"\"\\u12x\"", false, "invalid escape at line 1 column 6"},
        {"\"\\u12", false, "EOF while parsing a string at line 1 column 5"},
        {"{\"a\":1,}", false, "trailing comma at line 1 column 8"},
        {"{\"a\":1,", false, "EOF while parsing a value at line 1 column 7"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(&e, 0, sizeof e);
        st_code rc = st_json_validate((const uint8_t *)cases[i].s, strlen(cases[i].s), &e);
        if (cases[i].ok)
            CHECK(rc == ST_OK, "'%s': %s", cases[i].s, e.msg);
        else
            CHECK(rc == ST_ERR_INVALID_JSON && strncmp(e.msg, INVJ, strlen(INVJ)) == 0 &&
                      strcmp(e.msg + strlen(INVJ), cases[i].msg) == 0,
                  "'%s': got '%s' want '%s'", cases[i].s, e.msg, cases[i].msg);
    }
    /* a NUL byte inside a string is a control character */
    CHECK(st_json_validate(J("\"a\0\""), &e) == ST_ERR_INVALID_JSON, "NUL in string");
}

static void test_lookup_and_metadata(void)
{
    static const char json[] =
        "{\"__metadata__\":{\"format\":\"pt\",\"k\\\"q\":\"v\\n\",\"format\":\"np\"},"
        "\"zeta\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]},"
        "\"alpha\":{\"dtype\":\"BF16\",\"shape\":[1,1],\"data_offsets\":[6,8]},"
        "\"B\":{\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[8,9]}}";
    st_header *h = expect_ok_at(__LINE__, J(json), 9, 4);
    if (h == NULL)
        return;
    CHECK(st_header_has_metadata(h) && st_header_metadata_count(h) == 3, "metadata count");
    const st_metadata_item *m0 = st_header_metadata_item(h, 0), *m1 = st_header_metadata_item(h, 1),
                           *m2 = st_header_metadata_item(h, 2);
    CHECK(m0->key_len == 6 && memcmp(m0->key, "format", 6) == 0 && m0->value_len == 2 &&
              memcmp(m0->value, "pt", 2) == 0,
          "m0");
    CHECK(m1->key_len == 3 && memcmp(m1->key, "k\"q", 3) == 0 && m1->value_len == 2 &&
              memcmp(m1->value, "v\n", 2) == 0,
          "m1 unescaped");
    CHECK(m2->value_len == 2 && memcmp(m2->value, "np", 2) == 0, "repeated key kept");
    CHECK(st_header_metadata_item(h, 3) == NULL, "out of range");

    const st_tensor *t = st_header_find(h, "a\0b", 3);
    CHECK(t && t->name_len == 3 && memcmp(t->name, "a\0b", 3) == 0 && t->dtype == ST_U8,
          "NUL name");
    CHECK(st_header_find(h, "a", 1) == NULL, "prefix of NUL name not found");
    CHECK(st_header_find(h, "alph", 4) == NULL && st_header_find(h, "alphas", 6) == NULL,
          "near misses");
    t = st_header_find(h, "alpha", 5);
    CHECK(t && t->dtype == ST_BF16 && t->ndim == 2 && t->begin == 6, "alpha");
    /* offset order */
    const char *offset_order[] = {"zeta", "a\0b", "alpha", "B"};
    const size_t offset_len[] = {4, 3, 5, 1};
    for (size_t i = 0; i < 4; i++) {
        t = st_header_tensor(h, i);
        CHECK(t->name_len == offset_len[i] && memcmp(t->name, offset_order[i], offset_len[i]) == 0,
              "offset %zu", i);
    }
    /* name order: bytewise, shorter prefix first */
    const char *name_order[] = {"B", "a\0b", "alpha", "zeta"};
    const size_t name_len[] = {1, 3, 5, 4};
    for (size_t i = 0; i < 4; i++) {
        t = st_header_tensor_by_name_order(h, i);
        CHECK(t->name_len == name_len[i] && memcmp(t->name, name_order[i], name_len[i]) == 0,
              "name %zu", i);
    }
    CHECK(st_header_tensor_by_name_order(h, 4) == NULL, "out of range");
    st_header_free(h);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_big_header(void)
{
    const size_t n = 100000;
    size_t cap = n * 96 + 64, o = 0;
    char *buf = malloc(cap);
    o += (size_t)sprintf(buf + o, "{\"__metadata__\":{\"format\":\"pt\"}");
    /* listed in reverse offset order so the sort is exercised */
    for (size_t i = n; i-- > 0;)
        o += (size_t)sprintf(buf + o,
                             ",\"model.layers.%zu.weight\":{\"dtype\":\"F16\",\"shape\":[2,2],"
                             "\"data_offsets\":[%zu,%zu]}",
                             i, i * 8, i * 8 + 8);
    buf[o++] = '}';
    st_header *h;
    st_error e;
    double t0 = now_ms();
    st_code rc = parse((const uint8_t *)buf, o, n * 8, &h, &e);
    double ms = now_ms() - t0;
    printf("100,000-tensor header (%.1f MB): parsed in %.1f ms (sanitized build)\n", o / 1e6, ms);
    CHECK(rc == ST_OK && h && st_header_count(h) == n, "big: %s", e.msg);
    if (h) {
        char name[64];
        for (size_t i = 0; i < n; i += 997) {
            int l = sprintf(name, "model.layers.%zu.weight", i);
            const st_tensor *t = st_header_find(h, name, (size_t)l);
            CHECK(t && t->begin == i * 8 && t->shape[0] == 2, "find %zu", i);
            CHECK(st_header_tensor(h, i)->begin == i * 8, "offset order %zu", i);
        }
        for (size_t i = 1; i < n; i++) {
            const st_tensor *a = st_header_tensor_by_name_order(h, i - 1),
                            *b = st_header_tensor_by_name_order(h, i);
            size_t m = a->name_len < b->name_len ? a->name_len : b->name_len;
            int c = memcmp(a->name, b->name, m);
            if (!(c < 0 || (c == 0 && a->name_len < b->name_len))) {
                CHECK(0, "name order broken at %zu", i);
                break;
            }
        }
    }
    st_header_free(h);
    free(buf);
}

static void test_alloc_failures(void)
{
    static const char json[] =
        "{\"__metadata__\":{\"format\":\"pt\",\"e\\u0301\":\"x\\ty\"},"
        "\"w\\\"1\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
        "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[16,20]},"
        "\"c\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],\"data_offsets\":[20,21]},"
        "\"a\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[21,29]}}";
    int failed = 0;
    for (uint64_t k = 1; k < 1000; k++) {
        st_header *h = NULL;
        st_error e;
        memset(&e, 0, sizeof e);
        st_alloc_fail_after(k);
        st_code rc = st_header_parse(J(json), 8 + sizeof json - 1 + 29, &h, &e);
        st_alloc_fail_after(0);
        if (rc == ST_OK) {
            CHECK(h && st_header_count(h) == 4 && st_header_metadata_count(h) == 2,
                  "ok after %d failures", failed);
            CHECK(failed >= 5, "expected several allocations, saw %d", failed);
            st_header_free(h);
            printf("allocation failure injection: %d failure points, all ST_ERR_NOMEM\n", failed);
            return;
        }
        failed++;
        CHECK(rc == ST_ERR_NOMEM && e.code == ST_ERR_NOMEM && h == NULL &&
                  strcmp(e.msg, "out of memory") == 0,
              "alloc %llu: %s", (unsigned long long)k, e.msg);
    }
    CHECK(0, "never succeeded");
}

int main(void)
{
    test_errors_and_alloc();
    test_dtypes();
    test_header_length();
    test_outcomes_table();
    test_depth();
    test_json_validate();
    test_lookup_and_metadata();
    test_big_header();
    test_alloc_failures();
    return harness_finish("test_core");
}
