"""Resumable evaluation output: one JSON line per finished item, behind a header naming the run.

A rerun with the same ``--out`` skips items already scored; a run with different settings
into the same folder is refused (it would mix results). A line cut short by an interrupted
run is dropped on reading, so the item is simply scored again. Each finished run also appends a
``{"run": {...}}`` line (its peak RSS and how many items it scored), so a resumed run can
report every run's figures, not only its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from anyseg.errors import InputError

RESULTS = "results.jsonl"


class ResultStore:
    def __init__(self, out_dir: str | os.PathLike, header: dict[str, Any], fresh: bool = False):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise InputError(f"--out {self.out_dir} exists and is not a folder")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / RESULTS
        self.header = json.loads(json.dumps(header))  # normalised (tuples -> lists)
        self._records: dict[str, dict[str, Any]] = {}
        self._runs: list[dict[str, Any]] = []
        #: items added by this run
        self.added = 0
        #: whether earlier results were read (a resumed run)
        self.resumed = self.path.exists() and not fresh
        if self.resumed:
            self._load()
        else:
            self._rewrite()

    def _load(self) -> None:
        lines = self.path.read_text().splitlines()
        good: list[dict[str, Any]] = []
        for i, line in enumerate(lines):
            try:
                good.append(json.loads(line))
            except ValueError:
                if i == len(lines) - 1:
                    break  # a line cut short by an interrupted run
                raise InputError(f"{self.path} line {i + 1} is not JSON; remove the file or use --fresh") from None
        if not good or good[0].get("header") != self.header:
            old = good[0].get("header") if good else None
            diff = sorted(k for k in set(self.header) | set(old or {}) if (old or {}).get(k) != self.header.get(k))
            raise InputError(
                f"{self.out_dir} holds results of a different run (differs in {', '.join(diff) or 'format'}); "
                "use another --out, or --fresh to start over"
            )
        for rec in good[1:]:
            if isinstance(rec, dict) and "name" not in rec and isinstance(rec.get("run"), dict):
                self._runs.append(rec["run"])
            elif isinstance(rec, dict) and "name" in rec:
                self._records[rec["name"]] = rec
            else:
                raise InputError(f"{self.path} holds a line that is neither an item nor a run; remove the file or "
                                 "use --fresh")
        if len(good) != len(lines):
            self._rewrite()

    def _rewrite(self) -> None:
        from anyseg.io.atomic import write_text

        lines = [json.dumps({"header": self.header})] + [json.dumps(r) for r in self._records.values()]
        lines += [json.dumps({"run": r}) for r in self._runs]
        write_text(self.path, "\n".join(lines) + "\n")

    def __contains__(self, name: str) -> bool:
        return name in self._records

    def add(self, record: dict[str, Any]) -> None:
        """Append one finished item (flushed to disk before returning)."""
        if "name" not in record:
            raise ValueError("a result record needs a 'name'")
        self._records[record["name"]] = record
        self.added += 1
        self._append(record)

    def add_run(self, info: dict[str, Any]) -> None:
        """Append one finished run's figures (e.g. ``{"peak_rss_mb": 226.5, "scored": 3}``)."""
        self._runs.append(dict(info))
        self._append({"run": dict(info)})

    def _append(self, line: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> list[dict[str, Any]]:
        return list(self._records.values())

    def runs(self) -> list[dict[str, Any]]:
        """The figures of the earlier finished runs into this folder (and this one's, once added), oldest first."""
        return list(self._runs)
