"""The web side: a request binds who is acting and enqueues work; tracking never waits.

python -m examples.celery_app.web  (no API key needed here)
"""

from __future__ import annotations

import instrumentor
from examples.celery_app.tasks import export_report
from instrumentor import bound_context


def handle_export_request(user_id: str, account_id: str, project_id: str) -> None:
    """What a view does: the task carries the context, the worker's event has the same ids."""
    with bound_context(user_id=user_id, account_id=account_id, project_id=project_id):
        export_report.delay("rep_1")


if __name__ == "__main__":
    handle_export_request("usr_1", "acc_1", "proj_1")
    print(instrumentor.flush(5))
