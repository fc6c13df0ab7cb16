/*
 * frameworks.c - preparing a framework on first use (importing torch, NumPy,
 * ml_dtypes, or having the package import another framework) and mapping header dtypes to each framework's
 * dtype objects. NumPy is imported on first use only, so torch-only users
 * never need it. This file owns NumPy's C API table (import_array).
 */
#define STPY_NUMPY_API_OWNER
#include "tensors.h"

#include <string.h>

const char *stpy_framework_name(stpy_framework fw)
{
    static const char *const names[] = {"pytorch", "numpy", "tensorflow", "flax", "mlx", "paddle"};
    return names[fw];
}

static int prepare_numpy(stpy_state *state)
{
    if (state->ready[FW_NUMPY])
        return 0;
    if (PyArray_API == NULL && _import_array() < 0)
        return -1;
    state->ready[FW_NUMPY] = true;
    return 0;
}

static int prepare_torch(stpy_state *state)
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
        const char *name = st_dtype_info_get((st_dtype)i)->type_name; /* NULL: no torch dtype */
        if (name != NULL && (dtype = PyObject_GetAttrString(torch, name)) == NULL) {
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

/* tensorflow, flax, mlx, paddle: the package's importer (safetensors/__init__.py)
 * imports the framework and safetensors.<fw>, which registers its NumPy ->
 * framework converter (_set_framework_converter); the extension imports no
 * module of the package itself. */
static int import_framework(stpy_state *state, stpy_framework fw)
{
    const char *name = stpy_framework_name(fw);
    PyObject *done = Py_None;
    if (state->framework_importer != NULL)
        done = PyObject_CallFunction(state->framework_importer, "s", name);
    if (done == NULL)
        return -1;
    if (done != Py_None)
        Py_DECREF(done);
    if (state->converters[fw] == NULL) {
        PyErr_Format(state->SafetensorError,
                     "framework %s has no converter registered (importing safetensors.%s "
                     "registers it)",
                     name, name);
        return -1;
    }
    return 0;
}

int stpy_framework_prepare(stpy_state *state, stpy_framework fw)
{
    int rc = 0;
    STPY_LOCK(state->SafeOpenType);
    rc = fw == FW_PYTORCH ? prepare_torch(state) : prepare_numpy(state);
    if (rc == 0 && fw > FW_NUMPY && !state->ready[fw]) {
        rc = import_framework(state, fw);
        state->ready[fw] = rc == 0;
    }
    STPY_UNLOCK();
    return rc;
}

PyObject *stpy_framework_hook(stpy_state *state, PyObject **slots, stpy_framework fw)
{
    PyObject *hook;
    STPY_LOCK(state->SafeOpenType);
    hook = Py_XNewRef(slots[fw]);
    STPY_UNLOCK();
    return hook;
}

PyObject *stpy_torch_dtype(stpy_state *state, st_dtype dtype)
{
    PyObject *result = state->torch_dtypes[dtype];
    if (result == NULL)
        PyErr_Format(state->SafetensorError, "Dtype not understood: %s", st_dtype_name(dtype));
    return result;
}

/* The NumPy descr of a type of NumPy (the name as np.dtype takes it) or of
 * ml_dtypes (the scalar type), as a new reference; NULL with an exception. */
static PyObject *numpy_descr_of(const st_dtype_info *info)
{
    PyObject *type = NULL, *descr = NULL;
    if (info->numpy == ST_NUMPY_BUILTIN) {
        type = PyUnicode_FromString(info->type_name);
    } else {
        PyObject *ml_dtypes = PyImport_ImportModule("ml_dtypes");
        if (ml_dtypes == NULL) {
            PyErr_Clear();
            return PyErr_Format(PyExc_TypeError,
                                "%s tensors need the ml_dtypes package to be loaded in NumPy "
                                "(pip install ml_dtypes)",
                                info->name);
        }
        type = PyObject_GetAttrString(ml_dtypes, info->type_name);
        Py_DECREF(ml_dtypes);
    }
    if (type != NULL && !PyArray_DescrConverter(type, (PyArray_Descr **)&descr))
        descr = NULL;
    Py_XDECREF(type);
    return descr;
}

PyArray_Descr *stpy_numpy_descr(stpy_state *state, st_dtype dtype)
{
    const st_dtype_info *info = st_dtype_info_get(dtype);
    PyObject *descr = NULL;
    STPY_LOCK(state->SafeOpenType);
    descr = Py_XNewRef(state->np_descrs[dtype]);
    STPY_UNLOCK();
    if (descr != NULL)
        return (PyArray_Descr *)descr;
    if (info->numpy == ST_NUMPY_NONE)
        return (PyArray_Descr *)PyErr_Format(state->SafetensorError,
                                             "Dtype not understood: %s (no NumPy dtype holds it)",
                                             info->name);
    if ((descr = numpy_descr_of(info)) == NULL)
        return NULL;
    STPY_LOCK(state->SafeOpenType);
    if (state->np_descrs[dtype] == NULL)
        state->np_descrs[dtype] = Py_NewRef(descr);
    STPY_UNLOCK();
    return (PyArray_Descr *)descr;
}

PyObject *stpy_dtype_table(PyObject *module, PyObject *unused)
{
    static const char *const numpy_sources[] = {
        [ST_NUMPY_NONE] = NULL, [ST_NUMPY_BUILTIN] = "numpy", [ST_NUMPY_ML_DTYPES] = "ml_dtypes"};
    PyObject *table = PyTuple_New(ST_DTYPE__COUNT);
    (void)module;
    (void)unused;
    for (int i = 0; table != NULL && i < ST_DTYPE__COUNT; i++) {
        const st_dtype_info *info = st_dtype_info_get((st_dtype)i);
        PyObject *row = Py_BuildValue("(sIzzI)", info->name, info->bits, info->type_name,
                                      numpy_sources[info->numpy], info->pack);
        if (row == NULL)
            Py_CLEAR(table);
        else
            PyTuple_SET_ITEM(table, i, row);
    }
    return table;
}
