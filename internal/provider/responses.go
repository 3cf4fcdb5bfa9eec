package provider

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// ResponsesRequest builds a request to the deployment's stored responses:
// suffix is the path below its Responses endpoint ("/resp_abc",
// "/resp_abc/input_items"). The endpoint's own query (Azure's preview
// api-version) is kept; query adds the client's other parameters.
func (t *Target) ResponsesRequest(ctx context.Context, method, suffix string, query url.Values) (*http.Request, error) {
	base := t.urls[OpResponses]
	if base == "" {
		return nil, fmt.Errorf("provider %q does not serve %s", t.D.Provider, OpResponses)
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	u.Path += suffix
	q := u.Query()
	for k, v := range query {
		if _, fixed := q[k]; !fixed { // the client does not choose the API version
			q[k] = v
		}
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	for k, v := range t.header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}
