"""The HTTP API, one module per resource; `add_routes` is the whole routing table."""

from sanic import DefaultSanic

from pieter.api import hooks, jobs, openapi, repos, schedules, service


def add_routes(app: DefaultSanic) -> None:
    app.add_route(service.info, "/", methods=["GET"])
    app.add_route(openapi.openapi, "/openapi.json", methods=["GET"])
    app.add_route(repos.list_repos, "/repos", methods=["GET"])
    app.add_route(repos.get_repo, "/repos/<repo>", methods=["GET"])
    app.add_route(repos.put_repo, "/repos/<repo>", methods=["PUT"])
    app.add_route(repos.delete_repo, "/repos/<repo>", methods=["DELETE"])
    app.add_route(repos.get_scenario, "/repos/<repo>/<scenario>", methods=["GET"])
    app.add_route(repos.put_scenario, "/repos/<repo>/<scenario>", methods=["PUT"])
    app.add_route(repos.delete_scenario, "/repos/<repo>/<scenario>", methods=["DELETE"])
    app.add_route(jobs.queue_job, "/repos/<repo>/<scenario>", methods=["PATCH"])
    app.add_route(repos.get_script, "/repos/<repo>/<scenario>/script", methods=["GET"])
    app.add_route(hooks.hook, "/hooks/<repo>/<scenario>", methods=["POST"])
    app.add_route(hooks.hook, "/webhooks/<repo>/<scenario>", methods=["POST"], name="webhook")  # the original's path
    app.add_route(schedules.put_schedule, "/repos/<repo>/<scenario>/schedule", methods=["PUT"])
    app.add_route(schedules.get_schedule, "/repos/<repo>/<scenario>/schedule", methods=["GET"])
    app.add_route(schedules.delete_schedule, "/repos/<repo>/<scenario>/schedule", methods=["DELETE"])
    app.add_route(jobs.list_jobs, "/jobs", methods=["GET"])
    app.add_route(jobs.get_job, "/jobs/<job_id>", methods=["GET"])
    app.add_route(jobs.delete_job, "/jobs/<job_id>", methods=["DELETE"])
    app.add_route(jobs.cancel_job, "/jobs/<job_id>/cancel", methods=["POST"])
    app.add_route(jobs.get_log, "/jobs/<job_id>/log", methods=["GET"])
    app.add_route(jobs.list_artifacts, "/jobs/<job_id>/artifacts", methods=["GET"])
    app.add_route(jobs.get_artifact, "/jobs/<job_id>/artifacts/<path:path>", methods=["GET"])
