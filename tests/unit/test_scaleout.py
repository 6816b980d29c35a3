"""The Celery grid's pure parts: option checks, Airflow settings, worker queues, the supervisor loop."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from rawflow.grid.airflow import CeleryPlan, celery_settings
from rawflow.grid.stack import ScaleOut, _scale_out, check_scale_out
from rawflow.grid.supervise import restart_count, restart_delay

PG = "postgresql+psycopg2://airflow@127.0.0.1:5432/airflow"


def test_scale_out_options() -> None:
    assert _scale_out("local", "redis", 2) is None
    assert _scale_out("celery", "redis", 3) == ScaleOut(broker="redis", workers=3)
    assert _scale_out("celery", "rabbitmq", 2) == ScaleOut(broker="rabbitmq", workers=2)
    assert _scale_out("celery", "amqp://u:p@mq:5672/rawflow", 1) == ScaleOut("amqp://u:p@mq:5672/rawflow", 1)
    for executor, broker, workers, message in (
        ("kubernetes", "redis", 2, "executor must be"),
        ("celery", "redis", 0, "at least 1"),
        ("celery", "rabbit", 2, "'redis', 'rabbitmq' or a redis:// or amqp:// URL"),
        ("celery", "kafka://x", 2, "redis:// or amqp://"),
    ):
        with pytest.raises(ValueError, match=message):
            check_scale_out(executor, broker, workers)


def test_a_bad_broker_url_is_not_repeated_with_its_password() -> None:
    with pytest.raises(ValueError) as caught:
        check_scale_out("celery", "amqps+x://user:s3cret@mq:5671//", 2)
    assert "s3cret" not in str(caught.value) and "'amqps+x://…'" in str(caught.value)


def test_celery_settings_need_postgres_and_route_results_through_it() -> None:
    settings = celery_settings(broker_url="redis://127.0.0.1:6379/0", airflow_db=PG, concurrency=4)
    assert settings["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert settings["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/0"
    assert settings["AIRFLOW__CELERY__RESULT_BACKEND"] == f"db+{PG}"
    assert settings["AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER"] == "1"
    assert int(settings["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"]) < 300
    with pytest.raises(ValueError, match="Postgres"):
        celery_settings(broker_url="redis://x", airflow_db="sqlite:////tmp/a.db", concurrency=1)


def test_worker_queues_default_first_no_duplicates() -> None:
    assert CeleryPlan(broker_url="redis://x").worker_queues() == "default"
    assert CeleryPlan(broker_url="redis://x", queues=("cnaf", "default", "cnaf")).worker_queues() == "default,cnaf"


def test_restart_delay_grows_and_is_capped() -> None:
    assert [restart_delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert restart_delay(50) == 30


def test_supervisor_restarts_a_dying_child_then_gives_up(tmp_path: Path) -> None:
    counter = tmp_path / "starts"
    child = f"import pathlib; p = pathlib.Path({str(counter)!r}); p.write_text(p.read_text() + 'x' if p.exists() else 'x'); raise SystemExit(3)"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "rawflow.grid.supervise", "--max-restarts", "2", "--", sys.executable, "-c", child],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 3
    assert counter.read_text() == "xxx"  # the first start and two restarts
    assert "giving up" in done.stdout and "restarting in 1 s" in done.stdout
    assert restart_count(done.stdout + "child output\n") == 2
    assert time.monotonic() - started >= 3  # waited 1 s, then 2 s


def test_supervisor_stops_child_on_sigterm(tmp_path: Path) -> None:
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "rawflow.grid.supervise", "--", sys.executable, "-c", "import time; time.sleep(60)"],
    )
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) != 0  # the child died of the forwarded SIGTERM; no restart


def test_receiver_assignment_follows_rebalances() -> None:
    from confluent_kafka import TopicPartition

    from rawflow.receiver import Assignment

    tracker = Assignment("r1")
    tracker.on_assign(None, [TopicPartition("raw", p) for p in range(4)])  # type: ignore[arg-type]
    assert tracker.owns("raw", 3) and tracker.rebalances == 1
    tracker.on_revoke(None, [TopicPartition("raw", 2), TopicPartition("raw", 3)])  # type: ignore[arg-type]
    assert tracker.owned == {("raw", 0), ("raw", 1)}
    tracker.on_lost(None, [TopicPartition("raw", 0)])  # type: ignore[arg-type]
    assert not tracker.owns("raw", 0) and tracker.owns("raw", 1)
    tracker.on_assign(None, [TopicPartition("raw", 2)])  # type: ignore[arg-type]
    assert tracker.owned == {("raw", 1), ("raw", 2)} and tracker.rebalances == 2
