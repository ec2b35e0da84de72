"""Redis going away under a running server: 503s with a clear error, no crash, service again on return."""

import time

import httpx

from tests.conftest import RedisServer, wait_for_job


def test_redis_down_gives_503_and_the_server_recovers(start_server, tmp_path):
    redis_server = RedisServer(tmp_path / "own-redis", appendonly=True)
    redis_server.start()
    try:
        server = start_server(redis_url=redis_server.url)
        with server.client() as api:
            api.put("/repos/demo")
            api.put("/repos/demo/hello", content=b"echo hello\n")
            redis_server.stop()
            for method, path in [("GET", "/repos"), ("PUT", "/repos/other"), ("PATCH", "/repos/demo/hello"),
                                 ("GET", "/jobs"), ("GET", "/jobs/1/log")]:  # fmt: skip
                response = api.request(method, path)
                assert response.status_code == 503, (method, path, response.text)
                assert "Redis" in response.json()["error"]
            info = api.get("/")
            assert info.status_code == 200 and info.json()["redis"].startswith("unavailable")
            redis_server.start()
            deadline = time.monotonic() + 15
            while api.get("/repos").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert api.get("/repos").json() == ["demo"], "append-only persistence kept the repo"
            job_id = api.patch("/repos/demo/hello").json()["id"]
            assert wait_for_job(api, job_id)["tail"] == ["hello"], "the queue moves again"
    finally:
        redis_server.stop()


def test_redis_down_at_start_then_up(start_server, tmp_path):
    redis_server = RedisServer(tmp_path / "late-redis")
    server = start_server(redis_url=redis_server.url)
    with server.client() as api:
        assert api.get("/repos").status_code == 503
        redis_server.start()
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    if api.put("/repos/demo").status_code == 201:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.1)
            api.put("/repos/demo/hello", content=b"echo hello\n")
            assert wait_for_job(api, api.patch("/repos/demo/hello").json()["id"])["result"] == "success"
        finally:
            redis_server.stop()
