"""An installed wheel works without the checkout: schemas, topology and broker pom inside.

The wheel is built from this checkout, unpacked into a folder of its own and
imported from there by a child process that runs in a directory outside the
repository, so nothing can be found relative to the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from durafka.resources import ResourceNotFoundError, resource_dir
from tests.support.processes import hub_env

REPO = Path(__file__).resolve().parents[2]
#: What a wheel is built from.
SOURCES = ("durafka", "schemas", "topology", "docker", "setup.py", "pyproject.toml", "README.md")
_NOT_SOURCE = shutil.ignore_patterns("__pycache__", "*.pyc")

#: Runs in the child, next to a copy of examples/hello.py: hello world on the broker.
HELLO = textwrap.dedent(
    """
    import asyncio, json
    import durafka
    from durafka.resources import resource_dir
    from hello import app, hello_world

    async def main() -> None:
        app.ensure_topics()
        async with app.run(), app.client() as client:
            iid = await client.start_new(hello_world, "wheel")
            output = await client.wait_for_completion(iid, timeout=60)
        print(json.dumps({
            "durafka": durafka.__file__,
            "schemas": str(resource_dir("schemas")),
            "topology": str(resource_dir("topology")),
            "pom": str(resource_dir("docker/kafka-dist") / "pom.xml"),
            "output": output,
        }))

    asyncio.run(main())
    """
)


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout built as a wheel and unpacked, as pip would install it."""
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools leaves build/ in the source tree, and stale
    # files there would end up in the next wheel.
    source = out / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=_NOT_SOURCE)
        else:
            shutil.copy2(REPO / name, source / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*pip_wheel, "-q", "--disable-pip-version-check", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"building the wheel failed:\n{done.stdout}\n{done.stderr}"
    (wheel,) = out.glob("durafka-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_the_wheel_carries_the_data_files(unpacked_wheel: Path) -> None:
    package = unpacked_wheel / "durafka"
    for name in ("schemas", "topology"):
        shipped = sorted(p.relative_to(package / name) for p in (package / name).rglob("*.*"))
        in_repo = sorted(
            p.relative_to(REPO / name)
            for p in (REPO / name).rglob("*.*")
            if p.suffix in {".avsc", ".toml"}
        )
        assert shipped == in_repo, f"{name}/ in the wheel differs from the checkout's"
    pom = package / "docker" / "kafka-dist" / "pom.xml"
    assert pom.read_bytes() == (REPO / "docker" / "kafka-dist" / "pom.xml").read_bytes()


@pytest.mark.kafka
def test_an_installed_wheel_runs_hello_world_on_the_broker(
    unpacked_wheel: Path, kafka_bootstrap: str, hub: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **hub_env(kafka_bootstrap, hub, tmp_path / "state"),
        "PYTHONPATH": str(unpacked_wheel),
    }
    env.pop("DURAFKA_SCHEMA_DIR", None)
    shutil.copy2(REPO / "examples" / "hello.py", tmp_path / "hello.py")
    done = subprocess.run(
        [sys.executable, "-c", HELLO],
        cwd=tmp_path,  # outside the checkout
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"the packaged hello failed:\n{done.stderr[-4000:]}"
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["output"] == "Hello, wheel!"
    package = unpacked_wheel / "durafka"
    assert Path(seen["durafka"]).parent == package, "durafka was imported from the checkout"
    assert Path(seen["schemas"]) == package / "schemas"
    assert Path(seen["topology"]) == package / "topology"
    assert Path(seen["pom"]).is_file()


def test_a_missing_data_folder_is_named_in_the_error() -> None:
    with pytest.raises(ResourceNotFoundError, match=r"no-such-folder/ folder was not found"):
        resource_dir("no-such-folder")
    assert (resource_dir("topology") / "default.toml").is_file()
