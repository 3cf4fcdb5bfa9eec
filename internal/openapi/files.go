package openapi

// The Files and Batches APIs (internal/gateway/files.go): OpenAI's routes,
// with and without /v1 and under LiteLLM's provider prefixes.

// fileRoutePrefixes are the prefixes the routes are served under.
var fileRoutePrefixes = []string{"/v1", "", "/openai/v1", "/azure/v1"}

func fileOps() []op {
	who := " A key reaches only the files and batches it created (another's are 404); the master key and proxy admins reach all."
	choose := []obj{query("custom_llm_provider", "the provider whose deployment takes a new file (also a form field or the custom-llm-provider header); openai by default", false)}
	list := []obj{query("after", "the id of the last object of the previous page", false), query("limit", "page size, 1 to 10000 (default 20)", false)}
	fileID, batchID := []obj{path("file_id")}, []obj{path("batch_id")}
	var ops []op
	for _, p := range fileRoutePrefixes {
		ops = append(ops,
			op{method: "POST", path: p + "/files", tag: "files", summary: "Upload a file to a deployment (multipart: file, purpose; model or target_model_names chooses the model group). A batch file's lines must name that model group, and run its deployment's model." + who,
				body: ref("FileUpload"), form: true, params: choose, ok: jsonResp("the upstream's file object", ref("File"))},
			op{method: "GET", path: p + "/files", tag: "files", summary: "The caller's files, newest first, as last seen." + who, params: list, ok: jsonResp("a page", ref("FileList"))},
			op{method: "GET", path: p + "/files/{file_id}", tag: "files", summary: "A file, from its deployment." + who, params: fileID, ok: jsonResp("the file object", ref("File"))},
			op{method: "GET", path: p + "/files/{file_id}/content", tag: "files", summary: "A file's content; reading a batch's output charges the batch if no retrieval did." + who, params: fileID,
				ok: obj{"description": "the bytes, as the deployment sent them", "content": obj{"application/octet-stream": obj{"schema": obj{"type": "string", "format": "binary"}}}}},
			op{method: "DELETE", path: p + "/files/{file_id}", tag: "files", summary: "Delete a file at its deployment." + who, params: fileID, ok: jsonResp("the deletion", ref("FileDeleted"))},
			op{method: "POST", path: p + "/batches", tag: "batches", summary: "Start a batch on the deployment that holds its input file; refused (400 budget_exceeded) when the key's budget is spent, and (400 budget_enforcement_strict) to a budgeted caller under strict enforcement." + who,
				body: ref("BatchRequest"), ok: jsonResp("the upstream's batch object", ref("Batch"))},
			op{method: "GET", path: p + "/batches", tag: "batches", summary: "The caller's batches, newest first, as last seen." + who, params: list, ok: jsonResp("a page", ref("BatchList"))},
			op{method: "GET", path: p + "/batches/{batch_id}", tag: "batches", summary: "A batch, from its deployment; the first retrieval that sees it ended charges its usage at the batch price." + who,
				params: batchID, ok: jsonResp("the batch object", ref("Batch"))},
			op{method: "POST", path: p + "/batches/{batch_id}/cancel", tag: "batches", summary: "Cancel a batch." + who, params: batchID, ok: jsonResp("the batch object", ref("Batch"))},
		)
	}
	return ops
}

func fileSchemas() obj {
	page := func(item string) obj {
		return object([]string{"object", "data", "has_more"}, obj{"object": obj{"const": "list"}, "data": arr(ref(item)),
			"first_id": str(""), "last_id": str(""), "has_more": boolean})
	}
	return obj{
		"FileUpload": object([]string{"file", "purpose"}, obj{"file": binary,
			"purpose":             str("assistants, batch, fine-tune, vision, user_data or evals"),
			"model":               str("the model group whose deployment takes the file (not sent upstream)"),
			"target_model_names":  str("LiteLLM's name for the same: model groups, comma-separated; the first is used"),
			"custom_llm_provider": str("the provider, when no model is named (not sent upstream)")}),
		"File": object([]string{"id"}, obj{"id": str(""), "object": str("file"), "bytes": integer, "created_at": integer, "filename": str(""),
			"purpose": str(""), "status": str("")}),
		"FileList":    page("File"),
		"FileDeleted": object([]string{"id", "deleted"}, obj{"id": str(""), "object": str(""), "deleted": boolean}),
		"BatchRequest": object([]string{"input_file_id", "endpoint", "completion_window"}, obj{"input_file_id": str("a file the caller uploaded with purpose batch"),
			"endpoint":          str("/v1/chat/completions, /v1/embeddings, /v1/completions, /v1/responses or /v1/moderations"),
			"completion_window": str("24h"), "metadata": obj{"type": []string{"object", "null"}, "maxProperties": 16, "propertyNames": obj{"maxLength": 64}, "additionalProperties": obj{"type": "string", "maxLength": 512}}}),
		"Batch": object([]string{"id"}, obj{"id": str(""), "object": str("batch"), "endpoint": str(""), "input_file_id": str(""), "completion_window": str(""),
			"status":         str("validating, failed, in_progress, finalizing, completed, expired, cancelling or cancelled"),
			"output_file_id": nullStr, "error_file_id": nullStr, "created_at": integer, "request_counts": anyObj,
			"metadata": obj{"type": []string{"object", "null"}}}),
		"BatchList": page("Batch"),
	}
}
