"""Per-epoch metrics and plots through dvclive, read by `dvc plots show` and `dvc exp show`."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class DvcLiveLog:
    """An epoch logger for pipeline.train: one dvclive step per epoch."""

    def __init__(self, folder: Path, resume: bool = False):
        from dvclive import Live

        self.live = Live(str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)

    def __call__(self, epoch: int, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key != "epoch":
                self.live.log_metric(key, float(value))
        self.live.next_step()

    def close(self) -> None:
        self.live.end()
