/*
 * module.h - what the binding's translation units share.
 *
 * The extension safetensors._safetensors_c is a thin layer over the C core
 * (csrc/core/st_core.h). The binding's shared names start with stpy_ /
 * STPY_; st_ / ST_ names are the core's. Each file's first comment says what
 * it holds; module.c has the module, its state and stpy_raise. tensors.h is
 * shared by the files that build arrays (NumPy C API); it says which of
 * them calls which (one way, no circle). Who owns the file's memory and
 * each array's: docs/design.md, "Ownership of file memory".
 */
#ifndef STPY_MODULE_H
#define STPY_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "st_core.h"

/* The package version, "0.8.0+c.N": defined by setup.py from pyproject.toml's
 * [project].version, its one source. */
#ifndef ST_VERSION
#error "ST_VERSION is defined by setup.py from pyproject.toml"
#endif

#if PY_VERSION_HEX >= 0x030D0000
#define STPY_LOCK(obj) Py_BEGIN_CRITICAL_SECTION(obj)
#define STPY_UNLOCK()  Py_END_CRITICAL_SECTION()
#else
#define STPY_LOCK(obj) {
#define STPY_UNLOCK()  }
#endif

typedef enum stpy_framework {
    FW_PYTORCH = 0,
    FW_NUMPY,
    FW_TENSORFLOW,
    FW_FLAX,
    FW_MLX,
    FW_PADDLE
} stpy_framework;

/* The OSError subclasses an open failure raises, by errno (module.c). */
typedef enum stpy_open_error {
    OPEN_ERROR_NOT_FOUND = 0,
    OPEN_ERROR_PERMISSION,
    OPEN_ERROR_IS_DIRECTORY,
    OPEN_ERROR_NOT_DIRECTORY,
    OPEN_ERROR_OTHER,
    OPEN_ERROR__COUNT
} stpy_open_error;

typedef struct stpy_state {
    PyObject *SafetensorError;
    PyObject *SafetensorIndexError;           /* subclass of SafetensorError and IndexError */
    PyObject *SafetensorIOError;              /* subclass of SafetensorError and OSError */
    PyObject *open_errors[OPEN_ERROR__COUNT]; /* FileNotFoundError, ... subclasses */
    PyTypeObject *SafeOpenType;
    PyTypeObject *SliceType;
    PyTypeObject *MappedBytesType;
    PyTypeObject *TensorSpecType;
    PyTypeObject *StreamWriterType;

    /* Resolved lazily on first use (frameworks.c), under the module's lock. */
    PyObject *torch;                         /* the torch module */
    PyObject *torch_dtypes[ST_DTYPE__COUNT]; /* NULL where torch lacks it */
    PyObject *torch_frombuffer, *torch_empty;
    PyObject *np_descrs[ST_DTYPE__COUNT]; /* PyArray_Descr*, NULL until needed */

    /* What the package registers (module.c): the callable opening a URL or
     * fsspec file object as a byte source (sources.c); the one importing
     * tensorflow/flax/mlx/paddle and safetensors.<fw> (frameworks.c); and
     * per framework, the NumPy array -> framework converter and the device
     * naming (paddle's "gpu:N"); safe_open of a checkpoint (a directory, an
     * index, a list of files) and prefetch's reader (safetensors.checkpoint,
     * safetensors.prefetch). NULL until registered. */
    PyObject *source_opener, *framework_importer, *checkpoint_opener, *prefetcher;
    /* Verifier(metadata, names, where) of safe_open(..., verify=True) (safetensors._verify). */
    PyObject *verifier_factory;
    PyObject *converters[FW_PADDLE + 1], *device_names[FW_PADDLE + 1];

    PyObject *str_dtype, *str_view, *str_to, *str_as_strided, *str_flip, *str_data_ptr;

    /* Every field above is an object reference (module.c traverses and
     * clears them as one array); none below is. */
    bool ready[FW_PADDLE + 1]; /* NumPy imported; a framework's importer done */
} stpy_state;

stpy_state *stpy_state_from_type(PyTypeObject *type);
stpy_state *stpy_state_from_module(PyObject *module);

/* What the binding was doing when a core error came: each names upstream's
 * prefix of the message (module.c's table). STPY_CTX_NONE adds none, and an
 * OS error with an errno then is an open failure (FileNotFoundError, ...). */
typedef enum stpy_context {
    STPY_CTX_NONE = 0,
    STPY_CTX_DESERIALIZE_HEADER, /* "Error while deserializing header: " */
    STPY_CTX_DESERIALIZE,        /* "Error while deserializing: " */
    STPY_CTX_SERIALIZE,          /* "Error while serializing: " */
    STPY_CTX_READ,               /* "Error while reading: " */
    STPY_CTX_READ_TENSOR         /* "Error while reading tensor: " */
} stpy_context;

/*
 * The one place core errors become Python exceptions, the message prefixed
 * as ctx says; `filename` is used for OS errors that concern the named file.
 * Returns NULL so callers can `return stpy_raise(...)`.
 */
PyObject *stpy_raise(stpy_state *state, const st_error *err, stpy_context ctx, PyObject *filename);

/* foreign_files.c: appends " (the file looks like a zip archive, ...)" to a
 * header error's message when the bytes (or the file's first bytes) are a
 * well-known format that is not safetensors. */
void stpy_note_foreign_format(st_error *err, const uint8_t *head, size_t len);
void stpy_note_foreign_file(st_error *err, const char *path);

/* 0 if obj is a type instance, else -1 and upstream's TypeError for the
 * argument ("argument 'name': 'int' object is not an instance of 'str'"). */
int stpy_check_arg(PyObject *obj, PyTypeObject *type, const char *argument);

/* A str quoted as Rust's Debug format does ("a\"b"), for upstream's messages. */
PyObject *stpy_debug_quote(PyObject *text);

/* A list of Python ints. */
PyObject *stpy_int_list(const uint64_t *values, size_t count);

/* t's name as str (the header parser checked it is UTF-8, no surrogates). */
static inline PyObject *stpy_tensor_name(const st_tensor *t)
{
    return PyUnicode_DecodeUTF8(t->name, (Py_ssize_t)t->name_len, "surrogatepass");
}

extern PyType_Spec stpy_safe_open_spec, stpy_slice_spec, stpy_mapped_bytes_spec,
    stpy_tensor_spec_spec, stpy_stream_writer_spec;

/* Module functions, in the files named in the module's method table. */
PyObject *stpy_serialize(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *stpy_serialize_file(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *stpy_deserialize(PyObject *module, PyObject *arg);
PyObject *stpy_deserialize_tensors(PyObject *module, PyObject *args);
PyObject *stpy_dtype_table(PyObject *module, PyObject *unused);
PyObject *stpy_write_layout_only(PyObject *module, PyObject *args);

/* ---- serialize.c: the writers' input ---- */

/* A metadata argument (dict[str, str] or None) as the core's items; `items`
 * (the dict's item list) keeps every string alive until the release. */
typedef struct {
    PyObject *items;
    st_metadata_item *entries;
    size_t count;
    bool present;
} stpy_metadata_list;

/* The tensors and metadata to write, as the core takes them; `items` keeps
 * every name, TensorSpec and string alive until the release, also while the
 * GIL is released. */
typedef struct {
    PyObject *items;
    st_write_tensor *tensors;
    uint64_t (*shapes)[ST_MAX_DIMS]; /* declarations' shapes (TensorSpecs hold their own) */
    size_t *order;                   /* st_write_layout's output */
    size_t count;
    stpy_metadata_list metadata;
} stpy_write_input;
/* A sequence of (name, header dtype, shape[, data length]) declarations and
 * a metadata argument; -1 with an exception set (release *in all the same). */
int stpy_collect_declarations(stpy_state *state, PyObject *declarations, bool with_len,
                              PyObject *metadata, stpy_write_input *in);
void stpy_write_input_release(stpy_write_input *in);
/* A metadata argument (None or a dict of str to str) into *out (released with its
 * stpy_write_input); -1 with an exception set. */
int stpy_collect_metadata(PyObject *metadata, stpy_metadata_list *out);

/* ---- sources.c ---- */

/* 1 for a URL with a scheme other than file:// or an fsspec file object; 0
 * for a path, *path then a new reference to it (file:// removed); -1 on error. */
int stpy_remote_target(PyObject *filename, PyObject **path);
/* Opens target through the registered byte source opener, called with
 * options (a dict of keyword arguments, or NULL). On success *file is the
 * core file over it and *source a new reference to the source object
 * (close() it to stop reads in flight); -1 with an exception set. */
int stpy_open_source(stpy_state *state, PyObject *target, PyObject *options, st_file **file,
                     PyObject **source);

/* ---- arguments.c ---- */

int stpy_parse_framework(stpy_state *state, PyObject *obj, stpy_framework *out);
/* A new reference to the normalised device (Py_None for cpu), NULL on error. */
PyObject *stpy_parse_device(stpy_state *state, PyObject *obj);
/* obj NULL or None: the default, ST_BACKEND_AUTO. */
int stpy_parse_backend(stpy_state *state, PyObject *obj, st_backend *out);
/* A writer's alignment: obj NULL or None gives 0 (upstream's layout); an int the core refuses
 * (st_check_alignment) is a ValueError with the core's message, anything else a TypeError. */
int stpy_parse_alignment(PyObject *obj, uint64_t *out);

/* ---- storage.c (module functions, private, for tests) ---- */

/* _storage_kind(path_or_fd), _fs_name(f_type), _prefers_pread(resident, nbytes[, memory]). */
PyObject *stpy_storage_kind(PyObject *module, PyObject *target);
PyObject *stpy_fs_name(PyObject *module, PyObject *f_type);
PyObject *stpy_prefers_pread(PyObject *module, PyObject *args);
/* This machine's physical memory in bytes (UINT64_MAX when unknown). */
uint64_t stpy_physical_memory(void);

/* ---- slice.c ---- */

/* A new slice object for tensor; takes over the caller's reference to file
 * (released on failure too). */
PyObject *stpy_slice_new(stpy_state *state, st_file *file, const st_tensor *tensor,
                         stpy_framework framework, PyObject *device, PyObject *verifier);

/* ---- verify.c ---- */

/* The handle's Verifier (safetensors._verify) of file, whose metadata (dict or None) must record
 * a digest for every tensor; where names the file. NULL with the error set. Functions that take
 * a verifier (NULL: none) check the bytes they hand out against it. */
PyObject *stpy_verifier_new(stpy_state *state, st_file *file, PyObject *metadata, PyObject *where);
/* The whole of t read (16 MiB at a time) and checked, once per verifier: a slice's check. */
int stpy_verify_once(stpy_state *state, st_file *file, const st_tensor *t, PyObject *verifier);

/* ---- frameworks.c ---- */

/* Ensures the framework's module (torch, numpy, ...) is imported, its dtype
 * tables are ready and (other frameworks) its converter is registered. */
int stpy_framework_prepare(stpy_state *state, stpy_framework fw);
/* A new reference to what safetensors.<fw> registered in slots (converters
 * or device_names), NULL if nothing: a registration may replace it. */
PyObject *stpy_framework_hook(stpy_state *state, PyObject **slots, stpy_framework fw);
/* The framework's name for messages ("pytorch", "numpy", ...). */
const char *stpy_framework_name(stpy_framework fw);

/* ---- tensors for safe_open, slices and deserializing (tensors.h's files) ---- */

/* The whole tensor in the framework and on device (NULL: cpu); CUDA copies
 * may still be in flight until stpy_cuda_synchronize (devices.c). */
PyObject *stpy_tensor_load(stpy_state *state, stpy_framework fw, st_file *file, const st_tensor *t,
                           PyObject *device, PyObject *verifier);
int stpy_cuda_synchronize(stpy_state *state, PyObject *device);
/* torch on "cuda:N" (ints name the current accelerator type: plain .to()). */
bool stpy_is_cuda(stpy_framework fw, PyObject *device);
/* Moves a tensor to a device object (str or int); steals `tensor`. */
PyObject *stpy_tensor_to_device(stpy_state *state, PyObject *tensor, PyObject *device);
/* get_tensors on the mmap backend for the CPU, torch or NumPy: the dict of
 * every tensor, each a view of one private mapping (tensor_views.c). */
PyObject *stpy_tensors_of_mapping(stpy_state *state, stpy_framework fw, st_file *file,
                                  PyObject *verifier);
/* pread_tensors.c: the tensors at header positions which[0..count) (ascending;
 * NULL: every tensor, count of them) read into memory of their own on the CPU,
 * new references in tensors[0..count), each as stpy_tensor_load gives it: all
 * destinations are allocated first, then read by one st_file_pread_many, so a
 * read error hands out nothing (-1 with an exception set). */
int stpy_read_tensors(stpy_state *state, stpy_framework fw, st_file *file, const size_t *which,
                      size_t count, PyObject **tensors, PyObject *verifier);
/* A new tensor of the framework holding a copy of t's bytes at src. */
PyObject *stpy_tensor_from_memory(stpy_state *state, stpy_framework fw, const st_tensor *t,
                                  const uint8_t *src);
/* selections.c: the selected part of a tensor (basic indexing, resolved by
 * st_select); for keys with index arrays, masks or lists, NumPy's semantics
 * on every framework. Both results are independent of every other array. */
PyObject *stpy_tensor_select(stpy_state *state, stpy_framework fw, st_file *file,
                             const st_tensor *t, const st_selection *sel);
PyObject *stpy_tensor_select_advanced(stpy_state *state, stpy_framework fw, st_file *file,
                                      const st_tensor *t, PyObject *key);

#endif /* STPY_MODULE_H */
