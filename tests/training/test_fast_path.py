"""The fast path (compile, resident slices, fused optimizer) trains exactly what the eager path trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import build_tiny_slice_store, project_parameters

from isles_diffseg.config.variants import load_variant_group
from isles_diffseg.runtime import fast_path_enabled
from isles_diffseg.training.batches import ResidentSlices, load_batch
from isles_diffseg.training.checkpoints import load_checkpoint
from isles_diffseg.training.launch import training_rows
from isles_diffseg.training.optimizers import build_optimizer
from isles_diffseg.training.run_config import GROUP_OF_KEY, resolve_run_config
from isles_diffseg.training.trainer import Trainer

CONF = Path(__file__).parents[2] / "conf" / "base"
VARIANTS = {group: load_variant_group(group, CONF) for group in set(GROUP_OF_KEY.values())}
BASE = {"model": "medsegdiff_tiny_cpu", "loss": "mse_with_aux_demo", "optimizer": "adamw_1e3lr_wd1e4",
        "scheduler": "warmup_cosine_10pct", "augmentation": "light_2d", "diffusion": "ddim10",
        "recipe": "train_test_tiny", "device": "cpu", "seed": 3}


@pytest.mark.parametrize(("setting", "device", "expected"), [
    ("auto", "cpu", False), ("auto", "cuda", True), (True, "cpu", True), (False, "cuda", False)])
def test_fast_path_is_on_for_cuda_by_default_and_the_switch_wins(setting, device, expected):
    assert fast_path_enabled(setting, torch.device(device)) is expected


def test_an_unknown_fast_path_setting_is_an_error():
    with pytest.raises(ValueError, match="fast_path must be auto, true or false, got 'yes'"):
        fast_path_enabled("yes", torch.device("cpu"))


@pytest.mark.parametrize("context", [0, 1])
def test_resident_batches_are_bit_identical_to_store_reads(tmp_path, context):
    store, _ = build_tiny_slice_store(tmp_path / "s", n_cases=3, n_slices=4)
    if context:
        import json

        meta = json.loads((store.path / "store.json").read_text())
        meta["context_slices"] = context
        (store.path / "store.json").write_text(json.dumps(meta))
        from isles_diffseg.data.slice_store import SliceStore

        store = SliceStore(store.path)
    rows = np.array([0, 3, 4, 7, 8, 11])  # first and last slice of each case: neighbours cross no case
    resident = ResidentSlices(store, rows, torch.device("cpu"), chunk=4)
    batch = np.array([11, 0, 4, 4])
    image, mask = resident.batch(batch)
    expected_image, expected_mask = load_batch(store, batch, torch.device("cpu"))
    assert image.shape == (4, 2 * (2 * context + 1), 16, 16) and image.dtype == torch.float32
    assert torch.equal(image, expected_image) and torch.equal(mask, expected_mask)
    if context:  # slice 0 has no slice below it: the first channel block is the store's zeros
        assert torch.count_nonzero(image[1, :2]) == 0 and torch.count_nonzero(image[1, 2:4]) > 0
    with pytest.raises(KeyError, match=r"rows \[1\] are not resident"):
        resident.batch(np.array([0, 1]))


def test_fused_adamw_makes_the_same_update():
    torch.manual_seed(0)
    weights = [torch.randn(5, 3), torch.randn(3)]
    config = {"type": "adamw", "lr": 1e-2, "weight_decay": 0.1}
    updated = []
    for fused in (False, True):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        optimizer = build_optimizer(config, params, fused=fused)
        assert optimizer.defaults.get("fused") is (True if fused else None)
        for step in range(3):
            for p in params:
                p.grad = torch.full_like(p, 0.5 * (step + 1))
            optimizer.step()
        updated.append([p.detach() for p in params])
    for eager, fused in zip(*updated, strict=True):
        torch.testing.assert_close(fused, eager, rtol=1e-6, atol=1e-7)


def _trainer(tmp_path, fast_path, backend="aot_eager"):
    store, folds = build_tiny_slice_store(tmp_path / "slices")
    config = resolve_run_config({**BASE, "run_name": "f", "fast_path": fast_path, "compile_backend": backend,
                                 "max_steps": 4, "val_interval": 4, "augmentation": "none"},
                                VARIANTS, image_channels=store.image_channels, image_size=store.image_size)
    rows, _ = training_rows(store, folds)
    return Trainer(config, store, rows, ["sub-stroke0005"], tmp_path / "run", show_progress=False)


def test_the_fast_path_trains_the_same_weights_as_eager_and_saves_plain_checkpoints(tmp_path):
    eager, fast = _trainer(tmp_path / "eager", False), _trainer(tmp_path / "fast", True)
    assert eager.resident is None and eager.train_model is eager.model
    assert fast.resident is not None and isinstance(fast.train_model, torch._dynamo.eval_frame.OptimizedModule)
    eager_result, fast_result = eager.fit(), fast.fit()
    for (name, a), (_, b) in zip(eager.model.state_dict().items(), fast.model.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    assert fast_result.best_metric == pytest.approx(eager_result.best_metric, abs=0.02)
    saved = load_checkpoint(fast.checkpoints.latest)["model"]
    assert not any(key.startswith("_orig_mod") for key in saved)


def test_the_compile_backend_setting_reaches_torch_compile(tmp_path):
    with pytest.raises(Exception, match="Invalid backend: 'no_such_backend'"):
        _trainer(tmp_path, True, backend="no_such_backend")
    _trainer(tmp_path / "eager", False, backend="no_such_backend")  # eager: the backend is never used


def test_the_fast_path_validates_through_the_compiled_sampler_and_scores_as_eager_does(tmp_path):
    fast = _trainer(tmp_path, True)
    fast.fit()
    evaluated = fast.ema.model  # evaluate_with_ema: the module validation samples with
    graphs = evaluated.__dict__.get("_sampling_fast_path", {})
    # one compiled wrapper, at the validation batch size, made by the validation inside fit() and reused after
    assert [key[-1] for key in graphs] == [int(fast.config.recipe.get("val_batch_size", 64))]
    compiled = fast.validate().per_case
    assert len(evaluated.__dict__["_sampling_fast_path"]) == 1
    fast.validation_fast_path = None  # the eager sampler, same weights, same keyed noise
    eager = fast.validate().per_case
    assert compiled["pred_pixels"].sum() > 0
    np.testing.assert_allclose(compiled["dice_3d"], eager["dice_3d"], atol=1e-3)
    np.testing.assert_allclose(compiled["pred_pixels"], eager["pred_pixels"], rtol=0.01)


def test_the_eager_path_validates_with_the_uncompiled_model(tmp_path):
    eager = _trainer(tmp_path, False)
    eager.fit()
    assert eager.validation_fast_path is None and "_sampling_fast_path" not in eager.ema.model.__dict__


def _paths_taken(project: Path, tmp_path: Path, runtime_params: dict | None = None) -> tuple:
    """What a Trainer built from the project's merged parameters (as the training node builds it) compiles."""
    store, folds = build_tiny_slice_store(tmp_path / "slices")
    training = project_parameters(project, runtime_params)["training"]
    config = resolve_run_config({**training, "run_name": "settings", "device": "cpu"}, VARIANTS,
                                image_channels=store.image_channels, image_size=store.image_size)
    rows, _ = training_rows(store, folds)
    trainer = Trainer(config, store, rows, ["sub-stroke0005"], tmp_path / "run", show_progress=False)
    validation = trainer.validation_fast_path
    return (trainer.fast_path, isinstance(trainer.train_model, torch._dynamo.eval_frame.OptimizedModule),
            None if validation is None else validation.compile_backend)


def test_the_fast_path_switch_and_backend_take_effect_from_params_and_conf_local(project_copy, tmp_path):
    # the default (auto) on a CPU: eager training and eager validation
    assert _paths_taken(project_copy, tmp_path / "a") == (False, False, None)
    wanted = {"training": {"fast_path": True, "compile_backend": "aot_eager"}}
    assert _paths_taken(project_copy, tmp_path / "b", wanted) == (True, True, "aot_eager")

    (project_copy / "conf/local/parameters_training.yml").write_text(yaml.safe_dump(wanted))
    assert _paths_taken(project_copy, tmp_path / "c") == (True, True, "aot_eager")
    # --params wins over conf/local
    assert _paths_taken(project_copy, tmp_path / "d", {"training": {"fast_path": False}}) == (False, False, None)


def _recording_compile(monkeypatch) -> list[dict]:
    """torch.compile replaced by a recorder that returns the module as it is (no compilation on a CPU)."""
    calls: list[dict] = []

    def record(module, **options):
        calls.append(options)
        return module

    monkeypatch.setattr(torch, "compile", record)
    return calls


def test_channels_last_trains_the_same_weights_with_nhwc_parameters(tmp_path):
    eager = _trainer(tmp_path / "eager", False)
    store, folds = build_tiny_slice_store(tmp_path / "nhwc" / "slices")
    config = resolve_run_config({**BASE, "run_name": "f", "fast_path": True, "compile_backend": "aot_eager",
                                 "channels_last": True, "max_steps": 4, "val_interval": 4, "augmentation": "none"},
                                VARIANTS, image_channels=store.image_channels, image_size=store.image_size)
    nhwc = Trainer(config, store, training_rows(store, folds)[0], ["sub-stroke0005"], tmp_path / "nhwc" / "run",
                   show_progress=False)
    convs = [m.weight for m in nhwc.model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert all(not w.is_contiguous() for w in convs if w.shape[1] > 1)  # (one input channel: both layouts agree)
    ema_convs = [m.weight for m in nhwc.ema.model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in ema_convs)  # copied after the move
    assert nhwc.validation_fast_path.channels_last
    eager.fit(), nhwc.fit()
    # the same training up to summation order: after 4 AdamW steps at lr 1e-3 every tensor within 1e-3 of its
    # largest value (measured: 1.8e-4 at most)
    for (name, a), (_, b) in zip(eager.model.state_dict().items(), nhwc.model.state_dict().items(), strict=True):
        if a.is_floating_point():
            assert (b - a).abs().max() <= 1e-3 * a.abs().max() + 1e-8, name
    assert not _trainer(tmp_path / "off", False).channels_last  # eager: the key needs the fast path


def test_the_compile_mode_reaches_torch_compile_for_inductor_and_cuda_graph_modes_mark_steps(tmp_path, monkeypatch):
    calls = _recording_compile(monkeypatch)
    trainer = _trainer(tmp_path / "a", True, backend="inductor")
    assert calls == [{"backend": "inductor", "mode": "default"}] and not trainer.cuda_graphs
    store, folds = build_tiny_slice_store(tmp_path / "b" / "slices")
    config = resolve_run_config({**BASE, "run_name": "g", "fast_path": True, "compile_mode": "reduce-overhead",
                                 "max_steps": 2, "val_interval": 2, "augmentation": "none"},
                                VARIANTS, image_channels=store.image_channels, image_size=store.image_size)
    graphs = Trainer(config, store, training_rows(store, folds)[0], [], tmp_path / "b" / "run", show_progress=False)
    assert calls[-1] == {"backend": "inductor", "mode": "reduce-overhead"} and graphs.cuda_graphs
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(graphs.step))
    graphs.train_step(), graphs.train_step()
    assert marks == [0, 1]  # one new CUDA-graph step per forward
    _trainer(tmp_path / "c", True, backend="aot_eager")
    assert calls[-1] == {"backend": "aot_eager"}  # modes are inductor's: another backend gets none


def test_an_unknown_training_compile_mode_is_refused(tmp_path):
    store, folds = build_tiny_slice_store(tmp_path / "slices")
    config = resolve_run_config({**BASE, "run_name": "f", "compile_mode": "fastest"}, VARIANTS,
                                image_channels=store.image_channels, image_size=store.image_size)
    with pytest.raises(ValueError, match="training.compile_mode must be one of .* got 'fastest'"):
        Trainer(config, store, training_rows(store, folds)[0], [], tmp_path / "run", show_progress=False)


def test_compile_mode_and_channels_last_take_effect_from_params_and_conf_local(project_copy, tmp_path, monkeypatch):
    calls = _recording_compile(monkeypatch)

    def taken(folder: str, runtime_params: dict | None = None) -> tuple:
        store, folds = build_tiny_slice_store(tmp_path / folder / "slices")
        training = project_parameters(project_copy, runtime_params)["training"]
        config = resolve_run_config({**training, "run_name": "settings", "device": "cpu"}, VARIANTS,
                                    image_channels=store.image_channels, image_size=store.image_size)
        trainer = Trainer(config, store, training_rows(store, folds)[0], [], tmp_path / folder / "run",
                          show_progress=False)
        return calls[-1]["mode"] if trainer.fast_path else None, trainer.channels_last

    wanted = {"training": {"fast_path": True, "compile_mode": "max-autotune-no-cudagraphs", "channels_last": True}}
    assert taken("a", {"training": {"fast_path": True}}) == ("default", False)  # conf/base
    assert taken("b", wanted) == ("max-autotune-no-cudagraphs", True)
    (project_copy / "conf/local/parameters_training.yml").write_text(yaml.safe_dump(wanted))
    assert taken("c") == ("max-autotune-no-cudagraphs", True)
    assert taken("d", {"training": {"channels_last": False}}) == ("max-autotune-no-cudagraphs", False)  # --params wins
