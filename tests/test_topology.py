"""launcher.topology: one launch for every backend. Units, and the local backend starting real gloo ranks on CPU:
`gpus: 2` trains as world size 2, and `nodes: 2` as two torch.distributed.run agents on this machine."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.backends.base import RunSpec
from launcher.backends.local import LocalBackend, node_gpus
from launcher.manifest import Manifest
from launcher.sweep import Resources, load_sweep
from launcher.topology import (
    FORWARDED_SIGNALS,
    PORT_RANGE,
    Rendezvous,
    Topology,
    free_port,
    launch_argv,
    port_from,
    trainer_command,
)
from tests.conftest import REPO


def test_world_size_one_is_the_trainer_itself() -> None:
    assert launch_argv(Topology(1, 1), "/r/launch.yaml", python="/py") == trainer_command("/r/launch.yaml", "/py")
    assert Topology.of(Resources()).world_size == 1 and not Topology.of(Resources()).distributed


@pytest.mark.parametrize(("res", "nodes", "ranks"), [({"gpus": 8}, 1, 8), ({"gpus": 8, "nodes": 2}, 2, 8),
                                                     ({"procs_per_node": 2, "nodes": 2}, 2, 2),
                                                     ({"gpus": 4, "procs_per_node": 1}, 1, 1)])
def test_resources_to_topology(res: dict, nodes: int, ranks: int) -> None:
    topo = Topology.of(Resources(**res))
    assert (topo.nodes, topo.ranks_per_node) == (nodes, ranks)
    argv = launch_argv(topo, "/r/l.yaml", python="/py", node_rank=nodes - 1, rendezvous=Rendezvous("h", 2))
    if topo.distributed:
        assert argv[:3] == ["/py", "-m", "torch.distributed.run"]
        assert f"--nnodes={nodes}" in argv and f"--nproc_per_node={ranks}" in argv
        assert f"--node_rank={nodes - 1}" in argv and "--master_addr=h" in argv and "--master_port=2" in argv
        assert f"--signals_to_handle={FORWARDED_SIGNALS}" in argv and "SIGUSR2" in FORWARDED_SIGNALS
        assert argv[-5:] == ["-m", "trainer", "run", "--config", "/r/l.yaml"]


def test_distributed_launch_needs_a_rendezvous_and_a_valid_node_rank() -> None:
    with pytest.raises(ValueError, match="rendezvous"):
        launch_argv(Topology(1, 2), "x")
    with pytest.raises(ValueError, match="node rank 2"):
        launch_argv(Topology(2, 1), "x", node_rank=2, rendezvous=Rendezvous("h", 1))


def test_ports() -> None:
    # the same port submitit's TorchDistributedEnvironment derives from a job id, identical on every node
    assert port_from("4242_3") == random.Random("4242_3").randint(20000, 60000) == port_from("4242_3")
    assert PORT_RANGE == (20000, 60000)
    assert len({port_from(str(i)) for i in range(50)}) > 40
    assert 0 < free_port() < 65536


def _specs(tmp: Path, text: str) -> tuple[object, list[RunSpec]]:
    path = tmp / "s.yaml"
    path.write_text(text)
    sweep = load_sweep(path)
    root = tmp / "runs"
    return sweep, [Manifest(root, sweep).spec(r) for r in sweep.runs]


def test_local_render_one_agent_per_node(tmp_path: Path) -> None:
    sweep, specs = _specs(tmp_path, "name: t\nbase: {model: {name_or_path: tiny}}\nresources: {gpus: 2, nodes: 3}\n")
    (text,) = LocalBackend().render(sweep, specs).values()  # type: ignore[arg-type]
    agents = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(agents) == 3
    assert all("--nnodes=3" in a and "--nproc_per_node=2" in a and f"--node_rank={i}" in a
               for i, a in enumerate(agents))
    assert node_gpus(["0", "1", "2", "3", "4", "5"], Topology(3, 2), 1) == ["2", "3"]


TINY = """base:
  model: {name_or_path: tiny}
  data: {root: null, max_instances_per_task: 8, max_instances_per_eval_task: 3, max_source_length: 96}
  optim: {max_steps: 4, per_device_batch_size: 2}
  eval: {max_new_tokens: 4, batch_size: 4}
  checkpoint: {every_steps: 2}
  logging: {progress: false, every_steps: 1}
"""


def _submit_local(tmp: Path, name: str, resources: str) -> tuple[Path, str]:
    sweep = tmp / f"{name}.yaml"
    sweep.write_text(f"name: {name}\n{TINY}resources: {resources}\n")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "launcher", "submit", str(sweep), "--runs-root", str(tmp / "runs")],
                       cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "200"})
    print(f"{name}: {time.time() - t0:.0f}s")
    (run,) = load_sweep(sweep).runs
    run_dir = tmp / "runs" / name / run.run_id
    log = (run_dir / "launcher.log").read_text(errors="replace")[-3000:] if (run_dir / "launcher.log").is_file() else ""
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + log
    return run_dir, log


def _assert_one_run_of_world_size(run_dir: Path, world_size: int, log: str) -> None:
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed" and status["world_size"] == world_size, (status, log)
    rows = (run_dir / "predicted_examples.jsonl").read_text().splitlines()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(rows) == metrics["num_examples"] > 0 and (run_dir / "DONE").is_file()
    assert len({json.loads(r)["id"] for r in rows}) == len(rows)  # one complete file, no rank's duplicates


@pytest.mark.slow
def test_local_two_gpus_on_cpu_train_as_world_size_two(tmp_path: Path, embedded: Path) -> None:
    """No GPUs here: `gpus: 2` still starts 2 ranks (gloo on CPU), as it would start 2 on a GPU machine."""
    run_dir, log = _submit_local(tmp_path, "g2", '{gpus: 2, cpus: 1, memory: 2G, time: "00:10:00"}')
    _assert_one_run_of_world_size(run_dir, 2, log)


@pytest.mark.slow
def test_local_two_nodes_are_two_agents_of_one_run(tmp_path: Path, embedded: Path) -> None:
    """nodes: 2 x procs_per_node: 1 locally: two torch.distributed.run agents (node ranks 0 and 1) on localhost."""
    run_dir, log = _submit_local(tmp_path, "n2", '{nodes: 2, procs_per_node: 1, cpus: 1, memory: 2G, time: "00:10:00"}')
    _assert_one_run_of_world_size(run_dir, 2, log)
