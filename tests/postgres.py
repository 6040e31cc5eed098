"""A real PostgreSQL server for the tests: Debian's `postgresql` package, a throwaway cluster.

`initdb` into a temporary folder, `pg_ctl start` on a free loopback port (TCP only, no Unix socket
beside other clusters), trust authentication for loopback. initdb refuses to run as root, so as root
the cluster belongs to the `postgres` user the package creates. `make test` installs the package on a
machine that lacks it; where it cannot be found, :func:`start` says why (the tests skip with that reason).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

DEBIAN_BIN = Path("/usr/lib/postgresql")


class Unavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (the message says how to install them)."""


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(DEBIAN_BIN.glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]), reverse=True)
    if versions:
        return str(versions[0])
    raise Unavailable(
        f"no PostgreSQL server ({name} not on PATH nor in {DEBIAN_BIN}/*/bin): install Debian's "
        "`postgresql` package (`apt-get install -y postgresql`, which `make test` does as root)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def start() -> Iterator[str]:
    """A running cluster for the duration; yields the URL of its `postgres` database (superuser)."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="story-pg-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the package's postgres user owns the cluster
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        root.chmod(0o700)
    port = _free_port()
    run = {"check": True, "capture_output": True, "text": True}
    try:
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
            **run,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c fsync=off"
        subprocess.run(
            [
                *as_user,
                pg_ctl,
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            **run,
        )
    except subprocess.CalledProcessError as e:
        log = (root / "log").read_text(errors="replace") if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise Unavailable(f"PostgreSQL did not start ({e.stderr.strip() or e}); {log[-500:]}") from e
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


_made = 0


def fresh_schema(url: str) -> str:
    """A new, empty schema in the cluster; returns a URL whose connections use it (search_path), so
    every test starts from an empty database without the cost of CREATE DATABASE."""
    import psycopg

    global _made
    _made += 1
    name = f"t{os.getpid()}_{_made}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{url}?options=-csearch_path%3D{name}"
