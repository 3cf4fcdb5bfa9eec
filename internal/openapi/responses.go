package openapi

// The Responses API (internal/gateway/responses.go).

func responsesOperations() []op {
	id := []obj{path("id")}
	create := op{tag: "inference", summary: "Create a model response (OpenAI Responses API); passed through to OpenAI and Azure deployments, translated through chat completions for others; `stream: true` answers the Responses event stream",
		body: ref("ResponseRequest"), ok: jsonResp("the response", ref("Response")), stream: true}
	get := op{tag: "inference", summary: "A stored response, from the deployment that created it (the creating key or an admin)", params: append(id, query("include", "extra output to include", false)),
		ok: jsonResp("the response", ref("Response"))}
	del := op{tag: "inference", summary: "Delete a stored response at the deployment that created it (the creating key or an admin)", params: id,
		ok: jsonResp("deleted", object([]string{"id", "deleted"}, obj{"id": str(""), "object": str(""), "deleted": boolean}))}
	items := op{tag: "inference", summary: "The input items of a stored response (the creating key or an admin)",
		params: append(append([]obj{}, id...), query("after", "list after this item id", false), query("before", "list before this item id", false),
			query("limit", "1 to 100", false), query("order", "asc or desc", false), query("include", "extra output to include", false)),
		ok: jsonResp("the items", object([]string{"data"}, obj{"object": str("list"), "data": arr(anyObj), "first_id": nullStr, "last_id": nullStr, "has_more": boolean}))}
	var ops []op
	for _, prefix := range []string{"/v1", ""} {
		for _, o := range []struct {
			op
			method, p string
		}{{create, "POST", "/responses"}, {get, "GET", "/responses/{id}"}, {del, "DELETE", "/responses/{id}"}, {items, "GET", "/responses/{id}/input_items"}} {
			x := o.op
			x.method, x.path = o.method, prefix+o.p
			ops = append(ops, x)
		}
	}
	return ops
}

func responsesSchemas() obj {
	usage := object(nil, obj{"input_tokens": integer, "output_tokens": integer, "total_tokens": integer,
		"input_tokens_details": object(nil, obj{"cached_tokens": integer}), "output_tokens_details": object(nil, obj{"reasoning_tokens": integer})})
	return obj{
		"ResponseRequest": object([]string{"model"}, obj{
			"model": str(""), "input": obj{"description": "a string, or a list of input items (messages, function_call, function_call_output, ...)"},
			"instructions": nullStr, "max_output_tokens": nullInt, "stream": boolean, "user": str("the end user"),
			"previous_response_id": obj{"type": []string{"string", "null"}, "description": "an id this gateway returned to the same key: the call goes to the deployment that holds it"},
			"tools":                arr(anyObj), "tool_choice": obj{}, "text": anyObj, "temperature": nullNum, "top_p": nullNum, "store": obj{"type": []string{"boolean", "null"}}, "metadata": anyObj}),
		// Upstream answers pass through as sent: nothing more is required.
		"Response": object([]string{"id"}, obj{"id": str("resp_...: names the deployment and the key that created it"), "object": str("response"),
			"created_at": num, "status": str("completed, incomplete, failed, in_progress, ..."), "model": str(""), "output": arr(anyObj),
			"previous_response_id": nullStr, "usage": obj{"anyOf": []any{usage, obj{"type": "null"}}}}),
	}
}
