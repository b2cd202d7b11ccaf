"""HTTP and WebSocket routes, one blueprint per resource. Handlers are thin: validate,
call one service method, serialise."""

from .accounts import bp as accounts
from .content import bp as content
from .events import bp as events
from .events import ws_bp as events_ws
from .health import bp as health
from .history import bp as history
from .nodes import bp as nodes
from .vaults import bp as vaults

ALL = (health, accounts, vaults, content, nodes, history, events, events_ws)
