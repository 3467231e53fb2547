"""The evidence page: words, geometry, the CLI commands, and the page as a real browser draws it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from provenance.cli import app
from provenance.report.evidence import describe_transform, explain, footprint_on_reference, shared_part_on_query
from provenance.report.page import MATCH_COLOUR
from provenance.results import Match, QueryResult, Transform

from . import browser

runner = CliRunner()


def _copy(**changes) -> Match:
    # a suspect that is the reference's middle, shrunk by half: query (x, y) -> reference (2x + 50, 2y + 40)
    fields = dict(ref_id=3, path="refs/p3.jpg", score=1.8, verdict="copy", similarity=0.9, subject="Person 3",
                  inliers=80, box=(50.0, 40.0, 250.0, 200.0), coverage=0.42,
                  transform=Transform(0.5, 0.0, False, "similarity", (2.0, 0.0, 50.0, 0.0, 2.0, 40.0)),
                  query_view="full", query_box=(0, 0, 100, 80), reference_frame=(320, 240))
    fields.update(changes)
    return Match(**fields)


def test_transform_in_words():
    assert describe_transform(_copy()) == "a 42 % crop"
    mirrored = _copy(transform=Transform(0.5, 3.4, True, "similarity", None), query_view="disc", coverage=0.99)
    assert describe_transform(mirrored) == "the whole picture, mirrored, rotated 3°, round avatar"
    assert describe_transform(_copy(query_view="photo1-inner")).endswith("photo inside a larger picture (a screenshot or a post)")
    assert "PDQ" in describe_transform(_copy(transform=None, box=None, coverage=None, pdq_distance=12))
    assert describe_transform(_copy(verdict="similar", transform=None, coverage=None)) == ""


def test_non_copies_say_why_not():
    similar = _copy(verdict="similar", score=0.86, similarity=0.86, transform=None, box=None)
    assert explain(similar, {"similar": 0.8}).startswith("similar: same person or shoot, no shared pixels proven")
    assert "0.86 ≥ 0.80" in explain(similar, {"similar": 0.8})
    assert "< 0.80" in explain(_copy(verdict="no_match", similarity=0.41), {"similar": 0.8})
    assert explain(None, {}).startswith("no match")


def test_footprint_and_shared_part_follow_the_matrix():
    match = _copy()
    assert footprint_on_reference(match, (100, 80)) == [(50, 40), (250, 40), (250, 200), (50, 200)]
    # the reference seen from the suspect: all of the suspect shows it
    assert shared_part_on_query(match) == (0.0, 0.0, 100.0, 80.0)
    # a view cut from a bigger query (a screenshot): the footprint grows past the reference
    inside = _copy(query_view="photo0", query_box=(10, 20, 110, 100))
    corners = footprint_on_reference(inside, (300, 200))
    assert corners[0] == (30.0, 0.0) and corners[2] == (630.0, 400.0)
    assert shared_part_on_query(inside) == (10.0, 20.0, 110.0, 100.0)


_floats = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@given(st.tuples(_floats, _floats, _floats, _floats), st.booleans(), st.integers(0, 500), st.none() | st.integers(0, 256))
def test_results_round_trip_through_json(box, mirrored, inliers, pdq):
    match = _copy(box=box, inliers=inliers, pdq_distance=pdq, transform=Transform(0.5, 1.0, mirrored, "affine", (1.0,) * 6))
    result = QueryResult("q.jpg", "copy", [match, _copy(verdict="no_match", transform=None, box=None)], 0.25,
                         (100, 80), {"similar": 0.8, "copy": 1.0})
    assert QueryResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


@pytest.fixture(scope="module")
def scene(indexed_scene):
    return indexed_scene


@pytest.fixture(scope="module")
def evidence(scene):
    """`query --json --report` on three suspects, and the page `report` rebuilds from the JSON."""
    root = scene["root"]
    queries = [str(root / "suspects" / name) for name in ("crop_p0.jpg", "mirror_p1.jpg", "unrelated.jpg")]
    answered = runner.invoke(app, ["query", *queries, "--index", str(scene["index"]), "--json",
                                   "--report", str(root / "evidence.html")])
    assert answered.exit_code == 0, answered.output
    lines = [json.loads(line) for line in answered.stdout.splitlines() if line.startswith("{")]
    (root / "answers.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    rebuilt = runner.invoke(app, ["report", str(root / "answers.jsonl"), "--out", str(root / "rebuilt.html"),
                                  "--index", str(scene["index"])])
    assert rebuilt.exit_code == 0, rebuilt.output
    return {"lines": lines, "page": root / "evidence.html", "rebuilt": root / "rebuilt.html"}


def test_evidence_page_holds_the_case(evidence):
    lines = evidence["lines"]
    assert [line["verdict"] for line in lines[:2]] == ["copy", "copy"]
    assert lines[2]["verdict"] != "copy"  # generated textures may look alike ("similar"), but share no pixels
    assert lines[1]["matches"][0]["transform"]["mirrored"] is True
    page = evidence["page"].read_text()
    assert "Person 0" in page and "https://portfolio.example/p0" in page and "Runners-up" in page
    assert "no shared pixels" in page and "mirrored" in page and "a copy needs ≥ 1.000" in page and "Date added" in page
    assert 'src="http' not in page and "<link" not in page  # every picture embedded: opens offline
    assert "<script" not in page  # nothing to run: the evidence page is static
    assert page.count('data-role="reference-box"') == 2
    assert evidence["rebuilt"].read_text().count('data-role="reference-box"') == 2


def test_report_refuses_a_file_that_is_not_query_output(tmp_path, scene):
    (tmp_path / "bad.jsonl").write_text('{"hello": 1}\n')
    result = runner.invoke(app, ["report", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "x.html"),
                                 "--index", str(scene["index"])])
    assert result.exit_code == 3 and "not a `provenance query --json` line" in result.output
    assert not (tmp_path / "x.html").exists()


def _near(colour, target, tolerance=70) -> bool:
    return sum(abs(int(a) - int(b)) for a, b in zip(colour, target)) <= tolerance


def test_evidence_page_in_a_real_browser(evidence):
    driver = browser.chromium()
    try:
        driver.get(evidence["page"].as_uri())
        assert browser.broken_images(driver) == []
        case = driver.find_element("css selector", "#q1")
        figure = case.find_element("css selector", '.picture[data-role="reference"]')
        image = browser.element_rect(driver, figure.find_element("css selector", "img"))
        drawn = browser.element_rect(driver, figure.find_element("css selector", 'rect[data-role="reference-box"]'))
        match = evidence["lines"][0]["matches"][0]
        width, height = match["reference_frame"]
        x0, y0, x1, y1 = match["box"]
        expected = {"x": image["x"] + x0 / width * image["width"], "y": image["y"] + y0 / height * image["height"],
                    "width": (x1 - x0) / width * image["width"], "height": (y1 - y0) / height * image["height"]}
        for key, value in expected.items():  # the outline sits where the match's box says (stroke: 3 px)
            assert abs(drawn[key] - value) <= 3, (key, drawn, expected)
        shot = browser.full_page_screenshot(driver)
        assert browser.console_errors(driver) == []
    finally:
        driver.quit()
    browser.save_for_docs(shot, "evidence-page.jpg")
    target = tuple(int(MATCH_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
    top = round(drawn["y"])
    xs = np.linspace(drawn["x"] + 6, drawn["x"] + drawn["width"] - 6, 9).round().astype(int)
    on_edge = [_near(shot.getpixel((int(x), top + dy)), target) for x in xs for dy in (-1, 0, 1)]
    assert sum(on_edge) >= 9, "the red outline is not drawn on the screenshot where the box is"
    inside = [_near(shot.getpixel((int(x), top + 25)), target) for x in xs]
    assert sum(inside) <= 2  # the outline is a line, not a filled area


def test_a_refused_logo_match_says_why_it_is_not_a_copy():
    logo = Match(ref_id=3, path="refs/p3.jpg", score=0.91, verdict="similar", similarity=0.91,
                 refusal="compact_support", support=0.0154)
    text = explain(logo, {"similar": 0.85})
    assert text.startswith("similar:") and "1.5 %" in text and "logo" in text
    plain = explain(Match(ref_id=3, path="refs/p3.jpg", score=0.91, verdict="similar", similarity=0.91), {"similar": 0.85})
    assert "logo" not in plain
    assert Match.from_dict(logo.to_dict()) == logo
