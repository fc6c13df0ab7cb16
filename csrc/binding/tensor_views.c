/*
 * tensor_views.c - a whole tensor's bytes as a NumPy array or a torch
 * tensor (a view of a private mapping with a MappedBytes as its base, or a
 * fresh copy), and the other frameworks' arrays made from NumPy's; at the
 * end, get_tensors on the mmap backend. docs/design.md says which is used when.
 */
#include "tensors.h"

#include <string.h>

/* ---- MARK: shapes ---- */

size_t stpy_itemsize_of(st_dtype dtype)
{
    unsigned bits = st_dtype_bits(dtype);
    return bits >= 8 ? bits / 8 : 1;
}

uint64_t stpy_tensor_data_len(const st_tensor *t)
{
    return t->end - t->begin;
}

PyObject *stpy_torch_shape(stpy_state *state, const st_tensor *t)
{
    PyObject *shape = PyTuple_New((Py_ssize_t)t->ndim);
    st_error err;
    if (shape == NULL)
        return NULL;
    for (size_t i = 0; i < t->ndim; i++) {
        uint64_t dim = t->shape[i];
        if (i + 1 == t->ndim && st_dtype_packed_dim(t->dtype, dim, &dim, &err) != ST_OK) {
            Py_DECREF(shape);
            return stpy_raise(state, &err, STPY_CTX_NONE, NULL);
        }
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

/* ---- MARK: building arrays ---- */

static PyObject *call_kw_dtype(PyObject *fn, PyObject *arg, stpy_state *state, PyObject *dtype)
{
    PyObject *kwnames = PyTuple_Pack(1, state->str_dtype), *result;
    PyObject *args[2] = {arg, dtype};
    if (kwnames == NULL)
        return NULL;
    result = PyObject_Vectorcall(fn, args, 1, kwnames);
    Py_DECREF(kwnames);
    return result;
}

static PyObject *torch_new_empty(stpy_state *state, PyObject *shape, st_dtype dtype)
{
    PyObject *tdtype = stpy_torch_dtype(state, dtype), *result, *type, *value, *traceback;
    result = tdtype ? call_kw_dtype(state->torch_empty, shape, state, tdtype) : NULL;
    if (result == NULL && PyErr_ExceptionMatches(PyExc_RuntimeError)) {
        /* torch's CPU allocator failing: a MemoryError, as NumPy raises */
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_Format(PyExc_MemoryError, "Unable to allocate a tensor of shape %S and dtype %S: %S",
                     shape, tdtype, value);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
    }
    return result;
}

int stpy_torch_data_ptr(stpy_state *state, PyObject *tensor, uint8_t **out)
{
    PyObject *ptr = PyObject_CallMethodNoArgs(tensor, state->str_data_ptr);
    if (ptr == NULL)
        return -1;
    *out = (uint8_t *)PyLong_AsVoidPtr(ptr);
    Py_DECREF(ptr);
    return PyErr_Occurred() ? -1 : 0;
}

int stpy_read_into(stpy_state *state, st_file *file, uint64_t offset, uint8_t *dst, size_t len,
                   const st_tensor *t, PyObject *verifier)
{
    st_error err;
    st_code code;
    if (verifier != NULL) {
        st_read_request request = {.offset = offset, .dst = dst, .len = len};
        stpy_span span = {.tensor = t, .request = len > 0 ? 0 : SIZE_MAX};
        return stpy_read_verified(state, file, false, &request, len > 0, verifier, &span, 1);
    }
    if (len == 0)
        return 0;
    STPY_COPY_RELEASING_GIL(len, code = st_file_read(file, offset, dst, len, &err));
    if (code != ST_OK) {
        stpy_raise(state, &err, STPY_CTX_READ_TENSOR, NULL);
        return -1;
    }
    return 0;
}

PyObject *stpy_new_array(stpy_state *state, stpy_framework fw, const st_tensor *t, uint8_t **data)
{
    if (fw == FW_PYTORCH) {
        PyObject *shape = stpy_torch_shape(state, t), *tensor;
        if (shape == NULL)
            return NULL;
        tensor = torch_new_empty(state, shape, t->dtype);
        Py_DECREF(shape);
        if (tensor != NULL && stpy_torch_data_ptr(state, tensor, data) < 0)
            Py_CLEAR(tensor);
        return tensor;
    } else {
        npy_intp dims[NPY_MAXDIMS];
        PyArray_Descr *descr = stpy_numpy_descr(state, t->dtype);
        PyObject *array;
        if (descr == NULL)
            return NULL;
        if (numpy_dims(t, dims) < 0) {
            Py_DECREF(descr);
            return NULL;
        }
        array = PyArray_Empty((int)t->ndim, dims, descr, 0); /* steals descr */
        if (array != NULL)
            *data = (uint8_t *)PyArray_DATA((PyArrayObject *)array);
        return array;
    }
}

PyObject *stpy_convert_from_numpy(stpy_state *state, stpy_framework fw, PyObject *array)
{
    PyObject *convert, *result = NULL;
    if (array == NULL || fw == FW_NUMPY || fw == FW_PYTORCH)
        return array;
    convert = stpy_framework_hook(state, state->converters, fw); /* set by prepare */
    if (convert != NULL)
        result = PyObject_CallOneArg(convert, array);
    Py_XDECREF(convert);
    Py_DECREF(array);
    return result;
}

PyObject *stpy_tensor_from_memory(stpy_state *state, stpy_framework fw, const st_tensor *t,
                                  const uint8_t *src)
{
    uint8_t *data = NULL;
    PyObject *array = stpy_new_array(state, fw, t, &data);
    if (array != NULL && stpy_tensor_data_len(t) > 0)
        memcpy(data, src, (size_t)stpy_tensor_data_len(t));
    return stpy_convert_from_numpy(state, fw, array);
}

PyObject *stpy_tensor_read(stpy_state *state, stpy_framework fw, st_file *file, const st_tensor *t,
                           PyObject *verifier)
{
    uint8_t *data = NULL;
    PyObject *array = stpy_new_array(state, fw, t, &data);
    if (array == NULL)
        return NULL;
    if (stpy_read_into(state, file, st_header_data_start(st_file_header(file)) + t->begin, data,
                       (size_t)stpy_tensor_data_len(t), t, verifier) < 0) {
        Py_DECREF(array);
        return NULL;
    }
    return stpy_convert_from_numpy(state, fw, array);
}

bool stpy_use_private_map(const st_file *file, uint64_t nbytes)
{
    return st_file_backend(file) == ST_BACKEND_MMAP && nbytes >= STPY_PRIVATE_MAP_MIN &&
           stpy_private_map_allowed();
}

/* A writable NumPy array of t's dtype over data, kept alive by base (a
 * MappedBytes; the reference is taken over, also on failure). */
static PyObject *numpy_array_on(stpy_state *state, const st_tensor *t, uint8_t *data, int ndim,
                                npy_intp *dims, npy_intp *strides, PyObject *base)
{
    PyArray_Descr *descr = stpy_numpy_descr(state, t->dtype);
    PyObject *array = NULL;
    if (descr != NULL)
        array = PyArray_NewFromDescr(&PyArray_Type, descr, ndim, dims, strides, data,
                                     NPY_ARRAY_WRITEABLE, NULL); /* steals descr */
    if (array == NULL) {
        Py_DECREF(base);
        return NULL;
    }
    /* Alignment depends on the file: NumPy handles unaligned arrays itself. */
    PyArray_UpdateFlags((PyArrayObject *)array, NPY_ARRAY_UPDATE_ALL);
    if (PyArray_SetBaseObject((PyArrayObject *)array, base) < 0) { /* steals base */
        Py_DECREF(array);
        return NULL;
    }
    return array;
}

PyObject *stpy_numpy_view(stpy_state *state, stpy_owner *owner, const st_tensor *t, uint8_t *data,
                          int ndim, npy_intp *dims, npy_intp *strides, uint8_t *base_data,
                          size_t base_len)
{
    PyObject *base = stpy_mapped_bytes_new(state, owner, base_data, base_len);
    return base == NULL ? NULL : numpy_array_on(state, t, data, ndim, dims, strides, base);
}

PyObject *stpy_torch_view(stpy_state *state, stpy_owner *owner, const st_tensor *t, uint8_t *data)
{
    PyObject *tdtype = stpy_torch_dtype(state, t->dtype), *shape = NULL, *flat = NULL, *base = NULL,
             *result = NULL;
    if (tdtype == NULL || (shape = stpy_torch_shape(state, t)) == NULL) {
        stpy_owner_release(owner);
        return NULL;
    }
    base = stpy_mapped_bytes_new(state, owner, data, (size_t)stpy_tensor_data_len(t));
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

/* t as a view of data, kept alive by *owner (taken over). */
static PyObject *view_of(stpy_state *state, stpy_framework fw, stpy_owner *owner,
                         const st_tensor *t, uint8_t *data)
{
    npy_intp dims[NPY_MAXDIMS];
    if (fw == FW_PYTORCH)
        return stpy_torch_view(state, owner, t, data);
    if (numpy_dims(t, dims) < 0) {
        stpy_owner_release(owner);
        return NULL;
    }
    return stpy_convert_from_numpy(state, fw,
                                   stpy_numpy_view(state, owner, t, data, (int)t->ndim, dims, NULL,
                                                   data, (size_t)stpy_tensor_data_len(t)));
}

/* torch views need element-aligned storage; a non-upstream writer may have
 * left data unaligned, and then a copy is made. */
static bool torch_misaligned(stpy_framework fw, const st_tensor *t, uint64_t address)
{
    return fw == FW_PYTORCH && address % stpy_itemsize_of(t->dtype) != 0;
}

PyObject *stpy_tensor_view(stpy_state *state, stpy_framework fw, st_file *file, const st_tensor *t,
                           PyObject *verifier)
{
    uint64_t offset = st_header_data_start(st_file_header(file)) + t->begin;
    uint64_t nbytes = stpy_tensor_data_len(t);
    stpy_owner owner;
    if (!stpy_use_private_map(file, nbytes) || torch_misaligned(fw, t, offset))
        return stpy_tensor_read(state, fw, file, t, verifier); /* small: a copy of its own */
    if (stpy_owner_map(state, file, offset, nbytes, &owner) < 0)
        return NULL;
    if (verifier != NULL && stpy_verify_memory(verifier, t, owner.map.data) < 0) {
        stpy_owner_release(&owner);
        return NULL;
    }
    return view_of(state, fw, &owner, t, owner.map.data);
}

PyObject *stpy_new_block(stpy_state *state, stpy_framework fw, uint64_t len, uint8_t **data)
{
    st_tensor whole = {.name = "", .dtype = ST_U8, .ndim = 1, .shape = &len};
    return stpy_new_array(state, fw == FW_PYTORCH ? FW_PYTORCH : FW_NUMPY, &whole, data);
}

PyObject *stpy_tensor_in_block(stpy_state *state, stpy_framework fw, st_file *file, PyObject *block,
                               uint8_t *block_data, uint64_t block_begin, const st_tensor *t,
                               PyObject *verifier)
{
    uint8_t *data = block_data + (t->begin - block_begin);
    stpy_owner owner = {.block = NULL};
    if (stpy_tensor_data_len(t) == 0 || torch_misaligned(fw, t, (uint64_t)(uintptr_t)data))
        return stpy_tensor_read(state, fw, file, t, verifier);
    owner.block = Py_NewRef(block);
    return view_of(state, fw, &owner, t, data);
}

/* ---- MARK: every tensor at once (get_tensors: mmap backend, CPU) ---- */

/*
 * One private mapping of the file's data per call (docs/design.md, "one
 * shared private mapping"): the small tensors (below STPY_PRIVATE_MAP_MIN)
 * share one MappedBytes exporting all of it; a large one has a MappedBytes
 * of its own that holds the shared one and gives its pages back when it
 * dies (stpy_owner.discard).
 */
typedef struct {
    stpy_state *state;
    stpy_framework fw;
    st_file *file;
    const st_header *header;
    uint64_t base_offset; /* absolute file offset of the mapping's first byte */
    uint8_t *base_data;   /* that byte (page-aligned) */
    size_t base_len;      /* bytes mapped from there */
    PyObject *base;       /* MappedBytes over the whole mapping, or NULL: nothing shared */
    PyObject *flat;       /* torch: a uint8 tensor over base */
    PyObject *result;     /* the dict handed back */
} shared_load;

/* Whether t is a view of the shared mapping: not empty, and for torch
 * element-aligned (else a copy is made, see torch_misaligned). */
static bool in_mapping(const shared_load *load, const st_tensor *t)
{
    return stpy_tensor_data_len(t) > 0 &&
           !torch_misaligned(load->fw, t, st_header_data_start(load->header) + t->begin);
}

static bool is_small(const st_tensor *t)
{
    return stpy_tensor_data_len(t) < STPY_PRIVATE_MAP_MIN;
}

static uint8_t *data_of(const shared_load *load, const st_tensor *t)
{
    return load->base_data + (st_header_data_start(load->header) + t->begin - load->base_offset);
}

/* Adds name -> tensor to the result; steals tensor. */
static int add_tensor(shared_load *load, const st_tensor *t, PyObject *tensor)
{
    PyObject *name;
    int rc = -1;
    if (tensor == NULL)
        return -1;
    name = stpy_tensor_name(t);
    if (name != NULL)
        rc = PyDict_SetItem(load->result, name, tensor);
    Py_XDECREF(name);
    Py_DECREF(tensor);
    return rc;
}

/* Maps the bytes of every tensor that is in_mapping; leaves load->base
 * NULL when there is none or no private mapping is left (then each tensor
 * takes the one-at-a-time path). */
static int map_shared(shared_load *load)
{
    uint64_t first = UINT64_MAX, last = 0, data_start = st_header_data_start(load->header);
    stpy_owner owner;
    for (size_t i = 0; i < st_header_count(load->header); i++) {
        const st_tensor *t = st_header_tensor(load->header, i);
        if (in_mapping(load, t)) {
            first = t->begin < first ? t->begin : first;
            last = t->end > last ? t->end : last;
        }
    }
    if (first >= last || !stpy_private_map_allowed())
        return 0;
    if (stpy_owner_map(load->state, load->file, data_start + first, last - first, &owner) < 0)
        return -1;
    /* Exported from the page-aligned start, so that element alignment in
     * the storage is alignment in the file. */
    load->base_data = owner.map.base;
    load->base_len = owner.map.len;
    load->base_offset = data_start + first - (uint64_t)(owner.map.data - (uint8_t *)owner.map.base);
    load->base = stpy_mapped_bytes_new(load->state, &owner, load->base_data, owner.map.len);
    if (load->base == NULL)
        return -1;
    if (load->fw == FW_PYTORCH)
        load->flat = call_kw_dtype(load->state->torch_frombuffer, load->base, load->state,
                                   load->state->torch_dtypes[ST_U8]);
    return load->fw == FW_PYTORCH && load->flat == NULL ? -1 : 0;
}

/* A large tensor: its own exporter, holding the shared one. */
static PyObject *own_view(shared_load *load, const st_tensor *t)
{
    uint8_t *data = data_of(load, t);
    stpy_owner owner = {.block = Py_NewRef(load->base),
                        .discard = data,
                        .discard_len = (size_t)stpy_tensor_data_len(t)};
    return view_of(load->state, load->fw, &owner, t, data);
}

static PyObject *shared_numpy_array(shared_load *load, const st_tensor *t)
{
    npy_intp dims[NPY_MAXDIMS];
    uint8_t *data = data_of(load, t);
    if (numpy_dims(t, dims) < 0)
        return NULL;
    return numpy_array_on(load->state, t, data, (int)t->ndim, dims, NULL, Py_NewRef(load->base));
}

/* Tensors i..j-1 of one dtype, each starting where the one before ends: one
 * view of the run's bytes, split by unsafe_split_with_sizes (plain tensors;
 * why it is safe here: docs/design.md), reshaped with view() where not 1-D. */
static int add_torch_run(shared_load *load, size_t i, size_t j)
{
    stpy_state *state = load->state;
    const st_tensor *first = st_header_tensor(load->header, i);
    const st_tensor *last = st_header_tensor(load->header, j - 1);
    uint64_t itemsize = stpy_itemsize_of(first->dtype);
    uint64_t offset = st_header_data_start(load->header) + first->begin - load->base_offset;
    PyObject *tdtype = stpy_torch_dtype(state, first->dtype), *sizes = NULL, *bytes = NULL,
             *typed = NULL, *parts = NULL;
    int rc = -1;
    if (tdtype == NULL || (sizes = PyList_New((Py_ssize_t)(j - i))) == NULL)
        goto exit;
    for (size_t k = i; k < j; k++) {
        uint64_t nbytes = stpy_tensor_data_len(st_header_tensor(load->header, k));
        PyObject *numel = PyLong_FromUnsignedLongLong(nbytes / itemsize);
        if (numel == NULL)
            goto exit;
        PyList_SET_ITEM(sizes, (Py_ssize_t)(k - i), numel);
    }
    bytes = PyObject_CallMethod(load->flat, "as_strided", "(K)(i)K",
                                (unsigned long long)(last->end - first->begin), 1,
                                (unsigned long long)offset);
    typed = bytes ? PyObject_CallMethodOneArg(bytes, state->str_view, tdtype) : NULL;
    parts = typed ? PyObject_CallMethod(typed, "unsafe_split_with_sizes", "O", sizes) : NULL;
    Py_XSETREF(parts, parts ? PySequence_Fast(parts, "unsafe_split_with_sizes") : NULL);
    if (parts == NULL)
        goto exit;
    for (size_t k = i; k < j; k++) {
        const st_tensor *t = st_header_tensor(load->header, k);
        PyObject *tensor = Py_NewRef(PySequence_Fast_GET_ITEM(parts, (Py_ssize_t)(k - i)));
        if (t->ndim != 1) { /* 1-D: the split already has the shape */
            PyObject *shape = stpy_torch_shape(state, t);
            Py_SETREF(tensor,
                      shape ? PyObject_CallMethodOneArg(tensor, state->str_view, shape) : NULL);
            Py_XDECREF(shape);
        }
        if (add_tensor(load, t, tensor) < 0)
            goto exit;
    }
    rc = 0;
exit:
    Py_XDECREF(sizes);
    Py_XDECREF(bytes);
    Py_XDECREF(typed);
    Py_XDECREF(parts);
    return rc;
}

/* verify=True: the tensors that are views of the shared mapping, hashed over it in parallel
 * threads before any is made (the others are checked as stpy_tensor_view reads them). */
static int verify_shared(shared_load *load, PyObject *verifier)
{
    size_t count = st_header_count(load->header), n = 0;
    const st_tensor **tensors = PyMem_Calloc(count ? count : 1, sizeof *tensors);
    uint8_t **data = PyMem_Calloc(count ? count : 1, sizeof *data);
    int rc = -1;
    if (tensors == NULL || data == NULL) {
        PyErr_NoMemory();
        goto exit;
    }
    for (size_t i = 0; i < count; i++) {
        const st_tensor *t = st_header_tensor(load->header, i);
        if (in_mapping(load, t)) {
            tensors[n] = t;
            data[n++] = data_of(load, t);
        }
    }
    rc = stpy_verify_memory_many(verifier, tensors, data, n);
exit:
    PyMem_Free(tensors);
    PyMem_Free(data);
    return rc;
}

PyObject *stpy_tensors_of_mapping(stpy_state *state, stpy_framework fw, st_file *file,
                                  PyObject *verifier)
{
    shared_load load = {.state = state, .fw = fw, .file = file, .header = st_file_header(file)};
    size_t count = st_header_count(load.header), i = 0;
    /* Each tensor is a new container object: with a million of them the
     * cyclic collector would run over and over and walk every one it
     * already made. None of them can be part of a cycle yet. */
    int gc_was_enabled = PyGC_Disable();
    if (map_shared(&load) < 0 || (load.result = PyDict_New()) == NULL)
        goto fail;
    if (verifier != NULL && load.base != NULL && verify_shared(&load, verifier) < 0)
        goto fail;
    while (i < count) {
        const st_tensor *t = st_header_tensor(load.header, i);
        size_t j = i + 1;
        if (load.base == NULL || !in_mapping(&load, t)) {
            if (add_tensor(&load, t, stpy_tensor_view(state, fw, file, t, verifier)) < 0)
                goto fail;
        } else if (!is_small(t)) {
            if (add_tensor(&load, t, own_view(&load, t)) < 0)
                goto fail;
        } else if (fw == FW_NUMPY) {
            if (add_tensor(&load, t, shared_numpy_array(&load, t)) < 0)
                goto fail;
        } else {
            for (const st_tensor *prev = t, *next; j < count; j++, prev = next) {
                next = st_header_tensor(load.header, j);
                if (next->dtype != t->dtype || next->begin != prev->end ||
                    !in_mapping(&load, next) || !is_small(next))
                    break;
            }
            if (add_torch_run(&load, i, j) < 0)
                goto fail;
        }
        i = j;
    }
    goto exit;
fail:
    Py_CLEAR(load.result);
exit:
    if (gc_was_enabled)
        PyGC_Enable();
    Py_XDECREF(load.flat);
    Py_XDECREF(load.base);
    return load.result;
}
