/* st_error.c - error helpers of the C core (see st_core.h). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* XSI strerror_r */
#endif
#include "st_core.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

st_code st_error_set(st_error *err, st_code code, uint64_t offset, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        err->sys_errno = 0;
        err->offset = offset;
        err->msg[0] = '\0';
        if (fmt != NULL) {
            va_start(ap, fmt);
            /* vsnprintf truncates and always NUL-terminates when size > 0. */
            int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
            va_end(ap);
            if (n < 0)
                err->msg[0] = '\0';
        }
    }
    return code;
}

st_code st_error_io(st_error *err, int sys_errno, uint64_t offset)
{
    char buf[256];
    const char *text = NULL;
    buf[0] = '\0';
    /* strerror is not thread-safe; use the XSI/GNU variants where present. */
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    text = strerror_r(sys_errno, buf, sizeof buf);
#else
    if (strerror_r(sys_errno, buf, sizeof buf) == 0)
        text = buf;
#endif
    if (text == NULL || text[0] == '\0')
        text = strerror(sys_errno);
    st_error_set(err, ST_ERR_IO, offset, "I/O error: %s (os error %d)", text, sys_errno);
    if (err != NULL)
        err->sys_errno = sys_errno;
    return ST_ERR_IO;
}

const char *st_code_name(st_code code)
{
    switch (code) {
    case ST_OK: return "Ok";
    case ST_ERR_HEADER_TOO_SMALL: return "HeaderTooSmall";
    case ST_ERR_HEADER_TOO_LARGE: return "HeaderTooLarge";
    case ST_ERR_INVALID_HEADER_LENGTH: return "InvalidHeaderLength";
    case ST_ERR_INVALID_UTF8: return "InvalidHeader";
    case ST_ERR_INVALID_JSON: return "InvalidHeaderDeserialization";
    case ST_ERR_INVALID_OFFSET: return "InvalidOffset";
    case ST_ERR_VALIDATION_OVERFLOW: return "ValidationOverflow";
    case ST_ERR_MISALIGNED_SLICE: return "MisalignedSlice";
    case ST_ERR_TENSOR_INVALID_INFO: return "TensorInvalidInfo";
    case ST_ERR_METADATA_INCOMPLETE: return "MetadataIncompleteBuffer";
    case ST_ERR_IO: return "IoError";
    case ST_ERR_NOMEM: return "OutOfMemory";
    case ST_ERR_INVALID_SLICE: return "InvalidSlice";
    case ST_ERR_INVALID_ARGUMENT: return "InvalidArgument";
    case ST_ERR__COUNT: break;
    }
    return "Unknown";
}
