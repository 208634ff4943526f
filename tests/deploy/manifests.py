"""Reading the deployment files: Kubernetes manifests, compose, the Dockerfile."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import typer.main
import yaml

from durafka.api.auth import ADMIN_TOKEN_ENV, READ_TOKEN_ENV
from durafka.cli import app as cli
from durafka.settings import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "docker" / "k8s"
COMPOSE = REPO / "docker" / "compose.yml"
DOCKERFILE = REPO / "docker" / "Dockerfile"

#: Settings another branch adds (used by the files already, ignored by Settings
#: until then): accepted only while Settings lacks them.
PENDING_SETTINGS = {"metrics_port": "branch metrics (issue 14): /metrics, /healthz, /readyz"}


#: Read when durafka is built, not when it runs (setup.py: the compiled build).
BUILD_VARIABLES = frozenset({"DURAFKA_COMPILE"})


def known_variables() -> set[str]:
    """Every ``DURAFKA_*`` variable durafka reads: the Settings fields, the API tokens and
    the build's (:data:`BUILD_VARIABLES`)."""
    fields = set(Settings.model_fields) | set(PENDING_SETTINGS)
    tokens = {ADMIN_TOKEN_ENV, READ_TOKEN_ENV}
    return {f"DURAFKA_{name.upper()}" for name in fields} | tokens | BUILD_VARIABLES


def k8s_documents() -> list[dict[str, Any]]:
    """Every object of the manifests listed in ``kustomization.yaml``, in order."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of ``kind`` named ``name``."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name}"
    return found[0]


def option(args: list[str], name: str) -> str:
    """The value of ``--name VALUE`` in ``args``."""
    assert args.count(name) == 1, f"{name} given {args.count(name)} times in {args}"
    return args[args.index(name) + 1]


def resized(statefulset: dict[str, Any], pods: int) -> dict[str, Any]:
    """The processor StatefulSet as docs/deploy.md resizes it: ``replicas`` and ``--pods``."""
    out = copy.deepcopy(statefulset)
    out["spec"]["replicas"] = pods
    args = out["spec"]["template"]["spec"]["containers"][0]["args"]
    args[args.index("--pods") + 1] = str(pods)
    return out


def compose_file() -> dict[str, Any]:
    """``docker/compose.yml``, anchors and merge keys resolved."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def dockerfile_env() -> dict[str, str]:
    """The ``ENV`` values of ``docker/Dockerfile``."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def dockerfile_user() -> int:
    """The uid the image runs as (its last ``USER``)."""
    lines = DOCKERFILE.read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    return int(users[-1].split(":")[0])


def variables_in(text: str) -> set[str]:
    """``DURAFKA_*`` names mentioned in ``text``."""
    return set(re.findall(r"\bDURAFKA_[A-Z0-9_]+\b", text))


def parse_cli(args: list[str]) -> str:
    """Parse ``durafka ARGS`` as the CLI would, without running it; return the command's path.

    Raises:
        click.UsageError: an unknown command or option, a value of the wrong type.
    """
    command: Any = typer.main.get_command(cli)
    ctx = command.context_class(command, info_name="durafka")
    path = ["durafka"]
    rest = list(args)
    while hasattr(command, "get_command"):  # a group: descend to the subcommand
        assert rest, f"no command in {args}"
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"no command {rest[0]!r} in `{' '.join(path)}` ({args})"
        path.append(rest.pop(0))
        command = sub
        ctx = command.context_class(command, info_name=path[-1], parent=ctx)
    command.make_context(path[-1], rest, parent=ctx.parent)
    return " ".join(path)
