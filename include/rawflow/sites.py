"""Site policy: every storage element, its role, share, routes and checksum, in one validated file.

Per data type, a ``policies:`` section may give its own destination shares and whether it is archived to tape
(e.g. ESD, which keep-up processing makes, goes to fewer sites and not to tape); a type without a policy (RAW,
RTRAW today) follows the sites' own ``share`` and is archived.

``load_sites(path)`` returns a :class:`SitesConfig` or raises :class:`~rawflow.errors.ConfigError`
whose one-line message names the file, the field and the offending value.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from rawflow.errors import ConfigError, InvalidNameError
from rawflow.naming import day_zone, pfn_for

SUPPORTED_SCHEMES = ("root", "davs", "https", "file", "mock")
SUPPORTED_CHECKSUMS = ("adler32",)
_SITE_NAME = re.compile(r"[A-Z0-9][A-Z0-9_-]*")
_SITE_KEYS = {"role", "tier0", "archive", "url_prefix", "share", "via", "queue"}
_QUEUE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_POLICY_KEYS = {"shares", "archive"}
_TOP_KEYS = ("checksum", "timezone", "sites", "policies")


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    role: str
    url_prefix: str
    share: Fraction = Fraction(0)
    tier0: bool = False
    archive: bool = False
    via: tuple[str, ...] = ()
    # The Celery queue its transfers run on (workers near the site or inside its firewall); None: the default.
    queue: str | None = None

    @property
    def scheme(self) -> str:
        return urlsplit(self.url_prefix).scheme

    @property
    def is_destination(self) -> bool:
        """A disk site that keeps a share of every block."""
        return self.role == "disk" and self.share > 0

    def pfn(self, lfn: str) -> str:
        return pfn_for(self.url_prefix, lfn)

    def keeps(self, lfn: str) -> bool:
        """Whether this site's share includes the file: deterministic in the LFN, the same on every run."""
        if self.share >= 1:
            return True
        if self.share <= 0:
            return False
        # crc32 of the LFN is stable across processes (unlike hash()) and spreads names evenly.
        bucket = zlib.crc32(lfn.encode()) % self.share.denominator
        return bucket < self.share.numerator


@dataclass(frozen=True, slots=True)
class DataPolicy:
    """Where one data type goes: its destination shares (site → fraction) and whether it is archived."""

    data_type: str
    shares: Mapping[str, Fraction] = field(default_factory=dict)
    archive: bool = True


@dataclass(frozen=True, slots=True)
class SitesConfig:
    checksum: str
    sites: Mapping[str, Site] = field(default_factory=dict)
    source: str = "<sites>"
    # The receiving day's time zone (IANA name): a block is a calendar day there.
    timezone: str = "UTC"
    policies: Mapping[str, DataPolicy] = field(default_factory=dict)
    # A view for one data type (:meth:`for_type`): its name, and whether its blocks go to the tape archive.
    data_type: str | None = None
    to_tape: bool = True

    @property
    def tier0(self) -> Site:
        return next(s for s in self.sites.values() if s.tier0)

    @property
    def archive(self) -> Site:
        return next(s for s in self.sites.values() if s.archive)

    @property
    def queues(self) -> tuple[str, ...]:
        """The Celery queues the sites name (besides the default one), in policy order."""
        return tuple(dict.fromkeys(s.queue for s in self.sites.values() if s.queue))

    @property
    def destinations(self) -> list[Site]:
        return [s for s in self.sites.values() if s.is_destination]

    def policy(self, data_type: str) -> DataPolicy:
        """The policy of ``data_type`` (``RAW``, ``RTRAW``, ``ESD``): its own section, else the sites' shares."""
        key = str(data_type).upper()
        if key in self.policies:
            return self.policies[key]
        shares = {s.name: s.share for s in self.sites.values() if s.is_destination}
        return DataPolicy(data_type=key, shares=shares, archive=True)

    def destinations_for(self, data_type: str) -> list[Site]:
        """The destination sites of ``data_type``, each with that type's share (so ``keeps`` applies it)."""
        shares = self.policy(data_type).shares
        return [replace(s, share=shares[s.name]) for s in self.sites.values() if shares.get(s.name, 0) > 0]

    def _not_a_view(self) -> None:
        if self.data_type is not None:
            raise ValueError(f"the {self.data_type} view of the site policy is not a policy file")

    def for_type(self, data_type: object) -> SitesConfig:
        """The policy as ``data_type``'s blocks see it: each disk destination with that type's share (0 if the
        type's policy leaves it out), and ``to_tape`` False if the type is not archived. A type without a
        policy section sees the sites unchanged. Planning, progress and audits of a block take this view, so
        a block's targets are only the sites its type goes to."""
        key = str(getattr(data_type, "value", data_type)).upper()
        if self.data_type is not None:
            if self.data_type != key:
                raise ValueError(f"a view of the policy for {self.data_type} cannot be viewed as {key}")
            return self
        if key not in self.policies:
            return replace(self, data_type=key)
        policy = self.policies[key]
        sites = {
            name: replace(s, share=policy.shares.get(name, Fraction(0))) if s.role == "disk" and not s.tier0 else s
            for name, s in self.sites.items()
        }
        return replace(self, sites=sites, data_type=key, to_tape=policy.archive)

    def __getitem__(self, name: str) -> Site:
        try:
            return self.sites[name]
        except KeyError:
            raise ConfigError(self.source, "site", name, f"unknown site; known: {', '.join(self.sites)}") from None

    def route_to(self, name: str) -> list[Site]:
        """The hops a copy to ``name`` goes through, ending with the site itself."""
        site = self[name]
        return [self[hop] for hop in site.via] + [site]

    def with_url_prefixes(self, prefixes: Mapping[str, str]) -> SitesConfig:
        """The same policy with some sites' URL prefixes replaced (the local grid's loopback servers)."""
        self._not_a_view()
        sites = {n: replace(s, url_prefix=prefixes.get(n, s.url_prefix)) for n, s in self.sites.items()}
        raw: dict[str, Any] = {"checksum": self.checksum, "timezone": self.timezone, "sites": _as_raw(sites)}
        if self.policies:
            raw["policies"] = _policies_raw(self.policies)
        return validate_sites(raw, source=self.source)

    def to_raw(self) -> dict[str, Any]:
        self._not_a_view()
        raw: dict[str, Any] = {"checksum": self.checksum, "timezone": self.timezone, "sites": _as_raw(self.sites)}
        if self.policies:
            raw["policies"] = _policies_raw(self.policies)
        return raw


def _policies_raw(policies: Mapping[str, DataPolicy]) -> dict[str, dict[str, Any]]:
    return {
        name: {"archive": p.archive, "shares": {site: str(share) for site, share in p.shares.items()}}
        for name, p in policies.items()
    }


def _as_raw(sites: Mapping[str, Site]) -> dict[str, dict[str, Any]]:
    raw: dict[str, dict[str, Any]] = {}
    for name, s in sites.items():
        entry: dict[str, Any] = {"role": s.role, "url_prefix": s.url_prefix}
        if s.tier0:
            entry["tier0"] = True
        if s.archive:
            entry["archive"] = True
        if s.share:
            entry["share"] = str(s.share)
        if s.via:
            entry["via"] = list(s.via)
        if s.queue:
            entry["queue"] = s.queue
        raw[name] = entry
    return raw


def _parse_share(source: str, name: str, value: object, field_name: str | None = None) -> Fraction:
    field_name = field_name or f"sites.{name}.share"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(source, field_name, value, "expected a number or a fraction such as '1/3'")
    try:
        share = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(source, field_name, value, "expected a number or a fraction such as '1/3'") from None
    if not 0 <= share <= 1:
        raise ConfigError(source, field_name, value, "must be between 0 and 1")
    return share.limit_denominator(1000)


def _parse_site(source: str, name: object, raw: object) -> Site:
    if not isinstance(name, str) or not _SITE_NAME.fullmatch(name):
        raise ConfigError(source, "sites", name, "site names are upper-case letters, digits, '-' or '_'")
    if not isinstance(raw, Mapping):
        raise ConfigError(source, f"sites.{name}", raw, "expected a mapping of site settings")
    unknown = set(raw) - _SITE_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(source, f"sites.{name}.{key}", raw[key], f"unknown setting; allowed: {sorted(_SITE_KEYS)}")
    role = raw.get("role")
    if role not in ("disk", "tape"):
        raise ConfigError(source, f"sites.{name}.role", role, "must be 'disk' or 'tape'")
    url_prefix = raw.get("url_prefix")
    if not isinstance(url_prefix, str) or not url_prefix:
        raise ConfigError(
            source, f"sites.{name}.url_prefix", url_prefix, "required: a URL such as root://host:1094//path"
        )
    parts = urlsplit(url_prefix)
    if parts.scheme not in SUPPORTED_SCHEMES:
        raise ConfigError(
            source, f"sites.{name}.url_prefix", url_prefix, f"scheme must be one of {', '.join(SUPPORTED_SCHEMES)}"
        )
    if parts.scheme != "file" and not parts.netloc:
        raise ConfigError(source, f"sites.{name}.url_prefix", url_prefix, "has no host")
    if parts.query or parts.fragment:
        raise ConfigError(source, f"sites.{name}.url_prefix", url_prefix, "must not carry a query or fragment")
    for flag in ("tier0", "archive"):
        if flag in raw and not isinstance(raw[flag], bool):
            raise ConfigError(source, f"sites.{name}.{flag}", raw[flag], "must be true or false")
    share = _parse_share(source, name, raw["share"]) if "share" in raw else Fraction(0)
    via = raw.get("via", [])
    if not isinstance(via, list) or not all(isinstance(v, str) for v in via):
        raise ConfigError(source, f"sites.{name}.via", via, "must be a list of site names")
    queue = raw.get("queue")
    if queue is not None and (not isinstance(queue, str) or not _QUEUE_NAME.fullmatch(queue)):
        raise ConfigError(
            source, f"sites.{name}.queue", queue, "a Celery queue name: lower-case letters, digits, '_', '.', '-'"
        )
    site = Site(
        name=name,
        role=role,
        url_prefix=url_prefix,
        share=share,
        tier0=bool(raw.get("tier0", False)),
        archive=bool(raw.get("archive", False)),
        via=tuple(via),
        queue=queue,
    )
    if site.tier0 and role != "disk":
        raise ConfigError(source, f"sites.{name}.role", role, "the tier0 site must be a disk site")
    if site.archive and role != "tape":
        raise ConfigError(source, f"sites.{name}.role", role, "the archive site must be a tape site")
    if role == "tape" and share:
        raise ConfigError(source, f"sites.{name}.share", raw["share"], "a tape site takes no share: it archives")
    return site


def validate_sites(raw: object, *, source: str = "<sites>") -> SitesConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "<top>", raw, "expected a mapping with 'checksum' and 'sites'")
    unknown = set(raw) - set(_TOP_KEYS)
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(source, key, raw[key], f"unknown top-level setting; allowed: {', '.join(_TOP_KEYS)}")
    timezone = raw.get("timezone", "UTC")
    try:
        if not isinstance(timezone, str):
            raise InvalidNameError("TimeZone", timezone, "")
        day_zone(timezone)
    except InvalidNameError:
        raise ConfigError(
            source, "timezone", timezone, "not an IANA time zone name such as UTC or Asia/Shanghai"
        ) from None
    checksum = raw.get("checksum")
    if checksum not in SUPPORTED_CHECKSUMS:
        raise ConfigError(source, "checksum", checksum, f"must be one of {', '.join(SUPPORTED_CHECKSUMS)}")
    raw_sites = raw.get("sites")
    if not isinstance(raw_sites, Mapping) or not raw_sites:
        raise ConfigError(source, "sites", raw_sites, "expected a non-empty mapping of site name to settings")
    sites = {name: _parse_site(source, name, body) for name, body in raw_sites.items()}
    _check_roles(source, sites.values())
    for site in sites.values():
        _check_route(source, site, sites)
    policies = _parse_policies(source, raw.get("policies", {}), sites)
    return SitesConfig(checksum=checksum, sites=sites, source=source, policies=policies, timezone=timezone)


def _parse_policies(source: str, raw: object, sites: Mapping[str, Site]) -> dict[str, DataPolicy]:
    # Imported here: naming is the one place that knows the data types.
    from rawflow.naming import DataType

    if not isinstance(raw, Mapping):
        raise ConfigError(source, "policies", raw, "expected a mapping of data type (e.g. ESD) to its policy")
    policies: dict[str, DataPolicy] = {}
    for data_type, body in raw.items():
        where = f"policies.{data_type}"
        if not isinstance(data_type, str) or data_type not in {t.value for t in DataType}:
            raise ConfigError(source, "policies", data_type, f"unknown data type; known: {', '.join(DataType)}")
        if not isinstance(body, Mapping):
            raise ConfigError(source, where, body, "expected a mapping with 'shares' and 'archive'")
        unknown = set(body) - _POLICY_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(source, f"{where}.{key}", body[key], f"unknown setting; allowed: {sorted(_POLICY_KEYS)}")
        archive = body.get("archive", True)
        if not isinstance(archive, bool):
            raise ConfigError(source, f"{where}.archive", archive, "must be true or false")
        raw_shares = body.get("shares", {})
        if not isinstance(raw_shares, Mapping):
            raise ConfigError(source, f"{where}.shares", raw_shares, "expected a mapping of site name to share")
        shares: dict[str, Fraction] = {}
        for name, value in raw_shares.items():
            field_name = f"{where}.shares.{name}"
            site = sites.get(name)
            if site is None:
                raise ConfigError(source, field_name, name, f"unknown site; known: {', '.join(sites)}")
            if site.role != "disk" or site.tier0:
                raise ConfigError(source, field_name, name, "a destination must be a disk site other than the tier0")
            shares[name] = _parse_share(source, name, value, field_name)
        for name, share in shares.items():
            for hop in sites[name].via:
                if shares.get(hop, Fraction(0)) < share:
                    raise ConfigError(
                        source, f"{where}.shares.{name}", str(share), f"its route hop {hop} keeps less of {data_type}"
                    )
        policies[data_type] = DataPolicy(data_type=data_type, shares=shares, archive=archive)
    return policies


def _check_roles(source: str, sites: Iterable[Site]) -> None:
    sites = list(sites)
    for flag in ("tier0", "archive"):
        flagged = [s.name for s in sites if getattr(s, flag)]
        if len(flagged) != 1:
            raise ConfigError(source, flag, flagged, f"exactly one site must be marked {flag}: true")
    if not any(s.is_destination for s in sites):
        raise ConfigError(source, "share", 0, "no destination: at least one disk site needs a share above 0")


def _check_route(source: str, site: Site, sites: Mapping[str, Site]) -> None:
    for hop in site.via:
        if hop not in sites:
            raise ConfigError(source, f"sites.{site.name}.via", hop, "unknown site")
        if hop == site.name:
            raise ConfigError(source, f"sites.{site.name}.via", hop, "a site cannot route through itself")
        hop_site = sites[hop]
        if hop_site.role != "disk":
            raise ConfigError(source, f"sites.{site.name}.via", hop, "a hop must be a disk site")
        if hop_site.via:
            raise ConfigError(source, f"sites.{site.name}.via", hop, "a hop must itself be reached directly")
        if hop_site.share < site.share:
            # The hop keeps the file only if its share covers every file this site keeps.
            raise ConfigError(
                source, f"sites.{site.name}.via", hop, f"hop share {hop_site.share} is below this site's {site.share}"
            )


def load_sites(path: str | Path) -> SitesConfig:
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(source, "<file>", str(path), exc.strerror or str(exc)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "<file>"
        raise ConfigError(source, where, None, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return validate_sites(raw, source=source)


def default_sites_path() -> Path:
    """``$RAWFLOW_SITES`` if set, else the repository's ``config/sites.yaml``."""
    import os

    env = os.environ.get("RAWFLOW_SITES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "config" / "sites.yaml"


def site_policy_path(explicit: str | Path | None = None) -> Path:
    """The site policy in force, found as the ``rawflow`` CLI finds it: ``explicit`` (``--sites``), else
    ``$RAWFLOW_SITES``, else the local grid's (``rawflow grid up`` writes one with its loopback URLs), else the
    repository's ``config/sites.yaml``. Reads at most the grid's small state file."""
    import os

    if explicit:
        return Path(explicit)
    env = os.environ.get("RAWFLOW_SITES")
    if env:
        return Path(env)
    from rawflow.grid.stack import GridState, default_var_dir

    grid = GridState.load(default_var_dir()).values.get("sites_path")
    return Path(str(grid)) if grid else default_sites_path()
