"""`python -m trainer export RUN_DIR --out DIR [--push-to-hub REPO]`: a completed run as a standard model folder.

DIR is what `save_pretrained` writes (config, weights, tokenizer) plus `README.md`, a model card with the run's
config (YAML), data root / track / split, encodings and its metrics table (from `metrics.json`, copied too), so
`AutoModelForSeq2SeqLM.from_pretrained(DIR)` loads it. The weights come from `RUN_DIR/model`; a run that kept no
final model falls back to its newest complete checkpoint (accelerate's `model.safetensors` on the base model's
config); a predict-only run exports the model it evaluated. DIR is filled in a temp directory beside it and
renamed into place, so a failure leaves nothing half-written.

`--push-to-hub REPO` uploads DIR with `huggingface_hub` (`create_repo` + `upload_folder`); the token comes from
the environment (`HF_TOKEN`) and is passed to the client only: it is never written anywhere.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import yaml

from evaluation.scoring import split_group_key
from ni.errors import ConfigError, TkError
from ni.io import atomic_dir
from ni.run_layout import CONFIG_FILE, METRICS_FILE
from ni.synthetic import ensure_default_data
from trainer.config import RunConfig
from trainer.hf import load_model, load_tokenizer, resolve_model_path
from trainer.rundir import RunDir

CARD = "README.md"


class HubPushError(TkError):
    """An upload to the Hugging Face Hub failed (network, auth, offline); the local export is complete."""


def check_run(run_dir: Path) -> tuple[RunDir, RunConfig]:
    """A completed run directory, or a one-line error."""
    run = RunDir(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    try:
        cfg = run.stored_config()
    except TkError as e:
        raise ConfigError(f"{run_dir}: not a run directory ({e})") from None
    if cfg is None:
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)",
                          hint="Give a directory written by `python -m trainer run` (runs/<sweep>/<run-id>).")
    run = RunDir.of(cfg, run_dir)  # its checkpoints are where its config put them
    if not run.done():
        state = run.status().get("state", "unknown")
        raise ConfigError(f"{run_dir}: the run is not completed (state: {state}; no DONE)",
                          hint="Finish it first (python -m launcher submit ... resumes it).")
    if not (run_dir / METRICS_FILE).is_file() and cfg.do_predict:
        raise ConfigError(f"{run_dir}: metrics.json is missing although the run is marked done")
    read_metrics(run_dir)  # a corrupt one is refused before any weights load
    return run, cfg


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """RUN/metrics.json ({"overall": {...}, ...}), None when absent; one line when unreadable or of another shape."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None
    hint = "Score the run again: python -m evaluation score RUN/predicted_examples.jsonl --out RUN/metrics.json."
    try:
        metrics = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})", hint=hint) from None
    if not (isinstance(metrics, dict) and isinstance(metrics.get("overall"), dict)
            and isinstance(metrics.get("per_category", {}), dict)):
        raise ConfigError(f"{path}: expected {{overall: {{metric: value}}, per_category: {{...}}}}", hint=hint)
    return metrics


def model_source(run: RunDir, cfg: RunConfig) -> tuple[str, Path | None]:
    """(where the weights come from, a checkpoint dir if they come from one)."""
    final = run.path / "model"
    if (final / "config.json").is_file():
        return str(final), None
    if cfg.do_train:
        latest = run.latest_checkpoint()
        if latest is None or not (latest / "model.safetensors").is_file():
            raise ConfigError(f"{run.path}: no saved model (model/) and no complete checkpoint with model.safetensors",
                              hint="Train with checkpoint.save_final_model: true.")
        return _base_model_path(cfg), latest
    return _base_model_path(cfg), None  # predict-only: the evaluated model is the configured one


def _base_model_path(cfg: RunConfig) -> str:
    return resolve_model_path(cfg.model.name_or_path, cfg.data.root or str(ensure_default_data()))


def load_for_export(run: RunDir, cfg: RunConfig) -> tuple[Any, Any, str]:
    path, checkpoint = model_source(run, cfg)
    model = load_model(path)
    if checkpoint is not None:
        from safetensors.torch import load_file

        state = load_file(str(checkpoint / "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        model.tie_weights()
        tied = set(getattr(model, "_tied_weights_keys", None) or [])
        if unexpected or [k for k in missing if k not in tied and not k.endswith(("embed_tokens.weight", "lm_head.weight"))]:
            raise ConfigError(f"{checkpoint}: weights do not fit the base model "
                              f"({len(missing)} missing, {len(unexpected)} unexpected)")
        source = f"checkpoint {checkpoint.name}"
    else:
        source = "model/" if path == str(run.path / "model") else f"the evaluated model {path}"
    tokenizer_path = path if checkpoint is None and path == str(run.path / "model") else (cfg.model.tokenizer or path)
    return model, load_tokenizer(tokenizer_path), source


# --- the model card --------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def metrics_table(metrics: dict[str, Any]) -> str:
    """Overall and per-category rows; metrics.json keeps groups as flat `"{metric}_for_{category}"` keys."""
    overall = metrics.get("overall", {})
    keys = sorted(overall)
    rows: dict[str, dict[str, Any]] = {}
    for flat, value in metrics.get("per_category", {}).items():
        key = split_group_key(flat)
        if key is not None and key[0] in overall:
            rows.setdefault(key[1], {})[key[0]] = value
    lines = ["| split | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines.append("| overall | " + " | ".join(_fmt(overall[k]) for k in keys) + " |")
    for group, row in sorted(rows.items()):
        lines.append(f"| {group} | " + " | ".join(_fmt(row.get(k, "")) for k in keys) + " |")
    return "\n".join(lines)


def model_card(cfg: RunConfig, run_dir: Path, metrics: dict[str, Any] | None, source: str, repo: str | None) -> str:
    d = cfg.data
    front = {"library_name": "transformers", "pipeline_tag": "text2text-generation",
             "tags": ["tk-instruct", "natural-instructions", "seq2seq"], "license": "apache-2.0"}
    if not cfg.model.name_or_path.startswith((".", "/")) and cfg.model.name_or_path != "tiny" \
            and not Path(cfg.model.name_or_path).exists():
        front["base_model"] = cfg.model.name_or_path
    name = repo or cfg.name
    parts = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {name}", "",
             f"A Tk-Instruct model: `{cfg.model.name_or_path}` "
             + ("fine-tuned" if cfg.do_train else "evaluated") + f" by run `{run_dir.name}` (weights from {source}).",
             "", "## Data", "",
             f"- data root: `{d.root or 'the embedded default dataset'}`",
             f"- track: `{d.track}`; trained on its `train` split, evaluated on its `test` split",
             f"- train encoding: `{d.train_encoding}`; test encoding: `{d.eval_encoding}`",
             f"- max instances per task: {d.max_instances_per_task} (train), {d.max_instances_per_eval_task} (test)",
             f"- max source / target length: {d.max_source_length} / {d.max_target_length} tokens", ""]
    if metrics is not None:
        parts += ["## Metrics", "", f"{metrics.get('num_examples', '?')} test examples, "
                  f"track `{metrics.get('track', d.track)}` (`metrics.json`):", "", metrics_table(metrics), ""]
    parts += ["## Usage", "", "```python",
              "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
              f"tok = AutoTokenizer.from_pretrained({name!r})",
              f"model = AutoModelForSeq2SeqLM.from_pretrained({name!r})",
              "prompt = ('Definition: return the currency of the given country.\\n\\n'",
              "          'Now complete the following example -\\nInput: India.\\nOutput: ')",
              "print(tok.decode(model.generate(**tok(prompt, return_tensors='pt'), max_new_tokens=128)[0],",
              "                 skip_special_tokens=True))",
              "```", "", "Or: `python -m trainer demo --model DIR`.", "",
              "## Run config", "", "```yaml", cfg.to_yaml().rstrip(), "```", ""]
    return "\n".join(parts)


def card_metrics(card: str) -> dict[str, float]:
    """The overall row of a card's metrics table, parsed back (for tests and checks)."""
    lines = card.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("| split |"))
    keys = [c.strip() for c in lines[head].strip("|").split("|")][1:]
    values = [c.strip() for c in lines[head + 2].strip("|").split("|")][1:]
    return {k: float(v) for k, v in zip(keys, values, strict=True)}


# --- the command ---------------------------------------------------------------------------------------------


def export(run_dir: Path, out: Path, force: bool = False, repo: str | None = None) -> Path:
    run, cfg = check_run(run_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ConfigError(f"{out}: exists and is not empty", hint="Use --force to replace it, or another --out.")
    if out.exists() and not out.is_dir():  # --force replaces a folder, never a file
        raise ConfigError(f"{out}: is a file; give the path of a folder to write", hint="Choose another --out.")
    if out.resolve() == run.path.resolve() or run.path.resolve() in out.resolve().parents:
        raise ConfigError(f"{out}: must not be inside the run directory {run.path}")
    model, tokenizer, source = load_for_export(run, cfg)
    metrics = read_metrics(run.path)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CARD).write_text(model_card(cfg, run.path, metrics, source, repo), encoding="utf-8")
        if metrics is not None:
            shutil.copyfile(run.path / METRICS_FILE, tmp / METRICS_FILE)
        shutil.copyfile(run.path / CONFIG_FILE, tmp / "run_config.yaml")
    return out


def push_to_hub(folder: Path, repo: str, private: bool = False, api: Any = None) -> str:
    """Upload `folder` to the Hub repo `repo` (created if needed); returns the commit URL."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise ConfigError("--push-to-hub needs a Hugging Face token in the environment variable HF_TOKEN",
                          hint="export HF_TOKEN=hf_... (a write token); it is never written anywhere.")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        api.create_repo(repo_id=repo, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                                 commit_message=f"Upload {folder.name} (python -m trainer export)")
    except Exception as e:  # network, auth, offline mode: one line, never the token
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].replace(token, "***")
        raise HubPushError(f"push to the Hub repo '{repo}' failed: {type(e).__name__}: {first}",
                           hint=f"The export itself is complete in {folder}.") from None
    return str(getattr(info, "commit_url", info))


def main_export(run_dir: str, out: str, force: bool, repo: str | None, private: bool) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # errors stay one line
    if repo is not None and not os.environ.get("HF_TOKEN"):
        push_to_hub(Path(out), repo)  # fails before anything is written
    folder = export(Path(run_dir), Path(out), force, repo)
    print(f"exported {run_dir} to {folder}")
    if repo is not None:
        url = push_to_hub(folder, repo, private)
        print(f"pushed to https://huggingface.co/{repo} ({url})")
    return 0
