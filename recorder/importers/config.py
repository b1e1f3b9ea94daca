"""ImportConfig: what `ticktape import` was asked to do, validated before any file is opened."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from recorder.errors import ConfigError, TicktapeError
from recorder.importers.symbols import check_symbol, normalize_symbol
from recorder.log.schema import DEFAULT_SEGMENT_ROWS

__all__ = ["FORMATS", "MAP_FIELDS", "SIDE_CONVENTIONS", "TIME_UNITS", "ImportConfig",
           "parse_column_map"]

FORMATS = ("binance-trades", "binance-aggtrades", "tardis-trades", "bybit-trades", "csv")
# `--map` keys: ticktape's field = the CSV's column name.
MAP_FIELDS = ("ts", "price", "size", "side", "symbol", "trade_id", "venue")
TIME_UNITS = ("s", "ms", "us", "ns", "iso")
SIDE_CONVENTIONS = ("taker", "maker", "buyer-maker-bool")
_VENUE_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def parse_column_map(text: str) -> tuple[tuple[str, str], ...]:
    """'ts=time,price=p' -> (('ts', 'time'), ('price', 'p')); unknown or repeated keys refused."""
    pairs: list[tuple[str, str]] = []
    for item in text.split(","):
        key, eq, column = (part.strip() for part in item.partition("="))
        if not eq or not key or not column:
            raise ConfigError(f"--map item {item.strip()!r} is malformed: expected FIELD=COLUMN, "
                              "e.g. ts=time,price=p,size=q")
        if key not in MAP_FIELDS:
            raise ConfigError(f"--map field {key!r} is unknown: choose from {', '.join(MAP_FIELDS)}")
        if key in dict(pairs):
            raise ConfigError(f"--map field {key!r} is given twice")
        pairs.append((key, column))
    return tuple(pairs)


@dataclass(frozen=True, kw_only=True)
class ImportConfig:
    """One import job. `format=None` recognises the format from the files' content."""

    log: Path
    files: tuple[Path, ...]
    format: str | None = None
    symbol: str | None = None  # overrides the files' symbol (normalized: BTCUSDT -> BTC-USDT)
    venue: str | None = None  # overrides the format's venue
    overwrite: bool = False
    column_map: tuple[tuple[str, str], ...] = ()  # csv only
    time_unit: str | None = None  # csv only
    side_from: str | None = None  # csv only; default "taker" when a side column is mapped
    segment_rows: int = DEFAULT_SEGMENT_ROWS
    block_bytes: int = 4 << 20  # CSV bytes parsed per block: bounds memory per open file
    run_rows: int = 2_000_000  # rows per sorted run when a file is not in time order

    def __post_init__(self) -> None:
        if not self.files:
            raise ConfigError("name at least one FILE to import")
        seen: set[Path] = set()
        for path in self.files:
            if path.resolve() in seen:
                raise ConfigError(f"{path} is named twice")
            seen.add(path.resolve())
        if self.format is not None and self.format not in FORMATS:
            raise ConfigError(f"--format {self.format!r} is unknown: choose from {', '.join(FORMATS)}")
        if self.symbol is not None:
            try:
                normalized = check_symbol(normalize_symbol(self.symbol), "--symbol")
            except TicktapeError:
                raise ConfigError(f"--symbol {self.symbol!r} is malformed: expected capitals, "
                                  "digits and '-', e.g. BTC-USDT or BTCUSDT") from None
            object.__setattr__(self, "symbol", normalized)
        if self.venue is not None and not _VENUE_RE.match(self.venue):
            raise ConfigError(f"--venue {self.venue!r} is malformed: expected letters, digits, "
                              "'.', '_' or '-'")
        if self.segment_rows < 1:
            raise ConfigError(f"--segment-rows must be >= 1, got {self.segment_rows}")
        if self.block_bytes < 1024 or self.run_rows < 1:
            raise ConfigError("block_bytes must be >= 1024 and run_rows >= 1")
        csv_options = [name for name, value in (("--map", self.column_map),
                                                ("--time-unit", self.time_unit),
                                                ("--side-from", self.side_from)) if value]
        if self.format != "csv":
            if csv_options:
                raise ConfigError(f"{', '.join(csv_options)}: only for --format csv")
            return
        self._check_csv()

    def _check_csv(self) -> None:
        mapped = dict(self.column_map)
        missing = [key for key in ("ts", "price", "size") if key not in mapped]
        if missing:
            raise ConfigError(f"--format csv needs --map with {', '.join(missing)}, "
                              "e.g. --map ts=time,price=p,size=q,side=s")
        if self.time_unit is None:
            raise ConfigError(f"--format csv needs --time-unit ({'|'.join(TIME_UNITS)})")
        if self.time_unit not in TIME_UNITS:
            raise ConfigError(f"--time-unit {self.time_unit!r} is unknown: choose from "
                              f"{', '.join(TIME_UNITS)}")
        if self.side_from is not None:
            if self.side_from not in SIDE_CONVENTIONS:
                raise ConfigError(f"--side-from {self.side_from!r} is unknown: choose from "
                                  f"{', '.join(SIDE_CONVENTIONS)}")
            if "side" not in mapped:
                raise ConfigError("--side-from needs a side column: --map side=COLUMN")
        if "symbol" not in mapped and self.symbol is None:
            raise ConfigError("--format csv needs a symbol: --map symbol=COLUMN or --symbol SYM")
        if "symbol" in mapped and self.symbol is not None:
            raise ConfigError("give --symbol or --map symbol=COLUMN, not both")
        if "venue" in mapped and self.venue is not None:
            raise ConfigError("give --venue or --map venue=COLUMN, not both")
