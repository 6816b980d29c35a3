"""ProblematicAlertOperator: e-mail the shifters about block × site pairs Problematic past a deadline, once.

Reads ``block_site_status`` (filled by the block operators), sends one e-mail per block × site through the
SMTP connection, and marks it alerted so later runs stay quiet; a site that recovers and fails again is a
new episode and alerts again. The decision lives in :func:`rawflow.monitoring.send_due_alerts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator


class ProblematicAlertOperator(BaseOperator):
    template_fields: Sequence[str] = ("deadline_minutes", "to", "ui_url")
    ui_color = "#fed7d7"

    def __init__(
        self,
        *,
        deadline_minutes: float | str = "{{ var.value.get('rawflow_alert_deadline_minutes', 120) }}",
        to: str = "{{ var.value.get('rawflow_alert_email', 'shifters@localhost') }}",
        ui_url: str | None = None,
        smtp_conn_id: str = "smtp_default",
        catalogue_conn_id: str = "rawflow_catalogue",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deadline_minutes = deadline_minutes
        self.to = to
        self.ui_url = ui_url
        self.smtp_conn_id = smtp_conn_id
        self.catalogue_conn_id = catalogue_conn_id

    def execute(self, context: Any) -> list[dict[str, Any]]:
        from airflow.sdk.configuration import conf

        from rawflow.monitoring import MonitoringStore, send_due_alerts
        from rawflow_airflow.hooks.catalogue import CatalogueHook
        from rawflow_airflow.hooks.notify import SmtpNotifierHook

        # The e-mail links to the Rawflow view: [api] base_url + the plugin's mount point, unless given.
        ui_url = self.ui_url or f"{conf.get('api', 'base_url', fallback='').rstrip('/')}/rawflow"
        recipients = [a.strip() for a in str(self.to).replace(";", ",").split(",") if a.strip()]
        deadline = timedelta(minutes=float(self.deadline_minutes))
        store = MonitoringStore(CatalogueHook(self.catalogue_conn_id).quarantine_url())
        try:
            notifier = SmtpNotifierHook(self.smtp_conn_id, to=recipients).get_conn()
            sent = send_due_alerts(store, notifier, deadline, ui_url=ui_url)
        finally:
            store.close()
        for cell in sent:
            self.log.warning(
                "alerted %s: %s at %s Problematic since %s", recipients, cell.block, cell.site, cell.problematic_since
            )
        if not sent:
            self.log.info("no block × site Problematic for more than %s without an alert", deadline)
        return [{"block": c.block, "site": c.site, "problematic": c.problematic} for c in sent]
