"""Damaged or tampered index files: a one-line refusal with exit code 4, never a crash or a wrong answer."""

import json
import shutil
import sqlite3

import pytest
from typer.testing import CliRunner

from provenance.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def two_indexes(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("tamper")
    folders = [root / "refs_a", root / "refs_b"]
    for number, folder in enumerate(folders):
        folder.mkdir()
        for index, photo in enumerate(photos[number * 3 : number * 3 + 3]):
            photo.save(folder / f"photo_{index}.jpg", quality=92)
    for number, folder in enumerate(folders):
        result = runner.invoke(app, ["reindex", str(folder), "-i", str(root / f"idx_{number}"), "-q", "--workers", "0"])
        assert result.exit_code == 0, result.output
    return root


def _manifest_edit(change):
    def tamper(index, _other):
        path = index / "manifest.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return tamper


def _truncate(pattern, keep):
    def tamper(index, _other):
        (path,) = index.glob(pattern)
        path.write_bytes(path.read_bytes()[:keep])
    return tamper


def _damage_keypoints(index, _other):
    (path,) = index.glob("segments/*.dat")
    data = bytearray(path.read_bytes())
    at = data.find(b"PVLF")  # the first reference's local-feature record
    data[at:at + 4] = b"XXXX"
    path.write_bytes(bytes(data))


def _foreign_segment(index, other):
    (mine,) = index.glob("segments/*.dat")
    (theirs,) = other.glob("segments/*.dat")
    mine.write_bytes(theirs.read_bytes())


def _sql(statement):
    def tamper(index, _other):
        with sqlite3.connect(index / "metadata.sqlite") as connection:
            connection.execute(statement)
    return tamper


def _swap_metadata(index, other):
    for suffix in ("", "-wal", "-shm"):
        (index / f"metadata.sqlite{suffix}").unlink(missing_ok=True)
    shutil.copy(other / "metadata.sqlite", index / "metadata.sqlite")


TAMPERING = {
    "truncated manifest": _truncate("manifest.json", 40),
    "manifest of another kind": lambda index, _: (index / "manifest.json").write_text('["not", "a", "manifest"]'),
    "edited regions": _manifest_edit(lambda data: data.update(regions=data["regions"][:2])),
    "edited dimension": _manifest_edit(lambda data: data["embedder"].update(dim=17)),
    "edited fingerprint": _manifest_edit(lambda data: data["embedder"].update(fingerprint="0" * 16)),
    "truncated vector file": _truncate("segments/*.vec", 300),
    "truncated hash file": _truncate("segments/*.pdq", 20),
    "truncated segment": _truncate("segments/*.dat", 2000),
    "missing segment file": lambda index, _: next(index.glob("segments/*.vec")).unlink(),
    "segment of another index": _foreign_segment,
    "SQLite of another index": _swap_metadata,
    "garbage SQLite": lambda index, _: (index / "metadata.sqlite").write_bytes(b"not a database" * 100),
    "damaged keypoint record": _damage_keypoints,
    "segment list of another state": _sql("UPDATE segments SET info = replace(info, '\"references\": 3', '\"references\": 4')"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_index_is_refused_with_exit_code_4(two_indexes, tmp_path, photos, case):
    index = tmp_path / "idx"
    shutil.copytree(two_indexes / "idx_0", index)
    TAMPERING[case](index, two_indexes / "idx_1")
    probe = tmp_path / "probe.jpg"
    photos[0].save(probe)
    result = runner.invoke(app, ["query", str(probe), "-i", str(index)])
    assert result.exit_code == 4, (case, result.output, result.exception)
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output


def test_the_untampered_copy_answers(two_indexes, tmp_path, photos):
    index = tmp_path / "idx"
    shutil.copytree(two_indexes / "idx_0", index)
    probe = tmp_path / "probe.jpg"
    photos[0].save(probe)
    result = runner.invoke(app, ["query", str(probe), "-i", str(index), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["verdict"] == "copy"
