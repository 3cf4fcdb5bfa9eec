package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// The management CLI (tollgate key|user|team|model|spend ...) is a client
// of a running gateway's HTTP API: it works against any replica, and does
// nothing the API does not. Exit codes, for scripts:
const (
	exitOK    = 0 // the call succeeded
	exitAPI   = 1 // the gateway answered 4xx or 5xx; its message is on stderr
	exitUsage = 2 // bad command, flag or value; nothing was sent
	exitConn  = 3 // the gateway could not be reached (or did not answer JSON)
)

// cliEnv is where the CLI reads its environment: the gateway's URL and the
// key it calls with. TOLLGATE_URL and TOLLGATE_MASTER_KEY are Tollgate's
// names; LiteLLM's CLI (litellm-proxy) reads LITELLM_PROXY_URL and
// LITELLM_PROXY_API_KEY, which are taken when Tollgate's are unset.
var (
	envURL = []string{"TOLLGATE_URL", "LITELLM_PROXY_URL"}
	envKey = []string{"TOLLGATE_MASTER_KEY", "LITELLM_PROXY_API_KEY", "LITELLM_MASTER_KEY"}
)

func firstEnv(getenv func(string) string, names []string) string {
	for _, n := range names {
		if v := getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// usageError is a mistake in the command line: nothing was sent.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// apiError is a 4xx or 5xx answer.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.msg) }

// connError is a gateway that could not be reached.
type connError struct{ err error }

func (e *connError) Error() string { return e.err.Error() }

// client calls one gateway.
type client struct {
	base string
	key  string
	http *http.Client
}

// call sends one request (body nil for a GET) and decodes the JSON answer.
func (c *client) call(method, path string, query url.Values, body any) (any, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, usagef("%v", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return nil, usagef("--url: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &connError{err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, &connError{err}
	}
	var out any
	jsonErr := json.Unmarshal(data, &out)
	if resp.StatusCode >= 400 {
		return nil, &apiError{resp.StatusCode, errorMessage(out, data)}
	}
	if jsonErr != nil {
		return nil, &connError{fmt.Errorf("%s %s: the answer is not JSON (is --url a Tollgate gateway?): %.200s", method, u, data)}
	}
	return out, nil
}

// errorMessage is the message of an OpenAI-shaped error, else the body.
func errorMessage(v any, raw []byte) string {
	if m, ok := v.(map[string]any); ok {
		if e, ok := m["error"].(map[string]any); ok {
			if s, ok := e["message"].(string); ok {
				return s
			}
		}
		if s, ok := m["detail"].(string); ok {
			return s
		}
	}
	return strings.TrimSpace(string(raw))
}

// field is a flag that sets one member of a request body.
type field struct {
	flag, json, kind, help string // kind: string, float, int, list, object, bool
}

func (f field) value(s string) (any, error) {
	switch f.kind {
	case "float":
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, usagef("--%s: %q is not a number", f.flag, s)
		}
		return v, nil
	case "int":
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, usagef("--%s: %q is not an integer", f.flag, s)
		}
		return v, nil
	case "bool":
		v, err := strconv.ParseBool(s)
		if err != nil {
			return nil, usagef("--%s: %q is not true or false", f.flag, s)
		}
		return v, nil
	case "list":
		out := []string{}
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out, nil
	case "object":
		var v map[string]any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return nil, usagef("--%s: not a JSON object: %v", f.flag, err)
		}
		return v, nil
	}
	return s, nil
}

// The field flags of each kind of entity, named as LiteLLM's fields with
// dashes for underscores.
var (
	limitFields = []field{
		{"max-budget", "max_budget", "float", "budget in USD"},
		{"budget-duration", "budget_duration", "string", "budget period: 30s, 1h, 1d, 30d, 1mo"},
		{"tpm-limit", "tpm_limit", "int", "tokens per minute"},
		{"rpm-limit", "rpm_limit", "int", "requests per minute"},
		{"max-parallel-requests", "max_parallel_requests", "int", "requests in flight"},
		{"models", "models", "list", "models allowed, comma-separated"},
		{"metadata", "metadata", "object", "metadata, a JSON object"},
	}
	keyFields = append([]field{
		{"key-alias", "key_alias", "string", "the key's alias (unique)"},
		{"user-id", "user_id", "string", "the user the key belongs to"},
		{"team-id", "team_id", "string", "the team the key belongs to"},
		{"duration", "duration", "string", "validity: 30s, 20m, 1h, 30d, 1mo"},
		{"soft-budget", "soft_budget", "float", "alert threshold in USD"},
		{"tags", "tags", "list", "tags, comma-separated"},
		{"blocked", "blocked", "bool", "block the key"},
	}, limitFields...)
	userFields = append([]field{
		{"user-id", "user_id", "string", "the user's id"},
		{"user-email", "user_email", "string", "the user's email"},
		{"user-alias", "user_alias", "string", "the user's display name"},
		{"user-role", "user_role", "string", "proxy_admin, proxy_admin_viewer, internal_user, internal_user_viewer"},
		{"teams", "teams", "list", "teams to join, comma-separated"},
	}, limitFields...)
	teamFields = append([]field{
		{"team-id", "team_id", "string", "the team's id"},
		{"team-alias", "team_alias", "string", "the team's name"},
		{"organization-id", "organization_id", "string", "the team's organization"},
		{"blocked", "blocked", "bool", "block the team"},
	}, limitFields...)
	modelFields = []field{
		{"model-id", "model_info.id", "string", "the deployment's id"},
		{"api-base", "litellm_params.api_base", "string", "the upstream's base URL"},
		{"api-key", "litellm_params.api_key", "string", "the upstream's key (or os.environ/NAME)"},
		{"input-cost-per-token", "litellm_params.input_cost_per_token", "float", "USD per prompt token"},
		{"output-cost-per-token", "litellm_params.output_cost_per_token", "float", "USD per completion token"},
	}
)

// command is one CLI verb of one entity.
type command struct {
	entity, verb string
	args         string // positional arguments, for the usage line
	help         string
	fields       []field
	query        []field // flags sent as query parameters (GET)
	minArgs      int
	maxArgs      int // -1: any number
	run          func(c *client, args []string, body map[string]any, q url.Values) (any, error)
	table        func(v any) ([]string, [][]string) // nil: a field/value table
}

var listQuery = []field{{"page", "page", "int", "page number"}, {"size", "size", "int", "page size"}}

func commands() []command {
	post := func(path string) func(*client, []string, map[string]any, url.Values) (any, error) {
		return func(c *client, _ []string, body map[string]any, _ url.Values) (any, error) {
			return c.call("POST", path, nil, body)
		}
	}
	get := func(path string) func(*client, []string, map[string]any, url.Values) (any, error) {
		return func(c *client, _ []string, _ map[string]any, q url.Values) (any, error) {
			return c.call("GET", path, q, nil)
		}
	}
	withArg := func(name string, then func(*client, []string, map[string]any, url.Values) (any, error)) func(*client, []string, map[string]any, url.Values) (any, error) {
		return func(c *client, args []string, body map[string]any, q url.Values) (any, error) {
			body[name] = args[0]
			return then(c, args, body, q)
		}
	}
	getArg := func(path, name string) func(*client, []string, map[string]any, url.Values) (any, error) {
		return func(c *client, args []string, _ map[string]any, q url.Values) (any, error) {
			q.Set(name, args[0])
			return c.call("GET", path, q, nil)
		}
	}
	deleteMany := func(path, name string) func(*client, []string, map[string]any, url.Values) (any, error) {
		return func(c *client, args []string, body map[string]any, _ url.Values) (any, error) {
			if len(args) > 0 {
				body[name] = args
			}
			if body[name] == nil && body["key_aliases"] == nil {
				return nil, usagef("name what to delete")
			}
			return c.call("POST", path, nil, body)
		}
	}
	return []command{
		{entity: "key", verb: "generate", help: "create a virtual key (its raw value is shown once)", fields: keyFields, maxArgs: 0, run: post("/key/generate")},
		{entity: "key", verb: "list", help: "list keys", query: append([]field{
			{"user-id", "user_id", "string", "only this user's keys"},
			{"team-id", "team_id", "string", "only this team's keys"},
			{"key-alias", "key_alias", "string", "only the key with this alias"},
		}, listQuery...), maxArgs: 0, run: func(c *client, _ []string, _ map[string]any, q url.Values) (any, error) {
			q.Set("return_full_object", "true")
			return c.call("GET", "/key/list", q, nil)
		}, table: keyTable},
		{entity: "key", verb: "info", args: "KEY", help: "show a key (raw or its hash)", minArgs: 1, maxArgs: 1, run: getArg("/key/info", "key")},
		{entity: "key", verb: "update", args: "KEY", help: "change a key", fields: keyFields, minArgs: 1, maxArgs: 1, run: withArg("key", post("/key/update"))},
		{entity: "key", verb: "delete", args: "KEY...", help: "delete keys (raw or hashes; or --key-aliases)", fields: []field{{"key-aliases", "key_aliases", "list", "aliases of keys to delete"}}, maxArgs: -1, run: deleteMany("/key/delete", "keys")},
		{entity: "key", verb: "regenerate", args: "KEY", help: "replace a key's value, keeping its settings", fields: keyFields, minArgs: 1, maxArgs: 1, run: withArg("key", post("/key/regenerate"))},

		{entity: "user", verb: "new", help: "create a user (and her first key)", fields: userFields, maxArgs: 0, run: post("/user/new")},
		{entity: "user", verb: "list", help: "list users", query: listQuery, maxArgs: 0, run: get("/user/list"), table: userTable},
		{entity: "user", verb: "info", args: "USER_ID", help: "show a user", minArgs: 1, maxArgs: 1, run: getArg("/user/info", "user_id")},
		{entity: "user", verb: "update", args: "USER_ID", help: "change a user", fields: userFields, minArgs: 1, maxArgs: 1, run: withArg("user_id", post("/user/update"))},
		{entity: "user", verb: "delete", args: "USER_ID...", help: "delete users", minArgs: 1, maxArgs: -1, run: deleteMany("/user/delete", "user_ids")},

		{entity: "team", verb: "new", help: "create a team", fields: teamFields, maxArgs: 0, run: post("/team/new")},
		{entity: "team", verb: "list", help: "list teams", query: listQuery, maxArgs: 0, run: get("/team/list"), table: teamTable},
		{entity: "team", verb: "info", args: "TEAM_ID", help: "show a team", minArgs: 1, maxArgs: 1, run: getArg("/team/info", "team_id")},
		{entity: "team", verb: "update", args: "TEAM_ID", help: "change a team", fields: teamFields, minArgs: 1, maxArgs: 1, run: withArg("team_id", post("/team/update"))},
		{entity: "team", verb: "delete", args: "TEAM_ID...", help: "delete teams (and their keys)", minArgs: 1, maxArgs: -1, run: deleteMany("/team/delete", "team_ids")},

		{entity: "model", verb: "list", help: "list the deployments (config and API-added)", maxArgs: 0, run: get("/model/info"), table: modelTable},
		{entity: "model", verb: "add", args: "MODEL_NAME PROVIDER/MODEL", help: "add a deployment (POST /model/new)", fields: modelFields, minArgs: 2, maxArgs: 2,
			run: func(c *client, args []string, body map[string]any, _ url.Values) (any, error) {
				body["model_name"] = args[0]
				sub(body, "litellm_params")["model"] = args[1]
				return c.call("POST", "/model/new", nil, body)
			}},

		{entity: "spend", verb: "report", help: "spend per day, grouped (GET /global/spend/report)", query: []field{
			{"group-by", "group_by", "string", "team (default), customer, api_key, user"},
			{"start-date", "start_date", "string", "first day, YYYY-MM-DD"},
			{"end-date", "end_date", "string", "last day, YYYY-MM-DD"},
			{"team-id", "team_id", "string", "only this team"},
			{"api-key", "api_key", "string", "only this key"},
		}, maxArgs: 0, run: get("/global/spend/report"), table: spendTable},
	}
}

// sub is body[name] as an object, made when missing.
func sub(body map[string]any, name string) map[string]any {
	if m, ok := body[name].(map[string]any); ok {
		return m
	}
	m := map[string]any{}
	body[name] = m
	return m
}

// entityUsage lists an entity's verbs.
func entityUsage(w io.Writer, entity string) {
	fmt.Fprintf(w, "usage: tollgate %s <verb> [flags]\n\nverbs:\n", entity)
	for _, c := range commands() {
		if c.entity == entity {
			fmt.Fprintf(w, "  %-11s %-26s %s\n", c.verb, c.args, c.help)
		}
	}
	fmt.Fprintf(w, "\nEvery verb takes --url, --master-key, --output table|json; 'tollgate %s <verb> -h' lists its flags.\nExit codes: 0 ok, 1 the gateway answered an error, 2 usage error, 3 gateway unreachable.\n", entity)
}

// runCLI runs a management command: args are what follows "tollgate"
// (entity first). It returns the exit code.
func runCLI(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	entity := args[0]
	if len(args) < 2 || args[1] == "-h" || args[1] == "--help" || args[1] == "help" {
		entityUsage(stderr, entity)
		if len(args) < 2 {
			return exitUsage
		}
		return exitOK
	}
	var cmd *command
	for _, c := range commands() {
		if c.entity == entity && c.verb == args[1] {
			cmd = &c
			break
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "tollgate %s: unknown verb %q\n\n", entity, args[1])
		entityUsage(stderr, entity)
		return exitUsage
	}
	err := cmd.exec(args[2:], stdout, stderr, getenv)
	var ue *usageError
	var ae *apiError
	var ce *connError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "tollgate %s %s: %v\n", cmd.entity, cmd.verb, err)
		return exitUsage
	case errors.As(err, &ae):
		fmt.Fprintf(stderr, "tollgate %s %s: %v\n", cmd.entity, cmd.verb, err)
		return exitAPI
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "tollgate %s %s: cannot reach the gateway: %v\n", cmd.entity, cmd.verb, err)
		return exitConn
	}
	fmt.Fprintf(stderr, "tollgate %s %s: %v\n", cmd.entity, cmd.verb, err)
	return exitAPI
}

// exec parses the command's flags (before, between and after its
// positional arguments), calls the gateway and prints the answer.
func (cmd *command) exec(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("tollgate "+cmd.entity+" "+cmd.verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "", "the gateway's URL (env TOLLGATE_URL, else LITELLM_PROXY_URL; default http://localhost:4000)")
	key := fs.String("master-key", "", "the key to call with: the master key or an admin's key (env TOLLGATE_MASTER_KEY, else LITELLM_PROXY_API_KEY, LITELLM_MASTER_KEY)")
	output := fs.String("output", "table", "table or json")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the gateway")
	var data string
	if cmd.fields != nil || cmd.verb == "delete" || cmd.verb == "new" || cmd.verb == "generate" {
		fs.StringVar(&data, "data", "", "the request body as a JSON object; field flags override its members")
	}
	vals := map[string]*string{}
	for _, f := range append(append([]field{}, cmd.fields...), cmd.query...) {
		vals[f.flag] = fs.String(f.flag, "", f.help)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tollgate %s %s [flags] %s\n  %s\n\nflags:\n", cmd.entity, cmd.verb, cmd.args, cmd.help)
		fs.PrintDefaults()
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usagef("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if len(pos) < cmd.minArgs || (cmd.maxArgs >= 0 && len(pos) > cmd.maxArgs) {
		fs.Usage()
		return usagef("wrong number of arguments: want %s", cmp(cmd.args, "none"))
	}
	if *output != "table" && *output != "json" {
		return usagef("--output must be table or json, got %q", *output)
	}
	// The environment is read here, not as the flags' defaults, so that
	// -h never prints the key.
	if *base == "" {
		*base = cmp(firstEnv(getenv, envURL), "http://localhost:4000")
	}
	if *key == "" {
		*key = firstEnv(getenv, envKey)
	}
	u, err := url.Parse(*base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("--url %q is not an http(s) URL", *base)
	}
	body := map[string]any{}
	if data != "" {
		if err := json.Unmarshal([]byte(data), &body); err != nil || body == nil {
			return usagef("--data is not a JSON object: %v", err)
		}
	}
	q := url.Values{}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, f := range cmd.fields {
		if !set[f.flag] {
			continue
		}
		v, err := f.value(*vals[f.flag])
		if err != nil {
			return err
		}
		if parent, name, ok := strings.Cut(f.json, "."); ok {
			sub(body, parent)[name] = v
		} else {
			body[f.json] = v
		}
	}
	for _, f := range cmd.query {
		if set[f.flag] {
			if _, err := f.value(*vals[f.flag]); err != nil {
				return err
			}
			q.Set(f.json, *vals[f.flag])
		}
	}
	c := &client{base: strings.TrimRight(*base, "/"), key: *key, http: &http.Client{Timeout: *timeout}}
	out, err := cmd.run(c, pos, body, q)
	if err != nil {
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if cmd.table != nil {
		head, rows := cmd.table(out)
		printTable(stdout, head, rows)
		return nil
	}
	printObject(stdout, out)
	return nil
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// printTable writes rows under a header, aligned.
func printTable(w io.Writer, head []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// printObject writes one answer as field/value lines (nested values as
// compact JSON); a list is written one object after another.
func printObject(w io.Writer, v any) {
	switch t := v.(type) {
	case map[string]any:
		// /key/info nests the key under "info"; show it flat with the key.
		if info, ok := t["info"].(map[string]any); ok && len(t) <= 2 {
			flat := map[string]any{}
			for k, x := range info {
				flat[k] = x
			}
			if k, ok := t["key"]; ok {
				flat["key"] = k
			}
			t = flat
		}
		names := make([]string, 0, len(t))
		for k := range t {
			names = append(names, k)
		}
		sort.Strings(names)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, k := range names {
			if t[k] == nil {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\n", k, cell(t[k]))
		}
		tw.Flush()
	case []any:
		for i, x := range t {
			if i > 0 {
				fmt.Fprintln(w)
			}
			printObject(w, x)
		}
	default:
		fmt.Fprintln(w, cell(v))
	}
}

// cell is a value as one table cell.
func cell(v any) string {
	switch t := v.(type) {
	case nil:
		return "-"
	case string:
		if t == "" {
			return "-"
		}
		return t
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(t)
	case []any:
		parts := make([]string, 0, len(t))
		for _, x := range t {
			parts = append(parts, cell(x))
		}
		if len(parts) == 0 {
			return "-"
		}
		return strings.Join(parts, ",")
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func rowsOf(v any, member string) []map[string]any {
	var list []any
	switch t := v.(type) {
	case []any:
		list = t
	case map[string]any:
		list, _ = t[member].([]any)
	}
	out := make([]map[string]any, 0, len(list))
	for _, x := range list {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func columns(rows []map[string]any, names ...string) [][]string {
	out := make([][]string, 0, len(rows))
	for _, r := range rows {
		row := make([]string, len(names))
		for i, n := range names {
			row[i] = cell(r[n])
		}
		out = append(out, row)
	}
	return out
}

func keyTable(v any) ([]string, [][]string) {
	rows := rowsOf(v, "keys")
	for _, r := range rows {
		if t, ok := r["token"].(string); ok && len(t) > 12 {
			r["token"] = t[:12] // a hash prefix: enough to name it in key info
		}
	}
	return []string{"KEY_ALIAS", "KEY_NAME", "TOKEN", "USER_ID", "TEAM_ID", "SPEND", "MAX_BUDGET", "MODELS", "EXPIRES"},
		columns(rows, "key_alias", "key_name", "token", "user_id", "team_id", "spend", "max_budget", "models", "expires")
}

func userTable(v any) ([]string, [][]string) {
	return []string{"USER_ID", "USER_EMAIL", "USER_ROLE", "SPEND", "MAX_BUDGET", "MODELS", "TEAMS"},
		columns(rowsOf(v, "users"), "user_id", "user_email", "user_role", "spend", "max_budget", "models", "teams")
}

func teamTable(v any) ([]string, [][]string) {
	return []string{"TEAM_ID", "TEAM_ALIAS", "SPEND", "MAX_BUDGET", "MODELS", "BLOCKED"},
		columns(rowsOf(v, ""), "team_id", "team_alias", "spend", "max_budget", "models", "blocked")
}

func modelTable(v any) ([]string, [][]string) {
	rows := rowsOf(v, "data")
	for _, r := range rows {
		if p, ok := r["litellm_params"].(map[string]any); ok {
			r["model"], r["api_base"] = p["model"], p["api_base"]
		}
		if i, ok := r["model_info"].(map[string]any); ok {
			r["id"], r["db_model"] = i["id"], i["db_model"]
		}
	}
	return []string{"MODEL_NAME", "MODEL", "API_BASE", "ID", "DB_MODEL"},
		columns(rows, "model_name", "model", "api_base", "id", "db_model")
}

// spendTable flattens the report: one row per day, group and model.
func spendTable(v any) ([]string, [][]string) {
	var out [][]string
	days, _ := v.([]any)
	for _, d := range days {
		day, _ := d.(map[string]any)
		for member, groups := range day {
			if member == "group_by_day" {
				continue
			}
			for _, g := range rowsOf(groups, "") {
				name := ""
				for k, x := range g {
					if k != "total_spend" && k != "metadata" && k != "team_id" {
						name = cell(x)
					}
				}
				if member == "api_keys" && len(name) == 64 {
					name = name[:12] // a key's hash: its prefix names it
				}
				for _, m := range rowsOf(g["metadata"], "") {
					out = append(out, []string{cell(day["group_by_day"]), name, cell(m["model"]), cell(m["spend"]), cell(m["total_tokens"]), cell(m["requests"])})
				}
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return []string{"DAY", "GROUP", "MODEL", "SPEND", "TOKENS", "REQUESTS"}, out
}

// runManage is main's entry for the management commands.
func runManage(args []string) {
	os.Exit(runCLI(args, os.Stdout, os.Stderr, os.Getenv))
}
