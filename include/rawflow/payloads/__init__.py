"""Keep-up payloads: RAW → RTRAW (``raw2rtraw``), RTRAW → ESD (``rec``), run summaries (``dqm``); and the Monte
Carlo chain of MC campaigns: ``detsim`` (events from a seed → DETSIM), ``elecsim`` (DETSIM → ELECSIM), ``cal``
(ELECSIM → CALIB), then ``rec`` (CALIB → ESD).

Standalone: imports only the standard library, numpy, uproot (with its own dependency awkward) and this
package, because it is deployed into the pool's software area and runs on the pool's Python (3.13; the
host's 3.11 too). Entry point: ``python -m rawflow.payloads PAYLOAD …`` (``cli.py``).
"""

PAYLOAD_VERSION = "1.0.0"
