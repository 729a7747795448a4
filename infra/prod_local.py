"""The production topology on loopback, for real: PostgreSQL, S3 (moto), MLflow server with auth.

``make prod-local`` runs ``python -m infra.prod_local up`` and then ``... run``; ``make
prod-local-down`` runs ``... down``. The integration test (tests/integration/test_prod_local.py)
drives the same :class:`Topology`.

* PostgreSQL (the Debian package's binaries) holds MLflow's backend store and its user store.
* ``moto_server`` is the S3 endpoint: MLflow's artifact bucket and the DVC remote's bucket.
* ``mlflow server`` runs with the PostgreSQL backend, S3 artifacts served through the server
  (``--serve-artifacts``) and the basic-auth app: every request needs a user and password.
* The demo data is pushed to a DVC remote on that S3, from a git repository whose bare clone
  stands in for the team's data repository on a git server.
* :meth:`Topology.run_pipeline` runs the training pipeline with KFP's local runner as a pod
  would: in an empty working directory with no checkout, as a non-root user, its data pulled
  from the DVC remote and its credentials from environment variables only.

Every server listens on 127.0.0.1 on a free port. State (data directories, logs, pids, the
credentials file) lives in one directory; :meth:`Topology.down` stops every process it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
STATE = REPO / "runs" / "prod-local"
TASK_UID = 10001  # the image's user (infra/docker/Dockerfile)
MLFLOW_BUCKET, DVC_BUCKET = "tlops-mlflow", "tlops-dvc"
PIPELINE_USER = "tlops-pipeline"  # the MLflow user the pipeline logs as (not the admin)
CREDENTIALS_FILE = "credentials.env"
START_TIMEOUT_S = 120.0
# tiny and fast, and the same code path as the defaults: 2 epochs at 32 px (the tests and the
# containers benchmark run the pipeline with these; a first model above the floor is champion)
TINY = [
    "train.epochs=2",
    "model.image_size=32",
    "train.numerics=fp32",
    "evaluate.numerics=fp32",
    "register_model.gate.floor=0.2",
]


class TopologyError(RuntimeError):
    """A server of the topology did not start or stop."""


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all held open while picking, so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _pg_bin(name: str) -> str:
    """A PostgreSQL server binary (Debian keeps them out of PATH, per major version)."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    path = shutil.which(name)
    if path is None:
        raise TopologyError(
            f"{name}: PostgreSQL's server is not installed (Debian: apt-get install postgresql; "
            "`make prod-local` installs it when missing)"
        )
    return path


def _as_user(uid: int | None) -> list[str]:
    """The prefix that runs a command as ``uid`` when we are root (PostgreSQL refuses root).

    The user keeps CAP_DAC_READ_SEARCH only: it may read and traverse what root made (this
    checkout and its venv may sit in a private temporary directory), never write there.
    """
    if os.geteuid() != 0 or uid is None:
        return []
    gid = _gid(uid)
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
    ]


def _gid(uid: int) -> int:
    """The primary group of ``uid``, or the same number when it has no passwd entry."""
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid


def _chown(path: Path, uid: int | None) -> None:
    if os.geteuid() == 0 and uid is not None:
        gid = _gid(uid)
        os.chown(path, uid, gid)
        for root, dirs, files in os.walk(path):
            os.chown(root, uid, gid)
            for name in dirs + files:
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _wait_http(url: str, what: str, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TopologyError(
                f"{what} exited with {proc.returncode}; its log: {log}\n{_tail(log)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (401 and 404 are answers)
        except OSError:
            time.sleep(0.3)
    raise TopologyError(
        f"{what} did not answer at {url} within {START_TIMEOUT_S:.0f} s; log: {log}"
    )


def _tail(log: Path, lines: int = 15) -> str:
    if not log.is_file():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Topology:
    """The servers of the production topology, their ports, credentials and processes."""

    state: Path
    ports: dict[str, int] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)

    # ---- persistence: `up` and `down` are separate processes -------------------------------
    @property
    def _file(self) -> Path:
        return self.state / "topology.json"

    def save(self) -> None:
        """Record ports, credentials and pids (mode 600), for ``down`` in another process."""
        self.state.mkdir(parents=True, exist_ok=True)
        payload = {"ports": self.ports, "secrets": self.secrets, "pids": self.pids}
        self._file.write_text(json.dumps(payload, indent=2))
        os.chmod(self._file, 0o600)

    @classmethod
    def load(cls, state: Path) -> Topology:
        """The topology that ``up`` recorded in ``state``."""
        payload = json.loads((state / "topology.json").read_text())
        return cls(state, payload["ports"], payload["secrets"], payload["pids"])

    # ---- addresses and credentials ----------------------------------------------------------
    @property
    def tracking_uri(self) -> str:
        """The MLflow server's URL."""
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def s3_url(self) -> str:
        """The S3 endpoint's URL."""
        return f"http://127.0.0.1:{self.ports['s3']}"

    def _pg_uri(self, database: str) -> str:
        return (
            f"postgresql://tlops:{self.secrets['pg_password']}@127.0.0.1:"
            f"{self.ports['postgres']}/{database}"
        )

    def s3_env(self) -> dict[str, str]:
        """What the ``tlops-s3`` secret gives a task (kfp.secrets in params.yaml)."""
        return {
            "AWS_ACCESS_KEY_ID": self.secrets["s3_key"],
            "AWS_SECRET_ACCESS_KEY": self.secrets["s3_secret"],
            "AWS_ENDPOINT_URL": self.s3_url,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def task_env(self) -> dict[str, str]:
        """The environment of a task: the ``tlops-mlflow`` and ``tlops-s3`` secrets' keys."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_TRACKING_USERNAME": PIPELINE_USER,
            "MLFLOW_TRACKING_PASSWORD": self.secrets["pipeline_password"],
            **self.s3_env(),
        }

    def write_credentials(self) -> Path:
        """``credentials.env`` (mode 600): what a person or a task needs, as shell variables."""
        path = self.state / CREDENTIALS_FILE
        lines = [f"{key}={value}" for key, value in self.task_env().items()]
        lines.append(f"# the MLflow admin (UI): admin / {self.secrets['admin_password']}")
        path.write_text("\n".join(lines) + "\n")
        os.chmod(path, 0o600)
        return path

    # ---- servers ------------------------------------------------------------------------------
    def up(self, mlflow: bool = True) -> None:
        """Start PostgreSQL, the S3 endpoint and (unless False) the MLflow server."""
        self.state.mkdir(parents=True, exist_ok=True)
        if not self.secrets:
            self.secrets = {
                name: secrets.token_urlsafe(18)
                for name in ("pg_password", "admin_password", "pipeline_password")
            }
            self.secrets["s3_key"] = "AKIA" + secrets.token_hex(8).upper()
            self.secrets["s3_secret"] = secrets.token_urlsafe(30)
            names = ("postgres", "s3", "mlflow")
            self.ports = dict(zip(names, _free_ports(len(names)), strict=True))
        self.save()
        try:
            self.start_postgres()
            self.start_s3()
            if mlflow:
                self.start_mlflow()
        except BaseException:
            self.down()
            raise
        self.write_credentials()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.state / f"{name}.log"
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                argv, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.pids[name] = proc.pid
        self.save()
        return proc

    @property
    def _pg_dir(self) -> Path:
        return self.state / "postgres"

    def _pg_user(self) -> int | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres").pw_uid
        except KeyError:
            return TASK_UID

    def start_postgres(self) -> None:
        """Initdb once (scram passwords), then start the server and create the databases."""
        data, user = self._pg_dir, self._pg_user()
        fresh = not (data / "PG_VERSION").is_file()
        if fresh:
            data.mkdir(parents=True, exist_ok=True)
            pwfile = self.state / "pg.pw"
            pwfile.write_text(self.secrets["pg_password"])
            _chown(data, user)
            _chown(pwfile, user)
            subprocess.run(
                [*_as_user(user), _pg_bin("initdb"), "-D", str(data), "-U", "tlops",
                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8"],
                check=True, capture_output=True,
            )  # fmt: skip
            pwfile.unlink()
        log = self.state / "postgres.log"
        log.touch()
        _chown(log, user)
        options = (
            f"-p {self.ports['postgres']} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={data}"
        )
        done = subprocess.run(
            [*_as_user(user), _pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(log),
             "-w", "-t", "60", "start"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise TopologyError(f"PostgreSQL did not start: {done.stdout}{done.stderr}{_tail(log)}")
        if fresh:
            for database in ("mlflow", "mlflow_auth"):
                self._psql(f"CREATE DATABASE {database}")

    def _psql(self, sql: str) -> None:
        env = {**os.environ, "PGPASSWORD": self.secrets["pg_password"]}
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.ports["postgres"]), "-U", "tlops",
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql],
            env=env, check=True, capture_output=True,
        )  # fmt: skip

    def stop_postgres(self) -> None:
        """Stop PostgreSQL (fast shutdown); its data stays for a restart."""
        if not (self._pg_dir / "postmaster.pid").is_file():
            return
        subprocess.run(
            [*_as_user(self._pg_user()), _pg_bin("pg_ctl"), "-D", str(self._pg_dir), "-m",
             "fast", "-w", "stop"],
            capture_output=True, check=False,
        )  # fmt: skip

    def start_s3(self) -> None:
        """moto_server on loopback, with the MLflow and DVC buckets (its state is in memory)."""
        proc = self._spawn(
            "s3",
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.ports["s3"])],
            {**os.environ, **self.s3_env()},
        )
        _wait_http(self.s3_url, "moto_server", proc, self.state / "s3.log")
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            aws_access_key_id=self.secrets["s3_key"],
            aws_secret_access_key=self.secrets["s3_secret"],
            region_name="us-east-1",
        )
        for bucket in (MLFLOW_BUCKET, DVC_BUCKET):
            client.create_bucket(Bucket=bucket)

    def start_mlflow(self) -> None:
        """``mlflow server``: PostgreSQL backend, artifacts served from S3, basic auth."""
        auth_ini = self.state / "basic_auth.ini"
        auth_ini.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {self._pg_uri('mlflow_auth')}\n"
            "admin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # a password check is a PBKDF2 hash: cache it, or every request of a run pays it
            "auth_cache_ttl_seconds = 60\n"
        )
        os.chmod(auth_ini, 0o600)
        env = {
            **os.environ,
            **self.s3_env(),
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.secrets["admin_password"],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets["admin_password"],
        }
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(name, None)
        proc = self._spawn(
            "mlflow",
            [str(BIN / "mlflow"), "server",
             "--backend-store-uri", self._pg_uri("mlflow"),
             "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/artifacts",
             "--serve-artifacts", "--app-name", "basic-auth",
             "--host", "127.0.0.1", "--port", str(self.ports["mlflow"]), "--workers", "1"],
            env,
        )  # fmt: skip
        _wait_http(f"{self.tracking_uri}/health", "mlflow server", proc, self.state / "mlflow.log")
        self._create_pipeline_user()

    def stop_mlflow(self) -> None:
        """Kill the MLflow server and its workers (SIGKILL: a crash, not a shutdown)."""
        self._kill("mlflow")

    def stop_s3(self) -> None:
        """Kill the S3 endpoint (moto keeps its state in memory: it is gone after)."""
        self._kill("s3")

    def _kill(self, name: str) -> None:
        pid = self.pids.pop(name, None)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # the server and its workers
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        self.save()

    def _create_pipeline_user(self) -> None:
        """The pipeline logs as its own user; the admin's password stays with people."""
        body = json.dumps(
            {"username": PIPELINE_USER, "password": self.secrets["pipeline_password"]}
        ).encode()
        request = urllib.request.Request(
            f"{self.tracking_uri}/api/2.0/mlflow/users/create",
            data=body,
            headers={
                "Content-Type": "application/json",
                "Authorization": _basic("admin", self.secrets["admin_password"]),
            },
        )
        try:
            urllib.request.urlopen(request, timeout=30).close()
        except urllib.error.HTTPError as exc:
            if "already exists" not in exc.read().decode(errors="replace"):
                raise

    def down(self) -> None:
        """Stop every server this topology started (also after a failure)."""
        for name in list(self.pids):
            self._kill(name)
        self.stop_postgres()
        self.save()

    # ---- data ---------------------------------------------------------------------------------
    def push_demo_data(
        self, drops: int = 3, domains: tuple[str, ...] = ("target", "source")
    ) -> Path:
        """The demo data in a git + DVC repository, pushed to the DVC remote on S3.

        Returns:
            The bare clone pods read (``data.<domain>: {repo: <it>, path: data/<domain>}``);
            the working repository's DVC cache is removed, so every pull is from S3.
        """
        from tlops.data.demo import write_demo

        work, bare = self.state / "data-repo", self.state / "data.git"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(bare, ignore_errors=True)
        work.mkdir(parents=True)
        env = {**os.environ, **self.s3_env(), "DVC_NO_ANALYTICS": "1"}

        def sh(*argv: str) -> None:
            subprocess.run(argv, cwd=work, env=env, check=True, capture_output=True)

        sh("git", "init", "-q", "-b", "main")
        sh("git", "config", "user.email", "prod-local@tlops")
        sh("git", "config", "user.name", "tlops")
        sh(str(BIN / "dvc"), "init", "-q")
        source = work / "data" / "source" if "source" in domains else None
        write_demo(source, work / "data" / "target", drops)
        sh(str(BIN / "dvc"), "remote", "add", "-d", "storage", f"s3://{DVC_BUCKET}/store")
        sh(str(BIN / "dvc"), "add", "-q", *(f"data/{d}" for d in domains))
        sh("git", "add", "-A")
        sh("git", "commit", "-qm", "demo data")
        sh(str(BIN / "dvc"), "push", "-q")
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
        _chown(bare, TASK_UID)  # git serves a repository to its owner only (safe.directory)
        shutil.rmtree(work / ".dvc" / "cache", ignore_errors=True)
        return bare

    # ---- the pipeline, as in a pod ---------------------------------------------------------------
    def run_pipeline(
        self,
        data_repo: Path,
        overrides: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        timeout: float = 1200,
        capture: bool = True,
        docker_host: str | None = None,
        command: str = "run",
        runner: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``tlops run`` in an empty working directory, as the image's non-root user.

        The tasks see no checkout: their working directory is empty, their data comes from the
        DVC remote and their credentials from the environment. The params file is this
        checkout's (what a user compiles the pipeline from), with ``data.target`` pointing at
        the data repository.

        Args:
            data_repo: The data repository (:meth:`push_demo_data`).
            overrides: ``-S`` overrides of params.yaml.
            extra_env: More environment variables for the run.
            timeout: Seconds before the run is killed.
            capture: Capture the run's output (False: it goes to this console).
            docker_host: A Docker API (``infra.containers.api_service``): every task runs in
                the component image through KFP's DockerRunner (``--runner docker``), as uid
                10001 in the image's empty ``/work``; ``tlops`` itself runs as the submitter.
                None: KFP's local runner, ``tlops`` and its tasks as uid 10001 here.
            command: ``run`` (the training pipeline) or ``retrain``.
            runner: Without ``docker_host``: ``tlops``'s ``--runner`` (None: its default).
        """
        pod = self.state / "pod"
        home = self.state / "home"
        for folder in (pod, home):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            _chown(folder, TASK_UID)
        # the user's params file, where the user who submits can read it (this checkout may sit
        # in a directory only root may enter)
        params = home / "params.yaml"
        shutil.copyfile(REPO / "params.yaml", params)
        _chown(params, TASK_UID)
        location = json.dumps({"repo": f"file://{data_repo}", "rev": "main", "path": "data/target"})
        argv = [
            str(BIN / "tlops"), command, "--params", str(params),
            "-S", f"data.target={location}",
            "-S", f"data.source={location.replace('data/target', 'data/source')}",
            *[item for override in overrides or [] for item in ("-S", override)],
            "--out", str(pod / "run"),
            *(["--runner", "docker"] if docker_host else ["--runner", runner] if runner else []),
        ]  # fmt: skip
        env = {
            "PATH": f"{BIN}:/usr/bin:/bin",
            "HOME": str(home),
            # the image has a passwd entry for its user; here uid 10001 may have none, and git
            # asks who is cloning (getpass reads these first)
            "USER": "tlops",
            "LOGNAME": "tlops",
            "LANG": "C.UTF-8",
            "COLUMNS": "200",
            "DVC_NO_ANALYTICS": "1",
            "GX_ANALYTICS_ENABLED": "false",
            "TLOPS_DEVICE": "cpu",
            **self.task_env(),
            **({"DOCKER_HOST": docker_host} if docker_host else {}),
            **(extra_env or {}),
        }
        return subprocess.run(
            [*([] if docker_host else _as_user(TASK_UID)), *argv],
            cwd=pod,
            env=env,
            text=True,
            capture_output=capture,  # False: the run's console goes to ours as it happens
            timeout=timeout,
            check=False,
        )


def _basic(user: str, password: str) -> str:
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode()


@contextlib.contextmanager
def running(state: Path) -> Iterator[Topology]:
    """The topology, up for the duration of the context and stopped after (also on error)."""
    topology = Topology(state)
    try:
        topology.up()
        yield topology
    finally:
        topology.down()


def main(argv: list[str]) -> int:
    """``up`` | ``run`` | ``down`` (what the Makefile's prod-local targets call)."""
    command = argv[0] if argv else "up"
    if command == "down":
        if not (STATE / "topology.json").is_file():
            print("prod-local: nothing is running")
            return 0
        Topology.load(STATE).down()
        print("prod-local: stopped PostgreSQL, the S3 endpoint and the MLflow server")
        return 0
    if command == "up":
        if (STATE / "topology.json").is_file():
            Topology.load(STATE).down()  # a previous topology: stop it, start afresh
            shutil.rmtree(STATE)
        topology = Topology(STATE)
        topology.up()
        print(
            f"prod-local: MLflow {topology.tracking_uri} (PostgreSQL backend, S3 artifacts, auth)"
        )
        return 0
    if command == "run":
        topology = Topology.load(STATE)
        runners = [arg.removeprefix("--runner=") for arg in argv[1:] if arg.startswith("--runner=")]
        runner = runners[-1] if runners else None
        overrides = [arg for arg in argv[1:] if not arg.startswith("--runner=")]
        print("prod-local: pushing the demo data to the DVC remote s3://tlops-dvc/store")
        repo = topology.push_demo_data()
        if runner == "docker":
            from infra.containers import api_service

            print(f"prod-local: the training pipeline, every task in the image as uid {TASK_UID}")
            with api_service(topology.state / "podman") as host:
                done = topology.run_pipeline(repo, overrides, capture=False, docker_host=host)
        else:
            print(
                f"prod-local: the training pipeline, each task in an empty folder as uid {TASK_UID}"
            )
            done = topology.run_pipeline(repo, overrides, capture=False, runner=runner)
        credentials = topology.write_credentials()
        print(f"\nMLflow UI: {topology.tracking_uri}  (user admin; credentials in {credentials})")
        print("stop everything with: make prod-local-down")
        return done.returncode
    print(f"usage: python -m infra.prod_local up|run|down (got {command!r})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
