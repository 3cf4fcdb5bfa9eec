// Command tollgate is an LLM gateway: see README.md.
package main

import (
	"fmt"
	"os"
	"strings"
)

const usage = `usage: tollgate <command> [flags]
       tollgate -f config.yaml      (serve, as agentgateway -f config.yaml)

commands:
  serve          run the gateway (default: embedded demo config, SQLite ./tollgate.db, port 4000)
  key            manage virtual keys: generate, list, info, update, delete, regenerate
  user           manage users: new, list, info, update, delete
  team           manage teams: new, list, info, update, delete
  model          list models, add one: list, add
  spend          spend report: report
  migrate        create or upgrade the database schema (serve also does this at start)
  mock-upstream  run a fake OpenAI + Anthropic upstream for demos, tests and benchmarks
  bench          load-test the gateway against a direct-to-upstream baseline
  healthcheck    GET the liveness route (--url); exit 0 when it answers 2xx (for images without curl)
  version        print the version

Run 'tollgate <command> -h' for a command's flags. The management commands
(key, user, team, model, spend) call a running gateway's HTTP API: see docs/cli.md.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	cmd, args := os.Args[1], os.Args[2:]
	if isServeFlag(cmd) { // tollgate -f config.yaml, as agentgateway -f config.yaml
		cmd, args = "serve", os.Args[1:]
	}
	switch cmd {
	case "serve":
		err = runServe(args)
	case "migrate":
		err = runMigrate(args)
	case "mock-upstream":
		err = runMockUpstream(args)
	case "key", "user", "team", "model", "spend":
		runManage(os.Args[1:])
	case "bench":
		err = runBench(args)
	case "healthcheck":
		err = runHealthcheck(args)
	case "bare-proxy": // used by bench (httputil.ReverseProxy); not in the usage text
		err = runBareProxy(args)
	case "floor-proxy": // used by bench as its floor; not in the usage text
		err = runFloorProxy(args)
	case "version", "-version", "--version":
		fmt.Println("tollgate", version())
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "tollgate: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tollgate:", err)
		os.Exit(1)
	}
}

// isServeFlag reports whether arg is a serve flag given without the serve
// command, as agentgateway's CLI takes its config: `tollgate -f FILE`.
func isServeFlag(arg string) bool {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	if !strings.HasPrefix(arg, "-") {
		return false
	}
	switch name {
	case "f", "file", "config", "port", "host":
		return true
	}
	return false
}
