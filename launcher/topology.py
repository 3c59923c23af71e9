"""One launch for every backend: a run's topology (nodes x ranks per node) as the command that starts it.

World size 1 is the trainer itself (`python -m trainer run --config X`). Anything larger is the trainer under
`torch.distributed.run`, one agent per node, each starting its node's ranks, meeting at a rendezvous the backend
supplies:

- SLURM: the first node of the job (its NodeAddr) -- or localhost on one node -- and a port derived from the job
  id in 20000-60000, as submitit's `TorchDistributedEnvironment` does, so every node of a job computes the same one;
- Beaker: the leader replica's hostname and a port drawn from the run id in the same range (fixed in the spec, so
  all replicas agree; different runs sharing a host rarely collide);
- local: localhost and a free port; several nodes are several agents on this machine with different node ranks.

The agents forward SIGTERM and SIGUSR2 (SLURM's notice before a time limit) to the ranks and give them
`SHUTDOWN_GRACE_S` to write their checkpoint before SIGKILL. An agent stopped by a signal exits 1 (torch's
convention) while each rank exits 75 with its state saved; the run directory's status.json says "preempted".
"""

from __future__ import annotations

import random
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launcher.sweep import Resources

PORT_RANGE = (20000, 60000)
SHUTDOWN_GRACE_S = 120  # seconds the ranks get to checkpoint after a forwarded signal
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2"


@dataclass(frozen=True)
class Topology:
    nodes: int = 1
    ranks_per_node: int = 1

    @classmethod
    def of(cls, resources: Resources) -> Topology:
        return cls(resources.nodes, resources.ranks_per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class Rendezvous:
    host: str
    port: int


def trainer_command(config_path: str | Path, python: str | None = None) -> list[str]:
    """The argv of one trainer process: no shell, so every value reaches it as one literal argument."""
    return [python or sys.executable, "-m", "trainer", "run", "--config", str(config_path)]


def launch_argv(topology: Topology, config_path: str | Path, python: str | None = None, node_rank: int = 0,
                rendezvous: Rendezvous | None = None, grace_s: int = SHUTDOWN_GRACE_S) -> list[str]:
    """What one node runs: the trainer, or a `torch.distributed.run` agent starting this node's ranks."""
    trainer = trainer_command(config_path, python)
    if not topology.distributed:
        return trainer
    if rendezvous is None:
        raise ValueError(f"world size {topology.world_size} needs a rendezvous (host and port)")
    if not 0 <= node_rank < topology.nodes:
        raise ValueError(f"node rank {node_rank} outside 0..{topology.nodes - 1}")
    return [trainer[0], "-m", "torch.distributed.run", f"--nnodes={topology.nodes}", f"--node_rank={node_rank}",
            f"--nproc_per_node={topology.ranks_per_node}", f"--master_addr={rendezvous.host}",
            f"--master_port={rendezvous.port}", f"--signals_to_handle={FORWARDED_SIGNALS}",
            f"--shutdown_timeout={grace_s}", *trainer[1:]]


def port_from(key: str) -> int:
    """A port in PORT_RANGE that every node computing it from the same key (a job id, a run id) agrees on."""
    return random.Random(key).randint(*PORT_RANGE)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS's pick), for a rendezvous on this machine."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
