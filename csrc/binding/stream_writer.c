/*
 * stream_writer.c - _safetensors_c.StreamWriter(filename, tensors,
 * metadata=None), the binding of the core's streaming writer (st_stream_*):
 * tensors are (name, header dtype, logical shape); the methods' docstrings
 * say the rest. safetensors/stream.py wraps it for torch and NumPy.
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

static PyObject *StreamWriter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"filename", "tensors", "metadata", NULL};
    stpy_state *state = stpy_state_from_type(type);
    PyObject *filename, *tensors, *metadata = NULL, *path = NULL;
    stpy_write_input in = {0};
    StreamWriter *self = NULL;
    st_stream *stream = NULL;
    st_error err;
    st_code code;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:StreamWriter", kwlist, &filename, &tensors,
                                     &metadata))
        return NULL;
    if (!PyUnicode_FSConverter(filename, &path))
        return NULL;
    if (stpy_collect_declarations(state, tensors, false, metadata, &in) < 0)
        goto exit;
    Py_BEGIN_ALLOW_THREADS
        code = st_stream_open(PyBytes_AS_STRING(path), in.tensors, in.count, in.metadata.entries,
                              in.metadata.count, in.metadata.present, &stream, &err);
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
    stpy_write_input_release(&in);
    return (PyObject *)self;
}

static PyObject *closed_error(StreamWriter *self)
{
    return PyErr_Format(stpy_state_from_type(Py_TYPE(self))->SafetensorError,
                        "the stream writer for %R is already closed", self->filename);
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

    if (!PyArg_ParseTuple(args, "UO:write", &name, &data))
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
        PyErr_Format(stpy_state_from_type(Py_TYPE(self))->SafetensorError,
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
