"""The flow run a flow's body is executing in."""

from __future__ import annotations

from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext


def current_flow_run() -> FlowRun:
    """This flow run's API record (its id names the run's folders); only inside a flow's body."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("current_flow_run() is called outside a flow run")
    return context.flow_run
