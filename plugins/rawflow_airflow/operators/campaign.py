"""CampaignOperator: a campaign's rounds over some input blocks — the KeepupOperator (submit, defer on the
ComputeJobsTrigger, collect, check, register with lineage, retry) with the campaign's planner and its own slice
of the jobs table; once a block's jobs are settled its outputs are replicated to the campaign's destination SEs.
The steering file is read again on the worker (the DAG only parsed it), so an edit takes
effect at the next run and a file broken after parsing fails the task with its one-line error."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rawflow_airflow.operators.keepup import KeepupOperator


class CampaignOperator(KeepupOperator):
    template_fields: Sequence[str] = (
        *KeepupOperator.template_fields,
        "campaign_path",
        "compute_conn_id",
        "transfer_backend",
    )
    ui_color = "#dcecf5"

    def __init__(
        self,
        *,
        campaign_path: str,
        transfer_backend: str = "{{ var.value.get('rawflow_transfer_backend', 'gfal2') }}",
        fts3_conn_id: str = "rawflow_fts3",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("stages", [])
        super().__init__(**kwargs)
        self.campaign_path = campaign_path
        self.transfer_backend = transfer_backend
        self.fts3_conn_id = fts3_conn_id

    def _campaign(self) -> Any:
        from rawflow.processing.campaigns import load_campaign
        from rawflow.sites import load_sites
        from rawflow_airflow.settings import sites_path

        known = load_sites(self.sites_path or sites_path()).sites
        return load_campaign(self.campaign_path, known_sites=known)

    def _context(self) -> Any:
        from rawflow.processing.campaign_round import campaign_context

        campaign = self._campaign()
        ctx = super()._context()
        if getattr(ctx.backend, "name", "") == "dirac":
            # The campaign's site and priority go onto its DIRAC jobs.
            ctx.backend.site = campaign.site
            ctx.backend.priority = campaign.priority
        return campaign_context(ctx, campaign)

    def _finish(self, ctx: Any, block_ids: list[str]) -> None:
        """Every job of the blocks is settled: replicate the outputs to the campaign's destination SEs with the
        existing replication units (checksummed, retried; Problematic replicas keep their reasons)."""
        from rawflow.processing.campaign_round import replicate_outputs
        from rawflow_airflow.hooks.transfer import TransfertoolHook

        campaign = self._campaign()
        tool = TransfertoolHook(
            str(self.transfer_backend), storage_conn_id=self.storage_conn_id, fts3_conn_id=self.fts3_conn_id
        ).get_conn()
        for block_id in block_ids:
            progress = replicate_outputs(ctx, campaign, block_id, tool)
            self.log.info(
                "%s %s outputs: %s", campaign.name, block_id, {site: p.status for site, p in progress.items()}
            )

    def _problematic(self) -> list[tuple[str, str, datetime]]:
        from rawflow.processing.campaign_round import campaign_key_prefix
        from rawflow.processing.jobs import JobStore
        from rawflow.processing.planning import JobPhase
        from rawflow_airflow.hooks.catalogue import CatalogueHook

        prefix = campaign_key_prefix(self._campaign())
        store = JobStore(CatalogueHook(self.catalogue_conn_id).quarantine_url())
        try:
            return [
                (r.key, r.reason or "", r.updated_at)
                for b in self._list(self.block_ids)
                for r in store.list_jobs(block_id=b, states=[JobPhase.PROBLEMATIC], key_prefix=prefix)
            ]
        finally:
            store.close()
