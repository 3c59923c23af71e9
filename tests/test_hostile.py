"""Hostile input and faults, entry point by entry point: each case asserts the one-line message, the exit code, and
that nothing is left half-written or duplicated (issue 14). Add a case here whenever a new way to break a command
is found."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest
import yaml

from tests.conftest import REPO, tiny_sweep
from trainer.rundir import LOCK_FILE, PARTIAL_IDENTITY, PARTIAL_PREDICTIONS, RunDir

if TYPE_CHECKING:
    from launcher.manifest import Manifest
    from launcher.sweep import PlannedRun, Sweep


def cli(module: str, *args: str, cwd: Path = REPO, timeout: float = 600, env: dict | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> str:
    """The command failed with exit `code` and printed exactly one error line (no traceback) holding `needles`."""
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


# --- 1. kept predictions carry the identity of what they were computed from ---------------------------------


def test_partial_predictions_of_another_identity_are_discarded(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    folder = run.path / PARTIAL_PREDICTIONS
    assert run.adopt_partial("aaa") is None  # nothing kept: the folder is stamped for this pass
    (folder / "rank-0.jsonl").write_bytes(b'{"i": 0, "text": "kept"}\n')
    assert run.adopt_partial("aaa") is None and (folder / "rank-0.jsonl").is_file()  # same identity: kept
    note = run.adopt_partial("bbb")
    assert note is not None and "discarded the kept predictions" in note and "\n" not in note
    assert not (folder / "rank-0.jsonl").exists() and (folder / PARTIAL_IDENTITY).read_text().strip() == "bbb"
    (folder / PARTIAL_IDENTITY).unlink()  # kept by an older version: unknown origin, never trusted
    (folder / "rank-0.jsonl").write_bytes(b'{"i": 0, "text": "kept"}\n')
    assert "no identity recorded" in (run.adopt_partial("bbb") or "")


@pytest.mark.slow
def test_a_retry_never_uses_predictions_kept_for_other_examples(tmp_path: Path, tiny_model: Path,
                                                                embedded: Path) -> None:
    """A failed attempt's kept predictions, made for another example set, are dropped with one line: the retry's
    predictions are those of a run that never failed."""
    from tests.conftest import small_run, write_config

    runs = {}
    for name in ("a", "b"):
        cfg = small_run(tmp_path / name, tiny_model, embedded, do_train=False, **{"eval.max_new_tokens": 4})
        runs[name] = write_config(tmp_path / f"{name}.yaml", **cfg)
    assert cli("trainer", "run", "--config", str(runs["a"])).returncode == 0
    partial = tmp_path / "b" / "run" / PARTIAL_PREDICTIONS
    partial.mkdir(parents=True)
    (partial / PARTIAL_IDENTITY).write_text("0" * 64 + "\n")  # kept for another example set
    (partial / "rank-0.jsonl").write_bytes(b"".join(orjson.dumps({"i": i, "text": "WRONG"}) + b"\n" for i in range(50)))
    r = cli("trainer", "run", "--config", str(runs["b"]))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "discarded the kept predictions (made for other examples or another config)" in r.stdout
    a, b = (tmp_path / n / "run" / "predicted_examples.jsonl" for n in ("a", "b"))
    assert b"WRONG" not in b.read_bytes() and a.read_bytes() == b.read_bytes()
    assert not partial.exists()


# --- 3, 6, 7. bad sweep files: one line naming the file, the field (and line) and the allowed form ------------

BASE = "base: {model: {name_or_path: tiny}, data: {max_instances_per_task: 8}}\n"
SWEEP_CASES = [
    # names that would become paths, job names or mount lists
    ("name: ../../x\n" + BASE, ["s.yaml:1", "name", "not a safe name"]),
    ("name: /abs\n" + BASE, ["s.yaml:1", "name", "not a safe name"]),
    ("name: a/b\n" + BASE, ["s.yaml:1", "name", "not a safe name"]),
    ("name: 'x,/etc:/hostetc'\n" + BASE, ["s.yaml:1", "name", "not a safe name"]),
    ("name: x\n" + BASE + "variants:\n  - {name: '../v'}\n", ["s.yaml:4", "variants.0.name", "not a safe name"]),
    ("name: x\nbase: {name: '../r', model: {name_or_path: tiny}}\n", ["name", "not a safe name"]),
    # a key given twice silently wins today
    ("name: x\n" + BASE + "set: {optim.lr: 1.0e-3}\nset: {optim.lr: 1.0e-4}\n", ["s.yaml:4", "key 'set' given twice"]),
    ("name: x\nbase:\n  model: {name_or_path: tiny}\n  optim: {lr: 0.1}\n  optim: {epochs: 1}\n",
     ["s.yaml:5", "key 'optim' given twice (first on line 4)"]),
    # values out of range
    ("name: x\n" + BASE + "set: {optim.lr: -1}\n", ["optim.lr", "greater than 0"]),
    ("name: x\n" + BASE + "set: {optim.epochs: -2}\n", ["optim.epochs", "greater than 0"]),
    ("name: x\n" + BASE + "set: {data.max_source_length: -1}\n", ["data.max_source_length", "greater than or equal to 1"]),
    ("name: x\n" + BASE + "set: {checkpoint.every_steps: 0}\n", ["checkpoint.every_steps", "greater than or equal to 1"]),
    ("name: x\n" + BASE + "set: {eval.dense_until: 100}\n", ["eval", "dense_every >= 1"]),
    ("name: x\n" + BASE + "resources: {time: '25:99'}\n", ["s.yaml:3", "resources.time", "HH:MM:SS"]),
    ("name: x\n" + BASE + "resources: {time: abc}\n", ["resources.time", "not a wall-clock limit"]),
    ("name: x\n" + BASE + "resources: {time: '1-30:00:00'}\n", ["resources.time", "not a wall-clock limit"]),
    ("name: x\n" + BASE + "resources: {memory: lots}\n", ["resources.memory", "not an amount of memory"]),
    ("name: x\n" + BASE + "variants:\n  - {name: v, resources: {memory: '0G'}}\n", ["variant 'v'", "resources.memory"]),
    # wrong types
    ("name: x\n" + BASE + "set: {optim.lr: fast}\n", ["optim.lr", "valid number"]),
    ("name: [x]\n" + BASE, ["s.yaml:1", "name"]),
    ("- just\n- a list\n", ["expected a mapping"]),
    # a grid of a million runs is named, not expanded
    ("name: x\n" + BASE + "grid:\n" + "".join(f"  optim.k{i}: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" for i in range(6)),
     ["1,000,000 runs", "--yes"]),
]


@pytest.mark.parametrize(("text", "needles"), SWEEP_CASES, ids=[f"sweep{i}" for i in range(len(SWEEP_CASES))])
def test_bad_sweep_is_one_line(tmp_path: Path, text: str, needles: list[str]) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text(text)
    r = cli("launcher", "plan", str(sweep), "--runs-root", str(tmp_path / "runs"), timeout=60)
    one_line_error(r, *needles)
    assert not (tmp_path / "runs").exists()


def test_bad_sweep_files_are_one_line(tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1") + BASE.encode())
    one_line_error(cli("launcher", "status", str(bad), "--runs-root", runs, timeout=60), "latin1.yaml", "not UTF-8")
    one_line_error(cli("launcher", "plan", str(tmp_path), "--runs-root", runs, timeout=60), "is a directory")
    (tmp_path / "base.yaml").write_text("model: {name_or_path: tiny\n")
    (tmp_path / "s.yaml").write_text("name: x\nbase: base.yaml\n")
    one_line_error(cli("launcher", "plan", str(tmp_path / "s.yaml"), "--runs-root", runs, timeout=60),
                   "base.yaml:2", "invalid YAML")
    (tmp_path / "base.yaml").write_bytes(b"model: {name_or_path: \xff}\n")
    one_line_error(cli("launcher", "plan", str(tmp_path / "s.yaml"), "--runs-root", runs, timeout=60),
                   "base.yaml", "not UTF-8")
    assert not (tmp_path / "runs").exists()


def test_a_sweep_over_the_limit_is_expanded_with_yes(tmp_path: Path) -> None:
    from launcher.sweep import load_sweep

    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: x\n" + BASE + "grid:\n  seed: [" + ", ".join(map(str, range(1001))) + "]\n")
    r = cli("launcher", "plan", str(sweep), "--runs-root", str(tmp_path / "runs"), timeout=60)
    one_line_error(r, "1,001 runs", "more than 1,000", "--yes")
    assert len(load_sweep(sweep, max_runs=None).runs) == 1001


@pytest.mark.parametrize("command", ["submit", "status", "pull", "report", "cancel", "logs"])
@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"runs": {"r": {"jobs": "local-1"}}}', b"\xff\xfe"])
def test_corrupt_manifest_is_one_line_for_every_command(tmp_path: Path, command: str, content: bytes) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: x\n" + BASE)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "manifest.json").write_bytes(content)
    r = cli("launcher", command, str(sweep), "--runs-root", str(tmp_path / "runs"), timeout=120)
    one_line_error(r, "manifest.json", "mv ")
    assert (tmp_path / "runs" / "x" / "manifest.json").read_bytes() == content  # left as found
    assert sorted(p.name for p in (tmp_path / "runs" / "x").iterdir() if not p.name.startswith(".")) == ["manifest.json"]


# --- trainer and evaluation entry points -------------------------------------------------------------------


def test_bad_run_configs_are_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "r.yaml"
    cases = [
        (b"model: {name_or_path: tiny}\nmodel: {name_or_path: x}\n", ["r.yaml:2", "key 'model' given twice"]),
        (b"model: {name_or_path: \xff}\n", ["r.yaml", "not UTF-8"]),
        (b"model: {name_or_path: tiny}\noptim: {lr: 0}\n", ["optim.lr", "greater than 0"]),
        (b"model: {name_or_path: tiny}\nname: ../../etc\n", ["name", "not a safe name"]),
        (b"model: {name_or_path: tiny}\noptim: {epochs: many}\n", ["optim.epochs", "valid number"]),
    ]
    for content, needles in cases:
        cfg.write_bytes(content)
        one_line_error(cli("trainer", "run", "--config", str(cfg), "--dry-run", timeout=120), *needles)
    one_line_error(cli("trainer", "run", "--config", str(tmp_path), "--dry-run", timeout=120), "is a directory")


@pytest.mark.slow
def test_fp16_with_t5_is_refused_before_the_model_loads(tmp_path: Path, tiny_model: Path, embedded: Path) -> None:
    from tests.conftest import small_run, write_config

    cfg = write_config(tmp_path / "r.yaml", **small_run(tmp_path, tiny_model, embedded, precision="fp16"))
    (tiny_model / "model.safetensors").rename(tiny_model / "model.safetensors.away")  # loading weights would fail
    try:
        r = cli("trainer", "run", "--config", str(cfg), timeout=300)
    finally:
        (tiny_model / "model.safetensors.away").rename(tiny_model / "model.safetensors")
    one_line_error(r, "precision fp16", "t5")
    assert not (tmp_path / "run").exists()


def _data_with_split(tmp_path: Path, embedded: Path, lines: bytes) -> Path:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(embedded, data)
    (data / "splits" / "default" / "test_tasks.txt").write_bytes(lines)
    return data


@pytest.mark.parametrize(("lines", "needles"), [
    (b"../outside/task\n", ["test_tasks.txt:1", "not a safe name"]),
    (b"/etc/passwd\n", ["test_tasks.txt:1", "not a safe name"]),
    (b"task\xff\n", ["test_tasks.txt", "not UTF-8"]),
])
def test_split_file_lines_stay_under_tasks(tmp_path: Path, embedded: Path, lines: bytes, needles: list[str]) -> None:
    data = _data_with_split(tmp_path, embedded, lines)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "task.json").write_text("{}")
    out = tmp_path / "preds.jsonl"
    r = cli("evaluation", "baseline", "copy_demo", "--data", str(data), "--out", str(out), timeout=120)
    one_line_error(r, *needles)
    assert not out.exists()


def test_out_that_is_a_directory_is_one_line(tmp_path: Path, embedded: Path) -> None:
    (tmp_path / "out").mkdir()
    r = cli("evaluation", "baseline", "copy_demo", "--data", str(embedded), "--out", str(tmp_path / "out"), timeout=120)
    one_line_error(r, "out")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.fixture
def full_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 64 KiB tmpfs (needs root, as in CI's containers); skipped where mounting is not allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_out_on_a_full_disk_is_one_line_and_leaves_nothing(full_disk: Path, embedded: Path) -> None:
    out = full_disk / "preds.jsonl"
    r = cli("evaluation", "baseline", "copy_demo", "--data", str(embedded), "--out", str(out), timeout=120)
    one_line_error(r, "No space left on device", "ENOSPC")
    assert list(full_disk.iterdir()) == []  # no temp file left behind


def test_failure_on_a_full_disk_still_records_failed(full_disk: Path) -> None:
    """ENOSPC while checkpointing: the end state is told, the half-written checkpoint is gone."""
    run = RunDir(full_disk / "run")
    run.path.mkdir()
    run.set_status("running", attempt=1)
    half = run.checkpoint_dir(5)
    half.mkdir(parents=True)
    with pytest.raises(OSError), open(half / "weights.bin", "wb") as fh:
        fh.write(b"\0" * (1 << 20))
    run.set_status("failed", error="OSError: [Errno 28] No space left on device")
    assert run.status()["state"] == "failed" and not half.exists()


# --- 2. concurrency and liveness -----------------------------------------------------------------------------


def test_a_reused_pid_is_not_a_live_local_job() -> None:
    from launcher.backends.base import Job
    from launcher.backends.local import LocalBackend, local_job_id
    from ni.locks import process_start

    me = os.getpid()
    start = process_start(me)
    assert local_job_id(me) == f"local-{me}-{start}"
    backend = LocalBackend()
    jobs = [Job("r", f"local-{me}-{start}"), Job("r", f"local-{me}-{(start or 0) + 1}"), Job("r", f"local-{me}")]
    assert backend.status(jobs) == {jobs[0].job_id: "running", jobs[1].job_id: "unknown", jobs[2].job_id: "running"}


def test_a_run_directory_is_run_by_one_process(tmp_path: Path) -> None:
    """A second process claiming a held run directory is refused in one line naming the holder; once the holder
    dies (kill -9 included) the directory is free."""
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name_or_path": "baseline:copy_demo"}, "do_train": False,
                                   "output_dir": str(tmp_path / "run")}))
    code = ("import sys, time; from trainer.rundir import RunDir; from trainer.config import load_config;"
            "cfg = load_config(sys.argv[1]);"
            "print(RunDir.of(cfg, cfg.output_dir).claim(cfg, False), flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(cfg)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "start"
        assert RunDir(tmp_path / "run").holder() is not None
        r = cli("trainer", "run", "--config", str(cfg), timeout=120)
        one_line_error(r, "in use by pid", str(holder.pid), "trainer run")
    finally:
        holder.kill()
        holder.wait()
    assert RunDir(tmp_path / "run").holder() is None


def _small_sweep(tmp_path: Path, embedded: Path, name: str, steps: int = 2, parallel: int = 2) -> Path:
    return tiny_sweep(tmp_path / f"{name}.yaml", embedded, name, steps,
                      more=f"grid:\n  seed: [1, 2]\nbackend:\n  local: {{parallel: {parallel}}}\n")


def _attempts(run_dir: Path) -> int:
    return int(orjson.loads((run_dir / "status.json").read_bytes()).get("attempt", 0))


@pytest.mark.slow
def test_two_concurrent_submits_train_every_run_once(tmp_path: Path, embedded: Path) -> None:
    sweep, runs = _small_sweep(tmp_path, embedded, "twice"), tmp_path / "runs"
    argv = [sys.executable, "-m", "launcher", "submit", str(sweep), "--runs-root", str(runs)]
    procs = [subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "COLUMNS": "200"}) for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted("2 to submit" in o for o in outs) == [False, True], outs  # one submitted, the other found them
    assert any("waiting for pid" in o and "0 to submit" in o for o in outs), outs
    manifest = orjson.loads((runs / "twice" / "manifest.json").read_bytes())
    assert len(manifest["runs"]) == 2 and all(len(e["jobs"]) == 1 for e in manifest["runs"].values())
    for run_id in manifest["runs"]:
        assert (runs / "twice" / run_id / "DONE").is_file() and _attempts(runs / "twice" / run_id) == 1
        log = (runs / "twice" / run_id / "train_log.jsonl").read_bytes().splitlines()
        steps = [orjson.loads(line)["step"] for line in log if b'"loss"' in line]
        assert steps == [1, 2]  # trained once: no step twice


@pytest.mark.slow
def test_kill_9_of_the_launcher_never_starts_a_run_beside_its_orphan(tmp_path: Path, embedded: Path) -> None:
    """kill -9 of a local submit leaves its trainers running (their own sessions). A new submit sees them through
    their run directories (even with the manifest deleted) and starts nothing beside them; cancel stops them."""
    import signal
    import time

    sweep, runs = _small_sweep(tmp_path, embedded, "orphans", steps=400), tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "submit", str(sweep), "--runs-root", str(runs)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TK_DEBUG_STEP_DELAY": "0.2"})
    logs: list[Path] = []
    deadline = time.time() + 600
    while time.time() < deadline:
        logs = list((runs / "orphans").glob("*/train_log.jsonl")) if (runs / "orphans").is_dir() else []
        if len(logs) == 2 and all(b'"step":2' in p.read_bytes() for p in logs):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (runs / "orphans" / "manifest.json").unlink()  # and the record of their jobs is gone too
    try:
        r = cli("launcher", "submit", str(sweep), "--runs-root", str(runs), env={"COLUMNS": "200"})
        assert r.returncode == 0 and "0 to submit, 2 skipped (running)" in r.stdout, r.stdout + r.stderr
        r = cli("launcher", "status", str(sweep), "--runs-root", str(runs), env={"COLUMNS": "200"})
        assert r.stdout.count("held by pid") == 2, r.stdout
    finally:
        for p in logs:
            holder = RunDir(p.parent).holder() or {}
            if holder.get("pid"):
                os.kill(int(holder["pid"]), signal.SIGTERM)
    deadline = time.time() + 120
    while time.time() < deadline and any(RunDir(p.parent).holder() is not None for p in logs):
        time.sleep(0.2)
    assert all(_attempts(p.parent) == 1 for p in logs)  # nobody started a second attempt beside them


# --- 4, 5. secrets stay with their origin; no output over an input ------------------------------------------


class _Recorder:
    """An HTTP server on 127.0.0.1 that records each request's Authorization and answers `reply(path)`:
    (status, headers, body)."""

    def __init__(self, reply):  # type: ignore[no-untyped-def]
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.auth: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.auth.append(self.headers.get("Authorization", ""))
                status, headers, body = reply(self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_api_key_never_follows_a_redirect_to_another_origin() -> None:
    from evaluation.api_baseline import ApiError, ApiSettings, request_completion

    ok = orjson.dumps({"choices": [{"message": {"content": "fine."}}]})
    other = _Recorder(lambda path: (200, {}, ok))
    home = _Recorder(lambda path: (307, {"Location": other.url + "/v1/chat/completions"}, b"")
                     if path.startswith("/v1/") else (200, {}, ok))
    try:
        settings = ApiSettings(home.url + "/v1", "m", max_retries=0)
        with pytest.raises(ApiError, match="redirect to 127.0.0.1 not followed") as e:
            request_completion(settings, "sk-secret-xyz", "p")
        assert "sk-secret" not in str(e.value) and "\n" not in str(e.value)
        assert other.auth == [] and home.auth == ["Bearer sk-secret-xyz"]
        same = _Recorder(lambda path: (308, {"Location": "/final/chat/completions"}, b"")
                         if path.startswith("/v1/") else (200, {}, ok))
        try:  # within the origin a 307/308 is followed, with the key
            assert request_completion(ApiSettings(same.url + "/v1", "m", max_retries=0), "k", "p") == "fine."
            assert same.auth == ["Bearer k", "Bearer k"]
        finally:
            same.close()
    finally:
        other.close()
        home.close()


def test_no_command_writes_over_its_input(tmp_path: Path, embedded: Path) -> None:
    preds = tmp_path / "preds.jsonl"
    assert cli("evaluation", "baseline", "copy_demo", "--data", str(embedded), "--out", str(preds)).returncode == 0
    before = preds.read_bytes()
    r = cli("evaluation", "score", str(preds), "--out", str(preds), timeout=120)
    one_line_error(r, "--out", "would write over the input PREDICTIONS")
    r = cli("evaluation", "score", str(preds), "--out", str(tmp_path), timeout=120)
    one_line_error(r, "would write over the input PREDICTIONS")  # a folder holding it would be replaced
    r = cli("evaluation", "report", str(tmp_path), "--out", str(tmp_path), timeout=120)
    one_line_error(r, "would write over the input RUNS_DIR")
    r = cli("trainer", "encode", "--data", str(embedded), "--encoding", "instruct_input", "--out", str(embedded),
            timeout=120)
    one_line_error(r, "would write over the input --data")
    assert preds.read_bytes() == before and (embedded / "tasks").is_dir()


def test_export_of_a_run_with_corrupt_metrics_is_one_line(tmp_path: Path, embedded: Path) -> None:
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name_or_path": "baseline:copy_demo"}, "do_train": False,
                                   "data": {"root": str(embedded)}, "output_dir": str(tmp_path / "run")}))
    assert cli("trainer", "run", "--config", str(cfg), timeout=300).returncode == 0
    for content, needle in [(b"{oops", "not valid JSON"), (b"[1]", "expected {overall")]:
        (tmp_path / "run" / "metrics.json").write_bytes(content)
        r = cli("trainer", "export", str(tmp_path / "run"), "--out", str(tmp_path / "exported"), timeout=300)
        one_line_error(r, "metrics.json", needle)
        assert not (tmp_path / "exported").exists()


# --- 8. exit codes and states that agree ---------------------------------------------------------------------


def test_report_and_status_agree_on_a_dead_run(tmp_path: Path) -> None:
    """status.json says running, but the trainer died (kill -9: its lock is free) and its job is gone: both the
    launcher's status and the report call it missing."""
    from evaluation.runs import read_run
    from launcher.backends.base import Job
    from launcher.states import run_job_state
    from ni.locks import FileLock

    sweep, manifest, run, rd = _a_run_started(tmp_path, "dead")
    lock = FileLock(rd.path / LOCK_FILE, "trainer run")
    lock.acquire()
    assert read_run(rd.path, run.run_id).state == "running"  # while held: running for both
    assert manifest.state(run, None).state == "running"
    lock.release()  # the holder died
    manifest.record(run, "local", Job(run.run_id, "local-999999999-1"))
    job_state = run_job_state(manifest.jobs(run.run_id), {"local-999999999-1": "unknown"})
    assert manifest.state(run, job_state).state == "missing"
    info = read_run(rd.path, run.run_id)
    assert info.state == "missing" and any("no live process" in f for f in info.flags)


def test_submit_wait_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """--wait: 0 when every run completed, 1 when one did not, 130 when the view stopped before the end (Ctrl-C),
    saying how to come back."""
    import argparse

    from launcher import cli, logs
    from launcher.manifest import RunState
    from launcher.sweep import load_sweep

    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("name: w\n" + BASE + "grid:\n  seed: [1, 2]\n")
    sweep = load_sweep(sweep_file)
    args = argparse.Namespace(runs_root=tmp_path / "runs", interval=0.01)
    monkeypatch.setattr(logs, "summary", lambda *a, **k: 0)
    for states, code in [(["completed", "completed"], 0), (["completed", "failed"], 1), (["running", "completed"], 130)]:
        monkeypatch.setattr(cli, "sweep_states", lambda *a, states=states: [RunState(r.run_id, s)
                                                                        for r, s in zip(sweep.runs, states, strict=True)])
        assert cli._wait(sweep, args) == code
    assert "the jobs keep running. Come back with: python -m launcher logs" in capsys.readouterr().err


def test_unknown_is_not_missing_when_the_controller_does_not_answer(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """squeue fails (slurmctld down): a run SLURM may still hold is 'unknown (controller unreachable)', never
    'missing', so submit starts nothing for it, and the live view keeps waiting (unknown is not terminal)."""
    from launcher import backends
    from launcher.backends.base import BackendUnavailable, Job
    from launcher.manifest import Manifest
    from launcher.progress import TERMINAL_RUN_STATES
    from launcher.states import sweep_states
    from launcher.sweep import load_sweep

    class Down:
        def status(self, jobs: object) -> dict:
            raise BackendUnavailable("squeue: no answer from SLURM after 3 tries (Unable to contact slurm controller)")

    monkeypatch.setattr(backends, "get_backend", lambda name, **kw: Down())
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("name: out\n" + BASE + "grid:\n  seed: [1, 2]\n")
    sweep = load_sweep(sweep_file)
    manifest = Manifest(tmp_path / "runs", sweep)
    live, new = sweep.runs
    RunDir(manifest.run_dir(live)).path.mkdir(parents=True)
    RunDir(manifest.run_dir(live)).set_status("running", attempt=1)
    manifest.record(live, "slurm", Job(live.run_id, "4242"))
    states = sweep_states(sweep, manifest)
    assert [(s.state, s.detail) for s in states] == [
        ("unknown", "controller unreachable: slurm could not be asked"), ("new", "")]
    assert manifest.to_submit(states) == [new.run_id] and "unknown" not in TERMINAL_RUN_STATES


@pytest.mark.slow
@pytest.mark.slurm
def test_slurmctld_down_during_submit_starts_nothing_twice(tmp_path: Path) -> None:
    """On the real cluster: slurmctld stopped by PID while one run trains and one waits. `submit` starts nothing
    (the waiting run is 'unknown', not 'missing'), `status` says "controller unreachable"; once slurmctld is back
    every run has exactly one job."""
    import signal
    import time

    from tests.conftest import cluster_reason

    conf, sweep, runs, env, r = _submit_two_slow_runs_on_slurm(tmp_path, "outage", 200)
    assert r.returncode == 0 and "Next: python -m launcher logs" in r.stdout, r.stdout + r.stderr
    deadline = time.time() + 300
    while time.time() < deadline and not any(RunDir(p).holder() for p in (runs / "outage").glob("??????????")
                                                 if p.is_dir()):  # run ids; not sweep.lock (also 10 characters)
        time.sleep(1)
    pidfile = conf.parent / "pids" / "slurmctld.pid"
    os.kill(int(pidfile.read_text()), signal.SIGTERM)
    try:
        time.sleep(3)
        r = cli("launcher", "submit", str(sweep), "--backend", "slurm", "--runs-root", str(runs), env=env)
        assert r.returncode == 1 and "0 to submit" in r.stdout, r.stdout + r.stderr
        assert "1 run(s) not submitted: their state is unknown (controller unreachable" in r.stderr, r.stderr
        r = cli("launcher", "status", str(sweep), "--runs-root", str(runs), env=env)
        assert "unknown" in r.stdout and "controller unreachable" in r.stdout and "missing" not in r.stdout, r.stdout
    finally:
        subprocess.run(["slurmctld", "-f", str(conf)], check=True)
        deadline = time.time() + 60
        while time.time() < deadline and cluster_reason():
            time.sleep(1)
    try:
        r = cli("launcher", "status", str(sweep), "--runs-root", str(runs), env=env)
        assert r.stdout.count("running") + r.stdout.count("pending") == 2, r.stdout + r.stderr
        manifest = orjson.loads((runs / "outage" / "manifest.json").read_bytes())
        assert [len(e["jobs"]) for e in manifest["runs"].values()] == [1, 1]
    finally:
        cli("launcher", "cancel", str(sweep), "--runs-root", str(runs), env=env)


def test_labels_tell_what_happened(tmp_path: Path) -> None:
    """scancel outranks the trainer's "preempted"; a new attempt keeps nothing of how the last one ended, and the
    wall time adds up over attempts."""

    sweep, manifest, run, rd = _a_run_started(tmp_path, "lab")
    rd.set_status("preempted", step=7, signal=15, wall_seconds=10.0)
    manifest.data["runs"][run.run_id] = {"backend": "slurm", "jobs": ["1"]}
    assert manifest.state(run, "cancelled").state == "cancelled"
    assert manifest.state(run, "preempted").state == "preempted"
    rd.set_status("running", attempt=2)
    assert not {"signal", "step", "finished_at"} & set(rd.status())
    rd.set_status("completed", wall_seconds=5.5)
    status = rd.status()
    assert status["wall_seconds"] == 5.5 and status["wall_seconds_total"] == 15.5 and "signal" not in status


def test_a_slurm_time_limit_shorter_than_its_warning_is_refused(tmp_path: Path) -> None:
    """Checked against the delay the job is rendered with (--signal=USR2@signal_delay_s), default or set."""
    sweep = tmp_path / "s.yaml"
    cases = [("resources: {time: '00:01:00'}\n", ["resources.time 00:01:00", "120 s before", "at least 180 s"]),
             ("resources: {time: '00:02:30'}\n", ["resources.time 00:02:30", "120 s before", "at least 180 s"]),
             ("resources: {time: '00:05:00'}\nbackend: {slurm: {signal_delay_s: 300}}\n",
              ["resources.time 00:05:00", "300 s before", "signal_delay_s", "at least 360 s"])]
    for text, needles in cases:
        sweep.write_text("name: x\n" + BASE + text)
        for command in ("plan", "submit"):  # refused when planning already
            extra = ["--render"] if command == "plan" else []
            r = cli("launcher", command, str(sweep), "--backend", "slurm", *extra, "--runs-root", str(tmp_path / "r"))
            one_line_error(r, *needles)
    sweep.write_text("name: x\n" + BASE + "resources: {time: '00:03:00'}\n")
    r = cli("launcher", "plan", str(sweep), "--backend", "slurm", "--render", "--runs-root", str(tmp_path / "r"))
    assert r.returncode == 0 and "--signal=USR2@120" in r.stdout and "--time=3" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "r").exists()


def test_a_run_cancelled_before_it_started_is_cancelled_not_missing(tmp_path: Path) -> None:
    """SLURM keeps no record of an array task cancelled while pending; the manifest remembers what `launcher
    cancel` cancelled, so such a run is 'cancelled' (and submitted again), never 'missing'. What the run
    directory knows still counts: a run that failed before the cancel stays failed; a newer job is not cancelled."""
    from launcher.backends.base import Job
    from launcher.manifest import Manifest
    from launcher.sweep import load_sweep

    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("name: cx\n" + BASE + "grid:\n  seed: [1, 2]\n")
    sweep = load_sweep(sweep_file)
    manifest = Manifest(tmp_path / "runs", sweep)
    a, b = sweep.runs
    for run, job in ((a, "7_0"), (b, "7_1")):
        manifest.record(run, "slurm", Job(run.run_id, job))
    assert manifest.state(a, "unknown").state == "missing"  # lost: nobody said it was cancelled
    manifest.mark_cancelled(a.run_id, manifest.jobs(a.run_id))
    manifest.mark_cancelled(b.run_id, manifest.jobs(b.run_id))
    again = Manifest(tmp_path / "runs", sweep)  # kept in manifest.json
    assert [(s.state, s.detail) for s in (again.state(a, "unknown"), again.state(b, None))] == [
        ("cancelled", "cancelled before it started")] * 2
    assert again.to_submit([again.state(a, "unknown")]) == [a.run_id]
    rd = RunDir(again.run_dir(b))
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.set_status("running", attempt=1)
    rd.set_status("preempted", step=3, signal=15)  # the trainer saved on the cancel's SIGTERM
    assert again.state(b, "unknown").state == "cancelled"
    rd.set_status("failed", error="boom")  # it had failed on its own
    assert again.state(b, "unknown").state == "failed"
    again.record(b, "slurm", Job(b.run_id, "9_1"))  # submitted again: the new job was not cancelled
    assert again.state(b, "unknown").state == "failed" and again.state(b, "pending").state == "pending"


def test_scancel_that_does_not_reach_the_controller_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """`launcher cancel` during a slurmctld outage: one line and exit 2, never "cancel sent"; nothing recorded as
    cancelled. A job that has ended already is no error."""
    from launcher.backends.base import Job

    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "scancel").write_text(
        "#!/bin/sh\ncase \"$1\" in\n  old) echo 'scancel: error: Kill job error on job id old: Invalid job id "
        "specified' >&2; exit 1;;\n  *) echo \"scancel: error: Kill job error on job id $1: Unable to contact slurm "
        "controller (connect failure)\" >&2; exit 8;;\nesac\n")
    (bin_ / "scancel").chmod(0o755)
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("name: cd\n" + BASE)
    from launcher.manifest import Manifest
    from launcher.sweep import load_sweep

    sweep = load_sweep(sweep_file)
    manifest = Manifest(tmp_path / "runs", sweep)
    manifest.record(sweep.runs[0], "slurm", Job(sweep.runs[0].run_id, "4242_0"))
    env = {"PATH": f"{bin_}:{os.environ['PATH']}"}
    r = cli("launcher", "cancel", str(sweep_file), "--runs-root", str(tmp_path / "runs"), env=env, timeout=120)
    one_line_error(r, "scancel", "Unable to contact slurm controller")
    assert "cancel sent" not in r.stdout
    assert "cancelled" not in orjson.loads(manifest.path.read_bytes())["runs"][sweep.runs[0].run_id]
    manifest.data["runs"][sweep.runs[0].run_id]["jobs"] = ["old"]
    manifest.save()
    r = cli("launcher", "cancel", str(sweep_file), "--runs-root", str(tmp_path / "runs"), env=env, timeout=120)
    assert r.returncode == 0 and "cancel sent" in r.stdout, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.slurm
def test_slurmctld_down_while_following_logs(tmp_path: Path) -> None:
    """On the real cluster: slurmctld stopped by PID while one run trains and one waits, and both `logs -f` (the
    live summary) and `logs RUN -f` follow. Neither ends during the outage; the summary shows the waiting run as
    "unknown (controller unreachable)". Once slurmctld is back and the sweep is cancelled, both end (exit 0) with
    both runs cancelled -- the one that never started too -- and one job per run."""
    import signal
    import time

    from tests.conftest import cluster_reason

    conf, sweep, runs, env, r = _submit_two_slow_runs_on_slurm(tmp_path, "lgout", 2000)
    assert r.returncode == 0, r.stdout + r.stderr

    def follow(name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        out = tmp_path / f"{name}.out"
        term = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "TERM": "xterm"}  # the summary redrawn into a file
        with open(out, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "launcher", "logs", str(sweep), *args, "-f", "--interval",
                                     "1", "--runs-root", str(runs)], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                    env={**os.environ, **env, **term})
        return proc, out

    def wait_until(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.time() + timeout
        while not cond():
            assert time.time() < deadline, what
            time.sleep(1)

    def held() -> list[Path]:
        return [p for p in (runs / "lgout").glob("??????????") if p.is_dir() and RunDir(p).holder()]

    summary, summary_out = follow("summary")
    procs = [summary]
    restarted = False
    pidfile = conf.parent / "pids" / "slurmctld.pid"
    try:
        wait_until(lambda: held(), 300, "a run training")
        (training,) = held()
        one, one_out = follow("one", training.name)
        procs.append(one)
        wait_until(lambda: b"pending" in summary_out.read_bytes(), 60, "the summary showing the waiting run")
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
        wait_until(lambda: b"unknown (controller unreachable)" in summary_out.read_bytes(), 400,
                   "the summary saying the controller is unreachable")
        wait_until(lambda: b"slurm does not answer (controller unreachable); still following" in one_out.read_bytes(),
                   400, "the run's follower saying the controller is unreachable")
        assert summary.poll() is None and one.poll() is None, (summary_out.read_text(), one_out.read_text())
        subprocess.run(["slurmctld", "-f", str(conf)], check=True)
        restarted = True
        wait_until(lambda: cluster_reason() is None, 60, "slurmctld back")
        wait_until(lambda: b"slurm answers again" in one_out.read_bytes(), 300, "the follower seeing the job again")
        r = cli("launcher", "cancel", str(sweep), "--runs-root", str(runs), env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        for proc in procs:
            assert proc.wait(timeout=300) == 0
    finally:
        if not restarted:
            subprocess.run(["slurmctld", "-f", str(conf)], check=False)
            wait_until(lambda: cluster_reason() is None, 60, "slurmctld back")
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        cli("launcher", "cancel", str(sweep), "--runs-root", str(runs), env=env)
    last = summary_out.read_text(errors="replace").rsplit("lgout: 2 runs", 1)[-1]
    assert "— 2 cancelled" in last, last
    r = cli("launcher", "status", str(sweep), "--runs-root", str(runs), env=env)
    assert r.stdout.count("cancelled") >= 2 and "cancelled before it started" in r.stdout, r.stdout
    assert "missing" not in r.stdout and "unknown" not in r.stdout, r.stdout
    manifest = orjson.loads((runs / "lgout" / "manifest.json").read_bytes())
    assert [len(e["jobs"]) for e in manifest["runs"].values()] == [1, 1]


def test_every_job_of_a_run_is_kept_and_cancelled(tmp_path: Path) -> None:
    """A run submitted twice (the first job lost from view, then found running again): the manifest keeps both job
    ids, the run counts as running while any of its jobs runs (not submitted a third time), and cancel reaches both."""
    from launcher.backends.base import Job
    from launcher.manifest import Manifest
    from launcher.sweep import load_sweep

    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "squeue").write_text("#!/bin/sh\necho '5_0 RUNNING'\n")  # the older job runs; 6_0 is not known
    (bin_ / "sacct").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "scancel").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scancelled'}\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("name: two\n" + BASE)
    sweep = load_sweep(sweep_file)
    manifest = Manifest(tmp_path / "runs", sweep)
    run = sweep.runs[0]
    for job in ("5_0", "6_0"):
        manifest.record(run, "slurm", Job(run.run_id, job))
    env = {"PATH": f"{bin_}:{os.environ['PATH']}", "COLUMNS": "200"}
    runs = str(tmp_path / "runs")
    r = cli("launcher", "status", str(sweep_file), "--runs-root", runs, env=env, timeout=120)
    assert r.returncode == 0 and "running" in r.stdout, r.stdout + r.stderr
    r = cli("launcher", "submit", str(sweep_file), "--backend", "slurm", "--runs-root", runs, env=env, timeout=120)
    assert r.returncode == 0 and "0 to submit, 1 skipped (running)" in r.stdout, r.stdout + r.stderr
    r = cli("launcher", "cancel", str(sweep_file), "--runs-root", runs, env=env, timeout=120)
    assert r.returncode == 0 and (tmp_path / "scancelled").read_text().split() == ["5_0", "6_0"]
    assert orjson.loads(manifest.path.read_bytes())["runs"][run.run_id]["jobs"] == ["5_0", "6_0"]


@pytest.mark.slow
def test_a_stop_signal_while_the_model_loads_is_kept_not_fatal(tmp_path: Path, tiny_model: Path,
                                                               embedded: Path) -> None:
    """SLURM's USR2 (or a SIGTERM) arriving while the trainer is still loading: the handlers are installed before
    anything slow, so the trainer does not die of the signal's default action; it stops at its first step with a
    checkpoint, says preempted and exits 75 (requeued and resumed)."""
    from tests.conftest import small_run, write_config

    cfg = write_config(tmp_path / "r.yaml", **small_run(tmp_path, tiny_model, embedded))
    code = ("import os, signal, sys\nimport trainer.run as R\nreal = R.resolve_model_path\n"
            "def loading(*a, **k):\n    os.kill(os.getpid(), signal.SIGUSR2)  # the notice comes while loading\n"
            "    return real(*a, **k)\nR.resolve_model_path = loading\n"
            "sys.exit(R.main_run(sys.argv[1], [], False, False))\n")
    r = subprocess.run([sys.executable, "-c", code, str(cfg)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 75, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    status = orjson.loads((tmp_path / "run" / "status.json").read_bytes())
    assert status["state"] == "preempted" and status["step"] == 1 and status["signal"] == 12
    assert RunDir(tmp_path / "run").latest_checkpoint() is not None


@pytest.mark.slow
def test_enospc_while_checkpointing_ends_failed_in_one_line(full_disk: Path, tiny_model: Path, embedded: Path) -> None:
    """The real trainer, its run directory on a 64 KiB tmpfs: the first checkpoint fills the disk. One line, exit 2,
    status.json says failed (never 'running'), and no checkpoint counts as complete."""
    from tests.conftest import small_run, write_config

    cfg = small_run(full_disk, tiny_model, embedded, **{"checkpoint.every_steps": 2, "optim.max_steps": 4,
                                                        "checkpoint.save_final_model": False})
    config = write_config(full_disk.parent / "r.yaml", **cfg)
    r = cli("trainer", "run", "--config", str(config))
    one_line_error(r, "No space left on device")
    run = RunDir(full_disk / "run")
    status = run.status()
    assert status["state"] == "failed" and "No space left on device" in status["error"], status
    assert run.latest_checkpoint() is None


@pytest.mark.slow
def test_out_of_the_wrong_kind_is_one_line_for_every_command(tmp_path: Path, embedded: Path) -> None:
    """Every command that writes --out: a file output given a directory, a folder output given a file. One line
    naming --out, exit 2, and what was there is left as it was (no file replaced by a folder, no temp left)."""
    preds = tmp_path / "preds.jsonl"
    assert cli("evaluation", "baseline", "copy_demo", "--data", str(embedded), "--out", str(preds)).returncode == 0
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name_or_path": "baseline:copy_demo"}, "do_train": False,
                                   "data": {"root": str(embedded)}, "output_dir": str(tmp_path / "runs" / "r")}))
    assert cli("trainer", "run", "--config", str(cfg)).returncode == 0
    out = tmp_path / "out"
    a_dir, a_file = out / "a-dir", out / "a-file"
    a_dir.mkdir(parents=True)
    (a_dir / "keep.txt").write_text("mine")
    a_file.write_text("mine")
    run = str(tmp_path / "runs" / "r")
    cases = [
        (["trainer", "encode", "--data", str(embedded), "--encoding", "instruct_input"], a_dir, "is a directory"),
        (["evaluation", "score", str(preds), "--data", str(embedded)], a_dir, "is a directory"),
        (["evaluation", "baseline", "copy_demo", "--data", str(embedded)], a_dir, "is a directory"),
        (["evaluation", "compare", run, run], a_dir, "is a directory"),
        (["evaluation", "report", str(tmp_path / "runs")], a_file, "exists"),
        (["trainer", "export", run, "--force"], a_file, "is a file"),
        (["trainer", "tiny-model", "--data", str(embedded), "--vocab-size", "300", "--d-model", "16"], a_file,
         "is a file"),
        (["trainer", "make-data"], a_file, "already exists"),
    ]
    for (module, *args), target, needle in cases:
        r = cli(module, *args, "--out", str(target), timeout=300)
        one_line_error(r, str(target), needle)
        assert sorted(p.name for p in out.iterdir()) == ["a-dir", "a-file"], (args, list(out.iterdir()))
        assert a_file.read_text() == "mine" and [p.name for p in a_dir.iterdir()] == ["keep.txt"]


@pytest.mark.slow
def test_a_local_submit_whose_runs_all_fail_exits_1(tmp_path: Path, tiny_model: Path, embedded: Path) -> None:
    """`launcher submit` (so `make sweep`) does not exit 0 when no run completed; it names the runs. (The weights
    are damaged: the tokenizer, all that submit reads itself, is fine; every run fails loading the model.)"""
    import shutil

    model = tmp_path / "damaged"
    shutil.copytree(tiny_model, model)
    (model / "model.safetensors").write_bytes(b"not a safetensors file")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: allfail\nbase:\n  model: {{name_or_path: {model}}}\n"
                     f"  data: {{root: {embedded}, max_instances_per_task: 4}}\ngrid:\n  seed: [1, 2]\n")
    r = cli("launcher", "submit", str(sweep), "--runs-root", str(tmp_path / "runs"), env={"COLUMNS": "200"})
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "allfail: 2 run(s) did not complete" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    r = cli("launcher", "status", str(sweep), "--runs-root", str(tmp_path / "runs"), "--strict", env={"COLUMNS": "200"})
    assert r.returncode == 1 and r.stdout.count("failed") == 2, r.stdout


def _submit_two_slow_runs_on_slurm(tmp_path: Path, name: str, max_steps: int
                                   ) -> tuple[Path, Path, Path, dict[str, str], subprocess.CompletedProcess[str]]:
    """Two slowed-down tiny runs submitted to the real cluster with --no-wait (skips without a cluster):
    (slurm.conf, the sweep file, the runs root, the env used, the submit's result)."""
    from tests.conftest import cluster_reason, prebuild_tiny_model

    reason = cluster_reason()
    if reason:
        pytest.skip(reason)
    prebuild_tiny_model()
    conf = Path(os.environ["SLURM_CONF"])
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: {name}\nbase: {REPO}/trainer/configs/tiny-cpu.yaml\n"
                     f"set: {{optim.max_steps: {max_steps}, data.max_instances_per_task: 8, "
                     "data.max_instances_per_eval_task: 2, logging.progress: false, checkpoint.every_steps: 1000}\n"
                     "seeds: [1, 2]\nresources: {cpus: 2, memory: 2G, time: '00:15:00'}\n"
                     "backend: {slurm: {setup: ['export TK_DEBUG_STEP_DELAY=0.3']}}\n")
    runs = tmp_path / "runs"
    # the commands' own slurm.conf: the same cluster, but a client gives up on an absent controller after ~3 s
    # instead of ~9 s per call (MessageTimeout 10); what they report of the outage is the same
    client_conf = tmp_path / "client-slurm.conf"
    client_conf.write_text(f"{conf.read_text()}\nMessageTimeout=4\n")
    env = {"COLUMNS": "200", "TK_CACHE_DIR": str(tmp_path / "cache"), "SLURM_CONF": str(client_conf)}
    r = cli("launcher", "submit", str(sweep), "--backend", "slurm", "--runs-root", str(runs), "--no-wait", env=env)
    return conf, sweep, runs, env, r


def _a_run_started(tmp_path: Path, name: str) -> tuple[Sweep, Manifest, PlannedRun, RunDir]:
    """A one-run sweep whose run directory says running (first attempt): (sweep, manifest, run, its RunDir)."""
    from launcher.manifest import Manifest
    from launcher.sweep import load_sweep

    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(f"name: {name}\n" + BASE)
    sweep = load_sweep(sweep_file)
    manifest = Manifest(tmp_path / "runs", sweep)
    run = sweep.runs[0]
    rd = RunDir(manifest.run_dir(run))
    rd.path.mkdir(parents=True)
    rd.set_status("running", attempt=1)
    return sweep, manifest, run, rd
