"""The held budget's state file: a ``BudgetHolder`` written as JSON, atomically, and read back with
every field checked, so a holder survives restarts (``route --hold-budget --state``, the nodes'
held budgets). A state for another router or another target, or a corrupt file, is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import RouterError
from .hold import BudgetHolder

# a state holds at most WINDOW_MAX rows of scored.record.MAX_CANDIDATES (256) numbers of at most 25 characters
# plus the allowed masks: 7.2 MB; the reader's limit is above anything the writer can write (checked on save)
MAX_STATE_BYTES = 16 << 20


def save_state(holder: BudgetHolder, path: str | os.PathLike) -> Path:
    """Write ``holder``'s state as JSON, atomically (the file is replaced whole or not at all)."""
    from ..storage.files import atomic_write

    text = json.dumps(holder.state(), allow_nan=False)
    if len(text.encode("utf-8")) > MAX_STATE_BYTES:  # cannot happen within the documented limits; never
        raise RouterError(f"budget state for {len(holder.state()['cost'])} candidates is over the "  # write unreadable
                          f"{MAX_STATE_BYTES >> 20} MiB a state file may hold")

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, write, overwrite=True)


def load_state(path: str | os.PathLike, router_fingerprint: str, target: float, start_lam: float, cost
               ) -> BudgetHolder:
    """A holder resumed from the JSON state file ``path`` if it exists, else a fresh one.
    Refuses (RouterError naming the file) a state for another router or target, or a corrupt file."""
    from ..storage.files import open_regular

    path = Path(path)
    if not os.path.lexists(path):
        return BudgetHolder(target, start_lam, cost, router_fingerprint)
    where = f"budget state file {path}"
    try:
        with open_regular(path, "budget state file") as fh:  # a FIFO or a device is refused, never opened
            raw = fh.read(MAX_STATE_BYTES + 1)
        if len(raw) > MAX_STATE_BYTES:
            raise RouterError(f"{where} is over {MAX_STATE_BYTES >> 20} MiB; it is not a budget state")
        state = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise RouterError(f"{where} is not valid JSON (nested too deeply)") from None
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise RouterError(f"{where} is not valid JSON ({str(exc).splitlines()[0][:100]})") from None
    except OSError as exc:
        raise RouterError(f"cannot read {where}: {exc.strerror or exc}") from None
    return BudgetHolder.from_state(state, router_fingerprint, target, cost=cost, start_lam=start_lam, where=where)


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed")
