"""dnsserver."""
