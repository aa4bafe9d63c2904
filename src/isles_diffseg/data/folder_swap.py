"""Replace an output folder only once its new content is complete.

A store folder is written into a staging folder beside it (same file system, so renames are cheap
and atomic), then swapped in with two renames. Until the swap the previous store is untouched, so a
failed or interrupted run never leaves a half-written or emptied store behind: the last good one
stays readable.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def staging_path(target: Path) -> Path:
    """Where the new content of ``target`` is written (``.<name>.partial`` beside it)."""
    return target.with_name(f".{target.name}.partial")


def _replaced_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.replaced")


def start_staging(target: Path) -> Path:
    """An empty staging folder for ``target``; leftovers of an earlier failed run are removed."""
    staging = staging_path(target)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def swap_in(staging: Path, target: Path) -> None:
    """Make the complete ``staging`` folder the new ``target``, then delete the old one."""
    old = _replaced_path(target)
    if old.exists():
        shutil.rmtree(old)
    had_old = target.exists()
    if had_old:
        target.rename(old)
    try:
        staging.rename(target)
    except BaseException:
        if had_old:
            old.rename(target)
        raise
    if had_old:
        shutil.rmtree(old)


def discard(staging: Path) -> None:
    if staging.exists():
        shutil.rmtree(staging)


@contextmanager
def replacing_folder(target: str | Path) -> Iterator[Path]:
    """Yields a staging folder; when the block completes it replaces ``target``, when it raises it
    is deleted and ``target`` keeps its previous content."""
    target = Path(target)
    staging = start_staging(target)
    try:
        yield staging
    except BaseException:
        discard(staging)
        raise
    swap_in(staging, target)
