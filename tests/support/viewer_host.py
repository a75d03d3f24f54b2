"""A static web server for the prebuilt OHIF viewer, with ``/aets`` proxied to rst.

How a hospital serves OHIF in front of a DICOMweb server (nginx with a ``location /aets``
proxy), in a few lines: the viewer's files from ``tests/e2e/ohif/package/dist``, its
``app-config.js`` replaced by one whose data source is rst (same origin, so no CORS), every
other path answered with ``index.html`` (the viewer routes in the browser), and ``/aets/…``
streamed to and from rst unchanged.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers

__all__ = ["OHIF_DIST", "app_config", "serve_viewer"]

OHIF_DIST = Path(__file__).resolve().parents[1] / "e2e" / "ohif" / "package" / "dist"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host"}


def app_config(aet: str) -> str:
    """OHIF's configuration: one DICOMweb data source, rst's ``/aets/{aet}`` on this origin,
    with the options OHIF's documentation gives for a full DICOMweb server."""
    return f"""window.config = {{
  routerBasename: null,
  extensions: [],
  modes: [],
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  defaultDataSourceName: 'rst',
  dataSources: [
    {{
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'rst',
      configuration: {{
        friendlyName: 'rst',
        name: 'rst',
        wadoUriRoot: window.location.origin + '/aets/{aet}/wado',
        qidoRoot: window.location.origin + '/aets/{aet}',
        wadoRoot: window.location.origin + '/aets/{aet}',
        qidoSupportsIncludeField: true,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: {{ enabled: true }},
      }},
    }},
  ],
}};
"""


def _viewer_app(dist: Path, config_js: str, upstream: httpx.AsyncClient) -> QuartTrio:
    app = QuartTrio("ohif-host", static_folder=None)

    @app.route("/aets", methods=["GET", "POST", "OPTIONS"])
    @app.route("/aets/<path:rest>", methods=["GET", "POST", "OPTIONS"])
    async def proxy(rest: str = "") -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.get_data()
        outgoing = upstream.build_request(
            request.method,
            f"/aets/{rest}" if rest else "/aets",
            params=list(request.args.items(multi=True)),
            headers=headers,
            content=body,
        )
        answer = await upstream.send(outgoing, stream=True)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    yield chunk
            finally:
                await answer.aclose()

        kept = Headers(
            [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in _HOP_BY_HOP]
        )
        response = Response(relay(), status=answer.status_code, headers=kept)
        response.timeout = None
        return response

    @app.route("/", defaults={"path": ""})
    @app.route("/<path:path>")
    async def viewer_file(path: str) -> Response:
        if path == "app-config.js":
            return Response(config_js, content_type="application/javascript")
        file = (dist / path).resolve()
        if not path or not file.is_relative_to(dist) or not file.is_file():
            file = dist / "index.html"  # a route of the single-page app
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        return Response(await trio.Path(file).read_bytes(), content_type=content_type)

    return app


@asynccontextmanager
async def serve_viewer(rst_url: str, aet: str) -> AsyncIterator[str]:
    """Serve OHIF on a free loopback port for the block; yield its URL."""
    if not (OHIF_DIST / "index.html").is_file():
        raise RuntimeError(f"OHIF is not unpacked in {OHIF_DIST}: run scripts/install-deps")
    mimetypes.add_type("application/wasm", ".wasm")
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with (
        httpx.AsyncClient(base_url=rst_url, timeout=120) as upstream,
        trio.open_nursery() as nursery,
    ):
        app = _viewer_app(OHIF_DIST, app_config(aet), upstream)
        binds = await nursery.start(serve, app, config)
        yield binds[0]
        nursery.cancel_scope.cancel()
