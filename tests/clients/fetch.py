"""A Python HTTP client configured only by the environment `keyswap env` prints (proxy and CA
variables): GET URL with the header NAME: VALUE through LIBRARY, print the status, the HTTP
version and the body. Usage: fetch.py LIBRARY URL NAME VALUE (requests | httpx | aiohttp | urllib).
"""

import asyncio
import sys


def main():
    library, url, name, value = sys.argv[1:5]
    headers = {name: value}
    if library == "requests":
        import requests

        r = requests.get(url, headers=headers, timeout=20)
        print(r.status_code, "HTTP/1.1")
        print(r.text)
    elif library == "httpx":
        import httpx

        with httpx.Client(http2=True, timeout=20) as client:
            r = client.get(url, headers=headers)
        print(r.status_code, r.http_version)
        print(r.text)
    elif library == "aiohttp":
        import aiohttp

        async def go():
            async with aiohttp.ClientSession(trust_env=True) as session:
                async with session.get(url, headers=headers) as r:
                    print(r.status, "HTTP/1.1")
                    print(await r.text())

        asyncio.run(go())
    elif library == "urllib":
        import urllib.request

        r = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=20)
        print(r.status, "HTTP/1.1")
        print(r.read().decode())
    else:
        sys.exit("unknown library " + library)


if __name__ == "__main__":
    main()
