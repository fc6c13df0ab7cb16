/*
 * tensors.h - what the files that build arrays and tensors share
 * (mapped_bytes.c, frameworks.c, tensor_views.c, pread_tensors.c,
 * selections.c, devices.c). These are the only files that include the NumPy
 * C API; frameworks.c owns its function table (STPY_NUMPY_API_OWNER), the
 * others import it.
 *
 * Calls between them go one way: mapped_bytes.c and frameworks.c call none
 * of the others; tensor_views.c calls those two; devices.c and
 * pread_tensors.c call tensor_views.c (never the reverse); selections.c
 * calls devices.c and the ones below it.
 */
#ifndef STPY_TENSORS_H
#define STPY_TENSORS_H

#include "module.h"

#define PY_ARRAY_UNIQUE_SYMBOL stpy_numpy_api
#ifndef STPY_NUMPY_API_OWNER
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

/* Below this, a copy from the page cache is quicker than handing the GIL
 * to another thread and taking it back. */
#define STPY_GIL_RELEASE_MIN ((size_t)1 << 20)
/* Runs stmt, with the GIL released when it copies len bytes or more. */
#define STPY_COPY_RELEASING_GIL(len, stmt)                                                         \
    do {                                                                                           \
        PyThreadState *save_ = (len) < STPY_GIL_RELEASE_MIN ? NULL : PyEval_SaveThread();          \
        stmt;                                                                                      \
        if (save_ != NULL)                                                                         \
            PyEval_RestoreThread(save_);                                                           \
    } while (0)

/* Tensors of at least this many bytes get a private mapping of their own
 * (mmap backend); smaller ones are copied: below it, a copy costs less than
 * the mmap/munmap pair and the kernel's mapping bookkeeping. */
#define STPY_PRIVATE_MAP_MIN ((uint64_t)64 << 10)
/* At most this many private mappings alive per process (a quarter of
 * Linux's default vm.max_map_count); past it tensors are copied. */
#define STPY_PRIVATE_MAPS_MAX 16384L

/* ---- mapped_bytes.c ---- */

/* What keeps one view's memory alive: a block read from the file (a NumPy
 * array or torch tensor; owned reference) or a private mapping. A tensor
 * with a block that is a MappedBytes over a whole load's mapping also names
 * its own bytes there (discard): their pages are given back when it dies,
 * so its neighbours keep only what they use. */
typedef struct stpy_owner {
    PyObject *block;
    st_private_map map;
    uint8_t *discard;
    size_t discard_len;
} stpy_owner;

/* A private mapping of file bytes [offset, offset + len) into *owner;
 * -1 with an exception set. */
int stpy_owner_map(stpy_state *state, st_file *file, uint64_t offset, uint64_t len,
                   stpy_owner *owner);
void stpy_owner_release(stpy_owner *owner);
/* Whether another private mapping fits under STPY_PRIVATE_MAPS_MAX. */
bool stpy_private_map_allowed(void);
/* A MappedBytes over data..data+len, taking over *owner (released on
 * failure too; *owner is emptied either way). */
PyObject *stpy_mapped_bytes_new(stpy_state *state, stpy_owner *owner, uint8_t *data, size_t len);

/* ---- frameworks.c ---- */

/* Borrowed torch dtype, or NULL with an exception set. */
PyObject *stpy_torch_dtype(stpy_state *state, st_dtype dtype);
/* New reference to the NumPy descr, or NULL with an exception set. */
PyArray_Descr *stpy_numpy_descr(stpy_state *state, st_dtype dtype);

/* ---- tensor_views.c ---- */

size_t stpy_itemsize_of(st_dtype dtype);
uint64_t stpy_tensor_data_len(const st_tensor *t);
/* The shape torch stores: its F4 type holds pairs of values, so the last
 * dim is halved (docs/format.md §3.2); an odd one has no torch shape. */
PyObject *stpy_torch_shape(stpy_state *state, const st_tensor *t);
int stpy_torch_data_ptr(stpy_state *state, PyObject *tensor, uint8_t **out);
/* Reads len bytes at absolute offset into dst, GIL released for large reads; with a verifier
 * (NULL: none), they are t's bytes, hashed as they are read and checked (verify.c). */
int stpy_read_into(stpy_state *state, st_file *file, uint64_t offset, uint8_t *dst, size_t len,
                   const st_tensor *t, PyObject *verifier);
/* A fresh, C-contiguous array with t's logical shape and dtype; *data: its memory. */
PyObject *stpy_new_array(stpy_state *state, stpy_framework fw, const st_tensor *t, uint8_t **data);
/* Hands a NumPy array to tensorflow/jax/mlx/paddle (they copy); steals array. */
PyObject *stpy_convert_from_numpy(stpy_state *state, stpy_framework fw, PyObject *array);
/* Views over memory kept alive by *owner, which they take over (released
 * on failure too). numpy: data/ndim/dims/strides describe the array,
 * base_data/base_len the owner's exported bytes. torch: t's bytes at data. */
PyObject *stpy_numpy_view(stpy_state *state, stpy_owner *owner, const st_tensor *t, uint8_t *data,
                          int ndim, npy_intp *dims, npy_intp *strides, uint8_t *base_data,
                          size_t base_len);
PyObject *stpy_torch_view(stpy_state *state, stpy_owner *owner, const st_tensor *t, uint8_t *data);
/* Whether a tensor (or selection) of nbytes gets a private mapping (mmap). */
bool stpy_use_private_map(const st_file *file, uint64_t nbytes);
/* A new tensor holding a copy of the tensor read from the file (checked by verifier unless
 * NULL, as every function taking one). */
PyObject *stpy_tensor_read(stpy_state *state, stpy_framework fw, st_file *file, const st_tensor *t,
                           PyObject *verifier);
/* t from the mmap backend, owning its memory alone: a large tensor is a view
 * of a private mapping of its own (zero copy; verified by hashing the mapping), a small one a
 * copy. */
PyObject *stpy_tensor_view(stpy_state *state, stpy_framework fw, st_file *file, const st_tensor *t,
                           PyObject *verifier);
/* pread blocks (pread_tensors.c), at most STPY_BLOCK_MAX long so that a kept
 * tensor pins little besides itself: an empty uint8 array (torch tensor for
 * torch) of len bytes, its memory at *data, filled by the caller; tensors in
 * it are views of it. */
#define STPY_BLOCK_MAX ((uint64_t)1 << 20)
PyObject *stpy_new_block(stpy_state *state, stpy_framework fw, uint64_t len, uint8_t **data);
PyObject *stpy_tensor_in_block(stpy_state *state, stpy_framework fw, st_file *file, PyObject *block,
                               uint8_t *block_data, uint64_t block_begin, const st_tensor *t,
                               PyObject *verifier);

/* ---- verify.c (safe_open(..., verify=True); module.h has stpy_verifier_new) ---- */

/* A tensor's bytes inside a read: requests[request] from its byte `at`; request SIZE_MAX for
 * an empty tensor read by none. */
typedef struct {
    const st_tensor *tensor;
    size_t request;
    size_t at;
} stpy_span;
/* Reads the requests (st_file_pread_many when pread, else st_file_read_many), each span's bytes
 * hashed chunk by chunk as they are read, then checks every span: -1 with an exception set (a
 * read error, the hasher's own, or the mismatch naming the tensors that fail), and then the
 * destinations hold what was read. */
int stpy_read_verified(stpy_state *state, st_file *file, bool pread,
                       const st_read_request *requests, size_t nrequests, PyObject *verifier,
                       const stpy_span *spans, size_t nspans);
/* t's bytes in memory at data (a mapping: hashing reads them), checked; n of them hashed in
 * parallel threads. */
int stpy_verify_memory(PyObject *verifier, const st_tensor *t, const uint8_t *data);
int stpy_verify_memory_many(PyObject *verifier, const st_tensor *const *tensors,
                            uint8_t *const *data, size_t n);

#endif /* STPY_TENSORS_H */
