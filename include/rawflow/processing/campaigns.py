"""Campaign steering files (production campaigns and user analyses): loading, validation and splitting.

A campaign file is YAML validated against ``schemas/campaign.schema.json`` and then against what the schema
cannot say (known sites, a step chain whose data types connect, a date range in order). Every mistake is ONE
line naming the file, the field and the value (:class:`CampaignError`, a ConfigError), shown by
``rawflow campaign check FILE``, as a warning of ``dags/rawflow_campaigns.py`` (which makes the valid files'
DAGs) and in Airflow's import errors, as those of ``dags/rawflow_campaign_errors.py``
(:func:`check_campaign_folder`, :class:`InvalidCampaignFiles`). The line is built from untrusted text (file
names, YAML keys and values): it is escaped to one line, names and values are quoted when they are not plain,
and every part is bounded in length (:func:`campaign_error_line`).

Splitters are pure functions with exact sub-job counts: by files (N per job), by run (one job per run), by
parameters (one job per combination). Sub-job keys are deterministic — campaign + step + inputs (+ parameters)
— so a re-run, a restart or a second DAG run never submits the same work twice. An MC campaign (``kind: mc``)
has no input: its first step is a generator (``detsim``) run as ``mc.jobs`` sub-jobs (× each combination of a
parameter splitter), keyed by campaign + step + job number (+ parameters) (:func:`generator_jobs`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from importlib.resources import files as resource_files
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from rawflow.errors import ConfigError, InvalidNameError, RawflowError
from rawflow.naming import DataType, block_id_for, parse_block_id, parse_lfn
from rawflow.processing.planning import STAGE_TYPES

SCHEMA_RESOURCE = "schemas/campaign.schema.json"
PAYLOAD_INPUT: dict[str, tuple[DataType, ...]] = {
    "raw2rtraw": (DataType.RAW,),
    "rec": (DataType.RTRAW, DataType.CALIB),
    "dqm": (DataType.RTRAW,),
    "detsim": (),  # a generator: reads no file
    "elecsim": (DataType.DETSIM,),
    "cal": (DataType.ELECSIM,),
}
"""The data types each payload reads (none: a generator, the first step of an MC campaign)."""
GENERATOR_SET_PARAMETERS = ("seed", "events", "run", "sequence", "start_time_ns")
"""A generator's parameters the campaign sets per sub-job (from ``mc`` and the job key): not the author's."""
CAMPAIGNS_DIR_ENV = "RAWFLOW_CAMPAIGNS_DIR"
# Bounds of the one-line error's parts (characters) and of the files one import error lists.
SOURCE_LIMIT, FIELD_LIMIT, VALUE_LIMIT, REASON_LIMIT = 200, 80, 120, 200
LISTED_FILES_LIMIT = 50


class CampaignError(ConfigError):
    """A steering file that does not validate: ONE line ``<file>: <field>=<value>: <reason>``, made safe to show
    (:func:`campaign_error_line`); ``source``, ``field``, ``value`` and ``reason`` keep the raw parts."""

    def __init__(self, source: str, field: str, value: object, reason: str) -> None:
        # Not ConfigError's message: its raw repr of the value could span lines, be huge or fail to print.
        self.source, self.field, self.value, self.reason = source, field, value, reason
        Exception.__init__(self, campaign_error_line(source, field, value, reason))


class InvalidCampaignFiles(RawflowError, ValueError):
    """The steering files of a folder that do not validate, one line each: raised by
    ``dags/rawflow_campaign_errors.py`` so that Airflow records them as that file's import error."""

    def __init__(self, folder: str | Path, lines: Sequence[str]) -> None:
        self.folder = str(folder)
        self.lines = tuple(lines)
        super().__init__(campaign_files_message(folder, self.lines))


# --- one safe line from untrusted text ---------------------------------------------------------------------
def _escaped(text: str) -> str:
    """``text`` with each character that could end or fake a line (control characters, line and paragraph
    separators, bidi controls, other non-printables) written as its backslash escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _bounded(text: str, limit: int, *, keep_end: bool = False) -> str:
    """At most ``limit`` characters: the start (or, for a path, the end) and an ellipsis."""
    if len(text) <= limit:
        return text
    return "…" + text[len(text) - limit + 1 :] if keep_end else text[: limit - 1] + "…"


def _quoted(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` quoted with its escapes (``repr``), at most ``limit`` characters: cut inside the quotes."""
    quoted = _escaped(repr(text))
    if len(quoted) <= limit:
        return quoted
    return quoted[0] + _bounded(quoted[1:-1], limit - 2, keep_end=keep_end) + quoted[-1]


def _name(text: str, limit: int, *, keep_end: bool = False) -> str:
    """A file or field name as is when it is plain printable text; else quoted, with its escapes."""
    plain = (
        text != ""
        and text.isprintable()
        and text == text.strip()
        and ": " not in text
        and not any(c in text for c in "'\"\\=")
    )
    return _bounded(text, limit, keep_end=keep_end) if plain else _quoted(text, limit, keep_end=keep_end)


def _value(value: object, limit: int) -> str:
    """The value as Python writes it (strings quoted, with their escapes), bounded."""
    if isinstance(value, str):
        return _quoted(value, limit)
    try:
        text = repr(value)
    except Exception:  # e.g. an int too long to print
        text = f"<{type(value).__name__}>"
    return _bounded(_escaped(text), limit)


def campaign_error_line(source: str, field: str, value: object, reason: str) -> str:
    """The one line of a steering-file mistake, ``<file>: <field>=<value>: <reason>`` — safe to show wherever
    it goes (terminal, log, Airflow's import errors): one line, the file and field as is when plain and quoted
    otherwise, the value quoted (``repr``), every part bounded (at most ~600 characters)."""
    return (
        f"{_name(str(source), SOURCE_LIMIT, keep_end=True)}: {_name(str(field), FIELD_LIMIT)}="
        f"{_value(value, VALUE_LIMIT)}: {_bounded(_escaped(str(reason)), REASON_LIMIT)}"
    )


def campaign_files_message(folder: str | Path, lines: Sequence[str], *, limit: int = LISTED_FILES_LIMIT) -> str:
    """The import error of a campaigns folder: a head line, then each invalid file's one line (at most
    ``limit``; the count of the others after them)."""
    count = len(lines)
    files, verb, them = ("file", "does", "it") if count == 1 else ("files", "do", "them")
    head = (
        f"{count} campaign steering {files} in {_name(str(folder), SOURCE_LIMIT, keep_end=True)} {verb} not "
        f"validate: no DAG for {them}, the valid campaigns load (rawflow campaign check FILE gives the same line)"
    )
    limit_line = SOURCE_LIMIT + FIELD_LIMIT + VALUE_LIMIT + REASON_LIMIT + 10
    listed = [_bounded(_escaped(line), limit_line) for line in lines[:limit]]
    if count > limit:
        listed.append(f"… and {count - limit} more")
    return "\n".join([head, *listed])


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    payload: str
    output_data_type: DataType
    parameters: Mapping[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Splitter:
    by: str  # files | run | parameters
    files_per_job: int = 1
    parameters: Mapping[str, tuple[str | int | float | bool, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MonteCarlo:
    """An MC campaign's production: ``jobs`` generator sub-jobs of ``events_per_job`` events, files of run
    ``run`` filed under ``day``."""

    jobs: int
    events_per_job: int
    run: int
    day: date

    @property
    def block_id(self) -> str:
        return block_id_for(self.day)


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    kind: str
    steps: tuple[Step, ...]
    backend: str
    splitter: Splitter
    output_data_type: DataType
    destinations: tuple[str, ...]
    input_data_type: DataType | None = None
    input_site: str | None = None
    blocks: tuple[str, ...] = ()
    first_day: date | None = None
    last_day: date | None = None  # None with first_day: open-ended
    query: Mapping[str, Any] = field(default_factory=dict)
    site: str | None = None
    priority: int = 5
    max_attempts: int = 3
    user: str | None = None
    description: str = ""
    source: str = "<campaign>"
    mc: MonteCarlo | None = None

    @property
    def dag_id(self) -> str:
        return f"rawflow_campaign_{self.name}"

    @property
    def generated(self) -> bool:
        """Whether the first step makes its events (an MC campaign) rather than reading input files."""
        return not PAYLOAD_INPUT.get(self.steps[0].payload, (DataType.RAW,))

    def input_blocks(self, today: date) -> list[str]:
        """The blocks the campaign covers as of ``today`` (pure): listed blocks, or the date range up to today;
        an MC campaign's one block, its ``mc.day``."""
        if self.mc is not None:
            return [self.mc.block_id]
        if self.blocks:
            return sorted(self.blocks)
        if self.first_day is None:
            return []
        last = min(self.last_day or today, today)
        days = (last - self.first_day).days
        return [block_id_for(self.first_day + timedelta(days=i)) for i in range(days + 1)]

    def wants(self, lfn: str) -> bool:
        """Whether an input file matches the campaign's metadata query (pure)."""
        parsed = parse_lfn(lfn).file
        runs = self.query.get("runs")
        if runs is not None and parsed.run_number not in runs:
            return False
        stream = self.query.get("stream")
        return stream is None or parsed.stream_name == stream


# --- loading and validation --------------------------------------------------------------------------------
class _SteeringLoader(yaml.SafeLoader):
    """YAML's safe loader without its implicit timestamps: an unquoted ``2026-11-21`` stays the text the schema
    expects, and ``2026-13-40`` is the field's "not a date" line instead of an error naming no field."""


_SteeringLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@cache
def campaign_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(resource_files("rawflow").joinpath(SCHEMA_RESOURCE).read_text())
    return schema


def _path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top>"


def _short(value: Any) -> Any:
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        return text if len(text) <= 60 else text[:57] + "..."
    return value


def _schema_error(source: str, error: jsonschema.ValidationError) -> CampaignError:
    """One line from the most relevant schema error: the field's path, its value, and what was expected."""
    path = _path(error.absolute_path)
    instance: Any = error.instance
    schema: Any = error.schema
    validator_value: Any = error.validator_value
    if error.validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else "?"
        return CampaignError(source, f"{path}.{missing}" if error.absolute_path else missing, None, "missing")
    if error.validator == "additionalProperties":
        extra = sorted(set(instance) - set(schema.get("properties", {})))
        field_name = f"{path}.{extra[0]}" if error.absolute_path and extra else (extra[0] if extra else path)
        return CampaignError(source, field_name, _short(instance.get(extra[0])) if extra else None, "unknown field")
    if error.validator == "enum":
        expected = ", ".join(str(v) for v in validator_value)
        return CampaignError(source, path, _short(error.instance), f"expected one of {expected}")
    if error.validator == "oneOf" and path == "input":
        return CampaignError(source, path, _short(error.instance), "give exactly one of blocks, date_range, query")
    if error.validator == "pattern":
        return CampaignError(source, path, _short(error.instance), f"does not match {error.validator_value}")
    if error.validator == "type":
        return CampaignError(source, path, _short(error.instance), f"expected {error.validator_value}")
    reason = str(error.message).splitlines()[0]
    if len(reason) > 120:
        reason = reason[:117] + "..."
    return CampaignError(source, path, _short(error.instance), reason)


def _day(source: str, field_name: str, text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CampaignError(source, field_name, text, "not a date (YYYY-MM-DD)") from None


def parse_campaign(document: Any, *, source: str, known_sites: Iterable[str] | None = None) -> Campaign:
    """A validated :class:`Campaign` from a parsed YAML document (pure). ``known_sites``: check site names."""
    if not isinstance(document, dict):
        raise CampaignError(source, "<top>", _short(document), "expected a mapping of campaign fields")
    validator_cls = jsonschema.validators.validator_for(campaign_schema())
    errors = list(validator_cls(campaign_schema()).iter_errors(document))
    if errors:
        # The deepest error is the most specific: it names the field the author got wrong.
        best = max(errors, key=lambda e: (len(e.absolute_path), e.validator != "oneOf"))
        raise _schema_error(source, jsonschema.exceptions.best_match([best]) or best)

    steps = tuple(
        Step(
            name=s["name"],
            payload=s["payload"],
            output_data_type=DataType(s["output_data_type"]),
            parameters=dict(s.get("parameters") or {}),
        )
        for s in document["steps"]
    )
    names = [s.name for s in steps]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise CampaignError(source, f"steps[{i}].name", name, "the same step name twice")
    raw_input = document.get("input") or {}
    input_type = DataType(raw_input["data_type"]) if raw_input else None
    kind = document["kind"]
    if kind == "mc" and raw_input:
        raise CampaignError(source, "input", _short(raw_input), "an mc campaign generates its events: no input")
    if kind != "mc" and "mc" in document:
        raise CampaignError(source, "mc", _short(document["mc"]), f"only an mc campaign generates events, not {kind}")
    # The chain must connect: each step reads what the one before wrote (the first reads the input; an MC
    # campaign's first step is a generator, which reads nothing).
    reads = input_type
    for i, step in enumerate(steps):
        wanted = PAYLOAD_INPUT[step.payload]
        if not wanted:  # a generator
            if i != 0 or kind != "mc":
                raise CampaignError(
                    source, f"steps[{i}].payload", step.payload, "a generator: only the first step of an mc campaign"
                )
            reserved = sorted(set(step.parameters) & set(GENERATOR_SET_PARAMETERS))
            if reserved:
                raise CampaignError(
                    source,
                    f"steps[{i}].parameters.{reserved[0]}",
                    step.parameters[reserved[0]],
                    "set per job by the campaign (from mc and the job key)",
                )
        elif i == 0 and kind == "mc":
            raise CampaignError(
                source, "steps[0].payload", step.payload, "an mc campaign starts with a generator (detsim)"
            )
        elif reads is not None and reads not in wanted:
            expected = " or ".join(t.value for t in wanted)
            raise CampaignError(source, f"steps[{i}].payload", step.payload, f"reads {expected}, gets {reads}")
        makes = STAGE_TYPES[step.payload][1]
        if makes is not None and step.output_data_type is not makes:
            raise CampaignError(
                source, f"steps[{i}].output_data_type", step.output_data_type.value, f"{step.payload} writes {makes}"
            )
        reads = step.output_data_type
    output_type = DataType(document["output"]["data_type"])
    if steps[-1].output_data_type is not output_type:
        raise CampaignError(
            source, "output.data_type", output_type.value, f"the last step writes {steps[-1].output_data_type}"
        )
    blocks: tuple[str, ...] = ()
    for i, block in enumerate(raw_input.get("blocks") or []):
        try:
            parse_block_id(block)
        except InvalidNameError:
            raise CampaignError(source, f"input.blocks[{i}]", block, "not a day (YYYYMMDD)") from None
        blocks += (block,)
    first = last = None
    if "date_range" in raw_input:
        first = _day(source, "input.date_range.first", raw_input["date_range"]["first"])
        if "last" in raw_input["date_range"]:
            last = _day(source, "input.date_range.last", raw_input["date_range"]["last"])
            if last < first:
                raise CampaignError(source, "input.date_range.last", last.isoformat(), "before first")
    splitter_doc = document["splitter"]
    splitter = Splitter(
        by=splitter_doc["by"],
        files_per_job=int(splitter_doc.get("files_per_job", 1)),
        parameters={k: tuple(v) for k, v in (splitter_doc.get("parameters") or {}).items()},
    )
    mc = None
    if "mc" in document:
        doc = document["mc"]
        if kind == "mc":
            reserved = sorted(set(splitter.parameters) & set(GENERATOR_SET_PARAMETERS))
            if reserved:
                raise CampaignError(
                    source,
                    f"splitter.parameters.{reserved[0]}",
                    _short(list(splitter.parameters[reserved[0]])),
                    "set per job by the campaign (from mc and the job key)",
                )
        mc = MonteCarlo(
            jobs=int(doc["jobs"]),
            events_per_job=int(doc["events_per_job"]),
            run=int(doc["run"]),
            day=_day(source, "mc.day", doc["day"]),
        )
    if known_sites is not None:
        sites = set(known_sites)
        checks = [("input.site", raw_input.get("site"))]
        checks += [(f"output.destinations[{i}]", s) for i, s in enumerate(document["output"]["destinations"])]
        for field_name, site in checks:
            if site is not None and site not in sites:
                raise CampaignError(source, field_name, site, f"unknown site (known: {', '.join(sorted(sites))})")
    return Campaign(
        name=document["name"],
        kind=document["kind"],
        steps=steps,
        backend=document["backend"],
        splitter=splitter,
        output_data_type=output_type,
        destinations=tuple(document["output"]["destinations"]),
        input_data_type=input_type,
        input_site=raw_input.get("site"),
        blocks=blocks,
        first_day=first,
        last_day=last,
        query=dict(raw_input.get("query") or {}),
        site=document.get("site"),
        priority=int(document.get("priority", 5)),
        max_attempts=int(document.get("max_attempts", 3)),
        user=document.get("user"),
        description=str(document.get("description") or ""),
        source=source,
        mc=mc,
    )


def load_campaign(path: str | Path, *, known_sites: Iterable[str] | None = None) -> Campaign:
    """Read and validate one steering file; every mistake is one CampaignError line naming the file."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CampaignError(source, "<file>", None, f"cannot read: {exc.strerror or exc}") from None
    try:
        document = yaml.load(text, Loader=_SteeringLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "<yaml>"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CampaignError(source, where, None, f"not YAML: {problem}") from None
    except ValueError as exc:  # a scalar YAML cannot build, e.g. an integer of thousands of digits
        raise CampaignError(source, "<yaml>", None, f"not loadable: {exc}") from None
    try:
        return parse_campaign(document, source=source, known_sites=known_sites)
    except CampaignError:
        raise
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. an alias that contains itself
        raise CampaignError(source, "<top>", None, f"cannot check: {type(exc).__name__}: {exc}") from None


def campaign_files(folder: str | Path) -> list[Path]:
    """The steering files of a folder (``*.yaml``/``*.yml``), sorted; a missing folder has none."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def campaigns_folder(default: str | Path) -> Path:
    """The campaigns folder: ``$RAWFLOW_CAMPAIGNS_DIR``, else ``default``."""
    configured = os.environ.get(CAMPAIGNS_DIR_ENV)
    return Path(configured) if configured else Path(default)


@dataclass(frozen=True, slots=True)
class CampaignFolder:
    """A campaigns folder checked: its valid campaigns (file, campaign) and one line per file that gets none."""

    folder: Path
    campaigns: tuple[tuple[Path, Campaign], ...]
    errors: tuple[str, ...]


def check_campaign_folder(folder: str | Path, *, sites: str | Path | None = None) -> CampaignFolder:
    """Load every steering file of ``folder``. A file that does not validate — or that repeats the name of a
    file before it — is one line in ``errors``; no file stops the others.

    Site names are checked as ``rawflow campaign check`` checks them: against the site policy found as the CLI
    finds it (``sites``, else ``$RAWFLOW_SITES``, else the local grid's, else config/sites.yaml), read once.
    When the policy cannot be read no file's sites can be checked, so each file is one line saying so and gets
    no DAG (as the CLI accepts none)."""
    root = Path(folder)
    try:
        paths = campaign_files(root)
    except OSError as exc:
        line = str(CampaignError(str(root), "<folder>", None, f"cannot list: {exc.strerror or exc}"))
        return CampaignFolder(root, (), (line,))
    campaigns: list[tuple[Path, Campaign]] = []
    errors: list[str] = []
    first_with: dict[str, Path] = {}
    known_sites, policy_problem = _policy_sites(sites) if paths else ((), None)
    for path in paths:
        if policy_problem is not None:
            errors.append(str(CampaignError(str(path), "<sites>", None, policy_problem)))
            continue
        try:
            campaign = load_campaign(path, known_sites=known_sites)
        except CampaignError as exc:
            errors.append(str(exc))
            continue
        except Exception as exc:  # never let one file break the others
            errors.append(str(CampaignError(str(path), "<file>", None, f"cannot check: {type(exc).__name__}: {exc}")))
            continue
        if campaign.name in first_with:
            errors.append(
                str(CampaignError(str(path), "name", campaign.name, f"the same name as {first_with[campaign.name]}"))
            )
            continue
        first_with[campaign.name] = path
        campaigns.append((path, campaign))
    return CampaignFolder(root, tuple(campaigns), tuple(errors))


def _policy_sites(sites: str | Path | None) -> tuple[tuple[str, ...], str | None]:
    """The site names of the policy in force, or why it cannot be read (one line)."""
    from rawflow.sites import load_sites, site_policy_path

    path: Path | str = sites or "the site policy"
    try:
        path = site_policy_path(sites)
        return tuple(load_sites(path).sites), None
    except Exception as exc:  # any failure to read the policy is reported, never raised into the DAG file
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return (), f"site names not checked: cannot read {path}: {first}"


# --- splitters (pure) ---------------------------------------------------------------------------------------
def split_by_files(files: Sequence[str], files_per_job: int) -> list[tuple[str, ...]]:
    """Sorted files in groups of ``files_per_job``: ceil(len / N) sub-jobs."""
    if files_per_job < 1:
        raise ValueError("files_per_job must be at least 1")
    ordered = sorted(set(files))
    return [tuple(ordered[i : i + files_per_job]) for i in range(0, len(ordered), files_per_job)]


def split_by_run(files: Sequence[str]) -> list[tuple[str, ...]]:
    """One sub-job per run (sorted by run), its files sorted."""
    runs: dict[int, list[str]] = {}
    for lfn in sorted(set(files)):
        runs.setdefault(parse_lfn(lfn).file.run_number, []).append(lfn)
    return [tuple(runs[run]) for run in sorted(runs)]


def split_by_parameters(parameters: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """One combination per sub-job: the product of every parameter's values (names sorted)."""
    names = sorted(parameters)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(parameters[n] for n in names))]


@dataclass(frozen=True, slots=True)
class SubJob:
    key: str
    step: str
    inputs: tuple[str, ...]
    parameters: Mapping[str, Any]
    number: int | None = None  # a generator's sub-job: its number (0 … mc.jobs - 1) within its combination


def sub_job_key(campaign: str, step: str, inputs: Sequence[str], parameters: Mapping[str, Any]) -> str:
    """Deterministic: campaign + step + input LFNs (+ parameters). Readable prefix, hashed identity."""
    ident = json.dumps([campaign, step, sorted(inputs), sorted(parameters.items())], default=str)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:20]
    return f"c.{campaign[:40]}.{step}.{digest}"


def split(campaign: Campaign, step: Step, files: Sequence[str]) -> list[SubJob]:
    """The sub-jobs of one step over ``files`` (pure; files outside the query are left out)."""
    wanted = [f for f in files if campaign.wants(f)] if campaign.query else list(files)
    splitter = campaign.splitter
    if splitter.by == "run":
        groups = split_by_run(wanted)
        combos: list[dict[str, Any]] = [{}]
    elif splitter.by == "files":
        groups = split_by_files(wanted, splitter.files_per_job)
        combos = [{}]
    else:
        groups = split_by_files(wanted, splitter.files_per_job) if wanted else [()]
        combos = split_by_parameters(splitter.parameters)
    return [
        SubJob(key=sub_job_key(campaign.name, step.name, group, combo), step=step.name, inputs=group, parameters=combo)
        for group in groups
        for combo in combos
    ]


def generator_key(campaign: str, step: str, number: int, parameters: Mapping[str, Any]) -> str:
    """A generator sub-job's key (deterministic): campaign + step + its number (+ parameters)."""
    return sub_job_key(campaign, step, [f"#{number:06d}"], parameters)


def generator_jobs(campaign: Campaign, step: Step) -> list[SubJob]:
    """The sub-jobs of an MC campaign's generator step (pure): ``mc.jobs`` per combination of a parameter
    splitter (one combination otherwise), no input files."""
    if campaign.mc is None:
        return []
    combos = split_by_parameters(campaign.splitter.parameters) if campaign.splitter.by == "parameters" else [{}]
    return [
        SubJob(
            key=generator_key(campaign.name, step.name, number, combo),
            step=step.name,
            inputs=(),
            parameters=combo,
            number=number,
        )
        for combo in combos
        for number in range(campaign.mc.jobs)
    ]


__all__ = [
    "CAMPAIGNS_DIR_ENV",
    "Campaign",
    "CampaignError",
    "CampaignFolder",
    "InvalidCampaignFiles",
    "MonteCarlo",
    "Splitter",
    "Step",
    "SubJob",
    "campaign_error_line",
    "campaign_files",
    "campaign_files_message",
    "campaign_schema",
    "campaigns_folder",
    "check_campaign_folder",
    "generator_jobs",
    "generator_key",
    "load_campaign",
    "parse_campaign",
    "split",
    "split_by_files",
    "split_by_parameters",
    "split_by_run",
    "sub_job_key",
]
