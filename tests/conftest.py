"""Test session setup: two JAX CPU devices, so that the fast kernel's runs of at least two
blocks are split over devices (``shard_map``) throughout the suite, as the ``jaxstage``
command and the benchmarks run them on a multi-core machine. ``tests/test_fast.py``
compares them bitwise with one device."""

import jaxstage

TEST_DEVICES = 2

jaxstage.use_cpu_cores(TEST_DEVICES)
