"""`python -m trainer fetch-data --out DIR [--revision REV]`: Super-NaturalInstructions at a pinned revision.

A shallow fetch of one revision into DIR.partial (kept when a step fails, so a rerun picks up from the fetched
objects), checked there -- the split files exist, hold the expected number of tasks, and every task they name has
its file -- then renamed to DIR with a stamp (.tk-data.json: remote, revision, commit, sha256 of every split file).
A later call on a stamped DIR re-checks the split files against the stamp and fetches nothing.

What a revision must hold is pinned in trainer/ni-pins.json: the split task counts, and once recorded the commit
the tag resolves to and each split file's sha256 (null until someone with access to GitHub records them from the
stamp of a first fetch; this repository was written without it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson

from ni.errors import DataError, TkError
from ni.io import write_json

NI_REMOTE = "https://github.com/allenai/natural-instructions"
# The last v2 release; its default split is the paper's: 757 train / 119 English test tasks, 35 xlingual test.
NI_REVISION = "v2.8"
PINS = Path(__file__).with_name("ni-pins.json")  # per revision: commit, split task counts and sha256 (null: unknown)
STAMP = ".tk-data.json"


def load_pins(path: Path = PINS) -> dict[str, Any]:
    """{revision: {commit, splits: {name: {tasks, sha256}}}}; a bad file is one line naming it and the field."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable: {str(e).splitlines()[0]}") from None
    pins = {k: v for k, v in data.items() if not k.startswith("_")} if isinstance(data, dict) else None
    if pins is None:
        raise DataError(f"{path}: expected an object of revisions")
    for rev, pin in pins.items():
        if not isinstance(pin, dict) or not isinstance(pin.get("splits"), dict):
            raise DataError(f"{path}: field '{rev}.splits': expected an object of split names")
        for name, split in pin["splits"].items():
            if not isinstance(split, dict) or not isinstance(split.get("tasks"), int):
                raise DataError(f"{path}: field '{rev}.splits.{name}.tasks': expected a number of tasks")
    return pins


class FetchError(TkError):
    """The data could not be fetched or is not what the pinned revision promises."""


def _git(args: list[str], cwd: Path) -> str:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=3600,
                           env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except FileNotFoundError:
        raise FetchError("fetch-data: git is not installed (not on PATH)",
                         hint="Install it, for example: apt-get install git.") from None
    if r.returncode != 0:
        last = next((ln for ln in reversed(r.stderr.strip().splitlines()) if ln.strip()), f"exit {r.returncode}")
        raise FetchError(f"fetch-data: git {args[0]} failed: {last.strip()}",
                         hint="Check the network (or --remote) and run the same command again; it resumes.")
    return r.stdout.strip()


def split_files(root: Path) -> dict[str, Path]:
    return {f"{p.parent.name}/{p.stem.removesuffix('_tasks')}": p
            for p in sorted((root / "splits").glob("*/*_tasks.txt"))}


def verify(root: Path, revision: str, pins: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every split task present; for a pinned revision, its split files present with their task counts and (where
    recorded) sha256. Returns {split: {tasks, sha256}}."""
    files = split_files(root)
    if "default/test" not in files:
        raise DataError(f"{root}: no splits/default/test_tasks.txt: not a Super-NaturalInstructions checkout")
    pinned = (load_pins() if pins is None else pins).get(revision, {}).get("splits", {})
    for name in pinned:
        if name not in files:
            raise DataError(f"{root}: no splits/{name}_tasks.txt, which {revision} has")
    facts: dict[str, Any] = {}
    for name, path in files.items():
        raw = path.read_bytes()
        tasks = [t.strip() for t in raw.decode("utf-8").splitlines() if t.strip()]
        missing = [t for t in tasks if not (root / "tasks" / f"{t}.json").is_file()]
        if missing and name.split("/")[1] in ("train", "test"):
            raise DataError(f"{path}: {len(missing)} task(s) without a file under tasks/, e.g. {missing[0]}")
        sha = hashlib.sha256(raw).hexdigest()
        want = pinned.get(name, {})
        if want.get("tasks") is not None and len(tasks) != want["tasks"]:
            raise DataError(f"{path}: {len(tasks)} tasks, but {revision} has {want['tasks']}")
        if want.get("sha256") is not None and sha != want["sha256"]:
            raise DataError(f"{path}: sha256 {sha[:12]}..., but {revision} is pinned at {want['sha256'][:12]}... "
                            f"({PINS.name})")
        facts[name] = {"tasks": len(tasks), "sha256": sha}
    return facts


def check_commit(commit: str, revision: str, pins: dict[str, Any] | None = None) -> None:
    want = (load_pins() if pins is None else pins).get(revision, {}).get("commit")
    if want is not None and commit != want:
        raise FetchError(f"fetch-data: {revision} resolved to commit {commit[:12]}, but it is pinned at {want[:12]} "
                         f"({PINS.name})", hint="The tag moved or the remote is another repository: check --remote.")


def fetch_data(
    out: Path, revision: str = NI_REVISION, remote: str = NI_REMOTE, pins: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`pins`: the pinned facts per revision (default: trainer/ni-pins.json)."""
    pins = load_pins() if pins is None else pins
    out = out.resolve()
    stamp_file = out / STAMP
    if stamp_file.is_file():
        stamp = orjson.loads(stamp_file.read_bytes())
        if stamp.get("revision") != revision:
            raise FetchError(f"{out}: holds revision {stamp.get('revision')}, not {revision}",
                             hint="Give another --out, or remove that folder first.")
        if verify(out, revision, pins) != stamp["splits"]:
            raise DataError(f"{out}: split files changed since they were fetched ({STAMP})",
                            hint="Remove the folder and fetch again.")
        return {**stamp, "fetched": False}
    if out.exists():
        raise FetchError(f"{out}: exists and was not made by fetch-data (no {STAMP})",
                         hint="Give a new folder to --out.")
    if shutil.which("git") is None:
        raise FetchError("fetch-data: git is not installed (not on PATH)",
                         hint="Install it, for example: apt-get install git.")
    work = out.with_name(out.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    if not (work / ".git").is_dir():
        _git(["init", "-q"], work)
    if _git(["remote"], work) != "origin":
        _git(["remote", "add", "origin", remote], work)
    else:
        _git(["remote", "set-url", "origin", remote], work)
    _git(["fetch", "--depth", "1", "--no-tags", "origin", revision], work)
    _git(["-c", "advice.detachedHead=false", "checkout", "-q", "--force", "FETCH_HEAD"], work)
    commit = _git(["rev-parse", "HEAD"], work)
    check_commit(commit, revision, pins)
    stamp = {"remote": remote, "revision": revision, "commit": commit, "splits": verify(work, revision, pins)}
    write_json(work / STAMP, stamp)
    os.replace(work, out)
    return {**stamp, "fetched": True}
