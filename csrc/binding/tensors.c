/*
 * tensors.c - tensor bytes to NumPy arrays, torch tensors and the other
 * frameworks' arrays.
 *
 * Zero copy (mmap backend): a MappedBytes object owns one reference to the
 * st_file and exports a range of the mapping through the buffer protocol.
 * NumPy arrays are created with the NumPy C API straight over the mapping
 * with a MappedBytes as their base; torch tensors come from
 * torch.frombuffer(MappedBytes), which keeps it alive. The mapping is
 * private and writable: arrays are writable, writes never reach the file.
 *
 * Copies (pread backend, unaligned data for torch): a fresh array of the
 * framework is allocated and filled with the GIL released.
 *
 * NumPy is imported on first use only, so torch-only users never need it.
 * This is the only file that includes the NumPy C API.
 */
#include "module.h"

#include <string.h>

#define PY_ARRAY_UNIQUE_SYMBOL st_numpy_api
#include <numpy/arrayobject.h>

/* ======================================================================
 * MARK: MappedBytes
 * ====================================================================== */

/* Exactly one of file and block is set: the memory is the file's mapping,
 * or a block read from the file (st_read_block). */
typedef struct {
    PyObject_HEAD
    st_file *file;      /* owned reference: keeps the mapping alive */
    PyObject *block;    /* owned reference: keeps the block alive */
    uint8_t *data;      /* inside the mapping or the block */
    Py_ssize_t len;
} MappedBytes;

static PyObject *mapped_bytes_new(st_state *state, st_file *file, PyObject *block, uint8_t *data,
                                  size_t len)
{
    MappedBytes *self = PyObject_New(MappedBytes, state->MappedBytesType);
    if (self == NULL)
        return NULL;
    if (block == NULL)
        st_file_retain(file);
    self->file = block == NULL ? file : NULL;
    self->block = Py_XNewRef(block);
    self->data = data;
    self->len = (Py_ssize_t)len;
    return (PyObject *)self;
}

static void MappedBytes_dealloc(MappedBytes *self)
{
    PyTypeObject *type = Py_TYPE(self);
    if (self->file != NULL)
        st_file_release(self->file);
    Py_XDECREF(self->block);
    PyObject_Free(self);
    Py_DECREF(type);
}

static int MappedBytes_getbuffer(MappedBytes *self, Py_buffer *view, int flags)
{
    /* The mapping cannot go away while self exists, so no export count is needed. */
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->len, 0, flags);
}

static PyType_Slot MappedBytes_slots[] = {
    {Py_tp_dealloc, MappedBytes_dealloc},
    {Py_bf_getbuffer, MappedBytes_getbuffer},
    {Py_tp_doc, "Bytes of a tensor inside a file mapping (keeps the mapping alive)."},
    {0, NULL},
};

PyType_Spec st_mapped_bytes_spec = {
    .name = "safetensors._safetensors_c.MappedBytes",
    .basicsize = sizeof(MappedBytes),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = MappedBytes_slots,
};

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

/* A callable turning a NumPy array into the framework's array. */
static PyObject *import_converter(st_framework fw)
{
    static const char *const modules[] = {NULL, NULL, "tensorflow", "jax.numpy", "mlx.core", "paddle"};
    static const char *const functions[] = {NULL, NULL, "convert_to_tensor", "array", "array", "to_tensor"};
    PyObject *module = PyImport_ImportModule(modules[fw]), *fn;
    if (module == NULL)
        return NULL;
    fn = PyObject_GetAttrString(module, functions[fw]);
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
static PyObject *torch_dtype(st_state *state, st_dtype dtype)
{
    PyObject *result = state->torch_dtypes[dtype];
    if (result == NULL)
        PyErr_Format(state->SafetensorError, "Dtype not understood: %s", st_dtype_name(dtype));
    return result;
}

/* New reference to the NumPy descr for dtype, or NULL with an exception set. */
static PyArray_Descr *numpy_descr(st_state *state, st_dtype dtype)
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

/* ======================================================================
 * MARK: shapes
 * ====================================================================== */

static size_t itemsize_of(st_dtype dtype)
{
    unsigned bits = st_dtype_bits(dtype);
    return bits >= 8 ? bits / 8 : 1;
}

static uint64_t tensor_nbytes(const st_tensor *t)
{
    return t->end - t->begin;
}

/* The shape torch stores: F4 packs two values per byte in the last dim. */
static PyObject *torch_shape(const st_tensor *t)
{
    PyObject *shape = PyTuple_New((Py_ssize_t)t->ndim);
    if (shape == NULL)
        return NULL;
    for (size_t i = 0; i < t->ndim; i++) {
        uint64_t dim = t->shape[i];
        if (t->dtype == ST_F4 && i + 1 == t->ndim)
            dim /= 2;
        PyObject *value = PyLong_FromUnsignedLongLong(dim);
        if (value == NULL) {
            Py_DECREF(shape);
            return NULL;
        }
        PyTuple_SET_ITEM(shape, (Py_ssize_t)i, value);
    }
    return shape;
}

static int numpy_dims(const st_tensor *t, npy_intp *dims)
{
    if (t->ndim > NPY_MAXDIMS) {
        PyErr_Format(PyExc_ValueError, "tensor has %zu dimensions; NumPy supports %d", t->ndim,
                     NPY_MAXDIMS);
        return -1;
    }
    for (size_t i = 0; i < t->ndim; i++)
        dims[i] = (npy_intp)t->shape[i];
    return 0;
}

/* ======================================================================
 * MARK: building arrays
 * ====================================================================== */

static PyObject *call_kw_dtype(PyObject *fn, PyObject *arg, st_state *state, PyObject *dtype)
{
    PyObject *kwnames = PyTuple_Pack(1, state->str_dtype), *result;
    PyObject *args[2] = {arg, dtype};
    if (kwnames == NULL)
        return NULL;
    result = PyObject_Vectorcall(fn, args, 1, kwnames);
    Py_DECREF(kwnames);
    return result;
}

static PyObject *torch_new_empty(st_state *state, PyObject *shape, st_dtype dtype)
{
    PyObject *tdtype = torch_dtype(state, dtype);
    return tdtype ? call_kw_dtype(state->torch_empty, shape, state, tdtype) : NULL;
}

static int torch_data_ptr(st_state *state, PyObject *tensor, uint8_t **out)
{
    PyObject *ptr = PyObject_CallMethodNoArgs(tensor, state->str_data_ptr);
    if (ptr == NULL)
        return -1;
    *out = (uint8_t *)PyLong_AsVoidPtr(ptr);
    Py_DECREF(ptr);
    return PyErr_Occurred() ? -1 : 0;
}

/* Below this, a copy from the page cache is quicker than handing the GIL
 * to another thread and taking it back. */
#define ST_GIL_RELEASE_MIN ((size_t)1 << 20)

/* Reads len bytes at absolute offset into dst, with the GIL released for
 * large reads. */
static int read_into(st_state *state, st_file *file, uint64_t offset, uint8_t *dst, size_t len)
{
    st_error err;
    st_code code = ST_OK;
    if (len == 0)
        return 0;
    if (len < ST_GIL_RELEASE_MIN) {
        code = st_file_read(file, offset, dst, len, &err);
    } else {
        Py_BEGIN_ALLOW_THREADS
        code = st_file_read(file, offset, dst, len, &err);
        Py_END_ALLOW_THREADS
    }
    if (code != ST_OK) {
        st_raise(state, &err, "Error while reading tensor: ", NULL);
        return -1;
    }
    return 0;
}

/* A fresh, C-contiguous array of the framework with t's logical shape and
 * dtype, its data pointer in *data. */
static PyObject *new_array(st_state *state, st_framework fw, const st_tensor *t, uint8_t **data)
{
    if (fw == FW_PYTORCH) {
        PyObject *shape = torch_shape(t), *tensor;
        if (shape == NULL)
            return NULL;
        tensor = torch_new_empty(state, shape, t->dtype);
        Py_DECREF(shape);
        if (tensor != NULL && torch_data_ptr(state, tensor, data) < 0)
            Py_CLEAR(tensor);
        return tensor;
    } else {
        npy_intp dims[NPY_MAXDIMS];
        PyArray_Descr *descr = numpy_descr(state, t->dtype);
        PyObject *array;
        if (descr == NULL)
            return NULL;
        if (numpy_dims(t, dims) < 0) {
            Py_DECREF(descr);
            return NULL;
        }
        array = PyArray_Empty((int)t->ndim, dims, descr, 0);   /* steals descr */
        if (array != NULL)
            *data = (uint8_t *)PyArray_DATA((PyArrayObject *)array);
        return array;
    }
}

/* Hands a NumPy array to tensorflow/jax/mlx/paddle (they copy); steals array. */
static PyObject *convert_from_numpy(st_state *state, st_framework fw, PyObject *array)
{
    PyObject *result;
    if (array == NULL || fw == FW_NUMPY || fw == FW_PYTORCH)
        return array;
    result = PyObject_CallOneArg(state->converters[fw], array);
    Py_DECREF(array);
    return result;
}

PyObject *st_tensor_read(st_state *state, st_framework fw, st_file *file, const st_tensor *t)
{
    uint8_t *data = NULL;
    PyObject *array = new_array(state, fw, t, &data);
    if (array == NULL)
        return NULL;
    if (read_into(state, file, st_header_data_start(st_file_header(file)) + t->begin, data,
                  (size_t)tensor_nbytes(t)) < 0) {
        Py_DECREF(array);
        return NULL;
    }
    return convert_from_numpy(state, fw, array);
}

/* A NumPy array over memory owned by the file's mapping or by block. */
static PyObject *numpy_view(st_state *state, st_file *file, PyObject *block, const st_tensor *t,
                            uint8_t *data, int ndim, npy_intp *dims, npy_intp *strides,
                            uint8_t *base_data, size_t base_len)
{
    PyArray_Descr *descr = numpy_descr(state, t->dtype);
    PyObject *array, *base;
    if (descr == NULL)
        return NULL;
    array = PyArray_NewFromDescr(&PyArray_Type, descr, ndim, dims, strides, data,
                                 NPY_ARRAY_WRITEABLE, NULL);   /* steals descr */
    if (array == NULL)
        return NULL;
    /* Alignment depends on the file: NumPy handles unaligned arrays itself. */
    PyArray_UpdateFlags((PyArrayObject *)array, NPY_ARRAY_UPDATE_ALL);
    base = mapped_bytes_new(state, file, block, base_data, base_len);
    if (base == NULL || PyArray_SetBaseObject((PyArrayObject *)array, base) < 0) {
        Py_XDECREF(base);
        Py_DECREF(array);
        return NULL;
    }
    return array;
}

/* A torch tensor over memory owned by the file's mapping or by block. */
static PyObject *torch_view(st_state *state, st_file *file, PyObject *block, const st_tensor *t,
                            uint8_t *data)
{
    PyObject *tdtype = torch_dtype(state, t->dtype), *shape = NULL, *flat = NULL, *base = NULL,
             *result = NULL;
    size_t nbytes = (size_t)tensor_nbytes(t);
    if (tdtype == NULL)
        return NULL;
    shape = torch_shape(t);
    if (shape == NULL)
        goto exit;
    if (nbytes == 0) {
        result = call_kw_dtype(state->torch_empty, shape, state, tdtype);
        goto exit;
    }
    if ((uintptr_t)data % itemsize_of(t->dtype) != 0) {
        /* torch views need element-aligned storage: copy data a non-upstream
         * writer left unaligned. */
        result = st_tensor_read(state, FW_PYTORCH, file, t);
        goto exit;
    }
    base = mapped_bytes_new(state, file, block, data, nbytes);
    if (base == NULL)
        goto exit;
    flat = call_kw_dtype(state->torch_frombuffer, base, state, tdtype);
    if (flat == NULL)
        goto exit;
    result = PyObject_CallMethodOneArg(flat, state->str_view, shape);
exit:
    Py_XDECREF(shape);
    Py_XDECREF(flat);
    Py_XDECREF(base);
    return result;
}

/* t as a view of memory holding its bytes at data (see MappedBytes). */
static PyObject *view_of(st_state *state, st_framework fw, st_file *file, PyObject *block,
                         const st_tensor *t, uint8_t *data)
{
    npy_intp dims[NPY_MAXDIMS];
    if (fw == FW_PYTORCH)
        return torch_view(state, file, block, t, data);
    if (numpy_dims(t, dims) < 0)
        return NULL;
    return convert_from_numpy(state, fw,
                              numpy_view(state, file, block, t, data, (int)t->ndim, dims, NULL,
                                         data, (size_t)tensor_nbytes(t)));
}

PyObject *st_tensor_view(st_state *state, st_framework fw, st_file *file, const st_tensor *t)
{
    return view_of(state, fw, file, NULL, t,
                   st_file_map(file) + st_header_data_start(st_file_header(file)) + t->begin);
}

PyObject *st_read_block(st_state *state, st_framework fw, st_file *file, uint8_t **data)
{
    uint64_t start = st_header_data_start(st_file_header(file));
    uint64_t len = st_file_size(file) - start;
    st_tensor whole = {.name = "", .dtype = ST_U8, .ndim = 1, .shape = &len};
    PyObject *block = new_array(state, fw == FW_PYTORCH ? FW_PYTORCH : FW_NUMPY, &whole, data);
    if (block != NULL && read_into(state, file, start, *data, (size_t)len) < 0)
        Py_CLEAR(block);
    return block;
}

PyObject *st_tensor_in_block(st_state *state, st_framework fw, st_file *file, PyObject *block,
                             uint8_t *block_data, const st_tensor *t)
{
    return view_of(state, fw, file, block, t, block_data + t->begin);
}

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
    int64_t offset = sel->offset, itemsize = (int64_t)itemsize_of(t->dtype);
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
    full = torch_view(state, file, NULL, t,
                      st_file_map(file) + st_header_data_start(st_file_header(file)) + t->begin);
    if (full == NULL)
        goto exit;
    sizes = int_tuple(size, sel->ndim);
    strides = int_tuple(stride, sel->ndim);
    storage_offset = PyLong_FromLongLong(offset / itemsize);
    if (sizes == NULL || strides == NULL || storage_offset == NULL)
        goto exit;
    if (sel->nelements == 0) {
        result = torch_new_empty(state, sizes, t->dtype);
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
    array = new_array(state, fw, &shaped, &data);
    if (array == NULL || sel->nelements == 0)
        return convert_from_numpy(state, fw, array);
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
    return convert_from_numpy(state, fw, array);
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
        return select_copy(state, fw, file, t, sel, sel, itemsize_of(t->dtype));
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
    return convert_from_numpy(
        state, fw,
        numpy_view(state, file, NULL, t, sel->nelements ? tensor_data + sel->offset : tensor_data,
                   (int)sel->ndim, dims, strides, tensor_data, (size_t)tensor_nbytes(t)));
}

/*
 * CUDA: the bytes are copied (threads, GIL released) into a pinned staging
 * tensor from torch's caching host allocator, and sent with a non-blocking
 * copy, so reading the next tensor overlaps this one's transfer. The staging
 * block goes back to torch's cache, which keeps it until the copy is done.
 * Callers synchronize once (st_cuda_synchronize) before handing tensors out.
 */
PyObject *st_tensor_to_cuda(st_state *state, st_file *file, const st_tensor *t, PyObject *device)
{
    PyObject *tdtype = torch_dtype(state, t->dtype), *nbytes = NULL, *kwnames = NULL,
             *staging = NULL, *typed = NULL, *shape = NULL, *shaped = NULL, *result = NULL;
    size_t len = (size_t)tensor_nbytes(t);
    uint8_t *data;
    if (tdtype == NULL)
        return NULL;
    nbytes = PyLong_FromSize_t(len);
    kwnames = Py_BuildValue("(ss)", "dtype", "pin_memory");
    if (nbytes == NULL || kwnames == NULL)
        goto exit;
    {
        PyObject *args[3] = {nbytes, state->torch_dtypes[ST_U8], Py_True};
        staging = PyObject_Vectorcall(state->torch_empty, args, 1, kwnames);
    }
    if (staging == NULL || torch_data_ptr(state, staging, &data) < 0)
        goto exit;
    if (read_into(state, file, st_header_data_start(st_file_header(file)) + t->begin, data, len) < 0)
        goto exit;
    typed = PyObject_CallMethodOneArg(staging, state->str_view, tdtype);
    shape = torch_shape(t);
    shaped = typed && shape ? PyObject_CallMethodOneArg(typed, state->str_view, shape) : NULL;
    if (shaped == NULL)
        goto exit;
    Py_SETREF(kwnames, Py_BuildValue("(s)", "non_blocking"));
    if (kwnames != NULL) {
        PyObject *args[3] = {shaped, device, Py_True};
        result = PyObject_VectorcallMethod(state->str_to, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                           kwnames);
    }
exit:
    Py_XDECREF(nbytes);
    Py_XDECREF(kwnames);
    Py_XDECREF(staging);
    Py_XDECREF(typed);
    Py_XDECREF(shape);
    Py_XDECREF(shaped);
    return result;
}

int st_cuda_synchronize(st_state *state, PyObject *device)
{
    PyObject *cuda = PyObject_GetAttrString(state->torch, "cuda"), *done;
    if (cuda == NULL)
        return -1;
    done = PyObject_CallMethod(cuda, "synchronize", "O", device);
    Py_DECREF(cuda);
    Py_XDECREF(done);
    return done ? 0 : -1;
}

PyObject *st_tensor_to_device(st_state *state, PyObject *tensor, PyObject *device)
{
    PyObject *moved = PyObject_CallMethodOneArg(tensor, state->str_to, device);
    Py_DECREF(tensor);
    return moved;
}
