"""Checked by mypy only (see tests/test_typing.py): @tracks keeps signatures."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from typing_extensions import assert_type

from instrumentor import tracks
from tests.plan import Events


@tracks(Events.REPORT_CREATED, group_id="project_id")
def create(project_id: str, title: str, *, draft: bool = False) -> int:
    return 1


@tracks(Events.REPORT_CREATED)
async def acreate(project_id: str) -> str:
    return project_id


class Service:
    @tracks(Events.PLAN_UPGRADED)
    def upgrade(self, plan: str) -> bool:
        return True

    @tracks(Events.PLAN_UPGRADED)
    @classmethod
    def build(cls, plan: str) -> Service:
        return cls()

    @tracks(Events.PLAN_UPGRADED)
    @staticmethod
    def check(plan: str) -> float:
        return 1.0


if TYPE_CHECKING:
    assert_type(create("p", "t", draft=True), int)
    _ = assert_type(acreate("p"), Coroutine[Any, Any, str])
    assert_type(Service().upgrade("pro"), bool)
    assert_type(Service.build("pro"), Service)
    assert_type(Service.check("pro"), float)
