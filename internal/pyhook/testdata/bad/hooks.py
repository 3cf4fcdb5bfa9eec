# Misbehaving hooks for Tollgate's tests.
import os
import time

from litellm.proxy._types import UserAPIKeyAuth


async def raises(request, api_key):
    raise ValueError("no entry for " + request.url.path)


async def hangs(request, api_key):
    if api_key == "sk-fast":
        return UserAPIKeyAuth(api_key=api_key)
    time.sleep(3600)


async def crashes(request, api_key):
    if api_key == "sk-fast":
        return UserAPIKeyAuth(api_key=api_key)
    os._exit(7)


async def chatty(request, api_key):
    print('{"id": 1, "ok": true, "result": {}}')
    os.write(1, b'{"ok": true}\n')
    if api_key != "sk-chatty":
        raise Exception("not chatty")
    return UserAPIKeyAuth(api_key=api_key, user_id="u-" + request.headers.get("x-who", "?"),
                          models=["openai-model"], rpm_limit=5,
                          metadata={"path": request.url.path, "body": (await request.json())["model"]})


async def keygen_raises(data):
    raise RuntimeError("key generation is closed today")


async def slow(request, api_key):
    time.sleep(0.5)
    return UserAPIKeyAuth(api_key=api_key)
