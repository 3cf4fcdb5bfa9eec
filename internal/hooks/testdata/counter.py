from litellm.proxy._types import UserAPIKeyAuth

calls = 0


async def user_api_key_auth(request, api_key):
    global calls
    calls += 1
    if api_key != "sk-counted":
        raise Exception("unknown key")
    return UserAPIKeyAuth(api_key=api_key, user_id="u1", team_id="t1", models=["m"], max_budget=5,
                          rpm_limit=7, key_alias="alias", user_role="proxy_admin", metadata={"calls": calls})
