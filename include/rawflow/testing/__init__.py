"""Test doubles for services we cannot run here (each labelled as such); never used in production code."""
