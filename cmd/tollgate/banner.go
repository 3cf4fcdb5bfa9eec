package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/tollgate/tollgate/internal/config"
)

// access is what a client must present, as the running config decides it
// (the same rules as auth.Authenticator.Open).
type access int

const (
	accessOpen     access = iota // no master key, no apiKey policy, no custom_auth
	accessOptional               // agentgateway apiKey mode optional, no master key
	accessStrict                 // agentgateway apiKey mode strict, no master key
	accessCustom                 // general_settings.custom_auth, no master key
	accessMaster                 // a master key: the master key or a virtual key
)

// accessOf reads cfg (and the master key, which may come from the
// environment) the way the authenticator does.
func accessOf(cfg *config.Config, masterKey string) access {
	switch {
	case masterKey != "":
		return accessMaster
	case cfg.CustomAuth != nil:
		return accessCustom
	case cfg.APIKeyMode == "strict":
		return accessStrict
	case cfg.APIKeyMode == "optional":
		return accessOptional
	}
	return accessOpen
}

// served reports whether requests without a key are answered; such a
// gateway listens on loopback unless --host says otherwise.
func (a access) served() bool { return a == accessOpen || a == accessOptional }

// exampleModel is a model name a client can send: the first model group
// without a wildcard, else a wildcard group's fixed upstream model, else
// the pattern with <model> in place of its star.
func exampleModel(cfg *config.Config) string {
	for _, d := range cfg.Deployments {
		if !strings.Contains(d.ModelName, "*") {
			return d.ModelName
		}
	}
	for _, d := range cfg.Deployments {
		if d.Model != "" && !strings.Contains(d.Model, "*") {
			return d.Model
		}
	}
	if len(cfg.Deployments) > 0 {
		return strings.Replace(cfg.Deployments[0].ModelName, "*", "<model>", 1)
	}
	return ""
}

// banner is what serve prints to a newcomer once it listens on addr: a curl
// that works against the running config, and whether it needs a key. It
// is a function of the config, the master key and the address only.
func banner(cfg *config.Config, masterKey, addr, version string) string {
	var b strings.Builder
	base := "http://" + dialable(addr)
	embedded := cfg.Path == ""
	a := accessOf(cfg, masterKey)
	fmt.Fprintf(&b, "\nTollgate %s is running on %s\n", version, base)
	if embedded {
		fmt.Fprintf(&b, "No config given: serving the built-in `demo` model (answers locally; its prices are fictional, so spend and budgets move).\n")
	} else {
		fmt.Fprintf(&b, "Config: %s (%d deployments)\n", cfg.Path, len(cfg.Deployments))
	}
	switch a {
	case accessMaster:
		b.WriteString("Every request needs a key: the master key, or a virtual key made with it.\n")
	case accessCustom:
		b.WriteString("Every request needs a key: general_settings.custom_auth decides which are accepted.\n")
	case accessStrict:
		b.WriteString("Every request needs a key: one of the config's apiKey policy keys (mode: strict).\n")
	case accessOptional:
		b.WriteString("A key is optional (apiKey policy, mode: optional): requests without one, or with one it does not know, are served; a policy key is honoured with its metadata.\n")
	case accessOpen:
		b.WriteString("No key is needed: no master key and no apiKey policy are set, so the gateway is open (on loopback only, unless --host says otherwise).\n")
	}
	model := exampleModel(cfg)
	if model == "" {
		b.WriteString("No model is configured yet: add one with POST /model/new (tollgate model add).\n")
	} else {
		auth := ""
		if !a.served() {
			auth = " -H \"Authorization: Bearer $KEY\""
			b.WriteString("Set KEY to " + map[access]string{
				accessMaster: "the master key (or a virtual key)",
				accessCustom: "a key custom_auth accepts",
				accessStrict: "one of the apiKey policy's keys",
			}[a] + ", then try it:\n")
		} else {
			b.WriteString("Try it:\n")
		}
		fmt.Fprintf(&b, "  curl %s/v1/chat/completions%s -H 'Content-Type: application/json' \\\n    -d '{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}]}'\n", base, auth, model)
	}
	switch a {
	case accessMaster:
		fmt.Fprintf(&b, "Make a virtual key with a budget:\n  tollgate key generate --url %s --master-key \"$KEY\" --models %s --max-budget 1\n", base, shellWord(model))
	case accessOpen, accessOptional:
		restart := "tollgate serve"
		if !embedded {
			restart += " -f " + shellWord(cfg.Path)
		}
		fmt.Fprintf(&b, "To issue virtual keys with budgets, restart with a master key:\n  TOLLGATE_MASTER_KEY=sk-1234 %s\n"+
			"  curl %s/key/generate -H 'Authorization: Bearer sk-1234' -H 'Content-Type: application/json' -d '{\"models\":[\"%s\"],\"max_budget\":1}'\n", restart, base, model)
	}
	b.WriteString("Docs: README.md (configuration reference and curl examples), docs/cli.md (the management CLI)\n\n")
	return b.String()
}

// dialable is addr with an unspecified host (0.0.0.0, ::) replaced by
// localhost: the address a curl on this machine can reach.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

// shellWord quotes s for a POSIX shell when it needs it.
func shellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
