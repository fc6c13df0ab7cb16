/*
 * st_json.h - internal strict streaming JSON reader (a pull parser, no DOM), RFC 8259 with the
 * choices of docs/json-conformance.md: UTF-8 validated everywhere; \uXXXX escapes must form scalar
 * values (a lone surrogate is rejected, as serde_json does); numbers by the grammar, classified as
 * serde_json does (u64 / negative i64 / f64, "number out of range" past a double); at most
 * ST_JSON_MAX_DEPTH - 1 nested containers; only space, \t, \n, \r around the value.
 *
 * Errors are ST_ERR_INVALID_JSON "<what> at line L column C" (serde_json's texts), err->offset =
 * base + index of the offending byte; ST_ERR_NOMEM when the string scratch buffer cannot grow.
 *
 * Usage: an st_json with buf, len, base, utf8_trusted and err set, the rest zero; st_json_peek,
 * then the value's reader or st_json_skip; st_json_finish for the trailing-whitespace rule;
 * st_free(scratch).
 */
#ifndef ST_JSON_H
#define ST_JSON_H

#include "st_core.h"

typedef enum st_jtype {
    ST_JT_END = 0, /* no more input */
    ST_JT_OBJECT,
    ST_JT_ARRAY,
    ST_JT_STRING,
    ST_JT_NUMBER,
    ST_JT_TRUE,
    ST_JT_FALSE,
    ST_JT_NULL,
    ST_JT_BAD /* a byte that cannot start a value */
} st_jtype;

typedef enum st_jnum_kind {
    ST_JNUM_U64, /* non-negative integer that fits u64 */
    ST_JNUM_I64, /* negative integer that fits i64 (not -0) */
    ST_JNUM_F64  /* anything else: fraction, exponent, -0, too large */
} st_jnum_kind;

typedef struct st_jnum {
    st_jnum_kind kind;
    uint64_t u;
    int64_t i;
    double f;
} st_jnum;

typedef struct st_json {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    uint64_t base;     /* added to error offsets */
    unsigned depth;    /* open arrays/objects */
    bool utf8_trusted; /* caller already validated all of buf */
    st_error *err;
    char *scratch; /* decoded strings with escapes */
    size_t scratch_cap;
} st_json;

/* Skips whitespace and says what comes next (consumes nothing else). */
st_jtype st_json_peek(st_json *j);

/* Stores the type of the value that starts here, else fails ("EOF while parsing a value",
 * "expected value"). */
st_code st_json_value_start(st_json *j, st_jtype *type);

/* Consumes the '{' or '[' that starts an object or array (at most ST_JSON_MAX_DEPTH - 1 deep). Then
 * st_json_object_next, with *first = true initially, consumes ',' or '}' as needed; *more is false
 * at the end (the '}' consumed); else the key is decoded into (*key, *key_len) (valid until the
 * next string read), the ':' consumed, and *key_start and *key_end are the indexes of its opening
 * quote and just after its closing one (both may be NULL). */
st_code st_json_enter(st_json *j);
st_code st_json_object_next(st_json *j, bool *first, bool *more, const char **key, size_t *key_len,
                            size_t *key_start, size_t *key_end);
/* Arrays: same pattern; after *more == true, read one element. */
st_code st_json_array_next(st_json *j, bool *first, bool *more);

/* Reads a string value (pos at its quote), decoded (escapes resolved); with s
 * NULL only checks it. The result points into the input or into the scratch
 * buffer (valid until the next string read). */
st_code st_json_string(st_json *j, const char **s, size_t *len);
/* Reads a number; with want_value, classifies it and fills *num (may fail
 * with "number out of range"); without, checks the grammar only. */
st_code st_json_number(st_json *j, bool want_value, st_jnum *num);
/* Reads true, false or null (as peeked). */
st_code st_json_literal(st_json *j);
/* Skips one value of any kind, fully validated. */
st_code st_json_skip(st_json *j);
/* Requires only whitespace until the end ("trailing characters"). */
st_code st_json_finish(st_json *j);

/* Fails with ST_ERR_INVALID_JSON "<text> at line L column C" (the line and column of
 * index lc_index), offset base + off_index. */
st_code st_json_fail(st_json *j, size_t lc_index, size_t off_index, const char *text);

/* Validates UTF-8 as Rust's str::from_utf8; else ST_ERR_INVALID_UTF8 with its Utf8Error text
 * (a bad sequence of 1..3 bytes, or one the input ends inside) at offset base + its index. */
st_code st_utf8_validate(const uint8_t *s, size_t len, uint64_t base, st_error *err);

/* A double as serde prints it: Rust's Display (shortest round trip, no exponent), with
 * ".0" where it has no fractional part. */
void st_json_format_float(double f, char *out, size_t cap);

#endif /* ST_JSON_H */
