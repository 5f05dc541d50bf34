"""The data model every stage shares: the result record, a cell's identity, pairs, and storage.

- record: `ResultRecord` (one measured cell), statuses, `ResultsError`.
- key: `CellKey`, the one identity of a cell, and the views of it that comparisons use.
- pairs: `Pair` (hf and unsloth cells of one configuration) and its one comparable rule.
- store: JSON Lines append / read, the one latest-record rule.
"""

from bench.schema.key import CellKey
from bench.schema.pairs import Pair, pair_records
from bench.schema.record import FINISHED_STATUSES, SCHEMA_VERSION, STATUSES, ResultRecord, ResultsError
from bench.schema.store import append_record, latest_per_cell, load, read_records

__all__ = ["CellKey", "Pair", "pair_records", "ResultRecord", "ResultsError", "SCHEMA_VERSION", "STATUSES",
           "FINISHED_STATUSES", "append_record", "latest_per_cell", "load", "read_records"]
