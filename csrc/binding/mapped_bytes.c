/*
 * mapped_bytes.c - MappedBytes: the buffer-protocol exporter that every
 * zero-copy array or tensor has as its base. It owns one reference to the
 * st_file (or to the pread block) so the memory outlives the handle.
 */
#include "tensors.h"

#include <string.h>

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

PyObject *st_mapped_bytes_new(st_state *state, st_file *file, PyObject *block, uint8_t *data,
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
