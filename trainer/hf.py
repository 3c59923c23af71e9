"""Loading Hugging Face tokenizers and models by Hub name or local path (or `tiny`, built from the data), with
one-line errors."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

from ni.errors import ConfigError
from ni.fingerprint import HashCache
from trainer.tiny import build_tiny_model


def load_tokenizer(name_or_path: str) -> Any:
    """A fast tokenizer (`tokenizer.json`), so the sentencepiece/protobuf path is never needed."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"tokenizer '{name_or_path}': cannot load: {first}",
            hint="Give a local directory with tokenizer.json or a Hub name reachable from this machine.",
        ) from None
    if not getattr(tok, "is_fast", False):
        raise ConfigError(f"tokenizer '{name_or_path}': not a fast tokenizer (no tokenizer.json)")
    return tok


def load_model_config(name_or_path: str) -> Any:
    """The model's config alone (no weights): enough to choose the precision before the Accelerator exists."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"model '{name_or_path}': cannot load: {first}") from None
    if not getattr(config, "is_encoder_decoder", False):
        raise ConfigError(
            f"model '{name_or_path}' is not a seq2seq (encoder-decoder) model (model_type={config.model_type})",
            hint="For example: google/t5-base-lm-adapt or allenai/tk-instruct-3b-def.",
        )
    return config


def load_model(name_or_path: str, gradient_checkpointing: bool = False) -> Any:
    """The weights. Call it after the Accelerator is built: with a ZeRO-3 plugin accelerate has registered the
    DeepSpeed config with transformers, so `from_pretrained` loads each rank's partition (deepspeed.zero.Init)
    instead of a full fp32 copy per rank."""
    from transformers import AutoModelForSeq2SeqLM

    load_model_config(name_or_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path)
    if gradient_checkpointing:  # transformers turns the decoder cache off in training mode only
        enable = getattr(model, "activation_checkpointing_enable", None)  # the old name warns: gone in v6
        (enable or model.gradient_checkpointing_enable)()
    return model


def resolve_model_path(name: str, data_root: str) -> str:
    """`tiny` builds (once, cached by the data's content) a small random T5 with a tokenizer trained on the data."""
    if name != "tiny":
        return name
    from trainer.dataset import cache_dir

    if not Path(data_root, "tasks").is_dir():
        raise ConfigError(f"{data_root}: data root not found (needed to build the 'tiny' model)")
    h = hashlib.sha256()
    hashes = HashCache(cache_dir() / "file-hashes.json")  # a stat per file once hashed, not gigabytes per start
    for f in sorted(Path(data_root, "tasks").glob("*.json")):
        h.update(f.name.encode() + bytes.fromhex(hashes.sha256(f)))
    with contextlib.suppress(OSError):
        hashes.save()
    target = cache_dir().parent / "models" / f"tiny-{h.hexdigest()[:16]}"
    if not (target / "config.json").is_file():
        build_tiny_model(target, data_root)  # atomic: a concurrent builder's identical copy is replaced whole
    return str(target)
