"""Kedro project settings."""

from datetime import datetime
from pathlib import Path

from omegaconf.resolvers import oc

from isles_diffseg.config.variants import VARIANT_GROUPS
from isles_diffseg.config_loader import ProjectConfigLoader
from isles_diffseg.context import ProjectContext
from isles_diffseg.preflight import PreflightHooks

# Valid for a source checkout (the supported way to use this project); deployments set
# MLFLOW_TRACKING_URI explicitly.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

CONTEXT_CLASS = ProjectContext

# Incompatible settings (slice size vs model depth) stop a run before its first node.
HOOKS = (PreflightHooks(),)

# OmegaConfigLoader plus ${params:<key>}, so catalog paths chosen as parameters (data.root) follow
# base/env/local/--params like every other parameter.
CONFIG_LOADER_CLASS = ProjectConfigLoader

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {f"variants_{group}": [f"variants/{group}/*"] for group in VARIANT_GROUPS},
    "custom_resolvers": {
        "now": lambda fmt: datetime.now().strftime(fmt),
        "project_root": lambda: PROJECT_ROOT.as_posix(),
        # Kedro only enables oc.env in credentials; mlflow.yml needs it for MLFLOW_TRACKING_URI.
        "oc.env": oc.env,
    },
    # `--env gpu` files then override single leaves instead of whole top-level blocks.
    "merge_strategy": {"parameters": "soft"},
}
