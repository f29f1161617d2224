"""Several DNS worker processes behind one server: ``workers: N`` in the config.

The main process is worker 0: it binds the DNS sockets with ``SO_REUSEPORT``, holds the store
and the only HTTP listener, and starts workers 1..N-1 (``python -m lbdns.workers.worker``), each
with its own event loop, registry and DNS sockets on the same addresses, so the kernel spreads
queries over the N processes by their 4-tuple. The main process is the hub of a star of unix
socket pairs (``channel``), one per worker:

* every change the store accepts (reports, hosts added, changed or removed, admin states and
  drains) and every zone reload is sent to each worker the moment it is applied in the main
  process (``hub.HubStore``);
* every ``EXCHANGE_INTERVAL`` each process sends what its answers charged (the farms'
  ``take_accounting``, as the Redis store's answer exchange does between servers) and how many
  answers named each host; the main process applies the workers' charges to its own ledgers and
  relays them to the other workers, so that every process's ledgers are farm-wide;
* the workers' DNS counters come with the exchange, and ``/metrics`` adds them up;
* a worker that exits is logged and started again.

Only the embedded store (``memory://``) is supported with more than one worker: a Redis-backed
server already shares its state with other servers through Redis (run one server per core).
"""

EXCHANGE_INTERVAL = 0.05  # seconds between two accounting exchanges (the freshness budget)
