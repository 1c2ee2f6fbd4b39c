"""The scored-generations format: what a router is trained from, in one place.

A folder holds ``generations.jsonl`` (one JSON object per line, see ``record.py``) and/or PNG images
whose ``cost_aware_router`` text chunk carries the same record (``png.py``). ``dataset.py`` reads and
averages a folder; ``store.py`` writes one safely (the ComfyUI save node and the headless collector).
"""

from .dataset import Dataset, Images, aggregate, load_dataset, read_records
from .png import png_bytes, png_text_chunks, record_text_chunk
from .record import (
                     CONFIG_FIELDS,
                     DEFAULT_METRIC,
                     JSONL_NAME,
                     PNG_KEY,
                     RECORD_KEYS,
                     Record,
                     generation_record,
                     parse_record,
)
from .store import GenerationStore, write_jsonl_rows

__all__ = ["CONFIG_FIELDS", "DEFAULT_METRIC", "JSONL_NAME", "PNG_KEY", "RECORD_KEYS", "Dataset", "GenerationStore",
           "Images", "Record", "aggregate", "generation_record", "load_dataset", "parse_record", "png_bytes",
           "png_text_chunks",
           "read_records", "record_text_chunk", "write_jsonl_rows"]
