/*
 * stream_writer.c - _safetensors_c.StreamWriter(filename, tensors,
 * metadata=None, *, alignment=None), the binding of the core's streaming writer (st_stream_*):
 * tensors are (name, header dtype, logical shape); the methods' docstrings
 * say the rest. safetensors/stream.py wraps it for torch and NumPy.
 *
 * Writes run with the GIL released, so several Python threads write at
 * once. The core forbids commit/abort/free during a write; `busy` (changed
 * only under the object's lock) counts writes in flight, and commit/abort
 * refuse while it is not zero. An abort refused that way still closes the
 * writer: `discard` makes the last write in flight free the stream (its
 * temporary file goes) when it ends. A writer garbage-collected without
 * commit aborts: nothing appears at the destination. _layout, _readinto and
 * _rewrite_metadata (the digests of safetensors.stream) count as writes.
 */
#include "module.h"

#include <string.h>

typedef struct {
    PyObject_HEAD st_stream *stream; /* owned; NULL once committed or aborted */
    PyObject *filename;              /* for messages */
    Py_ssize_t busy;                 /* writes in flight (GIL released) */
    int discard;                     /* aborted during writes: the last to end frees stream */
    size_t count;                    /* tensors declared */
} StreamWriter;

static PyObject *StreamWriter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"filename", "tensors", "metadata", "alignment", NULL};
    stpy_state *state = stpy_state_from_type(type);
    PyObject *filename, *tensors, *metadata = NULL, *alignment_obj = NULL, *path = NULL;
    stpy_write_input in = {0};
    StreamWriter *self = NULL;
    st_stream *stream = NULL;
    uint64_t alignment;
    st_error err;
    st_code code;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O$O:StreamWriter", kwlist, &filename,
                                     &tensors, &metadata, &alignment_obj) ||
        stpy_parse_alignment(alignment_obj, &alignment) < 0)
        return NULL;
    if (!PyUnicode_FSConverter(filename, &path))
        return NULL;
    if (stpy_collect_declarations(state, tensors, false, metadata, &in) < 0)
        goto exit;
    Py_BEGIN_ALLOW_THREADS
        code = st_stream_open_aligned(PyBytes_AS_STRING(path), in.tensors, in.count,
                                      in.metadata.entries, in.metadata.count, in.metadata.present,
                                      alignment, &stream, &err);
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
    self->count = in.count;
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

/* The stream, counted as in use (a write in flight) until end_use; NULL and an
 * exception once the writer is closed. */
static st_stream *begin_use(StreamWriter *self)
{
    st_stream *stream = NULL;
    STPY_LOCK(self);
    if (self->stream != NULL && !self->discard) {
        stream = self->stream;
        self->busy++;
    }
    STPY_UNLOCK();
    if (stream == NULL)
        closed_error(self);
    return stream;
}

static void end_use(StreamWriter *self)
{
    st_stream *aborted = NULL;
    STPY_LOCK(self);
    if (--self->busy == 0 && self->discard) {
        aborted = self->stream;
        self->stream = NULL;
    }
    STPY_UNLOCK();
    st_stream_free(aborted); /* an abort() that came during the use: the temporary file goes */
}

static PyObject *StreamWriter_write(StreamWriter *self, PyObject *args)
{
    stpy_state *state = stpy_state_from_type(Py_TYPE(self));
    PyObject *name, *data, *result = NULL;
    Py_buffer view = {0};
    Py_ssize_t name_len;
    size_t index;
    st_stream *stream;
    st_error err;
    st_code code;

    if (!PyArg_ParseTuple(args, "UO:write", &name, &data))
        return NULL;
    const char *utf8 = PyUnicode_AsUTF8AndSize(name, &name_len);
    if (utf8 == NULL)
        return NULL;
    if (PyObject_GetBuffer(data, &view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if ((stream = begin_use(self)) == NULL)
        goto exit;
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
    end_use(self);
exit:
    PyBuffer_Release(&view);
    return result;
}

/* _layout() -> [(declaration index, absolute offset, size)] in file order. */
static PyObject *StreamWriter_layout(StreamWriter *self, PyObject *unused)
{
    PyObject *result;
    st_stream *stream = begin_use(self);
    if (stream == NULL)
        return NULL;
    result = PyList_New(0);
    for (size_t i = 0; result != NULL && i < self->count; i++) {
        size_t index;
        uint64_t offset, len;
        st_stream_tensor(stream, i, &index, &offset, &len);
        PyObject *item = Py_BuildValue("(nKK)", (Py_ssize_t)index, (unsigned long long)offset,
                                       (unsigned long long)len);
        if (item == NULL || PyList_Append(result, item) < 0)
            Py_CLEAR(result);
        Py_XDECREF(item);
    }
    end_use(self);
    return result;
}

/* _readinto(offset, buffer): fills the writable buffer with the file's bytes at offset. */
static PyObject *StreamWriter_readinto(StreamWriter *self, PyObject *args)
{
    stpy_state *state = stpy_state_from_type(Py_TYPE(self));
    unsigned long long offset;
    Py_buffer view = {0};
    PyObject *result = NULL;
    st_stream *stream;
    st_error err;
    st_code code;

    if (!PyArg_ParseTuple(args, "Kw*:_readinto", &offset, &view))
        return NULL;
    if ((stream = begin_use(self)) != NULL) {
        Py_BEGIN_ALLOW_THREADS
            code = st_stream_read(stream, offset, view.buf, (size_t)view.len, &err);
        Py_END_ALLOW_THREADS
        result = code == ST_OK ? Py_NewRef(Py_None)
                               : stpy_raise(state, &err, STPY_CTX_NONE, self->filename);
        end_use(self);
    }
    PyBuffer_Release(&view);
    return result;
}

/* _rewrite_metadata(metadata): the header again, in place, with this metadata. */
static PyObject *StreamWriter_rewrite_metadata(StreamWriter *self, PyObject *metadata)
{
    stpy_state *state = stpy_state_from_type(Py_TYPE(self));
    stpy_write_input in = {0};
    PyObject *result = NULL;
    st_stream *stream;
    st_error err;
    st_code code;

    if (stpy_collect_metadata(metadata, &in.metadata) < 0)
        goto exit;
    if ((stream = begin_use(self)) == NULL)
        goto exit;
    Py_BEGIN_ALLOW_THREADS
        code = st_stream_rewrite_metadata(stream, in.metadata.entries, in.metadata.count,
                                          in.metadata.present, &err);
    Py_END_ALLOW_THREADS
    result = code == ST_OK ? Py_NewRef(Py_None) : stpy_raise(state, &err, STPY_CTX_NONE, NULL);
    end_use(self);
exit:
    stpy_write_input_release(&in);
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
    {"_layout", (PyCFunction)StreamWriter_layout, METH_NOARGS,
     "_layout()\n--\n\n[(declaration index, absolute offset, size)] of every tensor, in file "
     "order."},
    {"_readinto", (PyCFunction)StreamWriter_readinto, METH_VARARGS,
     "_readinto(offset, buffer)\n--\n\nFills the writable buffer with the file's bytes at offset "
     "(tensors already written, read back to hash them)."},
    {"_rewrite_metadata", (PyCFunction)StreamWriter_rewrite_metadata, METH_O,
     "_rewrite_metadata(metadata)\n--\n\nWrites the header again in place with this metadata; "
     "the new header must have the same length (digests in place of placeholders)."},
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
    {Py_tp_doc, "StreamWriter(filename, tensors, metadata=None, *, alignment=None)\n--\n\n"
                "A safetensors file written tensor by tensor (see safetensors.stream)."},
    {0, NULL},
};

PyType_Spec stpy_stream_writer_spec = {
    .name = "safetensors._safetensors_c.StreamWriter",
    .basicsize = sizeof(StreamWriter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = StreamWriter_slots,
};
