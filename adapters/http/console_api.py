"""GET /api/stats: the console's counts, from the server's own data: the caller's sessions
in each state (the sessions read model) and the pairings they started, completed and let
expire in the last hour (domain.application.activity: the events this process followed
in the log)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response
from starlette.routing import Route

from adapters.http.models import Reply
from adapters.http.rest import Api, Call, Operation, ok
from domain.application.activity import SessionActivity
from domain.application.ports import SessionIndex


class RecentView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    started: int = Field(description="Pairings started (sessions created or restarted)")
    completed: int = Field(description="Pairings completed (a code scanned or typed)")
    expired: int = Field(description="Pairings that ended with `qr expired`")
    since: datetime = Field(
        description="Where the counted window begins: an hour ago, or when this server "
        "process started if later (each process counts what it recorded)"
    )


class StatsView(Reply):
    """The caller's sessions per state, and their pairings in the last hour."""

    states: dict[str, int] = Field(description="Every state, with how many sessions are in it")
    last_hour: RecentView


STATS = Operation(
    "GET",
    "/api/stats",
    "getStats",
    "The caller's sessions per state, and their pairings in the last hour.",
    {200: StatsView},
    refusals=(),
)
OPERATIONS = [STATS]


def console_routes(api: Api, index: SessionIndex, activity: SessionActivity) -> list[Route]:
    async def stats(call: Call) -> Response:
        owner = call.caller.identity
        counts = await index.counts(owner)
        recent = activity.recent(owner)
        return ok(
            {
                "states": {state.value: count for state, count in counts.items()},
                "last_hour": {
                    "started": recent.started,
                    "completed": recent.completed,
                    "expired": recent.expired,
                    "since": recent.since.isoformat(),
                },
            }
        )

    return [STATS.route(api, stats)]
