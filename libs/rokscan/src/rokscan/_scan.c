/* rokscan._scan: list one directory and lstat every child with the GIL released.
 *
 * scan(dir_fd) -> (signature, files, size, subdirs, failures)
 *   signature  bytes: for each child in the byte order of its name, the record
 *              <u32 mode><i64 size><i64 mtime_ns><i64 ctime_ns><u64 inode><u16 name length><name>, little-endian
 *              (the files cache's listing format, see rokstore.repository.cache.pack_listing)
 *   files      the number of regular files, size their total size
 *   subdirs    [(name, st_dev, st_ino)] of the subdirectories, in the byte order of the names
 *   failures   [(name, errno)] of the children listed but not stat'ed (gone since, say): in no record
 * Raises OSError when the directory cannot be listed. The descriptor stays open and is not moved.
 *
 * write_new(parent_fd, name, data, mode, mtime_ns, uid, gid) -> (step, errno, st_mode, st_size, chown_errno)
 *   creates name in the directory open as parent_fd (a new regular file, never an existing one: O_EXCL, no
 *   following), writes data, fstats it, gives it uid:gid (unless uid is -1, or it has them already), mode and
 *   mtime_ns, and closes it, all with the GIL released once. step is None when every step was done, otherwise
 *   the one that failed ("create", "write", "stat", "mode", "time") with its errno; chown_errno is the errno of
 *   a chown that failed (the rest is done all the same), 0 otherwise. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define RECORD_HEAD 38 /* 4 + 8 + 8 + 8 + 8 + 2 */

typedef struct {
    const char *name;
    size_t len;
    struct stat st;
    int error; /* errno of its lstat, 0 when it succeeded */
} child_t;

typedef struct {
    char *names; /* every name, NUL-terminated, one after another */
    size_t names_len, names_cap;
    size_t *offsets;
    size_t count, cap;
    child_t *children;
    unsigned char *out;
    size_t out_len;
    long long files, size;
    size_t subdirs, failures;
    int error;     /* errno of a listing that failed */
    int too_long;  /* a name longer than a record can hold */
} scan_t;

static void put_le(unsigned char *p, uint64_t value, int bytes) {
    for (int i = 0; i < bytes; i++) {
        p[i] = (unsigned char)(value >> (8 * i));
    }
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const child_t *)a)->name, ((const child_t *)b)->name);
}

static int64_t ns(struct timespec t) { return (int64_t)t.tv_sec * 1000000000LL + (int64_t)t.tv_nsec; }

/* Everything that needs no Python object: runs without the GIL. Returns 0, or -1 with s->error set. */
static int scan_without_gil(int dir_fd, scan_t *s) {
    int fd = dup(dir_fd);
    if (fd < 0) {
        s->error = errno;
        return -1;
    }
    DIR *dir = fdopendir(fd);
    if (dir == NULL) {
        s->error = errno;
        close(fd);
        return -1;
    }
    rewinddir(dir);
    for (;;) {
        errno = 0;
        struct dirent *d = readdir(dir);
        if (d == NULL) {
            if (errno != 0) {
                s->error = errno;
                rewinddir(dir); /* the descriptor shares its offset: leave it where it was */
                closedir(dir);
                return -1;
            }
            break;
        }
        const char *name = d->d_name;
        if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) {
            continue;
        }
        size_t len = strlen(name);
        if (len > 0xFFFF) {
            s->too_long = 1;
            rewinddir(dir); /* the descriptor shares its offset: leave it where it was */
            closedir(dir);
            return -1;
        }
        if (s->names_len + len + 1 > s->names_cap) {
            size_t cap = s->names_cap ? s->names_cap * 2 : 65536;
            while (cap < s->names_len + len + 1) {
                cap *= 2;
            }
            char *grown = realloc(s->names, cap);
            if (grown == NULL) {
                s->error = ENOMEM;
                rewinddir(dir); /* the descriptor shares its offset: leave it where it was */
                closedir(dir);
                return -1;
            }
            s->names = grown;
            s->names_cap = cap;
        }
        if (s->count == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 1024;
            size_t *grown = realloc(s->offsets, cap * sizeof(size_t));
            if (grown == NULL) {
                s->error = ENOMEM;
                rewinddir(dir); /* the descriptor shares its offset: leave it where it was */
                closedir(dir);
                return -1;
            }
            s->offsets = grown;
            s->cap = cap;
        }
        memcpy(s->names + s->names_len, name, len + 1);
        s->offsets[s->count++] = s->names_len;
        s->names_len += len + 1;
    }
    rewinddir(dir); /* the descriptor shares its offset: leave it where it was */
    closedir(dir);

    s->children = calloc(s->count ? s->count : 1, sizeof(child_t));
    if (s->children == NULL) {
        s->error = ENOMEM;
        return -1;
    }
    for (size_t i = 0; i < s->count; i++) {
        s->children[i].name = s->names + s->offsets[i];
        s->children[i].len = strlen(s->children[i].name);
    }
    qsort(s->children, s->count, sizeof(child_t), by_name);

    size_t out_len = 0;
    for (size_t i = 0; i < s->count; i++) {
        child_t *c = &s->children[i];
        if (fstatat(dir_fd, c->name, &c->st, AT_SYMLINK_NOFOLLOW) != 0) {
            c->error = errno;
            s->failures++;
            continue;
        }
        out_len += RECORD_HEAD + c->len;
        if (S_ISREG(c->st.st_mode)) {
            s->files++;
            s->size += (long long)c->st.st_size;
        } else if (S_ISDIR(c->st.st_mode)) {
            s->subdirs++;
        }
    }
    s->out = malloc(out_len ? out_len : 1);
    if (s->out == NULL) {
        s->error = ENOMEM;
        return -1;
    }
    unsigned char *p = s->out;
    for (size_t i = 0; i < s->count; i++) {
        child_t *c = &s->children[i];
        if (c->error) {
            continue;
        }
        put_le(p, (uint32_t)c->st.st_mode, 4);
        put_le(p + 4, (uint64_t)(int64_t)c->st.st_size, 8);
        put_le(p + 12, (uint64_t)ns(c->st.st_mtim), 8);
        put_le(p + 20, (uint64_t)ns(c->st.st_ctim), 8);
        put_le(p + 28, (uint64_t)c->st.st_ino, 8);
        put_le(p + 36, (uint64_t)c->len, 2);
        memcpy(p + RECORD_HEAD, c->name, c->len);
        p += RECORD_HEAD + c->len;
    }
    s->out_len = out_len;
    return 0;
}

static void scan_free(scan_t *s) {
    free(s->names);
    free(s->offsets);
    free(s->children);
    free(s->out);
}

static PyObject *scan(PyObject *module, PyObject *arg) {
    (void)module;
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (fd < 0 || fd > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "scan() takes an open directory descriptor, not %ld", fd);
        return NULL;
    }
    int dir_fd = (int)fd;
    scan_t s;
    memset(&s, 0, sizeof(s));
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = scan_without_gil(dir_fd, &s);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        if (s.too_long) {
            PyErr_SetString(PyExc_ValueError, "a name in the directory is longer than 65535 bytes");
        } else {
            errno = s.error;
            PyErr_SetFromErrno(PyExc_OSError);
        }
        scan_free(&s);
        return NULL;
    }
    PyObject *signature = NULL, *subdirs = NULL, *failures = NULL, *result = NULL;
    signature = PyBytes_FromStringAndSize((const char *)s.out, (Py_ssize_t)s.out_len);
    subdirs = PyList_New((Py_ssize_t)s.subdirs);
    failures = PyList_New((Py_ssize_t)s.failures);
    if (signature == NULL || subdirs == NULL || failures == NULL) {
        goto done;
    }
    Py_ssize_t n_sub = 0, n_fail = 0;
    for (size_t i = 0; i < s.count; i++) {
        child_t *c = &s.children[i];
        PyObject *item;
        if (c->error) {
            item = Py_BuildValue("(Ni)", PyUnicode_DecodeFSDefaultAndSize(c->name, (Py_ssize_t)c->len), c->error);
            if (item == NULL) {
                goto done;
            }
            PyList_SET_ITEM(failures, n_fail++, item);
        } else if (S_ISDIR(c->st.st_mode)) {
            item = Py_BuildValue("(NKK)", PyUnicode_DecodeFSDefaultAndSize(c->name, (Py_ssize_t)c->len),
                                 (unsigned long long)c->st.st_dev, (unsigned long long)c->st.st_ino);
            if (item == NULL) {
                goto done;
            }
            PyList_SET_ITEM(subdirs, n_sub++, item);
        }
    }
    result = Py_BuildValue("(OLLOO)", signature, s.files, s.size, subdirs, failures);
done:
    Py_XDECREF(signature);
    Py_XDECREF(subdirs);
    Py_XDECREF(failures);
    scan_free(&s);
    return result;
}

typedef struct {
    const char *step; /* the step that failed, NULL when none did */
    int error, chown_error;
    struct stat st;
} written_t;

static void write_without_gil(int parent_fd, const char *name, const char *data, Py_ssize_t len, mode_t mode,
                              long long mtime_ns, long long uid, long long gid, written_t *w) {
    int fd = openat(parent_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        w->step = "create";
        w->error = errno;
        return;
    }
    Py_ssize_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, (size_t)(len - done));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            w->step = "write";
            w->error = n < 0 ? errno : ENOSPC;
            close(fd);
            return;
        }
        done += n;
    }
    if (fstat(fd, &w->st) != 0) {
        w->step = "stat";
        w->error = errno;
    } else {
        if (uid >= 0 && ((long long)w->st.st_uid != uid || (long long)w->st.st_gid != gid) &&
            fchown(fd, (uid_t)uid, (gid_t)gid) != 0) {
            w->chown_error = errno;
        }
        struct timespec times[2];
        times[0].tv_sec = times[1].tv_sec = (time_t)(mtime_ns / 1000000000LL);
        times[0].tv_nsec = times[1].tv_nsec = (long)(mtime_ns % 1000000000LL);
        if (times[0].tv_nsec < 0) { /* before 1970: floor, as Python's os.utime(ns=) does */
            times[0].tv_sec -= 1;
            times[1].tv_sec -= 1;
            times[0].tv_nsec += 1000000000L;
            times[1].tv_nsec += 1000000000L;
        }
        if (fchmod(fd, mode) != 0) {
            w->step = "mode";
            w->error = errno;
        } else if (futimens(fd, times) != 0) {
            w->step = "time";
            w->error = errno;
        }
    }
    close(fd);
}

static PyObject *write_new(PyObject *self, PyObject *args) {
    (void)self;
    int parent_fd;
    PyObject *name_obj, *name_bytes = NULL;
    Py_buffer data;
    unsigned int mode;
    long long mtime_ns, uid, gid;
    if (!PyArg_ParseTuple(args, "iOy*ILLL:write_new", &parent_fd, &name_obj, &data, &mode, &mtime_ns, &uid, &gid)) {
        return NULL;
    }
    if (!PyUnicode_FSConverter(name_obj, &name_bytes)) {
        PyBuffer_Release(&data);
        return NULL;
    }
    written_t w;
    memset(&w, 0, sizeof(w));
    const char *name = PyBytes_AS_STRING(name_bytes);
    Py_BEGIN_ALLOW_THREADS
    write_without_gil(parent_fd, name, (const char *)data.buf, data.len, (mode_t)mode, mtime_ns, uid, gid, &w);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    Py_DECREF(name_bytes);
    if (w.step != NULL) {
        return Py_BuildValue("(siIKi)", w.step, w.error, (unsigned int)w.st.st_mode,
                             (unsigned long long)w.st.st_size, w.chown_error);
    }
    return Py_BuildValue("(OiIKi)", Py_None, 0, (unsigned int)w.st.st_mode, (unsigned long long)w.st.st_size,
                         w.chown_error);
}

static PyMethodDef methods[] = {
    {"write_new", write_new, METH_VARARGS,
     "write_new(parent_fd, name, data, mode, mtime_ns, uid, gid) -> (step, errno, st_mode, st_size, chown_errno): "
     "create, write and give its metadata to a new file without the GIL; see the module's documentation."},
    {"scan", scan, METH_O,
     "scan(dir_fd) -> (signature, files, size, subdirs, failures): list the directory open as dir_fd and lstat "
     "each child without the GIL; see the module's documentation."},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *module) {
    return PyModule_AddStringConstant(module, "RECORD", "<IqqqQH");
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "rokscan._scan", "One directory listed and stat'ed, or one new file written, without the GIL.", 0, methods, slots,
    NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__scan(void) { return PyModuleDef_Init(&module_def); }
