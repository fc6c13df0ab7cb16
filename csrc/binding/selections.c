/*
 * selections.c - the part of a tensor that get_slice(...)[index] selects
 * (basic indexing, resolved by the core's st_select): a strided view of the
 * mapping, or a fresh array read with pread.
 */
#include "tensors.h"

#include <string.h>

/* ======================================================================
 * MARK: selections
 * ====================================================================== */

static PyObject *int_tuple(const int64_t *values, size_t count)
{
    PyObject *tuple = PyTuple_New((Py_ssize_t)count);
    if (tuple == NULL)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        PyObject *v = PyLong_FromLongLong(values[i]);
        if (v == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, (Py_ssize_t)i, v);
    }
    return tuple;
}

/* torch has no negative strides: view the mirrored selection, then flip. */
static PyObject *torch_select_view(st_state *state, st_file *file, const st_tensor *t,
                                   const st_selection *sel)
{
    int64_t size[ST_MAX_DIMS], stride[ST_MAX_DIMS], flip[ST_MAX_DIMS];
    int64_t offset = sel->offset, itemsize = (int64_t)st_itemsize_of(t->dtype);
    size_t nflip = 0;
    PyObject *full = NULL, *sizes = NULL, *strides = NULL, *storage_offset = NULL, *view = NULL,
             *dims = NULL, *result = NULL;

    for (size_t i = 0; i < sel->ndim; i++) {
        size[i] = (int64_t)sel->shape[i];
        stride[i] = sel->strides[i];
        if (stride[i] < 0 && size[i] > 1) {
            offset += stride[i] * (size[i] - 1);
            stride[i] = -stride[i];
            flip[nflip++] = (int64_t)i;
        } else if (stride[i] < 0) {
            stride[i] = 0;
        }
        stride[i] /= itemsize;
    }
    full = st_torch_view(state, file, NULL, t,
                      st_file_map(file) + st_header_data_start(st_file_header(file)) + t->begin);
    if (full == NULL)
        goto exit;
    sizes = int_tuple(size, sel->ndim);
    strides = int_tuple(stride, sel->ndim);
    storage_offset = PyLong_FromLongLong(offset / itemsize);
    if (sizes == NULL || strides == NULL || storage_offset == NULL)
        goto exit;
    if (sel->nelements == 0) {
        result = st_torch_new_empty(state, sizes, t->dtype);
        goto exit;
    }
    view = PyObject_CallMethodObjArgs(full, state->str_as_strided, sizes, strides, storage_offset,
                                      NULL);
    if (view == NULL || nflip == 0) {
        result = Py_XNewRef(view);
        goto exit;
    }
    dims = int_tuple(flip, nflip);
    if (dims != NULL)
        result = PyObject_CallMethodOneArg(view, state->str_flip, dims);
exit:
    Py_XDECREF(full);
    Py_XDECREF(sizes);
    Py_XDECREF(strides);
    Py_XDECREF(storage_offset);
    Py_XDECREF(view);
    Py_XDECREF(dims);
    return result;
}

/* A fresh array holding only the selected elements, read with pread.
 * `sel` has the logical shape of the result; `bytes_sel` says which bytes
 * to read (the same selection for dtypes of whole bytes). */
static PyObject *select_copy(st_state *state, st_framework fw, st_file *file, const st_tensor *t,
                             const st_selection *sel, const st_selection *bytes_sel,
                             size_t itemsize)
{
    st_tensor shaped = *t;
    uint64_t shape[ST_MAX_DIMS];
    uint8_t *data = NULL;
    uint64_t tensor_start = st_header_data_start(st_file_header(file)) + t->begin;
    PyObject *array;
    st_error err;
    st_code code;

    memcpy(shape, sel->shape, sel->ndim * sizeof(shape[0]));
    shaped.ndim = sel->ndim;
    shaped.shape = shape;
    array = st_new_array(state, fw, &shaped, &data);
    if (array == NULL || sel->nelements == 0)
        return st_convert_from_numpy(state, fw, array);
    if (bytes_sel->nelements * itemsize < ST_GIL_RELEASE_MIN) {
        code = st_file_read_selection(file, tensor_start, bytes_sel, itemsize, data, &err);
    } else {
        Py_BEGIN_ALLOW_THREADS
        code = st_file_read_selection(file, tensor_start, bytes_sel, itemsize, data, &err);
        Py_END_ALLOW_THREADS
    }
    if (code != ST_OK) {
        Py_DECREF(array);
        return st_raise(state, &err, "Error while reading tensor: ", NULL);
    }
    return st_convert_from_numpy(state, fw, array);
}

PyObject *st_tensor_select(st_state *state, st_framework fw, st_file *file, const st_tensor *t,
                           const st_selection *sel)
{
    uint8_t *tensor_data;
    npy_intp dims[NPY_MAXDIMS], strides[NPY_MAXDIMS];
    st_selection bytes_sel;
    st_error err;

    if (st_dtype_bits(t->dtype) < 8) {
        /* F4/F6: whole bytes only; torch holds F4 as packed pairs, one byte each. */
        if (st_selection_bytes(sel, st_dtype_bits(t->dtype), &bytes_sel, &err) != ST_OK)
            return st_raise(state, &err, NULL, NULL);
        if (st_file_backend(file) == ST_BACKEND_PREAD)
            return select_copy(state, fw, file, t, sel, &bytes_sel, 1);
        if (fw == FW_PYTORCH)
            return torch_select_view(state, file, t, &bytes_sel);
        PyErr_Format(state->SafetensorError, "Dtype not understood: %s (no NumPy dtype holds it)",
                     st_dtype_name(t->dtype));
        return NULL;
    }
    if (st_file_backend(file) == ST_BACKEND_PREAD)
        return select_copy(state, fw, file, t, sel, sel, st_itemsize_of(t->dtype));
    if (fw == FW_PYTORCH)
        return torch_select_view(state, file, t, sel);
    if (sel->ndim > NPY_MAXDIMS) {
        PyErr_Format(PyExc_ValueError, "selection has %zu dimensions; NumPy supports %d",
                     sel->ndim, NPY_MAXDIMS);
        return NULL;
    }
    for (size_t i = 0; i < sel->ndim; i++) {
        dims[i] = (npy_intp)sel->shape[i];
        strides[i] = (npy_intp)sel->strides[i];
    }
    tensor_data = st_file_map(file) + st_header_data_start(st_file_header(file)) + t->begin;
    return st_convert_from_numpy(
        state, fw,
        st_numpy_view(state, file, NULL, t, sel->nelements ? tensor_data + sel->offset : tensor_data,
                      (int)sel->ndim, dims, strides, tensor_data, (size_t)st_tensor_data_len(t)));
}
