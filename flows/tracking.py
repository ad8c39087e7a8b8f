"""Per-epoch metrics and plots through dvclive, read by `dvc plots show` and `dvc exp show`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any


class DvcLiveLog:
    """An epoch logger for train (`run_stage` attaches it on every run path): one dvclive step per epoch."""

    def __init__(self, folder: Path, resume: bool = False,
                 warn: Callable[[str], Any] | None = None):
        from dvclive import Live

        try:
            try:
                self.live = Live(str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)
            except Exception as exc:
                if "Empty git repo" not in str(exc):
                    raise
                # dvclive asks git for HEAD before it checks that a commit exists (a `git init`
                # just done): without the DVC repository it still writes the plots DVC reads
                from unittest import mock

                with mock.patch("dvclive.live.get_dvc_repo", return_value=None):
                    self.live = Live(str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)
        except Exception as exc:  # a logger must not stop training
            self.live = None
            (warn or logging.getLogger("graft").warning)(f"dvclive is off ({type(exc).__name__}: {exc}); every epoch is still in history.json")

    def __call__(self, epoch: int, row: dict[str, Any]) -> None:
        if self.live is None:
            return
        # the step is the epoch itself: after `--resume` the curves continue at the checkpoint's
        # epoch instead of counting from wherever dvclive's own step file had got to
        self.live.step = int(row.get("epoch", epoch))
        for key, value in row.items():
            if key != "epoch":
                self.live.log_metric(key, float(value))
        self.live.next_step()

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
