"""The code location's executor, chosen by the deployment (SYNID_EXECUTOR), and the tags of GPU steps.

- `in_process` (default): every step of a run in the run's own process (runs.synid_in_process_executor).
- `celery`: each step is a Celery task on a worker (dagster-celery, Redis broker from SYNID_REDIS_URL); GPU
  steps go to the `gpu` queue, which one worker per GPU consumes with concurrency 1 and its own
  CUDA_VISIBLE_DEVICES, so a GPU never holds two models at once. Everything else goes to the default
  `dagster` queue (CPU workers). The workers and the run processes must share the instance (Postgres:
  deploy/celery/dagster.yaml) and the dataset (SYNID_HOME on a shared filesystem or object store).
- `k8s`: each step is a Kubernetes Job (dagster-k8s); GPU steps request `nvidia.com/gpu: 1`.

Pools (`gpu`, `identity_filter`, `duckdb`) hold in every deployment: the run process claims a step's slot in
the instance's concurrency tables before it hands the step to a worker, and frees it when the step's result
is back, so the limits count steps across all runs, workers and machines that share the instance.

dagster_celery and dagster_k8s are imported only when chosen, so the default code location stays light.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from synid_assets.defs.runs import claim_run_ownership, synid_in_process_executor

EXECUTOR_ENV = "SYNID_EXECUTOR"
EXECUTOR_CHOICES = ("in_process", "celery", "k8s")
REDIS_URL_ENV = "SYNID_REDIS_URL"
GPU_QUEUE = "gpu"
CPU_QUEUE = "dagster"  # dagster-celery's default queue
CELERY_QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG
K8S_CONFIG_TAG = "dagster-k8s/config"  # dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY

# One GPU per GPU step, whichever engine runs it. Assets in the `gpu` pool carry these as op_tags.
GPU_RESOURCES = {"limits": {"nvidia.com/gpu": 1}, "requests": {"nvidia.com/gpu": 1}}
GPU_OP_TAGS: dict[str, Any] = {
    CELERY_QUEUE_TAG: GPU_QUEUE,
    K8S_CONFIG_TAG: {"container_config": {"resources": GPU_RESOURCES}},
}

# The Celery executor's config: the same block as deploy/celery/celery.yaml, which the workers start with
# (a test keeps the two equal). Broker and result backend are one Redis, from the environment.
CELERY_EXECUTOR_CONFIG: dict[str, Any] = {
    "broker": {"env": REDIS_URL_ENV},
    "backend": {"env": REDIS_URL_ENV},
    "config_source": {
        "worker_prefetch_multiplier": 1,  # a worker takes one task at a time: the others stay in the queue
        "broker_connection_retry_on_startup": True,
        "result_expires": 86400,
    },
}


def executor_choice(environ: Mapping[str, str] | None = None) -> str:
    """SYNID_EXECUTOR's value, 'in_process' when unset; a one-line error for anything else."""
    value = (os.environ if environ is None else environ).get(EXECUTOR_ENV, "").strip() or "in_process"
    if value not in EXECUTOR_CHOICES:
        raise ValueError(f"{EXECUTOR_ENV}={value!r}: expected one of {', '.join(EXECUTOR_CHOICES)}")
    return value


def celery_executor_definition() -> dg.ExecutorDefinition:
    """dagster-celery's executor with SynID's run ownership (owner tags, dead runs recovered first)."""
    from dagster import multiple_process_executor_requirements
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.core_execution_loop import core_celery_execution_loop
    from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task

    class SynidCeleryExecutor(CeleryExecutor):
        def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:  # noqa: ANN001
            # The run process (here) holds the pool slots while workers run the steps: it is the run's owner.
            yield from claim_run_ownership(plan_context)
            yield from core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=_submit_task)

    @dg.executor(name="celery", config_schema=CELERY_CONFIG, requirements=multiple_process_executor_requirements())
    def synid_celery_executor(init_context: dg.InitExecutorContext) -> SynidCeleryExecutor:
        """Each step a Celery task; GPU steps on the `gpu` queue; SynID's run recovery in the run process."""
        config = init_context.executor_config
        return SynidCeleryExecutor(
            broker=config.get("broker"),
            backend=config.get("backend"),
            config_source=config.get("config_source"),
            include=config.get("include"),
            retries=RetryMode.from_config(config["retries"]),
        )

    return synid_celery_executor.configured(CELERY_EXECUTOR_CONFIG, name="celery")


def k8s_executor_definition() -> dg.ExecutorDefinition:
    """dagster-k8s's k8s_job_executor: a Kubernetes Job per step, configured by the Helm chart's run launcher."""
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor


def code_location_executor(environ: Mapping[str, str] | None = None) -> dg.ExecutorDefinition:
    """The executor SYNID_EXECUTOR names (in_process, celery or k8s)."""
    choice = executor_choice(environ)
    if choice == "celery":
        return celery_executor_definition()
    if choice == "k8s":
        return k8s_executor_definition()
    return synid_in_process_executor
