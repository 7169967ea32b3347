"""The example app: one FastAPI route per strategy, a Starlette area, a middleware-throttled
area and a WebSocket endpoint, all sharing the backend given to :func:`create_app`.

Run it for curl with ``hatch run demo --serve`` (http://127.0.0.1:8000), then for instance::

    curl -i http://127.0.0.1:8000/strategies/token-bucket
"""

from __future__ import annotations

import typing

from fastapi import Depends, FastAPI, WebSocket
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from traffik import HTTPThrottle, ThrottleBackend, WebSocketThrottle
from traffik.exceptions import ConnectionThrottled
from traffik.fastapi import throttled
from traffik.starlette import MiddlewareThrottle, ThrottleMiddleware
from traffik.strategies import (
    FixedWindowStrategy,
    GCRAStrategy,
    LeakyBucketStrategy,
    LeakyBucketWithQueueStrategy,
    SlidingWindowCounterStrategy,
    SlidingWindowLogStrategy,
    Strategy,
    TokenBucketStrategy,
    TokenBucketWithDebtStrategy,
)

__all__ = ["RATE", "STRATEGIES", "create_app"]

#: The rate every strategy route applies: 5 requests per second.
RATE = "5/s"

#: Route name -> strategy. Parameters chosen so the differences show in a 3-second burst.
STRATEGIES: dict[str, Strategy] = {
    "fixed-window": FixedWindowStrategy(),
    "sliding-log": SlidingWindowLogStrategy(),
    "sliding-counter": SlidingWindowCounterStrategy(),
    "token-bucket": TokenBucketStrategy(burst_size=10),
    "token-debt": TokenBucketWithDebtStrategy(max_debt=3),
    "leaky-bucket": LeakyBucketStrategy(),
    "leaky-queue": LeakyBucketWithQueueStrategy(queue_size=2),
    "gcra": GCRAStrategy(burst=1),
}


def create_app(backend: ThrottleBackend[typing.Any, typing.Any]) -> FastAPI:
    """Build the example app on ``backend`` (opened and closed by the app's lifespan)."""
    app = FastAPI(title="traffik example", lifespan=backend.lifespan)

    # 1. FastAPI dependencies: one route per strategy.
    for name, strategy in STRATEGIES.items():
        throttle = HTTPThrottle(uid=name, rate=RATE, strategy=strategy)

        async def strategy_route(name: str = name) -> dict[str, str]:
            return {"strategy": name}

        app.add_api_route(
            f"/strategies/{name}",
            strategy_route,
            methods=["GET"],
            dependencies=[Depends(throttle)],
            name=f"strategy-{name}",
        )

    # 2. The decorator, with a cost: each call spends 2 of 10 units per second.
    @app.get("/reports")
    @throttled(HTTPThrottle(uid="reports", rate="10/s", cost=2))
    async def reports() -> dict[str, str]:
        return {"report": "ready"}

    # 3. Plain Starlette routes calling the throttle directly (route template keying:
    #    /starlette/items/1 and /starlette/items/2 share one budget per client).
    items_throttle = HTTPThrottle(uid="items", rate="3/s")

    async def item(request: Request) -> JSONResponse:
        await items_throttle(request)
        return JSONResponse({"item": request.path_params["item_id"]})

    app.router.routes.append(Mount("/starlette", routes=[Route("/items/{item_id}", item)]))

    # 4. A middleware-throttled area: everything under /area/ shares 4 per second.
    @app.get("/area/{page}")
    async def area(page: str) -> dict[str, str]:
        return {"page": page}

    app.add_middleware(
        ThrottleMiddleware,
        middleware_throttles=[
            MiddlewareThrottle(HTTPThrottle(uid="area", rate="4/s"), prefix="/area/")
        ],
    )

    # 5. A WebSocket endpoint throttled per message.
    ws_throttle = WebSocketThrottle(uid="ws-messages", rate="3/s")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            data = await websocket.receive_json()
            if data == "bye":
                await websocket.send_json({"status": "bye"})
                break
            try:
                await ws_throttle(websocket)
            except ConnectionThrottled as exc:
                await websocket.send_json(
                    {
                        "status": "throttled",
                        "status_code": exc.status_code,
                        "retry_after": exc.retry_after,
                    }
                )
                continue
            await websocket.send_json({"status": "ok", "echo": data})
        await websocket.close()

    return app
