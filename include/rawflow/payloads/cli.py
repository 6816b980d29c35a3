"""``python -m rawflow.payloads raw2rtraw|rec|dqm|detsim|elecsim|cal …``: one JSON report on stdout, exit 0.

A malformed input exits 3 with one line on stderr, ``<payload>: <file name>: <reason>``; any other error
exits 1 with one line, ``<payload>: error: <what>``; bad arguments exit 2 (argparse), and so does a parameter
a payload cannot use, with one line ``<payload>: bad parameter: <what>``.

The Monte Carlo chain (ProdSys's detsim → elecsim → cal → rec): ``detsim --param seed=N --param events=N
[--param ...] OUT`` generates and simulates events; ``elecsim IN... OUT...`` (DETSIM → ELECSIM), ``cal IN...
OUT...`` (ELECSIM → CALIB) and ``rec IN... OUT...`` (CALIB → ESD, as RTRAW → ESD) each read the previous
step's files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rawflow.payloads import PAYLOAD_VERSION
from rawflow.payloads.errors import MalformedInput, ParameterError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_MALFORMED_INPUT = 3
PAIRED = ("raw2rtraw", "rec", "elecsim", "cal")
"""Payloads run over N inputs then N outputs: output i is made from input i alone."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rawflow.payloads", description=__doc__)
    parser.add_argument("--version", action="version", version=PAYLOAD_VERSION)
    steps = parser.add_subparsers(dest="payload", required=True)
    raw2rtraw = steps.add_parser("raw2rtraw", help="RAW → RTRAW (ROOT): IN... OUT... (N inputs, then N outputs)")
    raw2rtraw.add_argument("files", type=Path, nargs="+", metavar="IN... OUT...")
    rec = steps.add_parser(
        "rec",
        help="RTRAW (or CALIB) → ESD (ROOT): per-event vertex, charge, hits, time; IN... OUT... (N inputs, N outputs)",
    )
    rec.add_argument("files", type=Path, nargs="+", metavar="IN... OUT...")
    detsim = steps.add_parser(
        "detsim", help="generate and simulate events from --param seed=N --param events=N into a DETSIM file: OUT"
    )
    detsim.add_argument("output", type=Path)
    elecsim = steps.add_parser("elecsim", help="DETSIM → ELECSIM: the electronics readout; IN... OUT...")
    elecsim.add_argument("files", type=Path, nargs="+", metavar="IN... OUT...")
    cal = steps.add_parser("cal", help="ELECSIM → CALIB: calibrated PMT hits (RTRAW layout); IN... OUT...")
    cal.add_argument("files", type=Path, nargs="+", metavar="IN... OUT...")
    dqm = steps.add_parser("dqm", help="summarise RTRAW/ESD files of a run as JSON (and an SVG plot)")
    dqm.add_argument("output", type=Path)
    dqm.add_argument("inputs", type=Path, nargs="+")
    dqm.add_argument("--svg", type=Path, default=None, help="also draw the charge spectrum here")
    for step in (raw2rtraw, rec, dqm, detsim, elecsim, cal):
        step.add_argument(
            "--param",
            dest="params",
            action="append",
            default=[],
            type=_param,
            metavar="NAME=VALUE",
            help="a campaign parameter: recorded in the report (rec and the MC steps also in their provenance); "
            f"rec uses {', '.join(REC_PARAMETERS)}; detsim needs seed and events (docs/campaigns.md)",
        )
    return parser


REC_PARAMETERS = ("vertex_scale",)


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def _pairs(parser_error: Any, files: list[Path]) -> list[tuple[Path, Path]]:
    if len(files) % 2:
        parser_error(f"expected N inputs then N outputs, got {len(files)} files")
    half = len(files) // 2
    return list(zip(files[:half], files[half:], strict=True))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.payload in PAIRED:
        args.pairs = _pairs(parser.error, args.files)
    try:
        report = _run(args)
    except ParameterError as error:
        print(f"{args.payload}: bad parameter: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    except MalformedInput as error:
        print(f"{args.payload}: {_one_line(error.path.name)}: {_one_line(error.reason)}", file=sys.stderr)
        return EXIT_MALFORMED_INPUT
    except FileNotFoundError as error:
        print(f"{args.payload}: error: no such file: {_one_line(str(error.filename))}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:
        print(f"{args.payload}: error: {type(error).__name__}: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_ERROR
    report = {"payload": args.payload, "version": PAYLOAD_VERSION, **report}
    if args.params:
        report["parameters"] = dict(args.params)
    print(json.dumps(report, sort_keys=True))
    return EXIT_OK


def _run(args: argparse.Namespace) -> dict[str, Any]:
    """One payload over each (input, output) pair (dqm: all inputs into one summary); the reports merged."""
    parameters = dict(args.params)
    if args.payload == "dqm":
        from rawflow.payloads import dqm

        return dqm.run(args.output, args.inputs, svg_path=args.svg)
    if args.payload == "detsim":
        from rawflow.payloads import detsim

        return detsim.run(args.output, parameters=parameters)
    merged: dict[str, Any] = {"inputs": [], "outputs": []}
    for input_path, output_path in args.pairs:
        if args.payload == "raw2rtraw":
            from rawflow.payloads import raw2rtraw

            one = raw2rtraw.run(input_path, output_path)
        elif args.payload == "elecsim":
            from rawflow.payloads import elecsim

            one = elecsim.run(input_path, output_path, parameters=parameters)
        elif args.payload == "cal":
            from rawflow.payloads import cal

            one = cal.run(input_path, output_path, parameters=parameters)
        else:
            from rawflow.payloads import rec

            one = rec.run(input_path, output_path, parameters=parameters)
        for key, value in one.items():
            if isinstance(value, list) and key in merged:
                merged[key].extend(value)
            else:
                merged[key] = value
    return merged
