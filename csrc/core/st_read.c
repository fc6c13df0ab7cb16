/*
 * st_read.c - st_file_read(_many): a memcpy from the mapping (mmap backend), a
 * pread loop on a descriptor borrowed from the cache for the call (pread
 * backend), or the requests handed to the byte source.
 */
#define _GNU_SOURCE
#define _DEFAULT_SOURCE

#include "st_file_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Largest single pread request: keeps every request well within ssize_t and
 * what Linux transfers in one call (0x7ffff000). */
#define ST_PREAD_CHUNK ((size_t)1 << 30)

st_code st_read_exact(int fd, uint64_t offset, void *dst, size_t len, st_error *err)
{
    uint8_t *p = dst;
    while (len > 0) {
        size_t want = len < ST_PREAD_CHUNK ? len : ST_PREAD_CHUNK;
        if (offset > (uint64_t)INT64_MAX)
            return st_error_io(err, EOVERFLOW, offset);
        ssize_t got = pread(fd, p, want, (off_t)offset);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return st_error_io(err, errno, offset);
        if (got == 0) {
            st_error_set(err, ST_ERR_IO, offset,
                         "unexpected end of file at byte %llu: the file shrank after it was opened",
                         (unsigned long long)offset);
            if (err)
                err->sys_errno = EIO;
            return ST_ERR_IO;
        }
        p += got;
        len -= (size_t)got;
        offset += (uint64_t)got;
    }
    return ST_OK;
}

/*
 * Reads go through a queue of pieces that up to ST_READ_THREADS threads of the call (the caller
 * among them) take in file order, each thread reading its piece in ST_READ_CHUNK preads: warm,
 * several cores copy from the page cache; cold, several reads are in flight, as a disk needs (one
 * large pread keeps only the readahead window in flight). A piece is a contiguous run of
 * ST_READ_PIECE_MIN to ST_READ_PIECE_MAX bytes, about a quarter of one thread's share, so that
 * the kernel's readahead follows each thread. Cold, the 2 GB checkpoint of bench/checkpoint.py
 * loaded in 1.0-1.1 s against 1.4-2.0 s with 1 MiB pieces dealt round the threads, and
 * prefetch's reads of single 23 MB tensors took 1.10 s in all with the 4 MiB floor against 1.22 s
 * without (medians of 6 fresh processes). Below ST_PARALLEL_MIN bytes a thread costs more than it
 * saves. With a consumer (st_file_read_consumed) the queue hands out whole requests instead: one
 * thread reads a request chunk by chunk and consumes each chunk right after reading it, in order.
 */
#define ST_READ_CHUNK     ((size_t)1 << 20)
#define ST_READ_PIECE_MIN ((size_t)4 << 20)
#define ST_READ_PIECE_MAX ((size_t)16 << 20)
#define ST_PARALLEL_MIN   ((size_t)4 << 20)
#define ST_READ_THREADS   8
#define ST_POPULATE_MIN   ((size_t)64 << 10)
#define ST_READ_STACK     ((size_t)256 << 10)

/*
 * MADV_POPULATE_WRITE (Linux 5.14; EINVAL before) on each chunk: else a fresh destination faults
 * per 4 KiB inside pread's copy (548 MB warm: 0.22-0.29 s of CPU with it, 0.29-0.36 s without). No
 * MADV_HUGEPAGE: under THP defrag=madvise each huge-page fault compacts memory synchronously
 * (0.09-1.19 s against a steady 0.28-0.47 s): up to a quarter faster, or 2-3.5x slower.
 */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

typedef struct {
    const uint8_t *map; /* memcpy from here (a mapped file read through its mapping), or ... */
    int fd;             /* ... pread from this descriptor, borrowed until the call returns; or,
                         * with neither (a byte source read them already), no read at all */
    const st_read_request *requests;
    size_t count;
    const st_read_consumer *consumer; /* NULL, or: whole requests, consumed chunk by chunk */
    size_t *order;        /* with a consumer: the requests largest first (NULL: in order) */
    size_t piece;         /* the largest piece without a consumer: a multiple of ST_READ_CHUNK */
    pthread_mutex_t lock; /* guards everything below */
    size_t next_request;  /* the next piece: requests[next_request] ... */
    size_t next_offset;   /* ... from this byte of it */
    st_code code;         /* the first failure: then no more pieces are handed out */
    st_error err;
} read_queue;

/* The next piece (request, its first byte, length): at most queue->piece bytes, or with a
 * consumer a whole request; false when none is left or a read failed. */
static bool take_piece(read_queue *queue, size_t *index, size_t *at, size_t *len)
{
    bool taken = false;
    pthread_mutex_lock(&queue->lock);
    while (queue->code == ST_OK && queue->next_request < queue->count) {
        size_t i = queue->order != NULL ? queue->order[queue->next_request] : queue->next_request;
        const st_read_request *r = &queue->requests[i];
        if (queue->next_offset < r->len) {
            size_t left = r->len - queue->next_offset;
            *len = left < queue->piece || queue->consumer != NULL ? left : queue->piece;
            *index = i;
            *at = queue->next_offset;
            queue->next_offset += *len;
            taken = true;
            break;
        }
        queue->next_request++;
        queue->next_offset = 0;
    }
    pthread_mutex_unlock(&queue->lock);
    return taken;
}

static bool failed(read_queue *queue)
{
    pthread_mutex_lock(&queue->lock);
    bool stop = queue->code != ST_OK;
    pthread_mutex_unlock(&queue->lock);
    return stop;
}

/* Reads one chunk (at most ST_READ_CHUNK bytes) by memcpy from the mapping or pread from the
 * borrowed descriptor, then hands it to the consumer if there is one. */
static st_code read_chunk(read_queue *queue, size_t index, size_t at, size_t len, st_error *err)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const st_read_request *r = &queue->requests[index];
    uint8_t *dst = (uint8_t *)r->dst + at;
    uint64_t offset = r->offset + at;
    st_code code = ST_OK;
    uintptr_t start = (uintptr_t)dst & ~(page - 1);
    if (queue->map != NULL || queue->fd >= 0) {
        if (len >= ST_POPULATE_MIN)
            (void)madvise((void *)start, (uintptr_t)dst + len - start, MADV_POPULATE_WRITE);
        if (queue->map != NULL)
            memcpy(dst, queue->map + offset, len);
        else
            code = st_read_exact(queue->fd, offset, dst, len, err);
    }
    if (code == ST_OK && queue->consumer != NULL)
        code = queue->consumer->consume(queue->consumer->ctx, index, at, dst, len, err);
    return code;
}

/* Takes pieces until none is left; a piece is read chunk by chunk, in order, and its read stops
 * between chunks once another thread failed. */
static void *read_worker(void *arg)
{
    read_queue *queue = arg;
    size_t index, at, len;
    while (take_piece(queue, &index, &at, &len)) {
        st_error err;
        st_code code = ST_OK;
        for (size_t done = 0; code == ST_OK && done < len; done += ST_READ_CHUNK) {
            size_t piece = len - done < ST_READ_CHUNK ? len - done : ST_READ_CHUNK;
            if (done > 0 && failed(queue))
                break;
            code = read_chunk(queue, index, at + done, piece, &err);
        }
        if (code != ST_OK) {
            pthread_mutex_lock(&queue->lock);
            if (queue->code == ST_OK) {
                queue->code = code;
                queue->err = err;
            }
            pthread_mutex_unlock(&queue->lock);
        }
    }
    return NULL;
}

/* A thread of the call: named "st-read" (top -H, /proc/PID/task/TID/comm; the tests look for
 * any left running), then a worker like the caller. */
static void *read_thread(void *arg)
{
    (void)pthread_setname_np(pthread_self(), "st-read");
    return read_worker(arg);
}

/* With a consumer a request is one thread's from start to end: the largest go first, so that
 * none of them is left for the end, read by one thread while the others have nothing left (a
 * 154 MB embedding last in the file: the verified GPT-2 load took 1.9x the unverified one). */
static int larger_first(const void *a, const void *b)
{
    const st_read_request *x = *(const st_read_request *const *)a;
    const st_read_request *y = *(const st_read_request *const *)b;
    return (x->len < y->len) - (x->len > y->len);
}

static size_t *largest_first(const st_read_request *requests, size_t count)
{
    const st_read_request **sorted = count > 1 ? st_malloc(count * sizeof *sorted) : NULL;
    size_t *order = sorted != NULL ? st_malloc(count * sizeof *order) : NULL;
    if (order != NULL) {
        for (size_t i = 0; i < count; i++)
            sorted[i] = &requests[i];
        qsort(sorted, count, sizeof *sorted, larger_first);
        for (size_t i = 0; i < count; i++)
            order[i] = (size_t)(sorted[i] - requests);
    }
    st_free(sorted);
    return order; /* NULL (no memory, or one request): file order */
}

static st_code read_many(const st_file *file, const st_read_request *requests, size_t count,
                         bool via_map, const st_read_consumer *consumer, st_error *err)
{
    pthread_t threads[ST_READ_THREADS - 1];
    pthread_attr_t attr;
    size_t started = 0, pieces = 0, total = 0;
    read_queue queue = {.map = via_map ? file->map : NULL,
                        .fd = -1,
                        .requests = requests,
                        .count = count,
                        .consumer = consumer,
                        .lock = PTHREAD_MUTEX_INITIALIZER,
                        .code = ST_OK};

    for (size_t i = 0; i < count; i++) {
        const st_read_request *r = &requests[i];
        if (r->offset > file->size || r->len > file->size - r->offset)
            return st_error_set(err, ST_ERR_INVALID_ARGUMENT, r->offset,
                                "read of %zu bytes at offset %llu is outside the file (%llu "
                                "bytes)",
                                r->len, (unsigned long long)r->offset,
                                (unsigned long long)file->size);
        total += r->len;
    }
    if (file->source.read_many != NULL) { /* it does its own concurrency; consumed after */
        st_code code =
            total == 0 ? ST_OK : file->source.read_many(file->source.ctx, requests, count, err);
        if (code != ST_OK || consumer == NULL)
            return code;
        queue.map = NULL;
    } else if (queue.map == NULL && total > 0 &&
               (queue.code = st_fd_borrow(file, &queue.fd, err)) != ST_OK)
        return queue.code;
    if (consumer != NULL)
        queue.order = largest_first(requests, count);
    queue.piece = total / (4 * ST_READ_THREADS) / ST_READ_CHUNK * ST_READ_CHUNK;
    queue.piece = queue.piece < ST_READ_PIECE_MIN   ? ST_READ_PIECE_MIN
                  : queue.piece > ST_READ_PIECE_MAX ? ST_READ_PIECE_MAX
                                                    : queue.piece;
    for (size_t i = 0; i < count; i++)
        pieces += consumer != NULL ? 1 : (requests[i].len + queue.piece - 1) / queue.piece;
    /* Small reads stay on this thread; a thread that cannot start leaves its share to the
     * others and this one. Small stacks: 7 default 8 MiB ones overflow glibc's 40 MiB
     * stack cache, and every call would map some afresh. */
    bool threaded = total >= ST_PARALLEL_MIN && pthread_attr_init(&attr) == 0;
    if (threaded)
        (void)pthread_attr_setstacksize(&attr, ST_READ_STACK);
    while (threaded && started + 1 < ST_READ_THREADS && started + 1 < pieces &&
           pthread_create(&threads[started], &attr, read_thread, &queue) == 0)
        started++;
    if (threaded)
        pthread_attr_destroy(&attr);
    read_worker(&queue);
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    if (queue.code != ST_OK && err != NULL)
        *err = queue.err;
    if (queue.fd >= 0)
        st_fd_return(file);
    st_free(queue.order);
    return queue.code;
}

st_code st_file_read_many(const st_file *file, const st_read_request *requests, size_t count,
                          st_error *err)
{
    return read_many(file, requests, count, true, NULL, err);
}

st_code st_file_pread_many(const st_file *file, const st_read_request *requests, size_t count,
                           st_error *err)
{
    return read_many(file, requests, count, false, NULL, err);
}

st_code st_file_read_consumed(const st_file *file, const st_read_request *requests, size_t count,
                              bool pread, const st_read_consumer *consumer, st_error *err)
{
    return read_many(file, requests, count, !pread, consumer, err);
}

st_code st_file_read(const st_file *file, uint64_t offset, void *dst, size_t len, st_error *err)
{
    st_read_request request = {.offset = offset, .dst = dst, .len = len};
    return st_file_read_many(file, &request, 1, err);
}
