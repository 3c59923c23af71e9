"""fetch-data against a local bare git repository built from ni-sample (the real remote is GitHub)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.fetch import STAMP, fetch_data

REPO = Path(__file__).resolve().parents[1]


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
