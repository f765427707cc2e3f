"""Scale-out: N deeprec-serve processes behind nginx, each owning the learners hashed to it.

nginx's `hash $arg_user_id consistent` (ketama) sends every request of one learner to the same shard,
so that learner's log, snapshots and online state live in one process; adding a shard moves about
1/N of the learners. Clients put the learner in the query (`POST /recommend?user_id=u1`), and the
shards run with route_key=true, so a request whose body names another learner is refused (421)
instead of splitting that learner's state. A failed shard is not replaced by another one
(`proxy_next_upstream off`, `max_fails=0`): its learners get 502 until it is back, with its state,
while the other shards keep serving theirs.

`python -m deeprec.serving.sharding --listen 127.0.0.1:8080 127.0.0.1:8001 127.0.0.1:8002 > nginx.conf`
writes such a configuration; run it with `nginx -p DIR -c nginx.conf -e DIR/error.log`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def nginx_config(shards: list[str], listen: str, workdir: str | Path, user: str | None = None,
                 key: str = "$arg_user_id") -> str:
    """An nginx.conf (foreground, files under workdir) routing by a consistent hash of `key` to `shards` (host:port)."""
    work = Path(workdir).resolve()
    temp = "\n".join(f"    {kind}_temp_path {work / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    servers = "\n".join(f"        server {shard} max_fails=0;" for shard in shards)
    user_line = f"user {user};\n" if user else ""
    return f"""{user_line}worker_processes 1;
daemon off;
pid {work / 'nginx.pid'};
error_log {work / 'error.log'} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}
    upstream deeprec_shards {{
        hash {key} consistent;   # one learner -> one shard; adding a shard moves ~1/N of them
{servers}
        keepalive 64;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://deeprec_shards;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream off;   # never send a learner to a shard that does not hold its state
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
            client_max_body_size 2m;
        }}
    }}
}}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="print an nginx.conf routing learners to deeprec-serve shards")
    parser.add_argument("shards", nargs="+", help="host:port of each deeprec-serve process")
    parser.add_argument("--listen", default="127.0.0.1:8080", help="address nginx listens on")
    parser.add_argument("--workdir", default=".", help="folder for nginx's pid, error log and temporary files")
    parser.add_argument("--user", default="root" if os.geteuid() == 0 else None, help="worker user (when run as root)")
    args = parser.parse_args(argv)
    print(nginx_config(args.shards, args.listen, args.workdir, args.user), end="")


if __name__ == "__main__":
    main()
