"""docker/compose.yml and docker/Dockerfile: the production layout's ranges, commands, settings."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
from typer.testing import CliRunner

from durafka.cli import app as cli
from durafka.deploy import coverage_problems
from durafka.settings import Settings
from examples import hello
from tests.deploy.manifests import (
    DOCKERFILE,
    REPO,
    compose_file,
    dockerfile_env,
    dockerfile_user,
    known_variables,
    option,
    parse_cli,
    variables_in,
)

ROLES = ("processor", "worker", "serve")


def _substitute(text: str) -> str:
    """Compose's ``${VAR:-default}`` with the defaults; ``${VAR:?message}`` with a value."""
    text = re.sub(r"\$\{\w+:\?[^}]*\}", "0123456789abcdef0123", text)
    return re.sub(r"\$\{\w+:-((?:[^{}]|\{\})*)\}", r"\1", text)


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = compose_file()["services"]
    return loaded


def test_the_processors_take_the_ranges_of_deploy_plan(services: dict[str, Any]) -> None:
    processors = {n: s for n, s in services.items() if s.get("command", [""])[0] == "processor"}
    assert len(processors) == 2
    partitions = int(services["processor-0"]["environment"]["DURAFKA_PARTITIONS"])
    ranges = [option(s["command"], "--partitions") for _, s in sorted(processors.items())]
    planned = CliRunner().invoke(
        cli, ["deploy", "plan", "--pods", "2", "--partitions", str(partitions)]
    )
    assert planned.exit_code == 0, planned.output
    assert ranges == planned.output.split()
    assert coverage_problems(ranges, partitions) == []
    # Each processor keeps its stores on a volume of its own, at the image's state dir.
    state_dir = dockerfile_env()["DURAFKA_STATE_DIR"]
    volumes = [s["volumes"] for _, s in sorted(processors.items())]
    assert all(len(v) == 1 and v[0].endswith(f":{state_dir}") for v in volumes)
    assert len({v[0] for v in volumes}) == 2


def test_the_layout_has_every_role_and_the_topology_job(services: dict[str, Any]) -> None:
    commands = [s["command"][0] for s in services.values() if "command" in s]
    assert commands.count("processor") == 2
    assert commands.count("worker") == 2
    assert commands.count("serve") == 1
    topology = services["topology"]
    assert topology["command"][:2] == ["topology", "apply"]
    env = topology["environment"]
    assert option(topology["command"], "--hub") == hello.app.settings.task_hub
    assert option(topology["command"], "--partitions") == env["DURAFKA_PARTITIONS"]
    assert option(topology["command"], "--bootstrap") == env["DURAFKA_BOOTSTRAP_SERVERS"]
    for name, service in services.items():
        if service.get("command", [""])[0] in ROLES:
            condition = service["depends_on"]["topology"]["condition"]
            assert condition == "service_completed_successfully", name


def test_every_command_parses_and_every_setting_exists(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = known_variables()
    for name, service in services.items():
        if name == "kafka":
            continue
        parse_cli([_substitute(arg) for arg in service["command"]])
        env = {k: _substitute(str(v)) for k, v in service["environment"].items()}
        unknown = sorted(k for k in env if k.startswith("DURAFKA_") and k not in known)
        assert not unknown, f"{name}: not durafka settings: {unknown}"
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            Settings()  # the values parse
    text = (REPO / "docker" / "compose.yml").read_text()
    assert variables_in(text) <= known


def test_the_dockerfile_settings_user_and_healthcheck() -> None:
    env = dockerfile_env()
    assert {k for k in env if k.startswith("DURAFKA_")} <= known_variables()
    text = DOCKERFILE.read_text()
    assert f'VOLUME ["{env["DURAFKA_STATE_DIR"]}"]' in text
    assert env["HEALTHCHECK_URL"] == f"http://127.0.0.1:{env['DURAFKA_METRICS_PORT']}/healthz"
    assert dockerfile_user() >= 1000, "the image must not run as root"
    assert 'ENTRYPOINT ["python", "-m", "durafka.cli"]' in text


def test_the_examples_requirements_are_durafkas_dependencies() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    lines = (REPO / "docker" / "requirements-examples.txt").read_text().splitlines()
    listed = [line for line in lines if line and not line.startswith("#")]
    assert listed == pyproject["project"]["dependencies"]
