"""The ground floor: what every app speaks in and builds on, importing no app.

The words of a trade (`core.trading`: a side, a signed quantity, a venue's number bounds)
and of a symbol (`core.contracts`: roots, months, point values); the copier's clock
(`core.clock`); the pieces of a hand-written SQL statement (`core.rawsql`); the encrypted
field of stored secrets and its keys (`core.fields`, `core.keys`). Django itself may be
imported here, no app of the project (tests/test_layering.py): the floors above, brokers
<- accounts <- copier, each import only what is below them.
"""
