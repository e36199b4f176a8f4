"""What machine a benchmark ran on, for its header."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU model (Linux: /proc/cpuinfo), else what the platform module
    reports, else "unknown CPU"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
