"""Shared fixtures: the real NI sample and golden files in ../shared, and tokenizers trained here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TK_SHARED", REPO.parent / "shared"))
NI_SAMPLE = SHARED / "ni-sample"
GOLDEN = SHARED / "golden"


@pytest.fixture(scope="session")
def ni_sample() -> Path:
    if not (NI_SAMPLE / "tasks").is_dir():
        pytest.skip(f"real NI sample not found at {NI_SAMPLE} (set TK_SHARED to the shared/ directory)")
    return NI_SAMPLE


@pytest.fixture(scope="session")
def golden() -> Path:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden files not found at {GOLDEN} (set TK_SHARED to the shared/ directory)")
    return GOLDEN


@pytest.fixture(scope="session")
def t5_like_tokenizer(ni_sample: Path):
    """A T5-shaped Unigram tokenizer trained on the NI sample's text (no hub here)."""
    from trainer.tiny import load_all_tasks, task_texts, train_tokenizer

    return train_tokenizer(task_texts(load_all_tasks(ni_sample)), vocab_size=2000)


@pytest.fixture(scope="session")
def byte_bpe_tokenizer(ni_sample: Path):
    """A GPT-2-shaped byte-level BPE tokenizer trained on the NI sample's text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from trainer.tiny import load_all_tasks, task_texts

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1500, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(task_texts(load_all_tasks(ni_sample)), trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", model_max_length=1 << 20)


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default dataset, generated afresh."""
    from ni.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "synthetic", seed=0)


@pytest.fixture(scope="session")
def tiny_model(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", embedded, d_model=64, num_layers=2)


@pytest.fixture(autouse=True)
def _encoded_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the user's encoding cache."""
    monkeypatch.setenv("TK_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "encoded-cache"))
