"""Reading YAML files with one-line errors that name the file and the line.

A key given twice in one mapping (a second `set:` or `optim:` block) is an error, never a silent override.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ni.errors import ConfigError


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with a repeated key (merge keys `<<` excepted)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' given twice (first on line {first})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass


def read_yaml(path: str | os.PathLike[str], kind: str = "file", with_nodes: bool = False) -> tuple[Any, yaml.Node | None]:
    """The parsed document (and, with `with_nodes`, its node tree, whose marks give line numbers)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: {kind} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a {kind}", hint="Name a YAML file, e.g. sweeps/debug.yaml.") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start})", hint=f"Save the {kind} as UTF-8.") from None
    try:
        node = yaml.compose(text) if with_nodes else None
        return load_yaml(text), node
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
