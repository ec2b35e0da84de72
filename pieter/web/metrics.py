"""`GET /metrics`: the Prometheus text format, made by python3-prometheus-client from what Redis holds.

Every figure is read from Redis at scrape time (counts, the queue, hosts' beats) or from the counters that every
change of state keeps there (store.py's _NOTIFY), so every server sharing the Redis reports the same numbers and
a restart resets nothing. A scrape while Redis is down answers `pieter_redis_up 0` and the build info only.
"""

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector
from sanic import Request
from sanic.response import HTTPResponse, raw

from pieter import __version__
from pieter.models import State
from pieter.store import BUCKETS, REDIS_DOWN, Store


class Snapshot(Collector):
    """The families of one scrape, read before it (a collector's `collect` cannot await)."""

    def __init__(self, families: list[Any]):
        self.families = families

    def collect(self) -> Iterator[Any]:
        yield from self.families


async def read(store: Store) -> list[Any]:
    counts = await store.counts()
    stats = await store.stats()
    oldest = await store.oldest_queued()
    hosts = await store.hosts()
    jobs = GaugeMetricFamily("pieter_jobs", "Jobs kept, by state", labels=["state"])
    for state in State:
        jobs.add_metric([state.value], counts[state.value])
    runs = CounterMetricFamily("pieter_runs", "Jobs that ended, by result", labels=["result"])
    for result, n in sorted(stats["results"].items()):
        runs.add_metric([result], n)
    slots = GaugeMetricFamily("pieter_host_slots", "Job slots of each host (PIETER_MAX_JOBS)", labels=["host"])
    used = GaugeMetricFamily("pieter_host_slots_in_use", "Jobs running on each host", labels=["host"])
    for host in hosts:
        slots.add_metric([host["host"]], host["slots"])
        used.add_metric([host["host"]], host["running"])
    return [
        jobs,
        GaugeMetricFamily("pieter_queue_length", "Jobs waiting in the queue", value=counts["queued"]),
        GaugeMetricFamily(
            "pieter_queue_oldest_age_seconds",
            "How long the oldest queued job has waited",
            value=time.time() - oldest if oldest else 0.0,
        ),  # fmt: skip
        runs,
        histogram("pieter_job_duration_seconds", "Run time of ended jobs", stats["duration_seconds"]),
        histogram("pieter_queue_wait_seconds", "Time from queued to running", stats["queue_wait_seconds"]),
        slots,
        used,
    ]


def histogram(name: str, documentation: str, kept: dict[str, float]) -> HistogramMetricFamily:
    """A histogram from its Redis hash (cumulative bucket counts by upper bound, `+Inf`, `sum`)."""
    buckets = [(str(float(le)), kept.get(str(le), 0.0)) for le in BUCKETS] + [("+Inf", kept.get("+Inf", 0.0))]
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=kept.get("sum", 0.0))


async def metrics(request: Request) -> HTTPResponse:
    families: list[Any] = []
    try:
        families = await read(request.app.ctx.store)
        up = 1.0
    except REDIS_DOWN:
        up = 0.0
    build = InfoMetricFamily("pieter_build", "This server's version", value={"version": __version__})
    families += [GaugeMetricFamily("pieter_redis_up", "Whether Redis answered this scrape", value=up), build]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(families))
    return raw(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
