package provider

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tollgate/tollgate/internal/config"
)

// ResolveAWS completes a deployment's AWS credentials (aws may be nil) the
// way AWS's SDKs do, without their shared-config machinery:
//
//  1. the deployment's aws_access_key_id and aws_secret_access_key;
//  2. the profile the deployment names (aws_profile_name), which, as in
//     boto3, sets the environment's keys aside;
//  3. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWSFromEnv);
//  4. the profile AWS_PROFILE names, else "default", in the shared
//     credentials and config files (AWSProfile).
//
// The region is the deployment's, else AWS_REGION (AWS_DEFAULT_REGION), else
// the chosen profile's. The files are read on each call: a deployment reads
// them when it is built, so a config reload re-reads them. A profile that
// needs SSO, a role or a credential process is not supported (ErrUnusable).
func ResolveAWS(aws *config.AWSCredentials, getenv func(string) string) (config.AWSCredentials, error) {
	var c config.AWSCredentials
	if aws != nil {
		c = *aws
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		return c, fmt.Errorf("%w: provider bedrock needs both aws_access_key_id and aws_secret_access_key", ErrUnusable)
	}
	env, envOK := AWSFromEnv(getenv)
	c.Region = cmp.Or(c.Region, env.Region)
	haveKeys := c.AccessKeyID != ""
	if !haveKeys && c.Profile == "" && envOK {
		c.AccessKeyID, c.SecretAccessKey, c.SessionToken = env.AccessKeyID, env.SecretAccessKey, env.SessionToken
		haveKeys = true
	}
	if haveKeys && c.Region != "" {
		return c, nil // the files are not needed, nor read
	}
	// The profile holds the keys, or only the region when keys are at hand.
	p, err := AWSProfile(cmp.Or(c.Profile, getenv("AWS_PROFILE"), "default"), getenv)
	if !haveKeys {
		if errors.Is(err, errNoProfile) && c.Profile == "" && getenv("AWS_PROFILE") == "" {
			return c, missingAWS(false) // nothing anywhere: say every way
		}
		if err != nil {
			return c, err
		}
		if p.AccessKeyID == "" || p.SecretAccessKey == "" {
			return c, fmt.Errorf("%w: AWS profile %q has no aws_access_key_id and aws_secret_access_key", ErrUnusable, p.Profile)
		}
		c.AccessKeyID, c.SecretAccessKey, c.SessionToken = p.AccessKeyID, p.SecretAccessKey, p.SessionToken
	}
	c.Region = cmp.Or(c.Region, p.Region)
	if c.Region == "" {
		return c, missingAWS(true)
	}
	return c, nil
}

// missingAWS says what a bedrock deployment lacks.
func missingAWS(haveKeys bool) error {
	if !haveKeys {
		return fmt.Errorf("%w: provider bedrock needs AWS credentials: litellm_params.aws_access_key_id and aws_secret_access_key, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or a profile with aws_access_key_id in ~/.aws/credentials (aws_profile_name, AWS_PROFILE or [default])", ErrUnusable)
	}
	return fmt.Errorf("%w: provider bedrock needs a region: litellm_params.aws_region_name, AWS_REGION, or region in the profile's section of ~/.aws/config", ErrUnusable)
}

// errNoProfile: neither shared file has a section for the profile.
var errNoProfile = fmt.Errorf("%w: no such AWS profile", ErrUnusable)

// awsUnsupported are profile settings that make AWS's SDKs fetch
// credentials elsewhere (IAM Identity Center, STS, a helper program);
// Tollgate signs only with static keys, so such a profile is refused up
// front rather than signed with the wrong identity.
var awsUnsupported = []string{"sso_session", "sso_start_url", "sso_account_id", "sso_role_name",
	"credential_process", "role_arn", "source_profile", "credential_source", "web_identity_token_file"}

// AWSProfile is a profile's static keys and region from the shared
// credentials file (AWS_SHARED_CREDENTIALS_FILE, default
// ~/.aws/credentials; sections [name]) and config file (AWS_CONFIG_FILE,
// default ~/.aws/config; sections [profile name], and [default]). A key in
// the credentials file wins over the same key in the config file. A missing
// file is an empty one. The settings found come back with the error of a
// profile that needs what Tollgate does not do (SSO, roles, processes), so
// that its region can still serve keys from elsewhere.
func AWSProfile(name string, getenv func(string) string) (config.AWSCredentials, error) {
	credsPath := awsFilePath(getenv, "AWS_SHARED_CREDENTIALS_FILE", "credentials")
	confPath := awsFilePath(getenv, "AWS_CONFIG_FILE", "config")
	creds, credsFound, err := readAWSSection(credsPath, name)
	if err != nil {
		return config.AWSCredentials{}, err
	}
	section := "profile " + name
	conf, confFound, err := readAWSSection(confPath, section)
	if err != nil {
		return config.AWSCredentials{}, err
	}
	if !confFound && name == "default" {
		conf, confFound, err = readAWSSection(confPath, "default")
		if err != nil {
			return config.AWSCredentials{}, err
		}
	}
	if !credsFound && !confFound {
		return config.AWSCredentials{Profile: name}, fmt.Errorf("%w: AWS profile %q is in neither %s nor %s", errNoProfile, name, credsPath, confPath)
	}
	get := func(k string) string { return cmp.Or(creds[k], conf[k]) }
	c := config.AWSCredentials{AccessKeyID: get("aws_access_key_id"), SecretAccessKey: get("aws_secret_access_key"),
		SessionToken: get("aws_session_token"), Region: conf["region"], Profile: name}
	for _, k := range awsUnsupported {
		if get(k) != "" {
			return c, fmt.Errorf("%w: AWS profile %q sets %s, which Tollgate does not follow (it signs Bedrock calls only with static keys): give the profile aws_access_key_id and aws_secret_access_key (temporary ones with aws_session_token, refreshed by a reload), or set litellm_params.aws_access_key_id and aws_secret_access_key", ErrUnusable, name, k)
		}
	}
	return c, nil
}

// awsFilePath is the file the variable env names (a leading ~ is the home
// directory, as the SDKs read it), else ~/.aws/base.
func awsFilePath(getenv func(string) string, env, base string) string {
	home := getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	p := getenv(env)
	if p == "" {
		return filepath.Join(home, ".aws", base)
	}
	if p == "~" || strings.HasPrefix(p, "~/") {
		return filepath.Join(home, p[1:])
	}
	return p
}

// readAWSSection is the settings of one [section] of an AWS shared file:
// "key = value" lines, keys lower-cased; lines starting with # or ; are
// comments, as is the rest of a line after " #" or " ;"; indented lines
// continue the setting above them (sub-settings such as s3's, which
// Tollgate does not use) and are skipped. found reports whether the section
// exists; a file that does not exist has no sections.
func readAWSSection(path, section string) (kv map[string]string, found bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: reading AWS shared file: %v", ErrUnusable, err)
	}
	kv = map[string]string{}
	in := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		raw := sc.Text()
		line := strings.TrimSpace(stripAWSComment(raw))
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			name, ok := strings.CutSuffix(line, "]")
			name = strings.Join(strings.Fields(name[1:]), " ")
			in = ok && name == section
			found = found || in
		case in && raw[0] != ' ' && raw[0] != '\t':
			if k, v, ok := strings.Cut(line, "="); ok {
				kv[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
	}
	return kv, found, sc.Err()
}

// stripAWSComment cuts a comment that follows a value after whitespace.
func stripAWSComment(line string) string {
	for i := 1; i < len(line); i++ {
		if (line[i] == '#' || line[i] == ';') && (line[i-1] == ' ' || line[i-1] == '\t') {
			return line[:i]
		}
	}
	return line
}
