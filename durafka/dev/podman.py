"""Podman without a Docker engine or a registry: the images durafka's container tests use.

Development tooling (like :mod:`durafka.dev.broker`). On a machine with no
Docker engine and no reachable image registry, Podman from the distribution's
packages builds and runs images, given a few flags:

- the ``runc`` runtime (``crun`` fails on hosts whose cgroups are in hybrid mode);
- rlimits at or below the host's own (``--ulimit nofile=1024:1024``), since a
  container may not raise them;
- host networking: brokers and apps talk over 127.0.0.1.

No base image can be pulled, so :func:`ensure_base_image` makes one with
``debootstrap`` (Debian with Python), cached as a tar file under
``~/.cache/durafka`` and imported once per machine. :func:`ensure_kafka_image`
puts Apache Kafka (the jars :func:`~durafka.dev.broker.ensure_distribution`
fetches from Maven Central) and a JRE on it; :func:`build_app_image` builds
``docker/Dockerfile`` on it. Images are tagged with a hash of what they are
built from, so a changed recipe builds a new one and an unchanged one is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from durafka.dev.broker import DEFAULT_KAFKA_VERSION, default_cache_dir, ensure_distribution
from durafka.errors import ContainerUnavailableError
from durafka.resources import resource_dir

__all__ = [
    "BASE_IMAGE",
    "Podman",
    "build_app_image",
    "ensure_base_image",
    "ensure_kafka_image",
    "ensure_podman",
]

#: The Debian release of the base image (the one the host's apt mirror serves).
DEBIAN_SUITE = "bookworm"
#: What the base image has besides Debian's minimal set.
_BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
#: The locally made base image (Debian with Python), the tag :func:`ensure_base_image` returns.
BASE_IMAGE = f"localhost/durafka-base:{DEBIAN_SUITE}"
_APT_PACKAGES = ("podman", "runc", "debootstrap")
_BUILD_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Podman:
    """The ``podman`` command with the flags that make it work on these hosts.

    Attributes:
        executable: path of ``podman``.
        runtime: OCI runtime (``--runtime``); ``runc`` because ``crun`` refuses hybrid cgroups.
        ulimits: rlimits of builds and containers, at or below the host's own.
    """

    executable: str = "podman"
    runtime: str | None = "runc"
    ulimits: tuple[str, ...] = ("nofile=1024:1024", "nproc=1024:1024")
    env: Mapping[str, str] = field(default_factory=dict)

    def command(self, *args: str) -> list[str]:
        """``podman [--runtime R] ARGS``."""
        runtime = ["--runtime", self.runtime] if self.runtime else []
        return [self.executable, *runtime, *args]

    def limits(self) -> list[str]:
        """The ``--ulimit`` flags for ``run`` and ``build``."""
        return [flag for limit in self.ulimits for flag in ("--ulimit", limit)]

    def run(
        self, *args: str, timeout: float = 300.0, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``podman ARGS``, capturing its output.

        Raises:
            ContainerUnavailableError: it failed (with ``check``) or timed out,
                with the tail of its output.
        """
        command = self.command(*args)
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=input is None,
                input=input,
                timeout=timeout,
                check=False,
                env={**os.environ, **self.env},
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerUnavailableError(
                f"`{' '.join(command[:6])} ...` did not finish within {timeout:.0f} s"
            ) from exc
        out = done.stdout if isinstance(done.stdout, str) else done.stdout.decode(errors="replace")
        err = done.stderr if isinstance(done.stderr, str) else done.stderr.decode(errors="replace")
        result = subprocess.CompletedProcess(command, done.returncode, out, err)
        if check and done.returncode != 0:
            tail = "\n".join((out + err).splitlines()[-30:])
            raise ContainerUnavailableError(
                f"`{' '.join(command[:8])} ...` failed (exit {done.returncode}):\n{tail}"
            )
        return result

    def image_exists(self, image: str) -> bool:
        """Whether ``image`` is in the local store."""
        return self.run("image", "exists", image, check=False).returncode == 0

    def build(
        self,
        context: Path,
        tag: str,
        *,
        containerfile: Path | None = None,
        build_args: Mapping[str, str] | None = None,
        mounts: Iterable[str] = (),
        timeout: float = _BUILD_TIMEOUT_S,
    ) -> str:
        """``podman build`` of ``context`` as ``tag`` (Docker format: it keeps HEALTHCHECK).

        Args:
            context: the build context.
            tag: the image name to give the result.
            containerfile: the Dockerfile (default: ``context/Dockerfile``).
            build_args: ``--build-arg`` values.
            mounts: ``-v`` volumes of the RUN steps (e.g. a CA bundle), never kept in the image.
            timeout: seconds the build may take.

        Returns:
            ``tag``.
        """
        args = ["build", "--format", "docker", "--network", "host", *self.limits(), "-t", tag]
        if containerfile is not None:
            args += ["-f", str(containerfile)]
        for key, value in (build_args or {}).items():
            args += ["--build-arg", f"{key}={value}"]
        for mount in mounts:
            args += ["-v", mount]
        self.run(*args, str(context), timeout=timeout)
        return tag


def ensure_podman(*, install: bool = False) -> Podman:
    """A working :class:`Podman`, installing ``podman runc debootstrap`` with apt if asked.

    Args:
        install: when a tool is missing, ``apt-get install`` it (needs root and apt);
            otherwise say what to install.

    Raises:
        ContainerUnavailableError: a tool is missing and cannot be installed.
    """
    missing = [tool for tool in _APT_PACKAGES if _which(tool) is None]
    if missing and install:
        _apt_install(_APT_PACKAGES)
        missing = [tool for tool in _APT_PACKAGES if _which(tool) is None]
    if missing:
        raise ContainerUnavailableError(
            f"{', '.join(missing)} not found: install them (Debian: `apt-get install -y "
            f"{' '.join(_APT_PACKAGES)}`)"
        )
    podman = _which("podman")
    assert podman is not None
    return Podman(executable=podman)


def _which(tool: str) -> str | None:
    # debootstrap lives in /usr/sbin, which a non-login PATH may lack.
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def _apt_install(packages: Sequence[str]) -> None:
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise ContainerUnavailableError(
            f"cannot install {' '.join(packages)}: apt-get as root is needed"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", *packages]):
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=900, check=False, env=env
        )
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise ContainerUnavailableError(
                f"`{' '.join(command)}` failed (exit {done.returncode}):\n{tail}"
            )


def ensure_base_image(podman: Podman, cache_dir: Path | None = None) -> str:
    """The Debian + Python base image, made with debootstrap once per machine.

    The root filesystem's tar is kept in ``<cache_dir>/base-<suite>.tar`` (about
    280 MB), so a machine whose image store was reset imports it again instead
    of running debootstrap (about 70 s).

    Returns:
        :data:`BASE_IMAGE`.

    Raises:
        ContainerUnavailableError: debootstrap or the import failed.
    """
    if podman.image_exists(BASE_IMAGE):
        return BASE_IMAGE
    root = cache_dir if cache_dir is not None else default_cache_dir()
    archive = root / f"base-{DEBIAN_SUITE}.tar"
    if not archive.is_file():
        root.mkdir(parents=True, exist_ok=True)
        _debootstrap_archive(archive)
    podman.run("import", str(archive), BASE_IMAGE, timeout=600)
    return BASE_IMAGE


def _debootstrap_archive(archive: Path) -> None:
    debootstrap = _which("debootstrap")
    if debootstrap is None:
        raise ContainerUnavailableError("debootstrap not found (apt-get install debootstrap)")
    scratch = Path(tempfile.mkdtemp(prefix=".rootfs-", dir=archive.parent))
    rootfs = scratch / "rootfs"
    try:
        command = [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(_BASE_PACKAGES)}",
            DEBIAN_SUITE,
            str(rootfs),
            apt_mirror(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
        # debootstrap can leave the rootfs' /proc mounted: never archive (or delete) the host's.
        _unmount_below(rootfs)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise ContainerUnavailableError(f"debootstrap failed (exit {done.returncode}):\n{tail}")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        # Written next to the final name and renamed: a cut-off run never looks cached.
        partial = archive.with_name(f".{archive.name}.partial")
        tar = subprocess.run(
            ["tar", "--one-file-system", "-C", str(rootfs), "-cf", str(partial), "."],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if tar.returncode != 0:
            raise ContainerUnavailableError(f"tar of the base rootfs failed: {tar.stderr[-2000:]}")
        partial.replace(archive)
    finally:
        _unmount_below(rootfs)
        shutil.rmtree(scratch, ignore_errors=True)


def _unmount_below(root: Path) -> None:
    """Unmount every file system mounted at or below ``root`` (deepest first)."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    prefix = str(root.resolve())
    points = [line.split()[1] for line in lines if len(line.split()) > 1]
    for point in sorted(
        (p for p in points if p == prefix or p.startswith(prefix + "/")), key=len, reverse=True
    ):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=60)


def apt_mirror() -> str:
    """The Debian mirror apt is configured with (default: deb.debian.org)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "URIs" and "security" not in value:
                return value.split()[0]
    with contextlib.suppress(OSError):
        for line in Path("/etc/apt/sources.list").read_text(errors="replace").splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and "security" not in words[1]:
                return next(w for w in words[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def ensure_kafka_image(
    podman: Podman, version: str = DEFAULT_KAFKA_VERSION, cache_dir: Path | None = None
) -> str:
    """An Apache Kafka image built here: the Maven Central jars and a JRE on the base image.

    It is configured like the official ``apache/kafka`` image: every ``KAFKA_X_Y``
    variable becomes ``x.y`` in ``server.properties`` (``docker/kafka/entrypoint.sh``).

    Returns:
        ``localhost/durafka-kafka:<version>-<recipe hash>``.
    """
    recipe = resource_dir("docker/kafka")
    tag = f"localhost/durafka-kafka:{version}-{_digest(recipe, [BASE_IMAGE, version])}"
    if podman.image_exists(tag):
        return tag
    base = ensure_base_image(podman, cache_dir)
    libs = ensure_distribution(version, cache_dir)
    with tempfile.TemporaryDirectory(prefix="durafka-kafka-image-") as scratch:
        context = Path(scratch)
        for item in recipe.iterdir():
            shutil.copy2(item, context / item.name)
        shutil.copytree(libs, context / "libs")
        podman.build(context, tag, build_args={"BASE_IMAGE": base})
    return tag


def build_app_image(
    podman: Podman,
    context: Path,
    tag: str,
    *,
    requirements: str = "requirements.txt",
    dockerfile: Path | None = None,
    base_image: str | None = None,
    compiled: bool = False,
) -> str:
    """Build ``docker/Dockerfile`` for the app in ``context`` on the local base image.

    pip inside the build trusts the CA bundle named by ``PIP_CERT`` when it is set
    (mounted for the build only, never kept in the image).

    Args:
        podman: from :func:`ensure_podman`.
        context: the app's directory (its code and ``requirements``).
        tag: the image name.
        requirements: the requirements file, relative to ``context``.
        dockerfile: default: durafka's ``docker/Dockerfile``.
        base_image: default: :func:`ensure_base_image`'s.
        compiled: the compiled variant (``DURAFKA_COMPILE=1``: durafka's hot path
            through mypyc, a C compiler in the build stage only).

    Returns:
        ``tag``.
    """
    base = base_image or ensure_base_image(podman)
    dockerfile = dockerfile or resource_dir("docker") / "Dockerfile"
    build_args = {"BASE_IMAGE": base, "REQUIREMENTS": requirements}
    if compiled:
        build_args["DURAFKA_COMPILE"] = "1"
    mounts: list[str] = []
    cert = os.environ.get("PIP_CERT")
    if cert and Path(cert).is_file():
        mounts.append(f"{cert}:/run/durafka-ca.crt:ro")
        build_args["PIP_CERT_FILE"] = "/run/durafka-ca.crt"
    return podman.build(
        context, tag, containerfile=dockerfile, build_args=build_args, mounts=mounts
    )


def _digest(directory: Path, extra: Iterable[str]) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(path.relative_to(directory).as_posix().encode())
        h.update(path.read_bytes())
    for item in extra:
        h.update(item.encode())
    return h.hexdigest()[:12]
