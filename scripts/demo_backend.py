#!/usr/bin/python3
"""A tiny chat back end for the wsgate demo (python3-websockets 10.4, asyncio).

Protocol, JSON text messages:
  on connect      -> {"type": "hello", "backend": NAME}
  {"type": "join", "user": U}   registers the connection as user U (no reply)
  {"type": "chat", "text": T}   -> {"type": "chat", "user": U, "text": T,
                                    "backend": NAME} to every client of THIS
                                    back end, the sender included
  anything else   -> echoed back verbatim (text or binary)
Until a client joins, its user is the `user` query parameter of its request
path, else "anonymous". Prints "listening PORT" once bound (PORT is the real
port, so --port 0 works); stops on SIGINT/SIGTERM, closing clients with 1001.
"""
import argparse
import asyncio
import json
import signal
import sys
import urllib.parse

import websockets


class ChatRoom:
    """The clients of one back end and their user names."""

    def __init__(self, name):
        self.name = name
        self.users = {}  # websocket -> user name

    def user_from_path(self, path):
        query = urllib.parse.urlsplit(path).query
        values = urllib.parse.parse_qs(query).get("user")
        return values[0] if values and values[0] else "anonymous"

    async def handle(self, websocket):
        self.users[websocket] = self.user_from_path(websocket.path)
        try:
            await websocket.send(json.dumps({"type": "hello", "backend": self.name}))
            async for message in websocket:
                await self.on_message(websocket, message)
        except websockets.ConnectionClosed:
            pass
        finally:
            del self.users[websocket]

    async def on_message(self, websocket, message):
        request = None
        if isinstance(message, str):
            try:
                request = json.loads(message)
            except ValueError:
                request = None
        kind = request.get("type") if isinstance(request, dict) else None
        if kind == "join" and isinstance(request.get("user"), str) and request["user"]:
            self.users[websocket] = request["user"]
        elif kind == "chat" and isinstance(request.get("text"), str):
            out = json.dumps({"type": "chat", "user": self.users[websocket],
                              "text": request["text"], "backend": self.name})
            websockets.broadcast(list(self.users), out)
        else:
            await websocket.send(message)


async def serve(host, port, name):
    room = ChatRoom(name)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with websockets.serve(room.handle, host, port) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"listening {bound}", flush=True)
        await stop


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--id", default=None, help="back-end name shown to clients")
    args = parser.parse_args()
    name = args.id or f"{args.host}:{args.port}"
    try:
        asyncio.run(serve(args.host, args.port, name))
    except OSError as error:
        print(f"demo_backend: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
