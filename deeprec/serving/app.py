"""The HTTP face of the service (Starlette on uvicorn): JSON routes, the body limit, the bearer token,
and one-line 4xx answers for everything refused (counted in /stats, never a 500, never half applied).

Routes: POST /recommend, POST /feedback, GET /health, GET /stats, GET /metrics (Prometheus text),
POST /admin/snapshot. /feedback and /admin/* need `Authorization: Bearer <token>` when a token is set.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deeprec.serving.committer import Unavailable
from deeprec.serving.schema import BadRequest, parse_feedback, parse_recommend
from deeprec.serving.service import Service

log = logging.getLogger("deeprec.serve")

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    """Prometheus counters and latency histograms, in a registry of this app's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("deeprec_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("deeprec_request_seconds", "request latency by endpoint", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.events = Counter("deeprec_feedback_events", "feedback events by outcome", ["outcome"], registry=self.registry)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(400, f"Content-Length {declared!r} is not a number", "bad_header")
        if int(declared) > limit:
            raise BadRequest(413, f"the body has {declared} bytes; at most limits.max_body_bytes={limit}", "body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body exceeds limits.max_body_bytes={limit} bytes", "body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: Service) -> Starlette:
    cfg = service.cfg
    token = cfg.token
    metrics = Metrics()
    limit = cfg.limits.max_body_bytes

    def refuse(exc: BadRequest, endpoint: str) -> JSONResponse:
        service.rejected(exc, endpoint)
        if exc.events and endpoint == "feedback":
            metrics.events.labels("rejected").inc(exc.events)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=headers)

    def authorize(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())):
            raise BadRequest(401, "this endpoint needs the header 'Authorization: Bearer <token>' with the service's token",
                             "unauthorized", events=0)

    def check_route(request: Request, user_ids: list[str]) -> None:
        """Behind a sharding proxy the route key (?user_id=) must be the body's user, or state would split."""
        if not cfg.route_key:
            return
        routed = request.query_params.get("user_id")
        wrong = [u for u in user_ids if u != routed]
        if routed is None or wrong:
            raise BadRequest(421, f"route_key=true: the request must carry ?user_id= equal to the body's user_id "
                                  f"(query {routed!r}, body {wrong[0] if wrong else user_ids[0]!r}); a batch holds one user",
                             "misrouted", events=len(user_ids))

    def unavailable(exc: Unavailable, endpoint: str) -> JSONResponse:
        metrics.requests.labels(endpoint, "503").inc()
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    async def recommend(request: Request) -> Response:
        started = time.perf_counter()
        try:
            req = parse_recommend(await read_body(request, limit))
            check_route(request, [str(req.user_id)])
            answer = service.recommend(req)
        except BadRequest as exc:
            metrics.requests.labels("recommend", str(exc.status)).inc()
            return refuse(exc, "recommend")
        metrics.requests.labels("recommend", "200").inc()
        metrics.latency.labels("recommend").observe(time.perf_counter() - started)
        return JSONResponse(answer)

    async def feedback(request: Request) -> Response:
        started = time.perf_counter()
        try:
            authorize(request)
            events = parse_feedback(await read_body(request, limit), cfg.limits.max_batch_events)
            check_route(request, [str(e.user_id) for e in events])
            answer = await service.feedback(events)
        except BadRequest as exc:
            metrics.requests.labels("feedback", str(exc.status)).inc()
            return refuse(exc, "feedback")
        except Unavailable as exc:
            return unavailable(exc, "feedback")
        metrics.requests.labels("feedback", "200").inc()
        metrics.events.labels("new").inc(answer["accepted"])
        metrics.events.labels("duplicate").inc(answer["duplicates"])
        metrics.latency.labels("feedback").observe(time.perf_counter() - started)
        return JSONResponse(answer)

    async def health(request: Request) -> Response:
        failure = service.committer.failure
        body = {"status": "failed" if failure else "ok", "model": service.model_name, "model_version": service.version,
                "state_seq": service.state.applied_seq, "failure": failure}
        return JSONResponse(body, status_code=503 if failure else 200)

    async def stats(request: Request) -> Response:
        return JSONResponse(service.stats())

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def snapshot(request: Request) -> Response:
        try:
            authorize(request)
            seq = await service.committer.snapshot_now()
        except BadRequest as exc:
            return refuse(exc, "admin")
        except Exception as exc:  # the disk's problem
            return unavailable(Unavailable(f"the snapshot could not be written ({exc})"), "admin")
        return JSONResponse({"snapshot_seq": seq})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        reasons = {404: f"no route {request.url.path}; routes: POST /recommend, POST /feedback, GET /health, GET /stats, "
                        "GET /metrics, POST /admin/snapshot",
                   405: f"{request.method} is not allowed on {request.url.path}"}
        return refuse(BadRequest(exc.status_code, reasons.get(exc.status_code, str(exc.detail)), f"http_{exc.status_code}", 0),
                      "other")

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the service log"}, status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    routes = [
        Route("/recommend", recommend, methods=["POST"]),
        Route("/feedback", feedback, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/admin/snapshot", snapshot, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: http_error, Exception: internal_error})
