"""SmtpNotifierHook: turns Airflow's SMTP Connection into Rawflow's e-mail notifier."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from rawflow.notify import Notifier


class SmtpNotifierHook(BaseHook):
    conn_name_attr = "smtp_conn_id"
    default_conn_name = "smtp_default"
    conn_type = "smtp"
    hook_name = "Rawflow e-mail alerts"

    def __init__(self, smtp_conn_id: str = default_conn_name, *, to: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.smtp_conn_id = smtp_conn_id
        self.to = to

    def get_conn(self) -> Notifier:
        from rawflow.notify import SmtpNotifier

        conn = self.get_connection(self.smtp_conn_id)
        extra = conn.extra_dejson
        return SmtpNotifier(
            host=conn.host or "localhost",
            port=int(conn.port or 25),
            from_addr=str(extra.get("from_email", "rawflow@localhost")),
            to_addrs=self.to,
            user=conn.login or None,
            password=conn.password or None,
        )
