"""Producer code as a user writes it, run by tests/test_light_install.py on a light host:
``@task`` handler, ``.submit()`` to TQ_BROKER_ADDR, ``.wait()`` for the result."""

from worker import task


@task("echo")
def echo(payload):
    return payload


if __name__ == "__main__":
    import json

    print(json.dumps(echo.submit({"from": "producer"}).wait(timeout=30)))
