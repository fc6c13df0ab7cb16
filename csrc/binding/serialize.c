/*
 * serialize.c - TensorSpec, serialize, serialize_file, deserialize.
 *
 * serialize* take, per tensor, a TensorSpec (a raw pointer the caller keeps
 * alive), as upstream 0.8.0 does (the 0.7 dict form is a TypeError). The layout and the bytes come from the core
 * (st_write_layout); all the heavy work runs with the GIL released, which is
 * safe because every Python object involved is referenced by `items` and
 * every buffer stays acquired until the end of the call.
 */
#include "module.h"

#include <stddef.h>
#include <string.h>
#include <structmember.h>

/* ---- MARK: dtype names accepted on write ---- */

/* The names are the core's type names (st_dtype_from_type_name); this is
 * upstream's message, which lists them in its own order. */
#define SUPPORTED_DTYPES                                                                           \
    "bool, int8, uint8, int16, uint16, int32, uint32, int64, uint64, float16, float32, "           \
    "float64, bfloat16, float8_e4m3fn, float8_e4m3fnuz, float8_e5m2, float8_e5m2fnuz, "            \
    "float8_e8m0fnu, float4_e2m1fn_x2, complex64"

static int parse_write_dtype(stpy_state *state, PyObject *obj, st_dtype *out)
{
    Py_ssize_t len;
    const char *name;
    PyObject *quoted;
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "dtype must be a str, not '%.100s'", Py_TYPE(obj)->tp_name);
        return -1;
    }
    name = PyUnicode_AsUTF8AndSize(obj, &len);
    if (name == NULL)
        return -1;
    if (st_dtype_from_type_name(name, (size_t)len, out))
        return 0;
    quoted = stpy_debug_quote(obj);
    if (quoted != NULL)
        PyErr_Format(state->SafetensorError,
                     "Unknown dtype %U. Supported dtypes: " SUPPORTED_DTYPES, quoted);
    Py_XDECREF(quoted);
    return -1;
}

/* dims from a sequence of at most ST_MAX_DIMS non-negative ints; the count,
 * or -1 with an exception set. */
static Py_ssize_t parse_dims(PyObject *obj, uint64_t *dims)
{
    /* A tuple (torch.Size too) or list is read in place: no copy per tensor. */
    PyObject *seq = PyTuple_Check(obj) || PyList_CheckExact(obj)
                        ? Py_NewRef(obj)
                        : PySequence_Fast(obj, "shape must be a sequence of ints");
    Py_ssize_t count = -1;
    if (seq == NULL)
        return -1;
    if (PySequence_Fast_GET_SIZE(seq) > ST_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "shape has more than %d dimensions", ST_MAX_DIMS);
        goto exit;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        unsigned long long dim = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (dim == (unsigned long long)-1 && PyErr_Occurred())
            goto exit;
        dims[i] = dim;
    }
    count = PySequence_Fast_GET_SIZE(seq);
exit:
    Py_DECREF(seq);
    return count;
}

/* ---- MARK: TensorSpec ---- */

/* Variable-sized: ob_size dims follow (files can hold 100,000s of specs). */
typedef struct {
    PyObject_VAR_HEAD st_dtype dtype;
    unsigned long long data_ptr, data_len;
    uint64_t shape[]; /* logical */
} TensorSpec;

#define SPEC_NDIM(spec) ((size_t)Py_SIZE(spec))

static PyObject *spec_build(PyTypeObject *type, PyObject *dtype_obj, PyObject *shape_obj,
                            unsigned long long data_ptr, unsigned long long data_len)
{
    stpy_state *state = stpy_state_from_type(type);
    TensorSpec *self;
    st_dtype dtype;
    uint64_t shape[ST_MAX_DIMS];
    Py_ssize_t ndim;
    st_error err;

    if (parse_write_dtype(state, dtype_obj, &dtype) < 0 ||
        (ndim = parse_dims(shape_obj, shape)) < 0)
        return NULL;
    /* F4: the last (packed) dim doubled into the logical one. */
    if (ndim > 0 && st_dtype_unpacked_dim(dtype, shape[ndim - 1], &shape[ndim - 1], &err) != ST_OK)
        return stpy_raise(state, &err, STPY_CTX_NONE, NULL);
    self = (TensorSpec *)type->tp_alloc(type, ndim);
    if (self == NULL)
        return NULL;
    self->dtype = dtype;
    memcpy(self->shape, shape, (size_t)ndim * sizeof(shape[0]));
    self->data_ptr = data_ptr;
    self->data_len = data_len;
    return (PyObject *)self;
}

static PyObject *TensorSpec_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"dtype", "shape", "data_ptr", "data_len", NULL};
    PyObject *dtype_obj, *shape_obj;
    unsigned long long data_ptr, data_len;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OOKK:TensorSpec", kwlist, &dtype_obj,
                                     &shape_obj, &data_ptr, &data_len))
        return NULL;
    return spec_build(type, dtype_obj, shape_obj, data_ptr, data_len);
}

/* TensorSpec._of(dtype, shape, data_ptr, data_len): the constructor with
 * positional arguments and no keyword parsing, for the per-tensor loop of
 * safetensors.torch (a million tiny tensors make a million specs). */
static PyObject *TensorSpec_of(PyTypeObject *type, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long long data_ptr, data_len;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "TensorSpec._of takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    data_ptr = PyLong_AsUnsignedLongLong(args[2]);
    data_len = PyErr_Occurred() ? 0 : PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    return spec_build(type, args[0], args[1], data_ptr, data_len);
}

static PyMethodDef TensorSpec_methods[] = {
    {"_of", (PyCFunction)(void (*)(void))TensorSpec_of, METH_FASTCALL | METH_CLASS,
     "_of(dtype, shape, data_ptr, data_len)\n--\n\nTensorSpec(...) with positional arguments."},
    {NULL, NULL, 0, NULL},
};

static void TensorSpec_dealloc(TensorSpec *self)
{
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *TensorSpec_get_dtype(TensorSpec *self, void *closure)
{
    return PyUnicode_FromString(st_dtype_name(self->dtype));
}

static PyObject *TensorSpec_get_shape(TensorSpec *self, void *closure)
{
    return stpy_int_list(self->shape, SPEC_NDIM(self));
}

static PyObject *TensorSpec_repr(TensorSpec *self)
{
    PyObject *shape = TensorSpec_get_shape(self, NULL), *repr;
    if (shape == NULL)
        return NULL;
    repr = PyUnicode_FromFormat("TensorSpec(dtype='%s', shape=%R, data_ptr=%llu, data_len=%llu)",
                                st_dtype_name(self->dtype), shape, self->data_ptr, self->data_len);
    Py_DECREF(shape);
    return repr;
}

static PyGetSetDef TensorSpec_getset[] = {
    {"dtype", (getter)TensorSpec_get_dtype, NULL, "dtype as written in the header", NULL},
    {"shape", (getter)TensorSpec_get_shape, NULL, "logical shape", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef TensorSpec_members[] = {
    {"data_ptr", T_ULONGLONG, offsetof(TensorSpec, data_ptr), READONLY, "address of the data"},
    {"data_len", T_ULONGLONG, offsetof(TensorSpec, data_len), READONLY,
     "length of the data in bytes"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot TensorSpec_slots[] = {
    {Py_tp_new, TensorSpec_new},
    {Py_tp_dealloc, TensorSpec_dealloc},
    {Py_tp_repr, TensorSpec_repr},
    {Py_tp_getset, TensorSpec_getset},
    {Py_tp_members, TensorSpec_members},
    {Py_tp_methods, TensorSpec_methods},
    {Py_tp_doc,
     "TensorSpec(*, dtype, shape, data_ptr, data_len)\n"
     "--\n"
     "\n"
     "A tensor to serialize: data_len little-endian, C-ordered bytes at address\n"
     "data_ptr, which the caller keeps alive and unchanged during the\n"
     "serialize/serialize_file call (no reference is taken).\n"
     "\n"
     "Args:\n"
     "    dtype (str): torch/NumPy-style name: \"float32\", \"bfloat16\", \"int8\",\n"
     "        \"float8_e4m3fn\", \"float4_e2m1fn_x2\", ... (header codes like \"F32\" are\n"
     "        not accepted, as upstream).\n"
     "    shape (Sequence[int]): the logical shape (for float4_e2m1fn_x2 the\n"
     "        packed shape; its last dimension is doubled).\n"
     "    data_ptr (int): address of the first byte.\n"
     "    data_len (int): length in bytes; must match shape and dtype.\n"
     "\n"
     "Raises:\n"
     "    SafetensorError: unknown dtype ('Unknown dtype \"x\". Supported dtypes: ...').\n"
     "    TypeError: missing or positional arguments.\n"
     "\n"
     "Example:\n"
     "    >>> a = np.zeros((2, 3), np.float32)\n"
     "    >>> TensorSpec(dtype=\"float32\", shape=a.shape, data_ptr=a.ctypes.data, data_len=a.nbytes)\n"
     "    TensorSpec(dtype='F32', shape=[2, 3], data_ptr=..., data_len=24)"},
    {0, NULL},
};

PyType_Spec stpy_tensor_spec_spec = {
    .name = "safetensors._safetensors_c.TensorSpec",
    .basicsize = sizeof(TensorSpec),
    .itemsize = sizeof(uint64_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = TensorSpec_slots,
};

/* ---- MARK: collecting the input ---- */

void stpy_write_input_release(stpy_write_input *in)
{
    PyMem_Free(in->tensors);
    PyMem_Free(in->shapes);
    PyMem_Free(in->order);
    Py_CLEAR(in->items);
    PyMem_Free(in->metadata.entries);
    Py_CLEAR(in->metadata.items);
}

/* Room for count tensors (and their shapes, for declarations). */
static int alloc_input(stpy_write_input *in, Py_ssize_t count, bool shapes)
{
    in->count = (size_t)count;
    in->tensors = PyMem_Calloc(in->count + 1, sizeof(*in->tensors));
    in->order = PyMem_Calloc(in->count + 1, sizeof(*in->order));
    in->shapes = shapes ? PyMem_Calloc(in->count + 1, sizeof(*in->shapes)) : NULL;
    if (in->tensors == NULL || in->order == NULL || (shapes && in->shapes == NULL)) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int collect_tensor(stpy_state *state, stpy_write_input *in, size_t i, PyObject *name,
                          PyObject *value)
{
    st_write_tensor *w = &in->tensors[i];
    Py_ssize_t name_len;
    TensorSpec *spec;

    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "tensor names must be str, not '%.100s'",
                     Py_TYPE(name)->tp_name);
        return -1;
    }
    w->name = PyUnicode_AsUTF8AndSize(name, &name_len);
    if (w->name == NULL)
        return -1;
    w->name_len = (size_t)name_len;
    /* 0.8.0 removed the 0.7 dict form ({"dtype", "shape", "data"}). */
    if (stpy_check_arg(value, state->TensorSpecType, "tensor_dict") < 0)
        return -1;
    spec = (TensorSpec *)value;
    w->dtype = spec->dtype;
    w->ndim = SPEC_NDIM(spec);
    w->shape = spec->shape;
    w->data = (const void *)(uintptr_t)spec->data_ptr;
    w->data_len = spec->data_len;
    return 0;
}

int stpy_collect_metadata(PyObject *metadata, stpy_metadata_list *out)
{
    Py_ssize_t count;
    memset(out, 0, sizeof(*out));
    if (metadata == NULL || metadata == Py_None)
        return 0;
    /* The dict's items (a list of pairs) keep every key and value alive. */
    if (stpy_check_arg(metadata, &PyDict_Type, "metadata") < 0 ||
        (out->items = PyDict_Items(metadata)) == NULL)
        return -1;
    count = PyList_GET_SIZE(out->items);
    out->present = true;
    out->entries = PyMem_Calloc((size_t)count + 1, sizeof(st_metadata_item));
    if (out->entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyList_GET_ITEM(out->items, i);
        PyObject *key = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        Py_ssize_t key_len, value_len;
        st_metadata_item *item = &out->entries[i];
        if (!PyUnicode_Check(key) || !PyUnicode_Check(value)) {
            PyErr_Format(PyExc_TypeError,
                         "argument 'metadata': metadata keys and values must be str, got %R: %R",
                         key, value);
            return -1;
        }
        item->key = PyUnicode_AsUTF8AndSize(key, &key_len);
        item->value = item->key ? PyUnicode_AsUTF8AndSize(value, &value_len) : NULL;
        if (item->value == NULL)
            return -1;
        item->key_len = (size_t)key_len;
        item->value_len = (size_t)value_len;
    }
    out->count = (size_t)count;
    return 0;
}

/* The tensors are read from a private copy of the dict (one object, where a
 * list of item pairs would be a million tuples for a million tensors, each
 * counted towards the next garbage collection): no other thread can change
 * it while the GIL is released. */
static int collect(stpy_state *state, PyObject *tensor_dict, PyObject *metadata,
                   stpy_write_input *in)
{
    Py_ssize_t pos = 0, i = 0;
    PyObject *name, *value;
    memset(in, 0, sizeof(*in));
    if (stpy_check_arg(tensor_dict, &PyDict_Type, "tensor_dict") < 0 ||
        (in->items = PyDict_Copy(tensor_dict)) == NULL ||
        alloc_input(in, PyDict_GET_SIZE(in->items), false) < 0)
        return -1;
    while (PyDict_Next(in->items, &pos, &name, &value)) {
        if (collect_tensor(state, in, (size_t)i++, name, value) < 0)
            return -1;
    }
    return stpy_collect_metadata(metadata, &in->metadata);
}

/* Fills *w from a (name, header dtype, shape[, data length]) tuple, the
 * shape in dims. */
static int parse_declaration(stpy_state *state, PyObject *item, bool with_len, st_write_tensor *w,
                             uint64_t *dims)
{
    PyObject *name, *dtype, *shape;
    Py_ssize_t len, ndim, data_len = 0;
    const char *code;
    if (!PyTuple_Check(item)) {
        PyErr_Format(PyExc_TypeError, "each tensor is a tuple (name, dtype, shape%s), not %R",
                     with_len ? ", data length" : "", item);
        return -1;
    }
    if (!PyArg_ParseTuple(item,
                          with_len ? "UUOn;each tensor is (name, dtype, shape, data length)"
                                   : "UUO;each tensor is (name, dtype, shape)",
                          &name, &dtype, &shape, &data_len) ||
        (w->name = PyUnicode_AsUTF8AndSize(name, &len)) == NULL)
        return -1;
    w->name_len = (size_t)len;
    if ((code = PyUnicode_AsUTF8AndSize(dtype, &len)) == NULL)
        return -1;
    if (!st_dtype_from_name(code, (size_t)len, &w->dtype)) {
        PyErr_Format(state->SafetensorError,
                     "Unknown dtype %R for tensor %R (a header name such as 'F32')", dtype, name);
        return -1;
    }
    if ((ndim = parse_dims(shape, dims)) < 0)
        return -1;
    w->ndim = (size_t)ndim;
    w->shape = dims;
    w->data_len = (uint64_t)data_len;
    return 0;
}

int stpy_collect_declarations(stpy_state *state, PyObject *declarations, bool with_len,
                              PyObject *metadata, stpy_write_input *in)
{
    memset(in, 0, sizeof(*in));
    /* A tuple of our own: the caller's list may change while the GIL is released. */
    if ((in->items = PySequence_Tuple(declarations)) == NULL ||
        alloc_input(in, PyTuple_GET_SIZE(in->items), true) < 0)
        return -1;
    for (size_t i = 0; i < in->count; i++) {
        if (parse_declaration(state, PyTuple_GET_ITEM(in->items, (Py_ssize_t)i), with_len,
                              &in->tensors[i], in->shapes[i]) < 0)
            return -1;
    }
    return stpy_collect_metadata(metadata, &in->metadata);
}

/* ---- MARK: serialize, serialize_file ---- */

/* The core's layout of the collected input; the caller releases the GIL. */
static st_code lay_out(const stpy_write_input *in, uint64_t alignment, st_layout *layout,
                       st_error *err)
{
    *layout = (st_layout){.tensors = in->tensors,
                          .count = in->count,
                          .metadata = in->metadata.entries,
                          .metadata_count = in->metadata.count,
                          .has_metadata = in->metadata.present,
                          .order = in->order};
    return st_write_layout_aligned(layout, alignment, err);
}

/* serialize (filename NULL: the bytes) and serialize_file (None). */
static PyObject *write_tensors(PyObject *module, PyObject *tensor_dict, PyObject *filename,
                               PyObject *metadata, PyObject *alignment_obj)
{
    stpy_state *state = stpy_state_from_module(module);
    PyObject *path = NULL, *name = NULL, *result = NULL;
    st_layout layout = {0};
    stpy_write_input in = {0};
    uint64_t alignment;
    st_error err;
    st_code code;

    if (stpy_parse_alignment(alignment_obj, &alignment) < 0)
        goto exit;
    /* name: the str for messages */
    if (filename != NULL &&
        (!PyUnicode_FSConverter(filename, &path) || !PyUnicode_FSDecoder(filename, &name)))
        goto exit;
    if (collect(state, tensor_dict, metadata, &in) < 0)
        goto exit;
    Py_BEGIN_ALLOW_THREADS
        code = lay_out(&in, alignment, &layout, &err);
        if (code == ST_OK && path != NULL)
            code = st_write_file(PyBytes_AS_STRING(path), &layout, &err);
    Py_END_ALLOW_THREADS
    if (code != ST_OK) {
        stpy_raise(state, &err, STPY_CTX_SERIALIZE, name);
        goto exit;
    }
    if (path != NULL) {
        result = Py_NewRef(Py_None);
        goto exit;
    }
    if (layout.total_size > (uint64_t)PY_SSIZE_T_MAX) {
        PyErr_NoMemory();
        goto exit;
    }
    /* Built in place: the only copy of the data is the bytes object itself. */
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)layout.total_size);
    if (result == NULL)
        goto exit;
    Py_BEGIN_ALLOW_THREADS
        st_write_to_memory(&layout, (uint8_t *)PyBytes_AS_STRING(result));
    Py_END_ALLOW_THREADS
exit:
    st_free(layout.header);
    stpy_write_input_release(&in);
    Py_XDECREF(path);
    Py_XDECREF(name);
    return result;
}

PyObject *stpy_serialize(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"tensor_dict", "metadata", "alignment", NULL};
    PyObject *tensor_dict, *metadata = NULL, *alignment = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O$O:serialize", kwlist, &tensor_dict,
                                     &metadata, &alignment))
        return NULL;
    return write_tensors(module, tensor_dict, NULL, metadata, alignment);
}

PyObject *stpy_serialize_file(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"tensor_dict", "filename", "metadata", "alignment", NULL};
    PyObject *tensor_dict, *filename, *metadata = NULL, *alignment = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O$O:serialize_file", kwlist, &tensor_dict,
                                     &filename, &metadata, &alignment))
        return NULL;
    return write_tensors(module, tensor_dict, filename, metadata, alignment);
}

/* _write_layout(entries, metadata, alignment=None) -> (header, order): the
 * layout of (name, header dtype, shape, data length) entries, checked as
 * serialize checks them: the bytes that start the file (length prefix +
 * padded JSON) and the entry indices in file order (uploads written part by
 * part, and the digests of safetensors.serialize). */
PyObject *stpy_write_layout_only(PyObject *module, PyObject *args)
{
    stpy_state *state = stpy_state_from_module(module);
    PyObject *entries, *metadata, *alignment_obj = NULL, *order = NULL, *result = NULL;
    st_layout layout = {0};
    stpy_write_input in = {0};
    uint64_t alignment;
    st_error err;

    if (!PyArg_ParseTuple(args, "OO|O:_write_layout", &entries, &metadata, &alignment_obj) ||
        stpy_parse_alignment(alignment_obj, &alignment) < 0 ||
        stpy_collect_declarations(state, entries, true, metadata, &in) < 0)
        goto exit;
    if (lay_out(&in, alignment, &layout, &err) != ST_OK) {
        stpy_raise(state, &err, STPY_CTX_SERIALIZE, NULL);
        goto exit;
    }
    order = PyList_New((Py_ssize_t)in.count);
    for (size_t i = 0; order != NULL && i < in.count; i++) {
        PyObject *index = PyLong_FromSize_t(in.order[i]);
        if (index == NULL)
            Py_CLEAR(order);
        else
            PyList_SET_ITEM(order, (Py_ssize_t)i, index);
    }
    if (order != NULL)
        result = Py_BuildValue("(y#O)", (const char *)layout.header, (Py_ssize_t)layout.header_size,
                               order);
exit:
    st_free(layout.header);
    stpy_write_input_release(&in);
    Py_XDECREF(order);
    return result;
}

/* ---- MARK: deserialize ---- */

/* Parses a whole file held in a bytes-like object into *header (owned by
 * the caller; *buffer acquired on success); -1 with an exception set. */
static int parse_buffer(stpy_state *state, PyObject *arg, Py_buffer *buffer, st_header **header)
{
    uint64_t header_len = 0;
    const uint8_t *bytes;
    st_error err;
    st_code code;

    if (PyObject_GetBuffer(arg, buffer, PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "argument 'bytes': '%.100s' object is not an instance of 'bytes'",
                     Py_TYPE(arg)->tp_name);
        return -1;
    }
    bytes = buffer->buf;
    code = st_header_length(bytes, buffer->len < 8 ? (size_t)buffer->len : 8, (uint64_t)buffer->len,
                            &header_len, &err);
    if (code == ST_OK)
        code = st_header_parse(bytes + 8, (size_t)header_len, (uint64_t)buffer->len, header, &err);
    if (code != ST_OK) {
        stpy_note_foreign_format(&err, bytes, (size_t)buffer->len);
        stpy_raise(state, &err, STPY_CTX_DESERIALIZE, NULL);
        PyBuffer_Release(buffer);
        return -1;
    }
    return 0;
}

/* deserialize (fw < 0: a list of (name, {"shape", "dtype", "data"}) pairs)
 * and _deserialize_tensors ({name: tensor of fw}), both in file order. */
static PyObject *deserialize_as(stpy_state *state, PyObject *data, int fw)
{
    st_header *header = NULL;
    PyObject *result;
    Py_buffer buffer;

    if (parse_buffer(state, data, &buffer, &header) < 0)
        return NULL;
    result = fw < 0 ? PyList_New(0) : PyDict_New();
    for (size_t i = 0; result != NULL && i < st_header_count(header); i++) {
        const st_tensor *t = st_header_tensor(header, i);
        const uint8_t *bytes =
            (const uint8_t *)buffer.buf + st_header_data_start(header) + t->begin;
        PyObject *name = stpy_tensor_name(t), *value = NULL, *pair = NULL;
        if (name != NULL && fw < 0)
            value = Py_BuildValue("{sNsssN}", "shape", stpy_int_list(t->shape, t->ndim), "dtype",
                                  st_dtype_name(t->dtype), "data",
                                  PyByteArray_FromStringAndSize((const char *)bytes,
                                                                (Py_ssize_t)(t->end - t->begin)));
        else if (name != NULL)
            value = stpy_tensor_from_memory(state, (stpy_framework)fw, t, bytes);
        if (value != NULL && fw < 0)
            pair = PyTuple_Pack(2, name, value);
        if (value == NULL || (fw < 0 ? pair == NULL || PyList_Append(result, pair) < 0
                                     : PyDict_SetItem(result, name, value) < 0))
            Py_CLEAR(result);
        Py_XDECREF(name);
        Py_XDECREF(value);
        Py_XDECREF(pair);
    }
    st_header_free(header);
    PyBuffer_Release(&buffer);
    return result;
}

PyObject *stpy_deserialize(PyObject *module, PyObject *arg)
{
    return deserialize_as(stpy_state_from_module(module), arg, -1);
}

PyObject *stpy_deserialize_tensors(PyObject *module, PyObject *args)
{
    stpy_state *state = stpy_state_from_module(module);
    PyObject *data, *framework_obj;
    stpy_framework framework;

    if (!PyArg_ParseTuple(args, "OO:_deserialize_tensors", &data, &framework_obj) ||
        stpy_parse_framework(state, framework_obj, &framework) < 0 ||
        stpy_framework_prepare(state, framework) < 0)
        return NULL;
    return deserialize_as(state, data, (int)framework);
}
