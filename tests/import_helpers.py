"""Trade files in the exact layouts exchanges publish, generated for the import tests."""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPOT_TRADES = ("id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch")
USDM_TRADES_HEADER = "id,price,qty,quote_qty,time,is_buyer_maker"
AGG_HEADER = ("agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
              "is_buyer_maker")
TARDIS_HEADER = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount"
BYBIT_HEADER = ("timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,"
                "homeNotional,foreignNotional")


@dataclass
class Trades:
    """Seeded trades: integer ids, times in µs, prices on a cent grid, buyer-maker flags."""

    ids: np.ndarray
    us: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    buyer_maker: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def part(self, start: int, stop: int) -> Trades:
        return Trades(self.ids[start:stop], self.us[start:stop], self.price[start:stop],
                      self.qty[start:stop], self.buyer_maker[start:stop])


def trades(n: int, *, seed: int = 1, first_id: int = 1_000, start_us: int = 1_735_689_600_000_000,
           ms_grid: bool = False) -> Trades:
    rng = np.random.default_rng(seed)
    gaps = rng.integers(0, 4, n) * (1_000 if ms_grid else rng.integers(1, 900, n))
    us = start_us + np.cumsum(gaps)  # zero gaps: several trades at one time, as published
    price = np.round(94_000 + np.cumsum(rng.normal(0, 0.4, n)), 2)
    qty = np.round(rng.integers(1, 50_000, n) * 1e-5, 5)
    return Trades(np.arange(first_id, first_id + n), us, price, qty, rng.random(n) < 0.45)


def _bool(flag: bool, style: str) -> str:
    return {"True": "True" if flag else "False", "true": "true" if flag else "false"}[style]


def spot_trades_csv(t: Trades, *, unit: str = "us", bools: str = "True") -> str:
    """Binance spot trades: no header, isBestMatch always True."""
    div = 1 if unit == "us" else 1_000
    return "".join(
        f"{i},{p:.8f},{q:.8f},{p * q:.8f},{u // div},{_bool(bool(m), bools)},True\n"
        for i, p, q, u, m in zip(t.ids, t.price, t.qty, t.us, t.buyer_maker, strict=True))


def usdm_trades_csv(t: Trades, *, header: bool = True) -> str:
    """Binance USD-M futures trades: header since 2022, ms, true/false."""
    rows = "".join(f"{i},{p:.1f},{q + 0.001:.3f},{p * q:.4f},{u // 1000},{'true' if m else 'false'}\n"
                   for i, p, q, u, m in zip(t.ids, t.price, t.qty, t.us, t.buyer_maker,
                                            strict=True))
    return (USDM_TRADES_HEADER + "\n" if header else "") + rows


def spot_aggtrades_csv(t: Trades) -> str:
    """Binance spot aggTrades: 8 columns, no header, µs."""
    return "".join(f"{i},{p:.8f},{q:.8f},{i * 3},{i * 3 + 2},{u},{'True' if m else 'False'},True\n"
                   for i, p, q, u, m in zip(t.ids, t.price, t.qty, t.us, t.buyer_maker,
                                            strict=True))


def futures_aggtrades_csv(t: Trades) -> str:
    rows = "".join(f"{i},{p:.1f},{q + 0.001:.3f},{i * 3},{i * 3 + 2},{u // 1000},{'true' if m else 'false'}\n"
                   for i, p, q, u, m in zip(t.ids, t.price, t.qty, t.us, t.buyer_maker,
                                            strict=True))
    return AGG_HEADER + "\n" + rows


def write_zip(path: Path, text: str, *, checksum: bool = True, member: str | None = None) -> Path:
    """A Binance-style zip holding one CSV named like the zip, plus its .CHECKSUM sidecar."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member or path.with_suffix(".csv").name, text)
    if checksum:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        (path.parent / (path.name + ".CHECKSUM")).write_text(f"{digest}  {path.name}\n")
    return path


def write_gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(text)
    return path
