"""Davix re-reads OpenSSL's default CA bundle on every request unless the process points it elsewhere."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from rawflow.storage.gfal2_storage import skip_ca_bundle_reload


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return monkeypatch


def test_a_hashed_ca_directory_makes_the_bundle_file_empty(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    (tmp_path / "9d66eef0.0").write_text("a CA")
    clean_env.setenv("SSL_CERT_DIR", str(tmp_path))
    assert skip_ca_bundle_reload() is True
    assert os.environ["SSL_CERT_FILE"] == os.devnull


def test_a_bundle_only_layout_is_left_alone(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    (tmp_path / "ca-bundle.crt").write_text("every CA")
    clean_env.setenv("SSL_CERT_DIR", str(tmp_path))
    assert skip_ca_bundle_reload() is False
    assert "SSL_CERT_FILE" not in os.environ


def test_an_operator_choice_is_kept(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    (tmp_path / "9d66eef0.0").write_text("a CA")
    clean_env.setenv("SSL_CERT_DIR", str(tmp_path))
    clean_env.setenv("SSL_CERT_FILE", "/etc/pki/site.pem")
    assert skip_ca_bundle_reload() is False
    assert os.environ["SSL_CERT_FILE"] == "/etc/pki/site.pem"


def test_the_default_bundle_named_explicitly_is_still_skipped(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """Many environments export SSL_CERT_FILE=<the default bundle>: that is no choice, the same CAs are hashed."""
    (tmp_path / "9d66eef0.0").write_text("a CA")
    clean_env.setenv("SSL_CERT_DIR", str(tmp_path))
    clean_env.setenv("SSL_CERT_FILE", ssl.get_default_verify_paths().openssl_cafile)
    assert skip_ca_bundle_reload() is True
    assert os.environ["SSL_CERT_FILE"] == os.devnull


def test_a_missing_directory_is_left_alone(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SSL_CERT_DIR", str(tmp_path / "absent"))
    assert skip_ca_bundle_reload() is False
    assert "SSL_CERT_FILE" not in os.environ
