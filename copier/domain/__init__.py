"""The copier's domain: the copy rules and the symbol mapping, pure functions over plain data.

Nothing here touches the database, the network or a clock of its own; it imports only
`core` and itself (tests/test_layering.py), so it reads, and tests, without the rest.
"""
