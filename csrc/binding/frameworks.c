/*
 * frameworks.c - preparing a framework on first use (importing torch, NumPy,
 * ml_dtypes or a converter) and mapping header dtypes to each framework's
 * dtype objects. NumPy is imported on first use only, so torch-only users
 * never need it. This file owns NumPy's C API table (import_array).
 */
#define ST_NUMPY_API_OWNER
#include "tensors.h"

#include <string.h>

/* ======================================================================
 * MARK: framework tables
 * ====================================================================== */

const char *st_framework_name(st_framework fw)
{
    static const char *const names[] = {"pytorch", "numpy", "tensorflow", "flax", "mlx", "paddle"};
    return names[fw];
}

/* torch attribute names, by st_dtype; NULL: no torch dtype. */
static const char *const torch_names[ST_DTYPE__COUNT] = {
    [ST_BOOL] = "bool", [ST_F4] = "float4_e2m1fn_x2", [ST_U8] = "uint8", [ST_I8] = "int8",
    [ST_F8_E5M2] = "float8_e5m2", [ST_F8_E4M3] = "float8_e4m3fn",
    [ST_F8_E8M0] = "float8_e8m0fnu", [ST_F8_E4M3FNUZ] = "float8_e4m3fnuz",
    [ST_F8_E5M2FNUZ] = "float8_e5m2fnuz", [ST_I16] = "int16", [ST_U16] = "uint16",
    [ST_F16] = "float16", [ST_BF16] = "bfloat16", [ST_I32] = "int32", [ST_U32] = "uint32",
    [ST_F32] = "float32", [ST_C64] = "complex64", [ST_F64] = "float64", [ST_I64] = "int64",
    [ST_U64] = "uint64",
};

/* NumPy type numbers for the dtypes stock NumPy has; others come from ml_dtypes. */
static int numpy_typenum(st_dtype dtype)
{
    switch (dtype) {
    case ST_BOOL: return NPY_BOOL;
    case ST_U8: return NPY_UINT8;
    case ST_I8: return NPY_INT8;
    case ST_I16: return NPY_INT16;
    case ST_U16: return NPY_UINT16;
    case ST_F16: return NPY_FLOAT16;
    case ST_I32: return NPY_INT32;
    case ST_U32: return NPY_UINT32;
    case ST_F32: return NPY_FLOAT32;
    case ST_C64: return NPY_COMPLEX64;
    case ST_F64: return NPY_FLOAT64;
    case ST_I64: return NPY_INT64;
    case ST_U64: return NPY_UINT64;
    default: return -1;
    }
}

static const char *const ml_dtypes_names[ST_DTYPE__COUNT] = {
    [ST_BF16] = "bfloat16", [ST_F8_E5M2] = "float8_e5m2", [ST_F8_E4M3] = "float8_e4m3fn",
    [ST_F8_E8M0] = "float8_e8m0fnu", [ST_F8_E4M3FNUZ] = "float8_e4m3fnuz",
    [ST_F8_E5M2FNUZ] = "float8_e5m2fnuz",
};

static int prepare_numpy(st_state *state)
{
    if (state->numpy_ready)
        return 0;
    if (PyArray_API == NULL && _import_array() < 0)
        return -1;
    state->numpy_ready = 1;
    return 0;
}

static int prepare_torch(st_state *state)
{
    PyObject *torch;
    int rc = -1;
    if (state->torch != NULL)
        return 0;
    torch = PyImport_ImportModule("torch");
    if (torch == NULL)
        return -1;
    for (int i = 0; i < ST_DTYPE__COUNT; i++) {
        PyObject *dtype = NULL;
        if (torch_names[i] != NULL && (dtype = PyObject_GetAttrString(torch, torch_names[i])) == NULL) {
            /* Older torch builds lack some dtypes: those tensors raise on load. */
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                goto exit;
            PyErr_Clear();
        }
        Py_XSETREF(state->torch_dtypes[i], dtype);
    }
    Py_XSETREF(state->torch_frombuffer, PyObject_GetAttrString(torch, "frombuffer"));
    Py_XSETREF(state->torch_empty, PyObject_GetAttrString(torch, "empty"));
    if (state->torch_frombuffer == NULL || state->torch_empty == NULL)
        goto exit;
    state->torch = Py_NewRef(torch);
    rc = 0;
exit:
    Py_DECREF(torch);
    return rc;
}

/* The callable turning a NumPy array into the framework's array: the one
 * conversion, kept in the Python module (safetensors.<fw>._converter()
 * imports the framework and returns it), shared with <fw>.load_file. */
static PyObject *import_converter(st_framework fw)
{
    static const char *const modules[] = {NULL, NULL, "safetensors.tensorflow", "safetensors.flax",
                                          "safetensors.mlx", "safetensors.paddle"};
    PyObject *module = PyImport_ImportModule(modules[fw]), *fn;
    if (module == NULL)
        return NULL;
    fn = PyObject_CallMethod(module, "_converter", NULL);
    Py_DECREF(module);
    return fn;
}

int st_framework_prepare(st_state *state, st_framework fw)
{
    int rc = 0;
    ST_LOCK(state->SafeOpenType);
    if (fw == FW_PYTORCH) {
        rc = prepare_torch(state);
    } else {
        rc = prepare_numpy(state);
        if (rc == 0 && fw != FW_NUMPY && state->converters[fw] == NULL) {
            state->converters[fw] = import_converter(fw);
            rc = state->converters[fw] ? 0 : -1;
        }
    }
    ST_UNLOCK();
    return rc;
}

/* Borrowed torch dtype for t, or NULL with an exception set. */
PyObject *st_torch_dtype(st_state *state, st_dtype dtype)
{
    PyObject *result = state->torch_dtypes[dtype];
    if (result == NULL)
        PyErr_Format(state->SafetensorError, "Dtype not understood: %s", st_dtype_name(dtype));
    return result;
}

/* New reference to the NumPy descr for dtype, or NULL with an exception set. */
PyArray_Descr *st_numpy_descr(st_state *state, st_dtype dtype)
{
    PyObject *descr = NULL;
    int typenum = numpy_typenum(dtype);
    ST_LOCK(state->SafeOpenType);
    descr = Py_XNewRef(state->np_descrs[dtype]);
    ST_UNLOCK();
    if (descr != NULL)
        return (PyArray_Descr *)descr;
    if (typenum >= 0) {
        descr = (PyObject *)PyArray_DescrFromType(typenum);
    } else if (ml_dtypes_names[dtype] != NULL) {
        PyObject *ml_dtypes = PyImport_ImportModule("ml_dtypes"), *scalar_type;
        if (ml_dtypes == NULL) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "%s tensors need the ml_dtypes package to be loaded in NumPy "
                         "(pip install ml_dtypes)", st_dtype_name(dtype));
            return NULL;
        }
        scalar_type = PyObject_GetAttrString(ml_dtypes, ml_dtypes_names[dtype]);
        Py_DECREF(ml_dtypes);
        if (scalar_type == NULL)
            return NULL;
        if (!PyArray_DescrConverter(scalar_type, (PyArray_Descr **)&descr))
            descr = NULL;
        Py_DECREF(scalar_type);
    } else {
        PyErr_Format(state->SafetensorError, "Dtype not understood: %s (no NumPy dtype holds it)",
                     st_dtype_name(dtype));
    }
    if (descr == NULL)
        return NULL;
    ST_LOCK(state->SafeOpenType);
    if (state->np_descrs[dtype] == NULL)
        state->np_descrs[dtype] = Py_NewRef(descr);
    ST_UNLOCK();
    return (PyArray_Descr *)descr;
}
