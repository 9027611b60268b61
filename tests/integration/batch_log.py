"""A callback for tests that run `foresight fit`: `--trainer.callbacks+=tests.integration.batch_log.BatchLog
--trainer.callbacks.path=FILE` appends one line per training batch, a digest of its tokens, to FILE."""

import hashlib

import lightning as L


class BatchLog(L.Callback):
    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        with open(self.path, "a") as file:
            file.write(hashlib.sha1(batch["tokens"].numpy().tobytes()).hexdigest()[:12] + "\n")
