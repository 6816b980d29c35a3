"""Config and script generation for the local xrootd sites (no servers started; the tape scripts and
openssl run as plain local programs)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from rawflow.errors import ConfigError
from rawflow.grid.xrootd import (
    SiteLayout,
    SitePorts,
    default_ports,
    make_tls,
    render_config,
    render_tape_script,
    site_export,
)
from rawflow.sites import Site, SitesConfig, load_sites

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sites() -> SitesConfig:
    return load_sites(REPO / "config" / "sites.yaml")


def layout(site: Site, tmp_path: Path, https: int | None = 2443) -> SiteLayout:
    return SiteLayout(site=site, ports=SitePorts(root=2094, https=https), home=tmp_path / site.name)


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, rest = line.partition(" ")
            found.setdefault(key, []).append(rest)
    return found


def test_disk_site_config(sites: SitesConfig, tmp_path: Path) -> None:
    site = layout(sites["IHEP-EOS"], tmp_path)
    tls = make_tls(tmp_path / "tls")
    d = directives(render_config(site, tls))
    assert d["xrd.port"] == ["2094"]
    assert d["all.export"] == ["/eos/ihep"]
    assert d["oss.localroot"] == [str(site.data_dir)]
    assert d["all.adminpath"] == d["all.pidpath"] == [str(site.run_dir)]
    assert d["xrootd.chksum"] == ["max 64 adler32"]
    assert set(d["xrd.allow"]) == {"host localhost", "host 127.0.0.1"}
    assert d["ofs.tpc"][0].endswith("pgm /usr/bin/xrdcp --server") and "autorm" in d["ofs.tpc"][0]
    assert " ttl 60 120 " in d["ofs.tpc"][0]  # a queued TPC helper still finds its authorization under load
    assert d["xrd.protocol"] == ["XrdHttp:2443 libXrdHttp.so"]
    assert d["http.exthandler"] == ["xrdtpc libXrdHttpTPC.so"]
    assert d["xrd.tls"] == [f"{tls.cert} {tls.key}"]
    assert d["xrd.tlsca"] == [f"certdir {tls.ca_dir}"]
    assert "ofs.preplib" not in d


def test_tape_site_config_has_the_prepare_plugin_and_no_https(sites: SitesConfig, tmp_path: Path) -> None:
    site = layout(sites["IHEP-TAPE"], tmp_path, https=None)
    d = directives(render_config(site, None))
    assert d["ofs.preplib"] == [f"libXrdOfsPrepGPI.so -admit all -run {site.prep_script}"]
    assert d["all.export"] == ["/tape"]
    assert "xrd.protocol" not in d and "xrd.tls" not in d


def test_https_door_without_tls_is_a_config_error(sites: SitesConfig, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TLS"):
        render_config(layout(sites["CNAF-STORM"], tmp_path), None)


def test_doors_and_url_prefixes(sites: SitesConfig, tmp_path: Path) -> None:
    cnaf = layout(sites["CNAF-STORM"], tmp_path)
    assert cnaf.doors == {"root": "root://127.0.0.1:2094//juno", "davs": "davs://127.0.0.1:2443/juno"}
    assert cnaf.url_prefix == cnaf.doors["davs"]  # the policy says davs for CNAF
    jinr = layout(sites["JINR-EOS"], tmp_path)
    assert jinr.url_prefix == "root://127.0.0.1:2094//eos/jinr"
    tape = layout(sites["IHEP-TAPE"], tmp_path, https=None)
    assert tape.doors == {"root": "root://127.0.0.1:2094//tape"}
    with pytest.raises(ConfigError, match="no HTTPS door"):
        tape.door("davs")


def test_a_site_prefix_without_a_path_cannot_be_exported() -> None:
    bare = Site(name="BARE", role="disk", url_prefix="root://host:1094/")
    with pytest.raises(ConfigError, match="path"):
        site_export(bare)


def test_rewritten_policy_keeps_roles(sites: SitesConfig, tmp_path: Path) -> None:
    ports = default_ports(sites)
    prefixes = {n: layout(s, tmp_path).door(s.scheme) for n, s in sites.sites.items()}
    local = sites.with_url_prefixes(prefixes)
    assert local.tier0.name == "IHEP-EOS" and local.archive.name == "IHEP-TAPE"
    assert local["JINR-EOS"].via == ("CNAF-STORM",)
    assert all("127.0.0.1" in s.url_prefix for s in local.sites.values())
    assert ports["IHEP-TAPE"].https is None
    numbers = [p for sp in ports.values() for p in (sp.root, sp.https) if p is not None]
    assert len(numbers) == len(set(numbers)) == 9


def test_tls_certificate_verifies_against_the_ca_dir(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    done = subprocess.run(
        ["openssl", "verify", "-CApath", str(tls.ca_dir), "-verify_ip", "127.0.0.1", str(tls.cert)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert oct(tls.key.stat().st_mode & 0o777) == "0o400"


@pytest.fixture
def tape(sites: SitesConfig, tmp_path: Path) -> SiteLayout:
    site = layout(sites["IHEP-TAPE"], tmp_path / "with space", https=None)
    for directory in (site.home, site.data_dir, site.mss_dir):
        directory.mkdir(parents=True, exist_ok=True)
    for template, script in (("tape_prep.sh", site.prep_script), ("tape_migrate.sh", site.migrate_script)):
        script.write_text(render_tape_script(template, site))
        script.chmod(0o755)
    return site


def prep(tape: SiteLayout, request: str, *paths: str) -> str:
    argv = [str(tape.prep_script), "-p", "0", "--", "req-42", request, *paths]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_prep_query_answers_what_gfal2_reads(tape: SiteLayout) -> None:
    write(tape.data_dir / "tape/juno/a.dat", b"a")
    answer = json.loads(prep(tape, "query", "/tape/juno/a.dat", '/tape/juno/"odd".dat?x=1'))
    assert answer["request_id"] == "req-42"
    first, second = answer["responses"]
    assert first == {
        "path": "/tape/juno/a.dat",
        "path_exists": True,
        "on_tape": False,
        "online": True,
        "error_text": "",
    }
    assert second["path"] == '/tape/juno/"odd".dat' and second["path_exists"] is False


def test_migration_puts_files_on_tape(tape: SiteLayout) -> None:
    write(tape.data_dir / "tape/juno/raw/a.dat", b"a" * 10)
    write(tape.data_dir / "tape/juno/raw/b.dat", b"b" * 20)
    done = subprocess.run([str(tape.migrate_script)], capture_output=True, text=True, check=True)
    assert sorted(done.stdout.split()) == sorted(
        ["migrated", "migrated", "/tape/juno/raw/a.dat", "/tape/juno/raw/b.dat"]
    )
    assert (tape.mss_dir / "tape/juno/raw/b.dat").read_bytes() == b"b" * 20
    answer = json.loads(prep(tape, "query", "/tape/juno/raw/a.dat"))
    assert answer["responses"][0]["on_tape"] is True
    again = subprocess.run([str(tape.migrate_script)], capture_output=True, text=True, check=True)
    assert again.stdout == ""  # already on tape


def test_migration_skips_files_still_being_written(tape: SiteLayout) -> None:
    write(tape.data_dir / "tape/juno/fresh.dat", b"still arriving")
    done = subprocess.run([str(tape.migrate_script), "--settle", "60"], capture_output=True, text=True, check=True)
    assert done.stdout == ""
    old = time.time() - 120
    os.utime(tape.data_dir / "tape/juno/fresh.dat", (old, old))
    done = subprocess.run([str(tape.migrate_script), "--settle", "60"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "migrated /tape/juno/fresh.dat"


def test_evict_and_recall(tape: SiteLayout) -> None:
    write(tape.data_dir / "tape/juno/e.dat", b"evict me")
    write(tape.data_dir / "tape/juno/not-yet.dat", b"not on tape")
    subprocess.run([str(tape.migrate_script)], check=True, capture_output=True)
    write(tape.data_dir / "tape/juno/not-yet.dat", b"not on tape")
    (tape.mss_dir / "tape/juno/not-yet.dat").unlink()
    prep(tape, "evict", "/tape/juno/e.dat", "/tape/juno/not-yet.dat")
    assert not (tape.data_dir / "tape/juno/e.dat").exists()
    assert (tape.data_dir / "tape/juno/not-yet.dat").exists()  # never evict what is not on tape
    answer = json.loads(prep(tape, "query", "/tape/juno/e.dat"))["responses"][0]
    assert (answer["on_tape"], answer["online"], answer["path_exists"]) == (True, False, True)
    prep(tape, "stage", "/tape/juno/e.dat")
    assert (tape.data_dir / "tape/juno/e.dat").read_bytes() == b"evict me"
