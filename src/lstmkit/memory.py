"""Process-wide allocator settings for training loops (glibc's malloc, i.e. Linux).

glibc maps tensors above its mmap threshold with fresh pages and, when the top of its heap has
more than its trim threshold free, returns that memory to the system. Both thresholds adapt to
the sizes a program frees, so a loop that allocates and frees the same few megabytes every step
may, depending on the order of its allocations, fault every page in again at every step:
measured for lstmkit's training step at (T, B, H) = (100, 32, 128), 4,800-5,200 page faults and
about 8 ms of a 31-40 ms step, or none at all after an unrelated change in allocation order.
``keep_freed_memory`` fixes both thresholds so that freed memory stays in the process for reuse:
the same step then faults nothing after its first run.

The command line calls it at start-up; a library cannot decide that for its host program, so
``import lstmkit`` changes nothing. The environment variables ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` do the same for any program, set before it starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# the largest mmap threshold glibc accepts on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 512 * 2**20


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Serve allocations up to ``mmap_threshold`` bytes from malloc's heap, and keep up to
    ``trim_threshold`` bytes of freed heap in the process instead of returning it to the system.

    Returns True when glibc accepted both settings, False where there is no glibc (macOS,
    Windows, musl) or it refused them; nothing else changes then.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
