"""Private PostgreSQL and Redis servers on loopback, and the local runner.

Used by `make run` (the whole copier on its embedded defaults), the test
harness (`tests/stack.py`), and the `copier_replay` / `copier_bench`
commands when they need servers of their own. Nothing here is needed in
production, where `docker compose` provides the servers.

    python -m copier.devstack run [--web-port 8000] [--flower-port 5555] [--stack-dir .stack]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_apt_updated = False


# --- packages -------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def ensure_server_packages() -> None:
    """Install Debian's postgresql and redis-server when missing (as root), or say what to do."""
    global _apt_updated
    if _pg_bin() is not None and shutil.which("redis-server"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(
            "PostgreSQL and Redis are needed: install the Debian packages "
            "`postgresql` and `redis-server` (sudo apt-get install postgresql redis-server)."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        _apt_updated = True
    subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql", "redis-server"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    if _pg_bin() is None or not shutil.which("redis-server"):
        raise RuntimeError("installing postgresql and redis-server did not provide their binaries")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer on 127.0.0.1:{port} within {timeout:.0f} s")


# --- PostgreSQL -----------------------------------------------------------------------------


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its binaries as the `postgres` user then."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


class PostgresServer:
    def __init__(self, datadir: Path, port: int) -> None:
        self.datadir = datadir
        self.port = port

    @property
    def url(self) -> str:
        return f"postgres://copier@127.0.0.1:{self.port}/copier"

    @classmethod
    def start(cls, datadir: Path, port: int | None = None) -> PostgresServer:
        ensure_server_packages()
        datadir = datadir.resolve()
        datadir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for path in datadir.parents:  # postgres must be able to traverse to its dir
                mode = os.stat(path).st_mode
                if not mode & 0o001:
                    os.chmod(path, mode | 0o001)
            os.chown(datadir, pw.pw_uid, pw.pw_gid)
        server = cls(datadir, port or free_port())
        if not (datadir / "PG_VERSION").exists():
            server._run("initdb", "-D", str(datadir), "--auth=trust", "-U", "copier",
                        "-E", "UTF8", "--no-sync")
        server._start()
        server._create_database()
        return server

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        bin_dir = _pg_bin()
        assert bin_dir is not None
        return subprocess.run([*_as_postgres_user(), str(bin_dir / tool), *args], check=True,
                              capture_output=True, text=True, cwd="/")

    def _start(self) -> None:
        options = (f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=300")
        self._run("pg_ctl", "-D", str(self.datadir), "-o", options, "-l",
                  str(self.datadir / "server.log"), "-w", "-t", "60", "start")
        _wait_port(self.port, 30, "PostgreSQL")

    def _create_database(self) -> None:
        bin_dir = _pg_bin()
        assert bin_dir is not None
        exists = subprocess.run(
            [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "copier",
             "-d", "postgres", "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'copier'"],
            check=True, capture_output=True, text=True,
        )
        if exists.stdout.strip() != "1":
            subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", "copier", "copier"], check=True, capture_output=True)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Stop and start on the same port, data kept (fault tests restart it mid-stream)."""
        self.stop()
        self._start()


# --- Redis ----------------------------------------------------------------------------------


class RedisServer:
    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, workdir: Path, port: int | None = None) -> RedisServer:
        ensure_server_packages()
        workdir.mkdir(parents=True, exist_ok=True)
        server = cls(workdir, port or free_port())
        server._start()
        return server

    def _start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, 20, "Redis")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self._start()


@contextlib.contextmanager
def private_stack(root: Path) -> Iterator[tuple[PostgresServer, RedisServer]]:
    """PostgreSQL and Redis under `root`, always stopped on the way out."""
    pg = PostgresServer.start(root / "pg")
    try:
        redis = RedisServer.start(root / "redis")
        try:
            yield pg, redis
        finally:
            redis.stop()
    finally:
        pg.stop()


# --- the local runner -----------------------------------------------------------------------


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, check=True,
                   cwd=ROOT)


def _admin_login(env: dict[str, str], stack: Path) -> str:
    """Create the `admin` login once; its password is printed once and kept in a 0600 file."""
    path = stack / "admin-password.txt"
    if path.exists():
        return f"admin login: user `admin`, password in {path}"
    password = secrets.token_urlsafe(12)
    code = (
        "from django.contrib.auth import get_user_model;"
        "U = get_user_model();"
        "u = U.objects.filter(username='admin').first() or "
        "U.objects.create_superuser('admin', 'admin@localhost', 'x');"
        "import os; u.set_password(os.environ['COPIER_ADMIN_PASSWORD']); u.save()"
    )
    _manage({**env, "COPIER_ADMIN_PASSWORD": password}, "shell", "-c", code)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return f"admin login: user `admin`, password `{password}` (kept in {path})"


def run(web_port: int, flower_port: int, stack: Path) -> int:
    ensure_server_packages()
    stack = stack.resolve()
    stack.mkdir(parents=True, exist_ok=True)
    with private_stack(stack) as (pg, redis):
        env = {**os.environ, "DATABASE_URL": pg.url, "REDIS_URL": redis.url,
               "PYTHONUNBUFFERED": "1"}
        _manage(env, "migrate", "--noinput", "-v", "0")
        _manage(env, "copier_setup")
        login = _admin_login(env, stack)
        _manage(env, "copier_demo")
        celery = [sys.executable, "-m", "celery", "-A", "copier"]
        children = {
            "web": [sys.executable, str(ROOT / "manage.py"), "runserver",
                    f"127.0.0.1:{web_port}", "--noreload", "--insecure"],  # static files
            "worker": [*celery, "worker", "-l", "INFO", "--concurrency", "2"],
            "beat": [*celery, "beat", "-l", "INFO", "-s", str(stack / "celerybeat-schedule")],
            "flower": [*celery, "flower", "--address=127.0.0.1", f"--port={flower_port}"],
        }
        return _supervise(children, env, login, web_port, flower_port)


def _supervise(children: dict[str, list[str]], env: dict[str, str], login: str,
               web_port: int, flower_port: int) -> int:
    procs = {name: subprocess.Popen(argv, env=env, cwd=ROOT, start_new_session=True)
             for name, argv in children.items()}
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"\ncopier is running:\n  admin  http://127.0.0.1:{web_port}/   ({login})\n"
          f"  Flower http://127.0.0.1:{flower_port}/\nCtrl-C stops everything.\n", flush=True)
    code = 0
    while not stopping:
        for name, proc in procs.items():
            if proc.poll() is not None:
                print(f"{name} exited with code {proc.returncode}; stopping everything",
                      file=sys.stderr, flush=True)
                code, stopping = 1, True
                break
        time.sleep(0.2)
    for proc in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m copier.devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    run_cmd = sub.add_parser("run", help="run the copier with private PostgreSQL and Redis")
    run_cmd.add_argument("--web-port", type=int, default=8000)
    run_cmd.add_argument("--flower-port", type=int, default=5555)
    run_cmd.add_argument("--stack-dir", type=Path, default=ROOT / ".stack")
    sub.add_parser("packages", help="install postgresql and redis-server when missing")
    args = parser.parse_args(argv)
    if args.command == "packages":
        ensure_server_packages()
        return 0
    return run(args.web_port, args.flower_port, args.stack_dir)


if __name__ == "__main__":
    sys.exit(main())
