"""The machine line that the benchmark scripts print (no TensorFlow import).

The scripts import it as a sibling (`benchmarks/` is put on `sys.path`, as
`loss_speed.py` does for `authors_loss.py`), so that they all name the CPU
and the load the same way.
"""

import os
import platform


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    model = platform.processor() or platform.machine() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return model


def machine():
    """'2 CPUs (<model name>), Python 3.x.y'."""
    return f"{os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}"


def load_average():
    """'load average 0.12 0.30 0.41', or 'load average unknown' where the OS has none."""
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except (AttributeError, OSError):  # AttributeError: no os.getloadavg (Windows).
        return "load average unknown"
