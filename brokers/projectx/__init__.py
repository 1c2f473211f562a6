"""ProjectX Gateway (TopstepX and the other prop firms on it): the adapter and its stream.

`adapter` places and reads orders over REST, `stream` follows the user hub (SignalR);
the registry names `ProjectXBroker` here.
"""

from brokers.projectx.adapter import ProjectXBroker, ProjectXStream, token_expiry

__all__ = ("ProjectXBroker", "ProjectXStream", "token_expiry")
