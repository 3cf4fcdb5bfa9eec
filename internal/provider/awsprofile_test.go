package provider

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

// awsHome makes a home directory holding ~/.aws/credentials and
// ~/.aws/config (skipped when empty) and clears every AWS_* variable the
// chain reads, so that nothing of the machine's leaks in.
func awsHome(t *testing.T, credentials, cfg string) string {
	t.Helper()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
		"AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_BEDROCK_RUNTIME_ENDPOINT"} {
		t.Setenv(k, "")
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	if err := os.Mkdir(filepath.Join(home, ".aws"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"credentials": credentials, "config": cfg} {
		if text != "" {
			if err := os.WriteFile(filepath.Join(home, ".aws", name), []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return home
}

const (
	testCredentials = `# keys
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = default-secret

[work]
aws_access_key_id=AKIAWORK
aws_secret_access_key=work-secret
aws_session_token = work-token ; a comment after the value

[team]
aws_access_key_id = AKIATEAM
aws_secret_access_key = team-secret
`
	testConfig = `[default]
region = us-east-1

; a named profile's section says "profile"
[profile   work ]
region = eu-central-1
s3 =
  region = ignored-sub-setting

[profile team]
region = ap-southeast-2
aws_access_key_id = AKIAIGNORED

[profile cfgonly]
aws_access_key_id = AKIACFG
aws_secret_access_key = cfg-secret
region = sa-east-1

[work]
region = not-a-profile-section
`
)

// TestResolveAWSChain: the keys come from the deployment's params, else
// the profile it names, else the environment, else AWS_PROFILE's or the
// default profile; the region from the params, else AWS_REGION, else the
// chosen profile's section of the config file.
func TestResolveAWSChain(t *testing.T) {
	tests := []struct {
		name string
		aws  *config.AWSCredentials
		env  map[string]string
		want config.AWSCredentials
	}{
		{"default profile", nil, nil,
			config.AWSCredentials{AccessKeyID: "AKIADEFAULT", SecretAccessKey: "default-secret", Region: "us-east-1"}},
		{"AWS_PROFILE", nil, map[string]string{"AWS_PROFILE": "work"},
			config.AWSCredentials{AccessKeyID: "AKIAWORK", SecretAccessKey: "work-secret", SessionToken: "work-token", Region: "eu-central-1"}},
		{"aws_profile_name beats AWS_PROFILE and the environment's keys", &config.AWSCredentials{Profile: "team"},
			map[string]string{"AWS_PROFILE": "work", "AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "env-secret"},
			config.AWSCredentials{AccessKeyID: "AKIATEAM", SecretAccessKey: "team-secret", Region: "ap-southeast-2", Profile: "team"}},
		{"environment keys beat the profiles, whose region serves", nil,
			map[string]string{"AWS_PROFILE": "work", "AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "env-secret"},
			config.AWSCredentials{AccessKeyID: "AKIAENV", SecretAccessKey: "env-secret", Region: "eu-central-1"}},
		{"AWS_REGION beats the profile's region", nil, map[string]string{"AWS_REGION": "us-west-2"},
			config.AWSCredentials{AccessKeyID: "AKIADEFAULT", SecretAccessKey: "default-secret", Region: "us-west-2"}},
		{"params beat everything", &config.AWSCredentials{AccessKeyID: "AKIAPARAM", SecretAccessKey: "param-secret", Region: "ca-central-1", Profile: "team"},
			map[string]string{"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "env-secret", "AWS_REGION": "us-west-2"},
			config.AWSCredentials{AccessKeyID: "AKIAPARAM", SecretAccessKey: "param-secret", Region: "ca-central-1", Profile: "team"}},
		{"params' keys, the named profile's region", &config.AWSCredentials{AccessKeyID: "AKIAPARAM", SecretAccessKey: "param-secret", Profile: "team"}, nil,
			config.AWSCredentials{AccessKeyID: "AKIAPARAM", SecretAccessKey: "param-secret", Region: "ap-southeast-2", Profile: "team"}},
		{"keys in the config file", &config.AWSCredentials{Profile: "cfgonly"}, nil,
			config.AWSCredentials{AccessKeyID: "AKIACFG", SecretAccessKey: "cfg-secret", Region: "sa-east-1", Profile: "cfgonly"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			awsHome(t, testCredentials, testConfig)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := ResolveAWS(tt.aws, os.Getenv)
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// TestResolveAWSFileVariables: AWS_SHARED_CREDENTIALS_FILE and
// AWS_CONFIG_FILE (a leading ~ being the home directory) move the files.
func TestResolveAWSFileVariables(t *testing.T) {
	home := awsHome(t, testCredentials, testConfig)
	if err := os.WriteFile(filepath.Join(home, "other-creds"), []byte("[default]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = other\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "other-config"), []byte("[default]\nregion = me-south-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, "other-creds"))
	t.Setenv("AWS_CONFIG_FILE", "~/other-config")
	got, err := ResolveAWS(nil, os.Getenv)
	if want := (config.AWSCredentials{AccessKeyID: "AKIAOTHER", SecretAccessKey: "other", Region: "me-south-1"}); err != nil || got != want {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
}

// TestResolveAWSUnusable: a profile that gets its credentials from SSO, a
// role, web identity or a helper program, a named profile that is missing,
// and a chain with no keys or no region each make the deployment unusable
// with a reason that says what to set.
func TestResolveAWSUnusable(t *testing.T) {
	cfg := testConfig + `
[profile sso]
sso_session = corp
sso_account_id = 111122223333
sso_role_name = Dev
region = us-east-1

[profile proc]
credential_process = /usr/local/bin/creds
region = us-east-1

[profile role]
role_arn = arn:aws:iam::123456789012:role/bedrock
source_profile = default

[profile webid]
web_identity_token_file = /var/run/token
role_arn = arn:aws:iam::123456789012:role/bedrock

[profile noregion]
aws_access_key_id = AKIANOREGION
aws_secret_access_key = s
`
	tests := []struct {
		name, credentials string
		aws               *config.AWSCredentials
		env               map[string]string
		reason            []string
	}{
		{"sso", testCredentials, &config.AWSCredentials{Profile: "sso"}, nil, []string{`"sso"`, "sso_", "aws_access_key_id"}},
		{"credential_process", testCredentials, nil, map[string]string{"AWS_PROFILE": "proc"}, []string{`"proc"`, "credential_process"}},
		{"assumed role", testCredentials, &config.AWSCredentials{Profile: "role"}, nil, []string{"role_arn"}},
		{"web identity", testCredentials, &config.AWSCredentials{Profile: "webid"}, nil, []string{"role_arn"}},
		{"missing named profile", testCredentials, &config.AWSCredentials{Profile: "nope", Region: "us-east-1"}, nil, []string{`"nope"`, "credentials"}},
		{"missing AWS_PROFILE", testCredentials, nil, map[string]string{"AWS_PROFILE": "nope"}, []string{`"nope"`}},
		{"no credentials anywhere", "", nil, nil, []string{"AWS_ACCESS_KEY_ID", "aws_access_key_id", "aws_profile_name"}},
		{"no region", testCredentials, &config.AWSCredentials{Profile: "noregion"}, nil, []string{"aws_region_name", "AWS_REGION"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			if tt.credentials == "" {
				c = ""
			}
			awsHome(t, tt.credentials, c)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := ResolveAWS(tt.aws, os.Getenv)
			if !errors.Is(err, ErrUnusable) {
				t.Fatalf("got %+v, %v; want ErrUnusable", got, err)
			}
			for _, w := range tt.reason {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("reason %q does not say %q", err, w)
				}
			}
		})
	}

	// Keys from the environment need only the profile's region: its
	// unsupported credential source does not matter then.
	awsHome(t, "", cfg)
	t.Setenv("AWS_PROFILE", "sso")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	got, err := ResolveAWS(nil, os.Getenv)
	if want := (config.AWSCredentials{AccessKeyID: "AKIAENV", SecretAccessKey: "env-secret", Region: "us-east-1"}); err != nil || got != want {
		t.Fatalf("env keys with an SSO profile: %+v, %v", got, err)
	}
}
