"""State stores: where reports and host changes live, chosen by the ``--state`` URL.

``memory://`` (the default) keeps everything in this process and persists host changes to the
data dir; ``redis://`` shares them between several lbdns servers. Both have the same small
interface, ``Store``; the Redis client is imported only when a Redis URL is used.

Every change goes through the store, which applies it to the local registry (so the next query
sees it) and makes it durable or shared. The query path never calls the store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbdns.config import Config
    from lbdns.registry import Registry
    from lbdns.store.base import Store


def open_store(config: Config, registry: Registry) -> Store:
    """The store named by ``config.state``."""
    url = config.state
    if url.startswith("memory://"):
        from lbdns.store.memory import MemoryStore

        return MemoryStore(registry, data_dir=config.data_dir)
    if url.startswith(("redis://", "rediss://", "redis+sentinel://")):
        from lbdns.store.redis.store import RedisStore

        return RedisStore(registry, url=url, config=config)
    raise ValueError(f"unknown state URL {url!r}")


def default_data_dir() -> Path:
    """Where host changes are kept when no data dir is given: $LBDNS_DATA_DIR, else ./data."""
    return Path(os.environ.get("LBDNS_DATA_DIR") or "data")
