"""Progress bars for the long demo and benchmark commands (tqdm, on standard error)."""

from tqdm import tqdm

from demo.seeding import Progress


class Bar(Progress):
    """One bar at a time: starting a new stage closes the last one's bar."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def start(self, label: str, total: int) -> None:
        self.close()
        self.bar = tqdm(total=total, desc=label, unit="", leave=True, dynamic_ncols=True)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
