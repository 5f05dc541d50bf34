"""A cell whose caching allocator freed its cache and retried (torch's num_alloc_retries) says so: on a
nearly full device those retries are slow steps, which explains a noisy cell."""

import dataclasses
import json

from bench.run.worker import allocator_warnings
from bench.schema.record import ResultRecord
from bench.schema.store import read_records
from tests.helpers import FROZEN_RESULTS


def test_no_retry_no_warning():
    assert allocator_warnings(None) == [] and allocator_warnings(0) == []


def test_retries_are_counted_in_the_warning():
    (one,) = allocator_warnings(1)
    (many,) = allocator_warnings(7)
    assert one.startswith("allocator retried 1 time after") and many.startswith("allocator retried 7 times after")
    assert "slower" in many


def test_the_count_travels_in_the_record_and_older_records_read_none():
    old = read_records(FROZEN_RESULTS / "t4-emulated.jsonl")[0]  # a real record from before the field
    assert old.allocator_retries is None
    rec = dataclasses.replace(old, allocator_retries=3)
    assert ResultRecord.from_dict(json.loads(rec.to_json())).allocator_retries == 3
