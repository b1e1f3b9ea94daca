"""Recognising a file's format from its first lines (never from its name).

Rules, in order: tardis' header `exchange,symbol,timestamp,local_timestamp,id,side,price,amount`
-> tardis-trades; a header starting `timestamp,symbol,side,size,price,tickDirection,trdMatchID,
grossValue,homeNotional,foreignNotional` -> bybit-trades; a Binance header (see binance.py)
or, without a header, a first row of numbers whose field count and boolean positions match
one Binance layout (7 fields with booleans at 6 and 7: spot trades; 6 with a boolean at 6:
futures trades; 8 with booleans at 7 and 8: spot aggTrades; 7 with a boolean at 7 only:
futures aggTrades) -> binance-trades / binance-aggtrades. `csv` is never guessed: it needs --map.
"""

from __future__ import annotations

from recorder.importers import binance, bybit, csvmap, tardis
from recorder.importers.base import FileReader
from recorder.importers.config import ImportConfig
from recorder.importers.errors import UnrecognisedFormatError
from recorder.importers.inputs import InputFile

__all__ = ["reader_for"]

_RECOGNISERS = (tardis.recognise, bybit.recognise, binance.recognise)


def _first_lines(inp: InputFile) -> list[str]:
    head = inp.head()
    if not head.strip():
        raise UnrecognisedFormatError(f"{inp.path}: is empty")
    if b"\x00" in head:
        raise UnrecognisedFormatError(f"{inp.path}: is not a CSV file (binary content)")
    lines = head.split(b"\n")
    if len(lines) > 1:
        lines = lines[:-1]  # the last may be cut short by the head's size
    try:
        return [line.decode("utf-8").rstrip("\r").lstrip("\ufeff") for line in lines[:2]]
    except UnicodeDecodeError:
        raise UnrecognisedFormatError(f"{inp.path}: is not a CSV file (not UTF-8 text)") from None


def reader_for(inp: InputFile, cfg: ImportConfig) -> FileReader:
    """The reader for one file: its format recognised, and checked against --format if given."""
    lines = _first_lines(inp)
    if cfg.format == "csv":
        return csvmap.reader_for(inp, cfg, lines)
    for recognise in _RECOGNISERS:
        reader = recognise(inp, cfg, lines)
        if reader is not None:
            if cfg.format is not None and reader.format != cfg.format:
                raise UnrecognisedFormatError(f"{inp.path}: is {reader.format}, not {cfg.format}; "
                                              "leave out --format to import it as what it is")
            return reader
    shown = lines[0][:80]
    wanted = f"not {cfg.format}" if cfg.format else "format not recognised"
    raise UnrecognisedFormatError(
        f"{inp.path}: {wanted} (first line {shown!r}); known formats: binance-trades, "
        "binance-aggtrades, tardis-trades, bybit-trades; for another CSV use --format csv --map")
