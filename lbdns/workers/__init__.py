"""Several DNS worker processes behind one server: ``workers: N`` in the config.

The main process is worker 0: it binds the DNS sockets with ``SO_REUSEPORT``, holds the store
and the only HTTP listener, and starts workers 1..N-1 (``python -m lbdns.workers.worker``), each
with its own event loop, registry and DNS sockets on the same addresses, so the kernel spreads
queries over the N processes by their 4-tuple. The main process is the hub of a star of unix
socket pairs (``channel``), one per worker. With the embedded store (``memory://``):

* every change the store accepts (reports, hosts added, changed or removed, admin states and
  drains) and every zone reload is sent to each worker the moment it is applied in the main
  process (``hub.HubStore``);
* every ``EXCHANGE_INTERVAL`` each process sends what its answers charged (the farms'
  ``take_accounting``, as the Redis store's answer exchange does between servers) and how many
  answers named each host; the main process applies the workers' charges to its own ledgers and
  relays them to the other workers, so that every process's ledgers are farm-wide;
* a worker that exits is logged and started again.

Whatever the store, only the main process runs the health-check probes: each verdict that
changes reaches every worker within ``EXCHANGE_INTERVAL``, and all of them every
``CHECK_SNAPSHOT_INTERVAL`` (``checks``), so every worker answers with the main process's check
state and the probes' load does not grow with N.

Whatever the store, each worker sends its DNS counters (its latency histogram and query-log
counts among them) every second and ``/metrics`` and ``/v1/status`` add them up.

With a shared store (Redis) there is nothing else to relay: each worker opens its own connection
and is one more server of the cluster (it reads the changes and exchanges its answers' accounting
through Redis, as any lbdns server does); the hub only starts, restarts and counts the workers
and tells them to reload.
"""

EXCHANGE_INTERVAL = 0.05  # seconds between two accounting exchanges (the freshness budget)
CHECK_SNAPSHOT_INTERVAL = 1.0  # seconds between two full copies of the check verdicts
