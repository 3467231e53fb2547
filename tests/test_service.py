"""The HTTP service: answers, statuses, bounded admission, and answers while another process writes."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from provenance import Engine  # noqa: E402
from provenance.service import ServiceSettings, create_app  # noqa: E402
from provenance.service.gate import Overloaded, QueryGate  # noqa: E402

from .conftest import synthetic_photo  # noqa: E402


def _jpeg(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def scene(indexed_scene):
    return indexed_scene


@pytest.fixture(scope="module")
def engine(scene):
    with Engine.open(scene["index"], read_only=True) as opened:
        yield opened


def _client(engine, **settings) -> TestClient:
    return TestClient(create_app(engine, ServiceSettings(**settings)))


def test_query_answers_as_the_cli_does(engine, scene):
    client = _client(engine)
    data = (scene["root"] / "suspects" / "crop_p0.jpg").read_bytes()
    by_form = client.post("/v1/query?top_k=3", files={"image": ("crop.jpg", data, "image/jpeg")})
    assert by_form.status_code == 200
    body = by_form.json()
    assert body["query"] == "crop.jpg" and body["verdict"] == "copy" and len(body["matches"]) == 3
    assert body["matches"][0]["subject"] == "Person 0" and body["matches"][0]["box"]
    expected = engine.query(data, top_k=3).to_dict()
    assert [m["ref_id"] for m in body["matches"]] == [m["ref_id"] for m in expected["matches"]]
    raw = client.post("/v1/query", content=data, headers={"Content-Type": "image/jpeg", "X-Filename": "raw.jpg"})
    assert raw.status_code == 200 and raw.json()["query"] == "raw.jpg" and raw.json()["verdict"] == "copy"
    page = client.post("/v1/query?format=html", files={"image": ("crop.jpg", data, "image/jpeg")})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and "Person 0" in page.text


def test_batch_reference_info_health_and_schema(engine, scene):
    client = _client(engine)
    good = (scene["root"] / "suspects" / "mirror_p1.jpg").read_bytes()
    batch = client.post("/v1/query/batch", files=[("images", ("a.jpg", good, "image/jpeg")),
                                                  ("images", ("bad.jpg", b"nope", "image/jpeg"))])
    assert batch.status_code == 200
    first, second = batch.json()["results"]
    assert first["matches"][0]["subject"] == "Person 1" and second == {"query": "bad.jpg", "error": second["error"]}
    reference = client.get(f"/v1/references/{first['matches'][0]['ref_id']}")
    assert reference.status_code == 200 and reference.json()["subject"] == "Person 1"
    assert client.get("/v1/references/999999").status_code == 404
    thumbnail = client.get(f"/v1/references/{first['matches'][0]['ref_id']}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.content[8:12] == b"WEBP"
    assert thumbnail.headers["content-type"] == "image/webp"
    assert client.get("/v1/healthz").json() == {"status": "ok"}
    assert client.get("/v1/info").json()["references"] == 6
    schema = client.get("/openapi.json").json()
    assert {"/v1/query", "/v1/query/batch", "/v1/references/{ref_id}", "/v1/healthz", "/v1/info"} <= set(schema["paths"])


def test_bad_requests_get_clear_statuses(engine):
    client = _client(engine)
    assert client.post("/v1/query", content=b"garbage", headers={"Content-Type": "image/jpeg"}).status_code == 422
    assert client.post("/v1/query", content=b"").status_code == 400
    assert client.post("/v1/query?top_k=0", content=_jpeg(synthetic_photo(1))).status_code == 400
    assert client.post("/v1/query/batch", content=_jpeg(synthetic_photo(1))).status_code == 400


def test_api_key_is_required_when_set(engine):
    client = _client(engine, api_key="s3cret-key")
    image = _jpeg(synthetic_photo(2))
    assert client.post("/v1/query", content=image).status_code == 401
    assert client.post("/v1/query", content=image, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/info").status_code == 401
    assert client.get("/v1/healthz").status_code == 200
    assert client.post("/v1/query", content=image, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
    assert client.post("/v1/query", content=image, headers={"X-API-Key": "s3cret-key"}).status_code == 200


def test_uploads_over_the_cap_get_413(engine):
    client = _client(engine, max_upload_bytes=20_000, max_batch=2)
    big = _jpeg(synthetic_photo(3, size=(1200, 900)))
    assert len(big) > 20_000
    assert client.post("/v1/query", content=big).status_code == 413
    assert client.post("/v1/query", files={"image": ("big.jpg", big, "image/jpeg")}).status_code == 413
    small = _jpeg(synthetic_photo(3, size=(64, 48)))
    many = [("images", (f"{n}.jpg", small, "image/jpeg")) for n in range(3)]
    assert client.post("/v1/query/batch", files=many).status_code == 413


class _Blocking:
    """Wraps an engine: every query waits until released (a slow query, on demand)."""

    def __init__(self, engine):
        self.engine, self.entered, self.release = engine, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def query_batch(self, *args, **kwargs):
        self.entered.set()
        self.release.wait(30)
        return self.engine.query_batch(*args, **kwargs)


def test_full_service_answers_503_never_queues_unbounded(engine):
    slow = _Blocking(engine)
    client = _client(slow, running=1, waiting=0)
    image = _jpeg(synthetic_photo(4))
    statuses = []
    first = threading.Thread(target=lambda: statuses.append(client.post("/v1/query", content=image).status_code))
    first.start()
    assert slow.entered.wait(30)
    refused = client.post("/v1/query", content=image)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    slow.release.set()
    first.join(60)
    assert statuses == [200]
    assert client.post("/v1/query", content=image).status_code == 200  # the slot came back


def test_a_query_over_its_time_gets_504(engine):
    slow = _Blocking(engine)
    client = _client(slow, timeout_s=0.3)
    assert client.post("/v1/query", content=_jpeg(synthetic_photo(5))).status_code == 504
    slow.release.set()


class _Stale:
    """A stand-in engine whose state goes stale on demand; records whether a reload overlapped a query."""

    def __init__(self):
        self.stale, self.running, self.overlaps, self.follow_writers = False, 0, 0, True
        self.lock = threading.Lock()

    def is_stale(self):
        return self.stale

    def refresh(self):
        with self.lock:
            self.overlaps += self.running
        self.stale = False
        return True

    def query(self):
        with self.lock:
            self.running += 1
        time.sleep(0.01)
        with self.lock:
            self.running -= 1


def test_gate_reloads_only_when_no_query_runs_and_bounds_admission():
    stale = _Stale()
    gate = QueryGate(stale, running=3, waiting=1)
    assert stale.follow_writers is False

    def worker():
        for _ in range(30):
            gate.admit()
            try:
                gate.run(stale.query)
            finally:
                gate.release()

    def writer():
        for _ in range(30):
            stale.stale = True
            time.sleep(0.005)

    threads = [threading.Thread(target=worker) for _ in range(3)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stale.overlaps == 0 and gate.reloads > 0
    for _ in range(4):
        gate.admit()
    with pytest.raises(Overloaded):
        gate.admit()


WRITER = """
import sys
from provenance import Engine
with Engine.open(sys.argv[1]) as engine:
    engine.reindex(sys.argv[2], workers=0, checkpoint_every=2)
    engine.remove(subjects=["Person 1"])
"""


def test_answers_stay_right_while_another_process_reindexes_and_removes(scene, tmp_path):
    index = tmp_path / "index"
    subprocess.run(["cp", "-r", str(scene["index"]), str(index)], check=True)
    extra = tmp_path / "more"
    extra.mkdir()
    for seed in range(20, 28):
        synthetic_photo(seed).save(extra / f"m{seed}.jpg", quality=90)
    copies = {"Person 0": (scene["root"] / "suspects" / "crop_p0.jpg").read_bytes(),
              "Person 1": (scene["root"] / "suspects" / "mirror_p1.jpg").read_bytes()}
    with Engine.open(index, read_only=True) as engine:
        client = _client(engine)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(index), str(extra)])
        answers = []
        while writer.poll() is None or len(answers) < 4:
            for subject, data in copies.items():
                body = client.post("/v1/query", content=data).json()
                answers.append((subject, body["verdict"], body["matches"][0]["subject"] if body["matches"] else None))
        assert writer.wait() == 0
        final = client.post("/v1/query", content=copies["Person 1"]).json()
        reloads = client.get("/v1/info").json()["service"]["reloads"]
    wrong = [answer for answer in answers if answer[1] == "copy" and answer[2] != answer[0]]
    assert wrong == [] and reloads >= 1
    assert all(verdict == "copy" for subject, verdict, _ in answers if subject == "Person 0")
    assert not (final["verdict"] == "copy" and final["matches"][0]["subject"] == "Person 1")  # the removal took effect


def test_importing_the_package_loads_nothing_heavy():
    code = ("import sys, provenance, provenance.service, provenance.report, provenance.scan, provenance.cli; "
            "heavy = [m for m in ('torch', 'fastapi', 'uvicorn', 'cv2', 'faiss', 'selenium') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
