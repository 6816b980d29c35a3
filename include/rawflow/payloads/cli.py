"""``python -m rawflow.payloads raw2rtraw|rec|dqm …``: one JSON report on stdout, exit 0.

A malformed input exits 3 with one line on stderr, ``<payload>: <file name>: <reason>``; any other error
exits 1 with one line, ``<payload>: error: <what>``; bad arguments exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rawflow.payloads import PAYLOAD_VERSION
from rawflow.payloads.errors import MalformedInput

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_MALFORMED_INPUT = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rawflow.payloads", description=__doc__)
    parser.add_argument("--version", action="version", version=PAYLOAD_VERSION)
    steps = parser.add_subparsers(dest="payload", required=True)
    raw2rtraw = steps.add_parser("raw2rtraw", help="RAW → RTRAW (ROOT)")
    raw2rtraw.add_argument("input", type=Path)
    raw2rtraw.add_argument("output", type=Path)
    rec = steps.add_parser("rec", help="RTRAW → ESD (ROOT): per-event vertex, charge, hits, time")
    rec.add_argument("input", type=Path)
    rec.add_argument("output", type=Path)
    dqm = steps.add_parser("dqm", help="summarise RTRAW/ESD files of a run as JSON (and an SVG plot)")
    dqm.add_argument("output", type=Path)
    dqm.add_argument("inputs", type=Path, nargs="+")
    dqm.add_argument("--svg", type=Path, default=None, help="also draw the charge spectrum here")
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        report = _run(args)
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
    print(json.dumps(report, sort_keys=True))
    return EXIT_OK


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.payload == "raw2rtraw":
        from rawflow.payloads import raw2rtraw

        return raw2rtraw.run(args.input, args.output)
    if args.payload == "rec":
        from rawflow.payloads import rec

        return rec.run(args.input, args.output)
    from rawflow.payloads import dqm

    return dqm.run(args.output, args.inputs, svg_path=args.svg)
