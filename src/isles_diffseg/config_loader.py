"""The project's config loader: Kedro's OmegaConfigLoader plus a ``${params:<key>}`` resolver.

Why: a dataset location that users choose per machine (``data.root``, the ISLES'24 release folder) is a
*parameter* in this project's interface (``--params data.root=...``, ``conf/local/parameters_data.yml``,
``conf/<env>/parameters_data.yml``), but Kedro builds the catalog from catalog files only; its
``${runtime_params:...}`` resolver sees ``--params`` and nothing else, so a root written in a YAML file was
silently ignored by ``isles24_raw``. ``${params:data.root}`` in ``catalog.yml`` resolves to the parameter
after Kedro's own merge (base, then the run environment, then ``--params``), so the parameter shown in
MLflow and the folder the catalog reads can never disagree.

``${kedro_run:env}``, ``${kedro_run:runtime_params}`` and ``${kedro_run:project_path}`` give the run's own
settings to a node that starts further Kedro runs with them (cross-validation starts one run per fold).

The resolvers are registered the way Kedro registers ``runtime_params`` (bound to this loader, re-registered
on every lookup), so the loader that resolves a file is the one whose parameters it sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

_MISSING = object()
# OmegaConf 2.4 deprecates register_new_resolver in favour of register_resolver (same arguments here);
# Kedro 1.7 also runs with OmegaConf 2.3, which has only the former.
_register_resolver = getattr(OmegaConf, "register_resolver", None) or OmegaConf.register_new_resolver


class ProjectConfigLoader(OmegaConfigLoader):
    def __getitem__(self, key: str) -> dict[str, Any]:
        _register_resolver("params", self._get_parameter_value, replace=True)
        _register_resolver("kedro_run", self._get_run_setting, replace=True)
        return super().__getitem__(key)

    def _get_run_setting(self, name: str) -> Any:
        settings = {
            "env": self.env,
            "runtime_params": OmegaConf.create(dict(self.runtime_params or {})),
            "project_path": Path(self.conf_source).resolve().parent.as_posix(),
        }
        if name not in settings:
            raise InterpolationResolutionError(f"${{kedro_run:{name}}}: one of {sorted(settings)}")
        return settings[name]

    def _get_parameter_value(self, variable: str, default_value: Any = _MISSING) -> Any:
        # Parameters are re-read on each lookup rather than cached: runtime_params may be replaced after
        # the loader was created (KedroContext does this), and a catalog holds only a few such values.
        parameters = OmegaConf.create(self["parameters"])
        value = OmegaConf.select(parameters, variable, default=_MISSING)
        if value is not _MISSING:
            return value
        if default_value is not _MISSING:
            return default_value
        raise InterpolationResolutionError(
            f"${{params:{variable}}}: no parameter '{variable}' in conf/*/parameters*.yml or --params"
        )
