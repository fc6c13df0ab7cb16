/*
 * stream_writer.c - _safetensors_c.StreamWriter, the binding of the core's
 * streaming writer (st_stream_*, csrc/core/st_stream.c).
 *
 *   StreamWriter(filename, tensors, metadata=None)
 *       tensors: a sequence of (name, dtype, shape): dtype a header name
 *       ("F32", "BF16", ...), shape the logical shape. metadata: dict of str.
 *   .write(name, data)  data: any C-contiguous buffer of exactly the size
 *   .commit()           every tensor written -> the file appears at filename
 *   .abort()            the temporary file goes away, filename untouched
 *   .closed             True after commit or abort
 *
 * safetensors/stream.py wraps this for torch tensors and NumPy arrays.
 *
 * Writes run with the GIL released, so several Python threads write at
 * once. The core forbids commit/abort/free during a write; `busy` (changed
 * only under the object's lock) counts writes in flight, and commit/abort
 * refuse while it is not zero. An abort refused that way still closes the
 * writer: `discard` makes the last write in flight free the stream (its
 * temporary file goes) when it ends. A writer garbage-collected without
 * commit aborts: nothing appears at the destination.
 */
#include "module.h"

#include <string.h>

typedef struct {
    PyObject_HEAD st_stream *stream; /* owned; NULL once committed or aborted */
    PyObject *filename;              /* for messages */
    Py_ssize_t busy;                 /* writes in flight (GIL released) */
    int discard;                     /* aborted during writes: the last to end frees stream */
} StreamWriter;

/* Fills *decl from one (name, dtype, shape) item; shape goes to dims. */
static int parse_declaration(PyObject *item, st_write_tensor *decl, uint64_t *dims)
{
    PyObject *name, *dtype, *shape, *seq = NULL;
    Py_ssize_t len;
    int rc = -1;
    if (!PyTuple_Check(item) ||
        !PyArg_ParseTuple(item, "UUO;each tensor is (name, dtype, shape)", &name, &dtype, &shape)) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError, "each tensor is a tuple (name, dtype, shape), not %R",
                         item);
        return -1;
    }
    decl->name = PyUnicode_AsUTF8AndSize(name, &len);
    if (decl->name == NULL)
        return -1;
    decl->name_len = (size_t)len;
    const char *dtype_name = PyUnicode_AsUTF8AndSize(dtype, &len);
    if (dtype_name == NULL)
        return -1;
    if (!st_dtype_from_name(dtype_name, (size_t)len, &decl->dtype)) {
        PyErr_Format(PyExc_ValueError, "tensor %R: unknown dtype %R (a header name such as 'F32')",
                     name, dtype);
        return -1;
    }
    seq = PySequence_Fast(shape, "shape must be a sequence of ints");
    if (seq == NULL)
        return -1;
    if (PySequence_Fast_GET_SIZE(seq) > ST_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "tensor %R: more than %d dimensions", name, ST_MAX_DIMS);
        goto exit;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        dims[i] = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (dims[i] == (unsigned long long)-1 && PyErr_Occurred())
            goto exit;
    }
    decl->ndim = (size_t)PySequence_Fast_GET_SIZE(seq);
    decl->shape = dims;
    rc = 0;
exit:
    Py_XDECREF(seq);
    return rc;
}

static PyObject *StreamWriter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"filename", "tensors", "metadata", NULL};
    stpy_state *state = stpy_state_from_type(type);
    PyObject *filename, *tensors, *metadata = Py_None, *path = NULL, *items = NULL,
                                  *meta_items = NULL;
    st_write_tensor *decls = NULL;
    uint64_t *dims = NULL;
    st_metadata_item *meta = NULL;
    Py_ssize_t count, meta_count = 0;
    StreamWriter *self = NULL;
    st_stream *stream = NULL;
    st_error err;
    st_code code;

    if (state == NULL || !PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:StreamWriter", kwlist,
                                                      &filename, &tensors, &metadata))
        return NULL;
    if (!PyUnicode_FSConverter(filename, &path))
        return NULL;
    /* A tuple of our own: the names' UTF-8 stays alive while the GIL is released
     * even if the caller's list changes meanwhile. */
    items = PySequence_Tuple(tensors);
    if (items == NULL)
        goto exit;
    count = PyTuple_GET_SIZE(items);
    decls = PyMem_Calloc((size_t)count + 1, sizeof *decls);
    dims = PyMem_Calloc(((size_t)count + 1) * ST_MAX_DIMS, sizeof *dims);
    if (decls == NULL || dims == NULL) {
        PyErr_NoMemory();
        goto exit;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (parse_declaration(PyTuple_GET_ITEM(items, i), &decls[i],
                              dims + (size_t)i * ST_MAX_DIMS) < 0)
            goto exit;
    }
    if (metadata != Py_None) {
        if (!PyDict_Check(metadata)) {
            PyErr_Format(PyExc_TypeError,
                         "metadata must be a dict of str to str or None, not %.100s",
                         Py_TYPE(metadata)->tp_name);
            goto exit;
        }
        meta_items = PyDict_Items(metadata);
        if (meta_items == NULL)
            goto exit;
        meta_count = PyList_GET_SIZE(meta_items);
        meta = PyMem_Calloc((size_t)meta_count + 1, sizeof *meta);
        if (meta == NULL) {
            PyErr_NoMemory();
            goto exit;
        }
        for (Py_ssize_t i = 0; i < meta_count; i++) {
            PyObject *key = PyTuple_GET_ITEM(PyList_GET_ITEM(meta_items, i), 0);
            PyObject *value = PyTuple_GET_ITEM(PyList_GET_ITEM(meta_items, i), 1);
            Py_ssize_t key_len, value_len;
            if (!PyUnicode_Check(key) || !PyUnicode_Check(value)) {
                PyErr_Format(PyExc_TypeError, "metadata keys and values must be str, got %R: %R",
                             key, value);
                goto exit;
            }
            meta[i].key = PyUnicode_AsUTF8AndSize(key, &key_len);
            meta[i].value = meta[i].key ? PyUnicode_AsUTF8AndSize(value, &value_len) : NULL;
            if (meta[i].value == NULL)
                goto exit;
            meta[i].key_len = (size_t)key_len;
            meta[i].value_len = (size_t)value_len;
        }
    }
    Py_BEGIN_ALLOW_THREADS
        code = st_stream_open(PyBytes_AS_STRING(path), decls, (size_t)count, meta,
                              (size_t)meta_count, metadata != Py_None, &stream, &err);
    Py_END_ALLOW_THREADS
    if (code != ST_OK) {
        stpy_raise(state, &err, STPY_CTX_NONE, filename);
        goto exit;
    }
    self = (StreamWriter *)type->tp_alloc(type, 0);
    if (self == NULL) {
        st_stream_free(stream); /* removes the temporary file */
        goto exit;
    }
    self->stream = stream;
    self->filename = Py_NewRef(filename);
exit:
    Py_XDECREF(path);
    Py_XDECREF(items);
    Py_XDECREF(meta_items);
    PyMem_Free(decls);
    PyMem_Free(dims);
    PyMem_Free(meta);
    return (PyObject *)self;
}

static PyObject *closed_error(StreamWriter *self)
{
    stpy_state *state = stpy_state_from_type(Py_TYPE(self));
    if (state != NULL)
        PyErr_Format(state->SafetensorError, "the stream writer for %R is already closed",
                     self->filename);
    return NULL;
}

static PyObject *StreamWriter_write(StreamWriter *self, PyObject *args)
{
    stpy_state *state = stpy_state_from_type(Py_TYPE(self));
    PyObject *name, *data, *result = NULL;
    Py_buffer view = {0};
    Py_ssize_t name_len;
    size_t index;
    st_stream *stream = NULL, *aborted = NULL;
    st_error err;
    st_code code;

    if (state == NULL || !PyArg_ParseTuple(args, "UO:write", &name, &data))
        return NULL;
    const char *utf8 = PyUnicode_AsUTF8AndSize(name, &name_len);
    if (utf8 == NULL)
        return NULL;
    if (PyObject_GetBuffer(data, &view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    STPY_LOCK(self);
    if (self->stream != NULL && !self->discard) {
        stream = self->stream;
        self->busy++;
    }
    STPY_UNLOCK();
    if (stream == NULL) {
        closed_error(self);
        goto exit;
    }
    if (!st_stream_find(stream, utf8, (size_t)name_len, &index)) {
        PyErr_Format(state->SafetensorError,
                     "tensor %R was not declared when the writer was opened", name);
    } else {
        Py_BEGIN_ALLOW_THREADS
            code = st_stream_write(stream, index, view.buf, (uint64_t)view.len, &err);
        Py_END_ALLOW_THREADS
        if (code != ST_OK)
            stpy_raise(state, &err, STPY_CTX_NONE, NULL);
        else
            result = Py_NewRef(Py_None);
    }
    STPY_LOCK(self);
    if (--self->busy == 0 && self->discard) {
        aborted = self->stream;
        self->stream = NULL;
    }
    STPY_UNLOCK();
    st_stream_free(aborted); /* an abort() that came during the writes: the temporary file goes */
exit:
    PyBuffer_Release(&view);
    return result;
}

/* Takes the stream out of self (*out, NULL if already closed) unless writes
 * are in flight, which is an error; for an abort the writer is closed all the
 * same, and the last write to end discards the stream. */
static int take_stream(StreamWriter *self, st_stream **out, int aborting)
{
    Py_ssize_t busy = 0;
    *out = NULL;
    STPY_LOCK(self);
    if (!self->discard) {
        busy = self->busy;
        if (busy == 0) {
            *out = self->stream;
            self->stream = NULL;
        } else if (aborting) {
            self->discard = 1;
        }
    }
    STPY_UNLOCK();
    if (busy != 0) {
        stpy_state *state = stpy_state_from_type(Py_TYPE(self));
        if (state != NULL)
            PyErr_Format(state->SafetensorError,
                         "%zd write(s) still in progress on other threads: %s", busy,
                         aborting ? "the file is discarded when they end" : "wait for them first");
        return -1;
    }
    return 0;
}

static PyObject *StreamWriter_commit(StreamWriter *self, PyObject *unused)
{
    stpy_state *state = stpy_state_from_type(Py_TYPE(self));
    st_stream *stream;
    st_error err;
    st_code code;
    if (take_stream(self, &stream, 0) < 0)
        return NULL;
    if (stream == NULL)
        return closed_error(self);
    Py_BEGIN_ALLOW_THREADS
        code = st_stream_commit(stream, &err);
        st_stream_free(stream);
    Py_END_ALLOW_THREADS
    if (code != ST_OK)
        return stpy_raise(state, &err, STPY_CTX_NONE, NULL);
    Py_RETURN_NONE;
}

static PyObject *StreamWriter_abort(StreamWriter *self, PyObject *unused)
{
    st_stream *stream;
    if (take_stream(self, &stream, 1) < 0)
        return NULL;
    st_stream_free(stream); /* NULL (aborting twice, or after commit) is harmless */
    Py_RETURN_NONE;
}

static PyObject *StreamWriter_get_closed(StreamWriter *self, void *closure)
{
    return PyBool_FromLong(self->stream == NULL || self->discard);
}

static void StreamWriter_dealloc(StreamWriter *self)
{
    PyTypeObject *type = Py_TYPE(self);
    st_stream_free(self->stream); /* never committed: the temporary file goes */
    Py_XDECREF(self->filename);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef StreamWriter_methods[] = {
    {"write", (PyCFunction)StreamWriter_write, METH_VARARGS,
     "write(name, data)\n--\n\nWrites one declared tensor's bytes (a C-contiguous buffer of "
     "exactly its size). Any order, any thread; each tensor once."},
    {"commit", (PyCFunction)StreamWriter_commit, METH_NOARGS,
     "commit()\n--\n\nChecks every declared tensor was written and moves the file into place. "
     "On failure nothing is left at the destination."},
    {"abort", (PyCFunction)StreamWriter_abort, METH_NOARGS,
     "abort()\n--\n\nDiscards the temporary file; the destination is left as it was. With "
     "writes still running on other threads it raises SafetensorError, and the last of them "
     "discards the file when it ends."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef StreamWriter_getset[] = {
    {"closed", (getter)StreamWriter_get_closed, NULL, "True after commit() or abort().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot StreamWriter_slots[] = {
    {Py_tp_new, StreamWriter_new},
    {Py_tp_dealloc, StreamWriter_dealloc},
    {Py_tp_methods, StreamWriter_methods},
    {Py_tp_getset, StreamWriter_getset},
    {Py_tp_doc, "StreamWriter(filename, tensors, metadata=None)\n--\n\n"
                "A safetensors file written tensor by tensor (see safetensors.stream)."},
    {0, NULL},
};

PyType_Spec stpy_stream_writer_spec = {
    .name = "safetensors._safetensors_c.StreamWriter",
    .basicsize = sizeof(StreamWriter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = StreamWriter_slots,
};
