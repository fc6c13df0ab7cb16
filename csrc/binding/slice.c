/*
 * slice.c - the lazy slice object returned by safe_open.get_slice: its shape
 * and dtype, and __getitem__ (Python index items converted for the core's
 * st_select; anything else goes to the framework's own indexing).
 */
#include "module.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    st_file *file;          /* owned reference */
    const st_tensor *tensor;/* inside file's header */
    st_framework framework;
    PyObject *device;
} Slice;

PyObject *st_slice_new(st_state *state, st_file *file, const st_tensor *tensor,
                       st_framework framework, PyObject *device)
{
    Slice *slice = (Slice *)state->SliceType->tp_alloc(state->SliceType, 0);
    if (slice == NULL) {
        st_file_release(file);
        return NULL;
    }
    slice->file = file;   /* the slice takes over the caller's reference */
    slice->tensor = tensor;
    slice->framework = framework;
    slice->device = Py_XNewRef(device);
    return (PyObject *)slice;
}

static int Slice_traverse(Slice *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->device);
    return 0;
}

static void Slice_dealloc(Slice *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->file != NULL)
        st_file_release(self->file);
    Py_CLEAR(self->device);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *Slice_get_shape(Slice *self, PyObject *unused)
{
    PyObject *shape = PyList_New((Py_ssize_t)self->tensor->ndim);
    if (shape == NULL)
        return NULL;
    for (size_t i = 0; i < self->tensor->ndim; i++) {
        PyObject *dim = PyLong_FromUnsignedLongLong(self->tensor->shape[i]);
        if (dim == NULL) {
            Py_DECREF(shape);
            return NULL;
        }
        PyList_SET_ITEM(shape, (Py_ssize_t)i, dim);
    }
    return shape;
}

static PyObject *Slice_get_dtype(Slice *self, PyObject *unused)
{
    return PyUnicode_FromString(st_dtype_name(self->tensor->dtype));
}

/*
 * Converts one Python index item. Returns 1 if it is a basic item, 0 if it
 * is something only the framework's own indexing understands (lists,
 * arrays, booleans, tensors), -1 on error.
 */
static int convert_index_item(PyObject *item, st_index *out)
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
    if (!PyBool_Check(item) && PyIndex_Check(item)) {
        PyObject *index = PyNumber_Index(item);
        long long value;
        if (index == NULL)
            return -1;
        value = PyLong_AsLongLong(index);
        Py_DECREF(index);
        if (value == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                return -1;
            PyErr_Clear();
            value = INT64_MAX;   /* out of range for any dimension */
        }
        out->kind = ST_INDEX_INT;
        out->value = value;
        return 1;
    }
    return 0;
}

static PyObject *Slice_getitem(Slice *self, PyObject *key)
{
    st_state *state = st_state_from_type(Py_TYPE(self));
    st_index items[ST_MAX_DIMS * 2];
    PyObject *result = NULL, *full;
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
            basic = convert_index_item(PyTuple_GET_ITEM(key, i), &items[i]);
    } else {
        count = 1;
        basic = convert_index_item(key, &items[0]);
    }
    if (basic < 0)
        return NULL;
    if (basic) {
        if (st_select(self->tensor, items, (size_t)count, &selection, &err) != ST_OK)
            return st_raise(state, &err, NULL, NULL);
        result = st_tensor_select(state, self->framework, self->file, self->tensor, &selection);
        if (result != NULL && self->device != NULL)
            result = st_tensor_to_device(state, result, self->device);
        return result;
    }
    /* Advanced indexing: the framework's own semantics over the whole tensor
     * (a view for mmap, so only the selected pages are touched). */
    full = st_tensor_load(state, self->framework, self->file, self->tensor, NULL);
    if (full == NULL)
        return NULL;
    result = PyObject_GetItem(full, key);
    Py_DECREF(full);
    if (result != NULL && self->device != NULL)
        result = st_tensor_to_device(state, result, self->device);
    return result;
}

static PyMethodDef Slice_methods[] = {
    {"get_shape", (PyCFunction)Slice_get_shape, METH_NOARGS,
     "get_shape()\n--\n\nThe tensor's shape, as a list."},
    {"get_dtype", (PyCFunction)Slice_get_dtype, METH_NOARGS,
     "get_dtype()\n--\n\nThe tensor's dtype as written in the header (\"F32\", ...)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Slice_slots[] = {
    {Py_tp_dealloc, Slice_dealloc},
    {Py_tp_traverse, Slice_traverse},
    {Py_tp_methods, Slice_methods},
    {Py_mp_subscript, Slice_getitem},
    {0, NULL},
};

PyType_Spec st_slice_spec = {
    .name = "safetensors._safetensors_c.PySafeSlice",
    .basicsize = sizeof(Slice),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Slice_slots,
};
