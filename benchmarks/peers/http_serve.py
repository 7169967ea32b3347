"""One app of ``--section http`` served by uvicorn (uvloop, httptools) until SIGTERM.

Runs with the Python of the implementation measured (the hatch environment for
traffik from this repository, a peer's own environment otherwise), as::

    python http_serve.py '{"module": "traffik_dev", "app": "fastapi-depends",
                           "backend": "memory", "refuse": false, "servers": {}, "port": 8000}'

``module`` is a peer script of this folder whose ``async http_apps(kind, servers,
refuse)`` returns the apps by name. The app is built inside uvicorn's event loop (some
peers' clients must be created there) and served on 127.0.0.1:``port`` with one worker,
no access log. The driver pins this process to one core and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import typing


async def serve(args: dict[str, typing.Any]) -> None:
    import uvicorn

    module = importlib.import_module(args["module"])
    apps = await module.http_apps(args["backend"], args["servers"], bool(args["refuse"]))
    if args["app"] not in apps:
        raise SystemExit(f"{args['module']} has no app {args['app']!r}: it has {sorted(apps)}")
    config = uvicorn.Config(
        apps[args["app"]],
        host="127.0.0.1",
        port=int(args["port"]),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )
    loop = type(asyncio.get_running_loop()).__module__
    print(f"http_serve: {args['module']}/{args['app']} on loop {loop}", file=sys.stderr)
    await uvicorn.Server(config).serve()


def main() -> None:
    import uvloop

    args = json.loads(sys.argv[1])
    # uvicorn.Server.run() would pick uvloop from ``loop=``; serve() under our own
    # uvloop runner lets the app be built in the loop that serves it.
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
