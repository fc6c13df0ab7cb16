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

/* ---- mapped_bytes.c ---- */

/* A MappedBytes over data..data+len: inside file's mapping (block NULL; takes
 * a new file reference) or inside block (keeps a reference to block). */
PyObject *st_mapped_bytes_new(st_state *state, st_file *file, PyObject *block, uint8_t *data,
                              size_t len);

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
PyObject *st_numpy_view(st_state *state, st_file *file, PyObject *block, const st_tensor *t,
                        uint8_t *data, int ndim, npy_intp *dims, npy_intp *strides,
                        uint8_t *base_data, size_t base_len);
PyObject *st_torch_view(st_state *state, st_file *file, PyObject *block, const st_tensor *t,
                        uint8_t *data);

#endif /* ST_TENSORS_H */
