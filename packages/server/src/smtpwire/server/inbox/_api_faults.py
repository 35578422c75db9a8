"""The test server's fault rules over HTTP, under ``/api/smtpwire/faults``, so a
test written in any language can make the server refuse, delay or drop.

A rule is posted as the Python call it stands for: ``{"action": "reply", "code":
451, "command": "MAIL"}`` is ``faults.reply(451, command="MAIL")``.  The fields an
action takes are read from that method's signature, and the values are judged by
the method itself (a :class:`FaultRuleError` names the parameter), so the two APIs
cannot drift apart; this module checks only what JSON adds: the types.

The routes exist on every web inbox; only one serving a test server has rules
(``app[FAULTS]``, set by :mod:`smtpwire.server.testing`): elsewhere they answer 404.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from aiohttp import web

from smtpwire.server.testing._faults import Drop, Fault, FaultRuleError, FaultRules

from ._api import error

__all__ = ["ACTIONS", "FAULTS", "add_routes", "rule_json"]

FAULTS: Final = web.AppKey("faults", FaultRules)
#: The FaultRules methods a posted rule may name.
ACTIONS: Final = ("reply", "delay", "drop", "drop_during_data", "refuse_tls")
NOT_HERE: Final = (
    "this inbox has no fault rules: they are served with the test server of "
    "smtpwire.server.testing (SMTPTestServer(web=True), the pytest plugin's smtpwire_web)"
)


def _parameters(action: str) -> dict[str, bool]:
    """The parameters of ``FaultRules.<action>``: name -> whether it is required."""
    signature = inspect.signature(getattr(FaultRules, action))
    return {
        name: parameter.default is inspect.Parameter.empty
        for name, parameter in signature.parameters.items()
        if name != "self"
    }


PARAMETERS: Final = {action: _parameters(action) for action in ACTIONS}


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text_or_null(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _attempt(value: Any) -> bool:
    if value is None or _whole(value):
        return True
    return isinstance(value, list) and all(_whole(item) for item in value)


#: What JSON may carry for each parameter, and how to say it when it does not.
CHECKS: Final[Mapping[str, tuple[Callable[[Any], bool], str]]] = {
    "code": (_whole, "a whole number from 200 to 599"),
    "text": (lambda value: isinstance(value, str), "a string"),
    "command": (_text_or_null, "an SMTP verb, CONNECT or MESSAGE (or null: any)"),
    "address": (_text_or_null, "an address (or null: any)"),
    "attempt": (_attempt, "a whole number, a list of them, or null"),
    "times": (lambda value: value is None or _whole(value), "a whole number or null (always)"),
    "delay": (_number, "a number of seconds"),
    "seconds": (_number, "a number of seconds"),
}


def bad_field(name: str, message: str) -> web.Response:
    return web.json_response({"Error": f"{name}: {message}", "Field": name}, status=400)


def rules_of(request: web.Request) -> FaultRules | None:
    return request.app.get(FAULTS)


def rule_json(rule: Fault) -> dict[str, Any]:
    """A rule as the action and parameters that would make it, with its counts."""
    found: dict[str, Any] = {"id": rule.id}
    if rule.drop is Drop.DURING_DATA:
        found.update(action="drop_during_data")
    elif rule.drop is not None:
        found.update(action="drop")
    elif rule.reply is not None:
        code, _, text = rule.reply.partition(" ")
        found.update(action="reply", code=int(code), text=text, delay=rule.delay)
    else:
        found.update(action="delay", seconds=rule.delay)
    found.update(
        command=rule.command,
        address=rule.address,
        attempt=None if rule.attempts is None else sorted(rule.attempts),
        times=rule.times,
        seen=rule.seen,
        fired=rule.fired,
    )
    return found


async def list_faults(request: web.Request) -> web.Response:
    rules = rules_of(request)
    if rules is None:
        return error(404, NOT_HERE)
    return web.json_response({"faults": [rule_json(rule) for rule in rules.rules]})


async def get_fault(request: web.Request) -> web.Response:
    rules = rules_of(request)
    if rules is None:
        return error(404, NOT_HERE)
    wanted = _rule_id(request)
    if isinstance(wanted, web.Response):
        return wanted
    for rule in rules.rules:
        if rule.id == wanted:
            return web.json_response(rule_json(rule))
    return error(404, f"no fault rule {wanted}")


async def add_fault(request: web.Request) -> web.Response:
    rules = rules_of(request)
    if rules is None:
        return error(404, NOT_HERE)
    try:
        body = json.loads(await request.read())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return error(400, "the body is not JSON")
    if not isinstance(body, dict):
        return error(400, "the body must be a JSON object")
    action = body.pop("action", None)
    if action not in ACTIONS:
        return bad_field("action", f"one of {', '.join(ACTIONS)}, not {action!r}")
    parameters = PARAMETERS[action]
    for name in body:
        if name not in parameters:
            return bad_field(name, f"not a field of {action} (its fields: {', '.join(parameters)})")
    for name, required in parameters.items():
        if required and name not in body:
            return bad_field(name, f"{action} needs it")
    for name, value in body.items():
        check, expected = CHECKS[name]
        if not check(value):
            return bad_field(name, f"expected {expected}, not {json.dumps(value)}")
    try:
        rule = getattr(rules, action)(**body)
    except FaultRuleError as problem:
        return bad_field(problem.field, str(problem))
    return web.json_response(
        rule_json(rule), status=201, headers={"Location": f"/api/smtpwire/faults/{rule.id}"}
    )


async def clear_faults(request: web.Request) -> web.Response:
    rules = rules_of(request)
    if rules is None:
        return error(404, NOT_HERE)
    return web.json_response({"deleted": rules.clear()})


async def delete_fault(request: web.Request) -> web.Response:
    rules = rules_of(request)
    if rules is None:
        return error(404, NOT_HERE)
    wanted = _rule_id(request)
    if isinstance(wanted, web.Response):
        return wanted
    removed = rules.remove(wanted)
    if removed is None:
        return error(404, f"no fault rule {wanted}")
    return web.json_response(rule_json(removed))  # its final counts


def _rule_id(request: web.Request) -> int | web.Response:
    text = request.match_info["id"]
    if not text.isascii() or not text.isdigit():
        return bad_field("id", f"a rule's id is a whole number, not {text!r}")
    return int(text)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/smtpwire/faults", list_faults)
    app.router.add_post("/api/smtpwire/faults", add_fault)
    app.router.add_delete("/api/smtpwire/faults", clear_faults)
    app.router.add_get("/api/smtpwire/faults/{id}", get_fault)
    app.router.add_delete("/api/smtpwire/faults/{id}", delete_fault)
