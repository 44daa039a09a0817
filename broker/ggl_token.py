"""Ask ggipcd for a component's token (SVCUID), as Greengrass nucleus lite's recipe runner does.

usage: python -m edgeboost.broker.ggl_token SOCKET COMPONENT [CGROUP]

greengrass_lite.py runs it as its own process because ggipcd checks the *connecting* process:
its systemd unit (from its cgroup, or from the LD_PRELOAD shim reading EDGEBOOST_GGL_COMPONENT
in its environment) must be ``ggl.COMPONENT.service``. With CGROUP, this process first moves
itself into that cgroup; it never moves out, so the caller removes the cgroup once this process
has exited. Prints the token. Standard library plus the project's event-stream codec only.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from edgeboost.runtime.eventstream import FrameDecoder, Header, Message, MessageFlag, MessageType
from edgeboost.runtime.eventstream import encode_message as encode


def main(socket_path: str, component: str, cgroup: str | None = None) -> int:
    if cgroup:
        (Path(cgroup) / "cgroup.procs").write_text(str(os.getpid()))
    connect = encode(
        [
            Header.string(":version", "0.1.0"),
            Header.int32(":message-type", MessageType.CONNECT),
            Header.int32(":message-flags", 0),
            Header.int32(":stream-id", 0),
        ],
        json.dumps({"componentName": component}).encode(),
    )
    decoder = FrameDecoder()
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(10)
        connection.connect(socket_path)
        connection.sendall(connect)
        frames: list[Message] = []
        while not frames:
            data = connection.recv(4096)
            if not data:  # ggipcd refuses by closing the connection
                print(f"ggipcd closed the connection: {component} was refused", file=sys.stderr)
                return 1
            frames = decoder.feed(data)
    ack = frames[0]
    flags = ack.find(":message-flags")
    token = ack.find("svcuid")
    if flags is None or not int(flags.value) & MessageFlag.CONNECTION_ACCEPTED or token is None:
        print(f"no token for {component}: {ack}", file=sys.stderr)
        return 1
    print(token.value)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
