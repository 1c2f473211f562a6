"""Use cases: they own transactions and locks, call the rules and the broker adapters.

Admin actions, Celery tasks, the listener and management commands all go
through these functions; none of them holds business logic of its own.
"""
