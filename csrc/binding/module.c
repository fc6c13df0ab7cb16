/*
 * module.c - the safetensors._safetensors_c module: state, exception types,
 * and stpy_raise, the single place where core errors become Python exceptions.
 *
 * Multi-phase init; every type is a heap type created from the module, and
 * all per-module objects live in stpy_state (no C globals), so the module works
 * in sub-interpreters and declares itself free-threading safe.
 */
#include "module.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static struct PyModuleDef stpy_module_def;

stpy_state *stpy_state_from_module(PyObject *module)
{
    return (stpy_state *)PyModule_GetState(module);
}

stpy_state *stpy_state_from_type(PyTypeObject *type)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *module = PyType_GetModuleByDef(type, &stpy_module_def);
#else
    PyObject *module = PyType_GetModule(type); /* our types are final */
#endif
    return module ? stpy_state_from_module(module) : NULL;
}

/* ---- MARK: errors ---- */

static PyObject *make_exception(PyObject *type, PyObject *message, const st_error *err)
{
    PyObject *exc = PyObject_CallOneArg(type, message);
    if (exc == NULL)
        return NULL;
    if (err != NULL && err->offset != 0) {
        /* Not part of the message: upstream's texts are matched exactly. */
        PyObject *offset = PyLong_FromUnsignedLongLong(err->offset);
        if (offset == NULL || PyObject_SetAttrString(exc, "byte_offset", offset) < 0) {
            Py_XDECREF(offset);
            Py_DECREF(exc);
            return NULL;
        }
        Py_DECREF(offset);
    }
    return exc;
}

/* The OS's reason without the core's decoration: "No such file or
 * directory", or the core's own reason ("not a regular file (a FIFO)"). */
static PyObject *io_reason(const st_error *err)
{
    const char *io_prefix = st_code_text(ST_ERR_IO); /* "I/O error: " */
    char text[ST_ERROR_MSG_MAX], suffix[32];
    size_t start = strncmp(err->msg, io_prefix, strlen(io_prefix)) == 0 ? strlen(io_prefix) : 0;
    size_t len;
    snprintf(text, sizeof(text), "%s", err->msg + start);
    len = strlen(text);
    snprintf(suffix, sizeof(suffix), " (os error %d)", err->sys_errno);
    if (len >= strlen(suffix) && strcmp(text + len - strlen(suffix), suffix) == 0)
        text[len - strlen(suffix)] = '\0';
    return PyUnicode_DecodeLocale(text, "surrogateescape");
}

/* The builtin OSError subclass CPython itself picks for an errno. */
static stpy_open_error open_error_kind(int sys_errno)
{
    switch (sys_errno) {
    case ENOENT: return OPEN_ERROR_NOT_FOUND;
    case EACCES:
    case EPERM: return OPEN_ERROR_PERMISSION;
    case EISDIR: return OPEN_ERROR_IS_DIRECTORY;
    case ENOTDIR: return OPEN_ERROR_NOT_DIRECTORY;
    default: return OPEN_ERROR_OTHER;
    }
}

/* Upstream's message prefix for each context, the one copy of these texts. */
static const char *const context_prefix[] = {
    [STPY_CTX_NONE] = "",
    [STPY_CTX_DESERIALIZE_HEADER] = "Error while deserializing header: ",
    [STPY_CTX_DESERIALIZE] = "Error while deserializing: ",
    [STPY_CTX_SERIALIZE] = "Error while serializing: ",
    [STPY_CTX_READ] = "Error while reading: ",
    [STPY_CTX_READ_TENSOR] = "Error while reading tensor: ",
};

PyObject *stpy_raise(stpy_state *state, const st_error *err, stpy_context ctx, PyObject *filename)
{
    PyObject *message = NULL, *exc = NULL, *reason = NULL, *type;

    if (err->code == ST_ERR_NOMEM)
        return PyErr_NoMemory();
    /* A byte source raised: its exception (an interrupt, FileNotFoundError,
     * RemoteObjectChangedError, ...) reaches the caller unchanged. */
    if (err->code == ST_ERR_EXTERNAL && PyErr_Occurred())
        return NULL;
    if (err->code == ST_ERR_IO && err->sys_errno != 0 && ctx == STPY_CTX_NONE) {
        /* Opening: upstream's "No such file or directory: notafile", as a
         * FileNotFoundError, PermissionError, ... chosen by errno. */
        reason = io_reason(err);
        type = state->open_errors[open_error_kind(err->sys_errno)];
        message = reason && filename ? PyUnicode_FromFormat("%U: %S", reason, filename) : NULL;
    } else {
        if (err->code == ST_ERR_INVALID_SLICE)
            type = state->SafetensorIndexError;
        else if (err->code == ST_ERR_IO)
            type = state->SafetensorIOError;
        else
            type = state->SafetensorError;
        message = PyUnicode_FromFormat("%s%s", context_prefix[ctx], err->msg);
        if (message != NULL && err->code == ST_ERR_IO && filename != NULL) {
            /* Saving: name the file, as upstream's `at path "..."` does. */
            PyObject *quoted = stpy_debug_quote(filename);
            Py_SETREF(message,
                      quoted ? PyUnicode_FromFormat("%U at path %U", message, quoted) : NULL);
            Py_XDECREF(quoted);
        }
    }
    if (message == NULL)
        goto exit;
    exc = make_exception(type, message, err);
    if (exc == NULL)
        goto exit;
    if (err->code == ST_ERR_IO && err->sys_errno != 0) {
        /* The OSError attributes, for code that reads them; our OSError
         * types keep the message as str() (see make_error_type). */
        PyObject *number = PyLong_FromLong(err->sys_errno);
        int rc = -1;
        if (reason == NULL)
            reason = io_reason(err);
        if (number != NULL && reason != NULL)
            rc = PyObject_SetAttrString(exc, "errno", number);
        if (rc == 0)
            rc = PyObject_SetAttrString(exc, "strerror", reason);
        if (rc == 0 && filename != NULL)
            rc = PyObject_SetAttrString(exc, "filename", filename);
        Py_XDECREF(number);
        if (rc < 0)
            goto exit;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
exit:
    Py_XDECREF(reason);
    Py_XDECREF(message);
    Py_XDECREF(exc);
    return NULL;
}

int stpy_check_arg(PyObject *obj, PyTypeObject *type, const char *argument)
{
    const char *name = strrchr(type->tp_name, '.');
    if (PyObject_TypeCheck(obj, type))
        return 0;
    PyErr_Format(PyExc_TypeError, "argument '%s': '%.100s' object is not an instance of '%s'",
                 argument, Py_TYPE(obj)->tp_name, name ? name + 1 : type->tp_name);
    return -1;
}

PyObject *stpy_debug_quote(PyObject *text)
{
    /* The core's st_debug_str is the one implementation (the header parser
     * quotes names with it too). 160 bytes at most 7 each, quotes, "...". */
    char quoted[160 * 7 + 8];
    PyObject *utf8 = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
    if (utf8 == NULL)
        return NULL;
    st_debug_str(PyBytes_AS_STRING(utf8), (size_t)PyBytes_GET_SIZE(utf8), quoted, sizeof(quoted));
    Py_DECREF(utf8);
    return PyUnicode_DecodeUTF8(quoted, (Py_ssize_t)strlen(quoted), "surrogatepass");
}

PyObject *stpy_int_list(const uint64_t *values, size_t count)
{
    PyObject *list = PyList_New((Py_ssize_t)count);
    for (size_t i = 0; list != NULL && i < count; i++) {
        PyObject *value = PyLong_FromUnsignedLongLong(values[i]);
        if (value == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, (Py_ssize_t)i, value);
    }
    return list;
}

/* ---- MARK: module ---- */

static PyObject *set_callable(PyObject **slot, PyObject *fn, const char *setter)
{
    if (!PyCallable_Check(fn))
        return PyErr_Format(PyExc_TypeError, "%s expects a callable", setter);
    Py_XSETREF(*slot, Py_NewRef(fn));
    Py_RETURN_NONE;
}

/* safetensors/__init__.py registers safetensors.remote's opener and its
 * framework importer; the framework modules register their converters. */
static PyObject *set_source_opener(PyObject *module, PyObject *opener)
{
    return set_callable(&stpy_state_from_module(module)->source_opener, opener,
                        "_set_source_opener");
}

static PyObject *set_checkpoint_support(PyObject *module, PyObject *args)
{
    stpy_state *state = stpy_state_from_module(module);
    PyObject *opener, *prefetcher, *result;
    if (!PyArg_ParseTuple(args, "OO:_set_checkpoint_support", &opener, &prefetcher))
        return NULL;
    result = set_callable(&state->checkpoint_opener, opener, "_set_checkpoint_support");
    if (result != NULL)
        Py_SETREF(result, set_callable(&state->prefetcher, prefetcher, "_set_checkpoint_support"));
    return result;
}

static PyObject *set_verifier(PyObject *module, PyObject *factory)
{
    return set_callable(&stpy_state_from_module(module)->verifier_factory, factory,
                        "_set_verifier");
}

static PyObject *set_framework_importer(PyObject *module, PyObject *importer)
{
    return set_callable(&stpy_state_from_module(module)->framework_importer, importer,
                        "_set_framework_importer");
}

static PyObject *set_framework_converter(PyObject *module, PyObject *args)
{
    stpy_state *state = stpy_state_from_module(module);
    PyObject *name, *converter, *device_name = Py_None, *result;
    stpy_framework fw;
    if (!PyArg_ParseTuple(args, "UO|O:_set_framework_converter", &name, &converter, &device_name) ||
        stpy_parse_framework(state, name, &fw) < 0)
        return NULL;
    if (fw <= FW_NUMPY)
        return PyErr_Format(PyExc_ValueError, "framework %U needs no converter", name);
    STPY_LOCK(state->SafeOpenType);
    result = set_callable(&state->converters[fw], converter, "_set_framework_converter");
    if (result != NULL && device_name != Py_None)
        Py_SETREF(result,
                  set_callable(&state->device_names[fw], device_name, "_set_framework_converter"));
    STPY_UNLOCK();
    return result;
}

static PyMethodDef stpy_module_methods[] = {
    {"_set_source_opener", set_source_opener, METH_O,
     "_set_source_opener(opener)\n"
     "--\n"
     "\n"
     "Registers opener(target, storage_options=None, **knobs), which safe_open\n"
     "calls for a URL or an fsspec file object: it returns an object with .size\n"
     "and .read_many([(offset, writable memoryview), ...]) (safetensors.remote)."},
    {"_set_checkpoint_support", set_checkpoint_support, METH_VARARGS,
     "_set_checkpoint_support(opener, prefetcher)\n--\n\n"
     "Registers opener(filename, framework, device, **options), which safe_open\n"
     "calls for a directory, an index (.json) or a list of files, and\n"
     "prefetcher(handle, plan=None, **options), which handle.prefetch calls."},
    {"_set_verifier", set_verifier, METH_O,
     "_set_verifier(factory)\n--\n\n"
     "Registers factory(metadata, names, where), which safe_open(..., verify=True)\n"
     "calls at open: it returns the object that checks the digests the file\n"
     "records (safetensors._verify.Verifier)."},
    {"_set_framework_importer", set_framework_importer, METH_O,
     "_set_framework_importer(importer)\n--\n\n"
     "Registers importer(name), which safe_open(framework=name) calls once for\n"
     "\"tensorflow\", \"flax\", \"mlx\" or \"paddle\": it imports the framework and\n"
     "safetensors.<name>, whose import registers its converter."},
    {"_set_framework_converter", set_framework_converter, METH_VARARGS,
     "_set_framework_converter(framework, converter, device_name=None)\n--\n\n"
     "Registers converter(numpy_array) -> the framework's tensor, and\n"
     "device_name(device) -> the framework's name for a device given as torch names it."},
    {"serialize", (PyCFunction)(void (*)(void))stpy_serialize, METH_VARARGS | METH_KEYWORDS,
     "serialize(tensor_dict, metadata=None, *, alignment=None)\n"
     "--\n"
     "\n"
     "The bytes of a safetensors file holding the given tensors.\n"
     "\n"
     "Args:\n"
     "    tensor_dict (dict[str, TensorSpec]): tensor name -> TensorSpec (each\n"
     "        points at little-endian bytes the caller keeps alive and unchanged\n"
     "        during the call). The 0.7 dict form raises TypeError, as 0.8.0.\n"
     "    metadata (dict[str, str] | None): the header's \"__metadata__\".\n"
     "    alignment (int | None): None (default): upstream's layout; else a power\n"
     "        of two from 8 to 4096: the header is padded with spaces so that the\n"
     "        data section starts at a multiple of it (docs/integrity.md).\n"
     "\n"
     "Returns:\n"
     "    bytes: the whole file, with upstream 0.8.0's exact layout (or its\n"
     "    padding to the alignment).\n"
     "\n"
     "Raises:\n"
     "    TypeError: a value is not a TensorSpec, metadata is not str to str.\n"
     "    ValueError: an alignment that is not a power of two from 8 to 4096.\n"
     "    SafetensorError: \"Error while serializing: ...\" (data length that does\n"
     "        not match shape and dtype, header too large, ...).\n"
     "\n"
     "Example:\n"
     "    >>> import numpy as np\n"
     "    >>> from safetensors import TensorSpec, serialize\n"
     "    >>> a = np.arange(4, dtype=np.float32)\n"
     "    >>> spec = TensorSpec(dtype=\"float32\", shape=[4], data_ptr=a.ctypes.data, data_len=a.nbytes)\n"
     "    >>> serialize({\"a\": spec})[:8]\n"
     "    b'@\\x00\\x00\\x00\\x00\\x00\\x00\\x00'"},
    {"serialize_file", (PyCFunction)(void (*)(void))stpy_serialize_file,
     METH_VARARGS | METH_KEYWORDS,
     "serialize_file(tensor_dict, filename, metadata=None, *, alignment=None)\n"
     "--\n"
     "\n"
     "Writes a safetensors file atomically: a temporary file next to filename,\n"
     "then a rename over it, so readers see the old or the new file, never a\n"
     "partial one. Only a regular file (or nothing) at filename is replaced.\n"
     "\n"
     "Args:\n"
     "    tensor_dict (dict[str, TensorSpec]): as for serialize.\n"
     "    filename (str | os.PathLike): the destination.\n"
     "    metadata (dict[str, str] | None): the header's \"__metadata__\".\n"
     "    alignment (int | None): as for serialize.\n"
     "\n"
     "Returns:\n"
     "    None\n"
     "\n"
     "Raises:\n"
     "    TypeError, ValueError: as for serialize.\n"
     "    SafetensorError: bad input, as for serialize; SafetensorIOError (also an\n"
     "        OSError, with errno and filename) for I/O errors, e.g.\n"
     "        'Error while serializing: I/O error: No such file or directory\n"
     "        (os error 2) at path \"missing/x.safetensors\"', or a destination\n"
     "        that is a device, FIFO or socket.\n"
     "\n"
     "Example:\n"
     "    >>> serialize_file({\"a\": spec}, \"model.safetensors\", metadata={\"format\": \"np\"})"},
    {"deserialize", (PyCFunction)stpy_deserialize, METH_O,
     "deserialize(bytes)\n"
     "--\n"
     "\n"
     "Parses a whole safetensors file held in memory.\n"
     "\n"
     "Args:\n"
     "    bytes (bytes-like): the file's content (bytes, bytearray, memoryview).\n"
     "\n"
     "Returns:\n"
     "    list[tuple[str, dict]]: in file order, (name, {\"shape\": list[int],\n"
     "    \"dtype\": header dtype such as \"F32\", \"data\": bytearray copy}).\n"
     "\n"
     "Raises:\n"
     "    SafetensorError: \"Error while deserializing: ...\" with upstream's\n"
     "        message (and what the bytes look like when they are clearly another\n"
     "        format, e.g. a zip archive written by torch.save).\n"
     "\n"
     "Example:\n"
     "    >>> deserialize(serialize({\"a\": spec}))[0][1][\"shape\"]\n"
     "    [4]"},
    {"_deserialize_tensors", (PyCFunction)stpy_deserialize_tensors, METH_VARARGS,
     "_deserialize_tensors(bytes, framework)\n--\n\n"
     "Like deserialize, as {name: tensor} of the framework (copies), in file order."},
    {"_dtype_table", (PyCFunction)stpy_dtype_table, METH_NOARGS,
     "_dtype_table()\n--\n\n"
     "The core's dtype table, in upstream's enum order: (header name, bits, type name or None, "
     "'numpy' / 'ml_dtypes' / None, values per framework item)."},
    {"_write_layout", stpy_write_layout_only, METH_VARARGS, NULL},
    {"_storage_kind", stpy_storage_kind, METH_O,
     "_storage_kind(path_or_fd)\n--\n\n"
     "The network, cluster or FUSE file system holding a path or descriptor (\"nfs\",\n"
     "\"fuse\", ...), which backend=None reads with pread; None for a local one."},
    {"_fs_name", stpy_fs_name, METH_O,
     "_fs_name(f_type)\n--\n\n"
     "The name of a network, cluster or FUSE file system by its statfs f_type; None else."},
    {"_prefers_pread", stpy_prefers_pread, METH_VARARGS,
     "_prefers_pread(resident, nbytes, memory=<this machine's>)\n--\n\n"
     "Whether a whole-file load of nbytes of an automatically mapped file, the fraction\n"
     "resident of them in the page cache, reads with pread instead of the mapping."},
    {NULL, NULL, 0, NULL},
};

static int add_type(PyObject *module, PyType_Spec *spec, PyObject *base, PyTypeObject **slot)
{
    PyObject *type = PyType_FromModuleAndSpec(module, spec, base);
    if (type == NULL)
        return -1;
    *slot = (PyTypeObject *)type;
    return PyModule_AddObjectRef(module, strrchr(spec->name, '.') + 1, type);
}

/*
 * Our OSError subclasses keep the message as str() even with errno,
 * strerror and filename set (OSError's __str__ would rewrite it as
 * "[Errno 2] ...: 'x'"), and pickle with those attributes (OSError's
 * __reduce__ rebuilds from errno/strerror and loses the message).
 */
static PyObject *error_reduce(PyObject *unused, PyObject *self)
{
    static const char *const attributes[] = {"errno", "strerror", "filename"};
    PyObject *dict = PyObject_GetAttrString(self, "__dict__");
    PyObject *state = dict ? PyDict_Copy(dict) : NULL, *args = NULL, *result = NULL;
    if (state == NULL)
        goto exit;
    for (size_t i = 0; i < sizeof(attributes) / sizeof(attributes[0]); i++) {
        PyObject *value = PyObject_GetAttrString(self, attributes[i]);
        int rc = value ? PyDict_SetItemString(state, attributes[i], value) : -1;
        Py_XDECREF(value);
        if (rc < 0)
            goto exit;
    }
    args = PyObject_GetAttrString(self, "args");
    if (args != NULL)
        result = PyTuple_Pack(3, (PyObject *)Py_TYPE(self), args, state);
exit:
    Py_XDECREF(dict);
    Py_XDECREF(state);
    Py_XDECREF(args);
    return result;
}

static PyMethodDef error_reduce_def = {"__reduce__", error_reduce, METH_O, NULL};

static const char *const open_error_names[OPEN_ERROR__COUNT] = {
    "FileNotFoundError", "PermissionError", "IsADirectoryError", "NotADirectoryError", "OSError",
};
static PyObject **const open_error_bases[OPEN_ERROR__COUNT] = {
    &PyExc_FileNotFoundError,  &PyExc_PermissionError, &PyExc_IsADirectoryError,
    &PyExc_NotADirectoryError, &PyExc_OSError,
};

/* An exception type named in upstream's module (so pickles and tracebacks
 * match) with BaseException's __str__ and error_reduce (see above). */
static PyObject *make_error_type(const char *name, PyObject *bases, const char *doc)
{
    PyObject *dict = PyDict_New(),
             *base_str = PyObject_GetAttrString(PyExc_BaseException, "__str__");
    PyObject *reduce = PyCFunction_New(&error_reduce_def, NULL), *method = NULL, *type = NULL;
    char qualified[128];
    if (dict == NULL || base_str == NULL || reduce == NULL)
        goto exit;
    method = PyInstanceMethod_New(reduce); /* binds self, as a method */
    if (method == NULL || PyDict_SetItemString(dict, "__str__", base_str) < 0 ||
        PyDict_SetItemString(dict, "__reduce__", method) < 0)
        goto exit;
    snprintf(qualified, sizeof(qualified), "safetensors._safetensors_rust.%s", name);
    type = PyErr_NewExceptionWithDoc(qualified, doc, bases, dict);
exit:
    Py_XDECREF(dict);
    Py_XDECREF(base_str);
    Py_XDECREF(reduce);
    Py_XDECREF(method);
    return type;
}

static int stpy_module_exec(PyObject *module)
{
    stpy_state *state = stpy_state_from_module(module);
    PyObject *bases = NULL;
    int rc = -1;

    /* Named after upstream's module so pickles and tracebacks match. */
    state->SafetensorError =
        PyErr_NewExceptionWithDoc("safetensors._safetensors_rust.SafetensorError",
                                  "Error raised by safetensors", PyExc_Exception, NULL);
    if (state->SafetensorError == NULL)
        goto exit;
    bases = PyTuple_Pack(2, state->SafetensorError, PyExc_IndexError);
    if (bases == NULL)
        goto exit;
    state->SafetensorIndexError = PyErr_NewExceptionWithDoc(
        "safetensors._safetensors_rust.SafetensorIndexError",
        "An index out of range for a tensor (both SafetensorError and IndexError)", bases, NULL);
    if (state->SafetensorIndexError == NULL)
        goto exit;
    Py_SETREF(bases, PyTuple_Pack(2, state->SafetensorError, PyExc_OSError));
    if (bases == NULL)
        goto exit;
    state->SafetensorIOError = make_error_type(
        "SafetensorIOError", bases,
        "An I/O error while reading or writing a file (both SafetensorError and OSError)");
    if (state->SafetensorIOError == NULL)
        goto exit;
    for (int i = 0; i < OPEN_ERROR__COUNT; i++) {
        state->open_errors[i] =
            make_error_type(open_error_names[i], *open_error_bases[i],
                            "An error opening a file (upstream's message as str())");
        if (state->open_errors[i] == NULL ||
            PyModule_AddObjectRef(module, open_error_names[i], state->open_errors[i]) < 0)
            goto exit;
    }
    if (PyModule_AddObjectRef(module, "SafetensorIOError", state->SafetensorIOError) < 0 ||
        PyModule_AddObjectRef(module, "SafetensorError", state->SafetensorError) < 0 ||
        PyModule_AddObjectRef(module, "SafetensorIndexError", state->SafetensorIndexError) < 0)
        goto exit;

    if (add_type(module, &stpy_safe_open_spec, NULL, &state->SafeOpenType) < 0 ||
        add_type(module, &stpy_slice_spec, NULL, &state->SliceType) < 0 ||
        add_type(module, &stpy_mapped_bytes_spec, NULL, &state->MappedBytesType) < 0 ||
        add_type(module, &stpy_tensor_spec_spec, NULL, &state->TensorSpecType) < 0 ||
        add_type(module, &stpy_stream_writer_spec, NULL, &state->StreamWriterType) < 0)
        goto exit;

#define INTERN(field, text)                                                                        \
    if ((state->field = PyUnicode_InternFromString(text)) == NULL)                                 \
        goto exit;
    INTERN(str_dtype, "dtype");
    INTERN(str_view, "view");
    INTERN(str_to, "to");
    INTERN(str_as_strided, "as_strided");
    INTERN(str_flip, "flip");
    INTERN(str_data_ptr, "data_ptr");
#undef INTERN

    if (PyModule_AddStringConstant(module, "__version__", ST_VERSION) < 0 ||
        PyModule_AddIntConstant(module, "_MAX_ALIGNMENT", ST_MAX_ALIGNMENT) < 0)
        goto exit;
    rc = 0;
exit:
    Py_XDECREF(bases);
    return rc;
}

/* The state's object references are its fields before `ready` (module.h). */
static int stpy_module_traverse(PyObject *module, visitproc visit, void *arg)
{
    stpy_state *state = stpy_state_from_module(module);
    for (PyObject **p = (PyObject **)state; p < (PyObject **)state->ready; p++)
        Py_VISIT(*p);
    return 0;
}

static int stpy_module_clear(PyObject *module)
{
    stpy_state *state = stpy_state_from_module(module);
    for (PyObject **p = (PyObject **)state; p < (PyObject **)state->ready; p++)
        Py_CLEAR(*p);
    return 0;
}

static void stpy_module_free(void *module)
{
    stpy_module_clear((PyObject *)module);
}

static PyModuleDef_Slot stpy_module_slots[] = {
    {Py_mod_exec, stpy_module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef stpy_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "safetensors._safetensors_c",
    .m_doc = "C implementation of the safetensors format.",
    .m_size = sizeof(stpy_state),
    .m_methods = stpy_module_methods,
    .m_slots = stpy_module_slots,
    .m_traverse = stpy_module_traverse,
    .m_clear = stpy_module_clear,
    .m_free = stpy_module_free,
};

PyMODINIT_FUNC PyInit__safetensors_c(void)
{
    return PyModuleDef_Init(&stpy_module_def);
}
