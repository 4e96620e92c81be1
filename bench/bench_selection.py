"""Bench: `import hal` cost and a cached `hal.get_device()` against `torch.device("cpu")`.

Goals (issue 2): import hal adds under 30 ms; a cached get_device() costs at most 2x
constructing torch.device("cpu").  Prints ratios measured in this one run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import timeit


def _import_ms(stmt: str, repeats: int = 15) -> float:
    code = f"import time; t=time.perf_counter(); {stmt}; print(time.perf_counter()-t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(repeats)]
    return statistics.median(runs) * 1000


def main() -> None:
    """Measure and print both figures."""
    baseline = _import_ms("pass")
    hal_import = _import_ms("import hal")
    print(f"import hal: {hal_import - baseline:.2f} ms added (goal < 30 ms)")

    import torch

    import hal

    hal.get_device()  # decide once
    n = 1_000_000
    t_torch = min(timeit.repeat(lambda: torch.device("cpu"), number=n, repeat=5)) / n
    t_hal = min(timeit.repeat(hal.get_device, number=n, repeat=5)) / n
    print(f"torch.device('cpu'): {t_torch * 1e9:.0f} ns; cached hal.get_device(): "
          f"{t_hal * 1e9:.0f} ns; ratio {t_hal / t_torch:.2f}x (goal <= 2x)")


if __name__ == "__main__":
    main()
