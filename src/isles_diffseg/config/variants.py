"""Named configuration variants: one YAML file per variant, picked by name.

Layout: ``conf/<env>/variants/<group>/<name>.yml`` whose single top-level key is ``<name>``.
Keying every file by its own name lets Kedro's OmegaConfigLoader merge a whole group without
tripping over duplicate top-level keys, so adding a variant is adding one file.

Inside a Kedro session the groups arrive as parameters under ``variants.<group>``
(see :mod:`isles_diffseg.context`); outside Kedro, :func:`load_variant_group` reads them directly.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

VARIANT_GROUPS: tuple[str, ...] = (
    "model",
    "optimizer",
    "scheduler",
    "loss",
    "augmentation",
    "diffusion",
    "training",
)


class UnknownVariantError(KeyError):
    """A variant name that no YAML file of its group defines."""

    def __init__(self, group: str, name: str, known: list[str]):
        self.group, self.name, self.known = group, name, sorted(known)
        super().__init__(
            f"Unknown {group} variant {name!r}. Known {group} variants: {', '.join(self.known) or '(none)'}"
        )

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


def load_variant_group(group: str, conf_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Read every ``<conf_dir>/variants/<group>/*.yml`` into ``{name: config}``.

    Raises ``ValueError`` naming the file when a file's top-level key differs from its stem
    or when it does not hold a mapping.
    """
    folder = Path(conf_dir) / "variants" / group
    variants: dict[str, dict[str, Any]] = {}
    for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
        content = yaml.safe_load(path.read_text())
        if not isinstance(content, dict) or list(content) != [path.stem]:
            raise ValueError(
                f"{path}: a variant file must hold exactly one top-level key equal to its file name "
                f"({path.stem!r}), found {list(content) if isinstance(content, dict) else type(content).__name__}"
            )
        if not isinstance(content[path.stem], dict):
            raise ValueError(f"{path}: variant {path.stem!r} must be a mapping")
        variants[path.stem] = content[path.stem]
    return variants


def select_variant(variants: Mapping[str, Mapping[str, Any]], name: str, group: str) -> dict[str, Any]:
    """Return a deep copy of variant ``name`` (with its ``name`` recorded), or list the known ones."""
    if name not in variants:
        raise UnknownVariantError(group, name, list(variants))
    chosen = copy.deepcopy(dict(variants[name]))
    chosen.setdefault("name", name)
    return chosen
