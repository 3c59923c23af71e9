"""Reading YAML files with one-line errors that name the file and the line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ni.errors import ConfigError


def read_yaml(path: str | os.PathLike[str], kind: str = "file", with_nodes: bool = False) -> tuple[Any, yaml.Node | None]:
    """The parsed document (and, with `with_nodes`, its node tree, whose marks give line numbers)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: {kind} not found") from None
    try:
        node = yaml.compose(text) if with_nodes else None
        return yaml.safe_load(text), node
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
