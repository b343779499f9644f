"""Real PostgreSQL, Redis and Celery worker processes for the deployment tests (deploy/), and fixtures.

The servers are started with the repository's own scripts (deploy/postgres/start_postgres.sh,
deploy/celery/start_redis.sh) on free ports of 127.0.0.1, in temporary directories, and stopped by the
fixtures' finalizers even when a test fails. A test skips, saying which, when a binary is missing.
Fixtures: `postgres_server` (one per session; each test takes its own database), `redis_server`,
`postgres_instance` and `celery_deployment`. tests/conftest.py makes them visible to every test module.

`python -m tests.deploy_helpers run-batch KEY [SIZE]` is one batch run as a run worker executes it: the
code location's job and executor (SYNID_EXECUTOR) on the instance of DAGSTER_HOME.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
REDIS_SERVER = Path("/usr/bin/redis-server")
POSTGRES_SCRIPT = REPO / "deploy" / "postgres" / "start_postgres.sh"
REDIS_SCRIPT = REPO / "deploy" / "celery" / "start_redis.sh"
WORKER_SCRIPT = REPO / "deploy" / "celery" / "start_worker.sh"
DAEMON_SCRIPT = REPO / "deploy" / "celery" / "start_daemon.sh"
SYNID_VARIABLES = ("SYNID_PROFILE", "SYNID_ATTRIBUTES", "SYNID_SEED", "SYNID_BATCH_SIZE", "SYNID_LIVE",
                   "SYNID_EXECUTOR", "SYNID_REDIS_URL")
PG_VARIABLES = ("SYNID_PG_HOST", "SYNID_PG_PORT", "SYNID_PG_USER", "SYNID_PG_PASSWORD", "SYNID_PG_DB")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _exports(text: str) -> dict[str, str]:
    """{'NAME': 'value'} from the scripts' `export NAME=value` lines."""
    lines = [line.removeprefix("export ") for line in text.splitlines() if line.startswith("export ")]
    return dict(line.split("=", 1) for line in lines)


def _script(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"{Path(str(args[0])).name} {args[1]} failed: {done.stderr.strip() or done.stdout}")
    return done.stdout


def _shared_temp_dir(prefix: str) -> Path:
    """A temporary directory under /tmp that the `postgres` user can enter (pytest's are private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


@dataclass
class PostgresServer:
    """A PostgreSQL server of deploy/postgres/start_postgres.sh; `env(db)` is the SYNID_PG_* of a database."""

    root: Path
    port: int
    exports: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def start(self, db: str = "dagster") -> dict[str, str]:
        self.exports = _exports(_script(POSTGRES_SCRIPT, "start", self.data, str(self.port), env={"SYNID_PG_DB": db}))
        return self.exports

    def stop(self) -> None:
        _script(POSTGRES_SCRIPT, "stop", self.data)

    def restart(self) -> None:
        self.stop()
        self.start()

    def new_database(self) -> dict[str, str]:
        """A fresh database (the start script creates it) and the env that names it."""
        return self.start(db=f"synid_{uuid.uuid4().hex[:12]}")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class RedisServer:
    root: Path
    port: int
    url: str = ""

    def start(self) -> str:
        self.url = _exports(_script(REDIS_SCRIPT, "start", self.root, str(self.port)))["SYNID_REDIS_URL"]
        return self.url

    def stop(self) -> None:
        _script(REDIS_SCRIPT, "stop", self.root)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def require_postgres() -> None:
    if not (PG_BIN / "postgres").exists():
        pytest.skip(f"PostgreSQL 15 is not installed ({PG_BIN}; `make services` installs it)")


def require_redis() -> None:
    if not REDIS_SERVER.exists():
        pytest.skip(f"redis-server is not installed ({REDIS_SERVER}; `make services` installs it)")


def start_postgres() -> PostgresServer:
    server = PostgresServer(_shared_temp_dir("synid-pg-"), free_port())
    try:
        server.start()
    except Exception:
        server.remove()
        raise
    return server


def start_redis() -> RedisServer:
    server = RedisServer(Path(tempfile.mkdtemp(prefix="synid-redis-")), free_port())
    try:
        server.start()
    except Exception:
        server.remove()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    require_postgres()
    server = start_postgres()
    yield server
    server.remove()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    require_redis()
    server = start_redis()
    yield server
    server.remove()


def deployment_env(home: Path, dagster_home: Path, pg: dict[str, str], redis_url: str | None = None,
                   **synid: str) -> dict[str, str]:
    """The environment of every process of a deployment: homes, Postgres, Redis, SYNID_* settings."""
    env = {key: value for key, value in os.environ.items() if key not in SYNID_VARIABLES + PG_VARIABLES}
    bin_dir = str(Path(sys.executable).parent)  # dagster-celery, celery, synid of this venv
    env.update(pg, SYNID_HOME=str(home), DAGSTER_HOME=str(dagster_home), PATH=f"{bin_dir}:{env.get('PATH', '')}",
               PYTHONUNBUFFERED="1")
    if redis_url:
        env.update(SYNID_REDIS_URL=redis_url, SYNID_EXECUTOR="celery")
    env.update(synid)
    return env


def new_dagster_home(root: Path, instance_yaml: Path) -> Path:
    dagster_home = root / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(instance_yaml, dagster_home / "dagster.yaml")
    return dagster_home


def open_instance(dagster_home: Path, env: dict[str, str]):
    """The instance of `dagster_home`, its env (the Postgres connection) read from `env` as the processes do."""
    import dagster as dg

    saved = {key: os.environ.get(key) for key in PG_VARIABLES}
    os.environ.update({key: env[key] for key in PG_VARIABLES if key in env})
    try:
        return dg.DagsterInstance.from_config(str(dagster_home))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path

    def rss_kib(self) -> int:
        """Resident memory of the worker and all its processes (celery's pool children), KiB."""
        return sum(_rss_kib(pid) for pid in _process_tree(self.process.pid))

    def stop(self) -> None:
        stop_process_group(self.process)


def _process_tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        children = []  # of every thread: the code server starts runs from its gRPC threads
        for task in Path(f"/proc/{current}/task").glob("*") if Path(f"/proc/{current}").exists() else []:
            with contextlib.suppress(OSError):
                children += (task / "children").read_text().split()
        queue += [int(child) for child in children]
    return pids


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def stop_process_group(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM to the process group (a worker script, dagster-celery and celery's children), then SIGKILL."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):  # whatever is left of the group, even after its leader exited
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def start_worker(mode: str, env: dict[str, str], log: Path, name: str) -> Worker:
    with log.open("w") as out:
        process = subprocess.Popen([str(WORKER_SCRIPT), mode], env={**env, "SYNID_WORKER_NAME": name},
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Worker(process, log)


def wait_for_workers(workers: list[Worker], timeout: float = 120) -> None:
    """Until every worker's log says it is ready (celery logs '... ready.')."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        while " ready." not in worker.log.read_text():
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker exited (rc {worker.process.returncode}):\n{worker.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready after {timeout} s:\n{worker.log.read_text()[-3000:]}")
            time.sleep(0.3)


@dataclass
class Daemon:
    """A `dagster-daemon run` of deploy/celery/start_daemon.sh, with its code server and the runs it launches."""

    process: subprocess.Popen
    log: Path

    def rss_kib(self) -> tuple[int, int]:
        """Resident memory (KiB) of the daemon with its code server, and of the run processes it launched."""
        daemon = runs = 0
        for pid in _process_tree(self.process.pid):
            # The code server starts each run in a multiprocessing 'spawn' child (dagster/_grpc/server.py).
            if b"spawn_main" in _cmdline(pid):
                runs += _rss_kib(pid)
            else:
                daemon += _rss_kib(pid)
        return daemon, runs

    def stop(self) -> None:
        stop_process_group(self.process)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def start_daemon(env: dict[str, str], log: Path) -> Daemon:
    with log.open("w") as out:
        process = subprocess.Popen([str(DAEMON_SCRIPT)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return Daemon(process, log)


def launch_asset_backfill(instance, keys: list[str], tags: dict[str, str] | None = None) -> str:
    """An asset backfill of the synid_batch job's assets (the batch assets, the manifest and the report) over
    the batch partitions `keys`, added to the instance as the UI's `launchPartitionBackfill` does: the daemon's
    backfill thread then requests its runs. The partitions are added first. Returns the backfill id."""
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from synid_assets.definitions import build_definitions
    from synid_assets.defs.automation import batch_job
    from synid_assets.defs.partitions import identity_batches

    definitions = build_definitions()
    asset_graph = definitions.resolve_asset_graph()
    selection = sorted(batch_job.selection.resolve(asset_graph))
    instance.add_dynamic_partitions(identity_batches.name, keys)
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(), asset_graph=asset_graph, partition_names=keys,
        asset_selection=selection, backfill_timestamp=time.time(), tags=tags or {},
        dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=None)
    instance.add_backfill(backfill)
    return backfill.backfill_id


def wait_for_backfill(instance, backfill_id: str, daemon: Daemon, timeout: float) -> str:
    """Until the backfill is no longer requested (or cancelling); its final status (COMPLETED_SUCCESS, ...)."""
    from dagster._core.execution.backfill import BulkActionStatus

    deadline = time.monotonic() + timeout
    while (status := instance.get_backfill(backfill_id).status) in (BulkActionStatus.REQUESTED,
                                                                     BulkActionStatus.CANCELING):
        if daemon.process.poll() is not None:
            raise RuntimeError(f"daemon exited (rc {daemon.process.returncode}):\n{daemon.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"backfill {backfill_id} still {status.value} after {timeout} s")
        time.sleep(1.0)
    return status.value


@dataclass
class CeleryDeployment:
    """Postgres instance + Redis + N Celery workers, with one SYNID_HOME: what a multi-machine setup shares."""

    home: Path
    dagster_home: Path
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)
    daemon: Daemon | None = None

    def start_daemon(self) -> Daemon:
        self.daemon = start_daemon(self.env, self.home.parent / "daemon.log")
        return self.daemon

    def start_workers(self, count: int, mode: str = "all") -> list[Worker]:
        started = [start_worker(mode, self.env, self.home.parent / f"worker{len(self.workers) + i}.log",
                                f"w{len(self.workers) + i}-{uuid.uuid4().hex[:6]}") for i in range(count)]
        self.workers += started
        wait_for_workers(started)
        return started

    def stop_workers(self) -> None:
        if self.daemon is not None:  # first: it launches the runs that give the workers their steps
            self.daemon.stop()
            self.daemon = None
        for worker in self.workers:
            worker.stop()
        self.workers = []


@pytest.fixture
def celery_deployment(tmp_path: Path, postgres_server: PostgresServer, redis_server: RedisServer
                      ) -> Iterator[Callable[..., CeleryDeployment]]:
    """make(**SYNID_settings) -> a CeleryDeployment with no workers yet (start_workers starts them)."""
    made: list[CeleryDeployment] = []

    def make(**synid: str) -> CeleryDeployment:
        root = tmp_path / f"celery{len(made)}"
        home = root / "home"
        home.mkdir(parents=True)
        dagster_home = new_dagster_home(root, REPO / "deploy" / "celery" / "dagster.yaml")
        env = deployment_env(home, dagster_home, postgres_server.new_database(), redis_server.url, **synid)
        made.append(CeleryDeployment(home, dagster_home, env))
        return made[-1]

    yield make
    for deployment in made:
        deployment.stop_workers()


def step_pools() -> dict[str, str]:
    """{step key: pool} of the SynID assets that are in a pool."""
    from synid_assets.defs.assets import ALL_ASSETS

    return {a.op.name: a.op.pool for a in ALL_ASSETS if getattr(a, "op", None) is not None and a.op.pool}


def step_intervals(instance, run_ids: list[str]) -> list[tuple[str, str, str, float, float]]:
    """(pool, run id, step key, start, end) of every pooled step of the runs, from their event logs."""
    from dagster._core.events import DagsterEventType

    pools = step_pools()
    ends = {DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE, DagsterEventType.STEP_UP_FOR_RETRY}
    intervals, started = [], {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None or event.step_key not in pools:
                continue
            if event.event_type == DagsterEventType.STEP_START:
                started[(run_id, event.step_key)] = entry.timestamp
            elif event.event_type in ends and (run_id, event.step_key) in started:
                begin = started.pop((run_id, event.step_key))
                intervals.append((pools[event.step_key], run_id, event.step_key, begin, entry.timestamp))
    return intervals


def peak_steps_per_pool(intervals: list[tuple[str, str, str, float, float]]) -> dict[str, int]:
    """The most steps of each pool that ran at the same time (a sweep over starts and ends)."""
    peaks: dict[str, int] = {}
    for pool in {i[0] for i in intervals}:
        edges = sorted([(i[3], 1) for i in intervals if i[0] == pool] + [(i[4], -1) for i in intervals if i[0] == pool],
                       key=lambda edge: (edge[0], edge[1]))  # an end before a start at the same instant
        running = peak = 0
        for _, change in edges:
            running += change
            peak = max(peak, running)
        peaks[pool] = peak
    return peaks


def celery_workers_of(instance, run_ids: list[str]) -> set[str]:
    """The Celery worker names that executed steps of the runs ('Executing steps ... in celery worker')."""
    from dagster._core.events import DagsterEventType

    names = set()
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
            data = entry.dagster_event.engine_event_data if entry.dagster_event else None
            if data and "Celery worker" in data.metadata:
                names.add(str(data.metadata["Celery worker"].value))
    return names


def run_synid(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synid_assets.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def start_batch_run(env: dict[str, str], key: str, size: int, log: Path) -> subprocess.Popen:
    """A run of the batch job for partition `key` in its own process (as a run worker): see run_batch."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.deploy_helpers", "run-batch", key, str(size)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)


def run_batch(key: str, size: int) -> int:
    """The batch job for partition `key` with `size` identities, on the code location's executor."""
    import dagster as dg

    from synid_assets.cli.demo import demo_job
    from synid_assets.core.dataset.run_owner import RunOwner
    from synid_assets.defs.partitions import identity_batches

    instance = dg.DagsterInstance.get()
    try:
        instance.add_dynamic_partitions(identity_batches.name, [key])
        job = dg.build_reconstructable_job("synid_assets.cli.demo", demo_job.__name__,
                                           reconstructable_args=("synid_batch", None))
        run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}},
                      "ops": {"identity_attributes": {"config": {"batch_size": size}}}}
        result = dg.execute_job(job, instance=instance, run_config=run_config,
                                tags={"dagster/partition": key, **RunOwner.current().tags()})
        print(f"{key}: {'success' if result.success else 'failure'} run {result.run_id}", flush=True)
        return 0 if result.success else 1
    finally:
        instance.dispose()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "run-batch":
        sys.exit(run_batch(sys.argv[2], int(sys.argv[3])))
    sys.exit("usage: python -m tests.deploy_helpers run-batch KEY SIZE")
