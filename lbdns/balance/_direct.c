/* A direct asker's repeated query for a farm name, answered in C (lbdns.balance.farm).
 *
 * ``Chooser(farm, fallback, keyed, ...)`` is what the DNS path calls for a farm name: for a
 * keyed farm as ``Farm.choose_key`` is, with (qtype, key, client), returning the host names;
 * for a least-load farm as ``Farm.answer`` is, with (qtype, client), returning (names, TTL). It
 * does, on the same Python objects and with the same arithmetic in the same order, what the
 * Python does for the commonest queries of a busy name, a client that does not cache (a ``dig``
 * loop, a stub resolver, an application without a cache) asking again within half its TTL:
 *
 *   the other address family asked a moment ago: the same hosts, not charged (the sticky
 *   answer, any client);
 *   the direct asker's re-ask (``Accounting.observe``'s first branch) and its herd
 *   (``Accounting.direct_herd``);
 *   the choice of one record: the first host of the key's remembered walk within its bound
 *   (``consistent_hash.choose``), or the lowest projected load, ties broken by the farm's own
 *   random source as the policy breaks them (``least_load._lowest``);
 *   the charge (``Accounting.charge_direct``), the live loads lifted, the host's answer count,
 *   the sticky entry and the last answer for explain (``Farm._charge_one`` and the rest).
 *
 * Anything else (a caching resolver, a client or key seen for the first time, a view to
 * rebuild, a walk not remembered or no host within bound along it, a herd big enough to split)
 * is handed, before anything is changed, to ``fallback(qtype, [key,] client, now)``:
 * ``Farm.choose_key_at`` or ``Farm.answer_at``, with the time this call read. Tests run the
 * same queries through both and compare every field they touch.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *farm;
    PyObject *fallback;  /* farm.choose_key_at or farm.answer_at */
    PyObject *new_track; /* a new track of charges, as Accounting.charge_direct makes it */
    PyObject *ttl;       /* the farm's TTL */
    int keyed;           /* consistent-hash (else least-load) */
    double balance;      /* c of a keyed farm */
    double quick;        /* accounting.QUICK */
    double gap_alpha;    /* accounting.GAP_ALPHA */
    double split_herd;   /* least-load: a herd that may be split (2 x MIN_PER_RECORD) */
    double tie;          /* least-load: loads this close are equal */
    Py_ssize_t split;    /* the farm's split */
    Py_ssize_t sticky_limit;
} Chooser;

/* An attribute read or written often, and how to reach it on the last type it was seen on:
 * the slot of a ``__slots__`` member (the dataclasses with ``slots=True``), the instance dict
 * (a class whose attribute of that name is no descriptor, or a plain default), or else the
 * generic ``getattr``, which any other type also gets. */
typedef struct {
    const char *text;
    PyObject *name;
    PyTypeObject *type;
    int kind;
    int writable; /* written where it lives (the type's own __setattr__ is the generic one) */
    Py_ssize_t offset;
} Attr;

enum { GENERIC, SLOT, DICT };

static Attr a_clock = {"clock"};
static Attr a_view = {"_view"};
static Attr a_valid_until = {"valid_until"};
static Attr a_live = {"_live"};
static Attr a_accounting = {"accounting"};
static Attr a_key_sticky = {"_key_sticky"};
static Attr a_window = {"window"};
static Attr a_key_positions = {"_key_positions"};
static Attr a_clients = {"clients"};
static Attr a_direct = {"direct"};
static Attr a_last = {"last"};
static Attr a_ttl = {"ttl"};
static Attr a_recent = {"recent"};
static Attr a_arrival_rate = {"arrival_rate"};
static Attr a_mean_herd = {"mean_herd"};
static Attr a_herd_unit = {"_herd_unit"};
static Attr a_ring = {"ring"};
static Attr a_walks = {"walks"};
static Attr a_positions = {"_positions"};
static Attr a_ledgers = {"ledgers"};
static Attr a_tracks = {"tracks"};
static Attr a_pending = {"pending"};
static Attr a_window_answers = {"window_answers"};
static Attr a_direct_bucket = {"direct_bucket"};
static Attr a_unit = {"unit"};
static Attr a_slots = {"_slots"};
static Attr a_hosts = {"hosts"};
static Attr a_answers = {"answers"};
static Attr a_last_answered = {"last_answered"};
static Attr a_failing_open = {"_failing_open"};
static Attr a_seq = {"seq"};
static Attr a_last_answer = {"_last"};
static Attr a_sticky = {"_sticky"};
static Attr a_rng = {"rng"};
static PyObject *s_append, *s_random, *s_ledger;
/* Values. */
static PyObject *v_direct_track, *v_zero, *v_one, *v_key, *v_policy, *v_fail_open, *v_sticky, *v_asker;

/* Where ``attr`` lives on instances of ``type`` (remembered until another type is seen). */
static int
resolve(Attr *attr, PyTypeObject *type)
{
    PyObject *found = PyObject_GetAttr((PyObject *)type, attr->name);
    int kind = DICT;
    Py_ssize_t offset = 0;
    if (found == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
    } else {
        if (Py_IS_TYPE(found, &PyMemberDescr_Type)) {
            PyMemberDef *member = ((PyMemberDescrObject *)found)->d_member;
            kind = member->type == T_OBJECT_EX && !(member->flags & READONLY) ? SLOT : GENERIC;
            offset = member->offset;
        } else if (Py_TYPE(found)->tp_descr_get != NULL) {
            kind = GENERIC; /* a property, a method: only getattr knows */
        }
        Py_DECREF(found);
    }
    if (kind == DICT && type->tp_dictoffset == 0)
        kind = GENERIC;
    Py_XSETREF(attr->type, (PyTypeObject *)Py_NewRef(type));
    attr->kind = kind;
    attr->offset = offset;
    attr->writable = type->tp_setattro == PyObject_GenericSetAttr;
    return 0;
}

/* getattr(obj, attr): a new reference, NULL with an error. */
static PyObject *
attr_get(Attr *attr, PyObject *obj)
{
    if (Py_TYPE(obj) != attr->type && resolve(attr, Py_TYPE(obj)) < 0)
        return NULL;
    if (attr->kind == SLOT) {
        PyObject *value = *(PyObject **)((char *)obj + attr->offset);
        if (value != NULL)
            return Py_NewRef(value);
    } else if (attr->kind == DICT) {
        PyObject *dict = PyObject_GenericGetDict(obj, NULL);
        if (dict == NULL)
            return NULL;
        PyObject *value = PyDict_GetItemWithError(dict, attr->name);
        Py_XINCREF(value);
        Py_DECREF(dict);
        if (value != NULL || PyErr_Occurred())
            return value;
    }
    return PyObject_GetAttr(obj, attr->name); /* unset, a class default, another kind */
}

/* setattr(obj, attr, value): 0, or -1 with an error. */
static int
attr_set(Attr *attr, PyObject *obj, PyObject *value)
{
    if (Py_TYPE(obj) != attr->type && resolve(attr, Py_TYPE(obj)) < 0)
        return -1;
    if (attr->writable && attr->kind == SLOT) {
        PyObject **slot = (PyObject **)((char *)obj + attr->offset);
        Py_XSETREF(*slot, Py_NewRef(value));
        return 0;
    }
    if (attr->writable && attr->kind == DICT) {
        PyObject *dict = PyObject_GenericGetDict(obj, NULL);
        if (dict == NULL)
            return -1;
        int failed = PyDict_SetItem(dict, attr->name, value);
        Py_DECREF(dict);
        return failed;
    }
    return PyObject_SetAttr(obj, attr->name, value);
}

/* ``value`` (a new reference, taken; NULL after a failed call) as a double: 0, or -1 with an
 * error. */
static int
to_double(PyObject *value, double *out)
{
    if (value == NULL)
        return -1;
    *out = PyFloat_AsDouble(value);
    Py_DECREF(value);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* getattr as a double */
static int
get_double(PyObject *obj, Attr *name, double *out)
{
    return to_double(attr_get(name, obj), out);
}

static int
set_double(PyObject *obj, Attr *name, double value)
{
    PyObject *number = PyFloat_FromDouble(value);
    if (number == NULL)
        return -1;
    int failed = attr_set(name, obj, number);
    Py_DECREF(number);
    return failed;
}

/* obj.name += 1 */
static int
increment(PyObject *obj, Attr *name)
{
    PyObject *value = attr_get(name, obj);
    if (value == NULL)
        return -1;
    PyObject *more = PyNumber_Add(value, v_one);
    Py_DECREF(value);
    if (more == NULL)
        return -1;
    int failed = attr_set(name, obj, more);
    Py_DECREF(more);
    return failed;
}

/* item[i] of a sequence as a double (a tuple or list item). */
static int
item_double(PyObject *seq, Py_ssize_t i, double *out)
{
    return to_double(PySequence_GetItem(seq, i), out);
}

/* Whether every name of a sticky answer is a candidate for the qtype (Farm._answerable). */
static int
answerable(PyObject *names, PyObject *positions)
{
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    for (Py_ssize_t i = 0; i < n; i++) {
        int in = PyDict_Contains(positions, PyTuple_GET_ITEM(names, i));
        if (in <= 0)
            return in;
    }
    return 1;
}

/* Farm._answered: the hosts' answer counts and last-answered times. */
static int
answered(PyObject *hosts, PyObject *names, PyObject *now)
{
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *host = PyDict_GetItemWithError(hosts, PyTuple_GET_ITEM(names, i));
        if (host == NULL) {
            if (PyErr_Occurred())
                return -1;
            continue;
        }
        if (increment(host, &a_answers) < 0 || attr_set(&a_last_answered, host, now) < 0)
            return -1;
    }
    return 0;
}

/* A borrowed value of dict ``table`` (an attribute of ``obj``) at ``key``; NULL without an
 * error when there is none. */
static PyObject *
lookup(PyObject *obj, Attr *table, PyObject *key)
{
    PyObject *dict = attr_get(table, obj);
    if (dict == NULL)
        return NULL;
    PyObject *value = PyDict_Check(dict) ? PyDict_GetItemWithError(dict, key) : NULL;
    Py_DECREF(dict); /* obj keeps it, and so the value */
    return value;
}

/* Accounting.charge_direct on the planned ledger and track. */
static int
charge_direct(PyObject *accounting, PyObject *ledger, PyObject *track, double herd, double now)
{
    double pending, direct_bucket;
    if (get_double(ledger, &a_pending, &pending) < 0
        || set_double(ledger, &a_pending, pending + herd) < 0
        || increment(ledger, &a_window_answers) < 0
        || get_double(accounting, &a_direct_bucket, &direct_bucket) < 0)
        return -1;
    PyObject *bucket = PyLong_FromDouble(now / direct_bucket); /* int(now / direct_bucket) */
    if (bucket == NULL)
        return -1;
    Py_ssize_t size = PySequence_Size(track);
    if (size < 0) {
        Py_DECREF(bucket);
        return -1;
    }
    PyObject *newest = size ? PySequence_GetItem(track, size - 1) : NULL;
    if (size && newest == NULL) {
        Py_DECREF(bucket);
        return -1;
    }
    int same = 0;
    if (newest != NULL) {
        if (!PyList_CheckExact(newest) || PyList_GET_SIZE(newest) < 3) {
            Py_DECREF(newest);
            Py_DECREF(bucket);
            PyErr_SetString(PyExc_TypeError, "a charge bucket is [key, herd, answers]");
            return -1;
        }
        same = PyObject_RichCompareBool(PyList_GET_ITEM(newest, 0), bucket, Py_EQ);
    }
    int failed = same < 0;
    if (same > 0) {
        double sum;
        int unread = item_double(newest, 1, &sum);
        PyObject *herds = unread ? NULL : PyFloat_FromDouble(sum + herd);
        PyObject *answers = PyNumber_Add(PyList_GET_ITEM(newest, 2), v_one);
        if (herds == NULL || answers == NULL) {
            Py_XDECREF(herds);
            Py_XDECREF(answers);
            failed = 1;
        } else {
            PyList_SetItem(newest, 1, herds); /* steals */
            PyList_SetItem(newest, 2, answers);
        }
    } else if (!failed) {
        PyObject *entry = Py_BuildValue("[Odi]", bucket, herd, 1);
        PyObject *done = entry ? PyObject_CallMethodOneArg(track, s_append, entry) : NULL;
        Py_XDECREF(entry);
        failed = done == NULL;
        Py_XDECREF(done);
    }
    Py_XDECREF(newest);
    Py_DECREF(bucket);
    return failed ? -1 : 0;
}

/* Farm._charge_one's lift: ``step`` more live load for the host wherever it is a candidate. */
static int
lift(PyObject *farm, PyObject *name, double step)
{
    PyObject *entries = lookup(farm, &a_slots, name);
    if (entries == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(entries);
    int failed = 0;
    Py_ssize_t n = PySequence_Size(entries);
    for (Py_ssize_t k = 0; k < n && !failed; k++) {
        PyObject *slot = PySequence_GetItem(entries, k);
        PyObject *live = slot ? PySequence_GetItem(slot, 0) : NULL;
        PyObject *at = slot ? PySequence_GetItem(slot, 1) : NULL;
        PyObject *old = live && at ? PyObject_GetItem(live, at) : NULL;
        double load;
        if (old == NULL || item_double(old, 2, &load) < 0) {
            failed = 1;
        } else {
            PyObject *capacity = PySequence_GetItem(old, 1);
            PyObject *new = capacity ? Py_BuildValue("(OOd)", name, capacity, load + step) : NULL;
            failed = new == NULL || PyObject_SetItem(live, at, new) < 0;
            Py_XDECREF(capacity);
            Py_XDECREF(new);
        }
        Py_XDECREF(old);
        Py_XDECREF(at);
        Py_XDECREF(live);
        Py_XDECREF(slot);
    }
    if (n < 0)
        failed = 1;
    Py_DECREF(entries);
    return failed ? -1 : 0;
}

static int
set_last(PyObject *farm, PyObject *values)
{
    if (values == NULL)
        return -1;
    int failed = attr_set(&a_last_answer, farm, values);
    Py_DECREF(values);
    return failed;
}

/* Everything the answer is made of, read before anything is changed. */
typedef struct {
    PyObject *now_object, *qtype, *key, *client; /* the call: key is NULL for least-load */
    PyObject *live, *accounting, *sticky_table, *sticky_entry, *positions;
    PyObject *sticky;  /* the names of the other family's answer a moment ago, if they stand */
    PyObject *stat, *chosen; /* chosen: a keyed farm's, found while planning */
    double now, recent, herd, herd_unit;
} Plan;

static void
plan_clear(Plan *plan)
{
    Py_CLEAR(plan->live);
    Py_CLEAR(plan->accounting);
    Py_CLEAR(plan->sticky_table);
    Py_CLEAR(plan->sticky_entry);
    Py_CLEAR(plan->positions);
    Py_CLEAR(plan->sticky);
    Py_CLEAR(plan->stat);
    Py_CLEAR(plan->chosen);
}

/* The answer to the same client (least-load) or key a moment ago, for the other address
 * family, whose hosts are still candidates: 1 (plan->sticky set), 0 not this case, -1 an
 * error. */
static int
plan_sticky(Plan *plan)
{
    PyObject *entry = plan->sticky_entry;
    if (entry == NULL || !PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) < 3)
        return 0;
    int other = PyObject_RichCompareBool(PyTuple_GET_ITEM(entry, 2), plan->qtype, Py_NE);
    if (other <= 0)
        return other;
    double when, window;
    if (item_double(entry, 0, &when) < 0 || get_double(plan->accounting, &a_window, &window) < 0)
        return -1;
    if (!(plan->now - when < window / 4))
        return 0;
    PyObject *held = PyTuple_GET_ITEM(entry, 1);
    if (!PyTuple_CheckExact(held))
        return 0;
    int ok = answerable(held, plan->positions);
    if (ok > 0)
        plan->sticky = Py_NewRef(held);
    return ok;
}

/* A direct asker's quick re-ask, and its herd: 1, 0 (not one), -1. */
static int
plan_direct(Chooser *self, Plan *plan)
{
    PyObject *stat = lookup(plan->accounting, &a_clients, plan->client);
    if (stat == NULL)
        return PyErr_Occurred() ? -1 : 0;
    plan->stat = Py_NewRef(stat);
    PyObject *direct = attr_get(&a_direct, stat);
    if (direct == NULL)
        return -1;
    int is_direct = PyObject_IsTrue(direct);
    Py_DECREF(direct);
    double last, ttl;
    if (is_direct < 0 || get_double(stat, &a_last, &last) < 0 || get_double(stat, &a_ttl, &ttl) < 0)
        return -1;
    double gap = plan->now - last;
    if (!is_direct || !(0.0 < gap && gap < self->quick * ttl))
        return 0;
    double recent, mean_herd;
    if (get_double(stat, &a_recent, &recent) < 0
        || get_double(plan->accounting, &a_mean_herd, &mean_herd) < 0
        || get_double(self->farm, &a_herd_unit, &plan->herd_unit) < 0)
        return -1;
    plan->recent = recent + self->gap_alpha * (gap - recent);
    PyObject *arrival_rate = attr_get(&a_arrival_rate, plan->accounting);
    if (arrival_rate == NULL)
        return -1;
    if (arrival_rate == Py_None) {
        Py_DECREF(arrival_rate);
        plan->herd = mean_herd < 1.0 ? mean_herd : 1.0; /* min(1.0, mean_herd) */
        return 1;
    }
    double rate;
    if (to_double(arrival_rate, &rate) < 0)
        return -1;
    double per_query = plan->recent > 0.0 ? rate * plan->recent : mean_herd;
    plan->herd = per_query < mean_herd ? per_query : mean_herd; /* min(mean, per_query) */
    return 1;
}

/* consistent_hash.choose with one record: the first host of the key's remembered walk within
 * its bound (plan->chosen): 1, 0 (not remembered, or none of it within bound), -1. */
static int
plan_key_host(Chooser *self, Plan *plan)
{
    PyObject *position = lookup(self->farm, &a_key_positions, plan->key);
    if (position == NULL)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *ring = attr_get(&a_ring, self->farm);
    if (ring == NULL)
        return -1;
    PyObject *walk = lookup(ring, &a_walks, position);
    Py_DECREF(ring); /* the farm keeps it */
    if (walk == NULL || !PyTuple_CheckExact(walk) || PyTuple_GET_SIZE(walk) == 0)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *live = plan->live;
    double herd = plan->herd * plan->herd_unit;
    double total_load = 0.0, total_capacity = 0.0;
    Py_ssize_t n = PyList_GET_SIZE(live);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PyList_GET_ITEM(live, i);
        double capacity, load;
        if (item_double(c, 1, &capacity) < 0 || item_double(c, 2, &load) < 0)
            return -1;
        total_capacity += capacity;
        total_load += load * capacity;
    }
    double limit = self->balance * (total_load + herd) / total_capacity;
    Py_ssize_t steps = PyTuple_GET_SIZE(walk);
    for (Py_ssize_t s = 0; s < steps; s++) {
        PyObject *at = PyDict_GetItemWithError(plan->positions, PyTuple_GET_ITEM(walk, s));
        if (at == NULL) {
            if (PyErr_Occurred())
                return -1;
            continue;
        }
        Py_ssize_t i = PyLong_AsSsize_t(at);
        if (i == -1 && PyErr_Occurred())
            return -1;
        if (i < 0 || i >= n)
            return 0;
        PyObject *c = PyList_GET_ITEM(live, i);
        double capacity, load;
        if (item_double(c, 1, &capacity) < 0 || item_double(c, 2, &load) < 0)
            return -1;
        if (load <= limit || load * capacity < herd) {
            plan->chosen = Py_NewRef(c);
            return 1;
        }
    }
    return 0; /* the whole ring is walked in Python */
}

/* 1: planned (references in plan), 0: not a case for this path, -1: an error. */
static int
plan_answer(Chooser *self, Plan *plan)
{
    PyObject *farm = self->farm;
    PyObject *view = attr_get(&a_view, farm);
    if (view == NULL)
        return -1;
    double valid_until = 0.0;
    int fresh = view != Py_None;
    if (fresh && get_double(view, &a_valid_until, &valid_until) < 0) {
        Py_DECREF(view);
        return -1;
    }
    Py_DECREF(view);
    if (!fresh || plan->now >= valid_until)
        return 0; /* rebuilt in Python */
    PyObject *live = lookup(farm, &a_live, plan->qtype);
    if (live == NULL || !PyList_CheckExact(live) || PyList_GET_SIZE(live) == 0)
        return PyErr_Occurred() ? -1 : 0;
    plan->live = Py_NewRef(live);
    if ((plan->accounting = attr_get(&a_accounting, farm)) == NULL)
        return -1;
    if (plan->accounting == Py_None)
        return 0;
    PyObject *positions = lookup(farm, &a_positions, plan->qtype);
    if (positions == NULL || !PyDict_CheckExact(positions))
        return PyErr_Occurred() ? -1 : 0;
    plan->positions = Py_NewRef(positions);
    if ((plan->sticky_table = attr_get(self->keyed ? &a_key_sticky : &a_sticky, farm)) == NULL)
        return -1;
    if (!PyDict_CheckExact(plan->sticky_table))
        return 0;
    plan->sticky_entry = PyDict_GetItemWithError(plan->sticky_table, plan->key ? plan->key : plan->client);
    if (plan->sticky_entry == NULL && PyErr_Occurred())
        return -1;
    Py_XINCREF(plan->sticky_entry);
    int planned = plan_sticky(plan);
    if (planned != 0)
        return planned;
    if ((planned = plan_direct(self, plan)) <= 0)
        return planned;
    if (self->keyed)
        return plan_key_host(self, plan);
    /* least_load.choose: one record when no split is possible */
    if (!(PyList_GET_SIZE(live) == 1 || self->split < 2
          || plan->herd * plan->herd_unit < self->split_herd))
        return 0;
    return 1;
}

/* least_load._lowest: the lowest load + herd / capacity, exact ties broken as the policy
 * breaks them, with the farm's random source (a new reference). */
static PyObject *
lowest(Chooser *self, PyObject *live, double herd)
{
    PyObject *rng = NULL;
    PyObject *best = Py_NewRef(PyList_GET_ITEM(live, 0)); /* held: the draws run Python */
    double capacity, load;
    if (item_double(best, 1, &capacity) < 0 || item_double(best, 2, &load) < 0)
        goto error;
    double best_key = load + herd / capacity;
    long ties = 1;
    for (Py_ssize_t i = 1; i < PyList_GET_SIZE(live); i++) {
        PyObject *c = PyList_GET_ITEM(live, i);
        if (item_double(c, 1, &capacity) < 0 || item_double(c, 2, &load) < 0)
            goto error;
        double key = load + herd / capacity;
        if (key < best_key - self->tie) {
            Py_SETREF(best, Py_NewRef(c));
            best_key = key;
            ties = 1;
        } else if (key <= best_key + self->tie) {
            ties += 1;
            if (rng == NULL && (rng = attr_get(&a_rng, self->farm)) == NULL)
                goto error;
            Py_INCREF(c); /* held: the draw runs Python */
            double draw;
            if (to_double(PyObject_CallMethodNoArgs(rng, s_random), &draw) < 0) {
                Py_DECREF(c);
                goto error;
            }
            if (draw * (double)ties < 1.0) /* each of the tied kept with chance 1/ties */
                Py_SETREF(best, c);
            else
                Py_DECREF(c);
        }
    }
    Py_XDECREF(rng);
    return best;
error:
    Py_XDECREF(rng);
    Py_DECREF(best);
    return NULL;
}

/* The same hosts again, not charged (their charge may have lifted them over the bound). */
static PyObject *
commit_sticky(Chooser *self, Plan *plan)
{
    PyObject *hosts = attr_get(&a_hosts, self->farm);
    int failed = hosts == NULL || answered(hosts, plan->sticky, plan->now_object) < 0;
    Py_XDECREF(hosts);
    if (failed)
        return NULL;
    /* a key's entry is (when, names, qtype), a client's (when, names, qtype, TTL) */
    if (!self->keyed && PyTuple_GET_SIZE(plan->sticky_entry) < 4) {
        PyErr_SetString(PyExc_TypeError, "a client's sticky entry is (when, names, qtype, ttl)");
        return NULL;
    }
    PyObject *ttl = self->keyed ? self->ttl : PyTuple_GET_ITEM(plan->sticky_entry, 3);
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL)
        return NULL;
    failed = set_last(self->farm,
                      PyTuple_Pack(9, plan->now_object, plan->client, plan->qtype, v_zero, empty,
                                   plan->sticky, v_sticky, plan->key ? plan->key : Py_None, ttl));
    Py_DECREF(empty);
    if (failed < 0)
        return NULL;
    return self->keyed ? Py_NewRef(plan->sticky) : PyTuple_Pack(2, plan->sticky, ttl);
}

/* The host's ledger and its track of direct charges, made as Accounting makes them when the
 * host was never charged (borrowed references). */
static int
ledger_and_track(Chooser *self, PyObject *accounting, PyObject *name, PyObject **ledger,
                 PyObject **track)
{
    *ledger = lookup(accounting, &a_ledgers, name);
    if (*ledger == NULL) {
        if (PyErr_Occurred())
            return -1;
        PyObject *made = PyObject_CallMethodOneArg(accounting, s_ledger, name);
        if (made == NULL)
            return -1;
        Py_DECREF(made); /* the ledgers keep it */
        if ((*ledger = lookup(accounting, &a_ledgers, name)) == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "Accounting.ledger kept no ledger");
            return -1;
        }
    }
    PyObject *tracks = attr_get(&a_tracks, *ledger);
    if (tracks == NULL)
        return -1;
    int failed = 0;
    *track = PyDict_GetItemWithError(tracks, v_direct_track);
    if (*track == NULL && !PyErr_Occurred()) {
        PyObject *made = PyObject_CallNoArgs(self->new_track);
        failed = made == NULL || PyDict_SetItem(tracks, v_direct_track, made) < 0;
        *track = made;
        Py_XDECREF(made); /* the tracks keep it */
    }
    Py_DECREF(tracks); /* the ledger keeps it */
    return failed || *track == NULL ? -1 : 0;
}

/* The planned answer, made: what the Python changes, in its order. */
static PyObject *
commit(Chooser *self, Plan *plan)
{
    PyObject *farm = self->farm, *now = plan->now_object;
    PyObject *chosen = NULL, *name = NULL, *names = NULL, *before = NULL, *hosts = NULL;
    PyObject *herd = NULL, *result = NULL;
    if (attr_set(&a_last, plan->stat, now) < 0 || set_double(plan->stat, &a_recent, plan->recent) < 0)
        goto done;
    chosen = self->keyed ? Py_NewRef(plan->chosen)
                         : lowest(self, plan->live, plan->herd * plan->herd_unit);
    if (chosen == NULL)
        goto done;
    if ((before = PyList_AsTuple(plan->live)) == NULL) /* the loads before the charge */
        goto done;
    if ((name = PySequence_GetItem(chosen, 0)) == NULL)
        goto done;
    PyObject *ledger, *track;
    if (ledger_and_track(self, plan->accounting, name, &ledger, &track) < 0)
        goto done;
    Py_INCREF(ledger);
    Py_INCREF(track);
    int failed = charge_direct(plan->accounting, ledger, track, plan->herd, plan->now) < 0;
    double unit = 0.0, capacity = 0.0;
    failed = failed || get_double(ledger, &a_unit, &unit) < 0 || item_double(chosen, 1, &capacity) < 0;
    Py_DECREF(ledger);
    Py_DECREF(track);
    if (failed || lift(farm, name, plan->herd * unit / capacity) < 0)
        goto done;
    if ((names = PyTuple_Pack(1, name)) == NULL || (hosts = attr_get(&a_hosts, farm)) == NULL
        || answered(hosts, names, now) < 0)
        goto done;
    /* (a direct asker's answer does not count towards the mean herd: no answered()) */
    PyObject *table = plan->sticky_table;
    if ((self->keyed || plan->sticky_entry == NULL) && PyDict_GET_SIZE(table) >= self->sticky_limit)
        PyDict_Clear(table);
    PyObject *entry = self->keyed ? PyTuple_Pack(3, now, names, plan->qtype)
                                  : PyTuple_Pack(4, now, names, plan->qtype, self->ttl);
    if (entry == NULL)
        goto done;
    failed = PyDict_SetItem(table, self->keyed ? plan->key : plan->client, entry) < 0;
    Py_DECREF(entry);
    if (failed)
        goto done;
    PyObject *open = lookup(farm, &a_failing_open, plan->qtype);
    int is_open = open == NULL ? (PyErr_Occurred() ? -1 : 0) : PyObject_IsTrue(open);
    if (is_open < 0 || (herd = PyFloat_FromDouble(plan->herd)) == NULL)
        goto done;
    PyObject *how = is_open ? v_fail_open : self->keyed ? v_key : v_policy;
    if (set_last(farm, PyTuple_Pack(10, now, plan->client, plan->qtype, herd, before, names, how,
                                    plan->key ? plan->key : Py_None, self->ttl, v_asker)) < 0)
        goto done;
    result = self->keyed ? Py_NewRef(names) : PyTuple_Pack(2, names, self->ttl);
done:
    Py_XDECREF(chosen);
    Py_XDECREF(name);
    Py_XDECREF(names);
    Py_XDECREF(before);
    Py_XDECREF(hosts);
    Py_XDECREF(herd);
    return result;
}

static PyObject *
Chooser_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Chooser *self = (Chooser *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Plan plan = {0};
    /* keyed: (qtype, key[, client]); least-load: (qtype[, client]) */
    Py_ssize_t least = self->keyed ? 2 : 1;
    if (kwnames != NULL || nargs < least || nargs > least + 1) {
        PyErr_SetString(PyExc_TypeError, self->keyed ? "a key answer takes (qtype, key[, client])"
                                                     : "an answer takes (qtype[, client])");
        return NULL;
    }
    plan.qtype = args[0];
    plan.key = self->keyed ? args[1] : NULL;
    plan.client = nargs > least ? Py_NewRef(args[least]) : PyUnicode_FromStringAndSize("", 0);
    if (plan.client == NULL)
        return NULL;
    PyObject *clock = attr_get(&a_clock, self->farm);
    plan.now_object = clock ? PyObject_CallNoArgs(clock) : NULL;
    Py_XDECREF(clock);
    PyObject *result = NULL;
    if (plan.now_object == NULL)
        goto done;
    plan.now = PyFloat_AsDouble(plan.now_object);
    if (plan.now == -1.0 && PyErr_Occurred())
        goto done;
    int planned = 0;
    if (PyUnicode_CheckExact(plan.client) && (plan.key == NULL || PyUnicode_CheckExact(plan.key)))
        planned = plan_answer(self, &plan);
    if (planned > 0) {
        /* the Python counts every answered query, the sticky ones too */
        if (increment(self->farm, &a_seq) < 0)
            goto done;
        result = plan.sticky != NULL ? commit_sticky(self, &plan) : commit(self, &plan);
    } else if (planned == 0) {
        if (self->keyed) {
            PyObject *call[4] = {plan.qtype, plan.key, plan.client, plan.now_object};
            result = PyObject_Vectorcall(self->fallback, call, 4, NULL);
        } else {
            PyObject *call[3] = {plan.qtype, plan.client, plan.now_object};
            result = PyObject_Vectorcall(self->fallback, call, 3, NULL);
        }
    }
done:
    plan_clear(&plan);
    Py_XDECREF(plan.client);
    Py_XDECREF(plan.now_object);
    return result;
}

static PyObject *
Chooser_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"farm", "fallback", "keyed", "new_track", "ttl", "balance",
                               "quick", "gap_alpha", "split", "split_herd", "tie",
                               "sticky_limit", NULL};
    PyObject *farm, *fallback, *new_track, *ttl;
    int keyed;
    double balance, quick, gap_alpha, split_herd, tie;
    Py_ssize_t split, sticky_limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOpOOdddnddn", keywords, &farm, &fallback,
                                     &keyed, &new_track, &ttl, &balance, &quick, &gap_alpha,
                                     &split, &split_herd, &tie, &sticky_limit))
        return NULL;
    Chooser *self = (Chooser *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = Chooser_vectorcall;
    self->farm = Py_NewRef(farm);
    self->fallback = Py_NewRef(fallback);
    self->new_track = Py_NewRef(new_track);
    self->ttl = Py_NewRef(ttl);
    self->keyed = keyed;
    self->balance = balance;
    self->quick = quick;
    self->gap_alpha = gap_alpha;
    self->split = split;
    self->split_herd = split_herd;
    self->tie = tie;
    self->sticky_limit = sticky_limit;
    return (PyObject *)self;
}

/* The chooser and its farm refer to each other: the cycle is the collector's. */
static int
Chooser_traverse(Chooser *self, visitproc visit, void *arg)
{
    Py_VISIT(self->farm);
    Py_VISIT(self->fallback);
    Py_VISIT(self->new_track);
    Py_VISIT(self->ttl);
    return 0;
}

static int
Chooser_clear(Chooser *self)
{
    Py_CLEAR(self->farm);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->new_track);
    Py_CLEAR(self->ttl);
    return 0;
}

static void
Chooser_dealloc(Chooser *self)
{
    PyObject_GC_UnTrack(self);
    Chooser_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Chooser_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return PyVectorcall_Call(self, args, kwargs);
}

static PyTypeObject ChooserType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "lbdns.balance._direct.Chooser",
    .tp_basicsize = sizeof(Chooser),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Chooser(farm, fallback, keyed, ...): a farm's answer to a direct asker's "
              "repeated query, in C, and everything else through fallback (see the source).",
    .tp_new = Chooser_new,
    .tp_dealloc = (destructor)Chooser_dealloc,
    .tp_traverse = (traverseproc)Chooser_traverse,
    .tp_clear = (inquiry)Chooser_clear,
    .tp_call = Chooser_call,
    .tp_vectorcall_offset = offsetof(Chooser, vectorcall),
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "lbdns.balance._direct",
    .m_doc = "A farm's answer to a direct asker's repeated query, in C.",
    .m_size = -1,
};

#define INTERN(var, text)                                                                     \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                                     \
        return NULL;

PyMODINIT_FUNC
PyInit__direct(void)
{
    Attr *attrs[] = {&a_clock, &a_view, &a_valid_until, &a_live, &a_accounting, &a_key_sticky,
                     &a_sticky, &a_window, &a_key_positions, &a_clients, &a_direct, &a_last,
                     &a_ttl, &a_recent, &a_arrival_rate, &a_mean_herd, &a_herd_unit, &a_ring,
                     &a_walks, &a_positions, &a_ledgers, &a_tracks, &a_pending,
                     &a_window_answers, &a_direct_bucket, &a_unit, &a_slots, &a_hosts,
                     &a_answers, &a_last_answered, &a_failing_open, &a_seq, &a_last_answer,
                     &a_rng};
    for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++)
        if ((attrs[i]->name = PyUnicode_InternFromString(attrs[i]->text)) == NULL)
            return NULL;
    INTERN(s_append, "append");
    INTERN(s_random, "random");
    INTERN(s_ledger, "ledger");
    INTERN(v_key, "key");
    INTERN(v_policy, "policy");
    INTERN(v_fail_open, "fail-open");
    INTERN(v_sticky, "sticky");
    INTERN(v_asker, "direct");
    if ((v_direct_track = PyFloat_FromDouble(0.0)) == NULL)
        return NULL;
    v_zero = Py_NewRef(v_direct_track);
    if ((v_one = PyLong_FromLong(1)) == NULL)
        return NULL;
    if (PyType_Ready(&ChooserType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Chooser", (PyObject *)&ChooserType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
