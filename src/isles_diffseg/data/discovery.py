"""Find ISLES'24 cases on disk, in the v7 release layout and its known variants.

Variants handled (see literature_anchors.md 1.2):
- ``raw_data/`` or ``rawdata/``; case folders ``sub-stroke0001`` or ``sub-strokecase0001``;
  sessions ``ses-01``/``ses-02`` or ``ses-0001``/``ses-0002``;
- maps and masks as ``.nii.gz`` or ``.nii``;
- the lesion mask named with or without ``space-ncct`` (older releases), or ``ncct-masked`` (test set);
  where several candidates exist (a stray native-space mask ships next to the real one in case 0142)
  the choice follows a fixed preference order and is logged.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

PERFUSION_MODALITIES = ("cbf", "cbv", "mtt", "tmax")
ALL_MODALITIES = (*PERFUSION_MODALITIES, "cta", "ncct")

_CASE_DIR = re.compile(r"^sub-stroke(?:case)?(\d+)$")
_RAW_DIRS = ("raw_data", "rawdata")
_SESSIONS = {1: ("ses-01", "ses-0001"), 2: ("ses-02", "ses-0002")}
_EXTENSIONS = (".nii.gz", ".nii")
# Most specific first: the NCCT-space mask is the one that matches the maps' grid.
_MASK_LABELS = ("space-ncct_lesion-msk", "ncct-masked_lesion-msk", "lesion-msk")


@dataclass
class CaseFiles:
    """Paths of one case's files (``None`` where absent) and how they were chosen."""

    case_id: str
    case_dir_name: str
    modalities: dict[str, Path | None] = field(default_factory=dict)
    mask: Path | None = None
    notes: list[str] = field(default_factory=list)


def canonical_case_id(folder_name: str) -> str | None:
    """``sub-strokecase0001`` and ``sub-stroke0001`` both become ``sub-stroke0001``."""
    match = _CASE_DIR.match(folder_name)
    return f"sub-stroke{int(match.group(1)):04d}" if match else None


def _first_existing(candidates: list[Path]) -> tuple[Path | None, list[Path]]:
    existing = [p for p in candidates if p.is_file()]
    return (existing[0] if existing else None), existing


def _session_dir(case_root: Path, session: int) -> Path | None:
    for name in _SESSIONS[session]:
        if (case_root / name).is_dir():
            return case_root / name
    return None


def _find_in_session(session_dir: Path | None, case_dir: str, labels: tuple[str, ...], sub: str = "") -> tuple[Path | None, list[Path]]:
    if session_dir is None:
        return None, []
    folder = session_dir / sub if sub else session_dir
    candidates = [
        folder / f"{case_dir}_{session_dir.name}_{label}{ext}" for label in labels for ext in _EXTENSIONS
    ]
    return _first_existing(candidates)


def find_case_files(root: Path, case_dir: str) -> CaseFiles:
    """Locate every modality and the lesion mask of one case folder."""
    case_id = canonical_case_id(case_dir) or case_dir
    files = CaseFiles(case_id=case_id, case_dir_name=case_dir)
    derivatives = root / "derivatives" / case_dir
    ses1 = _session_dir(derivatives, 1)
    ses2 = _session_dir(derivatives, 2)
    for modality in PERFUSION_MODALITIES:
        files.modalities[modality], _ = _find_in_session(
            ses1, case_dir, (f"space-ncct_{modality}", modality), sub="perfusion-maps"
        )
    files.modalities["cta"], _ = _find_in_session(ses1, case_dir, ("space-ncct_cta",))
    ncct = None
    for raw in _RAW_DIRS:
        ncct, _ = _find_in_session(_session_dir(root / raw / case_dir, 1), case_dir, ("ncct",))
        if ncct is not None:
            break
    files.modalities["ncct"] = ncct
    files.mask, candidates = _find_in_session(ses2, case_dir, _MASK_LABELS)
    if len(candidates) > 1:
        note = f"{len(candidates)} lesion masks found, using {files.mask.name}; ignored: " + ", ".join(
            p.name for p in candidates[1:]
        )
        files.notes.append(note)
        logger.info("%s: %s", case_id, note)
    return files


def discover_cases(root: str | Path) -> list[CaseFiles]:
    """All cases under ``root``, sorted by case number; raises if the root holds none.

    Case folders are taken from ``derivatives/`` and the raw folders together, so a case whose
    derivatives are missing is still reported (and later fails with a clear message).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ISLES'24 dataset root {root} does not exist or is not a folder")
    folders: dict[str, str] = {}
    for parent in ("derivatives", *_RAW_DIRS):
        if not (root / parent).is_dir():
            continue
        for child in sorted((root / parent).iterdir()):
            case_id = canonical_case_id(child.name)
            if child.is_dir() and case_id:
                if case_id in folders and folders[case_id] != child.name:
                    raise ValueError(
                        f"{root}: case {case_id} appears under two folder names "
                        f"({folders[case_id]!r} and {child.name!r})"
                    )
                folders[case_id] = child.name
    if not folders:
        raise FileNotFoundError(
            f"{root}: no case folders (sub-strokeNNNN) found under derivatives/, raw_data/ or rawdata/"
        )
    return [find_case_files(root, folders[cid]) for cid in sorted(folders)]
