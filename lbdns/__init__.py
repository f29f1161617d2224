"""lbdns: a load-aware authoritative DNS server for farms of real-time hosts."""

__version__ = "0.1.0"
