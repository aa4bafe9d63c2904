"""The sampling and scoring speed settings take effect from `--params` and from `conf/local`.

The evaluation nodes hand `params:evaluation` to :func:`resolve_setup` (fast path, compile mode, channels_last,
prefetch) and to :func:`scoring_workers`; here the parameters come from the project's own config loader, merged
as `kedro run` merges them (conf/base < conf/local < --params), and go through those two functions.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from conftest import project_parameters
from test_compiled_sampling import _trained
from tiny_sampling import model_fixture  # noqa: F401 (fixture)

from isles_diffseg.evaluation.settings import resolve_setup, scoring_workers

CPU = torch.device("cpu")


def _evaluation_parameters(project: Path, runtime_params: dict | None = None) -> dict:
    return project_parameters(project, runtime_params)["evaluation"]


def _effect(evaluation: dict, model) -> tuple:
    trained, variants = _trained(model)
    setup = resolve_setup(evaluation, trained, variants, CPU)
    fast = setup.fast_path
    return (fast.enabled, fast.compile_mode, fast.channels_last, setup.prefetch_cases,
            scoring_workers(evaluation["scoring_workers"], cases=8, cpus=16, voxels=10**9))


def test_speed_settings_from_params_and_conf_local(project_copy, model):
    # the defaults: eager on a CPU (auto), prefetch 2 cases, one scoring process per case up to the CPUs
    assert _effect(_evaluation_parameters(project_copy), model) == (False, "default", False, 2, 8)

    wanted = {"fast_path": True, "compile_mode": "reduce-overhead", "channels_last": True, "prefetch_cases": 0,
              "scoring_workers": 3}
    assert _effect(_evaluation_parameters(project_copy, {"evaluation": wanted}), model) == (
        True, "reduce-overhead", True, 0, 3)

    (project_copy / "conf/local/parameters_evaluation.yml").write_text(yaml.safe_dump({"evaluation": wanted}))
    from_local = _evaluation_parameters(project_copy)
    assert _effect(from_local, model) == (True, "reduce-overhead", True, 0, 3)
    assert from_local["members"] == 5  # conf/local overrides single leaves, the rest of conf/base stays

    # --params wins over conf/local
    assert _effect(_evaluation_parameters(project_copy, {"evaluation": {"scoring_workers": 1, "fast_path": False}}),
                   model)[::4] == (False, 1)
