"""Airflow adapters for Rawflow: hooks, operators, sensors, triggers and the UI plugin.

Thin by design: every decision lives in the Airflow-free ``rawflow`` package.
"""
