"""Health checks sent by the servers: one probe (``attempt``) and the task that schedules them
(``prober``). What a result does to a host is in ``lbdns.balance.check``."""
