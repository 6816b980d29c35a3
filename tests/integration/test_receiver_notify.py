"""The SMTP notifier against a real local SMTP server (aiosmtpd) on a free port, with and without AUTH."""

from __future__ import annotations

import email
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from rawflow.errors import TransientError
from rawflow.grid.process import free_port
from rawflow.notify import Notifier, SmtpNotifier

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


@dataclass
class Sink:
    """Collects every message the SMTP server accepts."""

    messages: list[tuple[list[str], Message]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"


@dataclass
class SmtpServer:
    port: int
    sink: Sink


def _start(sink: Sink, **kwargs: Any) -> tuple[Controller, int]:
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, port


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    sink = Sink()
    controller, port = _start(sink)
    yield SmtpServer(port, sink)
    controller.stop()


USER, PASSWORD = "rawflow", "s3cret-pw"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server_with_auth() -> Iterator[SmtpServer]:
    sink = Sink()
    # Plain-text AUTH over loopback only: the test server has no TLS certificate.
    controller, port = _start(sink, authenticator=_authenticator, auth_require_tls=False, auth_required=True)
    yield SmtpServer(port, sink)
    controller.stop()


def test_email_reaches_the_server(smtp_server: SmtpServer) -> None:
    notifier = SmtpNotifier(
        host="127.0.0.1",
        port=smtp_server.port,
        from_addr="rawflow@ihep.test",
        to_addrs=["shifter@ihep.test", "b@x.test"],
    )
    assert isinstance(notifier, Notifier)
    notifier.notify("checksum mismatch at IHEP-EOS", "- checksum_mismatch: /juno/raw/...: 0000abcd vs 0000abce")
    [(rcpts, msg)] = smtp_server.sink.messages
    assert rcpts == ["shifter@ihep.test", "b@x.test"]
    assert msg["Subject"] == "[rawflow] checksum mismatch at IHEP-EOS"
    assert msg["From"] == "rawflow@ihep.test"
    assert "0000abce" in msg.get_payload()


def test_login_with_credentials_and_no_secret_in_repr(smtp_server_with_auth: SmtpServer) -> None:
    good = SmtpNotifier(
        host="127.0.0.1",
        port=smtp_server_with_auth.port,
        from_addr="rawflow@ihep.test",
        to_addrs=["ops@ihep.test"],
        user=USER,
        password=PASSWORD,
    )
    good.notify("conflict", "body")
    assert len(smtp_server_with_auth.sink.messages) == 1
    assert PASSWORD not in repr(good) and USER in repr(good)

    wrong = SmtpNotifier(
        host="127.0.0.1",
        port=smtp_server_with_auth.port,
        from_addr="rawflow@ihep.test",
        to_addrs=["ops@ihep.test"],
        user=USER,
        password="not-the-password",
    )
    with pytest.raises(TransientError) as info:
        wrong.notify("conflict", "body")
    assert "not-the-password" not in str(info.value)
    assert len(smtp_server_with_auth.sink.messages) == 1


def test_unreachable_server_is_a_transient_error() -> None:
    notifier = SmtpNotifier(host="127.0.0.1", port=free_port(), from_addr="a@b.test", to_addrs=["c@d.test"], timeout=2)
    with pytest.raises(TransientError):
        notifier.notify("x", "y")


def test_needs_a_recipient() -> None:
    with pytest.raises(ValueError):
        SmtpNotifier(host="127.0.0.1", port=25, from_addr="a@b.test", to_addrs=[])
