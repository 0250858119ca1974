"""REST routes for schedules (openapi.yaml, tag "Schedules"), added by broker/api/rest.py."""

from __future__ import annotations

from broker import validation as v

PREFIX = "/api/v1"


def add_routes(app, server, service, json_response) -> None:
    @app.route(f"{PREFIX}/schedules", methods=["GET", "POST"])
    async def list_or_create_schedules(request):
        principal = await server._principal(request)
        if request.method == "POST":
            body, _ = server._body(request)
            return json_response(await service.create_schedule(principal, body), 201)
        limit = v.query_int(request.args.get("limit"), "limit")
        return json_response(service.list_schedules(principal, request.args.get("after"),
                                                    limit))

    @app.route(f"{PREFIX}/schedules/<schedule_id:str>", methods=["GET", "PATCH", "DELETE"])
    async def one_schedule(request, schedule_id):
        principal = await server._principal(request)
        if request.method == "PATCH":
            body, _ = server._body(request)
            return json_response(await service.update_schedule(principal, schedule_id,
                                                               v.obj(body, "body")))
        if request.method == "DELETE":
            return json_response(await service.delete_schedule(principal, schedule_id))
        return json_response(service.get_schedule(principal, schedule_id))

    @app.post(f"{PREFIX}/schedules/<schedule_id:str>/pause")
    async def pause_schedule(request, schedule_id):
        principal = await server._principal(request)
        return json_response(await service.pause_schedule(principal, schedule_id, True))

    @app.post(f"{PREFIX}/schedules/<schedule_id:str>/resume")
    async def resume_schedule(request, schedule_id):
        principal = await server._principal(request)
        return json_response(await service.pause_schedule(principal, schedule_id, False))

    @app.post(f"{PREFIX}/schedules/<schedule_id:str>/run")
    async def run_schedule(request, schedule_id):
        principal = await server._principal(request)
        return json_response(await service.run_schedule(principal, schedule_id), 201)
