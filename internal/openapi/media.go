package openapi

// The image and audio routes: JSON bodies for generations and speech,
// multipart/form-data uploads for edits, variations, transcriptions and
// translations; speech answers with audio bytes.

// formBody is a multipart/form-data request body, or (when jsonAlt is
// not nil) that or a JSON body.
func formBody(schema, jsonAlt any) obj {
	content := obj{"multipart/form-data": obj{"schema": schema}}
	if jsonAlt != nil {
		content["application/json"] = obj{"schema": jsonAlt}
	}
	return obj{"required": true, "content": content}
}

// binary is a file part of a form.
var binary = obj{"type": "string", "format": "binary"}

func mediaOperations() []op {
	images := jsonResp("the images: b64_json or url each; gpt-image models report usage", ref("ImagesResponse"))
	transcript := obj{"description": "the text: json and verbose_json as JSON, text, srt and vtt as text", "content": obj{
		"application/json": obj{"schema": ref("Transcription")},
		"text/plain":       obj{"schema": obj{"type": "string"}},
	}}
	audio := obj{"description": "the audio, streamed as it is made", "content": obj{}}
	for _, ct := range []string{"audio/mpeg", "audio/ogg", "audio/aac", "audio/flac", "audio/wav", "audio/pcm"} {
		audio["content"].(obj)[ct] = obj{"schema": binary}
	}
	routes := []struct {
		p string
		o op
	}{
		{"/images/generations", op{summary: "Generate images (OpenAI API); priced per image by size and quality", body: ref("ImageGenerationRequest"), ok: images}},
		{"/images/edits", op{summary: "Edit an image (OpenAI API, multipart upload, or JSON naming the images by URL or file id for GPT image models)", body: ref("ImageEditRequest"), jsonAlt: ref("ImageEditJSONRequest"), ok: images, form: true}},
		{"/images/variations", op{summary: "Variations of an image (OpenAI API, multipart upload)", body: ref("ImageVariationRequest"), ok: images, form: true}},
		{"/audio/transcriptions", op{summary: "Transcribe audio (OpenAI API, multipart upload); priced per second of audio or by tokens", body: ref("TranscriptionRequest"), ok: transcript, form: true}},
		{"/audio/translations", op{summary: "Translate audio into English (OpenAI API, multipart upload)", body: ref("TranscriptionRequest"), ok: transcript, form: true}},
		{"/audio/speech", op{summary: "Text to speech (OpenAI API); the audio is streamed; priced per character or token", body: ref("SpeechRequest"), ok: audio}},
	}
	var ops []op
	for _, prefix := range []string{"/v1", "", "/openai/deployments/{model}"} {
		for _, r := range routes {
			x := r.o
			x.method, x.path, x.tag = "POST", prefix+r.p, "inference"
			if prefix != "/v1" && prefix != "" {
				x.params = []obj{path("model")}
				x.summary += " — Azure OpenAI style, the model in the path"
				x.body = withoutModel(x.body)
				if x.jsonAlt != nil {
					x.jsonAlt = withoutModel(x.jsonAlt)
				}
			}
			ops = append(ops, x)
		}
	}
	return ops
}

// withoutModel is a request schema whose model may come from the path.
func withoutModel(body any) any {
	name := body.(obj)["$ref"].(string)
	return ref(name[len("#/components/schemas/"):] + "Azure")
}

func mediaSchemas() obj {
	image := obj{"model": str(""), "prompt": str(""), "n": integer, "size": str("e.g. 1024x1024, or auto"),
		"quality": str("standard, hd, low, medium, high or auto"), "response_format": str("url or b64_json"), "user": str("the end user")}
	edit := obj{"model": str(""), "image": binary, "image[]": binary, "mask": binary, "prompt": str(""), "n": str("an integer"),
		"size": str(""), "quality": str(""), "response_format": str(""), "user": str("the end user")}
	imageRef := object(nil, obj{"image_url": str("a URL or a base64 data URL"), "file_id": str("an uploaded file's id")})
	editJSON := obj{"model": str(""), "images": arr(imageRef), "mask": imageRef, "prompt": str(""), "n": integer,
		"size": str(""), "quality": str(""), "response_format": str(""), "input_fidelity": str("high or low"), "user": str("the end user")}
	variation := obj{"model": str(""), "image": binary, "n": str("an integer"), "size": str(""), "response_format": str(""), "user": str("the end user")}
	transcription := obj{"model": str(""), "file": binary, "language": str(""), "prompt": str(""),
		"response_format": str("json, text, srt, verbose_json or vtt"), "temperature": str(""), "user": str("the end user")}
	speech := obj{"model": str(""), "input": str("the text to speak"), "voice": str(""), "instructions": str(""),
		"response_format": str("mp3, opus, aac, flac, wav or pcm"), "speed": num, "user": str("the end user")}
	out := obj{
		"ImagesResponse": object([]string{"data"}, obj{"created": integer, "data": arr(object(nil, obj{"b64_json": str(""), "url": str(""), "revised_prompt": str("")})), "usage": anyObj}),
		"Transcription":  object([]string{"text"}, obj{"text": str(""), "duration": num, "language": str(""), "segments": arr(anyObj), "usage": anyObj}),
	}
	for name, s := range map[string]struct {
		props    obj
		required []string
	}{
		"ImageGenerationRequest": {image, []string{"prompt"}},
		"ImageEditRequest":       {edit, []string{"prompt"}},
		"ImageEditJSONRequest":   {editJSON, []string{"prompt", "images"}},
		"ImageVariationRequest":  {variation, nil},
		"TranscriptionRequest":   {transcription, []string{"file"}},
		"SpeechRequest":          {speech, []string{"input"}},
	} {
		out[name] = object(append([]string{"model"}, s.required...), s.props)
		out[name+"Azure"] = object(s.required, s.props)
	}
	return out
}
