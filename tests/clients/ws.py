"""A real WebSocket peer on both ends, from the `websockets` library (PyPI).

`ws.py serve PORT`: a plain ws:// echo server on 127.0.0.1:PORT (behind nginx in the tests). It
greets each connection with the Authorization header it received, as a careless server might, then
echoes every message.

`ws.py connect URL MESSAGE`: a client configured only by its environment (https_proxy,
SSL_CERT_FILE: what `keyswap env` prints). It sends MESSAGE and prints the greeting and the echo,
one a line.
"""

import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


async def greet_and_echo(ws):
    await ws.send("hello, " + ws.request.headers.get("Authorization", "-"))
    async for message in ws:
        await ws.send(message)


async def server(port):
    async with serve(greet_and_echo, "127.0.0.1", port) as running:
        print("listening", flush=True)
        await running.serve_forever()


async def client(url, message):
    # proxy=True (the default): https_proxy from the environment, as a sandbox's client would.
    async with connect(url, additional_headers={"Authorization": "Bearer " + message}) as ws:
        print(await ws.recv(), flush=True)
        await ws.send("echo " + message)
        print(await ws.recv(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(server(int(sys.argv[2])))
    else:
        asyncio.run(client(sys.argv[2], sys.argv[3]))
