"""Test files for the transfer backends: random content seeded at a site, and the TransferFile to copy one."""

from __future__ import annotations

import os
import secrets
import zlib
from dataclasses import dataclass

from rawflow.sites import SitesConfig
from rawflow.storage.base import Storage
from rawflow.transfer import TransferFile

T0, CNAF, JINR, IN2P3 = "IHEP-EOS", "CNAF-STORM", "JINR-EOS", "IN2P3-DCACHE"


@dataclass(frozen=True)
class Seeded:
    lfn: str
    data: bytes

    @property
    def adler32(self) -> str:
        return f"{zlib.adler32(self.data) & 0xFFFFFFFF:08x}"


def seed(storage: Storage, sites: SitesConfig, site: str, count: int, size: int = 64 * 1024) -> list[Seeded]:
    """Files with random content at ``site`` under a fresh directory."""
    tag = secrets.token_hex(4)
    files = [Seeded(f"/juno/test/{tag}/f{i:03d}.dat", os.urandom(size + i)) for i in range(count)]
    for f in files:
        storage.put_bytes(sites[site].pfn(f.lfn), f.data)
    return files


def transfer(f: Seeded, sites: SitesConfig, to: str, *sources: str, hops: tuple[str, ...] = ()) -> TransferFile:
    return TransferFile(
        lfn=f.lfn,
        sources=tuple(sites[s].pfn(f.lfn) for s in sources),
        destination=sites[to].pfn(f.lfn),
        size=len(f.data),
        adler32=f.adler32,
        hops=tuple(sites[h].pfn(f.lfn) for h in hops),
    )
