// Command gen derives Tollgate's embedded price table from the public model
// price list (LiteLLM's model_prices_and_context_window.json), keeping only
// the fields Tollgate uses. Run it through `go generate ./internal/pricing`.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/tollgate/tollgate/internal/pricing"
)

func main() {
	in := flag.String("in", "../../../shared/pricing/model_prices_and_context_window.json", "source price list")
	out := flag.String("out", "prices.json", "table to write")
	flag.Parse()
	src, err := os.ReadFile(*in)
	if err != nil {
		fail(err)
	}
	table, err := pricing.Derive(src)
	if err != nil {
		fail(err)
	}
	if err := os.WriteFile(*out, table, 0o644); err != nil {
		fail(err)
	}
	var n map[string]json.RawMessage
	_ = json.Unmarshal(table, &n)
	fmt.Printf("wrote %s: %d models\n", *out, len(n))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "pricing/gen:", err)
	os.Exit(1)
}
