"""Run recovery on one machine: dead runs are failed and free their pool slots; slot waits sleep and say why.

A run killed with SIGKILL (an out-of-memory kill, a crashed machine) stays STARTED in the instance and
keeps its pool slot, and the default run launcher cannot tell that its worker is gone, so the run
monitoring daemon never fails it. SynID's executor therefore records the owner process of every run as
run tags (see core/dataset/run_owner.py), and three places fail the runs whose owner is gone on this
host and free their slots: the start of every run (UI, schedule, sensor and `synid demo` runs alike),
a step waiting for a slot held by such a run, and `dead_run_sensor` while the daemon runs.

Deployments beyond one machine (Postgres storage shared by many hosts, Celery workers): a run is owned
by its run process, the one that claims its steps' pool slots, wherever its steps execute (claim_run_ownership,
used by the in-process and the Celery executors of defs/executors.py). Its liveness is judged only on the
machine that runs it: a run of another host, or of a machine that has the same host name but another boot,
is never failed here (on a one-machine SQLite instance the latter is this machine after a reboot, so dead).
Step processes (Celery workers, multiprocess children) never own a run: only run-level events name its pid.

The executor is Dagster's in-process executor with one change, in how a step waits for a pool slot.
Dagster 1.13.27's wait never sleeps (its interval is min(0, ...), so it polls the database in a busy
loop) and never looks at the SIGTERM/SIGINT it captured, so a run waiting for a slot spins a core and
cannot be stopped. Here the wait sleeps between checks, logs which run holds the slot, and ends the
run on SIGTERM/SIGINT; an ended run gives back the slots it held.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from types import TracebackType

import dagster as dg
from dagster._core.definitions.executor_definition import IN_PROC_CONFIG
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.context.system import PlanExecutionContext, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.execute_plan import inner_plan_execution_iterator
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.step_dependency_config import StepDependencyConfig
from dagster._core.executor.in_process import InProcessExecutor
from dagster._core.storage.dagster_run import FINISHED_STATUSES, DagsterRunStatus, RunsFilter
from dagster._core.storage.runs import InMemoryRunStorage, SqliteRunStorage
from dagster._utils.interrupts import pop_captured_interrupt

from synid_assets.core.dataset.run_owner import RunOwner

UNFINISHED_STATUSES = [
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
# Longest sleep between two checks of a pool slot: short enough that a freed slot is taken soon and
# a SIGTERM is answered within seconds, long enough that a waiting run costs no CPU.
MAX_SLOT_CHECK_INTERVAL_SECONDS = 2.0


def instance_is_one_machine(instance: dg.DagsterInstance) -> bool:
    """True for a SQLite (or in-memory) instance, which only processes of one machine open; False for a
    shared one (Postgres), whose runs may belong to any machine of the deployment."""
    return isinstance(instance.run_storage, (SqliteRunStorage, InMemoryRunStorage))


def run_owner(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunOwner | None:
    """The process that runs `run`: from SynID's tags, else (runs started before SynID recorded them) the
    pid Dagster logged for the run process, on a one-machine instance; None when neither is known."""
    owner = RunOwner.from_tags(dict(run.tags))
    if owner is not None or not instance_is_one_machine(instance):
        return owner
    pid = None
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        if event is None or event.step_key is not None:
            continue  # a step's event: logged by a step process (a Celery worker, a subprocess), not the run's
        data = event.engine_event_data
        value = data.metadata.get("pid") if data else None
        if value is not None and str(value.value).isdigit():
            pid = int(value.value)  # the last one logged: the process that executes the steps
    return RunOwner(socket.gethostname(), pid) if pid is not None else None


def owner_is_alive(instance: dg.DagsterInstance, owner: RunOwner) -> bool | None:
    """Whether `owner` lives: True/False when this machine can tell, None when the run is another machine's.

    The host name alone does not identify a machine in a shared instance (two machines, or containers on
    two machines, may both be called 'worker'); the recorded boot id does. On a one-machine instance a
    different boot id is this machine after a reboot: the run's process is gone.
    """
    if not owner.is_local():
        return None
    recorded_boot = owner.process_start.split("/", 1)[0] if owner.process_start else None
    this_boot = _this_boot_id()
    if recorded_boot and this_boot and recorded_boot != this_boot:
        return False if instance_is_one_machine(instance) else None
    return owner.is_alive()


def _this_boot_id() -> str | None:
    start = RunOwner.current().process_start
    return start.split("/", 1)[0] if start else None


def free_slots_of_finished_runs(instance: dg.DagsterInstance) -> list[str]:
    """Frees the pool slots still held by finished (or deleted) runs; returns one line per run.

    The daemon does this `free_slots_after_run_end_seconds` after a run ends; without it nobody does.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders = storage.get_concurrency_run_ids()
    if not holders:
        return []
    records = instance.get_run_records(filters=RunsFilter(run_ids=list(holders)))
    status_by_id = {record.dagster_run.run_id: record.dagster_run.status for record in records}
    freed = []
    for run_id in sorted(holders):
        status = status_by_id.get(run_id)
        if status is None or status in FINISHED_STATUSES:
            storage.free_concurrency_slots_for_run(run_id)
            freed.append(f"freed the pool slots of {'deleted' if status is None else status.value} run {run_id}")
    return freed


def recover_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fails the unfinished runs whose owner process on this host is gone and frees their pool slots.

    Runs owned by another machine are left alone: this process cannot see their processes. Returns one
    line per run failed or freed, for the caller to print or log.
    """
    messages = []
    for record in instance.get_run_records(filters=RunsFilter(statuses=UNFINISHED_STATUSES)):
        run = record.dagster_run
        owner = run_owner(instance, run)
        if owner is None or owner_is_alive(instance, owner) is not False:
            continue
        latest = instance.get_run_by_id(run.run_id)  # another process may have failed it meanwhile
        if latest is None or latest.status not in UNFINISHED_STATUSES:
            continue
        message = (
            f"run {run.run_id} ({run.job_name}) was {run.status.value} but its process ({owner.describe()}) "
            "is gone (killed or crashed): marked failed and its pool slots freed"
        )
        instance.report_run_failed(run, message=message[0].upper() + message[1:] + ".")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        messages.append(message)
    return messages + free_slots_of_finished_runs(instance)


def release_runs_of_this_process(instance: dg.DagsterInstance, reason: str) -> list[str]:
    """Fails the unfinished runs owned by this very process (it is about to exit) and frees their slots."""
    here = RunOwner.current()
    messages = []
    records = instance.get_run_records(filters=RunsFilter(statuses=UNFINISHED_STATUSES, tags=here.tags()))
    for record in records:
        run = record.dagster_run
        instance.report_run_failed(run, message=reason)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        messages.append(f"run {run.run_id} ({run.job_name}) marked failed: {reason}")
    return messages + free_slots_of_finished_runs(instance)


def describe_slot_holders(instance: dg.DagsterInstance, pool: str, exclude_run_id: str | None = None) -> str:
    """'run <id> step <key> (pid N on host H, running)' for each run holding a slot of `pool`."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    parts = []
    for slot in info.claimed_slots:
        if slot.run_id == exclude_run_id:
            continue
        run = instance.get_run_by_id(slot.run_id)
        owner = run_owner(instance, run) if run else None
        if run is None:
            state = "run deleted"
        elif owner is None:
            state = f"{run.status.value}, owner process not recorded"
        else:
            alive = {True: "running", False: "process gone", None: "on another host"}[owner_is_alive(instance, owner)]
            state = f"{run.status.value}, {owner.describe()}, {alive}"
        parts.append(f"run {slot.run_id} step {slot.step_key} ({state})")
    return "; ".join(parts) or "no run (the slot is being handed over)"


def _raise_if_interrupted() -> None:
    # Dagster turns SIGTERM/SIGINT into a flag during a run and raises only inside step code; a run
    # that waits for a slot runs no step code, so the wait raises it itself.
    if pop_captured_interrupt():
        raise DagsterExecutionInterruptedError("interrupted (SIGTERM or SIGINT) while waiting for a pool slot")


def _interrupted_step(event: DagsterEvent) -> bool:
    """A step failure or retry whose cause is a SIGTERM/SIGINT that Dagster raised inside the step."""
    if not (event.is_step_up_for_retry or event.is_step_failure):
        return False
    errors = [getattr(event.event_specific_data, "error", None)]
    while errors:
        error = errors.pop()
        if error is not None:
            if error.cls_name in ("DagsterExecutionInterruptedError", "KeyboardInterrupt"):
                return True
            errors += [error.cause, error.context]
    return False


class WaitingConcurrencyContext(InstanceConcurrencyContext):
    """Pool slot claims of one in-process run: sleep between checks, say who holds the slot, obey SIGTERM.

    Relies on the private wait bookkeeping of dagster 1.13.27 (pinned in pyproject.toml).
    """

    def __init__(self, instance: dg.DagsterInstance, dagster_run: dg.DagsterRun, log: dg.DagsterLogManager):
        super().__init__(instance, dagster_run)
        self._log = log
        self._reported_holders: dict[str, str] = {}

    def claim(self, concurrency_key: str, step_key: str, step_priority: int = 0) -> bool:
        _raise_if_interrupted()
        checks_storage = step_key not in self._pending_claims or time.time() > self._pending_timeouts[step_key]
        if super().claim(concurrency_key, step_key, step_priority):
            if self._reported_holders.pop(step_key, None) is not None:
                self._log.info(f"Step {step_key} got its slot in pool '{concurrency_key}'.")
            return True
        if not checks_storage:
            return False
        if recover_dead_runs(self._instance):
            self._pending_timeouts[step_key] = 0.0  # a dead holder was just freed: check again at once
            return False
        self._pending_timeouts[step_key] = min(
            self._pending_timeouts[step_key], time.time() + MAX_SLOT_CHECK_INTERVAL_SECONDS
        )
        holders = describe_slot_holders(self._instance, concurrency_key, exclude_run_id=self._run_id)
        if self._reported_holders.get(step_key) != holders:
            self._reported_holders[step_key] = holders
            limit = self._instance.event_log_storage.get_concurrency_info(concurrency_key).slot_count
            self._log.warning(
                f"Step {step_key} waits for a slot in pool '{concurrency_key}' (limit {limit}), held by {holders}. "
                f"It sleeps until the slot is free; `dagster instance concurrency set {concurrency_key} N` "
                "raises the limit."
            )
        return False

    def interval_to_next_pending_claim_check(self) -> float:
        _raise_if_interrupted()
        if not self._pending_claims or not self._pending_timeouts:
            return 0.0
        return max(0.0, min(self._pending_timeouts.values()) - time.time())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc_value, traceback)
        # In process, a step still holding a slot here was interrupted or crashed: nothing else runs it.
        for step_key in list(self._claims):
            self.free_step(step_key)


def _waiting_execution_iterator(
    job_context: PlanExecutionContext,
    execution_plan: ExecutionPlan,
    instance_concurrency_context: InstanceConcurrencyContext | None = None,
) -> Iterator[DagsterEvent]:
    with WaitingConcurrencyContext(job_context.instance, job_context.dagster_run, job_context.log) as context:
        yield from inner_plan_execution_iterator(job_context, execution_plan, context)


def claim_run_ownership(plan_context: PlanOrchestrationContext) -> Iterator[DagsterEvent]:
    """Records this process as the run's owner (it claims the steps' pool slots, wherever they execute),
    then fails the dead runs of this machine so that their slots do not block this run."""
    instance, run = plan_context.instance, plan_context.dagster_run
    instance.add_run_tags(run.run_id, RunOwner.current().tags())
    for message in recover_dead_runs(instance):
        yield DagsterEvent.engine_event(plan_context, f"Recovered {message}.", EngineEventData())


class SynidInProcessExecutor(InProcessExecutor):
    """Dagster's in-process executor that records the run's owner process and recovers dead runs first."""

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        yield from claim_run_ownership(plan_context)
        step_keys = execution_plan.step_keys_to_execute
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in process (pid: {os.getpid()})",
            event_specific_data=EngineEventData.in_process(os.getpid(), step_keys),
        )
        events = iter(
            ExecuteRunWithPlanIterable(
                execution_plan=plan_context.execution_plan,
                iterator=_waiting_execution_iterator,
                execution_context_manager=PlanExecutionContextManager(
                    job=plan_context.job,
                    retry_mode=plan_context.retry_mode,
                    execution_plan=plan_context.execution_plan,
                    run_config=plan_context.run_config,
                    dagster_run=plan_context.dagster_run,
                    instance=plan_context.instance,
                    raise_on_error=plan_context.raise_on_error,
                    output_capture=plan_context.output_capture,
                    step_dependency_config=self.step_dependency_config,
                ),
            )
        )
        try:
            for event in events:
                yield event
                if _interrupted_step(event):
                    # Dagster turns an interrupt inside a step with a retry policy into a retry; here it ends the run.
                    raise DagsterExecutionInterruptedError(f"step {event.step_key} was interrupted (SIGTERM or SIGINT)")
        finally:
            events.close()  # unwinds the plan now: resources torn down, slots given back
        yield DagsterEvent.engine_event(
            plan_context,
            f"Finished steps in process (pid: {os.getpid()})",
            event_specific_data=EngineEventData.in_process(os.getpid(), step_keys),
        )


@dg.executor(name="in_process", config_schema=IN_PROC_CONFIG)
def synid_in_process_executor(init_context: dg.InitExecutorContext) -> SynidInProcessExecutor:
    """Every step in the run's own process (models load once per run), with SynID's run recovery."""
    config = init_context.executor_config
    return SynidInProcessExecutor(
        retries=RetryMode.from_config(config["retries"]),
        step_dependency_config=StepDependencyConfig.from_config(config.get("step_dependency_config")),
    )


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Fails runs whose process on this host is gone (SIGKILL, OOM kill) and frees their pool slots.",
)
def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    messages = recover_dead_runs(context.instance)
    for message in messages:
        context.log.warning(message)
    return dg.SkipReason("; ".join(messages) or "no dead runs on this host")
