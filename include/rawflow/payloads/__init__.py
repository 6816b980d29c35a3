"""Keep-up payloads: RAW → RTRAW (``raw2rtraw``), RTRAW → ESD (``rec``), run summaries (``dqm``).

Standalone: imports only the standard library, numpy, uproot (with its own dependency awkward) and this
package, because it is deployed into the pool's software area and runs on the pool's Python (3.13; the
host's 3.11 too). Entry point: ``python -m rawflow.payloads raw2rtraw|rec|dqm …`` (``cli.py``).
"""

PAYLOAD_VERSION = "1.0.0"
