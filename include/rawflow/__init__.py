"""Rawflow domain core.

Everything in this package is importable and testable without Apache Airflow; the Airflow adapters
live in ``plugins/rawflow_airflow`` and only call into this package.
"""

__version__ = "0.1.0"
