"""Operator notifications for critical problems (checksum mismatch at the Tier-0, conflicts, storage down).

:class:`SmtpNotifier` sends plain-text email; the Airflow adapter builds it from the SMTP connection.
Credentials are held privately and never appear in ``repr`` or logs.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol, runtime_checkable

from rawflow.errors import TransientError

log = logging.getLogger(__name__)


@runtime_checkable
class Notifier(Protocol):
    def notify(self, subject: str, body: str) -> None:
        """Deliver one notification; raises TransientError when the channel is unreachable."""
        ...


class LogNotifier:
    """Writes notifications to the log (for a receiver run without an SMTP server configured)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log
        self.sent: list[tuple[str, str]] = []

    def notify(self, subject: str, body: str) -> None:
        self.sent.append((subject, body))
        self.logger.error("NOTIFY %s\n%s", subject, body)


class SmtpNotifier:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        from_addr: str,
        to_addrs: Sequence[str],
        user: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        ssl_mode: bool = False,
        timeout: float = 10.0,
        subject_prefix: str = "[rawflow]",
    ) -> None:
        if not to_addrs:
            raise ValueError("SmtpNotifier needs at least one recipient")
        self.host = host
        self.port = port
        self.from_addr = from_addr
        self.to_addrs = list(to_addrs)
        self.user = user
        self._password = password
        self.starttls = starttls
        self.ssl_mode = ssl_mode
        self.timeout = timeout
        self.subject_prefix = subject_prefix

    def __repr__(self) -> str:
        auth = f"{self.user}:***@" if self.user else ""
        return f"SmtpNotifier(smtp://{auth}{self.host}:{self.port}, to={self.to_addrs})"

    def message(self, subject: str, body: str) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = f"{self.subject_prefix} {subject}".strip()
        msg["From"] = self.from_addr
        msg["To"] = ", ".join(self.to_addrs)
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain="rawflow")
        msg.set_content(body)
        return msg

    def notify(self, subject: str, body: str) -> None:
        msg = self.message(subject, body)
        try:
            smtp: smtplib.SMTP
            if self.ssl_mode:
                smtp = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user and self._password is not None:
                    smtp.login(self.user, self._password)
                smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            # The exception text never contains the password (smtplib reports codes and server replies).
            raise TransientError(f"sending email via {self.host}:{self.port}: {exc}") from exc
        log.info("notified %s: %s", self.to_addrs, subject)
