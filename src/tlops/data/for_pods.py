"""Data locations a pod can read, resolved before a run is sent to a cluster.

A pod has no checkout: ``data.target: data/target`` names a directory of the machine that
submits, and a run sent with it can only fail there, minutes later, in its first task. So before
anything is sent, each local directory a run reads is either resolved into the repository form
a pod reads (``{repo, rev, path}``: the checkout's git remote, a commit that remote has, the
directory as DVC tracks it at that commit, its data in the DVC remote) or refused with the fix.
Each check reads what this checkout knows (its remote-tracking refs, the DVC remote's status);
nothing is pushed.

A path that does not exist on this machine is taken for a path of the pods' own file system
(a mounted volume) and left as it is.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tlops.config import DvcData, Params


class NotReachable(ValueError):
    """A data location a pod cannot read, and what to do about it."""


@dataclass(frozen=True)
class Resolved:
    """One domain's data as the pods will read it, and why."""

    domain: str
    before: str
    after: str
    note: str


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise NotReachable(result.stderr.strip() or f"git {' '.join(args)} failed")
    return result.stdout.strip()


def _checkout_of(folder: Path) -> Path | None:
    try:
        return Path(
            _git(folder if folder.is_dir() else folder.parent, "rev-parse", "--show-toplevel")
        )
    except NotReachable:
        return None


def _remote(root: Path) -> tuple[str, str, str | None]:
    """The git remote a pod would clone, its URL, and the branch's upstream branch on it.

    The remote is the upstream's, else ``origin``; the branch is None where none is tracked.
    """
    try:
        upstream = _git(root, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}")
        name, branch = upstream.split("/", 1)
    except (NotReachable, ValueError):
        name, branch = "origin", None
    try:
        return name, _git(root, "remote", "get-url", name), branch
    except NotReachable:
        raise NotReachable(f"this checkout has no git remote '{name}' a pod could clone") from None


def _data_pushed(root: Path, dvc_file: Path) -> str:
    """The DVC remote holding everything ``dvc_file`` records; refuses when something is not."""
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            remote = repo.config["core"].get("remote", "the default remote")
            status = repo.status(targets=[str(dvc_file)], cloud=True)
    except Exception as exc:  # dvc raises many kinds: no remote, unreachable, bad config
        raise NotReachable(f"cannot ask the DVC remote about {dvc_file.name}: {exc}") from None
    if status:
        raise NotReachable(
            f"the data {dvc_file.name} records is not in the DVC remote '{remote}' "
            f"(`dvc push {dvc_file.relative_to(root)}` puts it there)"
        )
    return str(remote)


def resolve_local(domain: str, folder: Path, pinned: bool = True) -> tuple[DvcData, str]:
    """The repository form of a directory of this checkout, after checking a pod can read it.

    ``pinned``: at this checkout's commit (a run); otherwise at the upstream branch, so that each
    run of a schedule reads the data the branch has then.

    Raises:
        NotReachable: It is not tracked by DVC, not committed, its commit is not on the remote,
            or its data is not in the DVC remote.
    """
    key = f"data.{domain} = {folder}"
    root = _checkout_of(folder)
    if root is None:
        raise NotReachable(
            f"{key}: a directory of this machine that is in no git checkout, so no pod can read "
            "it: give the data as {repo, rev, path} (a DVC repository) or an s3:// prefix"
        )
    path = folder.resolve().relative_to(root.resolve())
    dvc_file = root / path.parent / f"{path.name}.dvc"
    if not dvc_file.is_file():
        raise NotReachable(
            f"{key}: not tracked by DVC in this checkout ({dvc_file.relative_to(root)} is "
            f"missing), so a pod cannot pull it: `dvc add {path}`, commit and `dvc push`"
        )
    relative = str(dvc_file.relative_to(root))
    if _git(root, "status", "--porcelain", "--", relative):
        raise NotReachable(
            f"{key}: {relative} has changes that are not committed: a pod reads what a commit "
            "records (commit it, `git push`, `dvc push`)"
        )
    commit = _git(root, "rev-parse", "HEAD")
    name, url, branch = _remote(root)
    if not _git(root, "branch", "-r", "--contains", commit, "--list", f"{name}/*"):
        raise NotReachable(
            f"{key}: commit {commit[:12]} is not on the git remote '{name}' ({url}) as far as "
            f"this checkout knows, so a pod cannot check it out: `git push {name}`"
        )
    try:
        remote = _data_pushed(root, dvc_file)
    except NotReachable as exc:
        raise NotReachable(f"{key}: {exc}") from None
    if pinned:
        note = f"commit {commit[:12]} on '{name}', data in DVC remote '{remote}'"
        return DvcData(repo=url, rev=commit, path=str(path)), note
    if branch is None:
        raise NotReachable(
            f"{key}: a schedule reads the data of a branch, and this checkout's branch tracks "
            f"none on '{name}': `git push -u {name} <branch>`"
        )
    note = f"branch {branch} on '{name}' (each run reads it as it is then)"
    return DvcData(repo=url, rev=branch, path=str(path)), note


def for_pods(
    params: Params, domains: list[str], pinned: bool = True
) -> tuple[Params, list[Resolved]]:
    """``params`` with every local directory of ``domains`` in the form a pod reads.

    ``pinned``: see :func:`resolve_local`.

    Raises:
        NotReachable: One cannot be read from a pod; nothing should be sent.
    """
    data = params.data
    changes: dict[str, DvcData] = {}
    resolved = []
    for domain in domains:
        where = data.location(domain)
        if not isinstance(where, Path):
            continue  # a DVC repository or an object store: pods read those as they are
        tracked = where.with_name(where.name + ".dvc").is_file()
        if where.is_absolute() and not where.exists() and not tracked:
            continue  # nothing here: a path of the pods' own file system (a mounted volume)
        form, note = resolve_local(domain, where, pinned)
        changes[domain] = form
        resolved.append(Resolved(domain, str(where), str(form), note))
    if not changes:
        return params, resolved
    return params.model_copy(update={"data": data.model_copy(update=changes)}), resolved
