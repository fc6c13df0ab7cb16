/* st_dtype.c - the dtype table (spec 1.3), in upstream's enum order. */
#include "st_core.h"

#include <string.h>

static const struct {
    const char *name;
    unsigned char len;
    unsigned char bits;
} st_dtypes[ST_DTYPE__COUNT] = {
    [ST_BOOL] = {"BOOL", 4, 8},
    [ST_F4] = {"F4", 2, 4},
    [ST_F6_E2M3] = {"F6_E2M3", 7, 6},
    [ST_F6_E3M2] = {"F6_E3M2", 7, 6},
    [ST_U8] = {"U8", 2, 8},
    [ST_I8] = {"I8", 2, 8},
    [ST_F8_E5M2] = {"F8_E5M2", 7, 8},
    [ST_F8_E4M3] = {"F8_E4M3", 7, 8},
    [ST_F8_E8M0] = {"F8_E8M0", 7, 8},
    [ST_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 11, 8},
    [ST_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 11, 8},
    [ST_I16] = {"I16", 3, 16},
    [ST_U16] = {"U16", 3, 16},
    [ST_F16] = {"F16", 3, 16},
    [ST_BF16] = {"BF16", 4, 16},
    [ST_I32] = {"I32", 3, 32},
    [ST_U32] = {"U32", 3, 32},
    [ST_F32] = {"F32", 3, 32},
    [ST_C64] = {"C64", 3, 64},
    [ST_F64] = {"F64", 3, 64},
    [ST_I64] = {"I64", 3, 64},
    [ST_U64] = {"U64", 3, 64},
};

const char *st_dtype_name(st_dtype dtype)
{
    if ((unsigned)dtype >= ST_DTYPE__COUNT)
        return "?";
    return st_dtypes[dtype].name;
}

unsigned st_dtype_bits(st_dtype dtype)
{
    if ((unsigned)dtype >= ST_DTYPE__COUNT)
        return 0;
    return st_dtypes[dtype].bits;
}

bool st_dtype_from_name(const char *name, size_t len, st_dtype *out)
{
    if (name == NULL || len < 2 || len > 11)
        return false;
    for (unsigned i = 0; i < ST_DTYPE__COUNT; i++) {
        if (st_dtypes[i].len == len && memcmp(st_dtypes[i].name, name, len) == 0) {
            if (out != NULL)
                *out = (st_dtype)i;
            return true;
        }
    }
    return false;
}
