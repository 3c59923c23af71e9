"""Real data at full scale: loading, cold encoding and a rank's warm start, old path vs new, in one run.

    python bench/bench_data.py [--data ../shared/ni-sample] [--scale 1.0] [--skip-old-encode]

Builds a replica of Super-NaturalInstructions' default track from the real task files of ni-sample in a temp dir
(deleted after): 757 train + 119 test tasks, each with 3,160 x SCALE instances (the real repository averages
3,160 per task: 5.1 M instances in 1,616 tasks, 2.5 GB; the 740 tasks outside the default split are never read, so
they are not written). The train split is loaded with 100 instances per task (75,700), encoded with
instruct_pos_2_input, max source 1024, and every measurement runs in a fresh process:

- load: the split's instances, vs the floor (orjson-parse every file of the split, keep nothing);
- cold encode: a missing cache entry built (the old path: JSON lists; the new: a memory-mapped int32 table);
- warm start: a rank with a populated cache until its data is ready to batch (lengths, labels, batches);
  the old path loaded the split and re-hashed every file on a hit, the new one stats the files and maps the entry;
- private RSS: the rank's anonymous memory (not shareable) after the warm start, over its value before.

Seconds are the process's CPU seconds (user + sys): on a shared machine, wall time measures the neighbours; the
warm start also prints its wall time. Peak RSS is the process's VmHWM.

The "old" columns reproduce the loader and cache of commit 69e63b8 in this file (whole-file Instances,
sha256 of every file on every start, JSON cache) so both sides run on the same machine in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import NI_SAMPLE

TRAIN_TASKS, TEST_TASKS, PER_TASK = 757, 119, 3160
ENCODING, MAX_SOURCE, MAX_TARGET, CAP, SEED = "instruct_pos_2_input", 1024, 128, 100, 42


# -- the replica ------------------------------------------------------------------------------------------------

def build_replica(sample: Path, out: Path, scale: float) -> dict[str, Any]:
    """Real task files, each grown to PER_TASK x scale instances by repeating its own (ids made unique)."""
    import orjson

    sources = sorted((sample / "tasks").glob("*.json"))
    per_task = max(CAP + 1, round(PER_TASK * scale))
    (out / "tasks").mkdir(parents=True)
    names = []
    total_bytes = 0
    for k in range(TRAIN_TASKS + TEST_TASKS):
        src = sources[k % len(sources)]
        raw = orjson.loads(src.read_bytes())
        pool = raw["Instances"]
        raw["Instances"] = [dict(pool[i % len(pool)], id=f"r{k}-{i}") for i in range(per_task)]
        name = f"task{10000 + k}_{src.stem.split('_', 1)[1]}"
        data = orjson.dumps(raw)
        (out / "tasks" / f"{name}.json").write_bytes(data)
        total_bytes += len(data)
        names.append(name)
    (out / "splits" / "default").mkdir(parents=True)
    (out / "splits" / "default" / "train_tasks.txt").write_text("\n".join(names[:TRAIN_TASKS]) + "\n")
    (out / "splits" / "default" / "test_tasks.txt").write_text("\n".join(names[TRAIN_TASKS:]) + "\n")
    return {"tasks": len(names), "instances_per_task": per_task, "bytes": total_bytes}


# -- measurements (each in its own process) ---------------------------------------------------------------------

def rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    """VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def train_files(root: Path) -> list[Path]:
    names = (root / "splits" / "default" / "train_tasks.txt").read_text().split()
    return [root / "tasks" / f"{n}.json" for n in names]


def old_load(root: Path) -> Any:
    """69e63b8: every instance of every file becomes an Instance, then the sample is selected."""
    from ni.data import SplitData, parse_task, select_instances

    tasks = [parse_task(p) for p in train_files(root)]
    return SplitData(root, "default", "train", tasks, [select_instances(t, "train", CAP, SEED) for t in tasks])


def old_fingerprint(root: Path) -> str:
    h = hashlib.sha256()
    for p in train_files(root):
        h.update(p.stem.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def tokenizer(path: str) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(path)


def ready_to_batch(enc: Any) -> int:
    from trainer.dataset import epoch_batches, pick_labels, source_lengths

    labels = pick_labels(enc, SEED, 0)
    batches = epoch_batches(source_lengths(enc), 8, SEED, 0, True, 8)
    return len(batches) + len(labels)


def child(mode: str, root: Path, tok_path: str, cache: Path) -> dict[str, Any]:
    os.environ["TK_CACHE_DIR"] = str(cache)
    out: dict[str, Any] = {}
    if mode == "floor":
        import orjson

        t0, c0 = time.perf_counter(), cpu()
        n = sum(len(orjson.loads(p.read_bytes())["Instances"]) for p in train_files(root))
        out.update(seconds=cpu() - c0, wall=time.perf_counter() - t0, instances_parsed=n)
    elif mode in ("load-old", "load-new"):
        from ni.data import load_split

        t0, c0 = time.perf_counter(), cpu()
        data = old_load(root) if mode == "load-old" else load_split(root, "default", "train", CAP, SEED)
        assert data is not None
        out.update(seconds=cpu() - c0, wall=time.perf_counter() - t0, instances=len(data),
                   ids=hashlib.sha256("\n".join(i.id for _, i in data).encode()).hexdigest())
    elif mode in ("cold-old", "warm-old"):
        import orjson

        from trainer.dataset import Encoded, encode_split

        tok = tokenizer(tok_path)
        base = rss_anon_mb()
        t0, c0 = time.perf_counter(), cpu()
        data = old_load(root)  # the old path loads and re-hashes on a hit too
        path = cache / f"old-{old_fingerprint(root)[:16]}.json"
        if mode == "cold-old":
            enc = encode_split(data, ENCODING, tok, MAX_SOURCE, MAX_TARGET, SEED)
            plain = {"ids": list(enc.ids), "tasks": list(enc.tasks), "input_ids": list(enc.input_ids),
                     "labels": list(enc.labels)}
            path.write_bytes(orjson.dumps(plain))
        else:
            enc = Encoded(**orjson.loads(path.read_bytes()))
        n = ready_to_batch(enc)
        out.update(seconds=cpu() - c0, wall=time.perf_counter() - t0, private_mb=rss_anon_mb() - base, n=n, peak_mb=peak_mb(),
                   tokens=sum(len(x) for x in enc.input_ids), digest=digest(enc))
    elif mode in ("cold-new", "warm-new"):
        from ni.data import SplitRef
        from trainer.dataset import encode_split

        tok = tokenizer(tok_path)
        base = rss_anon_mb()
        t0, c0 = time.perf_counter(), cpu()
        enc = encode_split(SplitRef(root, "default", "train", CAP, SEED), ENCODING, tok, MAX_SOURCE, MAX_TARGET,
                           SEED, cache_key={})
        n = ready_to_batch(enc)
        out.update(seconds=cpu() - c0, wall=time.perf_counter() - t0, private_mb=rss_anon_mb() - base, n=n, peak_mb=peak_mb(),
                   tokens=sum(enc.input_ids.lengths()), digest=digest(enc))  # type: ignore[attr-defined]
    out.setdefault("peak_mb", peak_mb())
    return out


def digest(enc: Any) -> str:
    """Of everything a batch is made of (computed after the measurements)."""
    import orjson

    h = hashlib.sha256()
    for i in range(len(enc.ids)):
        h.update(orjson.dumps([enc.ids[i], enc.tasks[i], enc.input_ids[i], enc.labels[i]]))
    return h.hexdigest()


def run_child(mode: str, root: Path, tok: str, cache: Path) -> dict[str, Any]:
    r = subprocess.run([sys.executable, __file__, "--child", mode, "--root", str(root), "--tok", tok,
                        "--cache", str(cache)], capture_output=True, text=True, env={**os.environ,
                        "TOKENIZERS_PARALLELISM": "false"})
    if r.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(NI_SAMPLE))
    ap.add_argument("--scale", type=float, default=1.0, help="instances per task, as a fraction of the real 3,160")
    ap.add_argument("--skip-old-encode", action="store_true", help="skip the old cold encode (minutes at scale 1)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--tok", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, Path(a.root), a.tok, Path(a.cache))))
        return 0
    if not Path(a.data, "tasks").is_dir():
        print(f"skip: no data root at {a.data}")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        t = Path(tmp)
        t0 = time.perf_counter()
        info = build_replica(Path(a.data), t / "ni", a.scale)
        from trainer.tiny import load_all_tasks, task_texts, train_tokenizer

        random.seed(0)
        train_tokenizer(task_texts(load_all_tasks(a.data)), vocab_size=8000).save_pretrained(t / "tok")
        print(f"replica: {info['tasks']} task files ({TRAIN_TASKS} train + {TEST_TASKS} test), "
              f"{info['instances_per_task']} instances each, {info['bytes'] / 1e9:.2f} GB, "
              f"built in {time.perf_counter() - t0:.0f}s (scale {a.scale})")
        root, tok = t / "ni", str(t / "tok")
        r: dict[str, dict[str, Any]] = {}
        for mode in ("floor", "load-old", "load-new", "cold-new", "warm-new", "warm-new"):
            r[mode] = run_child(mode, root, tok, t / "cache")
        if not a.skip_old_encode:
            r["cold-old"] = run_child("cold-old", root, tok, t / "cache")
            r["warm-old"] = run_child("warm-old", root, tok, t / "cache")
        if r["load-old"]["ids"] != r["load-new"]["ids"]:
            print("FAIL: the new loader kept other instances than the old")
            return 1
        if len({r[m]["digest"] for m in ("cold-new", "warm-new", "cold-old", "warm-old") if m in r}) != 1:
            print("FAIL: the encoded sets differ between the old and new paths")
            return 1
        entry = next(p for p in (t / "cache").iterdir() if p.is_dir())
        size = sum(f.stat().st_size for f in entry.iterdir()) / 1e6
        fl = r["floor"]
        print(f"train split: {r['load-new']['instances']:,} instances kept of {fl['instances_parsed']:,} "
              f"(max {CAP} per task); {r['warm-new']['tokens']:,} source tokens; cache entry {size:.0f} MB")
        print()
        print("| step | old | new | floor / target |")
        print("|---|---|---|---|")
        lo, ln = r["load-old"], r["load-new"]
        print(f"| load train split: seconds | {lo['seconds']:.1f} ({lo['seconds'] / fl['seconds']:.1f}x floor) | "
              f"{ln['seconds']:.1f} ({ln['seconds'] / fl['seconds']:.2f}x floor) | {fl['seconds']:.1f} (orjson parse) |")
        print(f"| load train split: peak RSS MB | {lo['peak_mb']:.0f} ({lo['peak_mb'] / fl['peak_mb']:.1f}x floor) | "
              f"{ln['peak_mb']:.0f} ({ln['peak_mb'] / fl['peak_mb']:.2f}x floor) | {fl['peak_mb']:.0f} (orjson parse) |")
        co, cn = r.get("cold-old"), r["cold-new"]
        print(f"| cold encode (load + encode + write): seconds | {co['seconds']:.1f} | {cn['seconds']:.1f} | |"
              if co else f"| cold encode (load + encode + write): seconds | (skipped) | {cn['seconds']:.1f} | |")
        wo, wn = r.get("warm-old"), r["warm-new"]
        if wo:
            print(f"| warm start of a rank: seconds | {wo['seconds']:.1f} | {wn['seconds']:.2f} | < 2 |")
            print(f"| warm start of a rank: wall seconds | {wo['wall']:.1f} | {wn['wall']:.2f} | |")
            print(f"| warm start: private (anon) RSS MB | {wo['private_mb']:.0f} | {wn['private_mb']:.0f} | < 200 |")
            print(f"| warm start: peak RSS of the process MB | {wo['peak_mb']:.0f} | {wn['peak_mb']:.0f} | |")
        else:
            print(f"| warm start of a rank: seconds | (skipped) | {wn['seconds']:.2f} | < 2 |")
            print(f"| warm start: private (anon) RSS MB | (skipped) | {wn['private_mb']:.0f} | < 200 |")
        shutil.rmtree(t / "cache", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
