"""Loading Hugging Face tokenizers and models by Hub name or local path, with one-line errors."""

from __future__ import annotations

from typing import Any

from ni.errors import ConfigError


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
