"""What rst counts, for ``GET /metrics`` (the Prometheus text format, by ``prometheus-client``).

One :class:`Metrics` per server, made by :func:`rst.server.serve` (or by the app factory when a
test builds an app alone) and passed to whatever records: no global registry, so two gateways
in one process — tests do that all the time — never count into each other.

Labels are bounded: route templates (``/aets/{aet}/studies/{study}``, never the UIDs), HTTP
methods, status codes, configured AE titles, and small fixed sets of outcomes and kinds.

With ``[http] workers > 1`` every worker counts into files in a folder the supervisor owns
(``prometheus-client``'s multiprocess mode, chosen by ``PROMETHEUS_MULTIPROC_DIR`` before the
library is first imported) and whichever worker answers ``GET /metrics`` sums them all: the
gateway reports as one. Process metrics (memory, descriptors, CPU) are then left out: the
library cannot sum them.

The meaning of each metric, and alerts worth setting on them: ``docs/discussion/operations.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    values,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from rst import __version__

__all__ = ["Metrics", "multiprocess_enabled"]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""Seconds; long enough for a whole study streamed to a slow client."""
S3_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""Seconds of one S3 call: from a millisecond (a store on the same host) to a minute (a large
object on a slow link, retries included)."""


def multiprocess_enabled() -> bool:
    """Whether prometheus-client was imported with ``PROMETHEUS_MULTIPROC_DIR`` set."""
    return values.ValueClass is not values.MutexValue


class Metrics:
    """The metrics of one gateway, registered in a registry of its own.

    *multiprocess_dir*: this process is one of several workers counting into that folder
    (see the module docstring); the exposition then reads every worker's files."""

    def __init__(self, *, multiprocess_dir: str | None = None) -> None:
        if multiprocess_dir is not None and not multiprocess_enabled():
            raise RuntimeError(
                "metrics of several workers need PROMETHEUS_MULTIPROC_DIR in the environment "
                "before prometheus_client is imported"
            )
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        """What ``GET /metrics`` exposes."""
        # In multiprocess mode the values live in files; registering the metrics as well would
        # expose this worker's share twice.
        own = None if multiprocess_dir is not None else self.registry
        if multiprocess_dir is not None:
            MultiProcessCollector(self.registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        else:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(name, doc, labelnames=tuple(labels), registry=own)

        def gauge(name: str, doc: str, labels: Iterable[str] = (), mode: str = "livesum") -> Gauge:
            return Gauge(
                name,
                doc,
                labelnames=tuple(labels),
                registry=own,
                multiprocess_mode=mode,  # type: ignore[arg-type]
            )

        def histogram(
            name: str, doc: str, labels: Iterable[str], buckets: Iterable[float] = DURATION_BUCKETS
        ) -> Histogram:
            return Histogram(
                name, doc, labelnames=tuple(labels), buckets=tuple(buckets), registry=own
            )

        info = gauge("rst_build_info", "rst's version (the value is always 1)", ["version"], "max")
        info.labels(version=__version__).set(1)

        # -- HTTP (one place: rst.http.request_metrics) -----------------------------------------
        self.http_requests = counter(
            "rst_http_requests",
            "HTTP requests answered, by route template, method and status ('none': the request "
            "ended before a response started)",
            ["route", "method", "status"],
        )
        self.http_duration = histogram(
            "rst_http_request_duration_seconds",
            "From the request's arrival to the last byte of its response",
            ["route", "method"],
        )
        self.http_first_byte = histogram(
            "rst_http_time_to_first_byte_seconds",
            "From the request's arrival to the first byte of its response body (responses "
            "without a body are not in it)",
            ["route"],
        )
        self.http_in_progress = gauge(
            "rst_http_requests_in_progress", "HTTP requests being served now"
        )
        self.http_sent = counter(
            "rst_http_response_bytes", "Bytes of HTTP response bodies sent", ["route"]
        )
        self.http_received = counter(
            "rst_http_request_bytes", "Bytes of HTTP request bodies received", ["route"]
        )
        self.http_broken = counter(
            "rst_http_responses_broken",
            "Responses that started but whose body did not end (client gone, send timeout, or "
            "the archive failed midway)",
            ["route"],
        )
        self.errors = counter(
            "rst_http_errors",
            "Error responses by kind (the rst error class, or HTTPException / InternalError)",
            ["kind"],
        )

        # -- archives ---------------------------------------------------------------------------
        self.retrieves = counter(
            "rst_retrieves",
            "Retrieves from an archive (C-MOVE, C-GET, S3 reads) by AE and outcome: complete, "
            "partial (the archive sent less than it announced or broke off), failed, not_found, "
            "cancelled (the request stopped reading: client gone, shutdown)",
            ["aet", "outcome"],
        )
        self.retrieved_instances = counter(
            "rst_retrieved_instances",
            "Instances received from an archive for retrieves (for DIMSE: C-STORE "
            "sub-operations accepted)",
            ["aet"],
        )
        self.spooled_instances = counter(
            "rst_spool_instances",
            "Retrieved instances written to the spool because the HTTP client read too slowly",
            ["aet"],
        )
        self.spooled_bytes = counter(
            "rst_spool_written_bytes", "Bytes written to spool files", ["aet"]
        )
        self.spool_held = gauge(
            "rst_spool_bytes",
            "Bytes in spool files now, by AE: written for retrieves under way, back to 0 when "
            "they end",
            ["aet"],
        )
        self.s3_read_bytes = counter(
            "rst_s3_read_bytes",
            "Bytes of object data read from S3, whole objects and ranges (what ranged reads "
            "save shows here; S3 bills it as data transfer)",
            ["aet"],
        )
        self.stow_instances = counter(
            "rst_stow_instances", "STOW-RS instances by AE and outcome", ["aet", "outcome"]
        )
        self.associations = histogram(
            "rst_dimse_association_duration_seconds",
            "DIMSE associations rst opened, by AE and operation, from request to release",
            ["aet", "operation"],
        )
        self.associations_open = gauge(
            "rst_dimse_associations_open", "DIMSE associations open (or being opened) now", ["aet"]
        )
        self.without_bulk_data_fallbacks = counter(
            "rst_metadata_without_bulk_data_fallbacks",
            "Metadata retrieves that meant to leave bulk data out (PS3.4 Annex Z) and fell back "
            "to full retrieves, by AE and reason (refused: the PACS refused the context; "
            "failed: it failed the C-GET; remembered: it refused or failed recently)",
            ["aet", "reason"],
        )
        self.association_failures = counter(
            "rst_dimse_association_failures",
            "Associations that could not be used, by AE, operation and kind (unreachable, "
            "rejected, timeout, busy: no free slot within queue_timeout, broken, error)",
            ["aet", "operation", "kind"],
        )

        # -- S3 calls (one place: rst.backends.s3.client) --------------------------------------
        self.s3_calls = counter(
            "rst_s3_calls",
            "S3 API calls by AE, operation (GetObject, GetObjectRange: a ranged GetObject, "
            "PutObject, ListObjectsV2: one per page, HeadBucket, ...) and outcome (ok, "
            "not_found, denied, timeout, unreachable, error, cancelled); botocore's retries "
            "are inside one call",
            ["aet", "operation", "outcome"],
        )
        self.s3_duration = histogram(
            "rst_s3_call_duration_seconds",
            "S3 API calls by AE and operation, from request to the last byte of the answer "
            "(retries included)",
            ["aet", "operation"],
            S3_BUCKETS,
        )

        # -- rst's C-STORE receiver (rst.backends.dimse.receiver) ------------------------------
        self.receiver_associations = counter(
            "rst_receiver_associations",
            "Associations rst's C-STORE receiver accepted, by calling AE title (the configured "
            "ones by name, any other as 'unknown')",
            ["calling_aet"],
        )
        self.receiver_refused = counter(
            "rst_receiver_refused",
            "Connections rst's C-STORE receiver refused, by reason: unknown_caller (calling AE "
            "title or address not configured), limit (dimse.max_connections being served), tls "
            "(TLS handshake failed or stalled), handshake_timeout (no A-ASSOCIATE-RQ in time)",
            ["reason"],
        )
        self.receiver_stores = counter(
            "rst_receiver_stores",
            "C-STORE sub-operations rst's receiver answered, by calling AE title and outcome: "
            "accepted, unsolicited (no retrieve waited for the instance), failed (any other "
            "status, e.g. out of resources)",
            ["calling_aet", "outcome"],
        )
        self.receiver_bytes = counter(
            "rst_receiver_bytes",
            "Bytes of C-STORE data sets rst's receiver read, by calling AE title",
            ["calling_aet"],
        )

        # -- the retrieve cache -----------------------------------------------------------------
        self.cache_lookups = counter(
            "rst_cache_lookups",
            "Retrieves through the cache by AE and result: hit (served from the cache), "
            "joined (followed a retrieve of the same level under way), miss (from the archive)",
            ["aet", "result"],
        )
        self.cache_revalidations = counter(
            "rst_cache_revalidations",
            "Checks of a cached study or series against the PACS (C-FIND) by AE, check (the "
            "C-FIND that decided: count of instances, or list of them) and result: fresh, "
            "changed (retrieved again), failed (served unchecked)",
            ["aet", "check", "result"],
        )
        self.cache_evicted_instances = counter(
            "rst_cache_evicted_instances",
            "Instances evicted from the cache to stay under max_bytes",
        )
        self.cache_evicted_bytes = counter(
            "rst_cache_evicted_bytes", "Bytes evicted from the cache to stay under max_bytes"
        )

        # -- health (rst.health) ----------------------------------------------------------------
        self.archive_up = gauge(
            "rst_archive_up",
            "1 if the archive answered rst's last check (C-ECHO, HeadBucket), else 0",
            ["aet"],
            "livemin",
        )

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of *name* (``rst_receiver_refused_total``, say) whose labels
        include *labels*: what a scrape would show, summed over the labels not given."""
        return sum(
            sample.value
            for metric in self.registry.collect()
            for sample in metric.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def watch_cache_usage(self, usage: Callable[[], int]) -> Callable[[], None]:
        """Expose ``rst_cache_bytes``, read by *usage* when scraped (a shared cache folder
        reads the same from every worker), until the function returned is called."""
        collector = _Usage(usage)
        self.registry.register(collector)
        return lambda: self.registry.unregister(collector)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The body and content type of ``GET /metrics`` (OpenMetrics if *accept* asks).
        Blocking: it may read files and the cache index; run it on a thread."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class _Usage(Collector):
    def __init__(self, usage: Callable[[], int]) -> None:
        self._usage = usage

    def collect(self) -> Iterable[Metric]:
        try:
            used = self._usage()
        except Exception:  # a failing cache never fails a request, nor a scrape
            return []
        return [GaugeMetricFamily("rst_cache_bytes", "Bytes of instances in the cache", used)]

    def describe(self) -> Iterable[Metric]:
        return []
