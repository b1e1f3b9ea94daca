"""ticktape analysis: indicators (pure numpy), streaming over logs, and Plotly reports."""

from analysis.analyze import AnalyzeConfig, analyze
from analysis.errors import AnalysisError
from analysis.report import ReportConfig, build_report
from analysis.streaming import IndicatorSpec, StreamingIndicators

__all__ = [
    "AnalysisError",
    "AnalyzeConfig",
    "IndicatorSpec",
    "ReportConfig",
    "StreamingIndicators",
    "analyze",
    "build_report",
]
