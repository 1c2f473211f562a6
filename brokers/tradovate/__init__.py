"""Tradovate (and NinjaTrader accounts, same API): the adapter and its stream.

`adapter` places and reads orders over REST (through `brokers.http`), `stream` follows
the user's WebSocket, `credentials` is the login's form and addresses, `records` reads
the venue's orders, refusals and fills for both. The registry names `TradovateBroker` here.
"""

from brokers.tradovate.adapter import TradovateBroker
from brokers.tradovate.stream import TradovateStream

__all__ = ("TradovateBroker", "TradovateStream")
