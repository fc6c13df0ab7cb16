/*
 * harness.h - what the C tests and the fuzz target share: CHECK, a
 * deterministic random generator, a scratch directory, the upstream texts
 * the tests expect, and an independent model of NumPy basic indexing.
 *
 * Header-only (each test is one translation unit); every function is
 * static inline so a test that does not use one gets no warning.
 */
#ifndef ST_TEST_HARNESS_H
#define ST_TEST_HARNESS_H

#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#endif

#include "../core/st_core.h"
#include "../core/st_test_hooks.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================
 * MARK: CHECK
 * ====================================================================== */

/* After this many failures a test stops: the first ones are the useful ones. */
#define HARNESS_MAX_FAILURES 20

static int harness_checks = 0;
static int harness_failures = 0;

static inline void harness_fail(const char *file, int line, const char *cond, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static inline void harness_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: CHECK(%s) failed: ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (++harness_failures >= HARNESS_MAX_FAILURES) {
        fprintf(stderr, "%d failures: stopping\n", harness_failures);
        exit(1);
    }
}

/* Counts a check; a false one is reported (with the printf-style message)
 * and counted, and the test goes on. The fuzz target aborts at the end of
 * an input that failed any. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        harness_checks++;                                                                          \
        if (!(cond))                                                                               \
            harness_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                                  \
    } while (0)

/* Prints the summary line (on stderr: stdout may be a test's product) and
 * returns the test's exit status. */
static inline int harness_finish(const char *name)
{
    fprintf(stderr, "%s: %d checks, %d failures\n", name, harness_checks, harness_failures);
    return harness_failures ? 1 : 0;
}

/* ======================================================================
 * MARK: random numbers and scratch files
 * ====================================================================== */

/* xorshift64: deterministic, so a failure reproduces run after run. */
static inline uint64_t xorshift64(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

static uint64_t harness_rng = 0x1234567887654321ull;

static inline uint64_t rnd(void)
{
    return xorshift64(&harness_rng);
}

/* Uniform-ish in [lo, hi], both included. */
static inline int64_t rnd_range(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1));
}

static char harness_dir[256];

/* Creates a fresh directory under $TMPDIR (or /tmp) for the test's files;
 * exits if it cannot. */
static inline const char *harness_tmpdir(const char *name)
{
    const char *base = getenv("TMPDIR");
    snprintf(harness_dir, sizeof harness_dir, "%s/st_%s_XXXXXX", base ? base : "/tmp", name);
    if (mkdtemp(harness_dir) == NULL) {
        perror("mkdtemp");
        exit(2);
    }
    return harness_dir;
}

/* The whole file at path (malloc'ed, *len bytes), or NULL if unreadable. */
static inline uint8_t *harness_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 4096, n = 0, got;
    uint8_t *buf = NULL, *grown;
    if (f == NULL)
        return NULL;
    do {
        if ((grown = buf == NULL || n == cap ? realloc(buf, cap *= 2) : buf) == NULL) {
            free(buf);
            fclose(f);
            return NULL;
        }
        buf = grown;
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    *len = n;
    return buf;
}

/* ======================================================================
 * MARK: upstream texts the tests expect (docs/format.md §7)
 * ====================================================================== */

#define UPSTREAM_MISALIGNED                                                                        \
    "The slice is slicing for subbytes dtypes, and the slice does not end up at a byte "           \
    "boundary, this is invalid."
#define UPSTREAM_OVERFLOW "overflow computing buffer size from shape and/or element type"

/* ======================================================================
 * MARK: NumPy basic indexing, modelled independently of st_select
 * ====================================================================== */

typedef __int128 i128;

enum { REF_OK, REF_ERROR, REF_TOO_MANY_DIMS };

/* The model's answer: element shape, strides and offset, in elements. */
typedef struct ref_sel {
    size_t ndim;
    uint64_t shape[ST_MAX_DIMS];
    i128 stride[ST_MAX_DIMS];
    i128 offset;
} ref_sel;

/* Python's slice.indices(n) followed by len(range(...)). */
static inline int ref_slice(const st_index *ix, uint64_t n, i128 *start, i128 *step, uint64_t *len)
{
    i128 N = (i128)n, st = ix->has_step ? (i128)ix->step : 1, lo, hi, a, b, l = 0;
    if (st == 0)
        return REF_ERROR;
    lo = st > 0 ? 0 : -1;
    hi = st > 0 ? N : N - 1;
    a = !ix->has_start ? (st > 0 ? lo : hi) : ix->start;
    b = !ix->has_stop ? (st > 0 ? hi : lo) : ix->stop;
    if (ix->has_start && a < 0)
        a = a + N < lo ? lo : a + N;
    else if (ix->has_start && a > hi)
        a = hi;
    if (ix->has_stop && b < 0)
        b = b + N < lo ? lo : b + N;
    else if (ix->has_stop && b > hi)
        b = hi;
    if (st > 0 && b > a)
        l = (b - a - 1) / st + 1;
    if (st < 0 && a > b)
        l = (a - b - 1) / (-st) + 1;
    *start = a;
    *step = st;
    *len = (uint64_t)l;
    return REF_OK;
}

/* Appends a dim; REF_TOO_MANY_DIMS past ST_MAX_DIMS. */
static inline int ref_push(ref_sel *out, uint64_t shape, i128 stride)
{
    if (out->ndim >= ST_MAX_DIMS)
        return REF_TOO_MANY_DIMS;
    out->shape[out->ndim] = shape;
    out->stride[out->ndim] = stride;
    out->ndim++;
    return REF_OK;
}

/* NumPy basic indexing of t by idx[0..count), written from NumPy's docs. */
static inline int ref_select(const st_tensor *t, const st_index *idx, size_t count, ref_sel *out)
{
    size_t consumed = 0, ellipses = 0, dim = 0;
    i128 src_stride[ST_MAX_DIMS + 1], acc = 1;
    int rc = REF_OK;
    for (size_t k = 0; k < count; k++) {
        consumed += idx[k].kind == ST_INDEX_INT || idx[k].kind == ST_INDEX_SLICE;
        ellipses += idx[k].kind == ST_INDEX_ELLIPSIS;
    }
    if (ellipses > 1 || consumed > t->ndim)
        return REF_ERROR;
    if (t->ndim > ST_MAX_DIMS)
        return REF_TOO_MANY_DIMS;
    for (size_t d = t->ndim; d-- > 0;) { /* C order; capped: only empty tensors get there */
        src_stride[d] = acc;
        acc *= (i128)t->shape[d];
        if (acc > ((i128)1 << 62))
            acc = (i128)1 << 62;
    }
    memset(out, 0, sizeof *out);
    for (size_t k = 0; k <= count; k++) {
        const st_index *ix = k < count ? &idx[k] : NULL; /* NULL: the implicit trailing dims */
        size_t fill = ix == NULL                      ? (ellipses ? 0 : t->ndim - dim)
                      : ix->kind == ST_INDEX_ELLIPSIS ? t->ndim - consumed
                                                      : 0;
        for (size_t f = 0; f < fill; f++, dim++)
            rc = rc ? rc : ref_push(out, t->shape[dim], src_stride[dim]);
        if (ix == NULL || ix->kind == ST_INDEX_ELLIPSIS)
            continue;
        if (ix->kind == ST_INDEX_NEWAXIS) {
            rc = rc ? rc : ref_push(out, 1, 0);
        } else if (ix->kind == ST_INDEX_INT) {
            i128 v = ix->value, n = (i128)t->shape[dim];
            if (v < 0)
                v += n;
            if (v < 0 || v >= n)
                return REF_ERROR;
            out->offset += v * src_stride[dim++];
        } else {
            i128 a, st;
            uint64_t len;
            if (ref_slice(ix, t->shape[dim], &a, &st, &len) != REF_OK)
                return REF_ERROR;
            if (len)
                out->offset += a * src_stride[dim];
            rc = rc ? rc : ref_push(out, len, st * src_stride[dim]);
            dim++;
        }
        if (out->offset > ((i128)1 << 100))
            out->offset = (i128)1 << 100; /* empty tensors only */
    }
    return rc;
}

/* Number of elements of a model selection (0 if any dim is 0); unchecked:
 * for the small selections the tests gather. */
static inline uint64_t ref_nelements(const ref_sel *r)
{
    uint64_t n = 1;
    for (size_t d = 0; d < r->ndim; d++)
        n = r->shape[d] == 0 ? 0 : n * r->shape[d];
    return n;
}

/* Copies the model's selected elements (item bytes each), C order, from
 * src into dst; lo and hi receive the lowest and highest element index read.
 * Only for selections with at least one element. */
static inline void ref_gather(const ref_sel *r, size_t item, const uint8_t *src, uint8_t *dst,
                              i128 *lo, i128 *hi)
{
    uint64_t ctr[ST_MAX_DIMS] = {0}, n = ref_nelements(r);
    *lo = *hi = r->offset;
    for (uint64_t e = 0; e < n; e++) {
        i128 at = r->offset;
        for (size_t d = 0; d < r->ndim; d++)
            at += (i128)ctr[d] * r->stride[d];
        memcpy(dst + e * item, src + (size_t)at * item, item);
        *lo = at < *lo ? at : *lo;
        *hi = at > *hi ? at : *hi;
        for (size_t d = r->ndim; d-- > 0;) {
            if (++ctr[d] < r->shape[d])
                break;
            ctr[d] = 0;
        }
    }
}

#endif /* ST_TEST_HARNESS_H */
