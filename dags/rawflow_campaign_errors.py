"""Airflow import errors for the campaign steering files that do not validate; this file makes no DAG.

Airflow records import errors per DAG *file* (the DAG processor stores one per parsed file, replaced or
cleared at each parse), and a steering file is not a DAG file. So the DAG factory, ``rawflow_campaigns.py``,
makes the valid campaigns' DAGs and only warns about the others, while this file checks the same folder with
the same function (``check_campaign_folder``) and, when a file does not validate, raises one exception listing
each such file's one line (file, field, value): that is this file's import error in the UI's "DAG Import
Errors" and ``/api/v2/importErrors``. Once every steering file validates, this file parses cleanly and the
error is cleared. (The words airflow and DAG in this text also keep the processor's safe-mode heuristic from
skipping the file.)
"""

from __future__ import annotations

from pathlib import Path

from rawflow.processing.campaigns import InvalidCampaignFiles, campaigns_folder, check_campaign_folder

_checked = check_campaign_folder(campaigns_folder(Path(__file__).resolve().parents[1] / "config" / "campaigns"))
if _checked.errors:
    raise InvalidCampaignFiles(_checked.folder, _checked.errors)
