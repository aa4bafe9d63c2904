"""Predictions made elsewhere (nnU-Net, a challenge submission, another group's model), scored like ours.

A folder holds one NIfTI per case, ``<case_id>.nii.gz`` (or ``.nii``), on the case's native grid: the shape
and the affine of the case's own images, as ISLES'24 submissions are (and as nnU-Net writes predictions of
images exported by the ``nnunet_export`` pipeline). Each file is either

* a **mask**: only the values 0 and 1 (any dtype; a scale factor is applied first), used as it is; or
* a **probability map**: values in [0, 1], thresholded exactly like our models' probabilities (the
  ``evaluation.threshold`` setting: ``fixed`` at ``value``, or ``sweep`` over the candidates on the
  validation fold's cases, which the folder must then hold too).

Anything else (NaN, values outside [0, 1], logits, label maps with other labels) is refused: guessing the
output domain (a sigmoid "when a value is outside [0, 1]") silently changes what is scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from isles_diffseg.data.orientation import NativeGeometry

ENDINGS = (".nii.gz", ".nii")
# The affine of a prediction may differ from the case's by float32 rounding of the NIfTI header (SimpleITK,
# nnU-Net's writer, stores it that way); anything beyond a micrometre is another grid.
AFFINE_TOLERANCE_MM = 1e-3
MASK, PROBABILITY = "mask", "probability"


class ExternalPredictionError(ValueError):
    """One or more prediction files cannot be scored; the message names each file and its problem."""


@dataclass(frozen=True)
class ExternalPredictions:
    """A folder of predictions to score under the method name ``name`` (``evaluation.method_name``)."""

    name: str
    folder: Path
    kind: str = "external"

    def file_for(self, case_id: str) -> Path | None:
        for ending in ENDINGS:
            path = self.folder / f"{case_id}{ending}"
            if path.is_file():
                return path
        return None


@dataclass
class ExternalCase:
    case_id: str
    path: Path
    probability: np.ndarray  # float32 in [0, 1], native grid
    content: str             # MASK or PROBABILITY


def read_prediction(predictions: ExternalPredictions, case_id: str, native: NativeGeometry) -> ExternalCase:
    """The case's prediction as a float32 native-grid array, or an ExternalPredictionError naming the file."""
    path = predictions.file_for(case_id)
    if path is None:
        raise ExternalPredictionError(
            f"{case_id}: no prediction {predictions.folder / (case_id + ENDINGS[0])} (nor {ENDINGS[1]})")
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises several types for truncated or foreign files
        raise ExternalPredictionError(f"{case_id}: {path} cannot be read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != tuple(native.shape):
        raise ExternalPredictionError(
            f"{case_id}: {path} has shape {data.shape}, but the case's native grid is {tuple(native.shape)}; "
            "predictions must be on each case's native grid (the grid of its NCCT-space images)")
    difference = float(np.abs(np.asarray(image.affine) - native.affine).max())
    if difference > AFFINE_TOLERANCE_MM:
        raise ExternalPredictionError(
            f"{case_id}: {path} is not registered to the case: its affine differs from the case's by up to "
            f"{difference:.4g} (mm or direction cosines; tolerance {AFFINE_TOLERANCE_MM}).\n"
            f"  prediction affine:\n{np.array2string(np.asarray(image.affine), precision=4)}\n"
            f"  case affine:\n{np.array2string(native.affine, precision=4)}")
    if not np.isfinite(data).all():
        raise ExternalPredictionError(f"{case_id}: {path} contains NaN or infinite values")
    low, high = float(data.min()), float(data.max())
    if low < 0.0 or high > 1.0:
        raise ExternalPredictionError(
            f"{case_id}: {path} has values in [{low:.4g}, {high:.4g}]: neither a mask (0/1) nor a probability map "
            "([0, 1]); write sigmoid/softmax probabilities of the lesion class or a binary mask")
    content = MASK if np.isin(data, (0.0, 1.0)).all() else PROBABILITY
    return ExternalCase(case_id, path, data, content)


def check_predictions(predictions: ExternalPredictions, case_ids: Iterable[str],
                      metas: Mapping[str, Mapping[str, Any]], purpose: str = "") -> dict[str, str]:
    """Read every case's file once before any is scored; ``{case_id: mask|probability}``.

    All problems are reported together (one line per case), so a folder is fixed in one go.
    """
    if not predictions.folder.is_dir():
        raise ExternalPredictionError(f"evaluation.predictions={str(predictions.folder)!r} is not a folder")
    contents, problems = {}, []
    for case_id in case_ids:
        try:
            contents[case_id] = read_prediction(predictions, case_id, NativeGeometry.from_meta(metas[case_id])).content
        except ExternalPredictionError as exc:
            problems.append(str(exc))
    if problems:
        raise ExternalPredictionError(
            f"{len(problems)} of {len(problems) + len(contents)} cases of {predictions.folder} cannot be scored "
            f"as method {predictions.name!r}{purpose}:\n- " + "\n- ".join(problems))
    return contents
