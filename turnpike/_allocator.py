"""Keep freed memory in the process: the allocator setting the numpy engines are fast with.

The numpy adjoint sweeps allocate and free arrays at every operation. With glibc's
default policy, arrays of more than 128 KiB are mapped fresh from the kernel and
returned on free, and free space at the top of the heap is handed back as soon as it
exceeds twice that, so the next allocation of that size page-faults its memory in
again, a few microseconds per 4 KiB page in the virtual machines this toolkit is
measured on. Measured on the 2-core machine: one J/∇J evaluation of the T = 40 neural
ODE (320 RK4 stages) took 29 ms with the defaults and 22 ms with both thresholds
raised; raising only the trim threshold made it slower (37 ms), since fixing one
threshold stops glibc from adapting the other.

The setting is process-wide, so the library never changes it by itself: the command
line calls :func:`retain_freed_memory` at start, and scripts may too.
"""
from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def retain_freed_memory(*, trim_threshold_mib: int = 256, mmap_threshold_mib: int = 32) -> bool:
    """Raise glibc's trim and mmap thresholds; True if applied, False on other C libraries.

    Up to ``trim_threshold_mib`` of freed memory stays with the process for reuse instead of
    going back to the kernel, and arrays of up to ``mmap_threshold_mib`` come from the heap
    (32 MiB is glibc's own upper limit for the adaptive threshold).
    """
    for name, value in (("trim_threshold_mib", trim_threshold_mib), ("mmap_threshold_mib", mmap_threshold_mib)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive integer (MiB), got {value!r}")
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):      # not glibc (macOS, Windows, musl without mallopt)
        return False
    mib = 1024 * 1024
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold_mib * mib)
                and mallopt(_M_TRIM_THRESHOLD, trim_threshold_mib * mib))
