"""Bulk triage: grouping by victim, the allowlist, unknown victims, resuming after kill -9, the summary page."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from provenance.cli import app
from provenance.scan.job import _completed_keys, read_results

from . import browser
from .scenes import SUSPECTS

runner = CliRunner()


@pytest.fixture(scope="module")
def scanned(indexed_scene):
    root, scene, index = indexed_scene["root"], indexed_scene, indexed_scene["index"]
    out = root / "out"
    here = os.getcwd()
    os.chdir(root)  # relative paths, as a user types them
    try:
        result = runner.invoke(app, ["scan", "suspects.csv", "--index", "index", "--out", "out",
                                     "--allowlist", "allowlist.csv", "--quiet"])
    finally:
        os.chdir(here)
    assert result.exit_code == 0, result.output
    return {"root": root, "scene": scene, "index": index, "out": out, "output": result.output,
            "lines": read_results(out / "results.jsonl")}


def _by_file(lines):
    return {line["suspect"].rsplit("/", 1)[-1]: line for line in lines}


def test_every_suspect_gets_one_line_with_its_account(scanned):
    lines = scanned["lines"]
    assert [line["n"] for line in lines] == list(range(len(SUSPECTS)))
    by_file = _by_file(lines)
    assert by_file["crop_p0.jpg"]["account"] == "scam_alpha" and by_file["crop_p0.jpg"]["extra"] == {"platform": "example"}
    assert by_file["crop_p0.jpg"]["verdict"] == "copy" and by_file["crop_p0.jpg"]["matches"][0]["subject"] == "Person 0"
    assert by_file["mirror_p1.jpg"]["matches"][0]["subject"] == "Person 1"
    assert by_file["caption_p0.jpg"]["matches"][0]["subject"] == "Person 0"
    assert by_file["broken.jpg"]["verdict"] == "error" and by_file["broken.jpg"]["error"]
    assert "skipped bad image" in scanned["output"]


def test_allowlisted_account_is_owner_not_copy(scanned):
    own = _by_file(scanned["lines"])["own_p2.jpg"]
    assert own["verdict"] == "owner" and own["owner_of"] == "Person 2"


def test_suspects_sharing_an_unindexed_photo_form_one_unknown_victim_group(scanned):
    groups = json.loads((scanned["out"] / "groups.json").read_text())
    assert len(groups) == 1
    members = sorted(key.rsplit("/", 1)[-1] for key in groups[0]["members"])
    assert members == ["shared_a.jpg", "shared_b.jpg", "shared_c.jpg"]
    assert all(link["inliers"] > 0 for link in groups[0]["links"])


def test_a_second_run_resumes_and_a_different_scan_is_refused(scanned, tmp_path):
    args = ["scan", str(scanned["scene"]["suspects"]), "--index", str(scanned["index"]), "--out", str(scanned["out"]),
            "--allowlist", str(scanned["scene"]["allowlist"]), "-q"]
    again = runner.invoke(app, args)  # the same scan, named by absolute paths from another folder
    assert again.exit_code == 0 and f"{len(SUSPECTS)} suspects ({len(SUSPECTS)} from an earlier run)" in again.output
    other = runner.invoke(app, ["scan", str(scanned["scene"]["suspects"]), "--index", str(scanned["index"]),
                                "--out", str(scanned["out"]), "-q", "--no-links"])
    assert other.exit_code == 3 and "--restart" in other.output


def test_a_torn_last_line_is_cut_off(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text('{"n": 0, "suspect": "a.jpg", "verdict": "copy"}\n{"n": 1, "suspect": "b.j')
    assert _completed_keys(results) == {"0:a.jpg"}
    assert results.read_text() == '{"n": 0, "suspect": "a.jpg", "verdict": "copy"}\n'


def _scan_command(suspects, index, out):
    code = ("import sys; from provenance.cli import main; sys.argv = ['provenance'] + sys.argv[1:]; main()")
    return [sys.executable, "-c", code, "scan", str(suspects), "--index", str(index), "--out", str(out), "-q", "--no-links"]


def _many_suspects(root, count):
    """``count`` suspects: the scene's suspects over and over (a scan killed halfway has work left)."""
    lines = ["path,account"]
    for number in range(count):
        name = SUSPECTS[number % len(SUSPECTS)][0]
        lines.append(f"suspects/{name},acct{number}")
    (root / "many.csv").write_text("\n".join(lines) + "\n")
    return root / "many.csv"


def test_scan_killed_halfway_resumes_to_the_same_results(scanned):
    root = scanned["root"]
    suspects = _many_suspects(root, 48)
    whole, killed = root / "whole", root / "killed"
    subprocess.run(_scan_command(suspects, scanned["index"], whole), check=True, timeout=600, capture_output=True)
    process = subprocess.Popen(_scan_command(suspects, scanned["index"], killed), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    results = killed / "results.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 16:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the scan ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = results.read_text().count("\n")
    assert 16 <= written < 48
    subprocess.run(_scan_command(suspects, scanned["index"], killed), check=True, timeout=600, capture_output=True)
    assert results.read_bytes() == (whole / "results.jsonl").read_bytes()
    keys = [(line["n"], line["suspect"]) for line in map(json.loads, results.read_text().splitlines())]
    assert len(keys) == len(set(keys)) == 48


def test_summary_page_in_a_real_browser(scanned):
    page = scanned["out"] / "summary.html"
    driver = browser.chromium()
    try:
        driver.get(page.as_uri())
        assert browser.broken_images(driver) == []
        victims = driver.find_elements("css selector", 'section[data-group="victim"]')
        titles = [section.find_element("css selector", "h2").text for section in victims]
        assert titles[0] == "Person 0" and set(titles) >= {"Person 0", "Person 1", "Person 2"}
        rows = victims[0].find_elements("css selector", 'tbody tr[data-verdict="copy"]')
        assert sorted(row.find_element("css selector", "td").text for row in rows) == ["scam_alpha", "scam_gamma"]
        assert "net_" not in victims[0].text  # the unknown victim's accounts are not filed under Person 0
        unknown = driver.find_elements("css selector", 'section[data-group="unknown"]')
        assert len(unknown) == 1 and "3 account(s) share this photo" in unknown[0].text
        assert browser.console_errors(driver) == []
        shot = browser.full_page_screenshot(driver)
        # the verdict filter hides every other row, and the sections left empty
        select = driver.find_element("css selector", "select[data-filter]")
        driver.execute_script("arguments[0].value = 'owner'; arguments[0].dispatchEvent(new Event('change'));", select)
        shown = [row for row in driver.find_elements("css selector", "tr[data-verdict]") if row.is_displayed()]
        assert [row.get_attribute("data-verdict") for row in shown] == ["owner"]
        assert sum(section.is_displayed() for section in driver.find_elements("css selector", "section[data-group]")) == 1
        driver.execute_script("arguments[0].value = 'all'; arguments[0].dispatchEvent(new Event('change'));", select)
        # sorting by account, twice: ascending then descending
        head = victims[0].find_element("css selector", "th[data-sort]")
        head.click()
        first = [row.find_element("css selector", "td").text for row in victims[0].find_elements("css selector", "tbody tr")]
        head.click()
        second = [row.find_element("css selector", "td").text for row in victims[0].find_elements("css selector", "tbody tr")]
        assert first == sorted(first) and second == sorted(first, reverse=True)
        assert browser.console_errors(driver) == []
    finally:
        driver.quit()
    browser.save_for_docs(shot, "scan-summary.jpg")


def test_scan_survives_a_missing_suspect_file(scanned, tmp_path):
    suspects = tmp_path / "s.csv"
    shutil.copy(scanned["root"] / "suspects" / "crop_p0.jpg", tmp_path / "here.jpg")
    suspects.write_text("path,account\nhere.jpg,a\nnot-there.jpg,b\n")
    result = runner.invoke(app, ["scan", str(suspects), "--index", str(scanned["index"]), "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 0, result.output
    lines = read_results(tmp_path / "o" / "results.jsonl")
    assert [line["verdict"] for line in lines] == ["copy", "error"]
