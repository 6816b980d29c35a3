"""The local grid: loopback xrootd sites, a Kafka-protocol broker, the database and Airflow.

Started and stopped by ``rawflow grid up|down|status``; every part is readiness-checked and stopped by PID.
"""
