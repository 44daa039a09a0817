"""A local stand-in for the Greengrass Nucleus's IPC pub/sub (stdlib only; not shipped to devices).

It speaks event-stream RPC over a Unix socket exactly as the awsiotsdk client expects, implements
``SubscribeToTopic`` and ``PublishToTopic`` with the Nucleus's topic matching and authorization
(taken from component recipes), and answers every other operation with a ServiceError. Tests and
demos point a component at it with ``AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`` and
``SVCUID``; see :class:`Broker`.
"""

from edgeboost.broker.policy import AccessPolicy, ComponentPolicy, PolicyError
from edgeboost.broker.pubsub import SubscriptionInfo
from edgeboost.broker.recipe import RecipeError, load_recipe_policy
from edgeboost.broker.server import SOCKET_ENV, TOKEN_ENV, Broker, BrokerError
from edgeboost.broker.socketfile import SocketPathError

__all__ = [
    "SOCKET_ENV",
    "TOKEN_ENV",
    "AccessPolicy",
    "Broker",
    "BrokerError",
    "ComponentPolicy",
    "PolicyError",
    "RecipeError",
    "SocketPathError",
    "SubscriptionInfo",
    "load_recipe_policy",
]
