"""Input rst cannot encode is a 400 JSON error before the response starts, never a broken
stream, and a malformed path UID never reaches the PACS (issue 8's reproductions).

Each test runs the real server in front of the dev PACS, sends the hostile requests, checks
that the PACS saw nothing of them, then that a valid request still succeeds."""

from __future__ import annotations

from typing import Any

import httpx

from rst.config import AeConfig
from rst.devpacs import DevPacs
from rst.dicom.query import MAX_PARAMETERS, MAX_SEQUENCE_DEPTH
from rst.server import Running
from tests.support.gateway import run_gateway

DIMSE_EVENTS = ("accept", "echo", "find", "move", "get", "store")
UNKNOWN = "1.2.3.999999"


def ae(pacs: DevPacs) -> AeConfig:
    return AeConfig(aet="FAULTY", host="127.0.0.1", port=pacs.port)


def client(running: Running) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{running.http_url}/aets/FAULTY", timeout=30)


def dimse_seen(pacs: DevPacs) -> list[str]:
    return [event for event in pacs.events if event in DIMSE_EVENTS]


def assert_400(response: httpx.Response, *names: str) -> str:
    """A 400 with rst's JSON error body whose message names each of ``names``."""
    where = f"{response.request.method} {response.request.url}"
    assert response.status_code == 400, (where, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), where
    body = response.json()
    assert body["status"] == 400, where
    for name in names:
        assert name in body["error"], (where, name, body["error"])
    return str(body["error"])


async def still_serves(http: httpx.AsyncClient, pacs: DevPacs) -> None:
    """A valid search after the refused ones: 200 with the dev PACS's study."""
    response = await http.get("/studies")
    assert response.status_code == 200
    assert [study["0020000D"]["Value"] for study in response.json()] == [
        [str(pacs.archive.instances()[0].study_uid)]
    ]


QUERY_CASES: list[tuple[str, tuple[str, ...]]] = [
    ("/instances?Rows=70000", ("Rows", "00280010", "VR US")),
    ("/instances?Rows=-1", ("Rows", "00280010", "VR US")),
    ("/instances?TagAngleSecondAxis=-40000", ("TagAngleSecondAxis", "00189219", "VR SS")),
    ("/instances?SimpleFrameList=4294967296", ("SimpleFrameList", "00081161", "VR UL")),
    ("/instances?ReferencePixelX0=2147483648", ("ReferencePixelX0", "00186020", "VR SL")),
    (f"/instances?FileOffsetInContainer={2**64}", ("FileOffsetInContainer", "0008040C", "VR UV")),
    (f"/instances?SelectorSVValue={2**63}", ("SelectorSVValue", "00720082", "VR SV")),
    ("/instances?RecommendedDisplayFrameRateInFloat=1e39", ("00089459", "VR FL")),
    ("/instances?TimeRange=nan", ("TimeRange", "00081163", "VR FD")),
    ("/instances?TimeRange=1e400", ("TimeRange", "00081163", "VR FD")),
    ("/instances?SliceThickness=inf", ("SliceThickness", "00180050", "VR DS")),
    ("/studies?SmallestImagePixelValue=99999", ("SmallestImagePixelValue", "00280106")),
    ("/series?Modality=" + "X" * 17, ("Modality", "00080060", "VR CS")),
    ("/series?Modality=ct", ("Modality", "00080060", "VR CS")),
    ("/studies?PatientID=" + "X" * 65, ("PatientID", "00100020", "VR LO")),
    ("/studies?PatientName=" + "X" * 65, ("PatientName", "00100010", "VR PN")),
    ("/studies?AccessionNumber=" + "X" * 17, ("AccessionNumber", "00080050", "VR SH")),
    ("/studies?StudyDate=2020-01-01", ("StudyDate", "00080020", "DA")),
    ("/studies?StudyInstanceUID=%F0%9F%98%80", ("StudyInstanceUID", "0020000D", "UID")),
    ("/studies?StudyInstanceUID=1.2,abc", ("StudyInstanceUID", "0020000D", "UID")),
    ("/studies?StudyInstanceUID=1.2%5C*", ("StudyInstanceUID", "0020000D", "UID")),
    ("/instances?includefield=PixelData", ("PixelData", "7FE00010", "WADO-RS")),
    ("/instances?includefield=60003000", ("60003000", "WADO-RS")),
    ("/instances?includefield=54000100", ("WaveformSequence", "54000100", "WADO-RS")),
    ("/instances?includefield=00420011", ("EncapsulatedDocument", "00420011", "WADO-RS")),
    ("/instances?PixelData=", ("PixelData", "7FE00010", "WADO-RS")),
]


async def test_values_a_vr_cannot_hold_are_400_naming_the_attribute(pacs: DevPacs) -> None:
    async with run_gateway(ae(pacs)) as running, client(running) as http:
        for url, names in QUERY_CASES:
            assert_400(await http.get(url), *names)
        assert dimse_seen(pacs) == []
        await still_serves(http, pacs)
        assert "find" in dimse_seen(pacs)


BAD_UIDS = [
    ("%F0%9F%98%80", "non-ASCII"),
    ("A%5CB", "a backslash: a list of two UIDs"),
    ("1.2%5C1.3", "a list of two well-formed UIDs"),
    ("*", "a wildcard"),
    ("1.2.*", "a wildcard"),
    ("%3F", "a wildcard"),
    ("abc", "letters"),
    ("1" * 65, "too long"),
    ("1..2", "an empty component"),
    ("1.2.", "an empty component"),
    ("%201.2", "a space"),
    ("%00", "NUL"),
]
S = "1.2.3"
SE = "1.2.3.4"
GET_TEMPLATES = [
    # WADO-RS instance resources
    ("/studies/{}", "study"),
    (f"/studies/{S}/series/{{}}", "series"),
    (f"/studies/{S}/series/{SE}/instances/{{}}", "SOP instance"),
    # QIDO-RS under a study or series
    ("/studies/{}/series", "study"),
    ("/studies/{}/instances", "study"),
    (f"/studies/{S}/series/{{}}/instances", "series"),
    ("/studies/{}/series/1.2/instances", "study"),
    # WADO-RS metadata, frames, bulk data, rendered, thumbnail
    ("/studies/{}/metadata", "study"),
    (f"/studies/{S}/series/{{}}/metadata", "series"),
    (f"/studies/{S}/series/{SE}/instances/{{}}/frames/1", "SOP instance"),
    (f"/studies/{S}/series/{SE}/instances/{{}}/bulkdata", "SOP instance"),
    ("/studies/{}/rendered", "study"),
    (f"/studies/{S}/series/{{}}/thumbnail", "series"),
]


async def test_malformed_path_uids_are_400_before_any_dimse(pacs: DevPacs) -> None:
    async with run_gateway(ae(pacs)) as running, client(running) as http:
        pacs.add_destination("RST", *running.dimse_address)
        for uid, why in BAD_UIDS:
            for template, which in GET_TEMPLATES:
                response = await http.get(template.format(uid))
                message = assert_400(response, f"invalid {which} UID")
                assert "UID" in message, why
            stow = await http.post(
                f"/studies/{uid}",
                content=b"",
                headers={"Content-Type": "multipart/related; type=application/dicom; boundary=x"},
            )
            assert_400(stow, "invalid study UID")
        # An empty segment is merged away (308) into a URL whose "UID" is a word, or none.
        for url in ("/studies//series", "/studies//metadata", f"/studies/{S}/series//instances"):
            response = await http.get(url, follow_redirects=True)
            assert response.status_code in (400, 404), (url, response.text[:300])
            assert response.json()["error"]
        # Every response above has arrived: an association they opened would be logged by now.
        assert dimse_seen(pacs) == []
        await still_serves(http, pacs)
        assert "find" in dimse_seen(pacs)


async def test_well_formed_unknown_uids_keep_their_404(pacs: DevPacs) -> None:
    async with run_gateway(ae(pacs)) as running, client(running) as http:
        pacs.add_destination("RST", *running.dimse_address)
        retrieve = await http.get(f"/studies/{UNKNOWN}")
        assert retrieve.status_code == 404, retrieve.text[:300]
        search = await http.get(f"/studies/{UNKNOWN}/series")
        assert (search.status_code, search.json()) == (200, [])
        metadata = await http.get(f"/studies/{UNKNOWN}/metadata")
        assert metadata.status_code == 404, metadata.text[:300]
        assert "find" in dimse_seen(pacs)


async def test_query_bounds_are_400_naming_the_limit(pacs: DevPacs) -> None:
    deep = ".".join(["ReferencedSeriesSequence"] * 250 + ["SeriesInstanceUID"])  # ~6 KB
    just_too_deep = ".".join(
        ["ReferencedSeriesSequence"] * (MAX_SEQUENCE_DEPTH + 1) + ["SeriesInstanceUID"]
    )
    many = "&".join(f"limit{i}=1" for i in range(MAX_PARAMETERS + 1))
    async with run_gateway(ae(pacs)) as running, client(running) as http:
        for params in (
            {"includefield": deep},
            {deep: "1.2"},
            {"includefield": just_too_deep},
        ):
            response = await http.get("/studies", params=params)
            assert_400(response, "MAX_SEQUENCE_DEPTH", str(MAX_SEQUENCE_DEPTH))
        assert_400(await http.get(f"/studies?{many}"), "MAX_PARAMETERS", str(MAX_PARAMETERS))
        fields = ",".join(["StudyDescription"] * 300)
        assert_400(await http.get("/studies", params={"includefield": fields}), "INCLUDEFIELDS")
        assert dimse_seen(pacs) == []
        await still_serves(http, pacs)
        health = await http.get(f"{running.http_url}/aets/FAULTY")
        assert health.status_code == 200


async def test_deepest_allowed_path_is_served(pacs: DevPacs) -> None:
    path = ".".join(["ReferencedSeriesSequence"] * MAX_SEQUENCE_DEPTH + ["SeriesInstanceUID"])
    async with run_gateway(ae(pacs)) as running, client(running) as http:
        response = await http.get("/studies", params={"includefield": path})
        assert response.status_code == 200, response.text[:300]
        body: list[dict[str, Any]] = response.json()
        assert len(body) == 1
