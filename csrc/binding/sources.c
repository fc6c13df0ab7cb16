/*
 * sources.c - safe_open on a URL or an fsspec file object: the bytes come
 * from a Python byte source (st_source), the file is the core's like any
 * other, so every framework, device and slicing rule is the path's.
 *
 * The source is what the package registered with _set_source_opener
 * (safetensors.remote.open_source; the contract: docs/design.md). read_many
 * returns only when no read into a destination runs any more (what keeps the
 * destinations safe); the memoryviews are released after it as a second
 * line. An exception it raises stays set (ST_ERR_EXTERNAL, which stpy_raise
 * passes through).
 */
#include "module.h"

#include <ctype.h>
#include <string.h>

static st_code source_read_many(void *ctx, const st_read_request *requests, size_t count,
                                st_error *err)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *list = PyList_New((Py_ssize_t)count), *result = NULL;
    st_code code = ST_OK;
    size_t made = 0;
    for (; list != NULL && made < count; made++) {
        const st_read_request *r = &requests[made];
        PyObject *view = PyMemoryView_FromMemory(r->dst, (Py_ssize_t)r->len, PyBUF_WRITE);
        PyObject *item = view ? Py_BuildValue("(KN)", (unsigned long long)r->offset, view) : NULL;
        if (item == NULL)
            break;
        PyList_SET_ITEM(list, (Py_ssize_t)made, item);
    }
    if (list != NULL && made == count)
        result = PyObject_CallMethod((PyObject *)ctx, "read_many", "O", list);
    PyObject *type, *value, *traceback; /* the source's exception, kept over the releases */
    PyErr_Fetch(&type, &value, &traceback);
    for (size_t i = 0; list != NULL && i < made; i++) {
        PyObject *view = PyTuple_GET_ITEM(PyList_GET_ITEM(list, (Py_ssize_t)i), 1);
        PyObject *released = PyObject_CallMethod(view, "release", NULL);
        if (released == NULL && type == NULL) /* still exported: the source kept a buffer */
            PyErr_Fetch(&type, &value, &traceback);
        PyErr_Clear();
        Py_XDECREF(released);
    }
    PyErr_Restore(type, value, traceback);
    if (type != NULL)
        Py_CLEAR(result);
    if (result == NULL)
        code = st_error_set(err, ST_ERR_EXTERNAL, 0, "%s", "read_many raised");
    Py_XDECREF(result);
    Py_XDECREF(list);
    PyGILState_Release(gil);
    return code;
}

static void source_release(void *ctx)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_DECREF((PyObject *)ctx);
    PyGILState_Release(gil);
}

/* A header error on a source whose first bytes are a well-known other format
 * says so, as for a local file (foreign_files.c); nothing when they cannot
 * be read. */
static void note_foreign_source(const st_source *source, st_error *err)
{
    uint8_t head[64];
    st_error ignored;
    st_read_request request = {.offset = 0,
                               .dst = head,
                               .len =
                                   source->size < sizeof head ? (size_t)source->size : sizeof head};
    if (request.len > 0 && source->read_many(source->ctx, &request, 1, &ignored) == ST_OK)
        stpy_note_foreign_format(err, head, request.len);
    PyErr_Clear();
}

int stpy_remote_target(PyObject *filename, PyObject **path)
{
    const char *text, *sep;
    bool scheme = true, alnum = false;
    *path = NULL;
    if (!PyUnicode_Check(filename)) {
        /* An fsspec file object (not an os.PathLike): .fs and .path. */
        int fs = PyObject_HasAttrString(filename, "fs") &&
                 PyObject_HasAttrString(filename, "path") &&
                 !PyObject_HasAttrString(filename, "__fspath__");
        *path = fs ? NULL : Py_NewRef(filename);
        return fs;
    }
    text = PyUnicode_AsUTF8(filename);
    if (text == NULL) /* lone surrogates: a path, never a URL */
        PyErr_Clear();
    sep = text != NULL ? strstr(text, "://") : NULL;
    for (const char *p = text; sep != NULL && p < sep && scheme; p++) {
        alnum |= isalnum((unsigned char)*p) != 0;
        scheme = isalnum((unsigned char)*p) || *p == '+' || *p == '-';
    }
    if (sep == NULL || !scheme || !alnum) {
        *path = Py_NewRef(filename);
        return 0;
    }
    if (sep - text != 4 || strncmp(text, "file", 4) != 0)
        return 1;
    /* file:// is a path */
    *path = PyUnicode_Substring(filename, 7, PY_SSIZE_T_MAX);
    return *path == NULL ? -1 : 0;
}

int stpy_open_source(stpy_state *state, PyObject *target, PyObject *options, st_file **file,
                     PyObject **source_out)
{
    PyObject *args = NULL, *source = NULL, *size_obj = NULL;
    unsigned long long size;
    st_error err;
    st_code code;
    int rc = -1;
    *file = NULL;
    *source_out = NULL;
    if (state->source_opener == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "no byte source opener is registered (import safetensors, not "
                        "safetensors._safetensors_c, to open URLs)");
        goto exit;
    }
    if ((args = PyTuple_Pack(1, target)) == NULL ||
        (source = PyObject_Call(state->source_opener, args, options)) == NULL ||
        (size_obj = PyObject_GetAttrString(source, "size")) == NULL)
        goto exit;
    size = PyLong_AsUnsignedLongLong(size_obj);
    if (size == (unsigned long long)-1 && PyErr_Occurred())
        goto exit;
    st_source byte_source = {
        .ctx = source, .size = size, .read_many = source_read_many, .release = source_release};
    Py_BEGIN_ALLOW_THREADS
        code = st_file_open_source(&byte_source, file, &err);
    Py_END_ALLOW_THREADS
    if (code != ST_OK && code != ST_ERR_IO && code != ST_ERR_EXTERNAL)
        note_foreign_source(&byte_source, &err);
    if (code != ST_OK) {
        stpy_raise(state, &err,
                   code == ST_ERR_IO || code == ST_ERR_EXTERNAL ? STPY_CTX_NONE
                                                                : STPY_CTX_DESERIALIZE_HEADER,
                   NULL);
        goto exit;
    }
    Py_INCREF(source); /* the file's reference, given back by source_release */
    *source_out = Py_NewRef(source);
    rc = 0;
exit:
    Py_XDECREF(args);
    Py_XDECREF(source);
    Py_XDECREF(size_obj);
    return rc;
}
