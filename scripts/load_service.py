"""Load test of `provenance serve` on loopback: latency and throughput at 1, 4 and 16 clients.

    python scripts/load_service.py --index indexes/dev --refs ../shared/bench/refs.csv --out out/load

Starts the service as a child process on a free loopback port over a copy of the index,
makes copies of references (a crop, re-encoded) whose true reference is known, and for each
client count sends a bounded number of requests (``--requests``, within ``--max-seconds``)
from that many threads, one keep-alive connection each. Prints p50/p99 latency, throughput,
errors and wrong answers per level. With ``--writer`` a second process meanwhile reindexes
more images into the served index and removes some queried subjects: every answer must still
be right for the state it came from (the true reference, or no copy once it is removed).
Bounded by design: loopback only, a request count and a time limit per level.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from PIL import Image


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_queries(refs_csv: Path, count: int, seed: int) -> list[tuple[bytes, str, str]]:
    """(JPEG bytes, true reference path, subject) for ``count`` crops of references."""
    with open(refs_csv, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("subject")]
    chosen = random.Random(seed).sample(rows, min(count, len(rows)))
    queries = []
    for row in chosen:
        image = Image.open(refs_csv.parent / row["path"]).convert("RGB")
        width, height = image.size
        crop = image.crop((width // 10, height // 12, width - width // 10, height - height // 8))
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=75)
        queries.append((buffer.getvalue(), row["path"], row["subject"]))
    return queries


def start_service(index: Path, port: int, waiting: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", "import sys; from provenance.cli import main; sys.argv[0] = 'provenance'; main()",
               "serve", "--index", str(index), "--port", str(port), "--max-waiting", str(waiting)]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the service exited with {process.returncode}; see {log}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v1/healthz")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the service did not start within 180 s")


def run_level(port: int, queries, clients: int, requests: int, max_seconds: float, removed: set[str],
              keep_going=None) -> dict:
    """``requests`` queries from ``clients`` threads; with ``keep_going``, as many as fit while it says so."""
    latencies, errors, wrong, statuses = [], [], [], {}
    lock = threading.Lock()
    counter = iter(range(requests if keep_going is None else 10**9))
    stop_at = time.monotonic() + max_seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.monotonic() < stop_at and (keep_going is None or keep_going()):
            with lock:
                number = next(counter, None)
            if number is None:
                return
            data, truth, subject = queries[number % len(queries)]
            started = time.perf_counter()
            try:
                connection.request("POST", "/v1/query?top_k=3", body=data, headers={"Content-Type": "image/jpeg"})
                response = connection.getresponse()
                body = response.read()
            except OSError as exc:
                with lock:
                    errors.append(str(exc))
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                continue
            elapsed = time.perf_counter() - started
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status != 200:
                    errors.append(f"HTTP {response.status}")
                    continue
                latencies.append(elapsed)
                answer = json.loads(body)
                best = answer["matches"][0] if answer["matches"] else None
                named = best["path"] if best and answer["verdict"] == "copy" else None
                if named is not None and named != truth or (named is None and subject not in removed):
                    wrong.append((truth, answer["verdict"], named))
                elif removed and subject in removed and keep_going is None and named == truth:
                    wrong.append((truth, "named after its removal", named))

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"clients": clients, "answered": len(latencies), "seconds": round(seconds, 2),
            "throughput_qps": round(len(latencies) / seconds, 2) if seconds else 0.0,
            "p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else None,
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1) if ordered else None,
            "errors": len(errors), "wrong": len(wrong), "statuses": statuses, "wrong_examples": wrong[:3]}


WRITER = """
import sys
from provenance import Engine
with Engine.open(sys.argv[1]) as engine:
    engine.reindex(sys.argv[2], workers=0, checkpoint_every=32)
    engine.remove(subjects=sys.argv[3:])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="An index of --refs (copied, never changed).")
    parser.add_argument("--refs", type=Path, default=Path("../shared/bench/refs.csv"))
    parser.add_argument("--out", type=Path, default=Path("out/load"))
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--requests", type=int, default=96, help="Requests per level.")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="Time limit per level.")
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--max-waiting", type=int, default=16, help="The service's waiting slots (beyond them: 503).")
    parser.add_argument("--writer", type=Path, default=None,
                        help="A folder or manifest reindexed into the served index during the last level; "
                             "then a few queried subjects are removed.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    served = args.out / "index"
    shutil.rmtree(served, ignore_errors=True)
    shutil.copytree(args.index, served)
    queries = make_queries(args.refs, args.queries, args.seed)
    port = free_port()
    service = start_service(served, port, args.max_waiting, args.out / "service.log")
    levels, removed = [], set()
    try:
        run_level(port, queries, 2, 8, 60, removed)  # warm: the first queries read the index from disk
        for clients in (int(level) for level in args.levels.split(",")):
            levels.append(run_level(port, queries, clients, args.requests, args.max_seconds, removed))
            print(json.dumps(levels[-1]), flush=True)
        if args.writer is not None:
            removed = {subject for _, _, subject in queries[:4]}
            writer = subprocess.Popen([sys.executable, "-c", WRITER, str(served), str(args.writer), *sorted(removed)],
                                      stdout=subprocess.DEVNULL, stderr=(args.out / "writer.log").open("w"))
            during = run_level(port, queries, 4, 0, args.max_seconds * 5, removed, keep_going=lambda: writer.poll() is None)
            during.update(clients="4 + writer", writer_exit=writer.wait())
            after = run_level(port, queries[:8], 1, 8, args.max_seconds, removed)
            after["clients"] = "1 after"  # a removed subject's copy named with its reference counts as wrong here
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", "/v1/info")
            during["reloads"] = json.loads(connection.getresponse().read())["service"]["reloads"]  # committed states seen
            levels += [during, after]
            for level in levels[-2:]:
                print(json.dumps(level), flush=True)
    finally:
        service.terminate()
        service.wait(30)
    (args.out / "load.json").write_text(json.dumps({"levels": levels, "queries": len(queries),
                                                    "index": str(args.index)}, indent=1))
    print("clients     answered  p50 ms  p99 ms  queries/s  errors  wrong")
    for level in levels:
        print(f"{level['clients']!s:>10}  {level['answered']:>8}  {level['p50_ms']:>6}  {level['p99_ms']:>6}  "
              f"{level['throughput_qps']:>9}  {level['errors']:>6}  {level['wrong']:>5}")


if __name__ == "__main__":
    main()
