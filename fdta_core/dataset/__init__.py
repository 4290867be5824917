"""Dataset writing and tooling: chunks, provenance manifest, merge, shuffle, rec2image, integrity check.

See ``docs/dataset.md`` for the on-disk layout and example manifest queries.
"""

from ..imagecodec import JPEG_QUALITY, check_jpeg, jpeg_encoder
from .info import ChunkSummary, InfoReport, inspect
from .manifest import EXAMPLE_QUERIES, MANIFEST_NAME, query, read_identities
from .merge import merge
from .tools import rec2image, shuffle
from .writer import (
    ChunkInfo,
    ChunkWriter,
    DatasetChunk,
    chunk_name,
    chunk_range_of,
    list_chunks,
    recover,
    update_index,
    write_chunk,
    write_faceset,
)

__all__ = [
    "EXAMPLE_QUERIES",
    "JPEG_QUALITY",
    "MANIFEST_NAME",
    "ChunkInfo",
    "ChunkSummary",
    "InfoReport",
    "ChunkWriter",
    "DatasetChunk",
    "check_jpeg",
    "chunk_name",
    "chunk_range_of",
    "inspect",
    "jpeg_encoder",
    "list_chunks",
    "merge",
    "query",
    "read_identities",
    "rec2image",
    "recover",
    "shuffle",
    "update_index",
    "write_chunk",
    "write_faceset",
]
