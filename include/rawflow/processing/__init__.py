"""Keep-up processing on the Tier-0's batch system: RAW → RTRAW → ESD and DQM per run (docs/processing.md).

``planning`` holds the pure decisions (keys, specs, batches, retries, output checks), ``jobs`` the jobs table,
``keepup`` the run-once rounds the Airflow operator, the CLI and the tests call.
"""
