"""The arithmetic behind the load, leak and soak benchmarks' tables and verdicts, and the
sections they write into docs/benchmarks.md."""

from __future__ import annotations

import math
import random
from types import ModuleType
from typing import Any

import pytest

from benchmarks.idle import gauges, is_idle
from benchmarks.leaks import COUNTS, verdict
from benchmarks.load import Finished
from benchmarks.report import render_section
from benchmarks.stats import latencies, ms, percentile, slope, spread


class TestPercentile:
    def test_matches_linear_interpolation_between_ranks(self) -> None:
        values = [15.0, 20.0, 35.0, 40.0, 50.0]
        assert percentile(values, 0) == 15.0
        assert percentile(values, 100) == 50.0
        assert percentile(values, 50) == 35.0
        assert percentile(values, 40) == pytest.approx(29.0)  # rank 1.6: 20 + 0.6 * 15
        assert percentile(values, 95) == pytest.approx(48.0)  # rank 3.8: 40 + 0.8 * 10

    def test_order_of_the_input_does_not_matter(self) -> None:
        rng = random.Random(4)
        values = [rng.random() for _ in range(101)]
        shuffled = values[:]
        rng.shuffle(shuffled)
        ordered = sorted(values)
        assert percentile(shuffled, 99) == pytest.approx(ordered[99])
        assert percentile(shuffled, 50) == ordered[50]

    def test_one_value_and_none(self) -> None:
        assert percentile([3.0], 99) == 3.0
        assert math.isnan(percentile([], 50))

    @pytest.mark.parametrize("q", [-1, 100.5])
    def test_refuses_a_percentile_outside_0_100(self, q: float) -> None:
        with pytest.raises(ValueError, match="outside 0-100"):
            percentile([1.0], q)

    def test_latencies_and_spread(self) -> None:
        values = [float(v) for v in range(1, 101)]  # 1..100
        got = latencies(values)
        assert got["p50"] == pytest.approx(50.5)
        assert got["p95"] == pytest.approx(95.05)
        assert got["p99"] == pytest.approx(99.01)
        assert got["max"] == 100.0
        assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}

    def test_nothing_measured_shows_as_none(self) -> None:
        assert ms(latencies([])["p99"]) == "none"
        assert ms(0.1234) == "123 ms"


class TestSlope:
    def test_a_straight_line(self) -> None:
        xs = [0.0, 1.0, 2.0, 3.0]
        assert slope(xs, [5 + 2.5 * x for x in xs]) == pytest.approx(2.5)
        assert slope(xs, [7.0] * 4) == 0.0

    def test_least_squares_through_noise(self) -> None:
        xs = [0.0, 1.0, 2.0]
        assert slope(xs, [0.0, 2.0, 1.0]) == pytest.approx(0.5)

    def test_undefined_without_two_distinct_x(self) -> None:
        assert math.isnan(slope([1.0], [1.0]))
        assert math.isnan(slope([2.0, 2.0], [1.0, 3.0]))
        with pytest.raises(ValueError, match="2 x values, 1 y values"):
            slope([1.0, 2.0], [1.0])


def _counts(**changes: int) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(COUNTS, 3)
    base["rss_kib"] = 100 * 1024
    return {**base, **changes}


def _result(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {"rss_tolerance_mib": 24.0, "modes": [{"mode": "get", "before": before, "after": after}]}


class TestLeakVerdict:
    def test_everything_back_passes(self) -> None:
        assert verdict(_result(_counts(), _counts())) == []
        # fewer than before is not a leak (an idle worker thread went away)
        assert verdict(_result(_counts(threads=4), _counts(threads=2))) == []

    @pytest.mark.parametrize("key", COUNTS)
    def test_any_count_above_before_fails(self, key: str) -> None:
        problems = verdict(_result(_counts(), _counts(**{key: 4})))
        assert problems == [f"C-GET: {key} 3 -> 4"]

    def test_memory_within_the_tolerance_passes_beyond_it_fails(self) -> None:
        within = _counts(rss_kib=(100 + 24) * 1024)
        assert verdict(_result(_counts(), within)) == []
        beyond = _counts(rss_kib=(100 + 25) * 1024)
        assert verdict(_result(_counts(), beyond)) == [
            "C-GET: VmRSS grew 25.0 MiB (more than 24.0 MiB)"
        ]


class TestIdle:
    TEXT = (
        "# TYPE rst_http_requests_in_progress gauge\n"
        "rst_http_requests_in_progress 1.0\n"
        "# TYPE rst_dimse_associations_open gauge\n"
        'rst_dimse_associations_open{aet="A"} 0.0\n'
        'rst_dimse_associations_open{aet="B"} 2.0\n'
    )

    def test_gauges_are_summed_over_labels(self) -> None:
        assert gauges(self.TEXT) == {
            "rst_http_requests_in_progress": 1.0,
            "rst_dimse_associations_open": 2.0,
        }

    def test_idle_means_only_the_scrape_and_no_association(self) -> None:
        assert not is_idle(gauges(self.TEXT))
        assert is_idle(gauges(self.TEXT.replace(" 2.0", " 0.0")))
        assert not is_idle(gauges(self.TEXT.replace(" 2.0", " 0.0").replace(" 1.0", " 2.0")))


class TestSection:
    @staticmethod
    def module(repeated: bool) -> ModuleType:
        module = ModuleType("fake")
        module.NAME = "fake"  # type: ignore[attr-defined]
        module.TITLE = "A fake"  # type: ignore[attr-defined]
        module.table = lambda result: f"| n |\n|---|\n| {result['n']} |"  # type: ignore[attr-defined]
        if not repeated:
            module.REPEATED = False  # type: ignore[attr-defined]
        return module

    def render(self, repeated: bool) -> tuple[str, str]:
        return render_section(
            self.module(repeated),
            {"n": 7},
            started="2026-12-04 23:00:00 +0000",
            runs=3,
            quick=False,
            took_s=61.4,
            raw="benchmarks/results/bench-x.json",
            plots=True,  # the fake has no plot: none is drawn
        )

    def test_a_repeated_benchmark_says_how_many_runs(self) -> None:
        table, body = self.render(repeated=True)
        assert table == "| n |\n|---|\n| 7 |"
        assert body.splitlines()[0] == (
            "Run 2026-12-04 23:00:00 +0000, 3 run(s) per measurement (medians); took 61 s. "
            "Raw data: `benchmarks/results/bench-x.json` (not committed)."
        )
        assert body.endswith(table)

    def test_a_single_long_measurement_does_not(self) -> None:
        _, body = self.render(repeated=False)
        assert "run(s)" not in body
        assert "one measurement" in body.splitlines()[0]
        assert "![" not in body


class TestCurlLines:
    def test_each_answer_is_checked_by_status_and_exact_size(self) -> None:
        finished = Finished(expected_bytes=1234)
        finished.take("@rst 200 1234 0.010 0.050")
        finished.take("@rst 200 1233 0.010 0.060")  # one byte short
        finished.take("@rst 503 80 0.001 0.002")
        finished.take("@rst 000 0 0.000 0.100")  # no answer at all
        finished.take("curl: (56) Recv failure: Connection reset by peer")
        assert finished.ok_s == [0.05]
        assert finished.ttfb_s == [0.01]
        assert finished.errors == 3
        assert finished.first_errors[0] == "HTTP 200, 1233 bytes (expected 1234)"
        assert finished.messages == ["curl: (56) Recv failure: Connection reset by peer"]

    def test_a_line_behind_other_output_still_counts(self) -> None:
        finished = Finished(expected_bytes=3)
        finished.take("--  --  0  0  6  5 --:--:--      @rst 200 3 0.001 0.002")
        assert finished.ok_s == [0.002]
        assert finished.messages == []
