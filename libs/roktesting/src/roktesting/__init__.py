"""Pytest fixtures for real parts: a nats-server, an S3 server, PostgreSQL. Loaded by ``roktesting.plugin``.

When a real part is missing, the tests that need it fail with a message saying what to install; they are
never skipped.
"""
