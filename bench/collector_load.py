"""Benchmark: many simulated agents uploading to one collector at once; throughput, CPU, memory."""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

# Starts `capture collector serve` (embedded SQLite + directory store unless --db/--store say
# otherwise), enrolls N simulated agents (each with its own consent ledger, a grant bound to the
# study, and a device token), and lets all of them upload small real session bundles over tus
# for a bounded time. Then checks that every bundle a client saw accepted is accepted exactly
# once on the collector, and reports bundles/s, MiB/s and the collector's CPU and memory.
# Usage: python bench/collector_load.py [--agents 50] [--seconds 30] [--db URL --store URL]
RESULTS = Path(__file__).resolve().parent / "results" / "collector_load.json"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _enroll(url: str, admin: httpx.Client, study: dict[str, Any], home: Path,
            name: str) -> dict[str, str]:
    from capture.consent import StudyTerms, grant
    from capture.consent.records import Controller

    code = admin.post(f"/v1/studies/{study['id']}/invites").json()["code"]
    ledger = home / "ledger.jsonl"
    receipt = grant(name, study["games"], study["scope"], purposes=study["purposes"],
                    license=study["licence"], controller=Controller(**study["controller"]),
                    ledger_path=ledger, study=StudyTerms(study["id"], url,
                                                          study["terms_version"],
                                                          study["terms_sha256"]))
    line = json.loads(ledger.read_bytes().splitlines()[-1])
    answer = httpx.post(url + "/v1/enrollment", json={"code": code, "pseudonym": name,
                                                      "receipt": line}).json()
    return {"token": answer["device_token"], "receipt_id": receipt.receipt_id}


def _sessions(template: Path, home: Path, receipt_id: str, player: str, count: int) -> list[Path]:
    """`count` copies of one real bundle, each with its own session id, consent and player."""
    from capture.session.manifest import read_manifest, write_manifest

    out = []
    base = read_manifest(template)
    for i in range(count):
        target = home / f"{base.session_id}-{i:04d}"
        shutil.copytree(template, target)
        record = base.updated(session_id=target.name, player=player,
                              consent=base.consent.__class__(receipt_id, base.consent.license,
                                                             base.consent.scope, False))
        write_manifest(target, record)
        out.append(target)
    return out


def _agent(url: str, token: str, sessions: list[Path], deadline: float,
           outcome: dict[str, Any]) -> None:
    from capture import formats
    from capture.uploader import tus
    from capture.uploader.http import call, client

    with client(url, token) as http:
        for session in sessions:
            if time.monotonic() >= deadline:
                break
            try:
                state = call(http, "POST", "/v1/bundles", json={
                    "manifest_text": (session / formats.MANIFEST).read_text("utf-8")}).json()
                for item in state["files"]:
                    tus.send_file(http, item["upload_url"], session / item["name"],
                                  item["length"], chunk_size=256 << 10)
                verdict = call(http, "POST", f"/v1/bundles/{state['bundle_id']}/complete").json()
            except Exception as exc:  # counted and reported, never hidden
                outcome["errors"].append(f"{session.name}: {exc}")
                continue
            if verdict["status"] == "accepted":
                outcome["accepted"].append(session.name)
                outcome["bytes"] += verdict["total_bytes"]
            else:
                outcome["errors"].append(f"{session.name}: {verdict['status']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sessions-per-agent", type=int, default=40)
    parser.add_argument("--db", default=None)
    parser.add_argument("--store", default=None)
    args = parser.parse_args()

    from tests.factories import build_session, gameplay_script

    tmp = Path(tempfile.mkdtemp(prefix="capture-bench-load-"))
    token = secrets.token_urlsafe(24)
    command = [sys.executable, "-m", "capture", "collector", "serve", "--port", "0"]
    command += ["--db", args.db] if args.db else []
    command += ["--store", args.store] if args.store else []
    serve = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, env={**os.environ, "CAPTURE_HOME": str(tmp / "builder"),
                                             "CAPTURE_COLLECTOR_ADMIN_TOKEN": token})
    try:
        url = serve.stdout.readline().strip() if serve.stdout else ""
        server = psutil.Process(serve.pid)
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
        study = admin.post("/v1/studies", json={
            "id": "load", "name": "load", "terms_text": "Load test terms.\n",
            "terms_version": "1", "games": ["factorygame"],
            "scope": ["video", "keyboard", "mouse", "gamepad"], "purposes": ["bench"],
            "licence": "CC0-1.0", "controller_name": "bench", "controller_contact": "bench"}
        ).json()
        template = build_session(tmp / "template", gameplay_script(seconds=2.0))
        agents = []
        for n in range(args.agents):
            home = tmp / f"agent-{n:03d}"
            home.mkdir()
            enrolled = _enroll(url, admin, study, home, f"agent-{n:03d}")
            sessions = _sessions(template, home / "sessions", enrolled["receipt_id"],
                                 f"agent-{n:03d}", args.sessions_per_agent)
            agents.append((enrolled["token"], sessions))
        outcomes = [{"accepted": [], "errors": [], "bytes": 0} for _ in agents]
        server.cpu_percent(None)
        cpu0 = server.cpu_times()
        peak_rss = server.memory_info().rss
        began = time.monotonic()
        deadline = began + args.seconds
        threads = [threading.Thread(target=_agent, args=(url, tok, sessions, deadline, out))
                   for (tok, sessions), out in zip(agents, outcomes, strict=True)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak_rss = max(peak_rss, server.memory_info().rss)
            time.sleep(0.2)
        elapsed = time.monotonic() - began
        cpu1 = server.cpu_times()
        accepted = [name for out in outcomes for name in out["accepted"]]
        rows = admin.get("/v1/admin/sessions", params={"study": "load"}).json()
        on_collector = [(r["player_id"], r["session_id"]) for r in rows]
        total_bytes = sum(out["bytes"] for out in outcomes)
        errors = [e for out in outcomes for e in out["errors"]]
        result = {
            "bench": "collector_load",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "setup": {"agents": args.agents, "seconds": args.seconds,
                      "database": args.db or "SQLite (embedded)",
                      "store": args.store or "directory (embedded)",
                      "bundle_bytes": sum(p.stat().st_size for p in template.iterdir()),
                      "chunk_kib": 256},
            "elapsed_s": round(elapsed, 2),
            "accepted_by_clients": len(accepted),
            "accepted_on_collector": len(on_collector),
            "accepted_exactly_once": len(on_collector) == len(set(on_collector))
                                     == len(accepted),
            "errors": len(errors), "first_errors": errors[:5],
            "bundles_per_s": round(len(accepted) / elapsed, 1),
            "mib_per_s": round(total_bytes / elapsed / (1 << 20), 2),
            "collector_cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 1),
            "collector_cpu_cores": round(((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system))
                                         / elapsed, 2),
            "collector_peak_rss_mib": round(peak_rss / (1 << 20), 1),
        }
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        admin.close()
    finally:
        serve.terminate()
        serve.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
