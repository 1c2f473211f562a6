"""A worker's startup heap is left out of garbage collection (copier.shell.celery.heap_freeze):
full collections walking it were the copy's slowest tail."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from celery import signals


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process collects as before


@pytest.mark.parametrize("signal", [signals.worker_before_create_process,
                                    signals.worker_process_init],
                         ids=["before the pool forks", "in each child"])
def test_the_worker_freezes_what_it_started_with(unfrozen, signal):
    import copier.shell.celery  # noqa: F401 (connects the handlers)

    assert gc.get_freeze_count() == 0
    signal.send(sender=None)
    assert gc.get_freeze_count() > 10_000  # Django, the apps and Celery at least
