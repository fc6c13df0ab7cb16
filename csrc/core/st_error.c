/* st_error.c - error helpers of the C core, and every code's message text
 * (docs/format.md §7 lists them). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* XSI strerror_r */
#endif
#include "st_core.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* name: upstream's enum variant. text: upstream's Display text (matched exactly by
 * callers): the whole message, or its start, before st_error_set's details. */
static const struct {
    const char *name;
    const char *text;
} st_codes[ST_ERR__COUNT] = {
    [ST_OK] = {"Ok", ""},
    [ST_ERR_HEADER_TOO_SMALL] = {"HeaderTooSmall", "header too small"},
    [ST_ERR_HEADER_TOO_LARGE] = {"HeaderTooLarge", "header too large"},
    [ST_ERR_INVALID_HEADER_LENGTH] = {"InvalidHeaderLength", "invalid header length"},
    [ST_ERR_INVALID_UTF8] = {"InvalidHeader", "invalid UTF-8 in header: "},
    [ST_ERR_INVALID_JSON] = {"InvalidHeaderDeserialization", "invalid JSON in header: "},
    [ST_ERR_INVALID_OFFSET] = {"InvalidOffset", "invalid offset for tensor "},
    [ST_ERR_VALIDATION_OVERFLOW] =
        {"ValidationOverflow", "overflow computing buffer size from shape and/or element type"},
    [ST_ERR_MISALIGNED_SLICE] = {"MisalignedSlice",
                                 "The slice is slicing for subbytes dtypes, and the slice does not "
                                 "end up at a byte boundary, this is invalid."},
    [ST_ERR_TENSOR_INVALID_INFO] = {"TensorInvalidInfo",
                                    "invalid shape, data type, or offset for tensor"},
    [ST_ERR_METADATA_INCOMPLETE] = {"MetadataIncompleteBuffer",
                                    "incomplete metadata, file not fully covered"},
    [ST_ERR_IO] = {"IoError", "I/O error: "},
    [ST_ERR_NOMEM] = {"OutOfMemory", "out of memory"},
    [ST_ERR_INVALID_SLICE] = {"InvalidSlice", ""},
    [ST_ERR_INVALID_ARGUMENT] = {"InvalidArgument", ""},
    [ST_ERR_EXTERNAL] = {"External", "the byte source failed: "},
};

st_code st_error_set(st_error *err, st_code code, uint64_t offset, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    err->code = code;
    err->sys_errno = 0;
    err->offset = offset;
    int n = snprintf(err->msg, sizeof err->msg, "%s", st_code_text(code));
    if (fmt != NULL && n >= 0 && (size_t)n < sizeof err->msg) {
        va_list ap;
        va_start(ap, fmt);
        if (vsnprintf(err->msg + n, sizeof err->msg - (size_t)n, fmt, ap) < 0)
            err->msg[n] = '\0';
        va_end(ap);
    }
    return code;
}

st_code st_error_io(st_error *err, int sys_errno, uint64_t offset)
{
    char buf[256] = "";
    const char *text = NULL;
    /* strerror is not thread-safe; use the XSI/GNU variants where present. */
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    text = strerror_r(sys_errno, buf, sizeof buf);
#else
    if (strerror_r(sys_errno, buf, sizeof buf) == 0)
        text = buf;
#endif
    if (text == NULL || text[0] == '\0')
        text = strerror(sys_errno);
    st_error_set(err, ST_ERR_IO, offset, "%s (os error %d)", text, sys_errno);
    if (err != NULL)
        err->sys_errno = sys_errno;
    return ST_ERR_IO;
}

const char *st_code_name(st_code code)
{
    return (unsigned)code < ST_ERR__COUNT ? st_codes[code].name : "Unknown";
}

const char *st_code_text(st_code code)
{
    return (unsigned)code < ST_ERR__COUNT ? st_codes[code].text : "";
}

st_code st_error_code(st_error *err, st_code code, uint64_t offset)
{
    return st_error_set(err, code, offset, "%s", "");
}
