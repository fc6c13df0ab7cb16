/*
 * module.c - the safetensors._safetensors_c module: state, exception types,
 * and st_raise, the single place where core errors become Python exceptions.
 *
 * Multi-phase init; every type is a heap type created from the module, and
 * all per-module objects live in st_state (no C globals), so the module works
 * in sub-interpreters and declares itself free-threading safe.
 */
#include "module.h"

#include <string.h>

static struct PyModuleDef st_module_def;

st_state *st_state_from_module(PyObject *module)
{
    return (st_state *)PyModule_GetState(module);
}

st_state *st_state_from_type(PyTypeObject *type)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *module = PyType_GetModuleByDef(type, &st_module_def);
#else
    PyObject *module = PyType_GetModule(type);   /* our types are final */
#endif
    return module ? st_state_from_module(module) : NULL;
}

/* ======================================================================
 * MARK: errors
 * ====================================================================== */

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

PyObject *st_raise(st_state *state, const st_error *err, const char *prefix, PyObject *filename)
{
    PyObject *message = NULL, *exc = NULL, *type;

    if (err->code == ST_ERR_NOMEM)
        return PyErr_NoMemory();
    if (err->code == ST_ERR_IO && err->sys_errno != 0 && prefix == NULL) {
        /* Opening: FileNotFoundError, PermissionError, IsADirectoryError, ... */
        errno = err->sys_errno;
        if (filename != NULL)
            return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, filename);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (err->code == ST_ERR_INVALID_SLICE)
        type = state->SafetensorIndexError;
    else if (err->code == ST_ERR_IO)
        type = state->SafetensorIOError;
    else
        type = state->SafetensorError;
    message = PyUnicode_FromFormat("%s%s", prefix ? prefix : "", err->msg);
    if (message == NULL)
        goto exit;
    exc = make_exception(type, message, err);
    if (exc == NULL)
        goto exit;
    if (err->code == ST_ERR_IO && err->sys_errno != 0) {
        /* Upstream's message, and the OSError attributes for code that reads them. */
        PyObject *number = PyLong_FromLong(err->sys_errno);
        PyObject *text = PyUnicode_DecodeLocale(strerror(err->sys_errno), "surrogateescape");
        int rc = number && text ? PyObject_SetAttrString(exc, "errno", number) : -1;
        if (rc == 0)
            rc = PyObject_SetAttrString(exc, "strerror", text);
        if (rc == 0 && filename != NULL)
            rc = PyObject_SetAttrString(exc, "filename", filename);
        Py_XDECREF(number);
        Py_XDECREF(text);
        if (rc < 0)
            goto exit;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
exit:
    Py_XDECREF(message);
    Py_XDECREF(exc);
    return NULL;
}

PyObject *st_debug_quote(PyObject *text)
{
    /* Rust's {:?} of a str, as upstream's messages show names: "a\"b". */
    PyObject *escaped = NULL, *result = NULL;
    PyObject *repr = PyObject_Repr(text);   /* Python escaping of controls */
    Py_ssize_t len;
    if (repr == NULL)
        return NULL;
    len = PyUnicode_GET_LENGTH(repr);
    if (PyUnicode_READ_CHAR(repr, 0) == '"') {
        result = repr;   /* repr chose double quotes: already escaped as Rust does */
        return result;
    }
    /* repr used single quotes: strip them, unescape \', escape " */
    escaped = PyUnicode_Substring(repr, 1, len - 1);
    Py_DECREF(repr);
    if (escaped == NULL)
        return NULL;
    Py_SETREF(escaped, PyObject_CallMethod(escaped, "replace", "ss", "\\'", "'"));
    if (escaped != NULL)
        Py_SETREF(escaped, PyObject_CallMethod(escaped, "replace", "ss", "\"", "\\\""));
    if (escaped != NULL)
        Py_SETREF(escaped, PyObject_CallMethod(escaped, "replace", "ss", "\\x00", "\\0"));
    if (escaped != NULL)
        result = PyUnicode_FromFormat("\"%U\"", escaped);
    Py_XDECREF(escaped);
    return result;
}

/* ======================================================================
 * MARK: module
 * ====================================================================== */

static PyMethodDef st_module_methods[] = {
    {"_safe_open_handle", (PyCFunction)(void (*)(void))st_safe_open_handle,
     METH_VARARGS | METH_KEYWORDS,
     "_safe_open_handle(f, framework, device='cpu', *, backend='mmap')\n--\n\n"
     "Opens the file behind an open file object f (its .name)."},
    {"serialize", (PyCFunction)(void (*)(void))st_serialize, METH_VARARGS | METH_KEYWORDS,
     "serialize(tensor_dict, metadata=None)\n--\n\nReturns the safetensors file as bytes."},
    {"serialize_file", (PyCFunction)(void (*)(void))st_serialize_file,
     METH_VARARGS | METH_KEYWORDS,
     "serialize_file(tensor_dict, filename, metadata=None)\n--\n\n"
     "Writes a safetensors file atomically (temporary file + rename)."},
    {"deserialize", (PyCFunction)st_deserialize, METH_O,
     "deserialize(bytes)\n--\n\n"
     "Parses a whole file held in bytes; returns [(name, {shape, dtype, data})]."},
    {"_header_length", st_header_length_from_bytes, METH_VARARGS, NULL},
    {"_parse_header", st_parse_header_from_bytes, METH_VARARGS, NULL},
    {"_write_layout", st_write_layout_only, METH_VARARGS, NULL},
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

static int st_module_exec(PyObject *module)
{
    st_state *state = st_state_from_module(module);
    PyObject *bases = NULL, *io_dict = NULL, *base_str = NULL;
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
    /* BaseException's __str__: the message stays upstream's text even with
     * errno, strerror and filename set (OSError's would reformat it). */
    io_dict = PyDict_New();
    base_str = PyObject_GetAttrString(PyExc_BaseException, "__str__");
    if (io_dict == NULL || base_str == NULL || PyDict_SetItemString(io_dict, "__str__", base_str) < 0)
        goto exit;
    state->SafetensorIOError = PyErr_NewExceptionWithDoc(
        "safetensors._safetensors_rust.SafetensorIOError",
        "An I/O error while reading or writing a file (both SafetensorError and OSError)", bases,
        io_dict);
    if (state->SafetensorIOError == NULL)
        goto exit;
    if (PyModule_AddObjectRef(module, "SafetensorIOError", state->SafetensorIOError) < 0 ||
        PyModule_AddObjectRef(module, "SafetensorError", state->SafetensorError) < 0 ||
        PyModule_AddObjectRef(module, "SafetensorIndexError", state->SafetensorIndexError) < 0)
        goto exit;

    if (add_type(module, &st_safe_open_spec, NULL, &state->SafeOpenType) < 0 ||
        add_type(module, &st_slice_spec, NULL, &state->SliceType) < 0 ||
        add_type(module, &st_mapped_bytes_spec, NULL, &state->MappedBytesType) < 0 ||
        add_type(module, &st_tensor_spec_spec, NULL, &state->TensorSpecType) < 0)
        goto exit;

#define INTERN(field, text)                                  \
    if ((state->field = PyUnicode_InternFromString(text)) == NULL) \
        goto exit;
    INTERN(str_dtype, "dtype");
    INTERN(str_view, "view");
    INTERN(str_to, "to");
    INTERN(str_as_strided, "as_strided");
    INTERN(str_flip, "flip");
    INTERN(str_data_ptr, "data_ptr");
    INTERN(str_shape, "shape");
    INTERN(str_data, "data");
#undef INTERN

    if (PyModule_AddStringConstant(module, "__version__", ST_VERSION) < 0)
        goto exit;
    rc = 0;
exit:
    Py_XDECREF(bases);
    Py_XDECREF(io_dict);
    Py_XDECREF(base_str);
    return rc;
}

static int st_module_traverse(PyObject *module, visitproc visit, void *arg)
{
    st_state *state = st_state_from_module(module);
    Py_VISIT(state->SafetensorError);
    Py_VISIT(state->SafetensorIndexError);
    Py_VISIT(state->SafetensorIOError);
    Py_VISIT(state->SafeOpenType);
    Py_VISIT(state->SliceType);
    Py_VISIT(state->MappedBytesType);
    Py_VISIT(state->TensorSpecType);
    Py_VISIT(state->torch);
    for (int i = 0; i < ST_DTYPE__COUNT; i++) {
        Py_VISIT(state->torch_dtypes[i]);
        Py_VISIT(state->np_descrs[i]);
    }
    Py_VISIT(state->torch_frombuffer);
    Py_VISIT(state->torch_empty);
    for (int i = 0; i <= FW_PADDLE; i++)
        Py_VISIT(state->converters[i]);
    return 0;
}

static int st_module_clear(PyObject *module)
{
    st_state *state = st_state_from_module(module);
    Py_CLEAR(state->SafetensorError);
    Py_CLEAR(state->SafetensorIndexError);
    Py_CLEAR(state->SafetensorIOError);
    Py_CLEAR(state->SafeOpenType);
    Py_CLEAR(state->SliceType);
    Py_CLEAR(state->MappedBytesType);
    Py_CLEAR(state->TensorSpecType);
    Py_CLEAR(state->torch);
    for (int i = 0; i < ST_DTYPE__COUNT; i++) {
        Py_CLEAR(state->torch_dtypes[i]);
        Py_CLEAR(state->np_descrs[i]);
    }
    Py_CLEAR(state->torch_frombuffer);
    Py_CLEAR(state->torch_empty);
    for (int i = 0; i <= FW_PADDLE; i++)
        Py_CLEAR(state->converters[i]);
    Py_CLEAR(state->str_dtype);
    Py_CLEAR(state->str_view);
    Py_CLEAR(state->str_to);
    Py_CLEAR(state->str_as_strided);
    Py_CLEAR(state->str_flip);
    Py_CLEAR(state->str_data_ptr);
    Py_CLEAR(state->str_shape);
    Py_CLEAR(state->str_data);
    return 0;
}

static void st_module_free(void *module)
{
    st_module_clear((PyObject *)module);
}

static PyModuleDef_Slot st_module_slots[] = {
    {Py_mod_exec, st_module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef st_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "safetensors._safetensors_c",
    .m_doc = "C implementation of the safetensors format.",
    .m_size = sizeof(st_state),
    .m_methods = st_module_methods,
    .m_slots = st_module_slots,
    .m_traverse = st_module_traverse,
    .m_clear = st_module_clear,
    .m_free = st_module_free,
};

PyMODINIT_FUNC PyInit__safetensors_c(void)
{
    return PyModuleDef_Init(&st_module_def);
}
