"""RESP commands for schedules (docs/protocol.md, "Schedules"): one JSON object argument
each, like every other command. Handlers take the connection, as its own methods do."""

from __future__ import annotations

from broker import validation as v


def create(conn, arg, size):
    return conn.service.create_schedule(conn.principal, arg)


def update(conn, arg, size):
    arg = v.obj(arg)
    return conn.service.update_schedule(conn.principal, arg.get("id"), arg)


def get(conn, arg, size):
    return conn.service.get_schedule(conn.principal, v.obj(arg).get("id"))


def list_(conn, arg, size):
    arg = v.obj(arg) if arg is not None else {}
    return conn.service.list_schedules(conn.principal, arg.get("after"), arg.get("limit"))


def pause(conn, arg, size):
    return conn.service.pause_schedule(conn.principal, v.obj(arg).get("id"), True)


def resume(conn, arg, size):
    return conn.service.pause_schedule(conn.principal, v.obj(arg).get("id"), False)


def delete(conn, arg, size):
    return conn.service.delete_schedule(conn.principal, v.obj(arg).get("id"))


def run(conn, arg, size):
    return conn.service.run_schedule(conn.principal, v.obj(arg).get("id"))
