"""`make demo`'s pure parts: the one-line block status it prints and when it stops waiting for a block."""

from __future__ import annotations

from rawflow.demo import block_line, block_settled
from rawflow.naming import DataType
from rawflow.validation import SiteProgress


def test_block_line_shows_processed_of_assigned_per_site_and_problematic_ones() -> None:
    progress = {
        "CNAF-STORM": SiteProgress("CNAF-STORM", assigned=6, processed=6, problematic=0),
        "IN2P3-DCACHE": SiteProgress("IN2P3-DCACHE", assigned=2, processed=1, problematic=1),
    }
    assert block_line(DataType.ESD, "20261203", progress) == (
        "ESD-20261203 processed: CNAF-STORM 6/6  IN2P3-DCACHE 1/2 (1 problematic)"
    )
    assert block_line(DataType.RTRAW, "20261203", {}) == "RTRAW-20261203 processed: no target site"


def test_a_block_is_settled_once_no_site_has_files_pending() -> None:
    done = SiteProgress("CNAF-STORM", assigned=6, processed=6, problematic=0)
    gave_up = SiteProgress("IN2P3-DCACHE", assigned=2, processed=1, problematic=1)
    pending = SiteProgress("IHEP-TAPE", assigned=6, processed=5, problematic=0)
    assert block_settled({"CNAF-STORM": done, "IN2P3-DCACHE": gave_up})
    assert not block_settled({"CNAF-STORM": done, "IHEP-TAPE": pending})
    assert not block_settled({})  # no target site known yet: nothing to show as done
