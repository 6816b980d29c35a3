"""The private RabbitMQ node's pure parts: its ports, environment, configuration and files, `--broker rabbitmq`
on the command line. No server is started here (tests/integration/test_rabbitmq.py starts one)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from rawflow.cli import main
from rawflow.grid import rabbitmq
from rawflow.grid.process import Daemon
from rawflow.grid.rabbitmq import (
    CONSUMER_TIMEOUT_MS,
    NODE_MARKER,
    RabbitMQInstance,
    RabbitPorts,
    daemon_env,
    env_file,
    rabbitmq_config,
    rabbitmq_env,
    write_node_files,
)

PORTS = RabbitPorts(amqp=41001, dist=41002, epmd=41003)


def test_ports_are_three_distinct_free_ones() -> None:
    ports = RabbitPorts.pick()
    assert len({ports.amqp, ports.dist, ports.epmd}) == 3
    assert all(1024 < p < 65536 for p in (ports.amqp, ports.dist, ports.epmd))


def test_env_makes_everything_private(tmp_path: Path) -> None:
    env = rabbitmq_env(tmp_path, PORTS)
    assert env["RABBITMQ_NODENAME"] == "rawflow-41001@localhost"
    assert env["RABBITMQ_NODE_IP_ADDRESS"] == "127.0.0.1" and env["RABBITMQ_NODE_PORT"] == "41001"
    assert env["RABBITMQ_DIST_PORT"] == "41002"
    # Its own epmd, loopback only: never the machine's on 4369.
    assert env["ERL_EPMD_PORT"] == "41003" and env["ERL_EPMD_ADDRESS"] == "127.0.0.1"
    assert "inet_dist_use_interface {127,0,0,1}" in env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    # Every file and directory it uses is under its base directory, HOME (the Erlang cookie) included.
    for key in (
        "HOME",
        "RABBITMQ_CONFIG_FILE",
        "RABBITMQ_ENABLED_PLUGINS_FILE",
        "RABBITMQ_MNESIA_BASE",
        "RABBITMQ_LOG_BASE",
        "RABBITMQ_CONF_ENV_FILE",
    ):
        assert Path(env[key]).parent == tmp_path, key


def test_daemon_env_drops_the_shells_rabbitmq_and_erlang_settings() -> None:
    shell = {
        "PATH": "/usr/bin",
        "RABBITMQ_NODENAME": "rabbit@localhost",
        "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "ERL_EPMD_PORT": "4369",
    }
    env = daemon_env({"ERL_EPMD_PORT": "41003", "HOME": "/x/home"}, shell)
    assert env == {"PATH": "/usr/bin", "ERL_EPMD_PORT": "41003", "HOME": "/x/home"}


def test_config_listens_on_loopback_with_its_own_user_and_no_consumer_timeout_cut() -> None:
    text = rabbitmq_config(PORTS, user="rawflow", password="pw")
    lines = {line.split(" = ")[0]: line.split(" = ")[1] for line in text.splitlines() if " = " in line}
    assert lines["listeners.tcp.local"] == "127.0.0.1:41001"
    assert lines["default_user"] == "rawflow" and lines["default_pass"] == "pw"
    # A transfer task may run for hours with its message unacknowledged (acks_late): well past the 30 min default.
    assert int(lines["consumer_timeout"]) == CONSUMER_TIMEOUT_MS >= 24 * 3600 * 1000
    assert not any(line.startswith("management") for line in lines)


def test_node_files_are_private_and_the_password_only_in_the_config(tmp_path: Path) -> None:
    base = tmp_path / "mq"
    settings = write_node_files(base, PORTS, user="rawflow", password="s3cret-pw")
    assert settings[NODE_MARKER] == str(base)
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    config = base / "rabbitmq.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "s3cret-pw" in config.read_text()
    assert (base / "enabled_plugins").read_text().strip() == "[]."  # no management plugin
    assert all((base / sub).is_dir() for sub in ("home", "mnesia", "log"))
    holding = [p.name for p in base.rglob("*") if p.is_file() and "s3cret-pw" in p.read_text()]
    assert holding == ["rabbitmq.conf"]


def test_env_file_gives_rabbitmqctl_the_same_settings(tmp_path: Path) -> None:
    settings = {**rabbitmq_env(tmp_path, PORTS), NODE_MARKER: str(tmp_path)}
    text = env_file(settings)
    assert NODE_MARKER not in text  # a by-hand rabbitmqctl is not one of the node's processes
    # The file is sourced by RabbitMQ's sh scripts: the braces of the Erlang term stay quoted.
    (tmp_path / "e.conf").write_text(text)
    shown = subprocess.run(
        ["sh", "-c", '. ./e.conf && printf "%s|%s" "$RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS" "$HOME"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    ).stdout
    assert shown == f"-kernel inet_dist_use_interface {{127,0,0,1}}|{tmp_path / 'home'}"


def test_url_and_endpoint_and_repr_never_show_the_password_where_it_is_not_needed(tmp_path: Path) -> None:
    node = RabbitMQInstance(
        base_dir=tmp_path, ports=PORTS, daemon=Daemon(name="rabbitmq", pid=1, log="x"), password="s3cret-pw"
    )
    assert node.url == "amqp://rawflow:s3cret-pw@127.0.0.1:41001//"
    assert node.node == "rawflow-41001@localhost"
    assert "s3cret-pw" not in node.endpoint and "s3cret-pw" not in repr(node)
    assert node.endpoint.startswith("127.0.0.1:41001 ")  # `grid status` probes the first loopback port named


def test_a_missing_rabbitmq_server_is_one_line_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rabbitmq, "BIN_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="Debian package rabbitmq-server"):
        rabbitmq.start_rabbitmq(tmp_path / "mq", password="pw")
    assert not (tmp_path / "mq").exists()  # nothing written before the check


def test_cli_broker_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["grid", "up", "--executor", "celery", "--broker", "rabbit"]) == 2
    assert "'redis', 'rabbitmq' or a redis:// or amqp:// URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["grid", "--help"])
    assert "'rabbitmq' (a private one" in " ".join(capsys.readouterr().out.split())


def test_grid_up_without_rabbitmq_server_fails_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rawflow.grid import stack

    monkeypatch.setattr(rabbitmq, "BIN_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="rabbitmq-server"):
        stack.up(tmp_path / "var", executor="celery", broker="rabbitmq", progress=lambda line: None)
    assert not (tmp_path / "var").exists()


def test_broker_restart_drill_needs_a_private_broker(tmp_path: Path) -> None:
    from rawflow.grid.stack import GridState

    with pytest.raises(RuntimeError, match="no private Celery broker"):
        GridState(var_dir=tmp_path).restart_celery_broker()


def test_the_rabbitmq_password_joins_the_grid_secrets_privately(tmp_path: Path) -> None:
    from rawflow.grid.stack import RABBITMQ_PASSWORD, GridState

    state = GridState(var_dir=tmp_path)
    tokens = state.secrets()
    state.store_secret(RABBITMQ_PASSWORD, "s3cret-pw")
    assert GridState.load(tmp_path).secrets() == {**tokens, RABBITMQ_PASSWORD: "s3cret-pw"}
    assert stat.S_IMODE(state.secrets_file.stat().st_mode) == 0o600
    assert "s3cret-pw" not in (state.state_file.read_text() if state.state_file.exists() else "")
