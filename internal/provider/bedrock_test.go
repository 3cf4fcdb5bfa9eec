package provider

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/pricing"
)

// TestBedrockTarget: a bedrock deployment's Converse URL carries the model
// id (LiteLLM's converse/ prefix dropped, the colon escaped) on its
// region's runtime host or its api_base, and each request is signed with
// the deployment's keys, else the environment's; with neither, or with no
// region, the deployment is unusable rather than wrong.
func TestBedrockTarget(t *testing.T) {
	awsHome(t, "", "") // no shared files
	tests := []struct {
		name    string
		d       config.Deployment
		env     map[string]string
		stream  bool
		wantURL string
		cred    string // the Authorization header's credential scope
	}{
		{"deployment keys, region host", config.Deployment{Provider: "bedrock", Model: "anthropic.claude-3-5-sonnet-20240620-v1:0",
			AWS: &config.AWSCredentials{AccessKeyID: "AKIA1", SecretAccessKey: "s", Region: "us-east-1"}}, nil, false,
			"https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse", "AKIA1/"},
		{"converse prefix, profile id, stream, api_base", config.Deployment{Provider: "bedrock", Model: "converse/us.meta.llama3-1-70b-instruct-v1:0", APIBase: "https://vpce.example/",
			AWS: &config.AWSCredentials{AccessKeyID: "AKIA2", SecretAccessKey: "s", Region: "us-west-2"}}, nil, true,
			"https://vpce.example/model/us.meta.llama3-1-70b-instruct-v1%3A0/converse-stream", "AKIA2/"},
		{"environment keys and region (agentgateway)", config.Deployment{Provider: "bedrock", Model: "amazon.nova-pro-v1:0"},
			map[string]string{"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "eu-west-1"}, false,
			"https://bedrock-runtime.eu-west-1.amazonaws.com/model/amazon.nova-pro-v1%3A0/converse", "AKIAENV/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			tg, err := Build(&tt.d, NewClients())
			if err != nil {
				t.Fatal(err)
			}
			req, err := tg.NewRequest(context.Background(), OpConverse, tg.UpstreamModel("x"), []byte(`{}`), "", tt.stream)
			if err != nil {
				t.Fatal(err)
			}
			auth := req.Header.Get("Authorization")
			if req.URL.String() != tt.wantURL || !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential="+tt.cred) || !strings.Contains(auth, "/bedrock/aws4_request") {
				t.Fatalf("%s with %q", req.URL, auth)
			}
		})
	}
	for _, d := range []config.Deployment{
		{Provider: "bedrock", Model: "m", AWS: &config.AWSCredentials{Region: "us-east-1"}},
		{Provider: "bedrock", Model: "m", AWS: &config.AWSCredentials{AccessKeyID: "AKIA", SecretAccessKey: "s"}},
	} {
		if _, err := Build(&d, NewClients()); !errors.Is(err, ErrUnusable) {
			t.Errorf("%+v: %v, want ErrUnusable", d.AWS, err)
		}
	}
}

// TestBedrockPrice: Bedrock ids are priced from the table as Bedrock names
// them; a cross-region profile the table lacks as its model, by id or by
// ARN; a provisioned model's ARN is unpriced.
func TestBedrockPrice(t *testing.T) {
	want, ok := pricing.Lookup("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0")
	if !ok || want.InputPerToken <= 0 {
		t.Fatal("the table has no Bedrock price for Claude 3.5 Sonnet")
	}
	for _, model := range []string{"anthropic.claude-3-5-sonnet-20240620-v1:0", "converse/anthropic.claude-3-5-sonnet-20240620-v1:0", "global.anthropic.claude-3-5-sonnet-20240620-v1:0",
		"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0",
		"arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-5-sonnet-20240620-v1:0"} {
		got, ok := DeploymentPrice(&config.Deployment{Provider: "bedrock", Model: model})
		if !ok || got.InputPerToken != want.InputPerToken || got.OutputPerToken != want.OutputPerToken {
			t.Errorf("%s: %+v %v, want %+v", model, got, ok, want)
		}
	}
	if p, ok := DeploymentPrice(&config.Deployment{Provider: "bedrock", Model: "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123"}); ok {
		t.Errorf("a provisioned model's ARN priced %+v", p)
	}
}
