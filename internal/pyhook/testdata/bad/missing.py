import tollgate_no_such_module  # noqa: F401


async def user_api_key_auth(request, api_key):
    return None
