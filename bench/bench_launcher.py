"""Launcher throughput: expand + render a 1,000-run sweep, and (with a SLURM cluster) submit a 100-run sweep.

    python bench/bench_launcher.py                     # expansion + rendering (local, SLURM and Beaker artifacts)
    SLURM_CONF=... python bench/bench_launcher.py --submit   # also submit 100 tiny runs as job arrays, then cancel

Targets: expansion + rendering under 5 s; one `sbatch` per resource group for the submission; Beaker's rendering
within 3x of SLURM's per run. Beaker's rendering before the memoized config YAML, the per-class spec fields and
orjson (`old`) is timed in the same run, and both must give the same files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401 -- puts this checkout on sys.path
import yaml

from launcher.manifest import Manifest
from launcher.sweep import load_sweep

SWEEP = """\
name: bench{n}
base: {{model: {{name_or_path: tiny}}, data: {{max_instances_per_task: 4}}, optim: {{max_steps: 1}},
        eval: {{max_new_tokens: 2}}}}
grid:
  optim.lr: [{lrs}]
  data.train_encoding: [instruct_input, pos_2_input, instruct_pos_2_input, instruct_pos_2_neg_2_input, tk_instruct]
{extra}
resources: {{gpus: 0, cpus: 1, memory: 1G, time: "00:10:00"}}
backend:
  beaker: {{workspace: ai2/bench, clusters: [ai2/any], image: tk-lab-trainer}}
"""


def sweep_file(tmp: Path, n_lr: int, extra: str, n: int) -> Path:
    p = tmp / f"bench{n}.yaml"
    p.write_text(SWEEP.format(n=n, lrs=", ".join(f"{(i + 1) * 1e-5:.1e}" for i in range(n_lr)), extra=extra))
    return p


def best_render(fn: Any) -> tuple[Any, float]:
    best, out = float("inf"), None
    for _ in range(3):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return out, best


def old_beaker_render(sweep: Any, specs: Any) -> dict[str, str]:
    """Beaker's rendering as it was: the config by `TrainConfig.to_yaml()`, the spec by beaker-py and `json`."""
    from launcher.backends import beaker

    backend = beaker.BeakerBackend()
    saved = beaker.config_yaml
    beaker.config_yaml = lambda data: yaml.safe_dump(data, sort_keys=False)  # type: ignore[assignment]
    try:
        return {f"{rs.run.run_id}.beaker.json": json.dumps(backend.build_spec(sweep, rs).to_json(), sort_keys=True,
                                                           indent=2) + "\n" for rs in specs}
    finally:
        beaker.config_yaml = saved  # type: ignore[assignment]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--submit", action="store_true", help="also submit 100 runs to the SLURM cluster of SLURM_CONF")
    args = ap.parse_args()
    from launcher.backends import get_backend

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        path = sweep_file(tmp, 20, "  seed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", 1000)
        t0 = time.perf_counter()
        sweep = load_sweep(path)
        t1 = time.perf_counter()
        manifest = Manifest(tmp / "runs", sweep)
        specs = [manifest.spec(r) for r in sweep.runs]
        sizes = {}
        for name in ("local", "slurm", "beaker"):
            t = time.perf_counter()
            artifacts = get_backend(name).render(sweep, specs)
            sizes[name] = (len(artifacts), time.perf_counter() - t)
        t2 = time.perf_counter()
        print(f"{len(sweep.runs)} runs: expansion {t1 - t0:.2f} s, rendering {t2 - t1:.2f} s "
              f"(target < 5 s in all: {'ok' if t2 - t0 < 5 else 'MISSED'})")
        for name, (count, secs) in sizes.items():
            print(f"  {name:7} {count:5d} artifacts in {secs:.2f} s ({secs / len(specs) * 1000:.3f} ms per run)")
        from launcher.backends import beaker

        def cold_beaker() -> dict[str, str]:
            beaker._yaml_blocks.clear()  # no memo from an earlier call: each timed render starts cold
            return get_backend("beaker").render(sweep, specs)

        new, t_new = best_render(cold_beaker)
        old, t_old = best_render(lambda: old_beaker_render(sweep, specs))
        _, t_slurm = best_render(lambda: get_backend("slurm").render(sweep, specs))
        if new != old:
            print("MISMATCH: Beaker specs differ between the old and the new rendering", file=sys.stderr)
            return 1
        n = len(specs)
        print(f"per run, best of 3 (CPU ms): SLURM {t_slurm / n * 1e3:.3f}, Beaker {t_new / n * 1e3:.3f} "
              f"({t_new / t_slurm:.1f}x SLURM, target <= 3x), Beaker before {t_old / n * 1e3:.3f} "
              f"({t_old / t_new:.1f}x slower; identical specs)")

        if args.submit:
            path = sweep_file(tmp, 20, "", 100)
            sweep = load_sweep(path)
            manifest = Manifest(tmp / "runs", sweep)
            specs = [manifest.write_launch_config(r) for r in sweep.runs]
            groups = len({r.resource_key() for r in sweep.runs})
            backend = get_backend("slurm")
            t = time.perf_counter()
            jobs = backend.submit(sweep, specs)
            secs = time.perf_counter() - t
            arrays = {j.job_id.split("_")[0] for j in jobs}
            print(f"submitted {len(jobs)} runs in {secs:.2f} s as {len(arrays)} sbatch call(s) "
                  f"for {groups} resource group(s)")
            backend.cancel(jobs)
            subprocess.run(["scancel", *sorted(arrays)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
