"""ticktape recorder: a seeded price simulator and the crash-safe Parquet event log."""

from recorder.config import SimConfig, SymbolParams
from recorder.errors import TicktapeError
from recorder.log import Log, LogWriter, compact_log, recover_log, verify_log
from recorder.record import RecordConfig, record
from recorder.simulator import Simulator

__all__ = [
    "Log",
    "LogWriter",
    "RecordConfig",
    "SimConfig",
    "Simulator",
    "SymbolParams",
    "TicktapeError",
    "compact_log",
    "record",
    "recover_log",
    "verify_log",
]
