"""Typed experiment configs from YAML files and ``key=value`` overrides.

    cfg = load_config(Train4DConfig, PRESETS["quick"], "configs/finetune_4d/quick.yaml", ["steps=50", "model.dim=32"])

A config is one of the project's dataclasses; a file or an override may set any of its fields, and keys inside the
fields that hold another dataclass's overrides (``model``, ``weights``, ``llm``, ``augment`` of the 4D training
config), each checked against that dataclass. An unknown key is refused with its name and the file; a value of the
wrong type is refused too. A run's saved ``train_config.json`` is accepted as a file, so a run can be repeated.

Why not OmegaConf: the dataclasses use ``X | None`` unions under postponed annotations and free-form ``dict``
fields whose keys belong to other dataclasses; a plain merge over ``dataclasses.fields`` checks exactly those.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or override names an unknown key or has a value of the wrong type."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], value), the value read as YAML (``3``, ``1e-3``, ``[1, 2]``, ``null``)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as text; a number is meant
        for kind in (int, float):
            try:
                return key.strip().split("."), kind(value)
            except ValueError:
                pass
    return key.strip().split("."), value


def _check_value(name: str, old: Any, new: Any, where: str) -> Any:
    """``new`` for a field whose default is ``old``: same kind of value (ints accepted for floats, lists for
    tuples), or None where the default is None."""
    if old is None or new is None:
        return new
    if isinstance(old, float) and isinstance(new, str):  # "1e-4" in a YAML file is text to YAML 1.1
        try:
            new = float(new)
        except ValueError:
            pass
    if isinstance(old, bool):
        ok = isinstance(new, bool)
    elif isinstance(old, int):
        ok = isinstance(new, int) and not isinstance(new, bool)
    elif isinstance(old, float):
        ok = isinstance(new, (int, float)) and not isinstance(new, bool)
    elif isinstance(old, str):
        ok = isinstance(new, str)
    elif isinstance(old, (tuple, list)):
        ok = isinstance(new, (tuple, list))
        new = tuple(new) if ok and isinstance(old, tuple) else new
    elif isinstance(old, dict):
        ok = isinstance(new, Mapping)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}{name}: expected a {type(old).__name__}, got {new!r}")
    return float(new) if isinstance(old, float) else new


def _merge(d: dict, update: Mapping, schema: dict[str, type], where: str, path: str = "") -> None:
    fields = set(d)
    for key, value in update.items():
        name = f"{path}{key}"
        if key not in fields:
            raise ConfigError(f"{where}unknown key {name!r} (known: {', '.join(sorted(fields))})")
        if key in schema and isinstance(value, Mapping):
            allowed = {f.name for f in dataclasses.fields(schema[key])}
            inner = dict(d[key] or {})
            for k, v in value.items():
                if k not in allowed:
                    raise ConfigError(
                        f"{where}unknown key '{name}.{k}' ({schema[key].__name__} has {', '.join(sorted(allowed))})"
                    )
                inner[k] = v
            d[key] = inner
        else:
            d[key] = _check_value(name, d[key], value, where)


def load_config(
    cls: type,
    base: Any,
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    nested: dict[str, type] | None = None,
):
    """``base`` (an instance of dataclass ``cls``) updated by the YAML file ``path`` and then by ``overrides``.

    ``nested`` maps dict-valued fields to the dataclass their keys belong to (checked, not built). A file holding
    ``{"train": {...}, ...}`` (a run's ``train_config.json``) is read from its ``train`` part."""
    import yaml

    schema = nested or {}
    d = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not a readable YAML/JSON file ({str(e).splitlines()[0]})") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping of config keys, found a {type(data).__name__}")
        if "train" in data and isinstance(data["train"], Mapping) and "steps" not in data:
            data = data["train"]  # a run's train_config.json
        _merge(d, data, schema, f"{path}: ")
    for text in overrides:
        keys, value = parse_override(text)
        update: Any = value
        for k in reversed(keys):
            update = {k: update}
        _merge(d, update, schema, f"override {text!r}: ")
    try:
        return cls(**d)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path or 'overrides'}: {e}") from None


def dump_config(cfg: Any) -> str:
    """A dataclass config as YAML (tuples as lists), the form :func:`load_config` reads back."""
    import yaml

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return yaml.safe_dump({k: plain(v) for k, v in dataclasses.asdict(cfg).items()}, sort_keys=False)


def preset_config(
    cls: type,
    presets: Mapping[str, Any],
    name: str,
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    nested: dict[str, type] | None = None,
    **flags,
):
    """The preset ``name`` of ``presets``, then the YAML file ``path``, then ``key=value`` ``overrides``
    (:func:`load_config`), then the non-None keyword ``flags`` (a command line's named options)."""
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(sorted(presets))}")
    cfg = load_config(cls, presets[name], path, overrides, nested)
    return dataclasses.replace(cfg, **{k: v for k, v in flags.items() if v is not None})
