"""Raw behaviour logs -> validated, deduplicated, enriched, partitioned Parquet (docs/ingest.md).

Public API: ``read_events`` (any supported log as a curated table), ``ingest_file`` (local file
to a bucket-shaped directory), ``ingest_object`` (an S3 object, used by the ingest handler).
"""

from shelfwise.ingest.errors import CorruptInputError, SourceGoneError, UnknownFormatError
from shelfwise.ingest.pipeline import IngestOptions, IngestSummary, ingest_file, object_hash, read_events
from shelfwise.ingest.s3 import ingest_object

__all__ = [
    "CorruptInputError",
    "IngestOptions",
    "IngestSummary",
    "SourceGoneError",
    "UnknownFormatError",
    "ingest_file",
    "ingest_object",
    "object_hash",
    "read_events",
]
