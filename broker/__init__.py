"""A local stand-in for the Greengrass Nucleus's IPC server (stdlib only; not shipped to devices).

It speaks event-stream RPC over a Unix socket exactly as the awsiotsdk client expects, and
implements ``SubscribeToTopic`` and ``PublishToTopic`` with the Nucleus's topic matching and
authorization (taken from component recipes); ``GetConfiguration``, ``UpdateConfiguration`` and
``SubscribeToConfigurationUpdate`` on each component's configuration (its recipe's
DefaultConfiguration); ``UpdateState``; and ``SubscribeToComponentUpdates`` and
``DeferComponentUpdate``, with a deployment's side of them in :meth:`Broker.run_deployment`
(SIGUSR1 to ``edgeboost broker``). Every other operation gets a ServiceError. Tests and
demos point a component at it with ``AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`` and
``SVCUID``; see :class:`Broker`.

Where Greengrass nucleus lite 2.6.0 (AWS's C Nucleus; the tests run it as a second, real server)
departs from the Java Nucleus, the broker keeps to the Java Nucleus, read from its source
(aws-greengrass-nucleus; "PubSub" is PubSubIPCEventStreamAgent, "OCH" OperationContinuationHandler,
"Config" ConfigStoreIPCEventStreamAgent; aws-c-event-stream is its transport). Pinned against
both servers in tests/test_ipc_servers.py, tests/test_ipc_golden.py and (configuration and
state) tests/test_broker_config.py:

================  ====================================================  ==========================
behaviour         Java Nucleus, and the broker                          nucleus lite (observed)
================  ====================================================  ==========================
publish response  no order: the events go to an executor, then the      either order (52 of 200
vs own event      response (PubSub.handlePublishToTopicRequest); the    response first)
                  broker sends the response first
JSON numbers      doubles, 7 -> 7.0 (Gson reads a Map<String,           integers kept, doubles to
                  Object>); keys in order                               17 digits, keys sorted
error payload     message, _service, _message, _errorCode (the model    _message and _errorCode
                  and EventStreamOperationError); "Principal X is not   only ("IPC Operation not
                  authorized to perform ..."                            authorized."): the SDK's
                  (AuthorizationHandler.isAuthorized)                   e.message is None
check order       authorization first (PubSub handleRequest)            arguments first
topic ""          UnauthorizedError "Resource cannot be empty"          UnauthorizedError, or
                  (AuthorizationModule.isPresent)                       ServiceError under "*"
topic missing     InvalidArgumentsError when granted                    ServiceError
                  (PubSub.validateSubTopic)
publish to + # *  InvalidArgumentsError (handlePublishToTopicRequest)   delivered
jsonMessage not   InternalServerError (Gson fails in fromJson;          delivered
an object         OCH.handleAndSendError)
binaryMessage     InternalServerError                                   passed through as is
not base64        (Base64BlobSerializerDeserializer of
                  EventStreamRPCServiceModel)
receiveMode       honoured (PubSub.validateReceiveMode)                 ignored
message size      frames up to 16 MiB (aws-c-event-stream)              10,000 bytes; a bigger one
                                                                        closes the connection
new stream id     last + 1, else PROTOCOL_ERROR and close               any id
                  (aws-c-event-stream: s_route_message_by_type)
refused CONNECT   CONNECT_ACK without the accepted flag, then close     closed, no CONNECT_ACK
                  (ServiceOperationMappingContinuationHandler)
header order      the frame's own, then :message-type, :message-flags,  routing headers first
                  :stream-id (aws-c-event-stream)
PublishToTopic    ends its stream (OCH: sendMessage(result,             stream left open (flags 0)
response          !isStreamingOperation()))                             (all responses alike)
GetConfiguration  keys and component names case-insensitive, keys       exact; keys in the order
                  listed in case-insensitive order, "_" keys hidden     written, "_" keys shown;
                  (CaseInsensitiveString, Topics.toPOJO)                defaults from its config
                                                                        file come as strings
configuration     one per changed leaf, with its key path; a new key    one per changed leaf
events            twice (Topics.createLeafChild, then withNewerValue)
update older than FailedUpdateConditionCheckError after the merge       ignored, and a success
the stored one    (Config.UpdateConfigurationOperationHandler)          response
leaf becomes      merged (Topics.updateChild), watches follow the key   ServiceError
container, or
back
timestamp         seconds, integer or not (Gson getAsDouble)            a double only, else
                                                                        InvalidArgumentsError
UpdateState       RUNNING or ERRORED, recorded for the caller           ServiceError: gghealthd,
                  (Broker.component_state); anything else ServiceError  which records states with
                  (LifecycleIPCEventStreamAgent)                        systemd, is not run
component         SubscribeToComponentUpdates and DeferComponentUpdate  ServiceError for both (no
updates           served; a deployment notifies every subscriber and    handler in its ggipcd)
                  waits as UpdateSystemPolicyService does
                  (component_updates.py: 1 s polls, recheckAfterMs 0
                  is "go on", no answer waits out the timeout)
================  ====================================================  ==========================

They agree on: ServiceError for a publishMessage with both members (Java: the union check's
exception through translateExceptions); no authorization for the configuration operations or
UpdateState (Java: ConfigStoreIPCService registers nothing with the AuthorizationHandler,
LifecycleIPCService only Pause/ResumeComponent), so any component reads and watches any other's
configuration; UpdateConfiguration changes the caller's own (the request has no componentName)
and not its accessControl (InvalidArgumentsError); ResourceNotFoundError for a missing key or
component; a timestamp that moves without the value is not reported; and new tokens after a
restart (Java: a new one at every start from AuthenticationHandler.registerAuthenticationToken,
kept under _AUTHENTICATION_TOKENS, which ConfigurationWriter never persists). The broker's tokens
are its caller's: ``edgeboost broker`` issues new ones at each start unless given ``--recipe
FILE:TOKEN``.
"""

from edgeboost.broker.policy import AccessPolicy, ComponentPolicy, PolicyError
from edgeboost.broker.pubsub import SubscriptionInfo
from edgeboost.broker.recipe import RecipeComponent, RecipeError, load_recipe, load_recipe_policy
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
    "RecipeComponent",
    "RecipeError",
    "SocketPathError",
    "SubscriptionInfo",
    "load_recipe",
    "load_recipe_policy",
]
