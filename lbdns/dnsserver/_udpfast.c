/* The UDP batch loop in C: recvmmsg, answer, sendmmsg (lbdns.dnsserver.transport).
 *
 * The Python loop (udpbatch.BatchSocket with UdpListener._readable_batch) does the same work;
 * this one exists because on a busy server the interpreter's cost per datagram of that loop
 * (slices, a dict lookup for the client, the ring's bookkeeping) and of the repeated-query
 * branch of Answerer.respond is a third of the process. Both loops answer alike: tests run the
 * same queries through each and compare every octet and every counter.
 *
 * Per datagram it looks the query past its ID up in the answerer's ``seen`` dict, as
 * ``Answerer.respond`` does first, and answers a repeated query itself:
 *
 *   fixed answer:  (reply without ID: bytes, qtype, rcode, rrl class)
 *   farm question: (entry, qtype, parse, replies, subnet key, opt, choose, farm qtype, key)
 *                  choose is ``farm.answer`` (key None, an unkeyed farm: called with the farm
 *                  qtype and the subnet key or the client) or ``farm.choose_key`` (called with
 *                  the farm qtype, the key and the client), where key is the label, or (a farm
 *                  keyed by client subnet) the function that makes the key of the client's
 *                  address when the query had no ECS key.
 *                  ``replies`` maps a choice to (reply without ID, rcode, rrl class); a
 *                  choice not in it is made by ``farm_reply``.
 *
 * With rate limiting on, the answer is charged as ``RateLimiter.charge`` would, on the same
 * state (``gcra``): a client not seen yet goes through ``charge`` itself.
 *
 * Everything else (a first query, TCP's, errors, cookies) goes to ``respond``. The farm choice
 * itself stays in Python: only the lookups and the bookkeeping around it are here. Any error on
 * the repeated-query path hands the datagram to ``respond``, which answers it or SERVFAILs it
 * and logs, as before.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define SLOTS 64          /* datagrams per system call, as udpbatch.SLOTS */
#define DATA 4096         /* octets read per datagram, as udpbatch.DATA */
#define CLIENTS_LIMIT 65536 /* sockaddr -> address string entries before starting over */

typedef struct {
    PyObject_HEAD
    int fd;
    int family;
    PyObject *clients; /* raw sockaddr (bytes) -> the client's address string */
    struct mmsghdr rx[SLOTS];
    struct iovec rx_iov[SLOTS];
    struct sockaddr_storage names[SLOTS];
    struct mmsghdr tx[SLOTS];
    struct iovec tx_iov[SLOTS];
    PyObject *held[SLOTS]; /* the answers tx_iov points into, alive until they are sent */
    char data[SLOTS][DATA];
} Batch;

static int
Batch_init(Batch *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fd", "family", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ii", keywords, &self->fd, &self->family))
        return -1;
    if (self->family != AF_INET && self->family != AF_INET6) {
        PyErr_SetString(PyExc_ValueError, "family must be AF_INET or AF_INET6");
        return -1;
    }
    Py_XSETREF(self->clients, PyDict_New());
    if (self->clients == NULL)
        return -1;
    memset(self->rx, 0, sizeof(self->rx));
    memset(self->tx, 0, sizeof(self->tx));
    for (int i = 0; i < SLOTS; i++) {
        self->rx_iov[i].iov_base = self->data[i];
        self->rx_iov[i].iov_len = DATA;
        self->rx[i].msg_hdr.msg_iov = &self->rx_iov[i];
        self->rx[i].msg_hdr.msg_iovlen = 1;
        self->rx[i].msg_hdr.msg_name = &self->names[i];
        self->tx[i].msg_hdr.msg_iov = &self->tx_iov[i];
        self->tx[i].msg_hdr.msg_iovlen = 1;
        self->held[i] = NULL;
    }
    return 0;
}

static void
Batch_dealloc(Batch *self)
{
    Py_CLEAR(self->clients);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The address string of slot i's sender (a new reference), from the cache when it is there. */
static PyObject *
client_of(Batch *self, int i)
{
    socklen_t length = self->rx[i].msg_hdr.msg_namelen;
    if (length > sizeof(struct sockaddr_storage))
        length = sizeof(struct sockaddr_storage);
    PyObject *raw = PyBytes_FromStringAndSize((const char *)&self->names[i], length);
    if (raw == NULL)
        return NULL;
    PyObject *client = PyDict_GetItemWithError(self->clients, raw);
    if (client != NULL) {
        Py_DECREF(raw);
        Py_INCREF(client);
        return client;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(raw);
        return NULL;
    }
    char text[INET6_ADDRSTRLEN];
    const void *address;
    int family = self->names[i].ss_family;
    if (family == AF_INET6 && length >= sizeof(struct sockaddr_in6))
        address = &((struct sockaddr_in6 *)&self->names[i])->sin6_addr;
    else if (family == AF_INET && length >= sizeof(struct sockaddr_in))
        address = &((struct sockaddr_in *)&self->names[i])->sin_addr;
    else
        family = 0;
    if (family == 0 || inet_ntop(family, address, text, sizeof(text)) == NULL)
        text[0] = '\0'; /* not an IP sender: cannot happen on an AF_INET(6) socket */
    client = PyUnicode_FromString(text);
    if (client == NULL) {
        Py_DECREF(raw);
        return NULL;
    }
    if (PyDict_GET_SIZE(self->clients) >= CLIENTS_LIMIT)
        PyDict_Clear(self->clients);
    int failed = PyDict_SetItem(self->clients, raw, client);
    Py_DECREF(raw);
    if (failed) {
        Py_DECREF(client);
        return NULL;
    }
    return client;
}

/* counter[key] += 1 for a dict (collections.Counter) or a list (index key). */
static int
count_in_dict(PyObject *counter, PyObject *key)
{
    PyObject *value = PyDict_GetItemWithError(counter, key);
    if (value == NULL && PyErr_Occurred())
        return -1;
    long before = value == NULL ? 0 : PyLong_AsLong(value);
    if (before == -1 && PyErr_Occurred())
        return -1;
    PyObject *after = PyLong_FromLong(before + 1);
    if (after == NULL)
        return -1;
    int failed = PyDict_SetItem(counter, key, after);
    Py_DECREF(after);
    return failed;
}

static int
count_in_list(PyObject *counter, PyObject *index)
{
    Py_ssize_t i = PyLong_AsSsize_t(index);
    if (i < 0 || i >= PyList_GET_SIZE(counter)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_IndexError, "qtype out of range");
        return -1;
    }
    long before = PyLong_AsLong(PyList_GET_ITEM(counter, i));
    if (before == -1 && PyErr_Occurred())
        return -1;
    PyObject *after = PyLong_FromLong(before + 1);
    if (after == NULL)
        return -1;
    return PyList_SetItem(counter, i, after); /* steals after */
}

/* The ID of ``query`` followed by ``reply`` (bytes): a new reference. */
static PyObject *
with_id(const char *query, PyObject *reply)
{
    Py_ssize_t size = PyBytes_GET_SIZE(reply);
    PyObject *response = PyBytes_FromStringAndSize(NULL, size + 2);
    if (response == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(response);
    out[0] = query[0];
    out[1] = query[1];
    memcpy(out + 2, PyBytes_AS_STRING(reply), size);
    return response;
}

typedef struct {
    PyObject *seen, *qtypes, *rcodes, *farm_reply, *limited;
    /* The rate limiter (None: off), as RateLimiter.compiled holds it: (charge, clients,
     * clock, interval, tolerance, slip, slip index, dropped, slipped, exempt). */
    PyObject *rrl;
} Cache;

static int
set_float(PyObject *list, Py_ssize_t i, double value)
{
    PyObject *item = PyFloat_FromDouble(value);
    if (item == NULL)
        return -1;
    return PyList_SetItem(list, i, item); /* steals item */
}

/* RateLimiter.charge (lbdns/dnsserver/rrl.py) for a client whose network has its state
 * already: the same GCRA step on the same lists. Py_True, Py_False (a slip) or Py_None (a
 * drop), borrowed; NULL with no error to leave it to RateLimiter.charge. */
static PyObject *
gcra(PyObject *rrl, PyObject *rrl_class, PyObject *client)
{
    PyObject *state = PyDict_GetItemWithError(PyTuple_GET_ITEM(rrl, 1), client);
    if (state == NULL)
        return NULL; /* a new client: its network's state is made in Python */
    if (state == PyTuple_GET_ITEM(rrl, 9))
        return Py_True; /* whitelisted */
    Py_ssize_t slip_index = PyLong_AsSsize_t(PyTuple_GET_ITEM(rrl, 6));
    Py_ssize_t i = PyLong_AsSsize_t(rrl_class);
    if (!PyList_CheckExact(state) || PyList_GET_SIZE(state) <= slip_index || i < 0
        || i >= slip_index)
        return NULL;
    PyObject *clock = PyObject_CallNoArgs(PyTuple_GET_ITEM(rrl, 2));
    if (clock == NULL)
        return NULL;
    double now = PyFloat_AsDouble(clock);
    Py_DECREF(clock);
    double due = PyFloat_AsDouble(PyList_GET_ITEM(state, i));
    double interval = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(rrl, 3));
    double tolerance = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(rrl, 4));
    if (PyErr_Occurred())
        return NULL;
    if (due < now) /* a full bucket */
        return set_float(state, i, now + interval) < 0 ? NULL : Py_True;
    if (due - now <= tolerance)
        return set_float(state, i, due + interval) < 0 ? NULL : Py_True;
    long slip = PyLong_AsLong(PyTuple_GET_ITEM(rrl, 5));
    if (slip) {
        double slips = PyFloat_AsDouble(PyList_GET_ITEM(state, slip_index)) + 1.0;
        if (PyErr_Occurred())
            return NULL;
        if (slips >= slip) {
            if (set_float(state, slip_index, 0.0) < 0
                || count_in_list(PyTuple_GET_ITEM(rrl, 8), rrl_class) < 0)
                return NULL;
            return Py_False;
        }
        if (set_float(state, slip_index, slips) < 0)
            return NULL;
    }
    return count_in_list(PyTuple_GET_ITEM(rrl, 7), rrl_class) < 0 ? NULL : Py_None;
}

/* The rate limiter's verdict on ``response`` (stolen): what to send, or NULL with an error. */
static PyObject *
charged(Cache *cache, PyObject *response, PyObject *rrl_class, PyObject *client)
{
    if (cache->rrl == Py_None)
        return response;
    PyObject *verdict = gcra(cache->rrl, rrl_class, client);
    if (verdict != NULL) {
        Py_INCREF(verdict);
    } else if (!PyErr_Occurred()) {
        PyObject *args[2] = {rrl_class, client};
        verdict = PyObject_Vectorcall(PyTuple_GET_ITEM(cache->rrl, 0), args, 2, NULL);
    }
    if (verdict == NULL) {
        Py_DECREF(response);
        return NULL;
    }
    if (verdict == Py_True) {
        Py_DECREF(verdict);
        return response;
    }
    PyObject *limited_args[2] = {response, verdict};
    PyObject *sent = PyObject_Vectorcall(cache->limited, limited_args, 2, NULL);
    Py_DECREF(verdict);
    Py_DECREF(response);
    return sent;
}

/* The answer to a repeated query from the seen cache: a new reference (None: send nothing);
 * NULL without an error when it is not one to answer here, NULL with an error on a failure. */
static PyObject *
repeated(Cache *cache, const char *query, Py_ssize_t length, PyObject *client)
{
    if (length < 12)
        return NULL;
    PyObject *key = PyBytes_FromStringAndSize(query + 2, length - 2);
    if (key == NULL)
        return NULL;
    PyObject *hit = PyDict_GetItemWithError(cache->seen, key); /* borrowed */
    Py_DECREF(key);
    if (hit == NULL || !PyTuple_CheckExact(hit) || PyTuple_GET_SIZE(hit) < 4)
        return NULL;
    Py_INCREF(hit); /* farm.answer may touch the cache */
    PyObject *first = PyTuple_GET_ITEM(hit, 0);
    PyObject *response = NULL;
    if (PyBytes_CheckExact(first)) {
        if (count_in_list(cache->qtypes, PyTuple_GET_ITEM(hit, 1)) < 0
            || count_in_dict(cache->rcodes, PyTuple_GET_ITEM(hit, 2)) < 0)
            goto done;
        response = with_id(query, first);
        if (response != NULL)
            response = charged(cache, response, PyTuple_GET_ITEM(hit, 3), client);
        goto done;
    }
    if (PyTuple_GET_SIZE(hit) < 9)
        goto done;
    PyObject *choose = PyTuple_GET_ITEM(hit, 6);
    PyObject *choice;
    PyObject *label = PyTuple_GET_ITEM(hit, 8);
    if (count_in_list(cache->qtypes, PyTuple_GET_ITEM(hit, 1)) < 0)
        goto done;
    if (PyUnicode_CheckExact(label)) { /* a key label */
        PyObject *args[3] = {PyTuple_GET_ITEM(hit, 7), label, client};
        choice = PyObject_Vectorcall(choose, args, 3, NULL);
    } else if (label != Py_None) { /* keyed by client subnet: the ECS key, or the client's */
        PyObject *subnet = PyTuple_GET_ITEM(hit, 4);
        int from_ecs = PyObject_IsTrue(subnet);
        if (from_ecs < 0)
            goto done;
        PyObject *key = subnet;
        if (from_ecs)
            Py_INCREF(key);
        else if ((key = PyObject_CallOneArg(label, client)) == NULL)
            goto done;
        PyObject *args[3] = {PyTuple_GET_ITEM(hit, 7), key, client};
        choice = PyObject_Vectorcall(choose, args, 3, NULL);
        Py_DECREF(key);
    } else {
        PyObject *subnet = PyTuple_GET_ITEM(hit, 4);
        int keyed = PyObject_IsTrue(subnet);
        if (keyed < 0)
            goto done;
        PyObject *args[2] = {PyTuple_GET_ITEM(hit, 7), keyed ? subnet : client};
        choice = PyObject_Vectorcall(choose, args, 2, NULL);
    }
    if (choice == NULL)
        goto done;
    PyObject *reply = PyDict_GetItemWithError(PyTuple_GET_ITEM(hit, 3), choice);
    if (reply != NULL) {
        Py_INCREF(reply);
        if (!PyTuple_CheckExact(reply) || PyTuple_GET_SIZE(reply) < 3
            || count_in_dict(cache->rcodes, PyTuple_GET_ITEM(reply, 1)) < 0) {
            Py_DECREF(reply);
            Py_DECREF(choice);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a farm reply is (bytes, rcode, class)");
            goto done;
        }
    } else if (!PyErr_Occurred()) {
        /* A choice not seen for this question yet: packed, counted and kept by Python. */
        PyObject *args[3] = {hit, NULL, choice};
        args[1] = PyBytes_FromStringAndSize(query, length);
        if (args[1] != NULL) {
            reply = PyObject_Vectorcall(cache->farm_reply, args, 3, NULL);
            Py_DECREF(args[1]);
        }
    }
    Py_DECREF(choice);
    if (reply == NULL)
        goto done;
    if (!PyTuple_CheckExact(reply) || PyTuple_GET_SIZE(reply) < 3
        || !PyBytes_CheckExact(PyTuple_GET_ITEM(reply, 0))) {
        Py_DECREF(reply);
        PyErr_SetString(PyExc_TypeError, "a farm reply is (bytes, rcode, class)");
        goto done;
    }
    response = with_id(query, PyTuple_GET_ITEM(reply, 0));
    if (response != NULL)
        response = charged(cache, response, PyTuple_GET_ITEM(reply, 2), client);
    Py_DECREF(reply);
done:
    Py_DECREF(hit);
    return response;
}

static double
seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + now.tv_nsec * 1e-9;
}

/* serve(respond, cache) -> (datagrams read, answers not sent, seconds the first one took)
 *
 * Reads up to SLOTS datagrams (none waiting: (0, 0, -1.0)), answers each, and sends the
 * answers with one sendmmsg. ``respond(query, client, False)`` answers what ``cache`` (None, or
 * (seen, qtypes, rcodes, farm_reply, rrl, limited); see the top of this file) does not. */
static PyObject *
Batch_serve(Batch *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "serve(respond, cache)");
        return NULL;
    }
    PyObject *respond = args[0];
    Cache cache;
    int use_cache = args[1] != Py_None;
    if (use_cache) {
        if (!PyTuple_CheckExact(args[1]) || PyTuple_GET_SIZE(args[1]) != 6
            || !PyDict_CheckExact(PyTuple_GET_ITEM(args[1], 0))
            || !PyList_CheckExact(PyTuple_GET_ITEM(args[1], 1))
            || !PyDict_Check(PyTuple_GET_ITEM(args[1], 2))) {
            PyErr_SetString(PyExc_TypeError,
                            "cache is (seen, qtypes, rcodes, farm_reply, rrl, limited)");
            return NULL;
        }
        cache.seen = PyTuple_GET_ITEM(args[1], 0);
        cache.qtypes = PyTuple_GET_ITEM(args[1], 1);
        cache.rcodes = PyTuple_GET_ITEM(args[1], 2);
        cache.farm_reply = PyTuple_GET_ITEM(args[1], 3);
        cache.rrl = PyTuple_GET_ITEM(args[1], 4);
        cache.limited = PyTuple_GET_ITEM(args[1], 5);
        PyObject *rrl = cache.rrl;
        if (rrl != Py_None
            && (!PyTuple_CheckExact(rrl) || PyTuple_GET_SIZE(rrl) != 10
                || !PyDict_CheckExact(PyTuple_GET_ITEM(rrl, 1))
                || !PyFloat_CheckExact(PyTuple_GET_ITEM(rrl, 3))
                || !PyFloat_CheckExact(PyTuple_GET_ITEM(rrl, 4))
                || !PyList_CheckExact(PyTuple_GET_ITEM(rrl, 7))
                || !PyList_CheckExact(PyTuple_GET_ITEM(rrl, 8)))) {
            PyErr_SetString(PyExc_TypeError, "rrl is RateLimiter.compiled");
            return NULL;
        }
    }
    for (int i = 0; i < SLOTS; i++)
        self->rx[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
    int n = recvmmsg(self->fd, self->rx, SLOTS, MSG_DONTWAIT, NULL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return Py_BuildValue("(iid)", 0, 0, -1.0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    double started = 0.0, first = -1.0;
    int answers = 0;
    PyObject *client = NULL;
    int client_slot = -1;
    for (int i = 0; i < n; i++) {
        const char *query = self->data[i];
        Py_ssize_t length = self->rx[i].msg_len;
        socklen_t namelen = self->rx[i].msg_hdr.msg_namelen;
        if (i == 0)
            started = seconds();
        /* Resolvers (and load generators) send runs of queries from one socket. */
        if (client == NULL || namelen != self->rx[client_slot].msg_hdr.msg_namelen
            || memcmp(&self->names[i], &self->names[client_slot], namelen) != 0) {
            Py_XDECREF(client);
            client = client_of(self, i);
            if (client == NULL)
                goto failed;
            client_slot = i;
        }
        PyObject *response = use_cache ? repeated(&cache, query, length, client) : NULL;
        if (response == NULL) {
            /* An error on the repeated path: respond answers it (or SERVFAILs it and logs);
             * KeyboardInterrupt, SystemExit and the like go up, as from the Python loop. */
            if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception))
                goto failed;
            PyErr_Clear();
            PyObject *data = PyBytes_FromStringAndSize(query, length);
            if (data == NULL)
                goto failed;
            PyObject *call[3] = {data, client, Py_False};
            response = PyObject_Vectorcall(respond, call, 3, NULL);
            Py_DECREF(data);
            if (response == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_Exception))
                    goto failed;
                PyErr_WriteUnraisable(respond); /* respond never raises: a bug, not fatal */
            }
        }
        if (i == 0)
            first = seconds() - started;
        if (response == NULL || response == Py_None) {
            Py_XDECREF(response);
            continue;
        }
        if (!PyBytes_CheckExact(response)) { /* a bytearray (dnslib's pack) */
            PyObject *copy = PyBytes_FromObject(response);
            Py_DECREF(response);
            if (copy == NULL) {
                PyErr_WriteUnraisable(respond);
                continue;
            }
            response = copy;
        }
        self->held[answers] = response;
        self->tx_iov[answers].iov_base = PyBytes_AS_STRING(response);
        self->tx_iov[answers].iov_len = PyBytes_GET_SIZE(response);
        self->tx[answers].msg_hdr.msg_name = &self->names[i];
        self->tx[answers].msg_hdr.msg_namelen = namelen;
        answers++;
    }
    Py_XDECREF(client);
    client = NULL;
    int done = 0, unsent = 0;
    while (done < answers) {
        int sent = sendmmsg(self->fd, self->tx + done, answers - done, 0);
        if (sent > 0) {
            done += sent;
            continue;
        }
        if (sent < 0 && errno == EINTR)
            continue;
        /* The first of the rest could not go (a full buffer, an unreachable client): UDP
         * may drop it; the others still get their chance. */
        done++;
        unsent++;
    }
    for (int j = 0; j < answers; j++)
        Py_CLEAR(self->held[j]);
    return Py_BuildValue("(iid)", n, unsent, first);
failed:
    Py_XDECREF(client);
    for (int j = 0; j < answers; j++)
        Py_CLEAR(self->held[j]);
    return NULL;
}

static PyMethodDef Batch_methods[] = {
    {"serve", (PyCFunction)(void (*)(void))Batch_serve, METH_FASTCALL,
     "serve(respond, cache) -> (read, not sent, seconds of the first)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lbdns.dnsserver._udpfast.Batch",
    .tp_doc = "A UDP socket read and answered up to 64 datagrams per system call.",
    .tp_basicsize = sizeof(Batch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Batch_init,
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_methods = Batch_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "lbdns.dnsserver._udpfast",
    .m_doc = "The UDP batch loop of lbdns.dnsserver.transport, compiled.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__udpfast(void)
{
    if (PyType_Ready(&BatchType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BatchType);
    if (PyModule_AddObject(m, "Batch", (PyObject *)&BatchType) < 0) {
        Py_DECREF(&BatchType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "SLOTS", SLOTS) < 0
        || PyModule_AddIntConstant(m, "DATA", DATA) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
