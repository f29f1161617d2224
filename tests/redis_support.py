"""Real ``redis-server`` processes for tests (``lbdns.testing.redis``)."""

from lbdns.testing.redis import REDIS_SERVER, RedisProcess, SentinelProcess, redis_available

__all__ = ["REDIS_SERVER", "RedisProcess", "SentinelProcess", "redis_available"]
