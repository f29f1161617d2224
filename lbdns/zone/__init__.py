"""Zones: the frozen model (``model``), the zone-file parser (``parse``) and the farm and host
settings shared by zone files and the admin API (``settings``)."""
