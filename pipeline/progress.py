"""Per-epoch progress: a redrawn bar on a terminal, plain periodic lines in logs (CI, `dvc repro` output)."""

import sys
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO | None = None, lines: int = 10) -> None:
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = max(1, total // lines)

    def update(self, epoch: int, train_loss: float, val_loss: float) -> None:
        text = f"{self.label} epoch {epoch:>{len(str(self.total))}}/{self.total}  train {train_loss:.4g}  val {val_loss:.4g}"
        if self.tty:
            filled = round(20 * epoch / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (20 - filled)}] {text}\033[K")
            self.stream.flush()
        elif epoch % self.every == 0 or epoch == self.total:
            print(text, file=self.stream, flush=True)

    def close(self, summary: str) -> None:
        if self.tty:
            self.stream.write("\n")
        print(f"{self.label} {summary}", file=self.stream, flush=True)
