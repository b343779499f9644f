"""deploy/k8s: the Helm values and the image, checked against dagster-k8s's own config schemas (no cluster here).

The Dagster Helm chart turns `runLauncher.config.k8sRunLauncher` into the instance's `run_launcher` block and each
user deployment into a container context for the runs it launches (templates/helpers/instance/_run-launcher.tpl and
the user-deployments chart's k8sContainerContext helper at the chart version of dagster 1.13). The functions below
do that translation for the keys SynID sets and refuse any other, and the results go through dagster's and
dagster-k8s's own validation: `process_config` against K8sRunLauncher.config_type(), the instance config loader,
K8sContainerContext's config parsing, k8s_job_executor's config schema and get_user_defined_k8s_config for the
step tags. Then every step's Kubernetes Job is built offline with construct_dagster_k8s_job, as the
k8s_job_executor would submit it, from those same pieces.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

REPO = Path(__file__).resolve().parents[1]
VALUES = REPO / "deploy" / "k8s" / "values.yaml"
DOCKERFILE = REPO / "deploy" / "k8s" / "Dockerfile"
RELEASE, NAMESPACE = "synid", "dagster"
FULLNAME = f"{RELEASE}-dagster"  # the chart's "dagster.fullname" for release `synid`
GPU = "nvidia.com/gpu"

# values key -> K8sRunLauncher config key, as _run-launcher.tpl renders them (those left out are chart-made).
LAUNCHER_KEYS = {
    "loadInclusterConfig": "load_incluster_config", "kubeconfigFile": "kubeconfig_file",
    "jobNamespace": "job_namespace", "imagePullPolicy": "image_pull_policy", "envConfigMaps": "env_config_maps",
    "envSecrets": "env_secrets", "envVars": "env_vars", "volumeMounts": "volume_mounts", "volumes": "volumes",
    "labels": "labels", "resources": "resources", "failPodOnRunFailure": "fail_pod_on_run_failure",
    "schedulerName": "scheduler_name", "securityContext": "security_context", "runK8sConfig": "run_k8s_config",
}
RUN_K8S_CONFIG_KEYS = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
                       "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config",
                       "jobMetadata": "job_metadata"}


def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def run_launcher_config(chart_values: dict[str, Any]) -> dict[str, Any]:
    """The `run_launcher.config` the chart writes into the instance's dagster.yaml."""
    launcher = chart_values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    given = launcher["config"]["k8sRunLauncher"]
    unknown = set(given) - set(LAUNCHER_KEYS)
    assert not unknown, f"{VALUES}: runLauncher.config.k8sRunLauncher has keys the chart does not know: {unknown}"
    config: dict[str, Any] = {
        "load_incluster_config": given["loadInclusterConfig"],
        "job_namespace": given.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": given["imagePullPolicy"],
        "service_account_name": FULLNAME,
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": f"{FULLNAME}-instance",
        "postgres_password_secret": "dagster-postgresql-secret",
    }
    for key, value in given.items():  # the template's `{{- if ... }}` blocks: only set (truthy) values
        if value and key not in ("loadInclusterConfig", "jobNamespace", "imagePullPolicy"):
            if key in ("envConfigMaps", "envSecrets"):
                value = [item["name"] for item in value if "name" in item]
            elif key == "runK8sConfig":
                assert set(value) <= set(RUN_K8S_CONFIG_KEYS), f"runK8sConfig keys: {set(value)}"
                value = {RUN_K8S_CONFIG_KEYS[k]: v for k, v in value.items() if v}
            elif key == "failPodOnRunFailure":
                value = True
            config[LAUNCHER_KEYS[key]] = value
    return config


def user_deployment(chart_values: dict[str, Any]) -> dict[str, Any]:
    section = chart_values["dagster-user-deployments"]
    assert section["enabled"] is True
    [deployment] = section["deployments"]
    return deployment


def code_location_container_context(deployment: dict[str, Any]) -> dict[str, Any]:
    """The container context the chart gives the code server (includeConfigInLaunchedRuns) for its runs."""
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    k8s: dict[str, Any] = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"{FULLNAME}-{deployment['name']}-user-env"]
        + [m["name"] for m in deployment.get("envConfigMaps", [])],
        "namespace": NAMESPACE,
        "service_account_name": f"{FULLNAME}-user-deployments",
        "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }
    if deployment.get("envSecrets"):
        k8s["env_secrets"] = [s["name"] for s in deployment["envSecrets"]]
    if isinstance(deployment.get("env"), list):
        k8s["env"] = deployment["env"]
    for key, name in (("volumeMounts", "volume_mounts"), ("volumes", "volumes"), ("labels", "labels"),
                      ("resources", "resources"), ("schedulerName", "scheduler_name")):
        if deployment.get(key):
            k8s[name] = deployment[key]
    return {"k8s": k8s}


@pytest.fixture
def offline_kubeconfig(tmp_path: Path) -> str:
    """A kubeconfig for a cluster on a closed port: the launcher loads it, nothing connects to it."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "offline",
        "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "offline", "user": {"token": "unused"}}],
        "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
    }))
    return str(path)


def launcher_from_values(kubeconfig: str) -> K8sRunLauncher:
    result = process_config(K8sRunLauncher.config_type(), run_launcher_config(values()))
    assert result.success, result.errors
    # In the cluster the launcher loads the in-cluster config; here the same config with an offline kubeconfig.
    return K8sRunLauncher.from_config_value(
        None, {**result.value, "load_incluster_config": False, "kubeconfig_file": kubeconfig})


def test_run_launcher_values_validate_against_dagster_k8s_schema(offline_kubeconfig: str) -> None:
    config = run_launcher_config(values())
    result = process_config(K8sRunLauncher.config_type(), config)
    assert result.success, [e.message for e in result.errors]
    launcher = launcher_from_values(offline_kubeconfig)
    assert launcher.job_namespace == NAMESPACE and launcher.fail_pod_on_run_failure is True
    assert launcher.resources["requests"]["memory"] == "4Gi"
    assert launcher.run_k8s_config["pod_spec_config"]["tolerations"][0]["key"] == GPU

    # The check has teeth: a wrong type or an unknown key is refused by the schema.
    assert not process_config(K8sRunLauncher.config_type(), {**config, "env_secrets": "synid-s3"}).success
    assert not process_config(K8sRunLauncher.config_type(), {**config, "job_imagee": "x"}).success


def test_instance_config_from_values_loads_with_dagsters_own_loader(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.instance.config import dagster_instance_config
    from dagster_postgres import PostgresRunStorage

    chart = values()
    concurrency, daemon = chart["concurrency"], chart["dagsterDaemon"]
    assert concurrency["enabled"] is True and daemon["enabled"] is True
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    pg = chart["postgresql"]
    postgres = {"postgres_db": {"username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
                                "hostname": f"{FULLNAME}-postgresql", "db_name": pg["postgresqlDatabase"],
                                "port": pg["service"]["port"]}}
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "from-the-chart-secret")  # the chart sets it from its secret
    assert process_config(PostgresRunStorage.config_type(), postgres).success
    storage = {"config": postgres}
    monitoring = daemon["runMonitoring"]
    instance = {
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": run_launcher_config(chart)},
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", **storage},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage", **storage},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage",
                             **storage},
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"},
        "concurrency": {
            "pools": {"default_limit": concurrency["pools"]["defaultLimit"],
                      "granularity": concurrency["pools"]["granularity"]},
            "runs": {"max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"]},
        },
        "run_monitoring": {"enabled": True, "start_timeout_seconds": monitoring["startTimeoutSeconds"],
                           "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
                           "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"]},
        "run_retries": {"enabled": True, "max_retries": daemon["runRetries"]["maxRetries"]},
    }
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    loaded, _ = dagster_instance_config(str(tmp_path))
    # The pools admit one step at a time unless raised, as on one machine (the repository's dagster.yaml).
    single_machine = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert loaded["concurrency"]["pools"] == single_machine["concurrency"]["pools"]
    assert loaded["run_monitoring"]["enabled"] is True


def test_user_deployment_serves_the_synid_code_location_from_the_image() -> None:
    deployment = user_deployment(values())
    assert deployment["codeServerArgs"] == ["-m", "synid_assets.definitions"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["SYNID_EXECUTOR"] == "k8s" and env["SYNID_HOME"].startswith("s3://")
    assert [s["name"] for s in deployment["envSecrets"]] == ["synid-s3"]
    # dagster-k8s parses the container context the chart hands to launched runs.
    container = K8sContainerContext.create_from_config(code_location_container_context(deployment)).run_k8s_config
    assert {"secret_ref": {"name": "synid-s3"}} in container.container_config["env_from"]
    assert {e["name"] for e in container.container_config["env"]} >= {"SYNID_EXECUTOR", "SYNID_HOME"}

    dockerfile = DOCKERFILE.read_text()
    [cmd] = re.findall(r"^CMD (\[.*\])$", dockerfile, flags=re.M)
    assert yaml.safe_load(cmd)[-2:] == deployment["codeServerArgs"]
    assert str(deployment["port"]) in yaml.safe_load(cmd) and f"EXPOSE {deployment['port']}" in dockerfile
    # CUDA users pick the torch wheel with a build arg; the version is the one pyproject pins.
    pinned = re.search(r'"torch==([^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert f"ARG TORCH_VERSION={pinned}" in dockerfile and "--index-url \"${TORCH_INDEX_URL}\"" in dockerfile


def root_executor(executor: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    from dagster._core.definitions.definition_config_schema import ConfiguredDefinitionConfigSchema

    while isinstance(executor.config_schema, ConfiguredDefinitionConfigSchema):
        executor = executor.config_schema.parent_def
    return executor


def k8s_executor_config() -> dict[str, Any]:
    """The k8s executor's config as the code location defines it, processed through k8s_job_executor's schema."""
    from synid_assets.defs.executors import code_location_executor

    executor = code_location_executor({"SYNID_EXECUTOR": "k8s"})
    assert root_executor(executor) is k8s_job_executor
    mapped = executor.apply_config_mapping({"config": {}})  # a `.configured(...)` executor's own config, if any
    assert mapped.success, [e.message for e in mapped.errors]
    result = process_config(k8s_job_executor.config_schema.as_field().config_type, mapped.value.get("config", {}))
    assert result.success, [e.message for e in result.errors]
    return result.value


def test_k8s_executor_config_validates_against_k8s_job_executors_schema() -> None:
    config = k8s_executor_config()
    assert "retries" in config and config["per_step_k8s_config"] == {}  # the schema's defaults, filled in
    schema = k8s_job_executor.config_schema.as_field().config_type
    assert not process_config(schema, {"step_k8s_config": {"container_confg": {}}}).success  # the check has teeth


def executor_container_context(config: dict[str, Any]) -> K8sContainerContext:
    """What k8s_job_executor builds from its config for every step pod (dagster_k8s/executor.py)."""
    keys = ("image_pull_policy", "image_pull_secrets", "service_account_name", "env_config_maps", "env_secrets",
            "env_vars", "volume_mounts", "volumes", "labels", "resources", "scheduler_name", "security_context")
    return K8sContainerContext(**{k: config.get(k) for k in keys}, namespace=config.get("job_namespace"),
                               run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config.get("step_k8s_config", {})))


def step_jobs(launcher: K8sRunLauncher) -> dict[str, Any]:
    """Each step of synid_batch as the Kubernetes Job the k8s_job_executor would create for it."""
    from dagster._core.execution.api import create_execution_plan

    from synid_assets.definitions import build_definitions

    defs = build_definitions()
    job = defs.resolve_job_def("synid_batch")
    assert root_executor(job.executor_def) is k8s_job_executor
    plan = create_execution_plan(job)
    run = dg.DagsterRun(job_name=job.name, run_id="0" * 36)
    code_location = K8sContainerContext.create_from_config(
        code_location_container_context(user_deployment(values())))
    base = (K8sContainerContext.create_for_run(run, launcher, include_run_tags=False).merge(code_location)
            .merge(executor_container_context(k8s_executor_config())))
    jobs = {}
    for step in plan.steps:
        context = base.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step.tags)))
        jobs[step.key] = construct_dagster_k8s_job(
            context.get_k8s_job_config("registry.example.com/synid:0.1.0", launcher),
            args=["dagster", "api", "execute_step"], job_name=f"dagster-step-{step.key.replace('_', '-')}",
            component="step_worker", user_defined_k8s_config=context.run_k8s_config)
    return jobs


def test_gpu_steps_request_one_gpu_in_the_kubernetes_jobs_the_executor_builds(
    offline_kubeconfig: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synid_assets.defs.assets import ALL_ASSETS

    monkeypatch.setenv("SYNID_EXECUTOR", "k8s")
    monkeypatch.setenv("SYNID_HOME", str(tmp_path / "home"))
    jobs = step_jobs(launcher_from_values(offline_kubeconfig))
    pools = {asset.op.name: asset.op.pool for asset in ALL_ASSETS}
    gpu_steps = {key for key in jobs if pools.get(key) == "gpu"}
    assert gpu_steps >= {"document_images", "document_embeddings", "live_images", "live_embeddings"}
    for key, job in jobs.items():
        [container] = job.spec.template.spec.containers
        limits = container.resources.limits or {}
        if key in gpu_steps:
            assert str(limits.get(GPU)) == "1" and str(container.resources.requests.get(GPU)) == "1", key
        else:
            assert GPU not in limits, f"{key} is not a GPU step but requests a GPU"
        assert limits["memory"] == "16Gi"  # the launcher's limits stay, deep-merged with the step's
        assert [s.secret_ref.name for s in container.env_from if s.secret_ref] == ["synid-s3"]
        assert {e.name: e.value for e in container.env}["SYNID_EXECUTOR"] == "k8s"
        assert job.spec.template.spec.tolerations[0].key == GPU
