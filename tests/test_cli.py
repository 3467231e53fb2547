import json

import pytest
from typer.testing import CliRunner

from provenance.cli import app

from .conftest import synthetic_photo

runner = CliRunner()


@pytest.fixture()
def built_index(tmp_path, photo_folder):
    index = tmp_path / "index"
    result = runner.invoke(app, ["reindex", str(photo_folder), "--index", str(index), "--quiet", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "added 6, skipped 0, replaced 0, failed 0" in result.output
    return index


def test_reindex_is_incremental_and_rebuild_starts_over(built_index, photo_folder):
    again = runner.invoke(app, ["reindex", str(photo_folder), "-i", str(built_index), "-q", "--workers", "0"])
    assert "added 0, skipped 6" in again.output
    rebuilt = runner.invoke(app, ["reindex", str(photo_folder), "-i", str(built_index), "-q", "--rebuild", "--workers", "0"])
    assert "added 6, skipped 0" in rebuilt.output


def test_reindex_reports_bad_images(tmp_path, photo_folder):
    (photo_folder / "bad.jpg").write_text("nope")
    result = runner.invoke(app, ["reindex", str(photo_folder), "-i", str(tmp_path / "i"), "-q", "--workers", "0"])
    assert result.exit_code == 0
    assert "failed 1" in result.output and "bad.jpg" in result.output


def test_reindex_bad_source_exit_code(tmp_path):
    result = runner.invoke(app, ["reindex", str(tmp_path / "missing.csv"), "-i", str(tmp_path / "i")])
    assert result.exit_code == 3 and "no such file" in result.output


def test_reindex_file_timeout_default_is_the_library_default():
    import inspect

    from provenance.cli import reindex
    from provenance.ingest import DEFAULT_FILE_TIMEOUT

    # the CLI spells the default out so that --help never imports the ingest stack
    assert inspect.signature(reindex).parameters["file_timeout"].default.default == DEFAULT_FILE_TIMEOUT


def test_cli_defaults_spell_out_the_library_defaults():
    import inspect

    from provenance.cli import _limits, query, reindex
    from provenance.imagelimits import DEFAULT_LIMITS
    from provenance.indexing import CHECKPOINT_EVERY

    for command in (reindex, query):
        parameters = inspect.signature(command).parameters
        limits = _limits(parameters["max_file_mb"].default.default, parameters["max_megapixels"].default.default)
        assert limits == DEFAULT_LIMITS
    assert inspect.signature(reindex).parameters["checkpoint_every"].default.default == CHECKPOINT_EVERY


def test_query_json_one_object_per_line(built_index, tmp_path, photos):
    copy = tmp_path / "copy.jpg"
    photos[2].crop((10, 10, 300, 220)).save(copy, quality=70)
    other = tmp_path / "other.jpg"
    synthetic_photo(77).save(other)
    result = runner.invoke(app, ["query", str(copy), str(other), "-i", str(built_index), "--json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [line["query"] for line in lines] == [str(copy), str(other)]
    first = lines[0]
    assert first["verdict"] == "copy" and first["matches"][0]["path"].endswith("photo_2.jpg")
    assert lines[1]["verdict"] != "copy"
    assert len(first["matches"]) == 2
    assert set(first["matches"][0]) >= {"path", "subject", "source_url", "score", "verdict"}


def test_query_table_and_exit_codes(built_index, tmp_path, photos):
    copy = tmp_path / "copy.png"
    photos[0].save(copy)
    table = runner.invoke(app, ["query", str(copy), "-i", str(built_index)])
    assert table.exit_code == 0 and "photo_0.jpg" in table.output and "score" in table.output
    bad = runner.invoke(app, ["query", str(tmp_path / "missing.jpg"), str(copy), "-i", str(built_index), "--json"])
    assert bad.exit_code == 3
    assert "file not found" in bad.output and "photo_0.jpg" in bad.output
    no_index = runner.invoke(app, ["query", str(copy), "-i", str(tmp_path / "none")])
    assert no_index.exit_code == 4 and "no index" in no_index.output


def test_info(built_index):
    result = runner.invoke(app, ["info", "-i", str(built_index)])
    assert result.exit_code == 0 and "references  6" in result.output and "effnet-lite0" in result.output
    as_json = json.loads(runner.invoke(app, ["info", "-i", str(built_index), "--json"]).output)
    assert as_json["references"] == 6


def test_remove(built_index, photo_folder):
    target = str(photo_folder / "photo_0.jpg")
    result = runner.invoke(app, ["remove", "-i", str(built_index), "--path", target])
    assert result.exit_code == 0 and "removed 1" in result.output
    info = runner.invoke(app, ["info", "-i", str(built_index)])
    assert "references  5" in info.output
    assert runner.invoke(app, ["remove", "-i", str(built_index)]).exit_code == 3


def test_hashes_prints_threatexchange_pdq(built_index):
    from provenance.verify.pdq import from_hex

    result = runner.invoke(app, ["hashes", "-i", str(built_index)])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 6
    digest, quality, path = lines[0].split(",", 2)
    assert len(from_hex(digest)) == 32 and 0 <= int(quality) <= 100 and path.endswith(".jpg")


def test_calibrate_stores_thresholds_in_manifest(built_index, tmp_path):
    negatives = tmp_path / "negatives"
    negatives.mkdir()
    for seed in (80, 81, 82):
        synthetic_photo(seed).save(negatives / f"{seed}.jpg")
    result = runner.invoke(app, ["calibrate", "-i", str(built_index), "--negatives", str(negatives), "-q"])
    assert result.exit_code == 0, result.output
    assert "3 negatives" in result.output and "thresholds stored" in result.output
    manifest = json.loads((built_index / "manifest.json").read_text())
    assert {"similar", "copy"} <= set(manifest["thresholds"])
    missing = runner.invoke(app, ["calibrate", "-i", str(built_index), "--negatives", str(tmp_path / "none.csv")])
    assert missing.exit_code == 3


def test_compact_after_remove_keeps_answers(built_index, photo_folder, photos):
    runner.invoke(app, ["remove", "-i", str(built_index), "--path", str(photo_folder / "photo_1.jpg")])
    result = runner.invoke(app, ["compact", "-i", str(built_index)])
    assert result.exit_code == 0 and "compacted:" in result.output and "1 segment(s)" in result.output
    copy = built_index.parent / "copy4.jpg"
    photos[4].crop((10, 10, 300, 220)).save(copy)
    answer = json.loads(runner.invoke(app, ["query", str(copy), "-i", str(built_index), "--json"]).output)
    assert answer["matches"][0]["path"].endswith("photo_4.jpg")
    assert all(not match["path"].endswith("photo_1.jpg") for match in answer["matches"])


def test_reindex_regions_choose_the_vectors_per_reference(tmp_path, photo_folder):
    index = tmp_path / "centred"
    result = runner.invoke(app, ["reindex", str(photo_folder), "-i", str(index), "-q", "--workers", "0", "--regions", "centred"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((index / "manifest.json").read_text())
    assert len(manifest["regions"]) == 3 and manifest["vector_count"] == 6 * 3
    default = tmp_path / "default"
    runner.invoke(app, ["reindex", str(photo_folder), "-i", str(default), "-q", "--workers", "0"])
    manifest = json.loads((default / "manifest.json").read_text())
    assert {"subject_square": 0.8} in manifest["regions"] and manifest["vector_count"] == 6 * 5
    bad = runner.invoke(app, ["reindex", str(photo_folder), "-i", str(tmp_path / "x"), "--regions", "faces"])
    assert bad.exit_code == 2 and "--regions" in bad.output


def test_a_file_name_that_is_not_utf8_is_indexed_and_reported(tmp_path, photos):
    import os
    import subprocess
    import sys

    folder = tmp_path / "refs"
    folder.mkdir()
    odd = os.path.join(os.fsencode(folder), b"\xff\xfe-photo.jpg")
    photos[0].save(os.fsdecode(odd), quality=92)
    (folder / os.fsdecode(b"bad\xff.jpg")).write_bytes(b"x")
    command = [sys.executable, "-c", "import sys; from provenance.cli import main; sys.argv[0] = 'provenance'; main()"]
    index = str(tmp_path / "index")
    built = subprocess.run([*command, "reindex", str(folder), "-i", index, "-q", "--workers", "0"], capture_output=True)
    assert built.returncode == 0 and b"added 1, skipped 0, replaced 0, failed 1" in built.stdout, built.stderr[-800:]
    assert b"bad\\udcff.jpg: not an image" in built.stderr
    answered = subprocess.run([*command, "query", os.fsdecode(odd), "-i", index], capture_output=True)
    assert answered.returncode == 0 and b"\\xff\\xfe-photo.jpg" in answered.stdout and b"copy" in answered.stdout


def test_embedder_options_are_parsed_and_checked():
    from provenance.embedders import parse_embedder_options
    from provenance.errors import BadInputError

    assert parse_embedder_options(["model=ViT-S-32-alt", "image_size=64", "pretrained=none", "scale=0.5"]) == {
        "model": "ViT-S-32-alt", "image_size": 64, "pretrained": None, "scale": 0.5}
    for bad in (["model"], ["=x"], ["two words=1"]):
        with pytest.raises(BadInputError):
            parse_embedder_options(bad)


def test_reindex_and_query_with_a_local_clip_checkpoint(tmp_path, photo_folder, monkeypatch):
    """`reindex --embedder clip -E pretrained=FILE`: a small random-weights checkpoint written by the test."""
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    model = open_clip.create_model_and_transforms("ViT-S-32-alt", pretrained=None, force_image_size=64)[0]
    save_file({name: tensor.half().contiguous() for name, tensor in model.state_dict().items()}, tmp_path / "tiny.safetensors")
    monkeypatch.chdir(tmp_path)  # a relative checkpoint path is stored absolute
    index = tmp_path / "clip-index"
    args = ["reindex", str(photo_folder), "-i", str(index), "-q", "--workers", "0", "--embedder", "clip",
            "-E", "model=ViT-S-32-alt", "-E", "pretrained=tiny.safetensors", "-E", "image_size=64"]
    built = runner.invoke(app, args)
    assert built.exit_code == 0, built.output
    manifest = json.loads((index / "manifest.json").read_text())["embedder"]
    assert manifest["name"] == "clip" and manifest["dim"] == 256
    assert manifest["options"]["pretrained"] == str(tmp_path / "tiny.safetensors")
    query = runner.invoke(app, ["query", str(next(photo_folder.glob("*.jpg"))), "-i", str(index), "--json"])
    assert query.exit_code == 0 and json.loads(query.stdout.splitlines()[0])["verdict"] == "copy"
    unknown = runner.invoke(app, ["reindex", str(photo_folder), "-i", str(tmp_path / "x"), "--embedder", "clip",
                                  "-E", "pretrained=none", "-E", "colour=blue"])
    assert unknown.exit_code == 3 and "rejected its options" in unknown.output
    missing = runner.invoke(app, ["reindex", str(photo_folder), "-i", str(tmp_path / "y"), "--embedder", "clip"])
    assert missing.exit_code == 5 and "pretrained" in missing.output


def test_reindex_on_a_ray_cluster_that_is_not_there_says_what_to_do(tmp_path, photo_folder):
    import socket

    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = runner.invoke(app, ["reindex", str(photo_folder), "-i", str(tmp_path / "i"), "-q", "--ray", f"127.0.0.1:{port}"])
    assert result.exit_code == 3, result.output  # bad input, as a missing source
    assert "ray start --head" in result.output and "--ray local" in result.output
    assert "Traceback" not in result.output


def test_ray_auto_without_a_cluster_is_a_user_error():
    from provenance.distributed.ray_runner import _connect
    from provenance.errors import BadInputError

    class NoCluster:
        def init(self, **_):
            raise ConnectionError("Could not find any running Ray instance.")

    with pytest.raises(BadInputError, match="ray start --head"):
        _connect(NoCluster(), "auto", None)


def test_an_index_of_the_earlier_format_says_rebuild_and_rebuild_works(tmp_path, photo_folder, photos):
    index = tmp_path / "old"
    made = runner.invoke(app, ["reindex", str(photo_folder), "-i", str(index), "-q", "--workers", "0"])
    assert made.exit_code == 0, made.output
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["format_version"] = 1  # what the earlier provenance wrote, beside its files
    (index / "manifest.json").write_text(json.dumps(manifest))
    (index / "vectors-000003.faiss").write_bytes(b"an earlier version's vector file")
    probe = tmp_path / "probe.jpg"
    photos[0].save(probe)
    refused = runner.invoke(app, ["query", str(probe), "-i", str(index)])
    assert refused.exit_code == 4 and len(refused.output.strip().splitlines()) == 1
    assert "earlier provenance" in refused.output and "--rebuild" in refused.output
    rebuilt = runner.invoke(app, ["reindex", str(photo_folder), "-i", str(index), "-q", "--workers", "0", "--rebuild"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert not (index / "vectors-000003.faiss").exists()
    answered = runner.invoke(app, ["query", str(probe), "-i", str(index), "--json"])
    assert answered.exit_code == 0 and json.loads(answered.output)["verdict"] == "copy"
