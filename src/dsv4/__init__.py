"""dsv4: the DeepSeek-V4 stack (model, cache, engine, encoding, server, sandbox, agent)."""

__version__ = "0.1.0"
