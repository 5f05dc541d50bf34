"""Regression gates on VRAM and speed (pure: no file IO, no clock).

- options: `GateSettings` and the parsers of tolerances, sizes, budgets, metrics, key fields and
  filters (`GateError` on unusable text).
- compare: `run_gate` (new cells against a baseline and/or a budget) and the `GateReport` of
  `CellRow`s and structured `Finding`s it returns.

Baselines (the cells' figures and their file) are bench.schema.baseline; bench.render.gate words
findings and renders reports; bench.cli.gate reads the files and prints.
"""

from bench.analysis.gate.compare import (CRASHED, DID_NOT_FIT, GPU_FALLBACK, CellRow, Finding, GateReport,
                                         env_differences, filter_cells, recorded_metric, run_gate)
from bench.analysis.gate.options import (METRIC_LABELS, Budget, GateError, GateSettings, Tolerance, filters_text,
                                         parse_budget, parse_filters, parse_key_fields, parse_metric,
                                         parse_percent, parse_reference, parse_size, parse_slowdown,
                                         parse_vram_tolerance)

__all__ = ["CRASHED", "DID_NOT_FIT", "GPU_FALLBACK", "CellRow", "Finding", "GateReport", "env_differences",
           "filter_cells", "recorded_metric", "run_gate", "METRIC_LABELS", "Budget", "GateError", "GateSettings",
           "Tolerance", "filters_text", "parse_budget", "parse_filters", "parse_key_fields", "parse_metric",
           "parse_percent", "parse_reference", "parse_size", "parse_slowdown", "parse_vram_tolerance"]
