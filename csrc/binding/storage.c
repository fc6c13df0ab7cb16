/*
 * storage.c - the private module functions over the core's storage rules (st_storage.c), for
 * tests and tools: which network or FUSE file system holds a path or descriptor, the f_type
 * table, and the rule that sends a whole-file load of a mostly uncached file through pread.
 */
#include "module.h"

#include <sys/vfs.h>
#include <unistd.h>

static PyObject *name_or_none(const char *name)
{
    return name != NULL ? PyUnicode_FromString(name) : Py_NewRef(Py_None);
}

PyObject *stpy_storage_kind(PyObject *module, PyObject *target)
{
    PyObject *path = NULL, *path_bytes = NULL, *result = NULL;
    struct statfs fs;
    int rc;
    if (PyLong_Check(target)) {
        int fd;
        if (!PyArg_Parse(target, "i", &fd))
            return NULL;
        Py_BEGIN_ALLOW_THREADS
            rc = fstatfs(fd, &fs);
        Py_END_ALLOW_THREADS
        if (rc != 0)
            return PyErr_SetFromErrno(PyExc_OSError);
        return name_or_none(st_fs_remote_name((uint64_t)fs.f_type));
    }
    if ((path = PyOS_FSPath(target)) == NULL || !PyUnicode_FSConverter(path, &path_bytes))
        goto exit;
    Py_BEGIN_ALLOW_THREADS
        rc = statfs(PyBytes_AS_STRING(path_bytes), &fs);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    else
        result = name_or_none(st_fs_remote_name((uint64_t)fs.f_type));
exit:
    Py_XDECREF(path);
    Py_XDECREF(path_bytes);
    return result;
}

PyObject *stpy_fs_name(PyObject *module, PyObject *f_type)
{
    unsigned long long value = PyLong_AsUnsignedLongLongMask(f_type);
    if (value == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    return name_or_none(st_fs_remote_name(value));
}

uint64_t stpy_physical_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : UINT64_MAX;
}

PyObject *stpy_prefers_pread(PyObject *module, PyObject *args)
{
    double resident;
    unsigned long long nbytes, memory = stpy_physical_memory();
    if (!PyArg_ParseTuple(args, "dK|K:_prefers_pread", &resident, &nbytes, &memory))
        return NULL;
    return PyBool_FromLong(st_read_all_prefers_pread(resident, nbytes, memory));
}
