"""CPU seconds: a process's clock counts all its threads, and each process of a run counts once."""

from __future__ import annotations

import pytest

from splitrec_core.cpu import CpuSpan, process_cpu_s, total_cpu_s
from tests.conftest import burn_on_a_thread


def test_the_process_clock_counts_every_thread():
    # Prepare
    before = process_cpu_s()

    # Execute: another thread than this one spends the CPU
    spent = burn_on_a_thread(0.2)

    # Assert
    assert spent >= 0.2
    assert process_cpu_s() - before >= spent


def test_each_process_counts_once_from_its_last_start_to_its_last_end():
    # Prepare: two parties on threads of one process (its clock counts both), one on its own
    spans = [CpuSpan("host:1", start_s=10.0, end_s=14.0), CpuSpan("host:1", 11.0, 15.5),
             CpuSpan("host:2", 3.0, 5.0)]

    # Execute
    total = total_cpu_s(spans)

    # Assert: 15.5 - 11.0 for the shared process, 5.0 - 3.0 for the other
    assert total == pytest.approx(6.5)
    assert total_cpu_s([]) == 0

