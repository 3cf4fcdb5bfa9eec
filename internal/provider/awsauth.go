package provider

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/tollgate/tollgate/internal/config"
)

// AWSFromEnv is the AWS credentials in the environment variables AWS SDKs
// read: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and
// AWS_REGION (else AWS_DEFAULT_REGION). ok is false without a key pair.
func AWSFromEnv(getenv func(string) string) (c config.AWSCredentials, ok bool) {
	c = config.AWSCredentials{AccessKeyID: getenv("AWS_ACCESS_KEY_ID"), SecretAccessKey: getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken: getenv("AWS_SESSION_TOKEN"), Region: getenv("AWS_REGION")}
	if c.Region == "" {
		c.Region = getenv("AWS_DEFAULT_REGION")
	}
	return c, c.AccessKeyID != "" && c.SecretAccessKey != ""
}

// signer is stateless and safe for concurrent use.
var signer = v4.NewSigner()

// SignAWS signs req, whose body is payload, with AWS Signature Version 4
// for service in c.Region at now: it sets X-Amz-Date, X-Amz-Security-Token
// (with a session token) and Authorization. Every header req carries is
// signed, so nothing may change them after.
func SignAWS(ctx context.Context, req *http.Request, payload []byte, c config.AWSCredentials, service string, now time.Time) error {
	sum := sha256.Sum256(payload)
	creds := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
	return signer.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), service, c.Region, now)
}
