"""The DICOMweb routes, all under ``/aets/{aet}``: QIDO-RS, MWL-RS, WADO-RS, STOW-RS and health."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import trio
from quart import Blueprint, Response, jsonify, request

from rst.auth import may_use
from rst.config import AeConfig, Config, S3AeConfig
from rst.dicom.accept import negotiate_instances, negotiate_json
from rst.dicom.query import Level, QidoQuery, parse_qido
from rst.dicom.uid import check_uid
from rst.dicom.worklist import parse_worklist
from rst.errors import NotSupported, PayloadTooLarge, RstError
from rst.http import frame_routes, metadata_routes, rendered_routes, wado_uri_routes
from rst.http.context import RouteContext
from rst.http.multipart_body import PartSender, start_multipart
from rst.http.request_scope import request_nursery
from rst.http.streaming import ITEMS_AHEAD, start_stream
from rst.metrics import Metrics
from rst.services.protocols import Backend
from rst.services.qido import MORE, SearchPlan, json_array, produce_matches
from rst.services.stow import store_instances
from rst.services.wado import produce_parts

__all__ = ["dicomweb_blueprint"]

FUZZY_WARNING = (
    "299 {host}: The fuzzymatching parameter is not supported. "
    "Only literal matching has been performed."
)
MORE_WARNING = "299 {host}: There are additional results that can be requested"


def dicomweb_blueprint(
    config: Config, backends: Mapping[str, Backend], metrics: Metrics | None = None
) -> Blueprint:
    bp = Blueprint("dicomweb", __name__)

    ctx = RouteContext(config, backends)
    backend_for, public_host, base_url = ctx.backend_for, ctx.public_host, ctx.base_url
    accept_param, path_keys = ctx.accept_param, ctx.path_keys

    # -- AEs and health --------------------------------------------------------------------

    @bp.get("/aets")
    async def list_aets() -> Response:
        return jsonify([describe(ae) for ae in config.aets if may_use(ae.aet)])

    def describe(ae: AeConfig | S3AeConfig) -> dict[str, Any]:
        where: dict[str, Any] = (
            {
                "called_aet": ae.called_aet,
                "host": ae.host,
                "port": ae.port,
                "retrieve": ae.retrieve,
            }
            if isinstance(ae, AeConfig)
            else {"endpoint": ae.endpoint, "bucket": ae.bucket, "prefix": ae.prefix}
        )
        return {"aet": ae.aet, "backend": ae.backend, **where, "url": base_url(ae.aet)}

    @bp.get("/aets/<aet>")
    async def health(aet: str) -> Response:
        backend = backend_for(aet)
        try:
            await backend.echo()
        except RstError as exc:
            response = jsonify({"aet": aet, "status": "unavailable", "error": exc.message})
            response.status_code = 503
            return response
        return jsonify({"aet": aet, "status": "ok"})

    # -- QIDO-RS ---------------------------------------------------------------------------

    async def search(
        aet: str, level: Level, study: str | None = None, series: str | None = None
    ) -> Response:
        backend = backend_for(aet)
        media_type = negotiate_json(request.headers.get("Accept"), accept_param())
        query = parse_qido(
            level, list(request.args.items(multi=True)), study_uid=study, series_uid=series
        )
        return await answer(aet, backend, query, media_type)

    async def answer(aet: str, backend: Backend, query: QidoQuery, media_type: str) -> Response:
        """Stream the matches of *query* as a DICOM JSON array (QIDO-RS and MWL-RS alike)."""
        base = base_url(aet)

        async def produce(send: trio.MemorySendChannel[Any]) -> None:
            await produce_matches(backend, query, base, send)

        # Rows may wait ahead of the client (ITEMS_AHEAD), so that json_array finds several
        # ready and sends them as one chunk.
        stream = await start_stream(
            request_nursery(request),
            produce,
            prefetch=SearchPlan.of(query).prefetch,
            buffer=ITEMS_AHEAD,
        )
        warnings = []
        if query.fuzzymatching:
            warnings.append(FUZZY_WARNING.format(host=public_host()))
        if any(row is MORE for row in stream.prefetched):
            warnings.append(MORE_WARNING.format(host=public_host()))
        response = Response(json_array(stream), content_type=media_type)
        for warning in warnings:
            response.headers.add("Warning", warning)
        return response

    qido_rules: tuple[tuple[str, Level], ...] = (
        ("studies", "STUDY"),
        ("series", "SERIES"),
        ("instances", "IMAGE"),
        ("studies/<study>/series", "SERIES"),
        ("studies/<study>/instances", "IMAGE"),
        ("studies/<study>/series/<series>/instances", "IMAGE"),
    )
    for rule, level in qido_rules:
        bp.add_url_rule(
            f"/aets/<aet>/{rule}", f"qido:{rule}", partial(search, level=level), methods=["GET"]
        )

    # -- MWL-RS: the modality worklist, by Modality Worklist C-FIND -----------------------

    @bp.get("/aets/<aet>/modality-scheduled-procedure-steps")
    async def worklist(aet: str) -> Response:
        backend = backend_for(aet)
        if isinstance(config.ae(aet), S3AeConfig):
            raise NotSupported(
                f"the AE {aet} is an S3 archive; modality worklists come from a DIMSE PACS "
                "(Modality Worklist C-FIND)"
            )
        media_type = negotiate_json(request.headers.get("Accept"), accept_param())
        query = parse_worklist(list(request.args.items(multi=True)))
        return await answer(aet, backend, query, media_type)

    # -- WADO-RS ---------------------------------------------------------------------------

    async def retrieve(
        aet: str, study: str, series: str | None = None, sop: str | None = None
    ) -> Response:
        backend = backend_for(aet)
        keys = path_keys(study, series, sop)
        fmt = negotiate_instances(request.headers.get("Accept"), accept_param())

        async def produce(parts: PartSender) -> None:
            await produce_parts(backend, keys, fmt, parts)

        body = await start_multipart(request_nursery(request), produce)
        return body.response("application/dicom", fmt.transfer_syntax)

    for rule in (
        "studies/<study>",
        "studies/<study>/series/<series>",
        "studies/<study>/series/<series>/instances/<sop>",
    ):
        bp.add_url_rule(f"/aets/<aet>/{rule}", f"wado:{rule}", retrieve, methods=["GET"])
    frame_routes.register(bp, ctx)
    metadata_routes.register(bp, ctx)
    rendered_routes.register(bp, ctx)
    wado_uri_routes.register(bp, ctx)

    # -- STOW-RS ---------------------------------------------------------------------------

    async def stow(aet: str, study: str | None = None) -> Response:
        backend = backend_for(aet)
        if study is not None:
            check_uid("study", study)
        limit = config.http.max_stow_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(
                f"the request body ({request.content_length} bytes) exceeds the limit of "
                f"{limit} bytes (http.max_stow_bytes)"
            )

        outcome = await store_instances(
            backend,
            request.body,
            request.headers.get("Content-Type"),
            study_uid=study,
            base=base_url(aet),
            max_bytes=limit,
            max_parts=config.http.max_stow_parts,
        )
        if metrics is not None:
            for label, count in (
                ("stored", len(outcome.referenced)),
                ("failed", len(outcome.failed)),
            ):
                if count:
                    metrics.stow_instances.labels(aet, label).inc(count)
        response = jsonify(outcome.to_json())
        response.status_code = outcome.http_status
        response.content_type = "application/dicom+json"
        return response

    bp.add_url_rule("/aets/<aet>/studies", "stow", stow, methods=["POST"])
    bp.add_url_rule("/aets/<aet>/studies/<study>", "stow:study", stow, methods=["POST"])

    return bp
