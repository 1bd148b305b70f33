"""retain_freed_memory: the glibc malloc setting the CLI applies to its own process."""
import platform

import pytest

import turnpike


def test_applies_on_glibc_only_and_refuses_bad_sizes():
    assert turnpike.retain_freed_memory() is (platform.libc_ver()[0] == "glibc")
    for argument in ("trim_threshold_mib", "mmap_threshold_mib"):
        for bad in (0, -5, 1.5, True, "64"):
            with pytest.raises(ValueError, match=f"{argument}: expected a positive integer"):
                turnpike.retain_freed_memory(**{argument: bad})
