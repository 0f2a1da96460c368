"""Where ids are on disk: every file under a folder, each read as what it is, searched for needles.

A plain byte search misses what a file keeps compressed or delta-encoded, so it
would pass a folder that still holds a user. This scan decodes what the
platform writes:

- Parquet (Delta tables and their checkpoints): every string and binary value,
  nested ones included;
- RocksDB SST files (the features query's state): every key and value, read by
  RocksDB itself (``SstEntries.java`` beside this file, run with the rocksdbjni
  jar that Spark ships). The keys of deletion entries cannot be read: a file that
  holds any is a hit of kind ``sst-deletions``;
- zip files (RocksDB checkpoint versions), member by member;
- Spark's LZ4 block streams (the HDFS-backed state store's files), decompressed;
- Kafka log segments: uncompressed batches as bytes, gzip, snappy, lz4 and zstd
  batches decompressed; a batch it cannot read is a hit of kind ``unreadable``;
- gzip files (rotated logs), decompressed;
- every file, also as raw bytes.

Each needle is searched as UTF-8, UTF-16-LE and UTF-32-LE (numpy's string arrays).
A file that vanishes while the scan runs (a live checkpoint) is skipped.
"""

from __future__ import annotations

import glob
import gzip
import io
import struct
import subprocess
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from deploy.embedded.java import java_executable

SST_READER = Path(__file__).with_name("SstEntries.java")
LZ4_BLOCK_MAGIC = b"LZ4Block"
KAFKA_BATCH_HEADER = 61  # bytes of a v2 record batch before its records
KAFKA_CODECS = {0: None, 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


@dataclass(frozen=True)
class Hit:
    path: str  # relative to the scanned folder
    needle: str
    kind: str  # how it was found: bytes, parquet, sst, sst-deletions, zip, lz4, kafka, gzip, unreadable


def scan(root: Path, needles: Sequence[str]) -> list[Hit]:
    """Every (file, needle) under ``root`` where the needle is, in any form this scan reads."""
    forms = {needle: [needle.encode(codec) for codec in ("utf-8", "utf-16-le", "utf-32-le")] for needle in needles}
    hits: set[Hit] = set()
    ssts: list[Path] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        relative = str(path.relative_to(root))
        if path.suffix == ".sst":
            ssts.append(path)
        for kind, text in _readings(path, data):
            hits.update(Hit(relative, needle, kind) for needle, encoded in forms.items()
                        if kind == "unreadable" or any(form in text for form in encoded))
    for path, kind, text in _sst_entries(ssts):
        hits.update(Hit(str(path.relative_to(root)), needle, kind) for needle, encoded in forms.items()
                    if kind == "sst-deletions" or any(form in text for form in encoded))
    return sorted(hits, key=lambda hit: (hit.path, hit.needle, hit.kind))


def _readings(path: Path, data: bytes) -> Iterator[tuple[str, bytes]]:
    """(kind, bytes) of every way this scan reads the file."""
    yield "bytes", data
    if data[:4] == b"PAR1" and data[-4:] == b"PAR1":
        yield "parquet", b"\0".join(_parquet_values(data))
    elif data[:2] == b"PK":
        yield from (("zip", member) for member in _zip_members(data))
    elif data[:8] == LZ4_BLOCK_MAGIC:
        yield "lz4", _lz4_blocks(data)
    elif data[:2] == b"\x1f\x8b":
        yield "gzip", gzip.decompress(data)
    elif path.suffix == ".log" and path.stem.isdigit():  # a Kafka segment: <base offset>.log
        yield from _kafka_batches(data)


def _parquet_values(data: bytes) -> Iterator[bytes]:
    table = pq.read_table(io.BytesIO(data))
    for column in table.columns:
        for value in column.to_pylist():
            yield from _leaves(value)


def _leaves(value: object) -> Iterator[bytes]:
    """The strings and bytes anywhere in a (nested) Parquet value."""
    if isinstance(value, str):
        yield value.encode()
    elif isinstance(value, bytes):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)


def _zip_members(data: bytes) -> Iterator[bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return
    for name in archive.namelist():
        yield archive.read(name)


def _lz4_blocks(data: bytes) -> bytes:
    """An lz4-java ``LZ4BlockOutputStream`` (Spark's default codec), decompressed: per block the magic, a
    token (method in the high nibble: 1 raw, 2 LZ4), compressed and original lengths and a checksum."""
    out, at, codec = [], 0, pa.Codec("lz4_raw")
    while data[at:at + 8] == LZ4_BLOCK_MAGIC:
        token = data[at + 8]
        compressed, original = struct.unpack_from("<ii", data, at + 9)
        block = data[at + 21:at + 21 + compressed]
        if original:
            out.append(block if token >> 4 == 1 else codec.decompress(block, decompressed_size=original).to_pybytes())
        at += 21 + compressed
    return b"".join(out)


def _kafka_batches(data: bytes) -> Iterator[tuple[str, bytes]]:
    """The records of each compressed v2 batch of a segment, decompressed (uncompressed ones are in its bytes)."""
    at = 0
    while at + KAFKA_BATCH_HEADER <= len(data):
        length = struct.unpack_from(">i", data, at + 8)[0]
        end = at + 12 + length
        if length <= 0 or end > len(data):
            return  # the preallocated tail of an active segment
        magic, attributes = data[at + 16], struct.unpack_from(">h", data, at + 21)[0]
        codec = KAFKA_CODECS.get(attributes & 0x07, "unknown")
        if magic == 2 and codec is not None:
            try:
                yield "kafka", _decompress(codec, data[at + KAFKA_BATCH_HEADER:end])
            except (OSError, ValueError, pa.ArrowException):
                yield "unreadable", b""
        at = end


def _decompress(codec: str, payload: bytes) -> bytes:
    if codec == "gzip":
        return gzip.decompress(payload)
    if codec == "snappy" and payload[:8] == b"\x82SNAPPY\x00":  # xerial framing: chunks after a 16-byte header
        chunks, at, snappy = [], 16, pa.Codec("snappy")
        while at < len(payload):
            size = struct.unpack_from(">i", payload, at)[0]
            chunk = payload[at + 4:at + 4 + size]
            chunks.append(snappy.decompress(chunk, decompressed_size=_snappy_length(chunk)).to_pybytes())
            at += 4 + size
        return b"".join(chunks)
    if codec == "snappy":
        return pa.Codec("snappy").decompress(payload, decompressed_size=_snappy_length(payload)).to_pybytes()
    if codec in ("lz4", "zstd"):
        return pa.decompress(payload, codec=codec, asbytes=True)
    raise ValueError(f"codec {codec}")


def _snappy_length(chunk: bytes) -> int:
    """A raw snappy block's uncompressed length: its leading varint."""
    length, shift = 0, 0
    for byte in chunk[:5]:
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    return length


def _sst_entries(paths: list[Path]) -> Iterator[tuple[Path, str, bytes]]:
    """(path, kind, bytes): each SST's keys and values as RocksDB reads them, and one ``sst-deletions``
    reading for a file holding deletion entries."""
    present = [path for path in paths if path.exists()]
    if not present:
        return
    jar = sorted(glob.glob(str(Path(pa.__file__).parents[1] / "pyspark" / "jars" / "rocksdbjni-*.jar")))
    if not jar:
        raise FileNotFoundError("no rocksdbjni jar in pyspark's jars: the SST files cannot be read")
    done = subprocess.run([java_executable(), "-cp", jar[-1], str(SST_READER), *map(str, present)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"reading SST files failed: {done.stderr.decode(errors='replace')[-2000:]}")
    current: Path | None = None
    entries: list[bytes] = []
    for line in done.stdout.decode().splitlines():
        kind, rest = line.split(" ", 1)
        if kind == "file":
            if current is not None:
                yield current, "sst", b"\0".join(entries)
            name, deletions = rest.rsplit(" ", 1)
            current, entries = Path(name), []
            if int(deletions):
                yield current, "sst-deletions", b""
        else:
            entries.extend(bytes.fromhex(part) for part in rest.split(" ") if part)
    if current is not None:
        yield current, "sst", b"\0".join(entries)
