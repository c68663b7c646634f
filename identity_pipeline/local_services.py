"""Throw-away PostgreSQL and Redis servers on 127.0.0.1, for the scale-out tests and for trying
a Postgres-backed Dagster (``make ui-postgres``) or Celery workers on one machine.

They run Debian's servers (``apt-get install postgresql redis-server``) from a folder of their
own, on a free port (or the one asked for), listening on 127.0.0.1 only, with a password, and
stop when the ``with`` block ends. Nothing here imports Dagster.

    python -m identity_pipeline.local_services --postgres .postgres --redis .redis -- CMD...

starts both (a new Postgres cluster is initialised the first time; an existing folder is reused,
with its data), runs ``CMD`` with the connection in its environment (``DAGSTER_PG_*``,
``DAGSTER_CELERY_BROKER_URL``, ``DAGSTER_CELERY_BACKEND_URL``) and stops them when it exits.

Postgres refuses to run as root: as root, the servers run as the ``postgres`` system user (the
Debian package creates it), and their folder is handed to that user.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
PG_BIN_DIR_ENV = "IDENTITY_PIPELINE_PG_BIN_DIR"  # where initdb/pg_ctl are, when not found
SERVICE_USER = "postgres"  # the system user servers run as when we are root
START_TIMEOUT_SECONDS = 60.0
DEBIAN_PACKAGES = {"postgres": "postgresql", "redis": "redis-server"}


class ServiceUnavailable(RuntimeError):
    """A server cannot run here (not installed, no user to run it as): the reason, and the fix."""


@dataclass(frozen=True)
class PostgresServer:
    """A running cluster and the database Dagster uses in it."""

    port: int
    user: str
    password: str
    db_name: str
    folder: Path
    host: str = LOOPBACK

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.db_name}"

    def env(self) -> dict[str, str]:
        """What ``deploy/postgres/dagster.yaml`` reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db_name,
        }


@dataclass(frozen=True)
class RedisServer:
    """A running Redis: database 0 is the Celery broker, database 1 the result backend."""

    port: int
    password: str
    folder: Path
    pid: int
    host: str = LOOPBACK

    def url(self, db: int) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/{db}"

    def env(self) -> dict[str, str]:
        """What ``deploy/celery/celery.yaml`` reads."""
        return {
            "DAGSTER_CELERY_BROKER_URL": self.url(0),
            "DAGSTER_CELERY_BACKEND_URL": self.url(1),
        }


def free_port() -> int:
    """A TCP port nobody listens on right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _missing(what: str, service: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"{what} not found: install Debian's {DEBIAN_PACKAGES[service]} package "
        f"(apt-get install {DEBIAN_PACKAGES[service]})"
    )


def postgres_bin_dir() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``: ``$IDENTITY_PIPELINE_PG_BIN_DIR``, the PATH, or
    the newest ``/usr/lib/postgresql/<version>/bin`` (Debian keeps them off the PATH)."""
    explicit = os.environ.get(PG_BIN_DIR_ENV)
    candidates = [Path(explicit)] if explicit else []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [p for p in debian.iterdir() if p.name.replace(".", "").isdigit()]
        for version in sorted(versions, key=lambda p: float(p.name), reverse=True):
            candidates.append(version / "bin")
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise _missing("PostgreSQL's initdb and pg_ctl", "postgres")


def redis_server_binary() -> Path:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
    )
    if not found:
        raise _missing("redis-server", "redis")
    return Path(found)


def _service_user() -> pwd.struct_passwd | None:
    """The user servers run as: ourselves, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError as error:
        raise ServiceUnavailable(
            f"running as root and there is no {SERVICE_USER!r} user to run the servers as "
            "(Debian's postgresql package creates it)"
        ) from error


def _as_user(user: pwd.struct_passwd | None) -> dict:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _hand_over(folder: Path, user: pwd.struct_passwd | None) -> None:
    """Make ``folder`` the service user's, and check that user can reach it."""
    if user is None:
        return
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
    probe = subprocess.run(["test", "-w", str(folder)], **_as_user(user), check=False)
    if probe.returncode != 0:
        raise ServiceUnavailable(
            f"the {SERVICE_USER} user cannot reach {folder} (a parent folder is not "
            "searchable by others); use a folder under /tmp"
        )


def _run(command: Sequence[str], user, what: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        list(command),
        **_as_user(user),
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}")


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def postgres_server(
    folder: str | os.PathLike[str],
    port: int | None = None,
    db_name: str = "dagster",
    user: str = "dagster",
) -> Iterator[PostgresServer]:
    """A PostgreSQL cluster in ``folder`` (initialised when new, reused otherwise), listening
    on 127.0.0.1:``port`` (default: a free one) with password authentication only; stopped
    (fast shutdown) when the block ends. The database ``db_name`` exists, owned by ``user``."""
    bin_dir = postgres_bin_dir()
    runner = _service_user()
    folder = Path(folder).resolve()
    data = folder / "data"
    password_file = folder / "password"
    folder.mkdir(parents=True, exist_ok=True)
    new_cluster = not (data / "PG_VERSION").exists()
    if new_cluster:
        password = secrets.token_urlsafe(18)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
    else:
        password = password_file.read_text().strip()
    if new_cluster:
        _hand_over(folder, runner)
        _run(
            [
                str(bin_dir / "initdb"),
                "--pgdata",
                str(data),
                "--username",
                user,
                "--pwfile",
                str(password_file),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--no-instructions",
            ],
            runner,
            "initdb",
        )
    port = port or free_port()
    log = folder / "postgres.log"
    options = f"-c listen_addresses={LOOPBACK} -p {port} -c unix_socket_directories=''"
    _run(
        [
            str(bin_dir / "pg_ctl"),
            "start",
            "--wait",
            f"--timeout={int(START_TIMEOUT_SECONDS)}",
            "--pgdata",
            str(data),
            "--log",
            str(log),
            "-o",
            options,
        ],
        runner,
        f"starting PostgreSQL on {LOOPBACK}:{port} (log: {log})\n{_tail(log)}",
    )
    try:
        client_env = {"PGPASSWORD": password, "PGHOST": LOOPBACK, "PGPORT": str(port)}
        if new_cluster:
            _run(
                [str(bin_dir / "createdb"), "--username", user, "--owner", user, db_name],
                runner,
                "createdb",
                env=client_env,
            )
        yield PostgresServer(port, user, password, db_name, folder)
    finally:
        _run(
            [str(bin_dir / "pg_ctl"), "stop", "--wait", "--mode", "fast", "--pgdata", str(data)],
            runner,
            "stopping PostgreSQL",
        )


def _redis_answers(port: int, password: str) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as conn:
            conn.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            reply = b""
            while b"PONG" not in reply and len(reply) < 200:
                chunk = conn.recv(200)
                if not chunk:
                    break
                reply += chunk
            return b"+OK" in reply and b"+PONG" in reply
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(folder: str | os.PathLike[str], port: int | None = None) -> Iterator[RedisServer]:
    """A Redis server working in ``folder``, on 127.0.0.1:``port`` (default: a free one), with a
    password and no persistence (a broker's queues are work in flight, not data); stopped when
    the block ends."""
    binary = redis_server_binary()
    runner = _service_user()
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _hand_over(folder, runner)
    password = secrets.token_urlsafe(18)
    port = port or free_port()
    log = folder / "redis.log"
    # The password on the command line: anyone on this machine may read it in `ps`; the server
    # is a throw-away one on the loopback interface.
    process = subprocess.Popen(
        [
            str(binary),
            "--bind",
            LOOPBACK,
            "--port",
            str(port),
            "--dir",
            str(folder),
            "--logfile",
            str(log),
            "--requirepass",
            password,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        **_as_user(runner),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _redis_answers(port, password):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start on {LOOPBACK}:{port} (log: {log})\n{_tail(log)}"
                )
            time.sleep(0.05)
        yield RedisServer(port, password, folder, process.pid)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m identity_pipeline.local_services",
        description="Run a command beside a local Postgres and/or Redis (127.0.0.1 only).",
    )
    parser.add_argument("--postgres", metavar="DIR", help="the cluster's folder (kept)")
    parser.add_argument("--postgres-port", type=int, default=None)
    parser.add_argument("--redis", metavar="DIR", help="the broker's working folder")
    parser.add_argument("--redis-port", type=int, default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not (args.postgres or args.redis):
        parser.error("give --postgres and/or --redis, then -- and the command to run")
    env = dict(os.environ)

    def stop(signum: int, _frame) -> None:  # SIGTERM too must stop the servers, not orphan them
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    with contextlib.ExitStack() as stack:
        try:
            if args.postgres:
                pg = stack.enter_context(postgres_server(args.postgres, args.postgres_port))
                env.update(pg.env())
                print(f"PostgreSQL: {pg.host}:{pg.port} database {pg.db_name}", file=sys.stderr)
            if args.redis:
                broker = stack.enter_context(redis_server(args.redis, args.redis_port))
                env.update(broker.env())
                print(f"Redis: {broker.host}:{broker.port}", file=sys.stderr)
        except ServiceUnavailable as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        child = subprocess.Popen(command, env=env)
        try:
            return child.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the child too; let it finish its shutdown
            return child.wait()
        except SystemExit:
            child.terminate()
            child.wait()
            raise


if __name__ == "__main__":
    sys.exit(main())
