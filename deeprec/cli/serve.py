"""deeprec-serve: real-time recommendations and feedback over HTTP (see deeprec.serving), or
`export=DIR` to write the service's log as tables."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys

import hydra
from omegaconf import DictConfig

from deeprec.cli.common import CONFIG_PATH, plain, report_user_errors
from deeprec.config import validate_section
from deeprec.errors import ConfigError

log = logging.getLogger("deeprec.serve")


def listening_socket(host: str, port: int) -> socket.socket:
    """The port, bound before the slow start so that a busy port fails at once, in one line. uvicorn
    listens on it once the service is ready; until then a connection is refused, not left waiting."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another port= or host=") from None
    sock.set_inheritable(True)
    return sock


def run_server(cfg) -> None:
    import uvicorn

    from deeprec.serving.app import create_app
    from deeprec.serving.launch import ready_server
    from deeprec.serving.service import Service

    sock = listening_socket(cfg.host, cfg.port)
    service = Service(cfg)  # loads the checkpoint, the last snapshot, replays the log
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        create_app(service), loop="auto", http="auto", lifespan="on", access_log=False,
        log_level=cfg.log_level, timeout_graceful_shutdown=10, server_header=False,
    )
    ready = {"listening": f"http://{host}:{port}", "model_version": service.version, "recovery": service.recovery}
    ready_server(config, ready).run(sockets=[sock])


@hydra.main(config_path=CONFIG_PATH, config_name="serve", version_base="1.3")
@report_user_errors("deeprec-serve")
def main(cfg: DictConfig) -> None:
    from deeprec.serving.config import ServeConfig

    serve_cfg = validate_section(plain(cfg), ServeConfig, "deeprec-serve").check()
    if serve_cfg.export is not None:
        from deeprec.serving.export import export_log

        print(json.dumps(export_log(serve_cfg.state_dir, serve_cfg.export), sort_keys=True))
        return
    if serve_cfg.token is None:
        serve_cfg.token = os.environ.get("DEEPREC_SERVE_TOKEN") or None
    run_server(serve_cfg)


if __name__ == "__main__":
    sys.exit(main())
