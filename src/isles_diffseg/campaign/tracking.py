"""A campaign in MLflow: one parent run per campaign, one child per run (configuration x fold, or trial).

The runs are found again by their tags before any is created, so running a campaign command again (to
continue it, or after the driver itself was stopped) and requeued jobs never open a second MLflow run.
Tracking URI and experiment are the project's own (``conf/<env>/mlflow.yml``, as kedro-mlflow reads them),
so the children's ``kedro run`` log into the same store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CAMPAIGN_TAG = "isles_diffseg_campaign"
ROLE_TAG = "isles_diffseg_campaign_role"  # parent | run
RUN_NAME_TAG = "isles_diffseg_campaign_run"


def mlflow_settings(project_dir: Path, env: str | None) -> tuple[str, str, str | None]:
    """``(tracking_uri, experiment_name, artifact_location)`` from the project's ``mlflow.yml``."""
    from isles_diffseg import settings

    args = dict(settings.CONFIG_LOADER_ARGS)
    args["config_patterns"] = {**args.get("config_patterns", {}), "mlflow": ["mlflow*", "mlflow*/**"]}
    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(project_dir / "conf"), env=env, **args)
    config = loader["mlflow"]
    experiment = config["tracking"]["experiment"]
    location = (experiment.get("create_experiment_kwargs") or {}).get("artifact_location")
    return str(config["server"]["mlflow_tracking_uri"]), str(experiment["name"]), location


class CampaignTracker:
    def __init__(self, tracking_uri: str, experiment: str, campaign: str, artifact_location: str | None = None):
        from mlflow.tracking import MlflowClient

        self.tracking_uri, self.campaign = tracking_uri, campaign
        self.client = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None and found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        if found is None:
            # created as kedro-mlflow would create it, so the children's kedro runs find it as configured
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
        else:
            self.experiment_id = found.experiment_id

    def _find(self, **tags: str) -> str | None:
        query = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
        found = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        return found[0].info.run_id if found else None

    def parent(self, kind: str, params: dict[str, Any]) -> str:
        run_id = self._find(**{CAMPAIGN_TAG: self.campaign, ROLE_TAG: "parent"})
        if run_id is None:
            run_id = self.client.create_run(self.experiment_id, run_name=f"campaign_{self.campaign}", tags={
                CAMPAIGN_TAG: self.campaign, ROLE_TAG: "parent", "isles_diffseg_campaign_kind": kind}).info.run_id
            from isles_diffseg.tracking import ModelRunLogger

            ModelRunLogger(run_id).params({k: str(v)[:500] for k, v in params.items()})
        else:
            self.client.update_run(run_id, status="RUNNING")
        return run_id

    def child(self, parent_id: str, run_name: str, tags: dict[str, str]) -> str:
        run_id = self._find(**{CAMPAIGN_TAG: self.campaign, RUN_NAME_TAG: run_name})
        if run_id is None:
            run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags={
                "mlflow.parentRunId": parent_id, CAMPAIGN_TAG: self.campaign, ROLE_TAG: "run",
                RUN_NAME_TAG: run_name, **tags}).info.run_id
        return run_id

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)
