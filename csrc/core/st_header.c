/*
 * st_header.c - header length check, parse and validation (docs/format.md §6 rules 1-8, messages of
 * §7), streaming over the JSON with st_json (no DOM). Errors come as upstream's serde model gives
 * them: syntax errors, errors in "__metadata__", a second "__metadata__" and a top level that is
 * not an object where they happen; errors inside tensor entries (types, unknown dtype, missing or
 * duplicate fields, data_offsets length) are deferred, as upstream deserializes the buffered
 * entries (serde "flatten") after the whole object: the first one is reported at the end of the
 * top-level object, and only if the rest is valid JSON (err->offset still points at the value).
 * Stricter than upstream: an entry given as an array is rejected; numbers in ignored fields are
 * only checked for syntax. Names and metadata live in one arena as large as the header; records and
 * dims in growing arrays; names in a hash table.
 */
#define _GNU_SOURCE /* qsort_r */

#include "st_internal.h"
#include "st_json.h"

#include <endian.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rec {
    st_tensor t;
    size_t shape_off; /* into shapes, fixed up at the end */
    size_t pos;       /* index of the name's quote in the JSON */
    uint32_t hash;    /* low bits of the name's st_hash */
} rec;

struct st_header {
    uint64_t data_start;
    size_t count;
    rec *recs;       /* offset order */
    size_t *by_name; /* indices into recs, name order */
    uint64_t *hash;  /* hash32 << 32 | (index + 1), 0 = empty; < 2^32 tensors fit in 100 MB */
    size_t hash_cap;
    uint64_t *shapes;
    char *arena;
    bool has_metadata;
    size_t meta_count;
    st_metadata_item *meta;
    st_hash_key hash_key; /* random per header: see st_internal.h */
};

typedef struct parser {
    st_json j;
    st_error *err;
    st_header *h; /* what is being built */
    size_t arena_used, caprec, nshape, capshape, capmeta;
    bool seen_meta, deferred;
    size_t deferred_off;
    char deferred_msg[ST_ERROR_MSG_MAX];
} parser;

/* MARK: helpers */

/* Length of at most max bytes of s, cut on a UTF-8 character boundary. */
static size_t clip_utf8(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    size_t k = max;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    return k;
}

/* Appends text to out[0..cap) at *o, keeping room for the NUL. */
static void put_text(char *out, size_t cap, size_t *o, const char *text)
{
    for (; *text && *o + 1 < cap; text++)
        out[(*o)++] = *text;
}

void st_debug_str(const char *s, size_t n, char *out, size_t cap)
{
    static const char plain[6] = {'"', '\\', '\n', '\r', '\t', '\0'}, escaped[] = "\"\\nrt0";
    size_t o = 0, lim = clip_utf8(s, n, 160);
    put_text(out, cap, &o, "\"");
    for (size_t i = 0; i < lim; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *e = memchr(plain, c, sizeof plain);
        char tmp[12] = {(char)c, '\0'};
        if (e != NULL)
            snprintf(tmp, sizeof tmp, "\\%c", escaped[e - plain]);
        else if (c < 0x20 || c == 0x7F)
            snprintf(tmp, sizeof tmp, "\\u{%x}", c);
        put_text(out, cap, &o, tmp);
    }
    put_text(out, cap, &o, lim < n ? "...\"" : "\"");
    out[o < cap ? o : cap - 1] = '\0';
}

/* serde's Unexpected for a number: "integer `1`", "floating point `1.5`". */
static void describe_number(const st_jnum *num, char *desc, size_t cap)
{
    char f[96] = "";
    if (num->kind == ST_JNUM_F64)
        st_json_format_float(num->f, f, sizeof f);
    if (num->kind == ST_JNUM_U64)
        snprintf(desc, cap, "integer `%llu`", (unsigned long long)num->u);
    else if (num->kind == ST_JNUM_I64)
        snprintf(desc, cap, "integer `%lld`", (long long)num->i);
    else
        snprintf(desc, cap, "floating point `%s`", f);
}

/* Reads the value at the cursor and describes it as serde's Unexpected ("integer `1`", "string
 * \"x\"", "sequence", ...). Scalars are consumed; arrays/objects only with consume_containers. */
static st_code describe_value(parser *p, bool consume_containers, char *desc, size_t cap)
{
    st_jtype t;
    st_code rc;
    if ((rc = st_json_value_start(&p->j, &t)) != ST_OK)
        return rc;
    switch (t) {
    case ST_JT_STRING: {
        const char *s;
        size_t n;
        char q[200];
        if ((rc = st_json_string(&p->j, &s, &n)) != ST_OK)
            return rc;
        st_debug_str(s, n, q, sizeof q);
        snprintf(desc, cap, "string %s", q);
        return ST_OK;
    }
    case ST_JT_NUMBER: {
        st_jnum num;
        if ((rc = st_json_number(&p->j, true, &num)) == ST_OK)
            describe_number(&num, desc, cap);
        return rc;
    }
    case ST_JT_TRUE:
    case ST_JT_FALSE:
        snprintf(desc, cap, "boolean `%s`", t == ST_JT_TRUE ? "true" : "false");
        return st_json_literal(&p->j);
    case ST_JT_NULL: snprintf(desc, cap, "null"); return st_json_literal(&p->j);
    case ST_JT_ARRAY:
    case ST_JT_OBJECT:
        snprintf(desc, cap, "%s", t == ST_JT_ARRAY ? "sequence" : "map");
        return consume_containers ? st_json_skip(&p->j) : ST_OK;
    default: return ST_OK; /* unreachable: value_start rejected END/BAD */
    }
}

/* Records a tensor-entry error to report at the end of the object. */
__attribute__((format(printf, 3, 4))) static void defer(parser *p, size_t off, const char *fmt, ...)
{
    va_list ap;
    if (p->deferred)
        return;
    p->deferred = true;
    p->deferred_off = off;
    va_start(ap, fmt);
    vsnprintf(p->deferred_msg, sizeof p->deferred_msg - 64, fmt, ap);
    va_end(ap);
}

/* "invalid type: <the value>, expected <expected>": deferred (the value is
 * consumed), or now as serde_json's peek_invalid_type, reported just after
 * the scalar (or at the bracket of a container). */
static st_code invalid_type(parser *p, bool deferred, const char *expected)
{
    char desc[256] = "", text[400];
    st_json_peek(&p->j);
    size_t start = p->j.pos;
    st_code rc = describe_value(p, deferred, desc, sizeof desc);
    snprintf(text, sizeof text, "invalid type: %s, expected %s", desc, expected);
    if (rc != ST_OK || !deferred)
        return rc != ST_OK ? rc : st_json_fail(&p->j, p->j.pos, start, text);
    defer(p, start, "%s", text);
    return ST_OK;
}

static const char *arena_copy(parser *p, const char *s, size_t n)
{
    /* Never overflows: the arena is as large as the JSON, decoded strings no longer. */
    char *d = p->h->arena + p->arena_used;
    memcpy(d, s, n); /* s points into the JSON or the scratch buffer: never NULL */
    p->arena_used += n;
    return d;
}

/* MARK: tensor entries */

/* Reads one usize; an error is deferred if it is not one. */
static st_code read_usize(parser *p, uint64_t *v)
{
    st_jnum num;
    char desc[256];
    st_code rc;
    if (st_json_peek(&p->j) != ST_JT_NUMBER)
        return invalid_type(p, true, "usize");
    size_t start = p->j.pos;
    if ((rc = st_json_number(&p->j, true, &num)) != ST_OK)
        return rc;
    *v = num.u;
    if (num.kind == ST_JNUM_U64)
        return ST_OK;
    describe_number(&num, desc, sizeof desc);
    defer(p, start, "invalid %s: %s, expected usize", num.kind == ST_JNUM_I64 ? "value" : "type",
          desc);
    return ST_OK;
}

/* The fields of one tensor entry, as read so far. Once an error in it is deferred
 * (p->deferred) the rest is only checked for syntax. */
enum { FIELD_DTYPE, FIELD_SHAPE, FIELD_OFFSETS, FIELD_COUNT };
static const char *const field_names[FIELD_COUNT] = {"dtype", "shape", "data_offsets"};

typedef struct entry {
    bool have[FIELD_COUNT];
    st_dtype dtype;
    size_t shape_off, ndim; /* the dims are p->h->shapes[shape_off .. + ndim) */
    uint64_t offsets[2];
} entry;

/* (Re)builds the name table with nc slots (a power of 2, kept at most half
 * full) over the records in their order now. */
static st_code rehash(parser *p, size_t nc)
{
    st_header *h = p->h;
    uint64_t *nh = st_calloc(nc, sizeof *nh);
    if (nh == NULL)
        return st_error_code(p->err, ST_ERR_NOMEM, 0);
    for (size_t i = 0; i < h->count; i++) {
        size_t k = h->recs[i].hash & (nc - 1);
        while (nh[k])
            k = (k + 1) & (nc - 1);
        nh[k] = ((uint64_t)h->recs[i].hash << 32) | (uint64_t)(i + 1);
    }
    st_free(h->hash);
    h->hash = nh;
    h->hash_cap = nc;
    return ST_OK;
}

/* The slot of a name in a name table over recs: its slot, or the empty slot where it would go. */
static size_t find_slot(const uint64_t *table, size_t mask, const rec *recs, uint32_t full,
                        const char *name, size_t name_len)
{
    size_t k = full & mask;
    for (; table[k]; k = (k + 1) & mask) {
        const st_tensor *t = &recs[(uint32_t)table[k] - 1].t;
        if ((uint32_t)(table[k] >> 32) == full && t->name_len == name_len &&
            (name_len == 0 || memcmp(t->name, name, name_len) == 0))
            return k;
    }
    return k;
}

static st_code store_tensor(parser *p, const char *name, size_t name_len, size_t pos,
                            const entry *e)
{
    st_header *h = p->h;
    st_code rc;
    if ((h->count + 1) * 2 > h->hash_cap &&
        (rc = rehash(p, h->hash_cap ? h->hash_cap * 2 : 64)) != ST_OK)
        return rc;
    uint32_t full = (uint32_t)st_hash(h->hash_key, name, name_len);
    size_t k = find_slot(h->hash, h->hash_cap - 1, h->recs, full, name, name_len);
    if (h->hash[k] == 0) { /* else a duplicate name: the last one wins */
        if (!st_grow((void **)&h->recs, &p->caprec, h->count + 1, sizeof *h->recs))
            return st_error_code(p->err, ST_ERR_NOMEM, 0);
        h->hash[k] = ((uint64_t)full << 32) | (uint64_t)++h->count;
    }
    rec *r = &h->recs[(uint32_t)h->hash[k] - 1];
    r->t = (st_tensor){name, name_len, e->dtype, e->ndim, NULL, e->offsets[0], e->offsets[1]};
    r->shape_off = e->shape_off;
    r->pos = pos;
    r->hash = full;
    return ST_OK;
}

/* "`BOOL`, `F4`, ...": every header spelling, as serde lists the variants. */
static void dtype_list(char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < ST_DTYPE__COUNT && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s`%s`", i ? ", " : "",
                                 st_dtype_name((st_dtype)i));
}

static st_code read_dtype(parser *p, size_t vstart, entry *e)
{
    const char *s;
    size_t sn;
    st_code rc;
    if ((rc = st_json_string(&p->j, &s, &sn)) != ST_OK)
        return rc;
    if (!st_dtype_from_name(s, sn, &e->dtype)) {
        char q[200], list[256];
        st_debug_str(s, sn, q, sizeof q);
        q[strlen(q) - 1] = '\0'; /* serde prints the variant in backquotes, not quoted */
        dtype_list(list, sizeof list);
        defer(p, vstart, "unknown variant `%s`, expected one of %s", q + 1, list);
    }
    return ST_OK;
}

/* Reads an array of usize (*count elements): element i to out[i] while i < cap, or onto
 * p->h->shapes with to_shapes. After a bad one (deferred), and past cap, elements are only
 * checked for syntax. */
static st_code read_usize_array(parser *p, bool to_shapes, uint64_t *out, size_t cap, size_t *count)
{
    bool first = true, more;
    st_code rc;
    *count = 0;
    if ((rc = st_json_enter(&p->j)) != ST_OK)
        return rc;
    for (;;) {
        if ((rc = st_json_array_next(&p->j, &first, &more)) != ST_OK)
            return rc;
        if (!more)
            return ST_OK;
        size_t i = (*count)++;
        if (p->deferred || (!to_shapes && i >= cap)) {
            if ((rc = st_json_skip(&p->j)) != ST_OK)
                return rc;
            continue;
        }
        uint64_t v = 0;
        if ((rc = read_usize(p, &v)) != ST_OK)
            return rc;
        if (p->deferred)
            continue;
        if (!to_shapes)
            out[i] = v;
        else if (!st_grow((void **)&p->h->shapes, &p->capshape, p->nshape + 1,
                          sizeof *p->h->shapes))
            return st_error_code(p->err, ST_ERR_NOMEM, 0);
        else
            p->h->shapes[p->nshape++] = v;
    }
}

/* Reads the value of a known field; a second one is an error (deferred). */
static st_code read_field(parser *p, int field, size_t kstart, entry *e)
{
    static const st_jtype types[FIELD_COUNT] = {ST_JT_STRING, ST_JT_ARRAY, ST_JT_ARRAY};
    static const char *const expected[FIELD_COUNT] = {"string or map", "a sequence",
                                                      "a tuple of size 2"};
    st_jtype t;
    st_code rc;
    size_t count;
    if (e->have[field]) {
        defer(p, kstart, "duplicate field `%s`", field_names[field]);
        return st_json_skip(&p->j);
    }
    e->have[field] = true;
    if ((rc = st_json_value_start(&p->j, &t)) != ST_OK)
        return rc;
    size_t vstart = p->j.pos;
    if (t != types[field])
        return invalid_type(p, true, expected[field]);
    if (field == FIELD_DTYPE)
        return read_dtype(p, vstart, e);
    if (field == FIELD_SHAPE) {
        e->shape_off = p->nshape;
        return read_usize_array(p, true, NULL, 0, &e->ndim);
    }
    rc = read_usize_array(p, false, e->offsets, 2, &count);
    if (rc == ST_OK && !p->deferred && count != 2)
        defer(p, vstart, "invalid length %zu, expected %s", count,
              count < 2 ? "a tuple of size 2" : "2 elements in sequence");
    return rc;
}

static int field_index(const char *k, size_t kn)
{
    for (int f = 0; f < FIELD_COUNT; f++)
        if (strlen(field_names[f]) == kn && memcmp(field_names[f], k, kn) == 0)
            return f;
    return -1;
}

static st_code parse_tensor(parser *p, const char *name, size_t name_len, size_t pos)
{
    st_jtype t;
    st_code rc;
    bool first = true, more;
    entry e = {.dtype = ST_BOOL, .shape_off = p->nshape};

    if ((rc = st_json_value_start(&p->j, &t)) != ST_OK)
        return rc;
    if (p->deferred)
        return st_json_skip(&p->j); /* only syntax matters any more */
    if (t != ST_JT_OBJECT)
        return invalid_type(p, true, "struct TensorInfo");
    size_t entry_start = p->j.pos;
    if ((rc = st_json_enter(&p->j)) != ST_OK)
        return rc;
    for (;;) {
        const char *k;
        size_t kn, kstart;
        if ((rc = st_json_object_next(&p->j, &first, &more, &k, &kn, &kstart, NULL)) != ST_OK)
            return rc;
        if (!more)
            break;
        int field = field_index(k, kn); /* unknown fields are ignored */
        rc = p->deferred || field < 0 ? st_json_skip(&p->j) : read_field(p, field, kstart, &e);
        if (rc != ST_OK)
            return rc;
    }
    if (p->deferred)
        return ST_OK;
    for (int f = 0; f < FIELD_COUNT; f++)
        if (!e.have[f]) {
            defer(p, entry_start, "missing field `%s`", field_names[f]);
            return ST_OK;
        }
    return store_tensor(p, name, name_len, pos, &e);
}

static st_code parse_metadata(parser *p)
{
    st_jtype t;
    st_code rc;
    bool first = true, more;
    if ((rc = st_json_value_start(&p->j, &t)) != ST_OK)
        return rc;
    if (t == ST_JT_NULL) /* as absent */
        return st_json_literal(&p->j);
    if (t != ST_JT_OBJECT)
        return invalid_type(p, false, "a map");
    p->h->has_metadata = true;
    if ((rc = st_json_enter(&p->j)) != ST_OK)
        return rc;
    for (;;) {
        const char *k, *v;
        size_t kn, vn;
        if ((rc = st_json_object_next(&p->j, &first, &more, &k, &kn, NULL, NULL)) != ST_OK)
            return rc;
        if (!more)
            return ST_OK;
        k = arena_copy(p, k, kn);
        if ((rc = st_json_value_start(&p->j, &t)) != ST_OK)
            return rc;
        if (t != ST_JT_STRING)
            return invalid_type(p, false, "a string");
        if ((rc = st_json_string(&p->j, &v, &vn)) != ST_OK)
            return rc;
        v = arena_copy(p, v, vn);
        if (!st_grow((void **)&p->h->meta, &p->capmeta, p->h->meta_count + 1, sizeof *p->h->meta))
            return st_error_code(p->err, ST_ERR_NOMEM, 0);
        p->h->meta[p->h->meta_count++] = (st_metadata_item){k, kn, v, vn};
    }
}

static st_code parse_document(parser *p)
{
    st_jtype t;
    st_code rc;
    bool first = true, more;
    if ((rc = st_json_value_start(&p->j, &t)) != ST_OK)
        return rc;
    if (t != ST_JT_OBJECT)
        return invalid_type(p, false, "struct HashMetadata");
    if ((rc = st_json_enter(&p->j)) != ST_OK)
        return rc;
    for (;;) {
        const char *k;
        size_t kn, kstart, kend;
        if ((rc = st_json_object_next(&p->j, &first, &more, &k, &kn, &kstart, &kend)) != ST_OK)
            return rc;
        if (!more)
            break;
        bool meta = kn == 12 && memcmp(k, "__metadata__", 12) == 0;
        if (meta && p->seen_meta)
            return st_json_fail(&p->j, kend, kstart, "duplicate field `__metadata__`");
        p->seen_meta = p->seen_meta || meta;
        rc = meta ? parse_metadata(p)
                  : parse_tensor(p, p->deferred ? k : arena_copy(p, k, kn), kn, kstart);
        if (rc != ST_OK)
            return rc;
    }
    if (p->deferred)
        return st_json_fail(&p->j, p->j.pos, p->deferred_off, p->deferred_msg);
    return st_json_finish(&p->j);
}

/* MARK: validation and lookup structures */

static int cmp_tensor_names(const st_tensor *x, const st_tensor *y)
{
    return st_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

static int cmp_offsets(const void *a, const void *b)
{
    const rec *x = a, *y = b;
    if (x->t.begin != y->t.begin)
        return x->t.begin < y->t.begin ? -1 : 1;
    if (x->t.end != y->t.end)
        return x->t.end < y->t.end ? -1 : 1;
    return cmp_tensor_names(&x->t, &y->t);
}

/* Orders indices of the records (ctx) by name. */
static int cmp_name_idx(const void *a, const void *b, void *ctx)
{
    const rec *recs = ctx;
    return cmp_tensor_names(&recs[*(const size_t *)a].t, &recs[*(const size_t *)b].t);
}

st_code st_tensor_nbytes(st_dtype dtype, const uint64_t *shape, size_t ndim, uint64_t *nbytes,
                         st_error *err)
{
    uint64_t n = 1;
    for (size_t i = 0; i < ndim; i++) {
        if (shape[i] != 0 && n > UINT64_MAX / shape[i])
            return st_error_code(err, ST_ERR_VALIDATION_OVERFLOW, 0);
        n *= shape[i];
    }
    uint64_t bits = st_dtype_bits(dtype);
    if (bits == 0)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "invalid dtype %d", (int)dtype);
    if (n > UINT64_MAX / bits)
        return st_error_code(err, ST_ERR_VALIDATION_OVERFLOW, 0);
    bits *= n;
    if (bits % 8 != 0)
        return st_error_code(err, ST_ERR_MISALIGNED_SLICE, 0);
    *nbytes = bits / 8;
    return ST_OK;
}

/* Rules 6-8 (docs/format.md §6): sorts the records into data-offset order (the name table
 * follows), then checks they tile the data section with their shapes' sizes and cover the
 * file; then the name order. */
static st_code check_offsets(parser *p, size_t json_len, uint64_t file_size)
{
    static const uint64_t no_dims[1] = {0}; /* shapes is NULL when every tensor is a scalar */
    st_header *h = p->h;
    st_error *err = p->err;
    uint64_t cursor = 0, nb;
    bool resorted = false, by_name_sorted = true;
    st_code rc;
    for (size_t i = 0; i < h->count; i++) {
        h->recs[i].t.shape = h->shapes ? h->shapes + h->recs[i].shape_off : no_dims;
        resorted = resorted || (i > 0 && cmp_offsets(&h->recs[i - 1], &h->recs[i]) >= 0);
    }
    if (resorted) {
        qsort(h->recs, h->count, sizeof *h->recs, cmp_offsets);
        if ((rc = rehash(p, h->hash_cap)) != ST_OK)
            return rc;
    }
    for (size_t i = 0; i < h->count; i++) {
        const st_tensor *t = &h->recs[i].t;
        uint64_t where = 8 + (uint64_t)h->recs[i].pos;
        if (t->begin != cursor || t->end < t->begin)
            return st_error_set(err, ST_ERR_INVALID_OFFSET, where, "`%.*s`",
                                (int)clip_utf8(t->name, t->name_len, 400), t->name);
        cursor = t->end;
        if ((rc = st_tensor_nbytes(t->dtype, t->shape, t->ndim, &nb, err)) != ST_OK) {
            err->offset = where;
            return rc;
        }
        if (t->end - t->begin != nb)
            return st_error_code(err, ST_ERR_TENSOR_INVALID_INFO, where);
    }
    if (cursor > UINT64_MAX - 8 - json_len)
        return st_error_code(err, ST_ERR_METADATA_INCOMPLETE, 0);
    if (8 + json_len + cursor != file_size)
        return st_error_code(err, ST_ERR_METADATA_INCOMPLETE, 8 + json_len + cursor);
    if ((h->by_name = st_malloc(h->count * sizeof *h->by_name)) == NULL)
        return st_error_code(err, ST_ERR_NOMEM, 0);
    for (size_t i = 0; i < h->count; i++) {
        h->by_name[i] = i;
        by_name_sorted =
            by_name_sorted && (i == 0 || cmp_tensor_names(&h->recs[i - 1].t, &h->recs[i].t) < 0);
    }
    if (!by_name_sorted)
        qsort_r(h->by_name, h->count, sizeof *h->by_name, cmp_name_idx, h->recs);
    h->data_start = 8 + (uint64_t)json_len;
    return ST_OK;
}

/* MARK: public entry points */

st_code st_header_length(const uint8_t *prefix, size_t prefix_len, uint64_t file_size,
                         uint64_t *header_len, st_error *err)
{
    if (file_size < 8 || prefix_len < 8)
        return st_error_code(err, ST_ERR_HEADER_TOO_SMALL, 0);
    uint64_t n;
    memcpy(&n, prefix, 8);
    n = le64toh(n);
    if (n > ST_MAX_HEADER_SIZE || n > SIZE_MAX - 8)
        return st_error_code(err, ST_ERR_HEADER_TOO_LARGE, 0);
    if (8 + n > file_size)
        return st_error_code(err, ST_ERR_INVALID_HEADER_LENGTH, 0);
    *header_len = n;
    return ST_OK;
}

st_code st_header_parse(const uint8_t *json, size_t json_len, uint64_t file_size, st_header **out,
                        st_error *err)
{
    parser p = {.j = {.buf = json, .len = json_len, .base = 8, .utf8_trusted = true, .err = err},
                .err = err};
    st_code rc;

    *out = NULL;
    if (json_len > ST_MAX_HEADER_SIZE)
        return st_error_code(err, ST_ERR_HEADER_TOO_LARGE, 0);
    if (file_size < 8 || json_len > file_size - 8)
        return st_error_code(err, ST_ERR_INVALID_HEADER_LENGTH, 0);

    /* Rule 4: the whole header must be UTF-8. */
    if ((rc = st_utf8_validate(json, json_len, 8, err)) != ST_OK)
        return rc;

    /* Rule 5: parse; rules 6-8: offsets, sizes, coverage. */
    if ((p.h = st_calloc(1, sizeof *p.h)) == NULL || (p.h->arena = st_malloc(json_len)) == NULL) {
        rc = st_error_code(err, ST_ERR_NOMEM, 0);
    } else {
        p.h->hash_key = st_hash_new_key();
        if ((rc = parse_document(&p)) == ST_OK)
            rc = check_offsets(&p, json_len, file_size);
    }
    st_free(p.j.scratch);
    if (rc == ST_OK)
        *out = p.h;
    else
        st_header_free(p.h);
    return rc;
}

void st_header_free(st_header *h)
{
    if (h == NULL)
        return;
    st_free(h->recs);
    st_free(h->by_name);
    st_free(h->hash);
    st_free(h->shapes);
    st_free(h->arena);
    st_free(h->meta);
    st_free(h);
}

uint64_t st_header_data_start(const st_header *h)
{
    return h->data_start;
}

size_t st_header_count(const st_header *h)
{
    return h->count;
}

const st_tensor *st_header_tensor(const st_header *h, size_t i)
{
    return i < h->count ? &h->recs[i].t : NULL;
}

const st_tensor *st_header_tensor_by_name_order(const st_header *h, size_t i)
{
    return i < h->count ? &h->recs[h->by_name[i]].t : NULL;
}

const st_tensor *st_header_find(const st_header *h, const char *name, size_t name_len)
{
    if (h->count == 0)
        return NULL;
    uint32_t full = (uint32_t)st_hash(h->hash_key, name, name_len);
    size_t k = find_slot(h->hash, h->hash_cap - 1, h->recs, full, name, name_len);
    return h->hash[k] ? &h->recs[(uint32_t)h->hash[k] - 1].t : NULL;
}

size_t st_header_position(const st_header *h, const st_tensor *t)
{
    return (size_t)((const rec *)(const void *)t - h->recs); /* t is its record's first member */
}

bool st_header_has_metadata(const st_header *h)
{
    return h->has_metadata;
}

size_t st_header_metadata_count(const st_header *h)
{
    return h->meta_count;
}

const st_metadata_item *st_header_metadata_item(const st_header *h, size_t i)
{
    return i < h->meta_count ? &h->meta[i] : NULL;
}
