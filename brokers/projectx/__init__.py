"""ProjectX Gateway (TopstepX and the other prop firms on it): the adapter and its stream.

`adapter` places and reads orders over REST (through `brokers.http`), `stream` follows
the user hub (SignalR), `credentials` is the login's form and token, `records` reads the
Gateway's orders, trades and positions for both. The registry names `ProjectXBroker` here.
"""

from brokers.projectx.adapter import ProjectXBroker
from brokers.projectx.credentials import token_expiry
from brokers.projectx.stream import ProjectXStream

__all__ = ("ProjectXBroker", "ProjectXStream", "token_expiry")
