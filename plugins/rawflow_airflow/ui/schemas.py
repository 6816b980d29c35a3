"""The JSON API's response models (they make the OpenAPI schema at ``/rawflow/openapi.json``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class SiteCellOut(BaseModel):
    site: str
    status: str = Field(description="Processed, Assigned (files pending) or Problematic")
    assigned: int = Field(description="files the site should hold")
    processed: int = Field(description="files held and checked (on tape for the archive)")
    problematic: int = Field(description="files given up after the retry limit")
    pending: int
    processed_pct: float
    bytes: int = Field(description="bytes the block operator moved to the site for this block")
    last_error: str | None
    updated_at: datetime
    problematic_since: datetime | None
    alerted_at: datetime | None


class MatrixRowOut(BaseModel):
    block: str
    data_type: str
    block_id: str
    status: str = Field(description="the worst status over the block's sites")
    run_id: str | None = Field(description="the block DAG's newest run for this day, if any")
    sites: dict[str, SiteCellOut]


class MatrixOut(BaseModel):
    days: int
    first_block_id: str
    sites: list[str]
    rows: list[MatrixRowOut]


class ReplicaOut(BaseModel):
    state: str
    error: str | None
    attempts: int
    updated_at: datetime


class FileOut(BaseModel):
    lfn: str
    size: int
    adler32: str
    replicas: dict[str, ReplicaOut]


class SiteAuditOut(BaseModel):
    """The latest consistency audit of the block at one site (dark/lost lists capped; counts complete)."""

    site: str
    listed: int
    expected: int
    good: int
    dark_count: int
    lost_count: int
    unchecked: int
    marked_bad: int
    dark: list[str]
    lost: dict[str, str]
    checked_at: datetime
    error: str | None


class BlockOut(BaseModel):
    block: str
    data_type: str
    block_id: str
    dag_id: str | None
    run_id: str | None
    total_files: int
    matching_files: int
    offset: int
    sites: list[str]
    status: dict[str, SiteCellOut]
    files: list[FileOut]
    audits: dict[str, SiteAuditOut] = {}


class SeriesPointOut(BaseModel):
    bucket: datetime
    site: str
    good_files: int
    good_bytes: int
    bad_files: int
    throughput_bytes_per_s: float
    error_rate: float


class SeriesOut(BaseModel):
    since: datetime
    bucket_seconds: int
    available: bool = Field(description="false when the catalogue tables are not in the monitoring database")
    points: list[SeriesPointOut]


class PartitionLagOut(BaseModel):
    topic: str
    partition: int
    committed: int | None
    low: int
    high: int
    lag: int


class KafkaOut(BaseModel):
    configured: bool
    bootstrap: str | None
    group: str
    reachable: bool
    error: str | None
    total_lag: int
    partitions: list[PartitionLagOut]
    quarantined: dict[str, int] = Field(description="messages still in quarantine, by reason")
    quarantined_total: int
