"""dvclive curves: one step per epoch, and a resumed run continues at the checkpoint's epoch."""

import pandas as pd

from flows.tracking import DvcLiveLog


def _steps(folder):
    return pd.read_csv(folder / "plots" / "metrics" / "train_loss.tsv", sep="\t")["step"].tolist()


def test_a_resumed_run_continues_at_the_checkpoint_epoch(tmp_path):
    folder = tmp_path / "live"
    log = DvcLiveLog(folder)
    for epoch in (0, 1, 2):
        log(epoch, {"epoch": epoch, "train_loss": 1.0 / (epoch + 1)})
    log.close()  # killed after epoch 2; the checkpoint holds epoch 1, so the resume starts at 2
    resumed = DvcLiveLog(folder, resume=True)
    for epoch in (2, 3):
        resumed(epoch, {"epoch": epoch, "train_loss": 0.5 / (epoch + 1)})
    resumed.close()
    steps = _steps(folder)
    assert steps[:3] == [0, 1, 2] and steps[-2:] == [2, 3], steps
