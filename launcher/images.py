"""Container images: which code an image holds, checked before a sweep is submitted; the lock file's helpers.

`make image` tags an image `<name>:<git-sha>` (`<name>:<git-sha>-dirty` when built from a dirty tree with
ALLOW_DIRTY=1) and `make push-image` keeps the revision in every reference it creates: `REGISTRY/<name>:<sha>`
for docker / pyxis / apptainer (`docker://...`) and `<name>-<sha>` for Beaker images. Before `submit` the
launcher reads the revision back out of the image the sweep's backend names and compares it with the code's
`git rev-parse HEAD`. A different revision stops the submission with a ConfigError (a job that runs stale code
is the classic lost GPU-day), unless `submit --allow-stale-image` or `TK_ALLOW_STALE_IMAGE=1` says it is meant.
An image whose reference carries no revision (`:latest`, `nvcr.io#org/tk:1`) cannot be checked: a warning says so.

    python -m launcher.images check SWEEP --backend slurm      # the same check, without submitting
    python -m launcher.images pyproject-hash --torch 2.13.0    # the hash scripts/lock.sh writes in the lock
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from launcher import backends
from launcher.backends import BACKENDS
from ni.errors import ConfigError

if TYPE_CHECKING:
    from launcher.backends.base import Backend
    from launcher.sweep import Sweep

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
ALLOW_ENV = "TK_ALLOW_STALE_IMAGE"

# `name:abc1234`, `name-abc1234` (Beaker), `name_abc1234.sif` (apptainer), each optionally `-dirty`.
_REVISION = re.compile(r"[:_-](?P<sha>[0-9a-f]{7,40})(?P<dirty>-dirty)?$")
_IMAGE_FILE_SUFFIXES = (".sif", ".sqsh", ".squashfs", ".tar")


def image_revision(ref: str) -> tuple[str, bool] | None:
    """The git revision a reference carries and whether it was built from a dirty tree; None when it has none."""
    last = ref.strip().rsplit("/", 1)[-1]
    for suffix in _IMAGE_FILE_SUFFIXES:
        last = last.removesuffix(suffix)
    if "@" in last:  # a digest pins content, not a revision
        return None
    m = _REVISION.search(last)
    if m is None:
        return None
    return m.group("sha"), m.group("dirty") is not None


def _git(repo: Path, *args: str) -> str | None:
    try:
        p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


@dataclass(frozen=True)
class CodeRevision:
    full: str
    short: str
    dirty: bool


def code_revision(repo: Path = REPO) -> CodeRevision | None:
    """HEAD of the repository the launcher runs from; None outside a git checkout."""
    full = _git(repo, "rev-parse", "--verify", "HEAD")
    if not full:
        return None
    short = _git(repo, "rev-parse", "--short", "HEAD") or full[:7]
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return CodeRevision(full, short, bool(status))


def check_image_revision(sweep: Sweep, backend: Backend, allow_stale: bool = False, repo: Path = REPO,
                         where: str = "") -> list[str]:
    """Raise ConfigError when an image the backend would run for the sweep (`Backend.images`) was built from other
    code than HEAD; return warnings."""
    allow_stale = allow_stale or os.environ.get(ALLOW_ENV, "") not in ("", "0")
    where = where or str(sweep.path)
    notes: list[str] = []
    images = backend.images(sweep)
    if not images:
        return notes
    code = code_revision(repo)
    if code is None:
        return [f"{where}: cannot check the image revision: {repo} is not a git checkout"]
    for setting, ref in images:
        rev = image_revision(ref)
        if rev is None:
            notes.append(f"{where}: {setting} '{ref}' names no git revision, so which code it runs is not "
                         f"checked (make image tags <name>:<git-sha>)")
            continue
        sha, built_dirty = rev
        if code.full.startswith(sha):
            if built_dirty:
                notes.append(f"{where}: image {ref} was built from uncommitted changes on top of {sha}")
            if code.dirty:
                notes.append(f"{where}: the working tree has uncommitted changes that image {ref} does not hold")
            continue
        if sha.isdigit() and _git(repo, "rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}") is None:
            notes.append(f"{where}: {setting} '{ref}' ends in a number, not a known git revision; not checked")
            continue
        message = (f"{where}: {setting}: image {ref} was built from {sha} but the code is {code.short} "
                   f"(git rev-parse HEAD), so the jobs would run stale code.")
        if allow_stale:
            notes.append(message.removesuffix(".") + f" (allowed by --allow-stale-image / {ALLOW_ENV})")
            continue
        raise ConfigError(message,
                          hint=f"Rebuild with `make image` (and `make push-image`), set {setting} to the tag it "
                               f"prints, or submit with --allow-stale-image (or {ALLOW_ENV}=1) if this is meant.")
    return notes


# --- the lock file -----------------------------------------------------------------------------------------


def pyproject_hash(torch_version: str, pyproject: Path = REPO / "pyproject.toml") -> str:
    """sha256 of what the lock is resolved from: the dependency lists (order-free), requires-python, torch pin."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    canon = {
        "requires-python": project.get("requires-python", ""),
        "dependencies": sorted(project.get("dependencies", [])),
        "optional-dependencies": {k: sorted(v) for k, v in project.get("optional-dependencies", {}).items()},
        "torch": torch_version,
    }
    return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: str


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> tuple[dict[str, str], dict[str, list[Pin]]]:
    """(header fields, normalized name -> pins); a name may have several pins under different markers."""
    header: dict[str, str] = {}
    pins: dict[str, list[Pin]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# ") and ": " in line and not line.startswith("#    "):
            key, _, value = line[2:].partition(": ")
            header.setdefault(key.strip(), value.strip())
            continue
        text = line.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        req, _, marker = text.partition(";")
        name, sep, version = req.partition("==")
        if not sep:
            raise ConfigError(f"{path}: '{line}' is not pinned with ==", hint="Regenerate it with scripts/lock.sh.")
        pin = Pin(_norm(name.strip()), version.strip(), marker.strip())
        pins.setdefault(pin.name, []).append(pin)
    return header, pins


def installer_torch_version(install_sh: Path = REPO / "scripts" / "install.sh") -> str:
    m = re.search(r'^TORCH_VERSION="\$\{TORCH_VERSION:-([^}]+)\}"$', install_sh.read_text(encoding="utf-8"), re.M)
    if m is None:
        raise ConfigError(f"{install_sh}: no TORCH_VERSION default")
    return m.group(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launcher.images", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser("pyproject-hash", help="the hash scripts/lock.sh writes into the lock's header")
    h.add_argument("--torch", default=None, help="torch pin (default: scripts/install.sh's TORCH_VERSION)")
    c = sub.add_parser("check", help="the image revision check `submit` runs, without submitting")
    c.add_argument("sweep", type=Path)
    c.add_argument("--backend", default="local", choices=BACKENDS)
    c.add_argument("--allow-stale-image", action="store_true")
    args = p.parse_args(argv)
    if args.command == "pyproject-hash":
        print(pyproject_hash(args.torch or installer_torch_version()))
        return 0
    from launcher.sweep import load_sweep

    sweep = load_sweep(args.sweep)
    backend = backends.get_backend(args.backend)
    for note in check_image_revision(sweep, backend, allow_stale=args.allow_stale_image):
        print(f"warning: {note}", file=sys.stderr)
    images = backend.images(sweep)
    print(f"{sweep.name}: {', '.join(ref for _, ref in images) or 'no container image'} ({args.backend}): ok")
    return 0


if __name__ == "__main__":
    from ni.cli_util import run_cli

    sys.exit(run_cli(main))
