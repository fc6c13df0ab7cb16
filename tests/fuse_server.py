"""A read-only FUSE file system in pure Python, for tests: serves the regular files of one
directory (no subdirectories) at a mount point, speaking the kernel's /dev/fuse protocol
(linux/fuse.h, protocol 7.31) directly, so it needs no libfuse or fusermount, only root
(mount(2)) and /dev/fuse.

    python tests/fuse_server.py SOURCE MOUNTPOINT

prints "ready" once mounted, or "cannot mount: <reason>" and exits 0; serves until SIGTERM
(then unmounts) or until the mount goes away.
"""

import ctypes
import errno
import os
import signal
import stat
import struct
import sys

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, extlen, pad
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # ino, size, blocks, times, nsecs, mode, ..., flags
LOOKUP, FORGET, GETATTR, OPEN, READ, STATFS, RELEASE, FLUSH, INIT, BATCH_FORGET = (
    1, 2, 3, 14, 15, 17, 18, 25, 26, 42)
NO_REPLY = {FORGET, BATCH_FORGET, 36}  # 36: INTERRUPT (every request is answered at once)


def attr(ino, st):
    return ATTR.pack(ino, st.st_size, (st.st_size + 511) // 512, int(st.st_atime), int(st.st_mtime),
                     int(st.st_ctime), 0, 0, 0, st.st_mode, 1, 0, 0, 0, 4096, 0)


class Server:
    def __init__(self, source, fd):
        self.source, self.fd = source, fd
        self.names = {}  # node id -> file name
        self.files = {}  # node id -> an open descriptor of the source file

    def node(self, name):
        ino = 2 + sorted(os.listdir(self.source)).index(name)
        self.names[ino] = name
        return ino

    def stat(self, ino):
        if ino == 1:
            return attr(1, os.stat(self.source))
        return attr(ino, os.stat(os.path.join(self.source, self.names[ino])))

    def answer(self, opcode, nodeid, body):
        """The reply's payload for a request, or an OSError."""
        if opcode == INIT:
            major, minor, readahead = struct.unpack_from("<III", body)
            return struct.pack("<IIIIHHIIHHII6I", 7, 31, readahead, 0, 16, 12, 1 << 17, 1, 0, 0, 0, 0,
                               *[0] * 6)
        if opcode == LOOKUP:
            name = body.split(b"\0", 1)[0].decode()
            path = os.path.join(self.source, name)
            if nodeid != 1 or not os.path.isfile(path):
                raise OSError(errno.ENOENT, name)
            ino = self.node(name)
            return struct.pack("<QQQQII", ino, 0, 1, 1, 0, 0) + self.stat(ino)
        if opcode == GETATTR:
            return struct.pack("<QII", 1, 0, 0) + self.stat(nodeid)
        if opcode == OPEN:
            self.files.setdefault(nodeid, os.open(os.path.join(self.source, self.names[nodeid]),
                                                  os.O_RDONLY))
            return struct.pack("<QII", 0, 0, 0)
        if opcode == READ:
            _, offset, size = struct.unpack_from("<QQI", body)
            return os.pread(self.files[nodeid], size, offset)
        if opcode == STATFS:
            return struct.pack("<QQQQQIIII6I", 0, 0, 0, 0, 0, 4096, 255, 4096, 0, *[0] * 6)
        if opcode in (RELEASE, FLUSH):
            return b""
        raise OSError(errno.ENOSYS, "not implemented")

    def serve(self):
        while True:
            try:
                request = os.read(self.fd, (1 << 17) + 4096)
            except OSError as e:
                if e.errno == errno.ENODEV:  # unmounted
                    return
                raise
            _, opcode, unique, nodeid, *_ = IN_HEADER.unpack_from(request)
            if opcode in NO_REPLY:
                continue
            try:
                payload, error = self.answer(opcode, nodeid, request[IN_HEADER.size:]), 0
            except OSError as e:
                payload, error = b"", -e.errno
            try:
                os.write(self.fd, OUT_HEADER.pack(OUT_HEADER.size + len(payload), error, unique) + payload)
            except OSError as e:
                if e.errno != errno.ENOENT:  # ENOENT: the request was interrupted meanwhile
                    raise


def main(source, mountpoint):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/fuse", os.O_RDWR)
    options = f"fd={fd},rootmode={stat.S_IFDIR:o},user_id={os.getuid()},group_id={os.getgid()}"
    if libc.mount(b"stfuse", os.fsencode(mountpoint), b"fuse.stfuse", 6,  # MS_NOSUID | MS_NODEV
                  options.encode()) != 0:
        print("cannot mount:", os.strerror(ctypes.get_errno()), flush=True)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print("ready", flush=True)
        Server(source, fd).serve()
    finally:
        libc.umount2(os.fsencode(mountpoint), 2)  # MNT_DETACH


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
