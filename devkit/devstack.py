"""Private PostgreSQL and Redis servers on loopback, and the local runner.

Used by `make run` (the whole copier on its embedded defaults), the test
harness (`tests/stack.py`), and the `copier_replay` / `copier_bench`
commands when they need servers of their own. Nothing here is needed in
production, where `docker compose` provides the servers.

Loopback is not private: any local user can reach these ports. So the stack
has secrets of its own, generated on first run and kept in 0600 files under
its folder (`StackSecrets`): PostgreSQL's password (SCRAM, never trust), Redis's
`requirepass`, Django's SECRET_KEY and the Fernet key for broker credentials.
They reach the copier's processes through their environment only.

    python -m devkit.devstack run [--web-port 8000] [--flower-port 5555] [--stack-dir .stack] [-v]
    python -m devkit.devstack banner    # the running copier's addresses and login again
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
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography.fernet import Fernet

from copier.shell.envcheck import second_factor_required

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
    if _pg_bin() is not None and shutil.which("redis-server"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(
            "PostgreSQL and Redis are needed: install the Debian packages "
            "`postgresql` and `redis-server` (sudo apt-get install postgresql redis-server)."
        )
    _apt_install("postgresql", "redis-server")
    if _pg_bin() is None or not shutil.which("redis-server"):
        raise RuntimeError("installing postgresql and redis-server did not provide their binaries")


def _apt_install(*packages: str) -> None:
    global _apt_updated
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        _apt_updated = True
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages],
                   check=True, env=env, stdout=subprocess.DEVNULL)


# The browser tests (tests/browser) drive Debian's Chromium through Playwright: the
# distribution's build, kept up to date by apt, rather than a browser Playwright downloads.
CHROMIUM = Path("/usr/bin/chromium")


def ensure_browser_package() -> str | None:
    """Install Debian's chromium for the browser tests when missing (as root); otherwise
    say how, and the browser tests skip: only the test command needs it, never the copier."""
    if CHROMIUM.exists():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return (f"{CHROMIUM} is missing, so the browser tests will be skipped: install "
                "the Debian package `chromium` (sudo apt-get install chromium).")
    try:
        _apt_install("chromium")
    except subprocess.CalledProcessError as exc:  # a distribution without the package
        return f"installing chromium failed ({exc}), so the browser tests will be skipped."
    if not CHROMIUM.exists():
        return f"installing chromium did not provide {CHROMIUM}: the browser tests will be skipped."
    return None


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


# --- secrets --------------------------------------------------------------------------------

# StackSecrets field -> file under the stack folder, each 0600.
SECRET_FILES = {
    "postgres_password": "postgres-password",
    "redis_password": "redis-password",
    "secret_key": "secret-key",
    "encryption_key": "encryption-key",
}
_MAKERS: dict[str, Callable[[], str]] = {
    "postgres_password": lambda: secrets.token_urlsafe(24),
    "redis_password": lambda: secrets.token_urlsafe(24),
    "secret_key": lambda: secrets.token_urlsafe(50),
    "encryption_key": lambda: Fernet.generate_key().decode(),
}


def _private_file(path: Path, make: Callable[[], str]) -> str:
    """The secret in `path`, made on first use; never readable by anyone else, even briefly."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)  # a copy or an editor may have widened it
        value = path.read_text().strip()
        if not value:
            raise RuntimeError(f"{path} is empty: remove it to have a new secret made") from None
        return value
    value = make()
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(value + "\n")
    return value


@dataclass(frozen=True)
class StackSecrets:
    postgres_password: str
    redis_password: str
    secret_key: str
    encryption_key: str

    @classmethod
    def load_or_create(cls, stack: Path) -> StackSecrets:
        """The stack's secrets, the same on every start (its database holds data they encrypt)."""
        stack.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cls(**{field: _private_file(stack / name, _MAKERS[field])
                      for field, name in SECRET_FILES.items()})

    @classmethod
    def fresh(cls) -> StackSecrets:
        """Secrets kept nowhere: for servers that outlive no run (the test harness)."""
        return cls(**{field: make() for field, make in _MAKERS.items()})

    def django_env(self) -> dict[str, str]:
        return {"SECRET_KEY": self.secret_key, "COPIER_ENCRYPTION_KEY": self.encryption_key}

    def __repr__(self) -> str:
        return f"StackSecrets({', '.join(f'{k}=***' for k in asdict(self))})"


# --- PostgreSQL -----------------------------------------------------------------------------


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its binaries as the `postgres` user then."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


class PostgresServer:
    def __init__(self, datadir: Path, port: int, password: str) -> None:
        self.datadir = datadir
        self.port = port
        self.password = password

    @property
    def url(self) -> str:
        return f"postgres://copier:{quote(self.password, safe='')}@127.0.0.1:{self.port}/copier"

    @classmethod
    def start(cls, datadir: Path, password: str, port: int | None = None) -> PostgresServer:
        ensure_server_packages()
        datadir = datadir.resolve()
        _refuse_trust_auth(datadir)
        datadir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for path in datadir.parents:  # postgres must be able to traverse to its dir
                mode = os.stat(path).st_mode
                if not mode & 0o001:
                    os.chmod(path, mode | 0o001)
            os.chown(datadir, pw.pw_uid, pw.pw_gid)
        server = cls(datadir, port or free_port(), password)
        if not (datadir / "PG_VERSION").exists():
            server._initdb()
        server._start()
        server._create_database()
        return server

    def _initdb(self) -> None:
        """SCRAM for every connection, socket included; the password file lives for initdb only."""
        fd, name = tempfile.mkstemp(prefix=".pwfile-", dir=self.datadir.parent)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(self.password + "\n")
            if os.geteuid() == 0:  # initdb runs as postgres and must read it
                pw = pwd.getpwnam("postgres")
                os.chown(name, pw.pw_uid, pw.pw_gid)
            self._run("initdb", "-D", str(self.datadir), "--auth=scram-sha-256",
                      f"--pwfile={name}", "-U", "copier", "-E", "UTF8", "--no-sync")
        finally:
            os.unlink(name)

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
        env = {**os.environ, "PGPASSWORD": self.password}
        exists = subprocess.run(
            [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "copier",
             "-d", "postgres", "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'copier'"],
            check=True, capture_output=True, text=True, env=env,
        )
        if exists.stdout.strip() != "1":
            subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", "copier", "copier"], check=True, capture_output=True, env=env)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Stop and start on the same port, data kept (fault tests restart it mid-stream)."""
        self.stop()
        self._start()


def _refuse_trust_auth(datadir: Path) -> None:
    """A data directory from before the passwords would keep trusting every local user."""
    hba = datadir / "pg_hba.conf"
    if not (datadir / "PG_VERSION").exists() or not hba.exists():
        return
    rules = [line.split() for line in hba.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    if any("trust" in rule for rule in rules):
        raise RuntimeError(
            f"{datadir} was made with trust authentication (before the local stack had "
            "passwords): any local user could read it. Its data is local only; remove the "
            "stack with `make clean` (or delete that folder) and start again."
        )


# --- Redis ----------------------------------------------------------------------------------


class RedisServer:
    def __init__(self, workdir: Path, port: int, password: str) -> None:
        self.workdir = workdir
        self.port = port
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, workdir: Path, password: str, port: int | None = None) -> RedisServer:
        ensure_server_packages()
        workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        server = cls(workdir, port or free_port(), password)
        server._start()
        return server

    def _start(self) -> None:
        # The password in a 0600 file, not on the command line, which every local user can read.
        config = self.workdir / "redis.conf"
        config.touch(mode=0o600)
        config.chmod(0o600)
        config.write_text(f"requirepass {self.password}\n")
        self.process = subprocess.Popen(
            ["redis-server", str(config), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
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


@dataclass(frozen=True)
class Stack:
    pg: PostgresServer
    redis: RedisServer
    keys: StackSecrets

    def env(self) -> dict[str, str]:
        """What a copier process needs to use this stack: servers and keys."""
        return {"DATABASE_URL": self.pg.url, "REDIS_URL": self.redis.url,
                **self.keys.django_env()}


@contextlib.contextmanager
def private_stack(root: Path) -> Iterator[Stack]:
    """PostgreSQL and Redis under `root`, with its secrets, always stopped on the way out."""
    keys = StackSecrets.load_or_create(root)
    pg = PostgresServer.start(root / "pg", keys.postgres_password)
    try:
        redis = RedisServer.start(root / "redis", keys.redis_password)
        try:
            yield Stack(pg, redis, keys)
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
    _private_file(path, lambda: password)
    return f"admin login: user `admin`, password `{password}` (kept in {path})"


def ports_check(ports: dict[str, int]) -> list[str]:
    """What is already listening on the ports the runner needs, said before anything starts
    (a taken port found by runserver after everything else is up is found too late)."""
    taken = []
    for what, port in ports.items():
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                taken.append(f"port {port} ({what}) is taken: another program (an earlier "
                             f"`make run`?) is listening on 127.0.0.1:{port}. Stop it, or "
                             f"choose another port (--{what.lower()}-port).")
    return taken


def run(web_port: int, flower_port: int, stack: Path, *, verbose: bool = False) -> int:
    taken = ports_check({"Web": web_port, "Flower": flower_port})
    if taken:
        for line in taken:
            print(line, file=sys.stderr, flush=True)
        return 2
    ensure_server_packages()
    stack = stack.resolve()
    stack.mkdir(mode=0o700, parents=True, exist_ok=True)
    with private_stack(stack) as servers:
        env = {**os.environ, **servers.env(), "PYTHONUNBUFFERED": "1"}
        if not verbose:
            # periodic chatter (beat's sends, the worker's task lines, each page request)
            # stays out of the terminal; warnings and errors still show
            env.update({"LOG_LEVEL": "WARNING", "COPIER_ACCESS_LOG_LEVEL": "WARNING"})
        _manage(env, "migrate", "--noinput", "-v", "0")
        _manage(env, "copier_setup")
        _admin_login(env, stack)
        _manage(env, "copier_demo")
        level = "INFO" if verbose else "WARNING"
        celery = [sys.executable, "-m", "celery", "-A", "copier"]
        # Listed in start order (the web once the others answer); stopped in reverse, the
        # dependents first: web, Flower, beat, listener, worker; then Redis and PostgreSQL.
        children = {
            # the broker streams: without it no fill reaches the copier
            "worker": [*celery, "worker", "-l", level, "--concurrency", "2"],
            "listener": [sys.executable, str(ROOT / "manage.py"), "copier_listen"],
            "beat": [*celery, "beat", "-l", level, "-s", str(stack / "celerybeat-schedule")],
            "flower": [*celery, "flower", "--address=127.0.0.1", f"--port={flower_port}",
                       f"--logging={level.lower()}"],
            "web": [sys.executable, str(ROOT / "manage.py"), "runserver",
                    f"127.0.0.1:{web_port}", "--noreload", "--insecure"],  # static files
        }
        banner = Banner(stack, web_port, flower_port, verbose)
        return _supervise(children, env, banner, Readiness(servers, web_port, flower_port))


@dataclass
class Banner:
    """The addresses and the login, printed once everything answers, again on Enter, and
    kept (0600: it holds the password) for `python -m devkit.devstack banner`."""

    stack: Path
    web_port: int
    flower_port: int
    verbose: bool

    @property
    def path(self) -> Path:
        return self.stack / "banner.txt"

    def text(self) -> str:
        password_file = self.stack / "admin-password.txt"
        password = password_file.read_text().strip() if password_file.exists() else "?"
        web = f"http://127.0.0.1:{self.web_port}"
        rule = "=" * 72
        return (f"\n{rule}\n copier is running\n"
                f"   dashboard   {web}/     user `admin`, password `{password}`\n"
                f"   all tables  {web}/admin/\n"
                f"   two-factor  {web}/two-factor/  {self._two_factor()}\n"
                f"   Flower      http://127.0.0.1:{self.flower_port}/\n"
                f" web, worker, listener, beat and Flower answer. Logs: "
                f"{'everything (-v)' if self.verbose else 'warnings only (-v for more)'}.\n"
                f" Enter shows this again (or `make banner` in another terminal); "
                f"Ctrl-C stops everything.\n{rule}\n")

    @staticmethod
    def _two_factor() -> str:
        """How to enrol: the page, and whether the login insists (COPIER_REQUIRE_2FA)."""
        if second_factor_required(os.environ):
            return "enrol: required (COPIER_REQUIRE_2FA), the first login asks"
        return "enrol: optional here, required in production (COPIER_REQUIRE_2FA)"

    def show(self) -> None:
        text = self.text()
        print(text, flush=True)
        self.path.unlink(missing_ok=True)
        _private_file(self.path, lambda: text.strip("\n"))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _http_ok(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Readiness:
    """Whether each part answers: the web its health check, Flower its own, a worker a
    Celery ping, the listener a stream lease taken on an account (or no account to hold)."""

    def __init__(self, stack: Stack, web_port: int, flower_port: int) -> None:
        self.stack, self.web_port, self.flower_port = stack, web_port, flower_port

    def web(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.web_port}/healthz")

    def flower(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.flower_port}/healthcheck")

    def worker(self) -> bool:
        from celery import Celery

        app = Celery(broker=self.stack.redis.url)
        try:
            return bool(app.control.ping(timeout=1.0))
        except Exception:  # not up yet, whatever the reason
            return False
        finally:
            app.close()

    def listener(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.stack.pg.url, connect_timeout=2) as conn:
                owned, total = conn.execute(
                    "SELECT count(*) FILTER (WHERE stream_owner <> ''), count(*) "
                    "FROM accounts_tradingaccount").fetchone() or (0, 0)
        except psycopg.Error:
            return False
        return bool(total == 0 or owned > 0)

    def waiting_for(self, done: set[str]) -> list[str]:
        """The parts that do not answer yet (those in `done` are not asked again)."""
        checks: dict[str, Callable[[], bool]] = {
            "web": self.web, "worker": self.worker, "listener": self.listener,
            "Flower": self.flower}
        for name, check in checks.items():
            if name not in done and check():
                done.add(name)
        return [name for name in checks if name not in done]


def _enter_watch(pressed: threading.Event) -> None:
    """Enter on the terminal asks for the banner again."""
    if not sys.stdin or not sys.stdin.isatty():
        return

    def read() -> None:
        for _line in sys.stdin:
            pressed.set()

    threading.Thread(target=read, name="banner-on-enter", daemon=True).start()


class _Startup:
    """Who answers yet, the web started once the rest does, the banner once all do."""

    def __init__(self, children: dict[str, list[str]], env: dict[str, str], banner: Banner,
                 readiness: Readiness, ready_timeout: float) -> None:
        self.children, self.env, self.banner, self.readiness = children, env, banner, readiness
        self.ready_timeout = ready_timeout
        self.procs = {name: self.start(name) for name in children if name != "web"}
        self.started = self.told = time.monotonic()
        self.answered: set[str] = set()
        self.waiting: list[str] = ["everything"]

    def start(self, name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.children[name], env=self.env, cwd=ROOT,
                                start_new_session=True)

    def exited(self) -> bool:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                print(f"{name} exited with code {proc.returncode}; stopping everything",
                      file=sys.stderr, flush=True)
                return True
        return False

    def step(self) -> None:
        if not self.waiting:
            return
        self.waiting = self.readiness.waiting_for(self.answered)
        if self.waiting == ["web"] and "web" not in self.procs:
            self.procs["web"] = self.start("web")
        if not self.waiting:
            self.banner.show()
        elif time.monotonic() - self.told > 15:
            self.told = time.monotonic()
            late = time.monotonic() - self.started > self.ready_timeout
            print(f"{'NOT answering after' if late else 'still waiting, after'} "
                  f"{time.monotonic() - self.started:.0f} s, for: {', '.join(self.waiting)}",
                  file=sys.stderr if late else sys.stdout, flush=True)

    def banner_again(self) -> None:
        print(self.banner.text() if not self.waiting else
              f"not ready yet: {', '.join(self.waiting)}", flush=True)

    def last_look(self) -> None:
        """Up between the last look and the Ctrl-C: say so before stopping."""
        if self.waiting and "web" in self.procs and not self.readiness.waiting_for(
                self.answered):
            self.banner.show()


def _supervise(children: dict[str, list[str]], env: dict[str, str], banner: Banner,
               readiness: Readiness, ready_timeout: float = 180.0) -> int:
    """Start the back (worker, listener, beat, Flower), then the web once they answer, so
    that the first page a person opens finds a copier that works; the banner once the web
    answers too. A child that exits stops everything."""
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    pressed = threading.Event()
    _enter_watch(pressed)
    print("starting the worker, listener, beat and Flower, then the web ...", flush=True)
    startup = _Startup(children, env, banner, readiness, ready_timeout)
    code = 0
    while not stopping:
        if startup.exited():
            code = 1
            break
        startup.step()
        if pressed.is_set():
            pressed.clear()
            startup.banner_again()
        time.sleep(0.1 if startup.waiting else 0.2)
    if code == 0:
        startup.last_look()
    banner.clear()
    _stop_in_order(startup.procs)
    return code


def _stop_in_order(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """The dependents first (the reverse of the start order), each gone before the next is
    asked: the worker never sees its broker vanish under it, nor the web its database."""
    for name in reversed(list(procs)):
        proc = procs[name]
        if proc.poll() is None:
            print(f"stopping {name}", flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print("stopping Redis and PostgreSQL", flush=True)


def banner_print(stack: Path) -> int:
    """`make banner`: the running copier's addresses and login, from another terminal."""
    path = stack.resolve() / "banner.txt"
    if not path.exists():
        print(f"no copier is running from {stack} (or it is still starting)", file=sys.stderr)
        return 1
    print(path.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    run_cmd = sub.add_parser("run", help="run the copier with private PostgreSQL and Redis")
    run_cmd.add_argument("--web-port", type=int, default=8000)
    run_cmd.add_argument("--flower-port", type=int, default=5555)
    run_cmd.add_argument("--stack-dir", type=Path, default=ROOT / ".stack")
    run_cmd.add_argument("-v", "--verbose", action="store_true",
                         help="every process's INFO logs (periodic tasks, each request)")
    banner_cmd = sub.add_parser("banner", help="print the running copier's addresses and login")
    banner_cmd.add_argument("--stack-dir", type=Path, default=ROOT / ".stack")
    sub.add_parser("packages", help="install postgresql and redis-server when missing, and "
                                     "chromium for the browser tests (what `make test` needs)")
    args = parser.parse_args(argv)
    if args.command == "packages":
        ensure_server_packages()
        note = ensure_browser_package()
        if note:
            print(note, file=sys.stderr)
        return 0
    if args.command == "banner":
        return banner_print(args.stack_dir)
    return run(args.web_port, args.flower_port, args.stack_dir, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
