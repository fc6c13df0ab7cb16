/*
 * safe_open.c - safe_open(filename, framework, device="cpu", *, backend=None, <remote
 *               arguments>): a path, or a URL read through a byte source (sources.c)
 *
 * States: OPEN (file != NULL) and CLOSED (file == NULL, after __exit__).
 * The handle owns one reference to the core st_file. Every method takes its
 * own reference under the handle's lock before it works (acquire_file), so
 * a thread closing the handle while another reads only drops the handle's
 * reference: the reader finishes on its own, later calls raise
 * SafetensorError("File is closed"). Tensors handed out keep the file alive
 * through their own references and stay valid after close. With verify=True the
 * handle holds a Verifier (verify.c), made at open and never changed: every tensor
 * it hands out has matched its recorded digest.
 */
#include "module.h"

#include <errno.h>
#include <string.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD st_file *file; /* owned reference; NULL once closed */
    stpy_framework framework;
    PyObject *device;   /* NULL for cpu, else "cuda:0"-style str or int */
    PyObject *filename; /* str, as given (for messages) */
    PyObject *names;    /* list of names in name order, built on first keys() */
    PyObject *source;   /* a URL's byte source (sources.c), closed with the handle; else NULL */
    PyObject
        *prefetch; /* prefetch(plan)'s reader (safetensors/prefetch.py), closed with the handle */
    PyObject *weakreflist;    /* the prefetch reader refers to the handle weakly */
    bool auto_backend;        /* backend=None on a path: a whole-file load may read with pread */
    st_backend backend;       /* what `backend` shows: the file's, or the last whole-file load's */
    PyObject *backend_reason; /* str: why (`backend_reason`) */
    PyObject *verifier;       /* verify=True: safetensors._verify.Verifier; else NULL */
} SafeOpen;

/* ---- MARK: construction ---- */

/* safe_open's arguments; the REMOTE_ARGS after backend are for URLs (docs/remote.md). */
#define REMOTE_ARGS 9
static char *open_kwlist[] = {"filename",        "framework",  "device",      "backend",
                              "storage_options", "chunk_size", "concurrency", "head_bytes",
                              "retries",         "timeout",    "backoff",     "direct",
                              "deadline",        "verify",     NULL};
static char *const *const remote_args = open_kwlist + 4;

/* The remote arguments given (not None) as a new dict; for a path, a
 * ValueError if there is any. */
static PyObject *remote_options(PyObject *const *given, bool remote)
{
    PyObject *options = PyDict_New();
    for (int i = 0; options != NULL && i < REMOTE_ARGS; i++) {
        if (given[i] == NULL || given[i] == Py_None)
            continue;
        if (!remote) {
            PyErr_Format(PyExc_ValueError,
                         "%s is for URLs and fsspec file objects (docs/remote.md), not a local "
                         "path",
                         remote_args[i]);
            Py_CLEAR(options);
        } else if (PyDict_SetItemString(options, remote_args[i], given[i]) < 0) {
            Py_CLEAR(options);
        }
    }
    return options;
}

/* Whether safe_open's filename names a checkpoint by itself: a list or tuple
 * of files, or an index (a path, or a URL before its query, ending in
 * ".json"). A local directory is one too, found when opening it fails. */
static int names_checkpoint(PyObject *filename, PyObject *path_str, bool remote)
{
    PyObject *name = remote ? filename : path_str;
    Py_ssize_t end;
    if (PyList_Check(filename) || PyTuple_Check(filename))
        return 1;
    if (name == NULL || !PyUnicode_Check(name))
        return 0;
    end = PyUnicode_GET_LENGTH(name);
    if (remote && (end = PyUnicode_FindChar(name, '?', 0, end, 1)) < 0)
        end = PyUnicode_GET_LENGTH(name);
    PyObject *suffix = PyUnicode_FromString(".json");
    Py_ssize_t match = suffix != NULL ? PyUnicode_Tailmatch(name, suffix, 0, end, 1) : -1;
    Py_XDECREF(suffix);
    return (int)match;
}

/* safe_open of a checkpoint: the registered opener (safetensors.checkpoint)
 * with the arguments as given; NotImplemented for a folder that holds none. */
static PyObject *open_checkpoint(stpy_state *state, PyObject *filename, PyObject *framework,
                                 PyObject *device, PyObject *backend, PyObject *verify,
                                 PyObject *options)
{
    PyObject *args = NULL, *result = NULL;
    if (state->checkpoint_opener == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "safe_open: safetensors' checkpoint opener is not registered");
        return NULL;
    }
    if ((device != NULL && PyDict_SetItemString(options, "device", device) < 0) ||
        (backend != NULL && PyDict_SetItemString(options, "backend", backend) < 0) ||
        (verify != NULL && PyDict_SetItemString(options, "verify", verify) < 0) ||
        (args = PyTuple_Pack(2, filename, framework)) == NULL)
        goto exit;
    result = PyObject_Call(state->checkpoint_opener, args, options);
exit:
    Py_XDECREF(args);
    return result;
}

static PyObject *metadata_dict(const st_header *header);

static PyObject *open_handle(PyTypeObject *type, stpy_state *state, PyObject *filename,
                             PyObject *framework_obj, PyObject *device_obj, PyObject *backend_obj,
                             PyObject *const *remote_given, PyObject *verify_obj)
{
    SafeOpen *self = NULL;
    PyObject *target = NULL, *path_str = NULL, *path_bytes = NULL, *device = NULL;
    PyObject *options = NULL, *source = NULL, *naming, *reason = NULL, *verifier = NULL;
    int verify = verify_obj != NULL ? PyObject_IsTrue(verify_obj) : 0;
    stpy_framework framework;
    st_backend backend;
    st_file *file = NULL;
    st_error err;
    st_code code;
    int remote = PyList_Check(filename) || PyTuple_Check(filename)
                     ? 1 /* a checkpoint's files may be URLs: remote options allowed */
                     : stpy_remote_target(filename, &target);
    int checkpoint;

    if (remote < 0 || verify < 0)
        goto fail;
    if (!remote && (path_str = PyOS_FSPath(target)) == NULL)
        goto fail;
    if ((options = remote_options(remote_given, remote)) == NULL ||
        (checkpoint = names_checkpoint(filename, path_str, remote)) < 0)
        goto fail;
    if (checkpoint) {
        self = (SafeOpen *)open_checkpoint(state, filename, framework_obj, device_obj, backend_obj,
                                           verify_obj, options);
        goto fail;
    }
    if (!remote && !PyUnicode_FSConverter(path_str, &path_bytes))
        goto fail;
    if (stpy_parse_framework(state, framework_obj, &framework) < 0)
        goto fail;
    device = stpy_parse_device(state, device_obj);
    if (device == NULL)
        goto fail;
    if (device != Py_None && framework != FW_PYTORCH && framework != FW_PADDLE) {
        PyErr_Format(state->SafetensorError, "Device %S is not supported for framework %s", device,
                     stpy_framework_name(framework));
        goto fail;
    }
    if (stpy_parse_backend(state, backend_obj, &backend) < 0)
        goto fail;
    if (PySys_Audit("safetensors.safe_open", "Os", remote ? filename : path_str,
                    stpy_framework_name(framework)) < 0)
        goto fail;

    if (remote) {
        /* Read through a byte source: the pread paths (no mapping). */
        if (stpy_open_source(state, filename, options, &file, &source) < 0)
            goto fail;
    } else {
        Py_BEGIN_ALLOW_THREADS
            code = st_file_open(PyBytes_AS_STRING(path_bytes), backend, &file, &err);
        Py_END_ALLOW_THREADS
        if (code != ST_OK && code != ST_ERR_IO)
            stpy_note_foreign_file(&err, PyBytes_AS_STRING(path_bytes));
        if (code == ST_ERR_IO && err.sys_errno == EISDIR) { /* a checkpoint's folder? */
            self = (SafeOpen *)open_checkpoint(state, filename, framework_obj, device_obj,
                                               backend_obj, verify_obj, options);
            if ((PyObject *)self != Py_NotImplemented) /* else: upstream's IsADirectoryError */
                goto fail;
            Py_CLEAR(self);
        }
        if (code != ST_OK) {
            stpy_raise(state, &err, code == ST_ERR_IO ? STPY_CTX_NONE : STPY_CTX_DESERIALIZE_HEADER,
                       path_str);
            goto fail;
        }
    }
    if (stpy_framework_prepare(state, framework) < 0 ||
        (reason = PyUnicode_FromString(st_file_backend_reason(file))) == NULL)
        goto fail;
    if (verify) { /* the digests are read and checked for form here: errors at open */
        PyObject *metadata = metadata_dict(st_file_header(file));
        verifier = metadata != NULL
                       ? stpy_verifier_new(state, file, metadata, remote ? filename : path_str)
                       : NULL;
        Py_XDECREF(metadata);
        if (verifier == NULL)
            goto fail;
    }
    /* paddle names CUDA devices "gpu:N": the mapping safetensors.paddle registered. */
    if (device != Py_None &&
        (naming = stpy_framework_hook(state, state->device_names, framework))) {
        Py_SETREF(device, PyObject_CallOneArg(naming, device));
        Py_DECREF(naming);
        if (device == NULL)
            goto fail;
    }

    self = (SafeOpen *)type->tp_alloc(type, 0);
    if (self == NULL)
        goto fail;
    self->file = file;
    file = NULL;
    self->framework = framework;
    self->device = device == Py_None ? NULL : Py_NewRef(device);
    self->filename = Py_NewRef(remote ? filename : path_str);
    self->source = Py_XNewRef(source);
    self->auto_backend = backend == ST_BACKEND_AUTO && !remote;
    self->backend = st_file_backend(self->file);
    self->backend_reason = Py_NewRef(reason);
    self->verifier = Py_XNewRef(verifier);
fail:
    if (file != NULL)
        st_file_release(file);
    Py_XDECREF(device);
    Py_XDECREF(target);
    Py_XDECREF(path_str);
    Py_XDECREF(path_bytes);
    Py_XDECREF(options);
    Py_XDECREF(source);
    Py_XDECREF(reason);
    Py_XDECREF(verifier);
    return (PyObject *)self;
}

static PyObject *SafeOpen_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *filename, *framework, *device = NULL, *backend = NULL, *verify = NULL;
    PyObject *remote[REMOTE_ARGS] = {NULL};
    stpy_state *state = stpy_state_from_type(type);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O$OOOOOOOOOOO:safe_open", open_kwlist,
                                     &filename, &framework, &device, &backend, &remote[0],
                                     &remote[1], &remote[2], &remote[3], &remote[4], &remote[5],
                                     &remote[6], &remote[7], &remote[8], &verify))
        return NULL;
    return open_handle(type, state, filename, framework, device, backend, remote, verify);
}

/* ---- MARK: lifetime ---- */

/* A new reference to the file, or NULL with "File is closed" set. */
static st_file *acquire_file(SafeOpen *self)
{
    st_file *file;
    STPY_LOCK(self);
    file = self->file;
    if (file != NULL)
        st_file_retain(file);
    STPY_UNLOCK();
    if (file == NULL)
        PyErr_SetString(stpy_state_from_type(Py_TYPE(self))->SafetensorError, "File is closed");
    return file;
}

/* __exit__ and close(): a URL's source is closed too, which stops the reads
 * of a load running in another thread (they raise "File is closed"). */
static PyObject *SafeOpen_exit(SafeOpen *self, PyObject *unused)
{
    st_file *file;
    PyObject *source, *prefetch, *closed;
    bool failed = false;
    STPY_LOCK(self);
    file = self->file;
    self->file = NULL;
    source = self->source;
    self->source = NULL;
    prefetch = self->prefetch;
    self->prefetch = NULL;
    STPY_UNLOCK();
    if (source != NULL) {
        closed = PyObject_CallMethod(source, "close", NULL);
        failed = closed == NULL;
        Py_XDECREF(closed);
        Py_DECREF(source);
    }
    if (file != NULL) {
        /* Usually the last reference: unmapping a large file takes a while. */
        Py_BEGIN_ALLOW_THREADS
            st_file_release(file);
        Py_END_ALLOW_THREADS
    }
    /* Last: its reads in flight end at once, their source closed, or finish
     * on their own reference to the file; then it frees what was not taken. */
    if (prefetch != NULL) {
        PyObject *type, *value, *traceback; /* the source's error stays the one raised */
        PyErr_Fetch(&type, &value, &traceback);
        closed = PyObject_CallMethod(prefetch, "close", NULL);
        failed |= closed == NULL;
        Py_XDECREF(closed);
        if (type != NULL) {
            PyErr_Clear();
            PyErr_Restore(type, value, traceback);
        }
        Py_DECREF(prefetch);
    }
    return failed ? NULL : Py_NewRef(Py_None);
}

static int SafeOpen_traverse(SafeOpen *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->device);
    Py_VISIT(self->filename);
    Py_VISIT(self->names);
    Py_VISIT(self->source);
    Py_VISIT(self->prefetch);
    Py_VISIT(self->backend_reason);
    Py_VISIT(self->verifier);
    return 0;
}

static int SafeOpen_clear(SafeOpen *self)
{
    Py_CLEAR(self->device);
    Py_CLEAR(self->filename);
    Py_CLEAR(self->names);
    Py_CLEAR(self->source);
    Py_CLEAR(self->prefetch);
    Py_CLEAR(self->backend_reason);
    Py_CLEAR(self->verifier);
    return 0;
}

static void SafeOpen_dealloc(SafeOpen *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    /* (the prefetch reader's weak reference called back: it cancelled) */
    if (self->file != NULL)
        st_file_release(self->file);
    self->file = NULL;
    SafeOpen_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *SafeOpen_enter(SafeOpen *self, PyObject *unused)
{
    return Py_NewRef(self);
}

/* ---- MARK: names and metadata ---- */

enum header_list_kind { SORTED_NAMES, NAMES_IN_FILE_ORDER, TABLE_ROWS };

/* A new list with an item per tensor of the open file: its name (sorted or
 * in file order), or its _table() row; NULL with "File is closed". */
static PyObject *header_list(SafeOpen *self, enum header_list_kind kind)
{
    const st_header *header;
    PyObject *list;
    uint64_t base;
    st_file *file = acquire_file(self);
    if (file == NULL)
        return NULL;
    header = st_file_header(file);
    base = st_header_data_start(header);
    list = PyList_New((Py_ssize_t)st_header_count(header));
    for (size_t i = 0; list != NULL && i < st_header_count(header); i++) {
        const st_tensor *t = kind == SORTED_NAMES ? st_header_tensor_by_name_order(header, i)
                                                  : st_header_tensor(header, i);
        PyObject *item = kind != TABLE_ROWS ? stpy_tensor_name(t)
                                            : Py_BuildValue("(NsNKK)", stpy_tensor_name(t),
                                                            st_dtype_name(t->dtype),
                                                            stpy_int_list(t->shape, t->ndim),
                                                            (unsigned long long)(base + t->begin),
                                                            (unsigned long long)(base + t->end));
        if (item == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    st_file_release(file);
    return list;
}

static PyObject *SafeOpen_keys(SafeOpen *self, PyObject *unused)
{
    PyObject *names, *result = NULL;
    STPY_LOCK(self);
    names = self->file != NULL ? Py_XNewRef(self->names) : NULL;
    STPY_UNLOCK();
    if (names == NULL && (names = header_list(self, SORTED_NAMES)) != NULL) {
        STPY_LOCK(self); /* kept for the next call */
        if (self->names == NULL)
            self->names = Py_NewRef(names);
        STPY_UNLOCK();
    }
    if (names != NULL)
        result = PySequence_List(names);
    Py_XDECREF(names);
    return result;
}

static PyObject *SafeOpen_offset_keys(SafeOpen *self, PyObject *unused)
{
    return header_list(self, NAMES_IN_FILE_ORDER);
}

/* The header's metadata as a dict, or None. */
static PyObject *metadata_dict(const st_header *header)
{
    PyObject *result;
    if (!st_header_has_metadata(header))
        return Py_NewRef(Py_None);
    result = PyDict_New();
    for (size_t i = 0; result != NULL && i < st_header_metadata_count(header); i++) {
        const st_metadata_item *item = st_header_metadata_item(header, i);
        PyObject *key = PyUnicode_DecodeUTF8(item->key, (Py_ssize_t)item->key_len, "surrogatepass");
        PyObject *value =
            key ? PyUnicode_DecodeUTF8(item->value, (Py_ssize_t)item->value_len, "surrogatepass")
                : NULL;
        if (value == NULL || PyDict_SetItem(result, key, value) < 0)
            Py_CLEAR(result);
        Py_XDECREF(key);
        Py_XDECREF(value);
    }
    return result;
}

static PyObject *SafeOpen_metadata(SafeOpen *self, PyObject *unused)
{
    PyObject *result;
    st_file *file = acquire_file(self);
    if (file == NULL)
        return NULL;
    result = metadata_dict(st_file_header(file));
    st_file_release(file);
    return result;
}

/* ---- MARK: tensors ---- */

/* The tensor named by the one argument (`name`) of get_tensor/get_slice,
 * *file then a new reference; NULL with an exception set (no reference). */
static const st_tensor *named_tensor(SafeOpen *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames, const char *fname, st_file **file)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, len;
    PyObject *name;
    const st_tensor *t;
    const char *utf8;
    if (nargs + nkw != 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly one argument (%zd given)", fname,
                     nargs + nkw);
        return NULL;
    }
    if (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "name") != 0) {
        PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname,
                     PyTuple_GET_ITEM(kwnames, 0));
        return NULL;
    }
    name = args[0];
    if (stpy_check_arg(name, &PyUnicode_Type, "name") < 0 ||
        (utf8 = PyUnicode_AsUTF8AndSize(name, &len)) == NULL ||
        (*file = acquire_file(self)) == NULL)
        return NULL;
    t = st_header_find(st_file_header(*file), utf8, (size_t)len);
    if (t == NULL) {
        PyErr_Format(stpy_state_from_type(Py_TYPE(self))->SafetensorError,
                     "File does not contain tensor %U", name);
        st_file_release(*file);
    }
    return t;
}

/* What the prefetch reader has for a tensor (method "take": the tensor read;
 * "slice": an object standing in for get_slice's): a new reference, or
 * Py_None (a new reference too) when prefetch(plan) did not name it. */
static PyObject *prefetched(SafeOpen *self, const char *method, PyObject *name)
{
    PyObject *prefetch;
    STPY_LOCK(self);
    prefetch = Py_XNewRef(self->prefetch);
    STPY_UNLOCK();
    if (prefetch == NULL)
        return Py_NewRef(Py_None);
    Py_SETREF(prefetch, PyObject_CallMethod(prefetch, method, "O", name));
    return prefetch;
}

static PyObject *SafeOpen_get_tensor(SafeOpen *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames)
{
    stpy_state *state = stpy_state_from_type(Py_TYPE(self));
    PyObject *result;
    st_file *file;
    const st_tensor *t = named_tensor(self, args, nargs, kwnames, "get_tensor", &file);
    if (t == NULL)
        return NULL;
    result = prefetched(self, "take", args[0]);
    if (result != Py_None) {
        st_file_release(file);
        return result;
    }
    Py_DECREF(result);
    result = stpy_tensor_load(state, self->framework, file, t, self->device, self->verifier);
    if (result != NULL && stpy_is_cuda(self->framework, self->device) &&
        stpy_cuda_synchronize(state, self->device) < 0)
        Py_CLEAR(result);
    st_file_release(file);
    return result;
}

/* A whole-file load of a file the core chose to map: whether st_read_all_prefers_pread sends it
 * through pread (most of the data not in the page cache now), shown in backend and
 * backend_reason; 1, 0, or -1 with an exception set. */
static int cold_load(stpy_state *state, SafeOpen *self, st_file *file)
{
    uint64_t start = st_header_data_start(st_file_header(file)), len = st_file_size(file) - start;
    double resident;
    st_error err;
    PyObject *reason;
    st_code code;
    bool pread;
    Py_BEGIN_ALLOW_THREADS
        code = st_file_resident(file, start, len, &resident, &err);
    Py_END_ALLOW_THREADS
    if (code != ST_OK) {
        stpy_raise(state, &err, STPY_CTX_READ, NULL);
        return -1;
    }
    pread = st_read_all_prefers_pread(resident, len, stpy_physical_memory());
    /* Whole percents rounded down: under 50% is below ST_COLD_FRACTION. */
    reason = PyUnicode_FromFormat("%s; whole-file load: %d%% of the file in the page cache",
                                  st_file_backend_reason(file), (int)(resident * 100));
    if (reason == NULL)
        return -1;
    STPY_LOCK(self);
    self->backend = pread ? ST_BACKEND_PREAD : ST_BACKEND_MMAP;
    Py_SETREF(self->backend_reason, reason);
    STPY_UNLOCK();
    return pread;
}

static PyObject *SafeOpen_get_tensors(SafeOpen *self, PyObject *unused)
{
    stpy_state *state = stpy_state_from_type(Py_TYPE(self));
    PyObject *result = NULL, **tensors = NULL;
    st_file *file = acquire_file(self);
    const st_header *header;
    size_t count, made = 0;
    bool read_all, mapped_cpu;
    int cold = 0;
    if (file == NULL)
        return NULL;
    header = st_file_header(file);
    /* mmap on the CPU: every tensor is a view of one mapping (tensor_views.c), unless the
     * core chose the mapping and most of the file is not in the page cache. */
    mapped_cpu = st_file_backend(file) == ST_BACKEND_MMAP && self->device == NULL &&
                 (self->framework == FW_PYTORCH || self->framework == FW_NUMPY);
    if (mapped_cpu && self->auto_backend && (cold = cold_load(state, self, file)) < 0)
        goto exit;
    if (mapped_cpu && !cold) {
        result = stpy_tensors_of_mapping(state, self->framework, file, self->verifier);
        goto exit;
    }
    count = st_header_count(header);
    /* pread on the CPU: everything allocated, then read at once, many reads
     * in flight (pread_tensors.c). Otherwise tensor by tensor; CUDA copies
     * overlap the next tensor's read. */
    read_all = cold || (st_file_backend(file) == ST_BACKEND_PREAD &&
                        !stpy_is_cuda(self->framework, self->device));
    tensors = PyMem_Calloc(count ? count : 1, sizeof *tensors);
    if (tensors == NULL) {
        PyErr_NoMemory();
        goto exit;
    }
    if (read_all &&
        stpy_read_tensors(state, self->framework, file, NULL, count, tensors, self->verifier) < 0)
        goto exit;
    made = read_all ? count : 0;
    result = PyDict_New();
    if (result == NULL)
        goto exit;
    for (size_t i = 0; i < count; i++) {
        const st_tensor *t = st_header_tensor(header, i);
        PyObject *name = stpy_tensor_name(t), *tensor;
        if (!read_all && name != NULL)
            tensors[made++] =
                stpy_tensor_load(state, self->framework, file, t, self->device, self->verifier);
        else if (read_all && self->device != NULL && tensors[i] != NULL)
            tensors[i] = stpy_tensor_to_device(state, tensors[i], self->device);
        tensor = tensors[i];
        if (name == NULL || tensor == NULL || PyDict_SetItem(result, name, tensor) < 0) {
            Py_XDECREF(name);
            Py_CLEAR(result);
            goto exit;
        }
        Py_DECREF(name);
    }
    /* One wait for all the transfers, which overlapped the reads. */
    if (stpy_is_cuda(self->framework, self->device) &&
        stpy_cuda_synchronize(state, self->device) < 0)
        Py_CLEAR(result);
exit:
    for (size_t i = 0; tensors != NULL && i < made; i++)
        Py_XDECREF(tensors[i]);
    PyMem_Free(tensors);
    st_file_release(file);
    return result;
}

/* get_slice(name), consulting what prefetch planned or not (_slice: the
 * prefetch reader's own reads, and a planned slice's other indexes). */
static PyObject *slice_of(SafeOpen *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames, const char *fname, bool consult_plan)
{
    st_file *file;
    const st_tensor *t = named_tensor(self, args, nargs, kwnames, fname, &file);
    PyObject *planned = NULL;
    if (t == NULL)
        return NULL;
    if (consult_plan && (planned = prefetched(self, "slice", args[0])) != Py_None) {
        st_file_release(file);
        return planned;
    }
    Py_XDECREF(planned);
    return stpy_slice_new(stpy_state_from_type(Py_TYPE(self)), file, t, self->framework,
                          self->device, self->verifier); /* takes file */
}

static PyObject *SafeOpen_get_slice(SafeOpen *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    return slice_of(self, args, nargs, kwnames, "get_slice", true);
}

static PyObject *SafeOpen_slice(SafeOpen *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    return slice_of(self, args, nargs, kwnames, "_slice", false);
}

/* _table(): (name, dtype code, shape, begin, end) of every tensor in file
 * order, begin/end absolute file offsets: the one table other layers use. */
static PyObject *SafeOpen_table(SafeOpen *self, PyObject *unused)
{
    return header_list(self, TABLE_ROWS);
}

/* _read_into(offset, buffer): exactly len(buffer) bytes of the file from
 * offset into a writable contiguous buffer, without the GIL. */
static PyObject *SafeOpen_read_into(SafeOpen *self, PyObject *args)
{
    stpy_state *state = stpy_state_from_type(Py_TYPE(self));
    long long offset;
    Py_buffer view;
    st_file *file;
    st_error err;
    st_code code;
    if (!PyArg_ParseTuple(args, "Lw*:_read_into", &offset, &view))
        return NULL;
    if (offset < 0) {
        PyErr_Format(PyExc_ValueError, "_read_into: offset must not be negative, got %lld", offset);
        PyBuffer_Release(&view);
        return NULL;
    }
    file = acquire_file(self);
    if (file == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
        code = st_file_read(file, (uint64_t)offset, view.buf, (size_t)view.len, &err);
    Py_END_ALLOW_THREADS
    if (code != ST_OK)
        stpy_raise(state, &err, STPY_CTX_READ, self->filename);
    PyBuffer_Release(&view);
    st_file_release(file);
    return code == ST_OK ? Py_NewRef(Py_None) : NULL;
}

/* prefetch(plan=None, **options): starts reading what the plan names in the
 * background (safetensors/prefetch.py, registered with _set_checkpoint_support);
 * an earlier prefetch of this handle is closed first. */
static PyObject *SafeOpen_prefetch(SafeOpen *self, PyObject *args, PyObject *kwargs)
{
    stpy_state *state = stpy_state_from_type(Py_TYPE(self));
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *call_args = NULL, *reader = NULL, *old = NULL, *closed = NULL;
    st_file *file = acquire_file(self); /* else "File is closed" */
    if (file == NULL)
        goto exit;
    st_file_release(file);
    if ((call_args = PyTuple_New(n + 1)) == NULL)
        goto exit;
    PyTuple_SET_ITEM(call_args, 0, Py_NewRef(self));
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(call_args, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    if ((reader = PyObject_Call(state->prefetcher, call_args, kwargs)) == NULL)
        goto exit;
    STPY_LOCK(self);
    old = self->prefetch;
    self->prefetch = reader;
    STPY_UNLOCK();
    reader = NULL;
    closed = old != NULL ? PyObject_CallMethod(old, "close", NULL) : Py_NewRef(Py_None);
exit:
    Py_XDECREF(old);
    Py_XDECREF(reader);
    Py_XDECREF(call_args);
    return closed;
}

/* _resident(): the fraction of the data section in the page cache now (st_file_resident), the
 * measure a whole-file load decides by; None when the file is not mapped. */
static PyObject *SafeOpen_resident(SafeOpen *self, PyObject *unused)
{
    st_file *file = acquire_file(self);
    PyObject *result = NULL;
    uint64_t start;
    double resident;
    st_error err;
    st_code code;
    if (file == NULL)
        return NULL;
    start = st_header_data_start(st_file_header(file));
    if (st_file_backend(file) != ST_BACKEND_MMAP) {
        st_file_release(file);
        return Py_NewRef(Py_None);
    }
    Py_BEGIN_ALLOW_THREADS
        code = st_file_resident(file, start, st_file_size(file) - start, &resident, &err);
    Py_END_ALLOW_THREADS
    if (code != ST_OK)
        stpy_raise(stpy_state_from_type(Py_TYPE(self)), &err, STPY_CTX_READ, NULL);
    else
        result = PyFloat_FromDouble(resident);
    st_file_release(file);
    return result;
}

static int compare_positions(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

/* _read_tensors(names): {name: tensor} of the named tensors (each once), read
 * into memory of their own by one parallel read (pread on a mapped file too:
 * safetensors/prefetch.py's reads of pages not yet in memory), on the
 * handle's device. */
static PyObject *SafeOpen_read_tensors(SafeOpen *self, PyObject *names)
{
    stpy_state *state = stpy_state_from_type(Py_TYPE(self));
    PyObject *seq = PySequence_Fast(names, "_read_tensors expects a sequence of names");
    PyObject *result = NULL, **tensors = NULL;
    size_t *which = NULL, count = 0, unique = 0, made = 0;
    st_file *file = seq != NULL ? acquire_file(self) : NULL;
    const st_header *header;
    if (file == NULL)
        goto exit;
    header = st_file_header(file);
    count = (size_t)PySequence_Fast_GET_SIZE(seq);
    which = PyMem_Calloc(count ? count : 1, sizeof *which);
    tensors = PyMem_Calloc(count ? count : 1, sizeof *tensors);
    if (which == NULL || tensors == NULL) {
        PyErr_NoMemory();
        goto exit;
    }
    for (size_t i = 0; i < count; i++) {
        PyObject *name = PySequence_Fast_GET_ITEM(seq, (Py_ssize_t)i);
        const st_tensor *t;
        Py_ssize_t len;
        const char *utf8 = stpy_check_arg(name, &PyUnicode_Type, "name") < 0
                               ? NULL
                               : PyUnicode_AsUTF8AndSize(name, &len);
        if (utf8 == NULL)
            goto exit;
        if ((t = st_header_find(header, utf8, (size_t)len)) == NULL) {
            PyErr_Format(state->SafetensorError, "File does not contain tensor %U", name);
            goto exit;
        }
        which[i] = st_header_position(header, t);
    }
    qsort(which, count, sizeof *which, compare_positions);
    for (size_t i = 0; i < count; i++) /* each once */
        if (unique == 0 || which[unique - 1] != which[i])
            which[unique++] = which[i];
    count = unique;
    if (stpy_read_tensors(state, self->framework, file, which, count, tensors, self->verifier) < 0)
        goto exit;
    made = count;
    result = PyDict_New();
    for (size_t i = 0; result != NULL && i < count; i++) {
        PyObject *name = stpy_tensor_name(st_header_tensor(header, which[i]));
        if (self->device != NULL && tensors[i] != NULL) /* steals the CPU tensor */
            tensors[i] = stpy_tensor_to_device(state, tensors[i], self->device);
        if (name == NULL || tensors[i] == NULL || PyDict_SetItem(result, name, tensors[i]) < 0)
            Py_CLEAR(result);
        Py_XDECREF(name);
    }
    if (result != NULL && stpy_is_cuda(self->framework, self->device) &&
        stpy_cuda_synchronize(state, self->device) < 0)
        Py_CLEAR(result);
exit:
    for (size_t i = 0; tensors != NULL && i < made; i++)
        Py_XDECREF(tensors[i]);
    PyMem_Free(tensors);
    PyMem_Free(which);
    if (file != NULL)
        st_file_release(file);
    Py_XDECREF(seq);
    return result;
}

static PyMethodDef SafeOpen_methods[] = {
    {"__enter__", (PyCFunction)SafeOpen_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)SafeOpen_exit, METH_VARARGS, NULL},
    {"close", (PyCFunction)SafeOpen_exit, METH_NOARGS,
     "close()\n"
     "--\n"
     "\n"
     "Closes the handle, as leaving the `with` block does: later calls raise\n"
     "SafetensorError(\"File is closed\"); arrays obtained stay valid. For a URL,\n"
     "reads in flight (a load in another thread) stop and raise the same."},
    {"keys", (PyCFunction)SafeOpen_keys, METH_NOARGS,
     "keys()\n"
     "--\n"
     "\n"
     "Returns:\n"
     "    list[str]: the tensor names, sorted.\n"
     "\n"
     "Raises:\n"
     "    SafetensorError: \"File is closed\" after __exit__.\n"
     "\n"
     "Example:\n"
     "    >>> with safe_open(\"model.safetensors\", \"pt\") as f:\n"
     "    ...     names = f.keys()"},
    {"offset_keys", (PyCFunction)SafeOpen_offset_keys, METH_NOARGS,
     "offset_keys()\n"
     "--\n"
     "\n"
     "Returns:\n"
     "    list[str]: the tensor names in the order of their data in the file\n"
     "    (reading in this order reads the file front to back).\n"
     "\n"
     "Raises:\n"
     "    SafetensorError: \"File is closed\" after __exit__.\n"
     "\n"
     "Example:\n"
     "    >>> for name in f.offset_keys():\n"
     "    ...     tensor = f.get_tensor(name)"},
    {"metadata", (PyCFunction)SafeOpen_metadata, METH_NOARGS,
     "metadata()\n"
     "--\n"
     "\n"
     "Returns:\n"
     "    dict[str, str] | None: the header's \"__metadata__\", None when absent.\n"
     "\n"
     "Raises:\n"
     "    SafetensorError: \"File is closed\" after __exit__.\n"
     "\n"
     "Example:\n"
     "    >>> f.metadata()\n"
     "    {'format': 'pt'}"},
    {"get_tensor", (PyCFunction)(void (*)(void))SafeOpen_get_tensor, METH_FASTCALL | METH_KEYWORDS,
     "get_tensor(name)\n"
     "--\n"
     "\n"
     "One whole tensor, in the handle's framework and on its device. The result\n"
     "shares memory with no other array: large tensors (64 KiB or more) on the\n"
     "mmap backend are zero-copy views of a private mapping of their own, smaller\n"
     "ones are copies; writes never reach the file.\n"
     "\n"
     "Args:\n"
     "    name (str): the tensor's name.\n"
     "\n"
     "Returns:\n"
     "    the framework's array: torch.Tensor, numpy.ndarray, tf.Tensor,\n"
     "    jax.Array, mlx.core.array or paddle.Tensor.\n"
     "\n"
     "Raises:\n"
     "    SafetensorError: \"File does not contain tensor <name>\", \"File is closed\",\n"
     "        a dtype the framework lacks (\"Dtype not understood: F6_E2M3\").\n"
     "    TypeError: name is not a str.\n"
     "\n"
     "Example:\n"
     "    >>> with safe_open(\"model.safetensors\", framework=\"pt\") as f:\n"
     "    ...     w = f.get_tensor(\"wte.weight\")"},
    {"get_tensors", (PyCFunction)SafeOpen_get_tensors, METH_NOARGS,
     "get_tensors()\n"
     "--\n"
     "\n"
     "Every tensor, as get_tensor would give it, except that on the mmap backend\n"
     "(CPU, torch and NumPy) all are views of one private mapping made by this\n"
     "call: disjoint, so still independent of one another. With backend=None,\n"
     "a mapped file mostly not in the page cache is read with pread instead.\n"
     "\n"
     "Returns:\n"
     "    dict[str, array]: in file (offset) order.\n"
     "\n"
     "Raises:\n"
     "    SafetensorError: as for get_tensor.\n"
     "\n"
     "Example:\n"
     "    >>> with safe_open(\"model.safetensors\", \"np\", backend=\"pread\") as f:\n"
     "    ...     arrays = f.get_tensors()"},
    {"_table", (PyCFunction)SafeOpen_table, METH_NOARGS, NULL},
    {"_read_into", (PyCFunction)SafeOpen_read_into, METH_VARARGS, NULL},
    {"_read_tensors", (PyCFunction)SafeOpen_read_tensors, METH_O, NULL},
    {"_slice", (PyCFunction)(void (*)(void))SafeOpen_slice, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"prefetch", (PyCFunction)(void (*)(void))SafeOpen_prefetch, METH_VARARGS | METH_KEYWORDS,
     "prefetch(plan=None, *, budget=None, rank=0, world_size=1)\n"
     "--\n"
     "\n"
     "Starts reading what plan names in the background, in file order, with at\n"
     "most budget bytes read ahead of what the caller has taken; get_tensor and\n"
     "get_slice then return what was read or wait only for their own tensor\n"
     "(docs/checkpoints.md).\n"
     "\n"
     "Args:\n"
     "    plan: None (every tensor), names, {name: placement} or\n"
     "        plan(name, shape, dtype) -> placement, a placement being\n"
     "        Replicate(), Shard(dim) (this rank's part) or None (skip).\n"
     "    budget (int | None): bytes read ahead (default 1 GiB); a tensor larger\n"
     "        than it is read alone.\n"
     "    rank, world_size (int): whose part Shard(dim) means.\n"
     "\n"
     "Raises:\n"
     "    SafetensorError: \"File is closed\", a name the file lacks.\n"
     "\n"
     "Example:\n"
     "    >>> with safe_open(\"model.safetensors\", \"pt\") as f:\n"
     "    ...     f.prefetch()\n"
     "    ...     tensors = {k: f.get_tensor(k) for k in f.keys()}"},
    {"_resident", (PyCFunction)SafeOpen_resident, METH_NOARGS, NULL},
    {"get_slice", (PyCFunction)(void (*)(void))SafeOpen_get_slice, METH_FASTCALL | METH_KEYWORDS,
     "get_slice(name)\n"
     "--\n"
     "\n"
     "A lazy view of a tensor: nothing is read until it is indexed, and then only\n"
     "what the index selects.\n"
     "\n"
     "Args:\n"
     "    name (str): the tensor's name.\n"
     "\n"
     "Returns:\n"
     "    PySafeSlice: with get_shape(), get_dtype() and [index] (NumPy's indexing).\n"
     "\n"
     "Raises:\n"
     "    SafetensorError: \"File does not contain tensor <name>\", \"File is closed\".\n"
     "\n"
     "Example:\n"
     "    >>> with safe_open(\"model.safetensors\", \"pt\") as f:\n"
     "    ...     s = f.get_slice(\"wte.weight\")\n"
     "    ...     rows = s[:100, ::2]"},
    {NULL, NULL, 0, NULL},
};

static PyObject *SafeOpen_get_backend(SafeOpen *self, void *unused)
{
    st_backend backend;
    STPY_LOCK(self);
    backend = self->backend;
    STPY_UNLOCK();
    return PyUnicode_FromString(backend == ST_BACKEND_PREAD ? "pread" : "mmap");
}

static PyObject *SafeOpen_get_backend_reason(SafeOpen *self, void *unused)
{
    PyObject *reason;
    STPY_LOCK(self);
    reason = Py_NewRef(self->backend_reason);
    STPY_UNLOCK();
    return reason;
}

static PyGetSetDef SafeOpen_getset[] = {
    {"backend", (getter)SafeOpen_get_backend, NULL,
     "How the file is read: \"mmap\" (a mapping) or \"pread\" (reads into memory of its\n"
     "own). With backend=None, the one chosen at open, or by the last whole-file load\n"
     "(get_tensors, load_file), which reads a file mostly not in the page cache with pread.",
     NULL},
    {"backend_reason", (getter)SafeOpen_get_backend_reason, NULL,
     "Why: \"chosen by the caller\", \"local file system\", \"nfs: network file system\",\n"
     "\"fuse: FUSE file system\", \"read through a byte source\" (a URL), ...; after a\n"
     "whole-file load with backend=None, \"...; whole-file load: 3% of the file in the\n"
     "page cache\".",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* _source: a URL's byte source, for a reader of the same pinned object
 * (safetensors/distributed.py); None for a path or once closed. _prefetch:
 * the reader of the last prefetch(plan) (tests), None once closed. */
static PyMemberDef SafeOpen_members[] = {
    {"_source", T_OBJECT, offsetof(SafeOpen, source), READONLY, NULL},
    {"_prefetch", T_OBJECT, offsetof(SafeOpen, prefetch), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(SafeOpen, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot SafeOpen_slots[] = {
    {Py_tp_new, SafeOpen_new},
    {Py_tp_dealloc, SafeOpen_dealloc},
    {Py_tp_traverse, SafeOpen_traverse},
    {Py_tp_clear, SafeOpen_clear},
    {Py_tp_methods, SafeOpen_methods},
    {Py_tp_members, SafeOpen_members},
    {Py_tp_getset, SafeOpen_getset},
    {Py_tp_doc,
     "safe_open(filename, framework, device='cpu', *, backend=None, storage_options=None,\n"
     "          chunk_size=None, concurrency=None, head_bytes=None, retries=None, timeout=None,\n"
     "          backoff=None, direct=None, deadline=None, verify=False)\n"
     "--\n"
     "\n"
     "Opens a safetensors file lazily: only the header is read and checked; tensors\n"
     "are read when asked for. Use it as a context manager; arrays obtained stay\n"
     "valid after it is closed.\n"
     "\n"
     "A URL (s3://, https://, hf://, ... any fsspec scheme but file://) or an fsspec\n"
     "file object is read with ranged requests (docs/remote.md): the same handle,\n"
     "with the same results, errors and messages as for a path; its tensors are\n"
     "read as on the pread backend, only the bytes asked for.\n"
     "\n"
     "Args:\n"
     "    filename (str | os.PathLike | fsspec file): the file, a file:// URL, or a\n"
     "        remote URL / fsspec file object.\n"
     "    framework (str): \"pt\"/\"torch\"/\"pytorch\", \"np\"/\"numpy\", \"tf\"/\"tensorflow\",\n"
     "        \"jax\"/\"flax\", \"mlx\" or \"paddle\".\n"
     "    device (str | int): \"cpu\" (default), \"cuda\", \"cuda:1\", 1, \"mps\", ...\n"
     "        (torch and paddle only).\n"
     "    backend (str | None): \"mmap\" (large tensors are zero-copy views of a\n"
     "        private mapping of their own) or \"pread\" (every tensor is read into\n"
     "        memory the process owns; immune to the file changing later). None\n"
     "        (default): \"pread\" on network and FUSE file systems (NFS, SMB, Lustre,\n"
     "        FUSE, ...), else \"mmap\", where get_tensors reads with pread when most of\n"
     "        the file is not in the page cache (f.backend and f.backend_reason say\n"
     "        which; docs/design.md). URLs are always read as on \"pread\".\n"
     "    storage_options (dict | None): options of the remote filesystem.\n"
     "    chunk_size, concurrency, head_bytes, retries, timeout, backoff, direct,\n"
     "        deadline: remote reading's knobs (docs/remote.md); None: the default.\n"
     "        These and storage_options are for URLs only: a ValueError for a path.\n"
     "    verify (bool): check every tensor read against the digest the file records\n"
     "        (checksum=...): hashed as it is read, in parallel threads; a tensor that\n"
     "        fails is never returned. get_slice checks its whole tensor once per\n"
     "        handle (docs/integrity.md).\n"
     "\n"
     "Returns:\n"
     "    safe_open: the handle (also what `with` binds).\n"
     "\n"
     "Raises:\n"
     "    FileNotFoundError, PermissionError, IsADirectoryError, OSError: the file\n"
     "        cannot be opened; str() is upstream's \"No such file or directory: x\".\n"
     "    SafetensorError: an invalid file (\"Error while deserializing header: ...\"),\n"
     "        framework, device or backend; with verify=True, a file without digests\n"
     "        (at open) or a tensor whose bytes fail its digest (when read).\n"
     "    safetensors.remote.RemoteObjectChangedError, RemoteTimeoutError,\n"
     "        RemoteConnectionError: a URL that changed, timed out or failed.\n"
     "    TypeError: arguments of the wrong type.\n"
     "\n"
     "Example:\n"
     "    >>> from safetensors import safe_open\n"
     "    >>> with safe_open(\"model.safetensors\", framework=\"pt\", device=\"cpu\") as f:\n"
     "    ...     for name in f.keys():\n"
     "    ...         tensor = f.get_tensor(name)"},
    {0, NULL},
};

PyType_Spec stpy_safe_open_spec = {
    .name = "safetensors._safetensors_c.safe_open",
    .basicsize = sizeof(SafeOpen),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = SafeOpen_slots,
};
