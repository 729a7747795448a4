"""The component image, built on this machine with podman, and the Docker API that runs it.

``make image`` runs ``python -m infra.containers build``; the containerized pipeline
(``tlops run --runner docker``, ``make prod-local RUNNER=docker``) and its test use
:func:`api_service` for the Docker API that KFP's ``DockerRunner`` talks to.

* **The engine**: podman (Debian's) with runc; :func:`podman_env` points podman at
  ``infra/podman/containers.conf`` (runc, cgroupfs, no default ulimits: crun cannot set rlimits
  in some sandboxes). The storage driver is podman's own choice (overlay where the kernel has
  it, vfs otherwise).
* **The base image**: no container registry may be reachable, so the Dockerfile's
  ``BASE_IMAGE`` is made here: ``debootstrap --variant=minbase bookworm`` with Debian's
  python3 (3.11, the lock's Python), its venv module and the CA bundle, turned into an image by
  buildah (``from scratch``, ``copy``, ``commit``). Debian's Python rather than one built from
  source: it is bookworm's, as the official slim image's base is, installs in seconds from
  Debian's packages, and gets Debian's security updates; the lock's wheels are built for any
  CPython 3.11. Made once; its tag names a hash of its recipe.
* **The image**: ``podman build`` of ``infra/docker/Dockerfile`` on that base, tagged as
  ``kfp.base_image`` in params.yaml names it (what the compiled pipeline's tasks run), with the
  host's network and CA bundle (pip and uv inside the build reach the package indexes) and the
  machine's own package indexes and wheel folders, where pip is configured with them. Layers
  are reused while the lock and the Dockerfile are unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTAINERS_CONF = REPO / "infra" / "podman" / "containers.conf"
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# what the Dockerfile needs of its base: python3 with venv (ensurepip) and a CA bundle; the
# Dockerfile installs git itself, as on the official image
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_REPO = "localhost/tlops-base"
API_TIMEOUT_S = 60.0


class ContainerError(RuntimeError):
    """podman, buildah or debootstrap is missing or failed."""


def podman_env() -> dict[str, str]:
    """This process's environment with podman (and buildah) reading the project's config."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def _tool(name: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        raise ContainerError(
            f"{name} is not installed (Debian: apt-get install podman runc buildah debootstrap; "
            "`make image` installs them when missing)"
        )
    return path


def _run(argv: list[str], what: str, capture: bool = True) -> str:
    done = subprocess.run(argv, env=podman_env(), text=True, capture_output=capture, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip().splitlines()[-15:] if capture else []
        raise ContainerError(
            f"{what} failed (exit {done.returncode})" + "".join(f"\n  {line}" for line in detail)
        )
    return done.stdout or ""


def image_exists(tag: str) -> bool:
    """Whether podman's store has ``tag``."""
    done = subprocess.run([_tool("podman"), "image", "exists", tag], env=podman_env(), check=False)
    return done.returncode == 0


def image_size(tag: str) -> int:
    """The size of image ``tag`` in bytes, as podman reports it."""
    out = _run([_tool("podman"), "image", "inspect", "--format", "{{.Size}}", tag], "inspect")
    return int(out.strip())


def base_tag() -> str:
    """The base image's tag: a hash of its recipe, so a changed recipe makes a new one."""
    recipe = json.dumps([SUITE, MIRROR, BASE_PACKAGES, "minbase"]).encode()
    return f"{BASE_REPO}:{SUITE}-{hashlib.sha256(recipe).hexdigest()[:12]}"


def build_base(fresh: bool = False) -> str:
    """The Debian base image (debootstrap + buildah), made unless podman has it already.

    Args:
        fresh: Make it again even if podman has it (a cold build, for the benchmark).

    Returns:
        Its tag.
    """
    tag = base_tag()
    if image_exists(tag) and not fresh:
        return tag
    with tempfile.TemporaryDirectory(prefix="tlops-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        print(f"image: debootstrap --variant=minbase {SUITE} with {', '.join(BASE_PACKAGES)}")
        _run(
            [_tool("debootstrap"), "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             SUITE, str(rootfs), MIRROR],
            "debootstrap",
        )  # fmt: skip
        # the package cache and lists are the build's, not the image's
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        buildah = _tool("buildah")
        container = _run([buildah, "from", "scratch"], "buildah from scratch").strip()
        try:
            _run([buildah, "copy", "--quiet", container, f"{rootfs}/", "/"], "buildah copy")
            _run(
                [buildah, "config", "--env", "LANG=C.UTF-8",
                 "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "--cmd", "python3", "--label", f"tlops.base={SUITE}", container],
                "buildah config",
            )  # fmt: skip
            _run([buildah, "commit", "--quiet", "--rm", container, tag], "buildah commit")
        except BaseException:
            subprocess.run([buildah, "rm", container], env=podman_env(), capture_output=True)
            raise
    return tag


def _machine_indexes() -> tuple[str, str, list[Path]]:
    """The local package indexes and wheel folders pip is configured with on this machine.

    Only folders of this machine (``file://`` indexes, find-links paths): a remote index's URL
    may carry credentials, and build arguments are recorded in the image's history.

    Returns:
        The index URLs (space-separated), the find-links (comma-separated) and the folders to
        mount read-only into the build at the same paths: an index's parent (its pages link to
        ``../../files``) and each wheel folder.
    """

    def pip_config(key: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", key],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return done.stdout.split() if done.returncode == 0 else []

    indexes = [
        url for url in pip_config("global.extra-index-url")
        if url.startswith("file://") and Path(url.removeprefix("file://")).is_dir()
    ]  # fmt: skip
    links = pip_config("global.find-links") + os.environ.get("PIP_FIND_LINKS", "").split()
    links = [link for link in dict.fromkeys(links) if Path(link).is_dir()]
    folders = [Path(url.removeprefix("file://")).parent for url in indexes]
    folders += [Path(link) for link in links]
    return " ".join(indexes), ",".join(links), list(dict.fromkeys(folders))


@dataclass(frozen=True)
class Built:
    """What a build made, and how long it took."""

    tag: str
    base: str
    seconds: float
    size_bytes: int


def git_sha() -> str:
    """The checkout's commit, ``-dirty`` when it has changes (what the image records)."""
    from tlops.tracking.runs import git_sha as checkout_sha

    return checkout_sha(REPO)


def build_image(
    tag: str,
    torch_build: str = "cuda",
    quiet: bool = False,
    cold: bool = False,
    commit: str | None = None,
) -> Built:
    """Build ``infra/docker/Dockerfile`` on the Debian base and tag it ``tag``.

    Args:
        tag: The image's name (``kfp.base_image``: what the compiled pipeline's tasks run).
        torch_build: ``cuda`` (torch from PyPI, as the lock has it) or ``cpu`` (PyTorch's CPU
            index, which the development machines cannot reach).
        quiet: Keep podman's build output off the console (it is in the error on failure).
        cold: Make the base again and reuse no layer (``--no-cache``).
        commit: The commit the image records (default: this checkout's).

    Raises:
        ContainerError: A tool is missing or the build failed.
    """
    started = time.perf_counter()
    base = build_base(fresh=cold)
    indexes, links, folders = _machine_indexes()
    argv = [
        _tool("podman"), "build", "--layers", *(["--no-cache"] if cold else []),
        "--network", "host",
        "--volume", "/etc/ssl/certs:/etc/ssl/certs:ro",
        *[arg for folder in folders for arg in ("--volume", f"{folder}:{folder}:ro")],
        "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", f"TORCH_BUILD={torch_build}",
        "--build-arg", f"EXTRA_INDEX_URL={indexes}",
        "--build-arg", f"FIND_LINKS={links}",
        "--build-arg", f"GIT_SHA={commit or git_sha()}",
        "--target", "component", "-f", str(DOCKERFILE), "-t", tag, str(REPO),
    ]  # fmt: skip
    _run(argv, f"podman build of {tag}", capture=quiet)
    return Built(tag, base, time.perf_counter() - started, image_size(tag))


@contextlib.contextmanager
def api_service(state: Path) -> Iterator[str]:
    """The Docker-compatible API of podman on a unix socket in ``state``, for the duration.

    Yields:
        The ``DOCKER_HOST`` value that reaches it (``unix://...``).
    """
    state.mkdir(parents=True, exist_ok=True)
    socket = state / "podman.sock"
    socket.unlink(missing_ok=True)
    log = (state / "podman-service.log").open("ab")
    proc = subprocess.Popen(
        [_tool("podman"), "system", "service", "--time=0", f"unix://{socket}"],
        env=podman_env(), stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    try:
        host = f"unix://{socket}"
        _wait_api(host, proc)
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_api(host: str, proc: subprocess.Popen[bytes]) -> None:
    import docker

    deadline = time.monotonic() + API_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ContainerError(f"podman system service exited with {proc.returncode}")
        try:
            with contextlib.closing(docker.DockerClient(base_url=host, timeout=10)) as client:
                client.ping()
                return
        except Exception:  # not up yet: the socket is missing or refuses
            time.sleep(0.2)
    raise ContainerError(f"podman's Docker API did not answer at {host} in {API_TIMEOUT_S:.0f} s")


def default_tag() -> str:
    """The image params.yaml's ``kfp.base_image`` names."""
    from tlops.config import load_params

    return str(load_params(REPO / "params.yaml").kfp.base_image)


def main(argv: list[str]) -> int:
    """``build [TAG]``: the base if missing, then the image (what ``make image`` calls)."""
    command = argv[0] if argv else "build"
    if command != "build":
        print(f"usage: python -m infra.containers build [TAG] (got {command!r})", file=sys.stderr)
        return 2
    tag = argv[1] if len(argv) > 1 else default_tag()
    try:
        built = build_image(tag)
    except ContainerError as exc:
        print(f"make image: {exc}", file=sys.stderr)
        return 1
    print(
        f"image: {built.tag} on {built.base}: {built.size_bytes / 1e9:.2f} GB, "
        f"built in {built.seconds:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
