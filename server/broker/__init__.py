"""The fan-out bus: Redis pub/sub across replicas, or in-process for the embedded default.

Both implement :class:`Broker`. A message is a bell, never the data: losing one must only
delay a client until it catches up from the database.
"""

from server.broker.base import Broker, Subscription
from server.broker.memory import MemoryBroker
from server.broker.redis import RedisBroker

__all__ = ["Broker", "MemoryBroker", "RedisBroker", "Subscription"]
