"""The shared store in Redis: ``store`` (RedisStore), ``scripts`` (the Lua writes), ``urls``."""
