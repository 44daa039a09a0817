"""Example Greengrass component that asks the edgeboost inference component for predictions.

The modern equivalent of the old com.ml.consumer: it subscribes once to the response topic,
publishes each request with an id, waits for the reply with that id, and prints it with the
round-trip time. Needs only Python and awsiotsdk; copy it and change what it sends.

    python3 consumer.py --requests requests.json [--repeat N] [--batch] [--legacy]

``--legacy`` speaks the old protocol instead: a Lambda-style event on local/inference, a bare
list of predictions back on local/result.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from typing import Any

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import BinaryMessage, PublishMessage


class Replies:
    """Replies matched to requests by id (or in order, for the id-less legacy protocol)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._by_id: dict[Any, Any] = {}
        self._unnamed: list[Any] = []

    def on_event(self, event: Any) -> None:  # runs on the client's callback thread
        message = event.binary_message or event.json_message
        body = message.message
        reply = json.loads(body) if isinstance(body, (bytes, bytearray)) else body
        with self._arrived:
            if isinstance(reply, dict) and "id" in reply:
                self._by_id[reply["id"]] = reply
            else:
                self._unnamed.append(reply)
            self._arrived.notify_all()

    def wait(self, request_id: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                if request_id is None and self._unnamed:
                    return self._unnamed.pop(0)
                if request_id is not None and request_id in self._by_id:
                    return self._by_id.pop(request_id)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._arrived.wait(remaining)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", required=True, help="JSON list of records (objects by name)")
    parser.add_argument("--request-topic", default="edgeboost/inference/request")
    parser.add_argument("--response-topic", default="edgeboost/inference/response")
    parser.add_argument("--legacy", action="store_true", help="old Lambda-style protocol")
    parser.add_argument("--legacy-request-topic", default="local/inference")
    parser.add_argument("--legacy-response-topic", default="local/result")
    parser.add_argument("--batch", action="store_true", help="all records in one request")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between rounds")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)

    with open(args.requests, encoding="utf-8") as f:
        records = json.load(f)
    groups = [records] if args.batch or args.legacy else [[r] for r in records]
    request_topic = args.legacy_request_topic if args.legacy else args.request_topic
    response_topic = args.legacy_response_topic if args.legacy else args.response_topic

    client = GreengrassCoreIPCClientV2()
    replies = Replies()
    _, subscription = client.subscribe_to_topic(
        topic=response_topic, on_stream_event=replies.on_event
    )
    prefix = uuid.uuid4().hex[:8]
    missing = 0
    try:
        for round_number in range(args.repeat):
            for n, group in enumerate(groups):
                request_id = None if args.legacy else f"{prefix}-{round_number}-{n}"
                if args.legacy:
                    payload = {"body": json.dumps(group), "isBase64Encoded": False}
                else:
                    payload = {"id": request_id, "instances": group}
                sent = time.perf_counter()
                client.publish_to_topic(
                    topic=request_topic,
                    publish_message=PublishMessage(
                        binary_message=BinaryMessage(message=json.dumps(payload).encode())
                    ),
                )
                reply = replies.wait(request_id, args.timeout)
                round_trip_ms = (time.perf_counter() - sent) * 1000
                if reply is None:
                    missing += 1
                    print(f"{request_id or 'legacy'}: no reply within {args.timeout} s", flush=True)
                    continue
                shown = {"round_trip_ms": round(round_trip_ms, 3), "reply": reply}
                print(json.dumps(shown), flush=True)
            if args.interval and round_number + 1 < args.repeat:
                time.sleep(args.interval)
    finally:
        subscription.close()
        client.close()
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
