package provider

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/pricing"
)

// Amazon Bedrock (bedrock/...): the Converse API at
// /model/{modelId}/converse (ConverseStream at .../converse-stream, an AWS
// event stream), every request signed with SigV4 for the service
// "bedrock". Chat and Messages requests reach it translated
// (internal/translate/bedrock.go); embeddings go to InvokeModel
// (/model/{modelId}/invoke, OpBedrockEmbed) in the model family's body
// (internal/translate/bedrock_embed.go).
func init() {
	register([]string{"bedrock"}, dialect{defaultBase: bedrockDefaultBase, build: buildBedrock})
}

// bedrockDefaultBase stands for the runtime endpoint of the deployment's
// region; buildBedrock replaces it.
const bedrockDefaultBase = "https://bedrock-runtime.amazonaws.com"

// buildBedrock addresses a bedrock deployment: its aws_* params sign the
// requests, else the standard AWS environment variables and shared
// config/credentials files (ResolveAWS), read now: a reload re-reads them.
// Roles, SSO and instance credentials are not followed: a deployment with
// no key pair is unusable (ErrUnusable), as is one with no region. The host is
// bedrock-runtime.{region}.amazonaws.com unless api_base (or LiteLLM's
// aws_bedrock_runtime_endpoint, or AWS_BEDROCK_RUNTIME_ENDPOINT) names
// another.
func buildBedrock(t *Target, base *url.URL) error {
	creds, err := ResolveAWS(t.D.AWS, os.Getenv)
	if err != nil {
		return err
	}
	root := strings.TrimRight(base.String(), "/")
	if t.D.APIBase == "" {
		root = "https://bedrock-runtime." + creds.Region + ".amazonaws.com"
		if ep := os.Getenv("AWS_BEDROCK_RUNTIME_ENDPOINT"); ep != "" {
			root = strings.TrimRight(ep, "/")
		}
	}
	t.urls[OpConverse] = root + "/model/{model}/converse"
	t.urls[OpBedrockEmbed] = root + "/model/{model}/invoke"
	t.modelURL = func(op Op, model string, stream bool) string {
		u := root + "/model/" + bedrockPathEscape(BedrockModelID(model))
		if op == OpBedrockEmbed {
			return u + "/invoke"
		}
		u += "/converse"
		if stream {
			u += "-stream"
		}
		return u
	}
	t.authorize = func(req *http.Request, body []byte) error {
		if strings.HasSuffix(req.URL.Path, "/converse-stream") {
			req.Header.Set("Accept", "application/vnd.amazon.eventstream")
		}
		return SignAWS(req.Context(), req, body, creds, "bedrock", time.Now())
	}
	return nil
}

// BedrockModelID is the Bedrock model id of a deployment's model: LiteLLM's
// route prefixes (bedrock/converse/..., bedrock/invoke/...) removed, since
// every model is reached through Converse. Cross-region inference profile
// ids (us.anthropic....) and ARNs are kept whole.
func BedrockModelID(model string) string {
	for _, p := range []string{"converse/", "invoke/"} {
		model = strings.TrimPrefix(model, p)
	}
	return model
}

// bedrockPathEscape escapes a model id as one path segment the way AWS's
// SDKs do: a colon (anthropic.claude-...-v1:0) and a slash (an ARN) too.
func bedrockPathEscape(id string) string {
	return strings.ReplaceAll(url.PathEscape(id), ":", "%3A")
}

// geoPrefixes are the cross-region inference profiles' prefixes.
var geoPrefixes = []string{"us.", "eu.", "apac.", "us-gov.", "jp.", "au.", "ca.", "global."}

// bedrockPrice is the table price of a Bedrock model id the table does not
// list as given: without LiteLLM's route prefix, an ARN by the id after
// its last '/' (an inference profile's or a foundation model's), then
// without a cross-region prefix (a profile bills as its model). Any other
// ARN (a provisioned model's) stays unpriced, like any unpriced deployment.
func bedrockPrice(name string) (pricing.Price, bool) {
	id := BedrockModelID(name)
	if strings.HasPrefix(id, "arn:") {
		id = id[strings.LastIndexByte(id, '/')+1:]
	}
	if p, ok := pricing.Lookup("bedrock", id); ok {
		return p, true
	}
	for _, g := range geoPrefixes {
		if bare, ok := strings.CutPrefix(id, g); ok {
			return pricing.Lookup("bedrock", bare)
		}
	}
	return pricing.Price{}, false
}

// BedrockMaxOutput is the output bound of a request to a Bedrock model
// that sets none: the table's maximum output for the model (found as
// DeploymentPrice finds its price), else pricing.DefaultMaxOutput, the
// bound a budget hold is sized on for such a request.
func BedrockMaxOutput(model string) int64 {
	p, ok := pricing.Lookup("bedrock", model)
	if !ok {
		p, _ = bedrockPrice(model)
	}
	if p.MaxOutputTokens > 0 {
		return p.MaxOutputTokens
	}
	return pricing.DefaultMaxOutput
}
