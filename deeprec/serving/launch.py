"""The ready line: a server prints one JSON line with "listening" once it listens (ReadyServer), and
ServerProcess starts deeprec-serve (or another such server) in a subprocess and waits for that line.
What the console script, the tests, the load test and scripts that drive a service share."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def ready_server(config, ready: dict):
    """A uvicorn.Server that prints `ready` (with "listening") as one JSON line once it listens."""
    import uvicorn

    class ReadyServer(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(json.dumps(ready), flush=True)

    return ReadyServer(config)


def serve_command() -> str:
    """The deeprec-serve console script of this interpreter's environment."""
    return shutil.which("deeprec-serve") or str(Path(sys.executable).parent / "deeprec-serve")


class ServerProcess:
    """A server subprocess; ready once it prints its JSON line with "listening" (deeprec-serve does
    after recovery). `url`, `info` (that line), kill9(), stop() (SIGTERM: drain, last snapshot)."""

    def __init__(self, args: list[str], timeout: float = 300.0) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        self.info = None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("{") and "listening" in line:
                self.info = json.loads(line)
                break
        if self.info is None:
            self.proc.kill()
            raise RuntimeError(f"{args[0]} did not start: {self.proc.stderr.read()[-3000:]}")
        self.url = self.info["listening"]
        self.ready_seconds = time.perf_counter() - self.started

    @classmethod
    def serve(cls, ckpt: str | Path, state_dir: str | Path, *overrides: str, port: int = 0, **kwargs) -> "ServerProcess":
        """deeprec-serve ckpt=... state_dir=... port=... (0: a free port) with Hydra overrides."""
        args = [serve_command(), f"ckpt={ckpt}", f"state_dir={state_dir}", f"port={port}", "log_level=warning", *overrides]
        return cls(args, **kwargs)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
