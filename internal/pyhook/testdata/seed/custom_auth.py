from litellm.proxy._types import UserAPIKeyAuth

async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    try:
        modified_master_key = "sk-my-master-key"
        if api_key == modified_master_key:
            return UserAPIKeyAuth(api_key=api_key)
        raise Exception
    except:
        raise Exception

async def custom_generate_key_fn(data: GenerateKeyRequest)-> dict:
    """
    Asynchronous function for generating a key based on the input data.

    Args:
        data (GenerateKeyRequest): The input data for key generation.

    Returns:
        dict: A dictionary containing the decision and an optional message.
        {
            "decision": False,
            "message": "This violates LiteLLM Proxy Rules. No team id provided.",
        }
    """

    # decide if a key should be generated or not
    print("using custom auth function!")
    data_json = data.json() # type: ignore

    # Unpacking variables
    team_id = data_json.get("team_id")
    duration = data_json.get("duration")
    models = data_json.get("models")
    aliases = data_json.get("aliases")
    config = data_json.get("config")
    spend = data_json.get("spend")
    user_id = data_json.get("user_id")
    max_parallel_requests = data_json.get("max_parallel_requests")
    metadata = data_json.get("metadata")
    tpm_limit = data_json.get("tpm_limit")
    rpm_limit = data_json.get("rpm_limit")

    if team_id is not None and team_id == "litellm-core-infra@gmail.com":
        # only team_id="litellm-core-infra@gmail.com" can make keys
        return {
            "decision": True,
        }
    else:
        print("Failed custom auth")
        return {
            "decision": False,
            "message": "This violates LiteLLM Proxy Rules. No team id provided.",
        }
