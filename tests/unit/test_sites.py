from __future__ import annotations

import copy
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from rawflow.errors import ConfigError
from rawflow.sites import default_sites_path, load_sites, validate_sites

BASE: dict[str, Any] = yaml.safe_load(default_sites_path().read_text())


def mutate(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return raw


def test_repository_config_loads() -> None:
    cfg = load_sites(default_sites_path())
    assert cfg.tier0.name == "IHEP-EOS"
    assert cfg.archive.name == "IHEP-TAPE"
    assert [s.name for s in cfg.destinations] == ["CNAF-STORM", "JINR-EOS", "IN2P3-DCACHE"]
    assert cfg["IN2P3-DCACHE"].share == Fraction(1, 3)
    assert [s.name for s in cfg.route_to("JINR-EOS")] == ["CNAF-STORM", "JINR-EOS"]
    assert cfg["CNAF-STORM"].scheme == "davs"
    assert cfg.checksum == "adler32"


def test_share_is_deterministic_and_about_a_third() -> None:
    cfg = validate_sites(BASE)
    in2p3 = cfg["IN2P3-DCACHE"]
    lfns = [f"/juno/raw/2025/1101/JUNO.000001.Physics.Global.ds-0.20251101000000.{i:05d}.dat" for i in range(3000)]
    kept = [lfn for lfn in lfns if in2p3.keeps(lfn)]
    assert 900 <= len(kept) <= 1100
    assert kept == [lfn for lfn in lfns if in2p3.keeps(lfn)]
    assert all(cfg["CNAF-STORM"].keeps(lfn) for lfn in lfns)


def test_with_url_prefixes_keeps_policy() -> None:
    cfg = validate_sites(BASE).with_url_prefixes({"IHEP-EOS": "root://127.0.0.1:30001//data"})
    assert cfg.tier0.url_prefix == "root://127.0.0.1:30001//data"
    assert cfg.tier0.pfn("/juno/raw/x") == "root://127.0.0.1:30001//data/juno/raw/x"
    assert cfg["IN2P3-DCACHE"].share == Fraction(1, 3)


@pytest.mark.parametrize(
    ("raw", "field", "value"),
    [
        (mutate(checksum="md5"), "checksum", "md5"),
        (mutate(**{"sites__IN2P3-DCACHE__share": "2/1"}), "sites.IN2P3-DCACHE.share", "2/1"),
        (mutate(**{"sites__IN2P3-DCACHE__share": "a third"}), "sites.IN2P3-DCACHE.share", "a third"),
        (mutate(**{"sites__IN2P3-DCACHE__role": "cloud"}), "sites.IN2P3-DCACHE.role", "cloud"),
        (mutate(**{"sites__IN2P3-DCACHE__url_prefix": "ftp://x/y"}), "sites.IN2P3-DCACHE.url_prefix", "ftp://x/y"),
        (mutate(**{"sites__IN2P3-DCACHE__url_prefix": None}), "sites.IN2P3-DCACHE.url_prefix", None),
        (mutate(**{"sites__JINR-EOS__via": ["NOWHERE"]}), "sites.JINR-EOS.via", "NOWHERE"),
        (mutate(**{"sites__JINR-EOS__via": ["IHEP-TAPE"]}), "sites.JINR-EOS.via", "IHEP-TAPE"),
        (mutate(**{"sites__JINR-EOS__via": ["IN2P3-DCACHE"]}), "sites.JINR-EOS.via", "IN2P3-DCACHE"),
        (mutate(**{"sites__JINR-EOS__speed": 3}), "sites.JINR-EOS.speed", 3),
        (mutate(**{"sites__IHEP-TAPE__archive": None}), "archive", []),
        (mutate(**{"sites__CNAF-STORM__tier0": True}), "tier0", ["IHEP-EOS", "CNAF-STORM"]),
        (mutate(**{"sites__IHEP-TAPE__share": 1}), "sites.IHEP-TAPE.share", 1),
        (mutate(colour="blue"), "colour", "blue"),
    ],
)
def test_bad_config_names_field_and_value(raw: dict[str, Any], field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_sites(raw, source="sites.yaml")
    assert info.value.field == field
    assert info.value.value == value
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"sites.yaml: {field}=")


def test_load_sites_reports_yaml_line(tmp_path: Path) -> None:
    bad = tmp_path / "sites.yaml"
    bad.write_text("checksum: adler32\nsites:\n  IHEP-EOS: {role: disk\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_sites(bad)
    with pytest.raises(ConfigError, match="No such file"):
        load_sites(tmp_path / "missing.yaml")


def test_data_type_policies() -> None:
    cfg = load_sites(default_sites_path())
    # RAW and RTRAW have no section: the sites' own shares, archived to tape.
    for data_type in ("RAW", "RTRAW"):
        policy = cfg.policy(data_type)
        assert policy.archive
        assert [s.name for s in cfg.destinations_for(data_type)] == [s.name for s in cfg.destinations]
    esd = cfg.policy("ESD")
    assert not esd.archive
    assert dict(esd.shares) == {"CNAF-STORM": Fraction(1), "IN2P3-DCACHE": Fraction(1, 2)}
    by_name = {s.name: s for s in cfg.destinations_for("esd")}
    assert set(by_name) == {"CNAF-STORM", "IN2P3-DCACHE"}
    assert by_name["IN2P3-DCACHE"].share == Fraction(1, 2)  # keeps() applies the ESD share
    # The local grid rewrites URL prefixes and the round trip keeps the policies.
    again = validate_sites(cfg.with_url_prefixes({"CNAF-STORM": "root://127.0.0.1:1/x"}).to_raw())
    assert again.policy("ESD") == esd


@pytest.mark.parametrize(
    ("policies", "field"),
    [
        ({"DST": {"shares": {}}}, "policies"),
        ({"ESD": {"shares": {"NOWHERE": 1}}}, "policies.ESD.shares.NOWHERE"),
        ({"ESD": {"shares": {"IHEP-TAPE": 1}}}, "policies.ESD.shares.IHEP-TAPE"),
        ({"ESD": {"shares": {"IHEP-EOS": 1}}}, "policies.ESD.shares.IHEP-EOS"),
        ({"ESD": {"shares": {"CNAF-STORM": 2}}}, "policies.ESD.shares.CNAF-STORM"),
        ({"ESD": {"shares": {"JINR-EOS": 1}}}, "policies.ESD.shares.JINR-EOS"),  # its hop CNAF keeps none
        ({"ESD": {"archive": "no"}}, "policies.ESD.archive"),
        ({"ESD": {"copies": 2}}, "policies.ESD.copies"),
        ([], "policies"),
    ],
)
def test_bad_policy_is_one_line(policies: Any, field: str) -> None:
    raw = copy.deepcopy(BASE)
    raw["policies"] = policies
    with pytest.raises(ConfigError) as info:
        validate_sites(raw)
    assert field in str(info.value)
    assert "\n" not in str(info.value)


def test_site_queue_validated_and_round_tripped() -> None:
    import pytest as _pytest

    from rawflow.errors import ConfigError
    from rawflow.sites import default_sites_path, load_sites, validate_sites

    raw = load_sites(default_sites_path()).to_raw()
    name = next(n for n, s in raw["sites"].items() if s.get("share"))
    raw["sites"][name]["queue"] = "near-cnaf"
    cfg = validate_sites(raw)
    assert cfg.sites[name].queue == "near-cnaf" and cfg.queues == ("near-cnaf",)
    assert validate_sites(cfg.to_raw()).sites[name].queue == "near-cnaf"
    assert all(s.queue is None for n, s in cfg.sites.items() if n != name)
    for bad in ("Near CNAF", "", 7, "-x"):
        raw["sites"][name]["queue"] = bad
        with _pytest.raises(ConfigError, match=f"sites.{name}.queue"):
            validate_sites(raw)
