"""``lbdns agent``: the daemon on each host of a farm that measures its load and reports it.

Modules: ``config`` (the YAML config), ``measure`` (connections, CPU, load, memory),
``custom`` (custom metrics), ``health`` (local health checks), ``push`` (servers, registration,
drain), ``advice`` (the shed hook), ``main`` (the loop and the command).
"""
