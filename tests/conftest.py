"""Test session setup: two JAX CPU devices, so that the fast kernel's runs of at least two
blocks are split over devices (``shard_map``) throughout the suite, as the ``jaxstage``
command and the benchmarks run them on a multi-core machine. ``tests/test_fast.py``
compares them bitwise with one device."""

import jaxstage

TEST_DEVICES = 2

jaxstage.use_cpu_cores(TEST_DEVICES)


import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Drop the compiled programs of each test module when it ends: a whole suite in one
    process otherwise holds thousands of executables, and XLA's CPU compiler was seen to
    crash (SIGSEGV while compiling) late in such a run, never in the same tests alone."""
    yield
    jax.clear_caches()
