"""Tradovate (and NinjaTrader accounts, same API): the adapter and its stream.

`adapter` places and reads orders over REST, `stream` follows the user's WebSocket;
the registry names `TradovateBroker` here.
"""

from brokers.tradovate.adapter import TradovateBroker, TradovateStream

__all__ = ("TradovateBroker", "TradovateStream")
