"""Celery, in one import: the queue backend, context propagation and the dead letters.

.. code-block:: python

    from instrumentor.celery import CeleryQueue

    instrumentor.configure(queue=CeleryQueue(app))  # in the module that creates ``app``

Importing this module imports Celery; ``import instrumentor`` alone never does.
"""

from __future__ import annotations

from instrumentor.celery._context import propagate_context
from instrumentor.celery._dead_letters import count_dead_letters, replay_dead_letters
from instrumentor.celery._queue import CeleryPublisher, CeleryQueue

__all__ = [
    "CeleryPublisher",
    "CeleryQueue",
    "count_dead_letters",
    "propagate_context",
    "replay_dead_letters",
]
