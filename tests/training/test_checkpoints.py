"""Loading a checkpoint can never run code: only plain training state is read back."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from isles_diffseg.training.checkpoints import UnsafeCheckpointError, load_checkpoint, save_atomic


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_with_a_code_running_object_is_refused_naming_the_file(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "run" / "checkpoints" / "latest.pt"
    save_atomic({"step": 3, "model": {"w": torch.ones(2)}, "payload": _RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=rf"refusing to load checkpoint {path}: .*could run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_the_refusal_is_an_unpickling_error_so_existing_handlers_still_catch_it(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"f": print}, path)  # a builtin is enough: any global outside the allow-list
    with pytest.raises(pickle.UnpicklingError, match=r"Unsupported global: GLOBAL print "):
        load_checkpoint(path)


def test_the_trainer_state_types_load_exactly(tmp_path):
    # What Trainer._state holds besides tensors: Python's and NumPy's global RNG states.
    random.seed(7)
    np.random.seed(7)
    state = {"step": 5, "best_metric": 0.25, "best_step": None, "history": [{"step": 5, "val_dice_3d": 0.25}],
             "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
             "model": {"w": torch.arange(3.0)}}
    save_atomic(state, tmp_path / "latest.pt")
    loaded = load_checkpoint(tmp_path / "latest.pt")
    assert loaded["rng"]["python"] == state["rng"]["python"]
    name, keys, pos, has_gauss, cached = loaded["rng"]["numpy"]
    assert name == "MT19937" and keys.dtype == np.uint32 and np.array_equal(keys, state["rng"]["numpy"][1])
    assert (pos, has_gauss, cached) == state["rng"]["numpy"][2:]
    np.random.set_state(loaded["rng"]["numpy"])
    expected = np.random.random(3)
    np.random.set_state(state["rng"]["numpy"])
    assert np.array_equal(np.random.random(3), expected)
    assert torch.equal(loaded["model"]["w"], torch.arange(3.0)) and loaded["history"] == state["history"]


def test_the_numpy_allow_list_does_not_outlive_the_load(tmp_path):
    path = tmp_path / "numpy.pt"
    torch.save({"a": np.zeros(2, dtype=np.uint32)}, path)
    assert load_checkpoint(path)["a"].tolist() == [0, 0]
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_a_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*nope.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
