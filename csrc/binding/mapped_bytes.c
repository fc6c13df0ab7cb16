/*
 * mapped_bytes.c - MappedBytes: the buffer-protocol exporter that every
 * zero-copy array or tensor has as its base, and the private mappings it
 * owns; what each holds, and why arrays stay independent: docs/design.md,
 * "Ownership of file memory".
 */
#include "tensors.h"

#include <stdatomic.h>
#include <string.h>

/*
 * Private mappings alive in this process. The kernel limits mappings per
 * process (vm.max_map_count, 65530 by default), not per interpreter, so this
 * counter is process-wide on purpose. Past STPY_PRIVATE_MAPS_MAX further
 * tensors are copied instead of mapped.
 */
static atomic_long live_private_maps;

bool stpy_private_map_allowed(void)
{
    return atomic_load_explicit(&live_private_maps, memory_order_relaxed) < STPY_PRIVATE_MAPS_MAX;
}

int stpy_owner_map(stpy_state *state, st_file *file, uint64_t offset, uint64_t len,
                   stpy_owner *owner)
{
    st_error err;
    st_code code;
    memset(owner, 0, sizeof(*owner));
    code = st_file_map_private(file, offset, len, &owner->map, &err);
    if (code != ST_OK) {
        stpy_raise(state, &err, STPY_CTX_READ_TENSOR, NULL);
        return -1;
    }
    atomic_fetch_add_explicit(&live_private_maps, 1, memory_order_relaxed);
    return 0;
}

void stpy_owner_release(stpy_owner *owner)
{
    if (owner->map.base != NULL) {
        st_private_map_release(&owner->map);
        atomic_fetch_sub_explicit(&live_private_maps, 1, memory_order_relaxed);
    }
    if (owner->discard_len > 0) /* before the block, which keeps the mapping */
        st_private_map_discard(owner->discard, owner->discard_len);
    Py_CLEAR(owner->block);
}

/* Exactly one of block and map is set (see stpy_owner). */
typedef struct {
    PyObject_HEAD stpy_owner owner;
    uint8_t *data; /* inside the block or the mapping */
    Py_ssize_t len;
} MappedBytes;

PyObject *stpy_mapped_bytes_new(stpy_state *state, stpy_owner *owner, uint8_t *data, size_t len)
{
    MappedBytes *self = PyObject_GC_New(MappedBytes, state->MappedBytesType);
    if (self == NULL) {
        stpy_owner_release(owner);
        return NULL;
    }
    self->owner = *owner;
    memset(owner, 0, sizeof(*owner));
    self->data = data;
    self->len = (Py_ssize_t)len;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* The block it holds is visible to gc.get_referents (tests check what a
 * kept tensor pins); a block never refers back, so there are no cycles. */
static int MappedBytes_traverse(MappedBytes *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->owner.block);
    return 0;
}

static void MappedBytes_dealloc(MappedBytes *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    stpy_owner_release(&self->owner);
    PyObject_GC_Del(self);
    Py_DECREF(type);
}

static int MappedBytes_getbuffer(MappedBytes *self, Py_buffer *view, int flags)
{
    /* The memory cannot go away while self exists, so no export count is needed. */
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->len, 0, flags);
}

static PyType_Slot MappedBytes_slots[] = {
    {Py_tp_dealloc, MappedBytes_dealloc},
    {Py_tp_traverse, MappedBytes_traverse},
    {Py_bf_getbuffer, MappedBytes_getbuffer},
    {Py_tp_doc, "Bytes of one tensor: a private mapping or a block read from the file."},
    {0, NULL},
};

PyType_Spec stpy_mapped_bytes_spec = {
    .name = "safetensors._safetensors_c.MappedBytes",
    .basicsize = sizeof(MappedBytes),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = MappedBytes_slots,
};
