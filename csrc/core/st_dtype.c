/* st_dtype.c - the dtype table (docs/format.md §3), in upstream's enum order,
 * and the F4 packing rule (§3.2). */
#include "st_core.h"

#include <string.h>

#define ROW(dt, name, bits, type_name, numpy, pack) [dt] = {dt, name, bits, type_name, numpy, pack}

static const st_dtype_info st_dtypes[ST_DTYPE__COUNT] = {
    ROW(ST_BOOL, "BOOL", 8, "bool", ST_NUMPY_BUILTIN, 1),
    ROW(ST_F4, "F4", 4, "float4_e2m1fn_x2", ST_NUMPY_NONE, ST_F4_PER_ITEM),
    ROW(ST_F6_E2M3, "F6_E2M3", 6, NULL, ST_NUMPY_NONE, 1),
    ROW(ST_F6_E3M2, "F6_E3M2", 6, NULL, ST_NUMPY_NONE, 1),
    ROW(ST_U8, "U8", 8, "uint8", ST_NUMPY_BUILTIN, 1),
    ROW(ST_I8, "I8", 8, "int8", ST_NUMPY_BUILTIN, 1),
    ROW(ST_F8_E5M2, "F8_E5M2", 8, "float8_e5m2", ST_NUMPY_ML_DTYPES, 1),
    ROW(ST_F8_E4M3, "F8_E4M3", 8, "float8_e4m3fn", ST_NUMPY_ML_DTYPES, 1),
    ROW(ST_F8_E8M0, "F8_E8M0", 8, "float8_e8m0fnu", ST_NUMPY_ML_DTYPES, 1),
    ROW(ST_F8_E4M3FNUZ, "F8_E4M3FNUZ", 8, "float8_e4m3fnuz", ST_NUMPY_ML_DTYPES, 1),
    ROW(ST_F8_E5M2FNUZ, "F8_E5M2FNUZ", 8, "float8_e5m2fnuz", ST_NUMPY_ML_DTYPES, 1),
    ROW(ST_I16, "I16", 16, "int16", ST_NUMPY_BUILTIN, 1),
    ROW(ST_U16, "U16", 16, "uint16", ST_NUMPY_BUILTIN, 1),
    ROW(ST_F16, "F16", 16, "float16", ST_NUMPY_BUILTIN, 1),
    ROW(ST_BF16, "BF16", 16, "bfloat16", ST_NUMPY_ML_DTYPES, 1),
    ROW(ST_I32, "I32", 32, "int32", ST_NUMPY_BUILTIN, 1),
    ROW(ST_U32, "U32", 32, "uint32", ST_NUMPY_BUILTIN, 1),
    ROW(ST_F32, "F32", 32, "float32", ST_NUMPY_BUILTIN, 1),
    ROW(ST_C64, "C64", 64, "complex64", ST_NUMPY_BUILTIN, 1),
    ROW(ST_F64, "F64", 64, "float64", ST_NUMPY_BUILTIN, 1),
    ROW(ST_I64, "I64", 64, "int64", ST_NUMPY_BUILTIN, 1),
    ROW(ST_U64, "U64", 64, "uint64", ST_NUMPY_BUILTIN, 1),
};

_Static_assert(ST_DTYPE__COUNT == 22, "the format has 22 dtypes (docs/format.md §3)");

const st_dtype_info *st_dtype_info_get(st_dtype dtype)
{
    return (unsigned)dtype < ST_DTYPE__COUNT ? &st_dtypes[dtype] : NULL;
}

const char *st_dtype_name(st_dtype dtype)
{
    return (unsigned)dtype < ST_DTYPE__COUNT ? st_dtypes[dtype].name : "?";
}

unsigned st_dtype_bits(st_dtype dtype)
{
    return (unsigned)dtype < ST_DTYPE__COUNT ? st_dtypes[dtype].bits : 0;
}

/* Looks name[0..len) up among the header spellings or the type names. */
static bool find_dtype(bool by_type_name, const char *name, size_t len, st_dtype *out)
{
    for (unsigned i = 0; name != NULL && i < ST_DTYPE__COUNT; i++) {
        const char *candidate = by_type_name ? st_dtypes[i].type_name : st_dtypes[i].name;
        if (candidate != NULL && strlen(candidate) == len && memcmp(candidate, name, len) == 0) {
            if (out != NULL)
                *out = (st_dtype)i;
            return true;
        }
    }
    return false;
}

bool st_dtype_from_name(const char *name, size_t len, st_dtype *out)
{
    return find_dtype(false, name, len, out);
}

bool st_dtype_from_type_name(const char *name, size_t len, st_dtype *out)
{
    return find_dtype(true, name, len, out);
}

st_code st_dtype_packed_dim(st_dtype dtype, uint64_t logical, uint64_t *packed, st_error *err)
{
    const st_dtype_info *info = st_dtype_info_get(dtype);
    if (info == NULL)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "invalid dtype %d", (int)dtype);
    if (logical % info->pack != 0)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                            "%s tensor with a last dimension of %llu: %s holds %u values per "
                            "element, so the last dimension must be a multiple of %u",
                            info->name, (unsigned long long)logical, info->type_name, info->pack,
                            info->pack);
    *packed = logical / info->pack;
    return ST_OK;
}

st_code st_dtype_unpacked_dim(st_dtype dtype, uint64_t packed, uint64_t *logical, st_error *err)
{
    const st_dtype_info *info = st_dtype_info_get(dtype);
    if (info == NULL)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "invalid dtype %d", (int)dtype);
    if (packed > UINT64_MAX / info->pack)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0,
                            "%s last-dim %llu doubled to logical shape overflows usize", info->name,
                            (unsigned long long)packed);
    *logical = packed * info->pack;
    return ST_OK;
}
