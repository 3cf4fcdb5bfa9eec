package provider

import (
	"context"
	"io"
	"net/http"
	"strings"

	"github.com/tollgate/tollgate/internal/config"
)

// OpPassThrough is a provider's native API reached through a pass-through
// route (/openai/*, /anthropic/*, ..., general_settings.pass_through_endpoints):
// the request goes upstream as sent, to the path the client named.
const OpPassThrough = numOps

// PassTarget is a Target for a pass-through route: root is the upstream's
// base URL (the client's sub-path is appended to it) and header the
// gateway's credentials for it. d describes it for pricing, limits and the
// spend log; its price is the table's for whichever model a request names
// (a wildcard), unless d sets per-token prices.
func PassTarget(d *config.Deployment, root string, header http.Header, pool *Clients) *Target {
	t := &Target{D: d, root: strings.TrimRight(root, "/"), header: header, wildcard: true, client: pool.For(d.Provider)}
	t.Price, t.Priced = DeploymentPrice(d)
	return t
}

// PassRequest builds the upstream request of a pass-through call: path
// below the target's root, the query as the client sent it (rawQuery,
// already without the client's credentials), and the target's headers over
// hdr, the client's headers that may go upstream.
func (t *Target) PassRequest(ctx context.Context, method, path, rawQuery string, hdr http.Header, body io.Reader) (*http.Request, error) {
	u := t.root + path
	if rawQuery != "" {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + rawQuery
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header = hdr
	for k, v := range t.header {
		req.Header[k] = v
	}
	return req, nil
}
