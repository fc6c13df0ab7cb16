/*
 * tensors.h - what the files that build arrays and tensors share
 * (mapped_bytes.c, frameworks.c, tensor_views.c, selections.c, devices.c).
 * These are the only files that include the NumPy C API; frameworks.c owns
 * its function table (ST_NUMPY_API_OWNER), the others import it.
 */
#ifndef ST_TENSORS_H
#define ST_TENSORS_H

#include "module.h"

#define PY_ARRAY_UNIQUE_SYMBOL st_numpy_api
#ifndef ST_NUMPY_API_OWNER
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

/* Below this, a copy from the page cache is quicker than handing the GIL
 * to another thread and taking it back. */
#define ST_GIL_RELEASE_MIN ((size_t)1 << 20)

/* Tensors of at least this many bytes get a private mapping of their own
 * (mmap backend); smaller ones are copied: below it, a copy costs less than
 * the mmap/munmap pair and the kernel's mapping bookkeeping. */
#define ST_PRIVATE_MAP_MIN ((uint64_t)64 << 10)
/* At most this many private mappings alive per process (a quarter of
 * Linux's default vm.max_map_count); past it tensors are copied. */
#define ST_PRIVATE_MAPS_MAX 16384L

/* ---- mapped_bytes.c ---- */

/* What keeps one view's memory alive: a block read from the file (a NumPy
 * array or torch tensor; owned reference) or a private mapping. A tensor
 * with a block that is a MappedBytes over a whole load's mapping also names
 * its own bytes there (discard): their pages are given back when it dies,
 * so its neighbours keep only what they use. */
typedef struct st_owner {
    PyObject *block;
    st_private_map map;
    uint8_t *discard;
    size_t discard_len;
} st_owner;

/* A private mapping of file bytes [offset, offset + len) into *owner;
 * -1 with an exception set. */
int st_owner_map(st_state *state, st_file *file, uint64_t offset, uint64_t len, st_owner *owner);
void st_owner_release(st_owner *owner);
/* Whether another private mapping fits under ST_PRIVATE_MAPS_MAX. */
bool st_private_map_allowed(void);
long st_private_maps_alive(void);
/* A MappedBytes over data..data+len, taking over *owner (released on
 * failure too; *owner is emptied either way). */
PyObject *st_mapped_bytes_new(st_state *state, st_owner *owner, uint8_t *data, size_t len);

/* ---- frameworks.c ---- */

/* Borrowed torch dtype, or NULL with an exception set. */
PyObject *st_torch_dtype(st_state *state, st_dtype dtype);
/* New reference to the NumPy descr, or NULL with an exception set. */
PyArray_Descr *st_numpy_descr(st_state *state, st_dtype dtype);

/* ---- tensor_views.c ---- */

size_t st_itemsize_of(st_dtype dtype);
uint64_t st_tensor_data_len(const st_tensor *t);
/* The shape torch stores: F4 packs two values per byte in the last dim. */
PyObject *st_torch_shape(st_state *state, const st_tensor *t);
int st_numpy_dims(const st_tensor *t, npy_intp *dims);
PyObject *st_call_kw_dtype(PyObject *fn, PyObject *arg, st_state *state, PyObject *dtype);
PyObject *st_torch_new_empty(st_state *state, PyObject *shape, st_dtype dtype);
int st_torch_data_ptr(st_state *state, PyObject *tensor, uint8_t **out);
/* Reads len bytes at absolute offset into dst, GIL released for large reads. */
int st_read_into(st_state *state, st_file *file, uint64_t offset, uint8_t *dst, size_t len);
/* A fresh, C-contiguous array with t's logical shape and dtype; *data: its memory. */
PyObject *st_new_array(st_state *state, st_framework fw, const st_tensor *t, uint8_t **data);
/* Hands a NumPy array to tensorflow/jax/mlx/paddle; steals array. */
PyObject *st_convert_from_numpy(st_state *state, st_framework fw, PyObject *array);
/* Views over memory kept alive by *owner, which they take over (released
 * on failure too). numpy: data/ndim/dims/strides describe the array,
 * base_data/base_len the owner's exported bytes. torch: t's bytes at data. */
PyObject *st_numpy_view(st_state *state, st_owner *owner, const st_tensor *t, uint8_t *data,
                        int ndim, npy_intp *dims, npy_intp *strides, uint8_t *base_data,
                        size_t base_len);
PyObject *st_torch_view(st_state *state, st_owner *owner, const st_tensor *t, uint8_t *data);
/* Whether a tensor (or selection) of nbytes gets a private mapping (mmap). */
bool st_use_private_map(const st_file *file, uint64_t nbytes);

#endif /* ST_TENSORS_H */
