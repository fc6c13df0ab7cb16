/*
 * slice.c - the lazy slice object returned by safe_open.get_slice: its shape
 * and dtype, and __getitem__ (Python index items converted for the core's
 * st_select; anything else goes to the framework's own indexing).
 */
#include "module.h"

#include <string.h>

typedef struct {
    PyObject_HEAD st_file *file; /* owned reference */
    const st_tensor *tensor;     /* inside file's header */
    stpy_framework framework;
    PyObject *device;
    PyObject
        *verifier; /* the handle's (verify=True): the tensor is checked whole before any read */
} Slice;

PyObject *stpy_slice_new(stpy_state *state, st_file *file, const st_tensor *tensor,
                         stpy_framework framework, PyObject *device, PyObject *verifier)
{
    Slice *slice = (Slice *)state->SliceType->tp_alloc(state->SliceType, 0);
    if (slice == NULL) {
        st_file_release(file);
        return NULL;
    }
    slice->file = file; /* the slice takes over the caller's reference */
    slice->tensor = tensor;
    slice->framework = framework;
    slice->device = Py_XNewRef(device);
    slice->verifier = Py_XNewRef(verifier);
    return (PyObject *)slice;
}

static int Slice_traverse(Slice *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->device);
    Py_VISIT(self->verifier);
    return 0;
}

static void Slice_dealloc(Slice *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->file != NULL)
        st_file_release(self->file);
    Py_CLEAR(self->device);
    Py_CLEAR(self->verifier);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *Slice_get_shape(Slice *self, PyObject *unused)
{
    return stpy_int_list(self->tensor->shape, self->tensor->ndim);
}

static PyObject *Slice_get_dtype(Slice *self, PyObject *unused)
{
    return PyUnicode_FromString(st_dtype_name(self->tensor->dtype));
}

/* An int for indexing: Python ints, NumPy integer scalars, 0-d integer
 * arrays and tensors. Booleans and arrays of any other shape are masks or
 * index arrays (advanced indexing), as in NumPy, even though a one-element
 * torch tensor also has __index__. */
static bool is_integer_scalar(PyObject *item)
{
    PyObject *ndim;
    long dims;
    if (PyLong_Check(item))
        return !PyBool_Check(item);
    if (!PyIndex_Check(item) || PyObject_HasAttrString(item, "dtype") == 0)
        return PyIndex_Check(item);
    ndim = PyObject_GetAttrString(item, "ndim");
    if (ndim == NULL) {
        PyErr_Clear();
        return true; /* a scalar type with a dtype (np.int64) */
    }
    dims = PyLong_AsLong(ndim);
    Py_DECREF(ndim);
    PyErr_Clear();
    if (dims != 0)
        return false;
    /* NumPy and torch booleans have __index__ too; NumPy treats them as masks. */
    {
        PyObject *dtype = PyObject_GetAttrString(item, "dtype"),
                 *text = dtype ? PyObject_Str(dtype) : NULL;
        const char *name = text ? PyUnicode_AsUTF8(text) : NULL;
        bool is_bool = name != NULL && strstr(name, "bool") != NULL;
        PyErr_Clear();
        Py_XDECREF(dtype);
        Py_XDECREF(text);
        return !is_bool;
    }
}

/*
 * Converts one Python index item. Returns 1 if it is a basic item, 0 if it
 * is something only the framework's own indexing understands (lists,
 * arrays, booleans, tensors), -1 on error.
 */
static int convert_index_item(PyObject *item, st_index *out, PyObject **huge)
{
    memset(out, 0, sizeof(*out));
    if (item == Py_Ellipsis) {
        out->kind = ST_INDEX_ELLIPSIS;
        return 1;
    }
    if (item == Py_None) {
        out->kind = ST_INDEX_NEWAXIS;
        return 1;
    }
    if (PySlice_Check(item)) {
        Py_ssize_t start, stop, step;
        PySliceObject *s = (PySliceObject *)item;
        if (PySlice_Unpack(item, &start, &stop, &step) < 0)
            return -1;
        out->kind = ST_INDEX_SLICE;
        out->has_start = s->start != Py_None;
        out->has_stop = s->stop != Py_None;
        out->has_step = s->step != Py_None;
        out->start = start;
        out->stop = stop;
        out->step = step;
        return 1;
    }
    if (is_integer_scalar(item)) {
        PyObject *index = PyNumber_Index(item);
        long long value;
        int overflow = 0;
        if (index == NULL)
            return -1;
        value = PyLong_AsLongLongAndOverflow(index, &overflow);
        if (overflow != 0) {
            /* Out of range for any dimension; the message shows the index given. */
            value = overflow > 0 ? INT64_MAX : INT64_MIN;
            Py_XSETREF(*huge, Py_NewRef(index));
        }
        Py_DECREF(index);
        if (value == -1 && PyErr_Occurred())
            return -1;
        out->kind = ST_INDEX_INT;
        out->value = value;
        return 1;
    }
    return 0;
}

/* Puts the index the caller gave back into the core's message, which saw
 * it clamped to int64 (see convert_index_item). */
static void show_given_index(st_error *err, const st_index *items, size_t count, PyObject *huge)
{
    char clamped[32], rest[ST_ERROR_MSG_MAX];
    const char *given;
    char *at = NULL;
    PyObject *text = PyObject_Str(huge);
    given = text ? PyUnicode_AsUTF8(text) : NULL;
    for (size_t i = 0; i < count && at == NULL && given != NULL; i++) {
        if (items[i].kind != ST_INDEX_INT ||
            (items[i].value != INT64_MAX && items[i].value != INT64_MIN))
            continue;
        snprintf(clamped, sizeof(clamped), "%lld", (long long)items[i].value);
        at = strstr(err->msg, clamped);
    }
    if (at != NULL) {
        snprintf(rest, sizeof(rest), "%s", at + strlen(clamped));
        snprintf(at, sizeof(err->msg) - (size_t)(at - err->msg), "%s%s", given, rest);
    }
    PyErr_Clear();
    Py_XDECREF(text);
}

static PyObject *Slice_getitem(Slice *self, PyObject *key)
{
    stpy_state *state = stpy_state_from_type(Py_TYPE(self));
    st_index items[ST_MAX_DIMS * 2];
    PyObject *result = NULL, *huge = NULL;
    Py_ssize_t count;
    int basic = 1;
    st_selection selection;
    st_error err;

    if (PyTuple_Check(key)) {
        count = PyTuple_GET_SIZE(key);
        if (count > (Py_ssize_t)(sizeof(items) / sizeof(items[0]))) {
            PyErr_SetString(state->SafetensorIndexError, "too many indices for tensor");
            return NULL;
        }
        for (Py_ssize_t i = 0; i < count && basic == 1; i++)
            basic = convert_index_item(PyTuple_GET_ITEM(key, i), &items[i], &huge);
    } else {
        count = 1;
        basic = convert_index_item(key, &items[0], &huge);
    }
    if (basic < 0) {
        Py_XDECREF(huge);
        return NULL;
    }
    if (basic && st_select(self->tensor, items, (size_t)count, &selection, &err) != ST_OK) {
        if (huge != NULL)
            show_given_index(&err, items, (size_t)count, huge);
        Py_XDECREF(huge);
        return stpy_raise(state, &err, STPY_CTX_NONE, NULL);
    }
    Py_XDECREF(huge);
    if (self->verifier != NULL &&
        stpy_verify_once(state, self->file, self->tensor, self->verifier) < 0)
        return NULL;
    /* Advanced indexing: NumPy's semantics on every framework (for mmap over
     * a private mapping, so only the selected pages are read). */
    if (basic)
        result = stpy_tensor_select(state, self->framework, self->file, self->tensor, &selection);
    else
        result = stpy_tensor_select_advanced(state, self->framework, self->file, self->tensor, key);
    if (result != NULL && self->device != NULL)
        result = stpy_tensor_to_device(state, result, self->device);
    return result;
}

static PyMethodDef Slice_methods[] = {
    {"get_shape", (PyCFunction)Slice_get_shape, METH_NOARGS,
     "get_shape()\n"
     "--\n"
     "\n"
     "Returns:\n"
     "    list[int]: the tensor's shape, without reading any data.\n"
     "\n"
     "Example:\n"
     "    >>> f.get_slice(\"w\").get_shape()\n"
     "    [2, 5]"},
    {"get_dtype", (PyCFunction)Slice_get_dtype, METH_NOARGS,
     "get_dtype()\n"
     "--\n"
     "\n"
     "Returns:\n"
     "    str: the tensor's dtype as written in the header (\"F32\", \"BF16\", ...).\n"
     "\n"
     "Example:\n"
     "    >>> f.get_slice(\"w\").get_dtype()\n"
     "    'F32'"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Slice_slots[] = {
    {Py_tp_dealloc, Slice_dealloc},
    {Py_tp_traverse, Slice_traverse},
    {Py_tp_methods, Slice_methods},
    {Py_mp_subscript, Slice_getitem},
    {Py_tp_doc, "A tensor of an open file, read only where indexed (from safe_open.get_slice).\n"
                "\n"
                "slice[index] follows NumPy's indexing on every framework and backend: ints\n"
                "(negative from the end), slices with any step, ..., None, and index arrays,\n"
                "boolean masks, lists or integer tensors. The result is a fresh array of the\n"
                "handle's framework that shares memory with no other.\n"
                "\n"
                "Raises:\n"
                "    SafetensorError: an int out of range (\"Invalid index -6 for dimension 1 of\n"
                "        size 5\"; also an IndexError), too many indices.\n"
                "    IndexError: an index array out of range or a mask of the wrong shape.\n"
                "    ValueError: a zero step.\n"
                "\n"
                "Example:\n"
                "    >>> with safe_open(\"model.safetensors\", \"np\") as f:\n"
                "    ...     s = f.get_slice(\"w\")\n"
                "    ...     part = s[1:, ::-1]\n"
                "    ...     picked = s[np.array([0, 1])]"},
    {0, NULL},
};

PyType_Spec stpy_slice_spec = {
    .name = "safetensors._safetensors_c.PySafeSlice",
    .basicsize = sizeof(Slice),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Slice_slots,
};
