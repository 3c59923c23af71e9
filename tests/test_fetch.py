"""fetch-data against a local bare git repository built from ni-sample (the real remote is GitHub)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from trainer.fetch import STAMP, fetch_data


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def remote(ni_sample: Path, tmp_path: Path) -> str:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    work = tmp_path / "src"
    shutil.copytree(ni_sample, work)
    git("init", "-q", "-b", "main", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", "-A", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "sample", cwd=work)
    git("tag", "sample-1", cwd=work)
    (work / "splits" / "default" / "test_tasks.txt").write_text("task_gone\n")  # a later, broken commit
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "broken", cwd=work)
    bare = tmp_path / "ni.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    return f"file://{bare}"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer", "fetch-data", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_fetches_the_revision_checks_it_and_stamps_it(remote: str, tmp_path: Path, ni_sample: Path) -> None:
    out = tmp_path / "data" / "ni"
    r = cli("--out", str(out), "--revision", "sample-1", "--remote", remote)
    assert r.returncode == 0, r.stderr
    assert "fetched and checked" in r.stdout and "default/test 13" in r.stdout
    assert (out / "tasks").is_dir() and not out.with_name("ni.partial").exists()
    assert (out / "splits/default/test_tasks.txt").read_bytes() == (ni_sample / "splits/default/test_tasks.txt").read_bytes()
    assert git("rev-list", "--count", "HEAD", cwd=out) == "1"  # shallow
    r = cli("--out", str(out), "--revision", "sample-1", "--remote", remote)
    assert r.returncode == 0 and "already there" in r.stdout
    (out / "splits/default/train_tasks.txt").write_text("task1393_superglue_copa_text_completion\n")
    r = cli("--out", str(out), "--revision", "sample-1", "--remote", remote)
    assert r.returncode == 2 and "split files changed" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_bad_revision_leaves_nothing_half_written(remote: str, tmp_path: Path) -> None:
    out = tmp_path / "ni"
    r = cli("--out", str(out), "--revision", "main", "--remote", remote)  # names a task without a file
    assert r.returncode == 2 and "task_gone" not in r.stdout
    assert "without a file under tasks/" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()
    got = fetch_data(out, "sample-1", remote)  # the rerun resumes in the same .partial folder
    assert got["fetched"] and (out / STAMP).is_file() and not (tmp_path / "ni.partial").exists()


def test_no_network_or_no_git_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = cli("--out", str(tmp_path / "ni"), "--remote", f"file://{tmp_path}/nowhere.git")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "git fetch failed" in r.stderr
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    from trainer.fetch import FetchError

    with pytest.raises(FetchError, match="git is not installed"):
        fetch_data(tmp_path / "ni2")


def test_pinned_revision_counts_are_checked(ni_sample: Path, tmp_path: Path) -> None:
    from ni.errors import DataError
    from trainer.fetch import verify

    with pytest.raises(DataError, match=r"13 tasks, but v2.8 has 119"):
        verify(ni_sample, "v2.8")
    assert verify(ni_sample, "anything")["default/test"]["tasks"] == 13


def test_the_pins_file_holds_the_papers_counts_and_only_real_hashes() -> None:
    import re

    from trainer.fetch import NI_REVISION, load_pins

    pin = load_pins()[NI_REVISION]
    assert {k: v["tasks"] for k, v in pin["splits"].items()} == {"default/train": 757, "default/test": 119,
                                                                "xlingual/test": 35}
    assert pin["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", pin["commit"])
    assert all(v["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", v["sha256"]) for v in pin["splits"].values())


def test_a_recorded_commit_and_split_hashes_are_checked(remote: str, tmp_path: Path) -> None:
    from ni.errors import DataError
    from trainer.fetch import FetchError

    first = fetch_data(tmp_path / "a", "sample-1", remote, pins={})
    splits = {name: dict(facts) for name, facts in first["splits"].items()}
    pins = {"sample-1": {"commit": "0" * 40, "splits": splits}}
    with pytest.raises(FetchError, match="pinned at 000000000000"):
        fetch_data(tmp_path / "b", "sample-1", remote, pins=pins)
    assert not (tmp_path / "b").exists()
    pins["sample-1"]["commit"] = first["commit"]
    splits["default/test"]["sha256"] = "f" * 64
    with pytest.raises(DataError, match=r"test_tasks.txt: sha256 .* pinned at ffffffffffff"):
        fetch_data(tmp_path / "b", "sample-1", remote, pins=pins)
    splits["default/test"]["sha256"] = first["splits"]["default/test"]["sha256"]
    got = fetch_data(tmp_path / "b", "sample-1", remote, pins=pins)
    assert got["fetched"] and got["commit"] == first["commit"] and got["splits"] == first["splits"]


def test_a_bad_pins_file_is_one_line(tmp_path: Path) -> None:
    from ni.errors import DataError
    from trainer.fetch import load_pins

    bad = tmp_path / "pins.json"
    bad.write_text('{"v2.8": {"splits": {"default/test": {"tasks": "many"}}}}')
    with pytest.raises(DataError, match=r"pins.json: field 'v2.8.splits.default/test.tasks'"):
        load_pins(bad)
