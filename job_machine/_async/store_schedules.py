"""The Store's statements of cron schedules (jobmachine.schedule,
docs/schedules.md): making, pausing and listing them, and sending the
tasks whose tick has come."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from .. import _codec, _cron
from .._lock_keys import CHORE_LOCK_KEY
from ..errors import SchemaMissing
from ..task import STATE_NAMES, ScheduleInfo, Status
from .store_base import AsyncStoreBase

#: Most schedules one dispatch round sends (the rest in the next round).
SCHEDULES_PER_ROUND = 100

schedule_logger = logging.getLogger("job_machine.schedules")


class AsyncScheduleStatements(AsyncStoreBase):
    """Cron schedules."""

    async def schedule_upsert(
        self,
        name: str,
        *,
        cron: str,
        timezone: str,
        queue: str,
        parameters: str,
        options: dict[str, object],
    ) -> None:
        """Make a schedule, or replace the one of that name (its paused state
        kept, and its next run unless the cron or zone changed)."""
        params = {
            "name": name,
            "cron": cron,
            "timezone": timezone,
            "queue": queue,
            "parameters": parameters,
            "next_run": _cron.next_tick(cron, timezone, await self._db_now()),
            **options,
        }
        await self._one("schedule_upsert", params)

    async def schedule_delete(self, name: str) -> bool:
        """Remove a schedule; False if there was none."""
        return await self._one("schedule_delete", {"name": name}) is not None

    async def schedule_pause(self, name: str) -> bool:
        """Pause a schedule; False if there is none."""
        return await self._one("schedule_pause", {"name": name}) is not None

    async def schedule_resume(self, name: str) -> bool:
        """Resume a paused schedule from its next tick after now (and after
        the last tick it sent); False if there is none."""
        for _ in range(5):
            found = await self.schedule_list(name)
            if not found:
                return False
            s = found[0]
            # Never a tick at or before the last one sent (a clock set back).
            after = max(await self._db_now(), s.last_run or datetime.min.replace(tzinfo=UTC))
            params = {
                "name": name,
                "cron": s.cron,
                "timezone": s.timezone,
                "next_run": _cron.next_tick(s.cron, s.timezone, after),
            }
            if await self._one("schedule_resume", params) is not None:
                return True
            # Its cron or zone changed since it was read: read it again.
        raise RuntimeError(f"schedule {name!r} changed under every try to resume it")

    async def schedule_list(self, name: str | None = None) -> list[ScheduleInfo]:
        """Every schedule (or the one named), by name."""
        return [
            ScheduleInfo(
                name=r["name"],
                cron=r["cron"],
                timezone=r["timezone"],
                queue=r["queue"],
                data=_codec.decode(r["parameters"]),
                priority=int(r["priority"]),
                max_attempts=r["max_attempts"],
                title=r["title"],
                grouping=r["grouping"],
                remove_after=r["keep_for"],
                paused=bool(r["paused"]),
                next_run=r["next_run"],
                last_run=r["last_run"],
                last_task_id=r["last_task_id"],
                last_state=(
                    STATE_NAMES.get(Status(r["last_status"]))
                    if r["last_status"] is not None
                    else None
                ),
                created=r["created"],
                modified=r["modified"],
            )
            for r in await self._all("schedule_list", {"name": name})
        ]

    async def schedules_dispatch(self, *, now: datetime | None = None) -> int:
        """Send the task of every schedule whose tick has come, and advance
        each to its next tick after now, in one transaction under the
        housekeeping lock (nothing when another worker holds it); how many
        tasks were sent. Ticks missed while no worker ran are run once: one
        task, for the earliest. Each row is locked and checked again by
        schedule_fire, so a tick is sent once even when dispatchers race.

        On a Store from ``on(conn)`` it runs on that connection (the
        housekeeper's).

        :param now: the clock, for tests (None: the database's).
        """
        try:
            return await self._dispatch(now)
        except SchemaMissing as ex:
            if "schedules" not in self._warned:
                self._warned.add("schedules")
                schedule_logger.warning("cron schedules are not dispatched: %s", ex)
            return 0

    async def _dispatch(self, now: datetime | None) -> int:
        if self._session is not None:
            async with self.connector.unit(self._session):
                return await self._fire_due(now)
        async with self.connector.connection() as conn:
            bound = self.on(conn)
            async with self.connector.unit(conn):
                return await bound._fire_due(now)

    async def _fire_due(self, now: datetime | None) -> int:
        """Under the housekeeping lock (in the transaction open on this
        Store's session), send the due schedules' tasks; how many."""
        got = await self._one("chore_lock", {"key": CHORE_LOCK_KEY})
        if not (got and got["got"]):
            return 0
        sent = 0
        params = {"now": now, "limit": SCHEDULES_PER_ROUND}
        for row in await self._all("schedule_due", params):
            try:
                following = _cron.next_tick(row["cron"], row["timezone"], row["now"])
            except ValueError as ex:
                # Only a row edited by hand can hold a bad expression or zone.
                schedule_logger.error("schedule %s cannot run: %s", row["name"], ex)
                continue
            fire = {
                "schedule_id": row["schedule_id"],
                "tick": row["next_run"],
                "cron": row["cron"],
                "timezone": row["timezone"],
                "next_run": following,
                "now": now,
            }
            fired = await self._one("schedule_fire", fire)
            task_id = fired["task_id"] if fired else None
            if task_id:
                sent += 1
                schedule_logger.info(
                    "schedule %s: task %d sent for %s; next at %s",
                    row["name"],
                    task_id,
                    row["next_run"].isoformat(),
                    following.isoformat(),
                )
        return sent

    async def _db_now(self) -> datetime:
        """The database's clock (ticks are computed from it, as the dispatcher does)."""
        row = await self._one("schedule_now", {})
        assert row is not None
        return row["now"]  # type: ignore[no-any-return]
