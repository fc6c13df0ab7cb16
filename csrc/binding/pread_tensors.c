/*
 * pread_tensors.c - tensors of a file read at once into memory of their own:
 * every tensor on the pread backend (get_tensors, and so load_file(...,
 * backend="pread")), or the named ones (_read_tensors: prefetch).
 *
 * Two steps: first every destination is allocated (a block shared by small
 * neighbours, or an array of its own for a tensor of STPY_BLOCK_MAX bytes or
 * more), then one st_file_read_many fills them all with the GIL released
 * (several reads in flight). Only when every read succeeded are tensors made
 * from the destinations: an I/O error (a file that shrank, EIO) raises and
 * hands out nothing. Small tensors are disjoint views of their block.
 */
#include "tensors.h"

/* Header position of the k-th tensor read: which[k], or k when all are. */
static size_t position(const size_t *which, size_t k)
{
    return which != NULL ? which[k] : k;
}

/* The end of the block that starts at the k-th tensor read and holds it and
 * the small ones read after it, at most STPY_BLOCK_MAX bytes in all
 * (data-section offsets; tensors are in offset order). */
static uint64_t block_end(const st_header *header, const size_t *which, size_t n, size_t k)
{
    const st_tensor *first = st_header_tensor(header, position(which, k));
    uint64_t begin = first->begin, end = first->end;
    for (size_t j = k + 1; j < n; j++) {
        const st_tensor *next = st_header_tensor(header, position(which, j));
        if (next->end < end || next->end - begin > STPY_BLOCK_MAX)
            break;
        end = next->end;
    }
    return end;
}

/* Where tensor i's bytes go: target (owned) is its own array or the block
 * it shares, whose first byte is data-section offset target_begin. */
typedef struct {
    PyObject *target;
    uint8_t *data;
    uint64_t target_begin;
    bool in_block;
} destination;

int stpy_read_tensors(stpy_state *state, stpy_framework fw, st_file *file, const size_t *which,
                      size_t count, PyObject **tensors, PyObject *verifier)
{
    const st_header *header = st_file_header(file);
    const uint64_t data_start = st_header_data_start(header);
    size_t nrequests = 0, made = 0;
    destination *dests = PyMem_Calloc(count ? count : 1, sizeof *dests);
    st_read_request *requests = PyMem_Calloc(count ? count : 1, sizeof *requests);
    stpy_span *spans = verifier ? PyMem_Calloc(count ? count : 1, sizeof *spans) : NULL;
    PyObject *block = NULL; /* borrowed from dests[] */
    uint8_t *block_data = NULL;
    uint64_t block_begin = 0, block_stop = 0;
    st_error err;
    st_code code;
    int rc = -1;

    if (dests == NULL || requests == NULL || (verifier != NULL && spans == NULL)) {
        PyErr_NoMemory();
        goto exit;
    }
    for (size_t i = 0; i < count; i++) {
        const st_tensor *t = st_header_tensor(header, position(which, i));
        uint64_t len = stpy_tensor_data_len(t);
        bool outside_block = block == NULL || t->begin < block_begin || t->end > block_stop;
        if (len < STPY_BLOCK_MAX && outside_block) {
            uint64_t end = block_end(header, which, count, i);
            block = NULL;
            if (end > t->begin) {
                block = stpy_new_block(state, fw, end - t->begin, &block_data);
                if (block == NULL)
                    goto exit;
                dests[i].target = block; /* the first tensor's reference */
                block_begin = t->begin;
                block_stop = end;
                requests[nrequests++] = (st_read_request){.offset = data_start + t->begin,
                                                          .dst = block_data,
                                                          .len = (size_t)(end - t->begin)};
            }
        }
        if (block != NULL && t->begin >= block_begin && t->end <= block_stop) {
            if (dests[i].target == NULL)
                dests[i].target = Py_NewRef(block);
            dests[i].data = block_data;
            dests[i].target_begin = block_begin;
            dests[i].in_block = true;
            if (spans != NULL)
                spans[i] = (stpy_span){t, nrequests - 1, (size_t)(t->begin - block_begin)};
            continue;
        }
        dests[i].target = stpy_new_array(state, fw, t, &dests[i].data);
        if (dests[i].target == NULL)
            goto exit;
        dests[i].target_begin = t->begin;
        if (spans != NULL)
            spans[i] = (stpy_span){t, len > 0 ? nrequests : SIZE_MAX, 0};
        if (len > 0)
            requests[nrequests++] = (st_read_request){
                .offset = data_start + t->begin, .dst = dests[i].data, .len = (size_t)len};
    }

    if (verifier != NULL) { /* hashed as read, and checked */
        if (stpy_read_verified(state, file, true, requests, nrequests, verifier, spans, count) < 0)
            goto exit;
    } else {
        Py_BEGIN_ALLOW_THREADS
            code = st_file_pread_many(file, requests, nrequests, &err);
        Py_END_ALLOW_THREADS
        if (code != ST_OK) {
            stpy_raise(state, &err, STPY_CTX_READ_TENSOR, NULL);
            goto exit;
        }
    }

    for (made = 0; made < count; made++) {
        const st_tensor *t = st_header_tensor(header, position(which, made));
        destination *d = &dests[made];
        tensors[made] = d->in_block ? stpy_tensor_in_block(state, fw, file, d->target, d->data,
                                                           d->target_begin, t, verifier)
                                    : stpy_convert_from_numpy(state, fw, Py_NewRef(d->target));
        if (tensors[made] == NULL)
            goto exit;
    }
    rc = 0;
exit:
    if (rc < 0) {
        for (size_t i = 0; i < made; i++)
            Py_CLEAR(tensors[i]);
    }
    for (size_t i = 0; dests != NULL && i < count; i++)
        Py_XDECREF(dests[i].target);
    PyMem_Free(dests);
    PyMem_Free(requests);
    PyMem_Free(spans);
    return rc;
}
