"""Metadata operations that arrive over a vault's WebSocket (or in a REST batch).

The same writes as REST (create, update = rename/move/setattr, delete, commit, link), with
a request id, answered by ``ack`` (the node's new state) or ``nack`` (a typed error whose
details say how to catch up, e.g. ``head``: the node's current state). Membership is
re-checked for every operation, so a member removed while connected loses write access at
once. Operations of one socket run in the order they were sent.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from gobi.protocol import ErrorCode, WsCommit, WsCreate, WsDelete, WsLink, WsOp, WsUpdate

from .access import Actor
from .errors import ServiceError
from .service import Services
from .writes import Outcome

_OP = TypeAdapter(WsOp)


def _nack(req_id: Any, err: ServiceError) -> dict[str, Any]:
    return {"type": "nack", "id": req_id, **err.body()}


async def handle_op(
    services: Services, actor: Actor, vault_id: str, frame: dict[str, Any], *, recheck: bool = True
) -> dict[str, Any]:
    """Validate and run one ``op`` frame; return the ``ack``/``nack`` frame to send.

    ``recheck``: look membership up again for this operation (a long-lived socket);
    a batch inside one HTTP request shares the request's check instead.
    """
    req_id = frame.get("id") if isinstance(frame.get("id"), str) else None
    try:
        op = _OP.validate_python(frame)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        code = (ErrorCode.INVALID_NAME if first.get("loc") and first["loc"][-1] == "name"
                and first.get("type") == "value_error" else ErrorCode.BAD_REQUEST)
        return _nack(req_id, ServiceError(code, f"invalid operation: {loc}: {first.get('msg')}"))
    if recheck:
        # A fresh actor: no memoised membership survives between socket operations.
        actor = Actor(actor.user, actor.device)
    nodes = services.nodes
    try:
        if isinstance(op, WsCreate):
            outcome, _ = await nodes.create_outcome(actor, vault_id, op.args)
        elif isinstance(op, WsUpdate):
            outcome = await nodes.update_outcome(actor, vault_id, op.node, op.args)
        elif isinstance(op, WsDelete):
            outcome = await nodes.delete_outcome(actor, vault_id, op.node, op.args)
        elif isinstance(op, WsLink):
            outcome = Outcome((await nodes.link(actor, vault_id, op.node, op.args))[0])
        else:
            assert isinstance(op, WsCommit)
            outcome = await nodes.commit_outcome(actor, vault_id, op.node, op.args)
    except ServiceError as err:
        return _nack(op.id, err)
    ack = {"type": "ack", "id": op.id, "node": outcome.node.model_dump(mode="json")}
    if outcome.conflict is not None:
        # Only operations sent with on_conflict="strategy" meet conflicts without a nack.
        ack["conflict"] = outcome.conflict.model_dump(mode="json")
    return ack
