/*
 * fuzz_header.c - libFuzzer target over the safetensors C core.
 *
 * The input is a whole file image. For every input the target:
 *   1. runs st_json_validate on the raw bytes (must not crash);
 *   2. runs st_header_length + st_header_parse (header JSON copied into an
 *      exactly sized heap block so ASan sees any over-read);
 *   3. on success, checks every accessor against the format's invariants
 *      (offset order tiles the data section, name order strictly increasing,
 *      find() returns each tensor, nbytes matches, metadata consistent);
 *   4. runs st_select with index items derived from the tensor bytes (which
 *      a mutator can change freely without breaking the file) plus a fixed
 *      set of edge patterns, checks the result against an independent
 *      NumPy-basic-indexing model, and st_selection_gather's output against
 *      an element-by-element copy;
 *   5. round-trips the parsed tensors through st_write_layout +
 *      st_write_to_memory + st_header_parse: same names, dtypes, shapes,
 *      metadata and bytes, and a second layout is byte-identical;
 *   6. repeats parse and layout with an allocation failure injected at a
 *      position derived from the input: the result is either the normal
 *      one or ST_ERR_NOMEM, never a crash or a leak.
 * A violated invariant is printed (CHECK, csrc/tests/harness.h) and the
 * input ends in abort(), which libFuzzer reports as a crash.
 *
 * Build: see .ci/fuzz.sh (clang -fsanitize=fuzzer,address,undefined).
 */
#include "../tests/harness.h"

/* Largest gather the target performs (bytes). */
#define MAX_GATHER (1u << 20)
/* Largest number of selections tried per tensor. */
#define MAX_SELECTIONS_PER_TENSOR 12

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int bytes_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return an < bn ? -1 : (an > bn ? 1 : 0);
}

/* ---------------------------------------------------------------------
 * Byte source for index items
 * --------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t n, i;
    uint64_t fallback;
} byte_src;

static uint8_t next_byte(byte_src *s)
{
    if (s->i < s->n)
        return s->p[s->i++];
    /* an exhausted source still yields varied items */
    return (uint8_t)xorshift64(&s->fallback);
}

/* A signed value chosen relative to a dim: small values, +-dim, extremes. */
static int64_t pick_value(byte_src *s, uint64_t dim)
{
    uint8_t b = next_byte(s);
    int64_t d = dim > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)dim;
    switch (b >> 5) {
    case 0:
    case 1:
    case 2: return (int64_t)(b & 0x1f) - 16;
    case 3: return d;
    case 4: return -d;
    case 5: return d - 1 - (b & 3);
    case 6: return (b & 1) ? INT64_MAX : INT64_MIN;
    default: {
        uint64_t v = 0;
        for (int k = 0; k < 8; k++)
            v = (v << 8) | next_byte(s);
        return (int64_t)v;
    }
    }
}

static size_t make_indices(byte_src *s, const st_tensor *t, st_index *idx, size_t cap)
{
    size_t count = next_byte(s) % (t->ndim + 3);
    if (count > cap)
        count = cap;
    for (size_t k = 0; k < count; k++) {
        uint64_t dim = t->ndim ? t->shape[k % t->ndim] : 1;
        uint8_t kind = next_byte(s);
        memset(&idx[k], 0, sizeof idx[k]);
        switch (kind % 8) {
        case 0:
        case 1:
        case 2:
            idx[k].kind = ST_INDEX_SLICE;
            idx[k].has_start = kind & 0x10;
            idx[k].has_stop = kind & 0x20;
            idx[k].has_step = kind & 0x40;
            if (idx[k].has_start)
                idx[k].start = pick_value(s, dim);
            if (idx[k].has_stop)
                idx[k].stop = pick_value(s, dim);
            if (idx[k].has_step) {
                int64_t st = pick_value(s, dim);
                /* mostly non-zero, but keep 0 and the extremes reachable */
                if (st == 0 && (kind & 0x80))
                    st = 1;
                idx[k].step = st;
            }
            break;
        case 3:
        case 4:
        case 5:
            idx[k].kind = ST_INDEX_INT;
            idx[k].value = pick_value(s, dim);
            break;
        case 6: idx[k].kind = ST_INDEX_ELLIPSIS; break;
        default: idx[k].kind = ST_INDEX_NEWAXIS; break;
        }
    }
    return count;
}

static void check_selection(const st_tensor *t, const st_index *idx, size_t count,
                            const uint8_t *tdata)
{
    st_selection sel;
    st_error err;
    memset(&sel, 0xA5, sizeof sel);
    st_code rc = st_select(t, idx, count, &sel, &err);
    unsigned bits = st_dtype_bits(t->dtype);
    bool subbyte = (bits % 8) != 0;
    uint64_t tbytes = t->end - t->begin;

    ref_sel ref;
    int r = ref_select(t, idx, count, &ref);

    if (rc != ST_OK) {
        CHECK(rc == ST_ERR_INVALID_SLICE || rc == ST_ERR_MISALIGNED_SLICE ||
                  rc == ST_ERR_INVALID_ARGUMENT || rc == ST_ERR_NOMEM ||
                  rc == ST_ERR_VALIDATION_OVERFLOW,
              "st_select returned unexpected code %d (%s)", (int)rc, err.msg);
        CHECK(err.code == rc, "err.code %d != rc %d", (int)err.code, (int)rc);
        CHECK(memchr(err.msg, 0, sizeof err.msg) != NULL, "unterminated message");
        /* A selection the model accepts must not be rejected, except for
         * sub-byte alignment and the dimension cap. */
        /* Documented limits: dims above INT64_MAX cannot be indexed with
         * int64 indices, and int64 arithmetic on empty tensors may overflow. */
        bool huge_dim = false;
        for (size_t d = 0; d < t->ndim; d++)
            if (t->shape[d] > (uint64_t)INT64_MAX)
                huge_dim = true;
        if (r == REF_OK && !subbyte && !huge_dim &&
            !(rc == ST_ERR_VALIDATION_OVERFLOW && tbytes == 0))
            CHECK(0, "st_select rejected a valid index (code %d: %s)", (int)rc, err.msg);
        return;
    }
    CHECK(r != REF_ERROR, "st_select accepted an index the NumPy model rejects");
    CHECK(sel.ndim <= ST_MAX_DIMS, "ndim %zu > ST_MAX_DIMS", sel.ndim);
    if (r == REF_TOO_MANY_DIMS)
        return; /* accepted beyond the cap: nothing to compare */

    CHECK(sel.ndim == ref.ndim, "ndim %zu, model %zu", sel.ndim, ref.ndim);
    uint64_t nel = 1;
    bool nel_ovf = false;
    for (size_t d = 0; d < sel.ndim; d++) {
        CHECK(sel.shape[d] == ref.shape[d], "dim %zu: shape %llu, model %llu", d,
              (unsigned long long)sel.shape[d], (unsigned long long)ref.shape[d]);
        if (__builtin_mul_overflow(nel, sel.shape[d], &nel))
            nel_ovf = true;
    }
    if (!nel_ovf)
        CHECK(sel.nelements == nel, "nelements %llu != product(shape) %llu",
              (unsigned long long)sel.nelements, (unsigned long long)nel);
    CHECK(!nel_ovf || sel.nelements == 0, "product of shape overflows");

    if (sel.nelements == 0) {
        CHECK(sel.span_offset <= tbytes && sel.span_len <= tbytes - sel.span_offset,
              "empty selection span [%llu,+%llu) outside %llu bytes",
              (unsigned long long)sel.span_offset, (unsigned long long)sel.span_len,
              (unsigned long long)tbytes);
        return;
    }
    CHECK(sel.span_offset <= tbytes && sel.span_len <= tbytes - sel.span_offset,
          "span [%llu,+%llu) outside tensor of %llu bytes", (unsigned long long)sel.span_offset,
          (unsigned long long)sel.span_len, (unsigned long long)tbytes);
    CHECK(sel.span_len > 0, "non-empty selection with empty span");
    if (subbyte)
        return; /* strides are in elements there; bytes go through the span */

    size_t item = bits / 8;
    /* byte range touched according to offset/strides */
    i128 lo = sel.offset, hi = sel.offset;
    for (size_t d = 0; d < sel.ndim; d++) {
        CHECK((i128)sel.strides[d] == ref.stride[d] * (i128)item || sel.shape[d] == 1,
              "dim %zu: stride %lld, model %lld", d, (long long)sel.strides[d],
              (long long)(ref.stride[d] * (i128)item));
        i128 ext = (i128)(sel.shape[d] - 1) * (i128)sel.strides[d];
        if (ext < 0)
            lo += ext;
        else
            hi += ext;
    }
    CHECK((i128)sel.offset == ref.offset * (i128)item, "offset %lld, model %lld",
          (long long)sel.offset, (long long)(ref.offset * (i128)item));
    hi += (i128)item;
    CHECK(lo >= 0 && hi <= (i128)tbytes, "strided view [%lld,%lld) outside %llu bytes",
          (long long)lo, (long long)hi, (unsigned long long)tbytes);
    CHECK((i128)sel.span_offset == lo && (i128)sel.span_len == hi - lo,
          "span [%llu,+%llu) is not the smallest range [%lld,%lld)",
          (unsigned long long)sel.span_offset, (unsigned long long)sel.span_len, (long long)lo,
          (long long)hi);

    if (sel.nelements > MAX_GATHER / item)
        return;
    size_t out_len = (size_t)sel.nelements * item;
    uint8_t *dst = malloc(out_len), *want = malloc(out_len);
    uint8_t *src = malloc(tbytes ? (size_t)tbytes : 1);
    if (dst && want && src) {
        i128 lo_el, hi_el;
        memcpy(src, tdata, (size_t)tbytes); /* exactly sized: ASan sees over-reads */
        st_selection_gather(&sel, item, src, dst);
        ref_gather(&ref, item, src, want, &lo_el, &hi_el);
        CHECK(memcmp(dst, want, out_len) == 0, "gathered bytes differ from the model's");
        CHECK((i128)sel.span_offset == lo_el * (i128)item &&
                  (i128)sel.span_len == (hi_el - lo_el + 1) * (i128)item,
              "span differs from the model's");
    }
    free(dst);
    free(want);
    free(src);
}

static void exercise_selections(const st_tensor *t, const uint8_t *tdata, byte_src *s)
{
    st_index idx[ST_MAX_DIMS + 4];
    /* fixed patterns first: whole tensor, [0], [-1], [::-1], [..., None], [::0] */
    check_selection(t, NULL, 0, tdata);
    memset(idx, 0, sizeof idx);
    idx[0].kind = ST_INDEX_INT;
    idx[0].value = 0;
    check_selection(t, idx, 1, tdata);
    idx[0].value = -1;
    check_selection(t, idx, 1, tdata);
    idx[0].kind = ST_INDEX_SLICE;
    idx[0].has_step = true;
    idx[0].step = -1;
    check_selection(t, idx, 1, tdata);
    idx[0].step = 0;
    check_selection(t, idx, 1, tdata);
    idx[0].step = INT64_MIN;
    idx[0].has_start = true;
    idx[0].start = INT64_MAX;
    check_selection(t, idx, 1, tdata);
    memset(idx, 0, sizeof idx);
    idx[0].kind = ST_INDEX_ELLIPSIS;
    idx[1].kind = ST_INDEX_NEWAXIS;
    check_selection(t, idx, 2, tdata);
    idx[1].kind = ST_INDEX_ELLIPSIS;
    check_selection(t, idx, 2, tdata);
    /* one int per dim at the last element */
    if (t->ndim <= ST_MAX_DIMS) {
        for (size_t d = 0; d < t->ndim; d++) {
            idx[d].kind = ST_INDEX_INT;
            idx[d].value = -1;
        }
        check_selection(t, idx, t->ndim, tdata);
        idx[t->ndim].kind = ST_INDEX_INT;
        check_selection(t, idx, t->ndim + 1, tdata); /* too many indices */
    }
    /* derived from the fuzz bytes */
    for (int k = 0; k < MAX_SELECTIONS_PER_TENSOR; k++) {
        size_t n = make_indices(s, t, idx, sizeof idx / sizeof idx[0]);
        check_selection(t, idx, n, tdata);
        if (s->i >= s->n && k >= 3)
            break;
    }
}

/* ---------------------------------------------------------------------
 * Header checks
 * --------------------------------------------------------------------- */

static void check_header(const st_header *h, const uint8_t *data, size_t size, uint64_t n)
{
    uint64_t data_start = st_header_data_start(h);
    CHECK(data_start == 8 + n, "data_start %llu != 8 + N", (unsigned long long)data_start);
    size_t count = st_header_count(h);
    uint64_t cursor = 0;
    for (size_t i = 0; i < count; i++) {
        const st_tensor *t = st_header_tensor(h, i);
        CHECK(t != NULL, "tensor %zu is NULL", i);
        CHECK(t->begin == cursor, "tensor %zu begins at %llu, cursor %llu", i,
              (unsigned long long)t->begin, (unsigned long long)cursor);
        CHECK(t->end >= t->begin, "tensor %zu reversed", i);
        CHECK((unsigned)t->dtype < ST_DTYPE__COUNT, "bad dtype %d", (int)t->dtype);
        CHECK(t->ndim == 0 || t->shape != NULL, "NULL shape");
        CHECK(t->name_len == 0 || t->name != NULL, "NULL name");
        uint64_t nb = 0;
        st_error err;
        st_code rc = st_tensor_nbytes(t->dtype, t->shape, t->ndim, &nb, &err);
        CHECK(rc == ST_OK, "st_tensor_nbytes fails on a parsed tensor: %s", err.msg);
        CHECK(nb == t->end - t->begin, "nbytes %llu != end-begin %llu", (unsigned long long)nb,
              (unsigned long long)(t->end - t->begin));
        /* nelements * bits consistent with nbytes */
        unsigned __int128 nel = 1;
        for (size_t d = 0; d < t->ndim; d++) {
            nel *= t->shape[d];
            if (nel > ((unsigned __int128)1 << 64))
                nel = (unsigned __int128)1 << 64;
        }
        CHECK(nel * st_dtype_bits(t->dtype) == (unsigned __int128)nb * 8,
              "product(shape) * bits != 8 * nbytes");
        const st_tensor *f = st_header_find(h, t->name, t->name_len);
        CHECK(f == t, "find(name of tensor %zu) returned another tensor", i);
        cursor = t->end;
    }
    CHECK(data_start + cursor == size, "tensors do not cover the file: %llu + %llu != %zu",
          (unsigned long long)data_start, (unsigned long long)cursor, size);

    const st_tensor *prev = NULL;
    for (size_t i = 0; i < count; i++) {
        const st_tensor *t = st_header_tensor_by_name_order(h, i);
        CHECK(t != NULL, "by_name_order(%zu) is NULL", i);
        CHECK(st_header_find(h, t->name, t->name_len) == t, "find mismatch (name order)");
        if (prev)
            CHECK(bytes_cmp(prev->name, prev->name_len, t->name, t->name_len) < 0,
                  "name order not strictly increasing at %zu", i);
        prev = t;
    }
    CHECK(st_header_find(h, "\xff\xfe-not-a-name", 14) == NULL, "found an impossible name");

    size_t mc = st_header_metadata_count(h);
    if (!st_header_has_metadata(h))
        CHECK(mc == 0, "metadata items without metadata");
    for (size_t i = 0; i < mc; i++) {
        const st_metadata_item *m = st_header_metadata_item(h, i);
        CHECK(m != NULL, "metadata item %zu NULL", i);
        CHECK(m->key_len == 0 || m->key, "NULL key");
        CHECK(m->value_len == 0 || m->value, "NULL value");
        /* touch every byte so ASan checks the lengths */
        volatile uint8_t sink = 0;
        for (size_t k = 0; k < m->key_len; k++)
            sink ^= (uint8_t)m->key[k];
        for (size_t k = 0; k < m->value_len; k++)
            sink ^= (uint8_t)m->value[k];
        (void)sink;
    }
    (void)data;
}

/* ---------------------------------------------------------------------
 * Write round-trip
 * --------------------------------------------------------------------- */

static void round_trip(const st_header *h, const uint8_t *data)
{
    size_t count = st_header_count(h);
    uint64_t data_start = st_header_data_start(h);
    st_write_tensor *wt = calloc(count ? count : 1, sizeof *wt);
    size_t *order = calloc(count ? count : 1, sizeof *order);
    size_t mc = st_header_metadata_count(h);
    st_metadata_item *md = calloc(mc ? mc : 1, sizeof *md);
    uint8_t *file = NULL;
    st_layout lay = {0}, lay2 = {0};
    st_header *h2 = NULL;
    if (!wt || !order || !md)
        goto out;
    /* give the writer the tensors in name order: it must re-sort them */
    for (size_t i = 0; i < count; i++) {
        const st_tensor *t = st_header_tensor_by_name_order(h, i);
        wt[i].name = t->name;
        wt[i].name_len = t->name_len;
        wt[i].dtype = t->dtype;
        wt[i].ndim = t->ndim;
        wt[i].shape = t->shape;
        wt[i].data = data + data_start + t->begin;
        wt[i].data_len = t->end - t->begin;
    }
    for (size_t i = 0; i < mc; i++)
        md[i] = *st_header_metadata_item(h, i);
    bool has_md = st_header_has_metadata(h);

    st_error err;
    lay = (st_layout){.tensors = wt,
                      .count = count,
                      .metadata = has_md ? md : NULL,
                      .metadata_count = mc,
                      .has_metadata = has_md,
                      .order = order};
    st_code rc = st_write_layout(&lay, &err);
    size_t hsize = lay.header_size;
    uint64_t total = lay.total_size;
    if (rc == ST_ERR_NOMEM)
        goto out;
    CHECK(rc == ST_OK, "st_write_layout failed on a parsed file: %s", err.msg);
    CHECK(hsize >= 8 && hsize % 8 == 0, "header size %zu not a multiple of 8", hsize);
    {
        bool *seen = calloc(count ? count : 1, 1);
        CHECK(seen != NULL, "oom");
        for (size_t i = 0; i < count; i++) {
            CHECK(order[i] < count && !seen[order[i]], "order is not a permutation");
            seen[order[i]] = true;
        }
        free(seen);
    }
    uint64_t dsum = 0;
    for (size_t i = 0; i < count; i++)
        dsum += wt[i].data_len;
    CHECK(total == hsize + dsum, "total %llu != header %zu + data %llu", (unsigned long long)total,
          hsize, (unsigned long long)dsum);

    file = malloc(total ? (size_t)total : 1);
    if (!file)
        goto out;
    st_write_to_memory(&lay, file);
    CHECK(memcmp(file, lay.header, hsize) == 0, "file does not start with the header");

    uint64_t n2 = 0;
    rc = st_header_length(file, 8, total, &n2, &err);
    CHECK(rc == ST_OK, "written length prefix rejected: %s", err.msg);
    CHECK(n2 + 8 == hsize, "prefix N %llu != header size %zu - 8", (unsigned long long)n2, hsize);
    rc = st_header_parse(file + 8, (size_t)n2, total, &h2, &err);
    if (rc == ST_ERR_NOMEM)
        goto out;
    CHECK(rc == ST_OK, "written header rejected by the reader: %s (offset %llu)", err.msg,
          (unsigned long long)err.offset);
    CHECK(st_header_count(h2) == count, "count %zu -> %zu", count, st_header_count(h2));
    for (size_t i = 0; i < count; i++) {
        const st_tensor *t = st_header_tensor_by_name_order(h, i);
        const st_tensor *u = st_header_find(h2, t->name, t->name_len);
        CHECK(u != NULL, "tensor %zu lost in the round trip", i);
        CHECK(u->dtype == t->dtype && u->ndim == t->ndim, "dtype/ndim changed");
        CHECK(t->ndim == 0 || memcmp(u->shape, t->shape, t->ndim * sizeof *t->shape) == 0,
              "shape changed");
        CHECK(u->end - u->begin == t->end - t->begin, "size changed");
        CHECK(memcmp(file + st_header_data_start(h2) + u->begin, data + data_start + t->begin,
                     (size_t)(t->end - t->begin)) == 0,
              "tensor bytes changed");
        /* file order = order[] (zero-length tensors sharing an offset are
         * ordered by name by the reader, so only non-empty ones are fixed) */
        const st_tensor *o = st_header_tensor(h2, i);
        CHECK(o->end == o->begin ||
                  bytes_cmp(o->name, o->name_len, wt[order[i]].name, wt[order[i]].name_len) == 0,
              "file order differs from order[]");
        /* writer order: dtype descending, then name ascending */
        if (i > 0 && !(st_header_tensor(h2, i - 1)->end == st_header_tensor(h2, i - 1)->begin &&
                       o->end == o->begin)) {
            const st_tensor *p = st_header_tensor(h2, i - 1);
            CHECK(p->dtype > o->dtype ||
                      (p->dtype == o->dtype &&
                       bytes_cmp(p->name, p->name_len, o->name, o->name_len) < 0),
                  "writer order violated at %zu", i);
        }
    }
    CHECK(st_header_has_metadata(h2) == has_md, "metadata presence changed");
    CHECK(st_header_metadata_count(h2) == mc, "metadata count %zu -> %zu", mc,
          st_header_metadata_count(h2));
    for (size_t i = 0; i < mc; i++) {
        const st_metadata_item *a = &md[i], *b = st_header_metadata_item(h2, i);
        CHECK(bytes_cmp(a->key, a->key_len, b->key, b->key_len) == 0 &&
                  bytes_cmp(a->value, a->value_len, b->value, b->value_len) == 0,
              "metadata item %zu changed", i);
    }
    /* determinism: laying out the re-read file gives the same header bytes */
    {
        size_t *order2 = calloc(count ? count : 1, sizeof *order2);
        st_write_tensor *wt2 = calloc(count ? count : 1, sizeof *wt2);
        st_metadata_item *md2 = calloc(mc ? mc : 1, sizeof *md2);
        if (order2 && wt2 && md2) {
            for (size_t i = 0; i < count; i++) {
                const st_tensor *t = st_header_tensor(h2, count - 1 - i);
                wt2[i] = (st_write_tensor){
                    t->name,          t->name_len, t->dtype,
                    t->ndim,          t->shape,    file + st_header_data_start(h2) + t->begin,
                    t->end - t->begin};
            }
            for (size_t i = 0; i < mc; i++)
                md2[i] = *st_header_metadata_item(h2, i);
            lay2 = (st_layout){.tensors = wt2,
                               .count = count,
                               .metadata = has_md ? md2 : NULL,
                               .metadata_count = mc,
                               .has_metadata = has_md,
                               .order = order2};
            rc = st_write_layout(&lay2, &err);
            if (rc != ST_ERR_NOMEM) {
                CHECK(rc == ST_OK, "second layout failed: %s", err.msg);
                CHECK(lay2.header_size == hsize && lay2.total_size == total &&
                          memcmp(lay.header, lay2.header, hsize) == 0,
                      "layout is not deterministic");
            }
        }
        free(order2);
        free(wt2);
        free(md2);
    }
out:
    if (h2)
        st_header_free(h2);
    st_free(lay.header);
    st_free(lay2.header);
    free(file);
    free(wt);
    free(order);
    free(md);
}

/* ---------------------------------------------------------------------
 * Allocation-failure injection
 * --------------------------------------------------------------------- */

static void inject_failures(const uint8_t *json, size_t n, uint64_t size, st_code normal,
                            uint64_t seed)
{
    for (int round = 0; round < 2; round++) {
        uint64_t k = 1 + ((seed >> (round * 8)) % (round ? 64 : 8));
        st_header *h = NULL;
        st_error err;
        st_alloc_fail_after(k);
        st_code rc = st_header_parse(json, n, size, &h, &err);
        st_alloc_fail_after(0);
        CHECK(rc == normal || rc == ST_ERR_NOMEM,
              "with allocation %llu failing, parse gave code %d (%s), normally %d",
              (unsigned long long)k, (int)rc, err.msg, (int)normal);
        CHECK((rc == ST_OK) == (h != NULL), "header pointer inconsistent with result");
        if (h)
            st_header_free(h);
    }
}

/* ---------------------------------------------------------------------
 * Entry point
 * --------------------------------------------------------------------- */

static void test_one_input(const uint8_t *data, size_t size)
{
    st_error err;
    uint64_t seed = fnv1a(data, size);

    /* 1. strict JSON validator on the raw input (exact-size copy) */
    {
        uint8_t *copy = malloc(size ? size : 1);
        if (!copy)
            return;
        memcpy(copy, data, size);
        st_code rc = st_json_validate(copy, size, &err);
        CHECK(rc == ST_OK || err.code == rc, "validate: err.code mismatch");
        free(copy);
    }

    /* 2. header */
    uint64_t n = 0;
    size_t plen = size < 8 ? size : 8;
    st_code rc = st_header_length(data, plen, size, &n, &err);
    if (rc != ST_OK) {
        CHECK(err.code == rc, "length: err.code mismatch");
        CHECK(size < 8 || rc != ST_ERR_HEADER_TOO_SMALL, "too small with %zu bytes", size);
        return;
    }
    CHECK(size >= 8 && n <= ST_MAX_HEADER_SIZE && n <= size - 8,
          "accepted N=%llu for a %zu-byte file", (unsigned long long)n, size);

    uint8_t *json = malloc(n ? (size_t)n : 1);
    if (!json)
        return;
    memcpy(json, data + 8, (size_t)n);
    st_header *h = NULL;
    rc = st_header_parse(json, (size_t)n, size, &h, &err);
    st_code normal = rc;
    if (rc != ST_OK) {
        CHECK(h == NULL || rc == ST_OK, "header returned with an error");
        CHECK(err.code == rc, "parse: err.code mismatch");
        CHECK(rc != ST_ERR_NOMEM, "parse ran out of memory on a %zu-byte input", size);
        CHECK(memchr(err.msg, 0, sizeof err.msg) != NULL, "unterminated message");
        /* header errors point into the header; the coverage error may name
         * the expected end of the data, which lies beyond a truncated file */
        if (rc != ST_ERR_METADATA_INCOMPLETE)
            CHECK(err.offset <= 8 + n, "error offset %llu beyond the header (8 + %llu)",
                  (unsigned long long)err.offset, (unsigned long long)n);
    } else {
        CHECK(h != NULL, "OK without a header");
        /* the strict validator must accept what the parser accepted */
        st_error verr;
        st_code vrc = st_json_validate(json, (size_t)n, &verr);
        CHECK(vrc == ST_OK, "parser accepted a header the validator rejects: %s", verr.msg);

        check_header(h, data, size, n);

        /* 4. selections: index bytes come from the data section */
        uint64_t ds = st_header_data_start(h);
        byte_src src = {data + ds, size - (size_t)ds, 0, seed | 1};
        if (src.n == 0) {
            src.p = json;
            src.n = (size_t)n;
        }
        for (size_t i = 0; i < st_header_count(h) && i < 16; i++) {
            const st_tensor *t = st_header_tensor(h, i);
            exercise_selections(t, data + ds + t->begin, &src);
        }

        /* 5. write round-trip */
        round_trip(h, data);
        st_header_free(h);
    }

    /* 6. allocation failures */
    inject_failures(json, (size_t)n, size, normal, seed);
    free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    test_one_input(data, size);
    if (harness_failures)
        abort();
    return 0;
}
