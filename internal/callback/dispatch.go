package callback

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

// elsewhere are callback names other parts of Tollgate serve: the tracer
// exports otel and langfuse; prometheus is /metrics.
var elsewhere = func() map[string]bool {
	m := map[string]bool{}
	for _, list := range [][]string{config.OTelCallbacks, config.LangfuseCallbacks, config.MetricsCallbacks} {
		for _, n := range list {
			m[n] = true
		}
	}
	return m
}()

// Options are what New needs besides the config.
type Options struct {
	Log    *slog.Logger
	Getenv func(string) string // default os.Getenv
	// Queue overrides every sink's queue defaults (tests use it for tiny
	// queues and short flush intervals); a zero field keeps the default.
	Queue QueueOptions
	// FlushTimeout bounds the flush at shutdown (default 10 s).
	FlushTimeout time.Duration
}

// route is one sink and what it takes.
type route struct {
	q                 *Queue
	success, failures bool
	// noContent: callback_settings.<name>.message_logging is false; the
	// sink gets payloads without messages and response.
	noContent bool
}

// Dispatcher is the Publisher of the callbacks the config names: it gives
// each payload to the sinks that take it (callbacks: all; success_callback:
// successes; failure_callback: failures).
type Dispatcher struct {
	routes           []route
	wantOK, wantFail bool
	log              *slog.Logger
	flushTimeout     time.Duration
}

var _ Publisher = (*Dispatcher)(nil)

// New builds the sinks the config names; nothing runs until Run. It
// returns a nil Dispatcher when no sink is served here, and warnings for
// every name that is not served at all. A sink whose settings are missing
// (a webhook without endpoint, datadog without DD_API_KEY) is an error.
func New(cfg *config.Config, o Options) (*Dispatcher, []string, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = 10 * time.Second
	}
	ls := cfg.LiteLLMSettings
	type want struct{ success, failures bool }
	wants := map[string]*want{}
	var order []string
	add := func(names []string, success, failures bool) {
		for _, n := range names {
			n = strings.TrimSpace(n)
			if n == "" {
				continue
			}
			w := wants[n]
			if w == nil {
				w = &want{}
				wants[n] = w
				order = append(order, n)
			}
			w.success = w.success || success
			w.failures = w.failures || failures
		}
	}
	add(ls.Callbacks, true, true)
	add(ls.SuccessCallback, true, false)
	add(ls.FailureCallback, false, true)

	d := &Dispatcher{log: o.Log, flushTimeout: o.FlushTimeout}
	var warnings []string
	for _, name := range order {
		w := wants[name]
		var sink Sink
		qo := QueueOptions{}
		var err error
		set, hasSettings := cfg.CallbackSettings[name]
		switch {
		case hasSettings && set.CallbackType == "generic_api":
			sink, err = newWebhook(name, &set, o.Getenv)
			if err == nil {
				w.success, w.failures = eventTypes(set.EventTypes, w.success, w.failures)
			}
		case name == "generic_api":
			sink, err = newWebhook(name, nil, o.Getenv)
		case name == "datadog":
			sink, err = newDatadog(o.Getenv)
			qo = QueueOptions{BatchCount: 1000, BatchBytes: 4 << 20}
		case name == "s3" || name == "s3_v2":
			var s *s3Sink
			s, err = newS3(ls.S3CallbackParams, o.Getenv)
			sink = s
			qo = QueueOptions{BatchCount: 1000, BatchBytes: 8 << 20, FlushInterval: 10 * time.Second}
			if p := ls.S3CallbackParams; p != nil {
				if p.S3BatchSize != nil && *p.S3BatchSize > 0 {
					qo.BatchCount = *p.S3BatchSize
				}
				if p.S3FlushInterval != nil && *p.S3FlushInterval > 0 {
					qo.FlushInterval = time.Duration(*p.S3FlushInterval)
				}
			}
		case elsewhere[name]:
			continue
		case strings.Contains(name, "."):
			warnings = append(warnings, fmt.Sprintf("litellm_settings callback %q is a custom Python callback: Tollgate does not run Python, nothing is sent to it", name))
			continue
		default:
			warnings = append(warnings, fmt.Sprintf("litellm_settings callback %q is not served by Tollgate: nothing is sent to it (served: generic_api, datadog, s3, otel, langfuse, prometheus, and callback_settings entries with callback_type generic_api; see docs/callbacks.md)", name))
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("callback %s: %w", name, err)
		}
		if !w.success && !w.failures {
			warnings = append(warnings, fmt.Sprintf("callback_settings.%s: its event_types %v exclude every event the lists give it (callbacks: both; success_callback: llm_api_success; failure_callback: llm_api_failure): nothing is sent to it", name, set.EventTypes))
			continue
		}
		if m := ls.CallbackQueueMaxBytes; m != nil && *m > 0 {
			qo.MaxBytes = *m
		}
		d.routes = append(d.routes, route{q: NewQueue(name, sink, merge(qo, o.Queue), o.Log), success: w.success, failures: w.failures,
			noContent: cfg.NoMessageLogging(name)})
		d.wantOK = d.wantOK || w.success
		d.wantFail = d.wantFail || w.failures
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.CallbackSettings)) {
		if cfg.CallbackSettings[name].CallbackType == "generic_api" && wants[name] == nil {
			warnings = append(warnings, fmt.Sprintf("callback_settings.%s is not named in litellm_settings callbacks, success_callback or failure_callback: nothing is sent to it", name))
		}
	}
	if len(d.routes) == 0 {
		return nil, warnings, nil
	}
	return d, warnings, nil
}

// eventTypes narrows a webhook to LiteLLM's event_types.
func eventTypes(types []string, success, failures bool) (bool, bool) {
	if len(types) == 0 {
		return success, failures
	}
	return success && slices.Contains(types, "llm_api_success"), failures && slices.Contains(types, "llm_api_failure")
}

// merge lays the caller's overrides over a sink's defaults.
func merge(base, over QueueOptions) QueueOptions {
	if over.Size > 0 {
		base.Size = over.Size
	}
	if over.MaxBytes > 0 {
		base.MaxBytes = over.MaxBytes
	}
	if over.BatchCount > 0 {
		base.BatchCount = over.BatchCount
	}
	if over.BatchBytes > 0 {
		base.BatchBytes = over.BatchBytes
	}
	if over.FlushInterval > 0 {
		base.FlushInterval = over.FlushInterval
	}
	if over.MaxAttempts > 0 {
		base.MaxAttempts = over.MaxAttempts
	}
	if over.BackoffBase > 0 {
		base.BackoffBase = over.BackoffBase
	}
	if over.BackoffMax > 0 {
		base.BackoffMax = over.BackoffMax
	}
	if over.SendTimeout > 0 {
		base.SendTimeout = over.SendTimeout
	}
	return base
}

// Wants reports whether any sink takes a request that ended so.
func (d *Dispatcher) Wants(failed bool) bool {
	if failed {
		return d.wantFail
	}
	return d.wantOK
}

// Publish gives p to every sink that takes it; it never blocks.
func (d *Dispatcher) Publish(p *Payload) {
	failed := p.Failed()
	size := -1 // estimated once, for the first queue that takes p
	for _, r := range d.routes {
		if failed && r.failures || !failed && r.success {
			if len(p.Skip) > 0 && slices.Contains(p.Skip, r.q.Name()) {
				continue // the request disabled this callback
			}
			if size < 0 {
				size = p.estimateSize()
			}
			if r.noContent && (p.Messages != nil || p.Response != nil) {
				bare := *p // shallow: the other sinks keep p's content
				bare.Messages, bare.Response = nil, nil
				r.q.publish(&bare, size)
				continue
			}
			r.q.publish(p, size)
		}
	}
}

// Names lists the sinks, in config order.
func (d *Dispatcher) Names() []string {
	out := make([]string, len(d.routes))
	for i, r := range d.routes {
		out[i] = r.q.Name()
	}
	return out
}

// SuccessNames lists the sinks that take successful requests, in config
// order.
func (d *Dispatcher) SuccessNames() []string {
	var out []string
	for _, r := range d.routes {
		if r.success {
			out = append(out, r.q.Name())
		}
	}
	return out
}

// Stats reads every sink's counters.
func (d *Dispatcher) Stats() []Stats {
	out := make([]Stats, len(d.routes))
	for i, r := range d.routes {
		out[i] = r.q.Stats()
	}
	return out
}

// Run sends from every sink's queue until ctx ends, then flushes what is
// queued, for at most the flush timeout, and returns. It runs once.
func (d *Dispatcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range d.routes {
		wg.Go(r.q.Run)
	}
	<-ctx.Done()
	fctx, cancel := context.WithTimeout(context.Background(), d.flushTimeout)
	defer cancel()
	var cwg sync.WaitGroup
	left := make([]int, len(d.routes))
	for i, r := range d.routes {
		cwg.Go(func() { left[i] = r.q.Close(fctx, true) })
	}
	cwg.Wait()
	wg.Wait()
	for i, r := range d.routes {
		if left[i] > 0 {
			d.log.Error("callback payloads not delivered before exit", "callback", r.q.Name(), "payloads", left[i])
		}
	}
}
