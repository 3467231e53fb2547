import json

import pytest
from hypothesis import given, settings, strategies as st

from provenance.errors import ManifestError
from provenance.sources import scan_source


def test_folder_is_scanned_recursively_case_insensitive(photo_folder):
    records = scan_source(photo_folder)
    names = sorted(r.path.split("/")[-1] for r in records)
    assert names == [f"photo_{n}.{'JPG' if n == 3 else 'jpg'}" for n in range(6)]
    assert all(r.file == r.path for r in records)


def test_csv_manifest_resolves_relative_paths_and_keeps_extra_columns(tmp_path):
    (tmp_path / "m.csv").write_text("path,subject,source_url,collection,shoot\nimg/a.jpg,Ann,http://x/a,portfolio,2024\n")
    (record,) = scan_source(tmp_path / "m.csv")
    assert record.path == "img/a.jpg" and record.file == str(tmp_path / "img/a.jpg")
    assert (record.subject, record.source_url, record.collection) == ("Ann", "http://x/a", "portfolio")
    assert record.extra == {"shoot": "2024"}


def test_jsonl_manifest(tmp_path):
    lines = [json.dumps({"path": "a.jpg", "subject": "Bo", "date": "2020"}), "", json.dumps({"path": "/abs/b.png"})]
    (tmp_path / "m.jsonl").write_text("\n".join(lines))
    first, second = scan_source(tmp_path / "m.jsonl")
    assert first.subject == "Bo" and first.extra == {"date": "2020"}
    assert second.file == "/abs/b.png"


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("m.csv", "file,subject\na.jpg,x\n", "'path' column"),
        ("m.csv", "path\n\n  \n", "empty 'path'"),
        ("m.jsonl", "{not json}\n", "invalid JSON"),
        ("m.jsonl", "[1,2]\n", "JSON object"),
        ("m.csv", "path\nhttps://x/a.jpg\n", "never fetches"),
        ("m.txt", "x", "must be a folder"),
    ],
)
def test_bad_manifests_name_the_problem(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ManifestError, match=message):
        scan_source(tmp_path / name)


def test_missing_source(tmp_path):
    with pytest.raises(ManifestError, match="no such file"):
        scan_source(tmp_path / "nope.csv")


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.tuples(st.from_regex(r"[a-z]{1,8}/[a-z]{1,8}\.jpg", fullmatch=True),
                               st.text(alphabet=st.characters(categories=["L", "N", "Zs"]), max_size=12)),
                     min_size=1, max_size=8))
def test_csv_round_trip(tmp_path_factory, rows):
    import csv

    folder = tmp_path_factory.mktemp("m")
    with open(folder / "m.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "subject"])
        writer.writerows(rows)
    records = scan_source(folder / "m.csv")
    assert [r.path for r in records] == [path for path, _ in rows]
    assert [r.subject for r in records] == [subject.strip() or None for _, subject in rows]


def test_a_manifest_that_is_a_device_or_fifo_is_refused_unread(tmp_path):
    import os

    from provenance.errors import ManifestError
    from provenance.sources import scan_source

    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.jsonl")
    for name in ("zero.csv", "fifo.jsonl"):
        with pytest.raises(ManifestError, match="regular file"):
            scan_source(tmp_path / name)
