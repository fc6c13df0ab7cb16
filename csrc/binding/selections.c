/*
 * selections.c - the part of a tensor that get_slice(...)[index] selects
 * (basic indexing, resolved by the core's st_select): a strided view of a
 * private mapping of the tensor (large selections, mmap backend), or a
 * fresh array holding only the selected elements.
 */
#include "tensors.h"

#include <string.h>

/* ---- MARK: selections ---- */

/* torch has no negative strides: view the mirrored selection, then flip.
 * *owner holds the tensor's bytes at data (taken over). */
static PyObject *torch_select_view(stpy_state *state, stpy_owner *owner, const st_tensor *t,
                                   uint8_t *data, const st_selection *sel)
{
    uint64_t stride[ST_MAX_DIMS], flip[ST_MAX_DIMS]; /* in items; the dims to flip */
    int64_t offset = sel->offset, itemsize = (int64_t)stpy_itemsize_of(t->dtype);
    size_t nflip = 0;
    PyObject *full = NULL, *sizes = NULL, *strides = NULL, *storage_offset = NULL, *view = NULL,
             *dims = NULL, *result = NULL;

    for (size_t i = 0; i < sel->ndim; i++) {
        int64_t step = sel->strides[i];
        if (step < 0 && sel->shape[i] > 1) {
            offset += step * (int64_t)(sel->shape[i] - 1);
            flip[nflip++] = i;
            step = -step;
        }
        stride[i] = step < 0 ? 0 : (uint64_t)(step / itemsize);
    }
    full = stpy_torch_view(state, owner, t, data);
    if (full == NULL)
        goto exit;
    sizes = stpy_int_list(sel->shape, sel->ndim);
    strides = stpy_int_list(stride, sel->ndim);
    storage_offset = PyLong_FromLongLong(offset / itemsize);
    if (sizes == NULL || strides == NULL || storage_offset == NULL)
        goto exit;
    view = PyObject_CallMethodObjArgs(full, state->str_as_strided, sizes, strides, storage_offset,
                                      NULL);
    if (view == NULL || nflip == 0) {
        result = Py_XNewRef(view);
        goto exit;
    }
    dims = stpy_int_list(flip, nflip);
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

/* A fresh array holding only the selected elements (pread, or copied from
 * the mapping).
 * `sel` has the logical shape of the result; `bytes_sel` says which bytes
 * to read (the same selection for dtypes of whole bytes). */
static PyObject *select_copy(stpy_state *state, stpy_framework fw, st_file *file,
                             const st_tensor *t, const st_selection *sel,
                             const st_selection *bytes_sel, size_t itemsize)
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
    array = stpy_new_array(state, fw, &shaped, &data);
    if (array == NULL || sel->nelements == 0)
        return stpy_convert_from_numpy(state, fw, array);
    STPY_COPY_RELEASING_GIL(
        bytes_sel->nelements * itemsize,
        code = st_file_read_selection(file, tensor_start, bytes_sel, itemsize, data, &err));
    if (code != ST_OK) {
        Py_DECREF(array);
        return stpy_raise(state, &err, STPY_CTX_READ_TENSOR, NULL);
    }
    return stpy_convert_from_numpy(state, fw, array);
}

PyObject *stpy_tensor_select(stpy_state *state, stpy_framework fw, st_file *file,
                             const st_tensor *t, const st_selection *sel)
{
    uint64_t offset = st_header_data_start(st_file_header(file)) + t->begin;
    npy_intp dims[NPY_MAXDIMS], strides[NPY_MAXDIMS];
    size_t itemsize = stpy_itemsize_of(t->dtype);
    const st_selection *bytes_sel = sel;
    st_selection packed;
    stpy_owner owner;
    st_error err;

    if (st_dtype_bits(t->dtype) < 8) {
        /* F4/F6: whole bytes only; torch holds F4 as packed pairs, one byte each. */
        if (st_selection_bytes(sel, st_dtype_bits(t->dtype), &packed, &err) != ST_OK)
            return stpy_raise(state, &err, STPY_CTX_NONE, NULL);
        bytes_sel = &packed;
        itemsize = 1;
    }
    /* Small selections are copied; large ones are views of a private
     * mapping of the tensor (zero copy, and independent of every other). */
    if (!stpy_use_private_map(file, bytes_sel->nelements * itemsize) || sel->nelements == 0 ||
        (fw == FW_PYTORCH && offset % itemsize != 0))
        return select_copy(state, fw, file, t, sel, bytes_sel, itemsize);
    if (stpy_owner_map(state, file, offset, stpy_tensor_data_len(t), &owner) < 0)
        return NULL;
    if (fw == FW_PYTORCH)
        return torch_select_view(state, &owner, t, owner.map.data, bytes_sel);
    if (sel->ndim > NPY_MAXDIMS) {
        stpy_owner_release(&owner);
        PyErr_Format(PyExc_ValueError, "selection has %zu dimensions; NumPy supports %d", sel->ndim,
                     NPY_MAXDIMS);
        return NULL;
    }
    for (size_t i = 0; i < sel->ndim; i++) {
        dims[i] = (npy_intp)sel->shape[i];
        strides[i] = (npy_intp)sel->strides[i];
    }
    return stpy_convert_from_numpy(state, fw,
                                   stpy_numpy_view(state, &owner, t, owner.map.data + sel->offset,
                                                   (int)sel->ndim, dims, strides, owner.map.data,
                                                   (size_t)stpy_tensor_data_len(t)));
}

/* ---- MARK: advanced indexing ---- */

/* An index item NumPy should see as an array: tensors of other frameworks
 * (torch, ...) become NumPy arrays; everything else is passed as given. */
static PyObject *numpy_index_item(PyObject *item)
{
    if (PyArray_Check(item) || PyLong_Check(item) || PyList_Check(item) || PySlice_Check(item) ||
        item == Py_None || item == Py_Ellipsis || !PyObject_HasAttrString(item, "__array__"))
        return Py_NewRef(item);
    return PyArray_FromAny(item, NULL, 0, 0, 0, NULL);
}

static PyObject *numpy_index(PyObject *key)
{
    PyObject *result;
    if (!PyTuple_Check(key))
        return numpy_index_item(key);
    result = PyTuple_New(PyTuple_GET_SIZE(key));
    for (Py_ssize_t i = 0; result != NULL && i < PyTuple_GET_SIZE(key); i++) {
        PyObject *item = numpy_index_item(PyTuple_GET_ITEM(key, i));
        if (item == NULL)
            Py_CLEAR(result);
        else
            PyTuple_SET_ITEM(result, i, item);
    }
    return result;
}

/* The unsigned integer dtype of the same item size: every dtype is indexed
 * as raw items, so bfloat16 and float8 need no ml_dtypes here. */
static st_dtype raw_dtype(st_dtype dtype)
{
    switch (st_dtype_bits(dtype)) {
    case 8: return ST_U8;
    case 16: return ST_U16;
    case 32: return ST_U32;
    default: return ST_U64;
    }
}

/* The array of raw items (an independent NumPy array) typed back as t's
 * dtype in the framework; steals raw. */
static PyObject *typed_result(stpy_state *state, stpy_framework fw, const st_tensor *t,
                              PyObject *raw)
{
    PyObject *from_numpy, *tensor, *result = NULL;
    if (fw != FW_PYTORCH) {
        PyArray_Descr *descr = stpy_numpy_descr(state, t->dtype);
        result = descr ? PyArray_View((PyArrayObject *)raw, descr, NULL) : NULL; /* steals descr */
        Py_DECREF(raw);
        return stpy_convert_from_numpy(state, fw, result);
    }
    from_numpy = PyObject_GetAttrString(state->torch, "from_numpy");
    tensor = from_numpy ? PyObject_CallOneArg(from_numpy, raw) : NULL;
    if (tensor != NULL && stpy_torch_dtype(state, t->dtype) != NULL)
        result =
            PyObject_CallMethodOneArg(tensor, state->str_view, stpy_torch_dtype(state, t->dtype));
    Py_XDECREF(from_numpy);
    Py_XDECREF(tensor);
    Py_DECREF(raw);
    return result;
}

PyObject *stpy_tensor_select_advanced(stpy_state *state, stpy_framework fw, st_file *file,
                                      const st_tensor *t, PyObject *key)
{
    st_tensor raw_tensor = *t;
    PyObject *full = NULL, *index = NULL, *selected = NULL, *result = NULL;

    if (st_dtype_bits(t->dtype) < 8 || stpy_framework_prepare(state, FW_NUMPY) < 0) {
        /* Sub-byte dtypes (torch holds F4 packed), or torch without NumPy:
         * the framework's own indexing. */
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_ImportError))
            return NULL;
        PyErr_Clear();
        full = stpy_tensor_load(state, fw, file, t, NULL, NULL);
        result = full ? PyObject_GetItem(full, key) : NULL;
        goto exit;
    }
    raw_tensor.dtype = raw_dtype(t->dtype);
    full = st_file_backend(file) == ST_BACKEND_MMAP
               ? stpy_tensor_view(state, FW_NUMPY, file, &raw_tensor, NULL)
               : stpy_tensor_read(state, FW_NUMPY, file, &raw_tensor, NULL);
    index = full ? numpy_index(key) : NULL;
    selected = index ? PyObject_GetItem(full, index) : NULL;
    if (selected == NULL)
        goto exit;
    /* Advanced indexing copies; anything still sharing memory is copied so
     * the result is independent of every other array. */
    if (!PyArray_Check(selected) || PyArray_BASE((PyArrayObject *)selected) != NULL)
        Py_SETREF(selected, PyArray_FromAny(selected, NULL, 0, 0, NPY_ARRAY_ENSURECOPY, NULL));
    if (selected != NULL) {
        result = typed_result(state, fw, t, selected);
        selected = NULL;
    }
exit:
    Py_XDECREF(full);
    Py_XDECREF(index);
    Py_XDECREF(selected);
    return result;
}
