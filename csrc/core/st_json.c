/* st_json.c - strict streaming JSON reader (see st_json.h). */
#include "st_internal.h"
#include "st_json.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* MARK: UTF-8 */

/* Length of the valid UTF-8 sequence at p (avail >= 1 bytes, p[0] >= 0x80),
 * or 0 with *errlen = bytes of the invalid prefix (0 when truncated). */
static size_t utf8_seq(const uint8_t *p, size_t avail, unsigned *errlen)
{
    uint8_t c = p[0];
    size_t need = c < 0xC2 ? 0 : c <= 0xDF ? 2 : c <= 0xEF ? 3 : c <= 0xF4 ? 4 : 0;
    /* The second byte's range is narrower after E0 and F0 (overlongs), ED
     * (surrogates) and F4 (above U+10FFFF). */
    uint8_t lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    uint8_t hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    *errlen = 1;
    for (size_t k = 1; k < need; k++, lo = 0x80, hi = 0xBF) {
        *errlen = k < avail ? (unsigned)k : 0;
        if (k >= avail || p[k] < lo || p[k] > hi)
            return 0;
    }
    return need;
}

st_code st_utf8_validate(const uint8_t *s, size_t len, uint64_t base, st_error *err)
{
    unsigned bad_len;
    for (size_t i = 0, n; i < len; i += n) {
        uint64_t w = UINT64_C(0x8080808080808080); /* ASCII fast path, 8 bytes at a time */
        if (i + 8 <= len)
            memcpy(&w, s + i, 8);
        if (!(w & UINT64_C(0x8080808080808080)))
            n = 8;
        else if (s[i] < 0x80)
            n = 1;
        else if ((n = utf8_seq(s + i, len - i, &bad_len)) == 0 && bad_len > 0)
            return st_error_set(err, ST_ERR_INVALID_UTF8, base + i,
                                "invalid utf-8 sequence of %u bytes from index %zu", bad_len, i);
        else if (n == 0)
            return st_error_set(err, ST_ERR_INVALID_UTF8, base + i,
                                "incomplete utf-8 byte sequence from index %zu", i);
    }
    return ST_OK;
}

/* MARK: errors */

st_code st_json_fail(st_json *j, size_t lc_index, size_t off_index, const char *text)
{
    size_t line = 1;
    if (lc_index > j->len)
        lc_index = j->len;
    const uint8_t *p = j->buf, *end = j->buf + lc_index, *nl; /* p: after the last newline */
    for (; (nl = memchr(p, '\n', (size_t)(end - p))) != NULL; p = nl + 1)
        line++;
    size_t col = lc_index - (size_t)(p - j->buf);
    if (off_index > j->len)
        off_index = j->len;
    return st_error_set(j->err, ST_ERR_INVALID_JSON, j->base + off_index,
                        "%s at line %zu column %zu", text, line, col);
}

/* serde_json's peek_error: position one past the current byte. */
static st_code fail_peek(st_json *j, const char *text)
{
    size_t lc = j->pos < j->len ? j->pos + 1 : j->len;
    return st_json_fail(j, lc, j->pos, text);
}

/* serde_json's error: position of what was consumed (the byte before pos). */
static st_code fail_here(st_json *j, const char *text)
{
    return st_json_fail(j, j->pos, j->pos > 0 ? j->pos - 1 : 0, text);
}

/* The input ended too early: reported at its end. */
static st_code fail_eof(st_json *j, const char *text)
{
    j->pos = j->len;
    return st_json_fail(j, j->len, j->len, text);
}

/* MARK: basics */

static inline void skip_ws(st_json *j)
{
    const uint8_t *b = j->buf;
    size_t p = j->pos, n = j->len;
    while (p < n && (b[p] == ' ' || b[p] == '\n' || b[p] == '\t' || b[p] == '\r'))
        p++;
    j->pos = p;
}

static inline bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

st_jtype st_json_peek(st_json *j)
{
    skip_ws(j);
    if (j->pos >= j->len)
        return ST_JT_END;
    uint8_t c = j->buf[j->pos];
    if (c == '-' || is_digit(c))
        return ST_JT_NUMBER;
    switch (c) {
    case '{': return ST_JT_OBJECT;
    case '[': return ST_JT_ARRAY;
    case '"': return ST_JT_STRING;
    case 't': return ST_JT_TRUE;
    case 'f': return ST_JT_FALSE;
    case 'n': return ST_JT_NULL;
    default: return ST_JT_BAD;
    }
}

st_code st_json_value_start(st_json *j, st_jtype *type)
{
    *type = st_json_peek(j);
    if (*type == ST_JT_END || *type == ST_JT_BAD)
        return fail_peek(j, *type == ST_JT_END ? "EOF while parsing a value" : "expected value");
    return ST_OK;
}

st_code st_json_enter(st_json *j)
{
    /* serde_json: remaining depth starts at 128 and may not reach 0. */
    if (j->depth + 1 >= ST_JSON_MAX_DEPTH)
        return fail_peek(j, "recursion limit exceeded");
    j->depth++;
    j->pos++;
    return ST_OK;
}

/* MARK: strings */

/* Appends run[0..run_len) then extra[0..k) to the scratch buffer at *used. */
static bool scratch_add(st_json *j, size_t *used, const uint8_t *run, size_t run_len,
                        const char *extra, size_t k)
{
    if (!st_grow((void **)&j->scratch, &j->scratch_cap, *used + run_len + k, 1))
        return false;
    memcpy(j->scratch + *used, run, run_len);
    memcpy(j->scratch + *used + run_len, extra, k);
    *used += run_len + k;
    return true;
}

static st_code read_hex4(st_json *j, unsigned *out)
{
    if (j->len - j->pos < 4)
        return fail_eof(j, "EOF while parsing a string");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        uint8_t c = j->buf[j->pos++], lower = c | 0x20; /* 'A'-'F' to 'a'-'f' */
        int h = is_digit(c) ? c - '0' : lower >= 'a' && lower <= 'f' ? lower - 'a' + 10 : -1;
        if (h < 0)
            return fail_here(j, "invalid escape");
        v = (v << 4) | (unsigned)h;
    }
    *out = v;
    return ST_OK;
}

/* The code point of a \u escape (pos just after the 'u'), joining a
 * surrogate pair into one; a lone surrogate is an error, as in serde_json. */
static st_code read_unicode_escape(st_json *j, unsigned *cp)
{
    unsigned lo;
    st_code rc;
    if ((rc = read_hex4(j, cp)) != ST_OK)
        return rc;
    if (*cp >= 0xDC00 && *cp <= 0xDFFF)
        return fail_here(j, "lone leading surrogate in hex escape");
    if (*cp < 0xD800 || *cp > 0xDBFF)
        return ST_OK;
    for (const char *next = "\\u"; *next != '\0'; next++, j->pos++) { /* the low half */
        if (j->pos >= j->len)
            return fail_eof(j, "EOF while parsing a string");
        if (j->buf[j->pos] != (uint8_t)*next)
            return st_json_fail(j, j->pos, j->pos, "unexpected end of hex escape");
    }
    if ((rc = read_hex4(j, &lo)) != ST_OK)
        return rc;
    if (lo < 0xDC00 || lo > 0xDFFF)
        return fail_here(j, "lone leading surrogate in hex escape");
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
    return ST_OK;
}

/* UTF-8 of a Unicode scalar value into out[0..*n). */
static void put_utf8(unsigned cp, char out[4], size_t *n)
{
    static const uint8_t lead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
    *n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    for (size_t k = *n; k-- > 1; cp >>= 6)
        out[k] = (char)(0x80 | (cp & 0x3F));
    out[0] = (char)(lead[*n] | cp);
}

/* Decodes one escape (pos just after the backslash) into out[0..*n). */
static st_code read_escape(st_json *j, char out[4], size_t *n)
{
    static const char names[] = "\"\\/bfnrt", values[] = "\"\\/\b\f\n\r\t";
    unsigned cp;
    st_code rc;
    if (j->pos >= j->len)
        return fail_eof(j, "EOF while parsing a string");
    uint8_t c = j->buf[j->pos++];
    const char *simple = c != '\0' ? strchr(names, c) : NULL;
    if (simple != NULL) {
        out[0] = values[simple - names];
        *n = 1;
        return ST_OK;
    }
    if (c != 'u')
        return fail_here(j, "invalid escape");
    if ((rc = read_unicode_escape(j, &cp)) != ST_OK)
        return rc;
    put_utf8(cp, out, n);
    return ST_OK;
}

/* Bytes that end the fast path inside a string: '"', '\\', controls, non-ASCII. */
static const uint8_t string_special[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

st_code st_json_string(st_json *j, const char **s, size_t *slen)
{
    const uint8_t *b = j->buf;
    size_t n = j->len;
    size_t p = ++j->pos; /* after the quote */
    size_t seg = p;      /* start of the raw run not yet copied */
    size_t used = 0;     /* decoded bytes in scratch */
    bool escaped = false;
    st_code rc;

    for (;;) {
        while (p < n && !string_special[b[p]])
            p++;
        if (p >= n)
            return fail_eof(j, "EOF while parsing a string");
        uint8_t c = b[p];
        if (c == '"') {
            if (s != NULL && escaped && !scratch_add(j, &used, b + seg, p - seg, "", 0))
                return st_error_code(j->err, ST_ERR_NOMEM, 0);
            if (s != NULL) {
                *s = escaped ? j->scratch : (const char *)(b + j->pos);
                *slen = escaped ? used : p - j->pos;
            }
            j->pos = p + 1;
            return ST_OK;
        }
        if (c == '\\') {
            char out[4];
            size_t k = 0;
            j->pos = p + 1;
            if ((rc = read_escape(j, out, &k)) != ST_OK)
                return rc;
            if (s != NULL && !scratch_add(j, &used, b + seg, p - seg, out, k))
                return st_error_code(j->err, ST_ERR_NOMEM, 0);
            escaped = true;
            p = seg = j->pos;
            continue;
        }
        if (c < 0x20) {
            j->pos = p + 1;
            return fail_here(j, "control character (\\u0000-\\u001F) found while parsing a string");
        }
        /* c >= 0x80 */
        unsigned el = 0;
        size_t k = j->utf8_trusted ? 1 : utf8_seq(b + p, n - p, &el);
        if (k == 0) {
            j->pos = p;
            return fail_peek(j, "invalid unicode code point");
        }
        p += k;
    }
}

/* MARK: objects and arrays */

/* The step between items of an object or array: at `close` it ends (*more false); else
 * after the first item a ',' must come, and not right before `close`. */
static st_code next_item(st_json *j, bool *first, bool *more, uint8_t close, const char *eof_text,
                         const char *separator_text)
{
    *more = false;
    skip_ws(j);
    if (j->pos >= j->len)
        return fail_peek(j, eof_text);
    if (j->buf[j->pos] == close) {
        j->pos++;
        j->depth--;
        return ST_OK;
    }
    if (!*first) {
        if (j->buf[j->pos] != ',')
            return fail_peek(j, separator_text);
        j->pos++;
        skip_ws(j);
        if (close == '}' && j->pos >= j->len)
            return fail_peek(j, "EOF while parsing a value");
        if (j->pos < j->len && j->buf[j->pos] == close)
            return fail_peek(j, "trailing comma");
    }
    *first = false;
    *more = true;
    return ST_OK;
}

st_code st_json_object_next(st_json *j, bool *first, bool *more, const char **key, size_t *key_len,
                            size_t *key_start, size_t *key_end)
{
    st_code rc =
        next_item(j, first, more, '}', "EOF while parsing an object", "expected `,` or `}`");
    if (rc != ST_OK || !*more)
        return rc;
    *more = false;
    if (j->buf[j->pos] != '"') /* next_item saw a byte here */
        return fail_peek(j, "key must be a string");
    if (key_start != NULL)
        *key_start = j->pos;
    if ((rc = st_json_string(j, key, key_len)) != ST_OK)
        return rc;
    if (key_end != NULL)
        *key_end = j->pos;
    skip_ws(j);
    if (j->pos >= j->len)
        return fail_peek(j, "EOF while parsing an object");
    if (j->buf[j->pos] != ':')
        return fail_peek(j, "expected `:`");
    j->pos++;
    *more = true;
    return ST_OK;
}

st_code st_json_array_next(st_json *j, bool *first, bool *more)
{
    return next_item(j, first, more, ']', "EOF while parsing a list", "expected `,` or `]`");
}

/* MARK: numbers and literals */

/* strtod on [s, s+n) in the "C" notation whatever the locale. */
static st_code parse_double(st_json *j, const uint8_t *s, size_t n, double *out)
{
    char stackbuf[128], *tmp = n < sizeof stackbuf ? stackbuf : st_malloc(n + 1);
    const struct lconv *lc = localeconv();
    char dp = lc && lc->decimal_point && lc->decimal_point[0] ? lc->decimal_point[0] : '.';
    if (tmp == NULL)
        return st_error_code(j->err, ST_ERR_NOMEM, 0);
    for (size_t k = 0; k < n; k++)
        tmp[k] = s[k] == '.' ? dp : (char)s[k];
    tmp[n] = '\0';
    *out = strtod(tmp, NULL);
    if (tmp != stackbuf)
        st_free(tmp);
    return ST_OK;
}

/* One or more digits, as needed after '.' or after an exponent's sign. */
static st_code required_digits(st_json *j)
{
    if (j->pos >= j->len)
        return fail_peek(j, "EOF while parsing a value");
    if (!is_digit(j->buf[j->pos]))
        return fail_peek(j, "invalid number");
    while (j->pos < j->len && is_digit(j->buf[j->pos]))
        j->pos++;
    return ST_OK;
}

/* Classifies the integer digits[0..n) as serde_json does: a u64, or (neg)
 * a non-zero i64. False when it is neither (then it is an f64). */
static bool classify_integer(const uint8_t *digits, size_t n, bool neg, st_jnum *num)
{
    uint64_t v = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned d = (unsigned)(digits[k] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (!neg) {
        num->kind = ST_JNUM_U64;
        num->u = v;
        return true;
    }
    if (v == 0 || v > (uint64_t)INT64_MAX + 1)
        return false;
    num->kind = ST_JNUM_I64;
    num->i = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    return true;
}

st_code st_json_number(st_json *j, bool want_value, st_jnum *num)
{
    const uint8_t *b = j->buf;
    size_t n = j->len, start = j->pos;
    bool neg = false, is_float = false;
    st_code rc;

    if (j->pos < n && b[j->pos] == '-') {
        neg = true;
        j->pos++;
    }
    if (j->pos >= n)
        return fail_eof(j, "invalid number");
    if (b[j->pos] == '0') {
        j->pos++;
        if (j->pos < n && is_digit(b[j->pos]))
            return fail_peek(j, "invalid number");
    } else if ((rc = required_digits(j)) != ST_OK) {
        return rc;
    }
    size_t int_start = start + (neg ? 1 : 0), int_end = j->pos;
    if (j->pos < n && b[j->pos] == '.') {
        is_float = true;
        j->pos++;
        if ((rc = required_digits(j)) != ST_OK)
            return rc;
    }
    if (j->pos < n && (b[j->pos] == 'e' || b[j->pos] == 'E')) {
        is_float = true;
        j->pos++;
        if (j->pos < n && (b[j->pos] == '+' || b[j->pos] == '-'))
            j->pos++;
        if ((rc = required_digits(j)) != ST_OK)
            return rc;
    }
    if (!want_value ||
        (!is_float && classify_integer(b + int_start, int_end - int_start, neg, num)))
        return ST_OK;
    num->kind = ST_JNUM_F64;
    if ((rc = parse_double(j, b + start, j->pos - start, &num->f)) != ST_OK)
        return rc;
    if (isinf(num->f))
        return st_json_fail(j, j->pos, start, "number out of range");
    return ST_OK;
}

st_code st_json_literal(st_json *j)
{
    uint8_t c = j->buf[j->pos++];
    const char *word = c == 't' ? "true" : c == 'f' ? "false" : "null";
    for (const char *w = word + 1; *w; w++) {
        if (j->pos >= j->len)
            return fail_eof(j, "EOF while parsing a value");
        if (j->buf[j->pos++] != (uint8_t)*w)
            return fail_here(j, "expected ident");
    }
    return ST_OK;
}

/* MARK: skipping, validation */

st_code st_json_skip(st_json *j)
{
    st_jtype t;
    st_code rc;
    bool first = true, more;
    if ((rc = st_json_value_start(j, &t)) != ST_OK)
        return rc;
    switch (t) {
    case ST_JT_OBJECT:
    case ST_JT_ARRAY:
        if ((rc = st_json_enter(j)) != ST_OK)
            return rc;
        for (;;) {
            rc = t == ST_JT_OBJECT ? st_json_object_next(j, &first, &more, NULL, NULL, NULL, NULL)
                                   : st_json_array_next(j, &first, &more);
            if (rc != ST_OK || !more)
                return rc;
            if ((rc = st_json_skip(j)) != ST_OK)
                return rc;
        }
    case ST_JT_STRING: return st_json_string(j, NULL, NULL);
    case ST_JT_NUMBER: return st_json_number(j, false, NULL);
    default: return st_json_literal(j);
    }
}

st_code st_json_finish(st_json *j)
{
    skip_ws(j);
    if (j->pos < j->len)
        return fail_peek(j, "trailing characters");
    return ST_OK;
}

st_code st_json_validate(const uint8_t *text, size_t len, st_error *err)
{
    st_json j = {.buf = text, .len = len, .err = err};
    st_code rc = st_json_skip(&j);
    if (rc == ST_OK)
        rc = st_json_finish(&j);
    st_free(j.scratch);
    return rc;
}

void st_json_format_float(double f, char *out, size_t cap)
{
    char sci[64], digits[32], text[400]; /* 5e-324 is "0." then 323 digits */
    size_t nd = 0, o = 0;

    if (isnan(f) || isinf(f)) {
        snprintf(out, cap, "%s", isnan(f) ? "NaN" : (f < 0 ? "-inf" : "inf"));
        return;
    }
    for (int prec = 0; prec < 17; prec++) { /* the shortest precision that round-trips */
        snprintf(sci, sizeof sci, "%.*e", prec, f);
        if (strtod(sci, NULL) == f)
            break;
    }
    /* sci = [-]d[.ddd]e[+-]XX (the decimal point may be locale-specific) */
    const char *p = sci;
    if (*p == '-')
        text[o++] = *p++;
    for (; *p && *p != 'e'; p++)
        if (is_digit((uint8_t)*p) && nd < sizeof digits)
            digits[nd++] = *p;
    int exp10 = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (exp10 < 0) {
        text[o++] = '0';
        text[o++] = '.';
        for (int k = 0; k < -exp10 - 1; k++)
            text[o++] = '0';
        memcpy(text + o, digits, nd);
        o += nd;
    } else {
        for (size_t k = 0; k < nd || (int)k <= exp10; k++) {
            if ((int)k == exp10 + 1)
                text[o++] = '.';
            text[o++] = k < nd ? digits[k] : '0';
        }
        if ((int)nd <= exp10 + 1) { /* no fractional digits: serde adds ".0" */
            text[o++] = '.';
            text[o++] = '0';
        }
    }
    text[o] = '\0';
    snprintf(out, cap, "%s", text);
}
