"""Human-readable sizes: bytes in, ``"79.6 GiB"`` out."""

from __future__ import annotations


def format_bytes(n: int | float | None) -> str:
    """Format a byte count with binary units; None or negative reads as "?"."""
    if n is None or n < 0:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
