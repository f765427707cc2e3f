"""Two deeprec-serve shards behind nginx (`hash $arg_user_id consistent`): every learner's requests land
on one shard, which alone holds that learner's events; killing one shard leaves the other serving, and
the killed one comes back with its learners' state."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import skip_unless_required
from deeprec.serving.export import read_log
from deeprec.serving.sharding import nginx_config
from serving_helpers import ServerProcess, event, free_port, linucb_checkpoint

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None)


@pytest.fixture
def nginx_binary() -> str:
    if NGINX is None:
        skip_unless_required("nginx is not installed (apt-get install nginx-light); the sharding test needs it",
                             "DEEPREC_REQUIRE_NGINX")
    return NGINX


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def test_two_shards_own_their_learners_and_one_failure_leaves_the_other_serving(tmp_path, nginx_binary):
    ckpt = linucb_checkpoint(tmp_path / "linucb.ckpt")
    ports = {"a": free_port(), "b": free_port()}
    shards = {name: ServerProcess(ckpt, tmp_path / name, "route_key=true", port=port) for name, port in ports.items()}
    proxy_port = free_port()
    work = tmp_path / "nginx"
    work.mkdir()
    (work / "nginx.conf").write_text(nginx_config([f"127.0.0.1:{p}" for p in ports.values()], f"127.0.0.1:{proxy_port}", work,
                                                  user="root" if os.geteuid() == 0 else None))
    nginx = subprocess.Popen([nginx_binary, "-p", str(work), "-c", str(work / "nginx.conf"), "-e", str(work / "error.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proxy = f"http://127.0.0.1:{proxy_port}"
    try:
        wait_for_port(proxy_port)
        users = [f"u{n:03d}" for n in range(40)] + [f"new{n}" for n in range(10)]
        with httpx.Client(base_url=proxy, timeout=10) as http:
            shown = {}
            for n, user in enumerate(users):
                first = http.post(f"/recommend?user_id={user}", json={"user_id": user, "k": 3}).json()["items"][0]["item_id"]
                answer = http.post(f"/feedback?user_id={user}", json=[event(f"{user}-a", user, first), event(f"{user}-b", user, "i001")])
                assert answer.status_code == 200, answer.text
                shown[user] = first
            owners = {name: set(read_log(tmp_path / name)[0]["user_id"]) for name in shards}
            assert owners["a"] and owners["b"], "both shards hold learners"
            assert not owners["a"] & owners["b"] and owners["a"] | owners["b"] == set(users)
            for name, shard in shards.items():
                assert httpx.get(f"{shard.url}/stats").json()["events_applied"] == 2 * len(owners[name])

            shards["a"].kill9()
            for user in users:
                rec = http.post(f"/recommend?user_id={user}", json={"user_id": user, "k": 25})
                fed = http.post(f"/feedback?user_id={user}", json=event(f"{user}-c", user, "i002"))
                if user in owners["b"]:
                    assert rec.status_code == fed.status_code == 200
                    assert shown[user] not in [r["item_id"] for r in rec.json()["items"]]  # its state is there
                else:
                    assert rec.status_code == fed.status_code == 502  # never answered by a shard without its state
            assert set(read_log(tmp_path / "b")[0]["user_id"]) == owners["b"]  # nothing of a's learners moved to b

            shards["a"] = ServerProcess(ckpt, tmp_path / "a", "route_key=true", port=ports["a"])
            for user in sorted(owners["a"]):
                rec = http.post(f"/recommend?user_id={user}", json={"user_id": user, "k": 25})
                assert rec.status_code == 200
                assert shown[user] not in [r["item_id"] for r in rec.json()["items"]]  # recovered from a's own log
            misrouted = http.post("/recommend?user_id=u001", json={"user_id": "u002"})
            assert misrouted.status_code == 421
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        for shard in shards.values():
            shard.stop()
