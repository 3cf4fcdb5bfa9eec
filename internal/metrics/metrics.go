// Package metrics exposes the gateway's Prometheus metrics: OpenTelemetry
// GenAI client metrics (gen_ai_client_token_usage, ...), spend and budget
// series, rate-limit and budget rejections, the gateway's own overhead, and
// the state of the spend writer and Redis. Every name carries a configurable
// prefix (general_settings.metrics_prefix, default "tollgate"); with the
// prefix "agentgateway" seed 001's PromQL queries run unchanged.
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// Options configure the metrics.
type Options struct {
	Prefix string // default "tollgate"
	// KeyLabels: series per key, user and end user (off for cardinality).
	KeyLabels bool
	// Book, when set, feeds the budget gauges at scrape time.
	Book *ledger.Book
	// WriterPending and WriterLag, when set, report the spend writer.
	WriterPending func() int
	WriterLag     func() time.Duration
	// WriterStripped and WriterRejected, when set, count the rows the store
	// refused: written without their client-supplied fields, or dropped.
	WriterStripped, WriterRejected func() int64
	// RedisDegraded, when set, reports whether rate limits are on local counters.
	RedisDegraded func() bool
	// Allotments, when set (general_settings.budget_allotments), yields
	// each allotter's state at scrape time (Allotment).
	Allotments func(yield func(Allotment))
	// Deployments, when set, reports each deployment's state at scrape time.
	Deployments func(yield func(group, id string, up bool))
	// Spans, when set, reports the trace exporters' queues at scrape time.
	Spans func(yield func(SpanQueue))
	// Callbacks, when set, reports the logging callbacks' queues at scrape
	// time.
	Callbacks func() []callback.Stats
	// InFlight, when set, reports the inference requests in flight and the
	// bound past which new ones are shed (-1: none) at scrape time.
	InFlight func() (n, limit int64)
	// Connections, when set, reports the connections open on the main
	// port and the bound past which new ones are refused at accept (-1:
	// none) at scrape time.
	Connections func() (n, limit int64)
}

// Allotment is one allotter's state (kind "budget" or "rate_limit"):
// requests decided in process (Local) and by a per-request script (Redis),
// flush scripts sent, allotments a flush grew (TopUps), per-request
// refusals on Redis while this replica's own allotment held unused room
// (RefusedWithRoom), the accounts or rules with an allotment now
// (Holders), and what the allotments hold now by unit ("usd"; "requests",
// "tokens", "slots").
type Allotment struct {
	Kind                                           string
	Local, Redis, Flushes, TopUps, RefusedWithRoom int64
	Holders                                        int64
	Held                                           map[string]float64
}

// Metrics are one gateway's collectors, on a registry of their own.
type Metrics struct {
	reg       *prometheus.Registry
	keyLabels bool

	tokenUsage *prometheus.HistogramVec
	duration   *prometheus.HistogramVec
	ttft       *prometheus.HistogramVec
	requests   *prometheus.CounterVec
	overhead   prometheus.Histogram

	spendModel   *prometheus.CounterVec
	spendKey     *keySpend
	spendUser    *prometheus.CounterVec
	spendTeam    *prometheus.CounterVec
	spendEndUser *prometheus.CounterVec
	tagRequests  *prometheus.CounterVec
	tagSpend     *prometheus.CounterVec

	rateLimited   *prometheus.CounterVec
	shed          *prometheus.CounterVec
	budgetRefused *prometheus.CounterVec
	softBudget    *prometheus.CounterVec
	retries       *prometheus.CounterVec
	fallbacks     *prometheus.CounterVec
	cooldowns     *prometheus.CounterVec
	// usageAdjusted counts answers whose usage was not booked as reported.
	usageAdjusted *prometheus.CounterVec
	cache         cacheMetrics // the response cache (cache.go)
	// guardrails counts what guardrails did, by guardrail, action and
	// entity type (never the text found).
	guardrails *prometheus.CounterVec
	// series caches what ObserveRequest resolves on every request (series.go).
	series callSeries
}

// GenAI label names (OpenTelemetry semantic conventions).
var genAILabels = []string{"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model"}

// New builds the collectors and registers them with Go and process metrics.
func New(o Options) *Metrics {
	p := o.Prefix
	if p == "" {
		p = "tollgate"
	}
	name := func(n string) string { return p + "_" + n }
	m := &Metrics{reg: prometheus.NewRegistry(), keyLabels: o.KeyLabels}
	m.tokenUsage = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: name("gen_ai_client_token_usage"), Help: "Tokens used per request (OpenTelemetry gen_ai.client.token.usage), by gen_ai_token_type input or output.",
		Buckets: []float64{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864},
	}, append([]string{"gen_ai_token_type"}, genAILabels...))
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: name("gen_ai_client_operation_duration"), Help: "Seconds from receiving a request to its last byte (gen_ai.client.operation.duration).",
		Buckets: []float64{0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92},
	}, genAILabels)
	m.ttft = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: name("gen_ai_server_time_to_first_token"), Help: "Seconds from receiving a streaming request to the upstream's first byte (gen_ai.server.time_to_first_token).",
		Buckets: []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10},
	}, genAILabels)
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("requests_total"), Help: "Inference requests by model group and HTTP status.",
	}, []string{"model_group", "status"})
	m.overhead = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: name("gateway_overhead_seconds"), Help: "Time a request spent in the gateway and not waiting for the upstream.",
		Buckets: []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3},
	})
	counter := func(n, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name(n), Help: help}, labels)
	}
	m.spendModel = counter("spend_usd_total", "Spend in USD by model group.", "model_group")
	m.spendKey = newKeySpend(name("key_spend_usd_total"), "Spend in USD by virtual key (first 8 hex digits of its sha256, and alias).")
	m.spendUser = counter("user_spend_usd_total", "Spend in USD by internal user.", "user")
	m.spendTeam = counter("team_spend_usd_total", "Spend in USD by team.", "team")
	m.spendEndUser = counter("end_user_spend_usd_total", "Spend in USD by end user (the request's user field).", "end_user")
	m.tagRequests = counter("tag_requests_total", "Inference requests by request tag (at most 100 tags, the rest as \"other\"); a request counts under each of its tags.", "tag")
	m.tagSpend = counter("tag_spend_usd_total", "Spend in USD by request tag (at most 100 tags, the rest as \"other\"); a request counts under each of its tags.", "tag")
	m.rateLimited = counter("rate_limit_rejections_total", "Requests refused by a rate limit, by scope and setting.", "scope", "limit")
	m.budgetRefused = counter("budget_rejections_total", "Requests refused because a budget was spent, by entity kind.", "entity")
	m.softBudget = counter("soft_budget_crossings_total", "Soft budgets crossed, by entity kind (once per crossing per period).", "entity")
	m.retries = counter("retries_total", "Retried upstream attempts by model group.", "model_group")
	m.fallbacks = counter("fallbacks_total", "Requests served by a fallback model group, by original and fallback group.", "model_group", "fallback")
	m.cooldowns = counter("deployment_cooldowns_total", "Times a deployment was put in cooldown.", "model_group", "deployment")
	m.guardrails = counter("guardrail_actions_total", "What guardrails did (action: passed, masked, blocked, error), by guardrail and entity type; a masked or blocked call counts once per entity found.", "guardrail", "action", "entity")
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.tokenUsage, m.duration, m.ttft, m.requests, m.overhead,
		m.spendModel, m.spendKey, m.spendUser, m.spendTeam, m.spendEndUser, m.tagRequests, m.tagSpend,
		m.rateLimited, m.budgetRefused, m.softBudget, m.retries, m.fallbacks, m.cooldowns, m.guardrails)
	if o.Deployments != nil {
		m.reg.MustRegister(&deploymentCollector{states: o.Deployments,
			up: prometheus.NewDesc(name("deployment_up"), "1 when a deployment takes traffic, 0 while it is cooling down or failing health checks.", []string{"model_group", "deployment"}, nil)})
	}
	if o.Spans != nil {
		m.reg.MustRegister(newSpanCollector(name, o.Spans))
	}
	if o.Callbacks != nil {
		desc := func(n, help string) *prometheus.Desc { return prometheus.NewDesc(name(n), help, []string{"sink"}, nil) }
		m.reg.MustRegister(&callbackCollector{stats: o.Callbacks,
			depth:   desc("callback_queue_depth", "Payloads a logging callback holds and has not delivered yet (queued or being sent)."),
			queued:  desc("callback_queued_total", "Payloads taken into a logging callback's queue."),
			sent:    desc("callback_sent_total", "Payloads a logging callback delivered."),
			dropped: desc("callback_dropped_total", "Payloads a logging callback dropped because its queue was full, by count or by bytes (or closed)."),
			failed:  desc("callback_failed_total", "Payloads a logging callback gave up on: attempts spent, refused by the receiver, or not delivered by shutdown."),
			lag:     desc("callback_lag_seconds", "Age of the oldest payload a logging callback has not delivered yet; 0 when none."),
		})
	}
	if o.WriterPending != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("spend_writer_pending_rows"), Help: "Spend-log rows queued and not yet written to the store."},
			func() float64 { return float64(o.WriterPending()) }))
	}
	if o.WriterLag != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("spend_writer_lag_seconds"), Help: "Age of the oldest row of the last batch when it was written."},
			func() float64 { return o.WriterLag().Seconds() }))
	}
	if o.WriterStripped != nil {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name("spend_writer_stripped_rows_total"), Help: "Spend-log rows the store refused as they were and took without their content, metadata, tags and end user."},
			func() float64 { return float64(o.WriterStripped()) }))
	}
	if o.WriterRejected != nil {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name("spend_writer_rejected_rows_total"), Help: "Spend-log rows the store refused even without their client-supplied fields: not written (logged by call id)."},
			func() float64 { return float64(o.WriterRejected()) }))
	}
	if o.RedisDegraded != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("redis_fallback"), Help: "1 while rate limits run on this replica's own counters because Redis does not answer."},
			func() float64 {
				if o.RedisDegraded() {
					return 1
				}
				return 0
			}))
	}
	if o.Allotments != nil {
		m.reg.MustRegister(&allotmentCollector{read: o.Allotments,
			decided: prometheus.NewDesc(name("allotment_decisions_total"), "Requests checked by this replica's allotments (general_settings.budget_allotments), by kind (budget, rate_limit) and where they were decided: local (in process, against an allotment) or redis (a per-request script: no allotment, too small, near the end of a budget or limit).", []string{"kind", "decided"}, nil),
			flushes: prometheus.NewDesc(name("allotment_flushes_total"), "Flush scripts this replica sent for its allotments (booking spend, giving back and resizing), by kind.", []string{"kind"}, nil),
			topups:  prometheus.NewDesc(name("allotment_topups_total"), "Allotments a flush's answer made larger than they were, by kind: one per account (budget) or rule (rate_limit) and flush.", []string{"kind"}, nil),
			refused: prometheus.NewDesc(name("allotment_refused_with_room_total"), "Per-request Redis decisions on this replica refused (or, for budgets in default mode, held short) while this replica's own allotment of that account or rule held room no request used; the room is given back and the request decided once more. Refusals caused by other replicas' allotments are not visible to this replica.", []string{"kind"}, nil),
			holders: prometheus.NewDesc(name("allotments"), "Accounts (budget) or rules (rate_limit) this replica holds an allotment of now.", []string{"kind"}, nil),
			held:    prometheus.NewDesc(name("allotment_held"), "What this replica's allotments hold on Redis now, by kind and unit: budget in usd (summed over accounts, used or not); rate_limit in requests and tokens (window admissions not used yet) and slots (max_parallel_requests slots held).", []string{"kind", "unit"}, nil),
		})
	}
	m.shed = counter("requests_shed_total", "Inference requests refused with 503 because the gateway was overloaded, by reason: in_flight (the configured bound was reached), lowered (the bound in force, lowered while goroutines waited for a CPU, was reached), memory (the bound in force, lowered while the live heap and the runtime's memory outside it passed three quarters of the soft memory limit, was reached) or connections (refused at accept: the connections open on the main port reached general_settings.max_client_connections, or twice the in-flight bound in force).", "reason")
	m.reg.MustRegister(m.shed)
	if o.InFlight != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("requests_in_flight"), Help: "Inference requests being served by this process."},
			func() float64 { n, _ := o.InFlight(); return float64(n) }))
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("requests_in_flight_limit"), Help: "Inference requests in flight past which new ones are shed (-1: no bound); below general_settings.max_requests_in_flight while the CPU cannot keep up."},
			func() float64 { _, l := o.InFlight(); return float64(l) }))
	}
	if o.Connections != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("client_connections"), Help: "Connections open on the main port (health and metrics on SEPARATE_HEALTH_PORT not counted)."},
			func() float64 { n, _ := o.Connections(); return float64(n) }))
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name("client_connections_limit"), Help: "Connections open on the main port past which a new one carrying an inference request is refused with 503 at accept (-1: no bound); twice the in-flight bound in force at most."},
			func() float64 { _, l := o.Connections(); return float64(l) }))
	}
	m.usageAdjusted = counter("usage_adjusted_total", "Answers whose usage was not booked as the upstream reported it, by provider: clamped (negative or beyond the request's hold) or estimated (none reported).", "provider", "adjustment")
	m.reg.MustRegister(m.usageAdjusted)
	m.cache = newCacheMetrics(m.reg, name)
	if o.Book != nil {
		m.reg.MustRegister(&budgetCollector{book: o.Book, keyLabels: o.KeyLabels,
			remaining: prometheus.NewDesc(name("remaining_budget_usd"), "Budget left (max budget less spend and holds) per key, user, team and the gateway.", []string{"entity", "id"}, nil),
			max:       prometheus.NewDesc(name("max_budget_usd"), "Max budget per key, user, team and the gateway.", []string{"entity", "id"}, nil),
			spend:     prometheus.NewDesc(name("budget_spend_usd"), "Spend in the current budget period per key, user, team and the gateway.", []string{"entity", "id"}, nil),
		})
	}
	return m
}

// budgetCollector reads the ledger at scrape time: only accounts with a
// budget are reported.
type budgetCollector struct {
	book                  *ledger.Book
	keyLabels             bool
	remaining, max, spend *prometheus.Desc
}

func (c *budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.remaining
	ch <- c.max
	ch <- c.spend
}

func (c *budgetCollector) Collect(ch chan<- prometheus.Metric) {
	kinds := []store.Kind{store.KindGlobal, store.KindTeam}
	if c.keyLabels {
		kinds = append(kinds, store.KindUser, store.KindKey)
	}
	for _, k := range kinds {
		c.book.Range(k, func(a *ledger.Account) bool {
			b := a.Budget()
			if b == ledger.Unlimited {
				return true
			}
			entity, id := string(k), a.ID
			if k == store.KindKey {
				id = HashPrefix(id) // a key's account is named by its whole hash
			}
			ch <- prometheus.MustNewConstMetric(c.max, prometheus.GaugeValue, b.Dollars(), entity, id)
			ch <- prometheus.MustNewConstMetric(c.spend, prometheus.GaugeValue, a.Spent().Dollars(), entity, id)
			ch <- prometheus.MustNewConstMetric(c.remaining, prometheus.GaugeValue, (b - a.Spent() - a.Reserved()).Dollars(), entity, id)
			return true
		})
	}
}

// HashPrefix is how a key's hash appears in labels: its first 8 hex digits,
// enough to tell keys apart on a dashboard and too short to stand for the
// key anywhere.
func HashPrefix(hash string) string {
	if len(hash) > 8 {
		return hash[:8]
	}
	return hash
}

// Handler serves /metrics. With auth set, a request it refuses gets the
// error auth returns (an *apierror.Error: 401 without a valid key, 403 for a
// key that may not read metrics).
func (m *Metrics) Handler(auth func(*http.Request) error) http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	if auth == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := auth(r); err != nil {
			apierror.Write(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Unknown is the one label value for anything that is not configured or
// stored (a model name, key, user or end user a client made up), so that
// clients cannot add series.
const Unknown = "unknown"

// OtherTag is the label value of the request tags past the gateway's bound
// on tag labels.
const OtherTag = "other"

// Request is what one finished inference request reports. Its label values
// must come from the configuration or the store (the gateway maps anything
// else to Unknown); KeyHash is a short prefix of the key's hash, never the
// whole hash.
type Request struct {
	Operation, Provider, RequestModel, ResponseModel string
	ModelGroup                                       string
	Status                                           int
	PromptTokens, CompletionTokens                   int64
	HasUsage                                         bool
	Duration, TTFT, Overhead                         time.Duration
	Stream                                           bool
	Cost                                             float64
	KeyHash, KeyAlias, User, Team, EndUser           string
	// Tags are the request's tags as label values: bounded by the gateway
	// (OtherTag for the rest), each at most once. Tags are kept whatever
	// KeyLabels says: they name workloads, and their number is bounded.
	Tags []string
}

// statusText avoids formatting the common codes.
var statusText = map[int]string{200: "200", 400: "400", 401: "401", 403: "403", 404: "404", 429: "429", 499: "499", 500: "500", 502: "502", 503: "503", 504: "504"}

// ObserveRequest records one request.
func (m *Metrics) ObserveRequest(r *Request) {
	status, ok := statusText[r.Status]
	if !ok {
		status = strconv.Itoa(r.Status)
	}
	m.series.requests.get(groupStatus{r.ModelGroup, status}, cloneGroupStatus, func(k groupStatus) prometheus.Counter {
		return m.requests.WithLabelValues(k.group, k.status)
	}).Inc()
	m.overhead.Observe(r.Overhead.Seconds())
	for _, t := range r.Tags {
		m.tagRequests.WithLabelValues(t).Inc()
		if r.Cost > 0 {
			m.tagSpend.WithLabelValues(t).Add(r.Cost)
		}
	}
	if r.Provider == "" {
		return // refused before a deployment was chosen
	}
	respModel := r.ResponseModel
	if respModel == "" {
		respModel = r.RequestModel
	}
	k := genAIKey{r.Operation, r.Provider, r.RequestModel, respModel}
	m.series.duration.get(k, cloneGenAI, func(k genAIKey) prometheus.Observer {
		return m.duration.WithLabelValues(k.op, k.provider, k.requestModel, k.responseModel)
	}).Observe(r.Duration.Seconds())
	if r.Stream && r.TTFT > 0 {
		m.series.ttft.get(k, cloneGenAI, func(k genAIKey) prometheus.Observer {
			return m.ttft.WithLabelValues(k.op, k.provider, k.requestModel, k.responseModel)
		}).Observe(r.TTFT.Seconds())
	}
	if r.HasUsage || r.PromptTokens > 0 || r.CompletionTokens > 0 {
		ts := m.series.tokens.get(k, cloneGenAI, func(k genAIKey) tokenSeries {
			return tokenSeries{
				input:  m.tokenUsage.WithLabelValues("input", k.op, k.provider, k.requestModel, k.responseModel),
				output: m.tokenUsage.WithLabelValues("output", k.op, k.provider, k.requestModel, k.responseModel),
			}
		})
		ts.input.Observe(float64(r.PromptTokens))
		ts.output.Observe(float64(r.CompletionTokens))
	}
	if r.Cost > 0 {
		m.series.spend.get(r.ModelGroup, strings.Clone, func(g string) prometheus.Counter {
			return m.spendModel.WithLabelValues(g)
		}).Add(r.Cost)
		if r.Team != "" {
			m.spendTeam.WithLabelValues(r.Team).Add(r.Cost)
		}
		if m.keyLabels {
			if r.KeyHash != "" {
				m.spendKey.add(HashPrefix(r.KeyHash), r.KeyAlias, r.Cost)
			}
			if r.User != "" {
				m.spendUser.WithLabelValues(r.User).Add(r.Cost)
			}
			if r.EndUser != "" {
				m.spendEndUser.WithLabelValues(r.EndUser).Add(r.Cost)
			}
		}
	}
}

// Shed counts an inference request refused because the gateway was
// overloaded; reason is in_flight, lowered, memory or connections.
func (m *Metrics) Shed(reason string) { m.shed.WithLabelValues(reason).Inc() }

// RateLimited counts a rate-limit refusal.
func (m *Metrics) RateLimited(scope store.Kind, limit string) {
	m.rateLimited.WithLabelValues(string(scope), limit).Inc()
}

// GuardrailOutcome counts what a guardrail did: n findings of entity
// ("" when none was found) with action.
func (m *Metrics) GuardrailOutcome(guardrail, action, entity string, n int) {
	if m == nil {
		return
	}
	m.guardrails.WithLabelValues(guardrail, action, entity).Add(float64(n))
}

// BudgetRefused counts a budget refusal.
func (m *Metrics) BudgetRefused(entity store.Kind) {
	m.budgetRefused.WithLabelValues(string(entity)).Inc()
}

// SoftBudgetCrossed counts a soft budget crossing.
func (m *Metrics) SoftBudgetCrossed(entity store.Kind) {
	m.softBudget.WithLabelValues(string(entity)).Inc()
}

// Retried counts a retried attempt.
func (m *Metrics) Retried(group string) { m.retries.WithLabelValues(group).Inc() }

// FellBack counts a request served by a fallback group.
func (m *Metrics) FellBack(group, fallback string) {
	m.fallbacks.WithLabelValues(group, fallback).Inc()
}

// CooledDown counts a deployment entering cooldown.
func (m *Metrics) CooledDown(group, deployment string) {
	m.cooldowns.WithLabelValues(group, deployment).Inc()
}

// UsageAdjusted counts an answer whose usage was clamped or estimated.
func (m *Metrics) UsageAdjusted(provider, adjustment string) {
	m.usageAdjusted.WithLabelValues(provider, adjustment).Inc()
}

type deploymentCollector struct {
	states func(yield func(group, id string, up bool))
	up     *prometheus.Desc
}

func (c *deploymentCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.up }

func (c *deploymentCollector) Collect(ch chan<- prometheus.Metric) {
	c.states(func(group, id string, up bool) {
		v := 0.0
		if up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, v, group, id)
	})
}

// Registry is the registry the metrics live on (for tests and extra collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// callbackCollector reads the logging callbacks' queues at scrape time; the
// one label is the sink's name (bounded by the config).
type callbackCollector struct {
	stats                                     func() []callback.Stats
	depth, queued, sent, dropped, failed, lag *prometheus.Desc
}

func (c *callbackCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.depth, c.queued, c.sent, c.dropped, c.failed, c.lag} {
		ch <- d
	}
}

func (c *callbackCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.stats() {
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(s.Depth), s.Sink)
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.CounterValue, float64(s.Queued), s.Sink)
		ch <- prometheus.MustNewConstMetric(c.sent, prometheus.CounterValue, float64(s.Sent), s.Sink)
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.Dropped), s.Sink)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(s.Failed), s.Sink)
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, s.Lag.Seconds(), s.Sink)
	}
}

// allotmentCollector reads the allotters' counters at scrape time.
type allotmentCollector struct {
	read                                             func(yield func(Allotment))
	decided, flushes, topups, refused, holders, held *prometheus.Desc
}

func (c *allotmentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.decided, c.flushes, c.topups, c.refused, c.holders, c.held} {
		ch <- d
	}
}

func (c *allotmentCollector) Collect(ch chan<- prometheus.Metric) {
	c.read(func(a Allotment) {
		ch <- prometheus.MustNewConstMetric(c.decided, prometheus.CounterValue, float64(a.Local), a.Kind, "local")
		ch <- prometheus.MustNewConstMetric(c.decided, prometheus.CounterValue, float64(a.Redis), a.Kind, "redis")
		ch <- prometheus.MustNewConstMetric(c.flushes, prometheus.CounterValue, float64(a.Flushes), a.Kind)
		ch <- prometheus.MustNewConstMetric(c.topups, prometheus.CounterValue, float64(a.TopUps), a.Kind)
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(a.RefusedWithRoom), a.Kind)
		ch <- prometheus.MustNewConstMetric(c.holders, prometheus.GaugeValue, float64(a.Holders), a.Kind)
		for unit, v := range a.Held {
			ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, v, a.Kind, unit)
		}
	})
}
