"""The Rawflow view inside the Airflow UI: a FastAPI app mounted at ``/rawflow`` by the Airflow plugin.

Pages (HTML, Jinja templates) and a JSON API over the same data (the block × site matrix, a block's
drill-down, throughput and error-rate series, Kafka lag and the quarantine), plus Prometheus ``/metrics``.
Every page and API call requires an Airflow login (see :mod:`rawflow_airflow.ui.auth`).
"""
