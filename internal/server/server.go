// Package server assembles a Tollgate gateway from its configuration and
// runs it: it owns the HTTP server and the components' start and stop.
package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/internal/admin"
	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/cache"
	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/gateway"
	"github.com/tollgate/tollgate/internal/guardrail"
	"github.com/tollgate/tollgate/internal/hooks"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/lifecycle"
	"github.com/tollgate/tollgate/internal/metrics"
	"github.com/tollgate/tollgate/internal/openapi"
	"github.com/tollgate/tollgate/internal/pricing"
	"github.com/tollgate/tollgate/internal/procmem"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/pyhook"
	"github.com/tollgate/tollgate/internal/ratelimit"
	"github.com/tollgate/tollgate/internal/router"
	"github.com/tollgate/tollgate/internal/rscript"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/tracing"
	"github.com/tollgate/tollgate/internal/ui"
)

// Version is set by main from the build.
var Version = "dev"

// Options are run-time settings that do not come from the config file.
type Options struct {
	Logger *slog.Logger
	// ShutdownTimeout bounds how long a graceful shutdown waits for requests
	// and streams in flight before closing their connections.
	ShutdownTimeout time.Duration
	// Store is the persistent state; nil runs without one (tests of the proxy alone).
	Store store.Store
	// ResyncInterval is how often the key snapshot reads what other replicas
	// wrote (default 500ms; changes made through this replica apply at once).
	ResyncInterval time.Duration
	// RedisPrefix namespaces this gateway's Redis keys (default "tg"); tests
	// sharing one Redis give each run its own.
	RedisPrefix string
	// RedisHoldTimeout bounds a budget hold's wait for Redis, and a
	// settle's beyond 2 s (ledger.SharedOptions.HoldTimeout; default
	// 500 ms), and a rate-limit admission's (ratelimit.Redis.AdmitTimeout,
	// alone or fused with a hold). Tests that must not depend on a
	// deadline set it long.
	RedisHoldTimeout time.Duration
	// RedisReadTimeout bounds the wait for Redis's reply on a connection
	// (rscript.Options.ReadTimeout; default 500 ms): tests that hold
	// replies back set it long, with RedisHoldTimeout.
	RedisReadTimeout time.Duration
	// RedisLeaseTTL is how long a lease on Redis outlives a replica that
	// stops renewing or releasing it (it crashed): a budget hold, an
	// allotment past its last local decision, a parallel slot (default 15
	// minutes; serve's --redis-lease-ttl). Crash tests set it short.
	RedisLeaseTTL time.Duration
	// BudgetSweepInterval is how often budget periods that ended are rolled
	// over without traffic (default 1 minute).
	BudgetSweepInterval time.Duration
	// CallbackQueue overrides the logging callbacks' queue defaults (tests
	// use tiny queues and short flush intervals); zero fields keep them.
	CallbackQueue callback.QueueOptions
	// ShedOnCPU lowers the bound on inference requests in flight while
	// goroutines wait too long for a CPU (shed.go). tollgate serve sets it;
	// tests embedding the server leave it off, so that a busy test machine
	// does not shed their bursts.
	ShedOnCPU bool
	// ReleaseStartPages unmaps the resident pages of the code and read-only
	// data of the executable (and of its shared libraries, in a cgo build)
	// once the keys read at start are in (procmem): the
	// start touches far more of the binary than serving does, and those
	// pages count in the process's RSS until then. tollgate serve sets it.
	ReleaseStartPages bool
}

// Server is one gateway process's serving state.
type Server struct {
	cfg        atomic.Pointer[config.Config]
	opts       Options
	log        *slog.Logger
	gw         *gateway.Gateway
	pass       *gateway.Pass  // the pass-through routes
	guardrails *guardrail.Set // the configured guardrails; nil: none
	mux        *http.ServeMux
	handler    http.Handler // mux behind the panic recovery and the body deadline
	snap       *auth.Snapshot
	writer     *ledger.Writer
	book       *ledger.Book
	limits     *gateway.RateLimits
	shared     *ledger.Shared      // budgets on Redis; nil without one
	allot      *ledger.Allotted    // holds against allotments (budget_allotments); nil when off
	rlAllot    *ratelimit.Allotter // rate limits decided against allotments (budget_allotments); nil when off
	redis      *rscript.Runner
	storeDown  atomic.Bool // the last resync could not reach the database
	missMu     sync.Mutex
	missed     map[string]time.Time // key hashes the store did not know, until when
	// fresh holds the hashes of the keys read through keyMiss, each with
	// the resyncSeq current when it was read: a key is newer than the
	// snapshot (keyNewer) until a resync that started after it was read
	// completes (resyncDone). Only such a key's requests read a missing end
	// user from the store (endUserMiss). freshN is len(fresh), read without
	// the lock: zero in the steady state.
	freshMu sync.Mutex
	fresh   map[string]uint64
	freshN  atomic.Int64
	// loadFresh: the keys read at start (loadKeys, under Serve) are all
	// newer than the end users read by New, until a resync started after
	// that read ended completes (loadSeq, set when loadDone): a key made on
	// another replica between the two reads is in the snapshot without
	// having come through keyMiss. Counted in freshN while set.
	loadFresh, loadDone bool
	loadSeq             uint64
	// resyncKick asks the resync loop for a resync now (the start's load
	// ended: the sooner one completes, the sooner loadFresh ends).
	resyncKick chan struct{}
	// writerRuns is set once runWriter has started the spend writer.
	writerRuns atomic.Bool
	// readAt is when New began reading users, teams and end users: the
	// first resync reads what changed since then (less its overlap), not
	// since Serve, so that a row written in between is not missed.
	readAt time.Time
	// readMark is the store's change mark taken before that read, when
	// the store has marks (marked; store.ChangeFeed, PostgreSQL): the
	// first resync reads from it.
	readMark   uint64
	marked     bool
	resyncSeq  atomic.Uint64 // resyncs started
	resyncDone atomic.Uint64 // the resyncSeq of the last completed resync
	// endMissed holds the end user ids the store did not have (endUserMiss),
	// each with the endGen it was read in; an entry of an older generation
	// is forgotten. endMissedN bounds it.
	endMissed  sync.Map // end user id -> uint64
	endMissedN atomic.Int64
	endGen     atomic.Uint64
	authn      *auth.Authenticator
	lastHealth atomic.Pointer[healthReport]
	modelsMu   sync.Mutex
	reloadMu   sync.Mutex          // serializes reloadModels
	dbModels   []config.Deployment // deployments added through /model/new
	modelsSig  string              // ids and update times of dbModels
	health     *router.Health
	clients    *provider.Clients // the upstream connection pools, kept across reloads
	metrics    *metrics.Metrics
	tracer     *tracing.Provider    // nil: tracing is off
	callbacks  *callback.Dispatcher // the logging callbacks; nil when none is served here
	// successCallbacks are the callbacks served here that hear of
	// successful requests, for /health/readiness.
	successCallbacks []string
	closeOnce        sync.Once
	pyhooks          *pyhook.Pool // python3 workers of Python hooks; nil without
	routes           []string
	// inflight counts handlers running; closing is set when a shutdown
	// stops admitting requests, and idle is signalled when the last
	// handler returns after that.
	inflight atomic.Int64
	closing  atomic.Bool
	idle     chan struct{}
	// shed bounds the inference requests in flight (shed.go).
	shed *shedder
	// shedPatterns are the routes shed wraps: the inference routes the
	// bound at accept refuses past it (accept.go).
	shedPatterns map[string]bool
	// gate bounds the connections open on the main listener while
	// serveHTTP runs (accept.go).
	gate atomic.Pointer[connGate]
	// lean is the lean server in front of the main server (for tests).
	lean atomic.Pointer[leanServer]
	// metricsHandler serves /metrics (also on the health listener).
	metricsHandler http.Handler
	// keysLoading is set once loadKeys has started (it runs once).
	keysLoading atomic.Bool
}

// New validates cfg and builds every component; nothing is started: no
// goroutine runs and nothing is dialled until Serve. The store is read
// (models, users, teams, spend) to build the in-memory state; the keys are
// read by Serve, while it answers (loadKeys).
func New(cfg *config.Config, opts Options) (_ *Server, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = 500 * time.Millisecond
	}
	if opts.BudgetSweepInterval <= 0 {
		opts.BudgetSweepInterval = time.Minute
	}
	s := &Server{opts: opts, log: opts.Logger, mux: http.NewServeMux(), clients: provider.NewClients(), idle: make(chan struct{}, 1),
		shedPatterns: map[string]bool{}}
	s.cfg.Store(cfg)
	s.shed = newShedder(cfg.MaxRequestsInFlight(), opts.ShedOnCPU, func(reason string) { s.metrics.Shed(reason) })
	// Redis first: a redis_url that does not parse fails before anything
	// else is built. The client is made, and dials, when Serve starts the
	// runner.
	var rc *rscript.Runner
	if url := cfg.RedisURL(); url != "" {
		var err error
		if rc, err = rscript.Open(url, rscript.Options{Log: opts.Logger, ReadTimeout: opts.RedisReadTimeout}); err != nil {
			return nil, err
		}
		s.redis = rc
	}
	// Allotments (general_settings.budget_allotments): on by default with
	// Redis, off without it.
	allot := rc != nil && cfg.GeneralSettings.Allotments()
	// The spend writer and the book exist from here on, so that the
	// metrics and the parts below are given them; the writer runs only
	// while Serve does.
	s.book = ledger.NewBook(s.budgetReset)
	if opts.Store != nil {
		s.writer = ledger.NewWriter(opts.Store, opts.Logger)
	}
	// Tracing: resolved (and refused when it cannot work) before anything
	// else is built; its exporters are made when Serve starts them.
	if tc, err := tracing.Resolve(cfg, os.Getenv); err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	} else if tc != nil {
		if s.tracer, err = tracing.New(tc, Version, opts.Logger); err != nil {
			return nil, fmt.Errorf("tracing: %w", err)
		}
	}
	// The logging callbacks (LiteLLM's callbacks, success_callback,
	// failure_callback): their queues exist from here on, their senders
	// run only while Serve does.
	cbs, cbWarnings, err := callback.New(cfg, callback.Options{Log: opts.Logger, Queue: opts.CallbackQueue})
	if err != nil {
		return nil, err
	}
	for _, w := range cbWarnings {
		opts.Logger.Warn(w)
	}
	if cbs != nil {
		opts.Logger.Info("logging callbacks", "sinks", cbs.Names())
	}
	s.callbacks = cbs
	s.successCallbacks = successCallbacks(cfg, cbs, s.tracer != nil)
	mopts := metrics.Options{Prefix: cfg.GeneralSettings.MetricsPrefix, KeyLabels: cfg.GeneralSettings.MetricsKeyLabels == nil || *cfg.GeneralSettings.MetricsKeyLabels,
		Book: s.book, Deployments: s.deploymentStates, InFlight: s.shed.InFlight, Connections: func() (int64, int64) {
			if g := s.gate.Load(); g != nil {
				return g.Open()
			}
			return 0, -1
		}}
	if rc != nil {
		mopts.RedisDegraded = rc.Degraded
	} else {
		mopts.RedisDegraded = func() bool { return false }
	}
	if s.writer != nil {
		mopts.WriterPending, mopts.WriterLag = s.writer.Pending, s.writer.Lag
		mopts.WriterStripped, mopts.WriterRejected = s.writer.Stripped, s.writer.Rejected
	}
	if s.tracer != nil {
		mopts.Spans = func(yield func(metrics.SpanQueue)) {
			s.tracer.Stats(func(st tracing.Stats) {
				yield(metrics.SpanQueue{Exporter: st.Exporter, Queued: st.Queued, Capacity: st.Capacity,
					Exported: st.Exported, Dropped: st.Dropped, Failed: st.Failed})
			})
		}
	}
	if cbs != nil {
		mopts.Callbacks = cbs.Stats
	}
	if allot {
		// Read at scrape time: the allotters are built below, before
		// anything is served.
		mopts.Allotments = func(yield func(metrics.Allotment)) {
			if a := s.allot; a != nil {
				amount, accounts := a.Held()
				yield(metrics.Allotment{Kind: "budget", Local: a.Local.Load(), Redis: a.Remote.Load(), Flushes: a.Flushes.Load(),
					TopUps: a.TopUps.Load(), RefusedWithRoom: a.RefusedWithRoom.Load(), Holders: int64(accounts),
					Held: map[string]float64{"usd": amount.Dollars()}})
			}
			if a := s.rlAllot; a != nil {
				h := a.Held()
				yield(metrics.Allotment{Kind: "rate_limit", Local: a.Local.Load(), Redis: a.Remote.Load(), Flushes: a.Flushes.Load(),
					TopUps: a.TopUps.Load(), RefusedWithRoom: a.RefusedWithRoom.Load(), Holders: h.Rules,
					Held: map[string]float64{"requests": float64(h.Requests), "tokens": float64(h.Tokens), "slots": float64(h.Slots)}})
			}
		}
	}
	s.metrics = metrics.New(mopts)
	s.health = router.NewHealth(func(group, id string) {
		s.log.Warn("deployment cooling down after failures", "model_group", group, "deployment", id, "cooldown", s.cfg.Load().Routing().Cooldown)
		s.metrics.CooledDown(group, id)
	})
	if opts.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		models, err := opts.Store.ListModels(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("load models: %w", err)
		}
		s.setDBModels(models)
	}
	rt, err := s.buildRouter(cfg)
	if err != nil {
		return nil, err
	}
	warnUnpriced(rt, opts.Logger)
	var snap *auth.Snapshot
	if opts.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Users, teams, end users, budgets and organizations now; the keys
		// under Serve, while it answers (loadKeys), so that a store of
		// 100,000 keys answers within a second: until a key is in, its
		// first request reads it from the store (keyMiss).
		s.readAt = time.Now()
		if feed, ok := opts.Store.(store.ChangeFeed); ok {
			// PostgreSQL: the first resync reads what transactions from
			// the oldest one in progress now wrote, however long they
			// take to commit (resync).
			if s.readMark, s.marked, err = feed.ChangeMark(ctx); err != nil {
				return nil, fmt.Errorf("load users and teams: %w", err)
			}
		}
		all, err := opts.Store.LoadAllButKeys(ctx)
		if err != nil {
			return nil, fmt.Errorf("load users and teams: %w", err)
		}
		snap = auth.NewSnapshot(all)
		snap.StartLoading()
	}
	aopts := auth.Options{StoreDown: s.storeDown.Load}
	if s.pyhooks, err = startPythonHooks(cfg, opts.Logger); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.pyhooks.Close() // a start that fails leaves no python process behind
		}
	}()
	if cfg.CustomAuth != nil {
		h, err := s.buildHook("custom_auth", cfg, cfg.CustomAuth, auth.HookVars)
		if err != nil {
			return nil, err
		}
		aopts.Custom = &auth.CustomAuth{Hook: h, Replace: cfg.CustomAuth.Mode == "replace"}
	}
	var keyHook *hooks.Hook
	if cfg.CustomKeyGenerate != nil {
		if keyHook, err = s.buildHook("custom_key_generate", cfg, cfg.CustomKeyGenerate, admin.KeyHookVars); err != nil {
			return nil, err
		}
	}
	if opts.Store != nil {
		s.missed = map[string]time.Time{}
		s.fresh = map[string]uint64{}
		s.resyncKick = make(chan struct{}, 1)
		aopts.Miss = s.keyMiss
		aopts.EndUserMiss = s.endUserMiss
	}
	authn := auth.NewAuthenticator(cfg, snap, aopts)
	s.authn = authn
	s.snap = authn.Snapshot()
	gopts := gateway.Options{
		Version:        Version,
		Routing:        cfg.Routing(),
		Health:         s.health,
		MaxBodyBytes:   cfg.MaxRequestBytes(),
		DefaultTimeout: cfg.RequestTimeout(),
		Logger:         opts.Logger,
		Observer:       &gateway.Telemetry{Log: opts.Logger, Metrics: s.metrics},
	}
	if s.tracer != nil {
		gopts.Tracer = s.tracer.Tracer()
		gopts.TraceContent = s.tracer.TakesContent()
		gopts.LangfuseDefaultTags = cfg.LiteLLMSettings.LangfuseDefaultTags
	}
	if cbs != nil { // a nil *Dispatcher must not become a non-nil Publisher
		gopts.Observer = &gateway.Telemetry{Log: opts.Logger, Metrics: s.metrics, Callbacks: cbs}
	}
	gopts.MaxResponseBytes = cfg.MaxResponseBytes()
	if len(cfg.Guardrails) > 0 {
		var warnings []string
		if gopts.Guardrails, warnings, err = guardrail.Build(cfg.Guardrails, guardrail.Options{Recorder: s.metrics}); err != nil {
			return nil, fmt.Errorf("guardrails: %w", err)
		}
		for _, w := range warnings {
			opts.Logger.Warn("guardrail", "warning", w)
		}
		s.guardrails = gopts.Guardrails
	}
	if gopts.Content, err = contentLogging(cfg); err != nil {
		return nil, err
	}
	if mk := cfg.MasterKey(); mk != "" {
		// Response ids stay valid across restarts and replicas that share
		// the master key (internal/gateway/responses.go).
		sum := sha256.Sum256([]byte("tollgate response ids\x00" + mk))
		gopts.ResponseIDSecret = sum[:]
	}
	var books *gateway.Books // nil without a store: nothing is booked
	if opts.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		total, err := opts.Store.TotalSpend(ctx)
		if err != nil {
			return nil, fmt.Errorf("load spend: %w", err)
		}
		// Custom-auth keys have no record to carry their spend: seed their
		// accounts. (Model budgets come back with their key's ModelSpend.)
		spends, err := opts.Store.BudgetSpends(ctx)
		if err != nil {
			return nil, fmt.Errorf("load budget spend: %w", err)
		}
		for _, b := range spends {
			switch b.Kind {
			case store.KindCustomAuthKey:
				s.book.Seed(store.KindKey, b.ID, ledger.USD(b.Spend))
			case store.KindTeamMember:
				s.book.Seed(store.KindTeamMember, b.ID, ledger.USD(b.Spend))
			}
		}
		// litellm_settings.max_budget is also the user litellm-proxy-budget,
		// whose record keeps what a reset of the gateway's spend took off.
		offset, err := admin.EnsureProxyBudgetUser(ctx, opts.Store, s.snap, cfg.LiteLLMSettings.MaxBudget)
		if err != nil {
			return nil, fmt.Errorf("proxy budget user: %w", err)
		}
		total -= offset
		if d, ok := opts.Store.(interface{ DisableSpendLogs(bool) }); ok && cfg.GeneralSettings.DisableSpendLogs {
			d.DisableSpendLogs(true)
			opts.Logger.Info("general_settings.disable_spend_logs: spend is tracked, per-request spend logs are not written")
		}
		books = &gateway.Books{Book: s.book, Writer: s.writer, Snap: s.snap, Log: opts.Logger,
			GlobalBudget: cfg.LiteLLMSettings.MaxBudget, GlobalSpent: total, MaxEndUserBudget: cfg.LiteLLMSettings.MaxEndUserBudget,
			RefuseUnpriced: cfg.GeneralSettings.UnpricedModels == "refuse", NoErrorRows: cfg.GeneralSettings.DisableErrorLogs, Mode: s.enforcement,
			OnUsageAdjusted: s.metrics.UsageAdjusted, OnSoftBudget: s.softBudgetCrossed}
	}
	s.limits = newLimits(cfg, opts, rc, s.metrics)
	gopts.Limits = s.limits
	if gopts.Cache, err = newCache(cfg, opts, rc, s.metrics); err != nil {
		return nil, err
	}
	if rc != nil && books != nil {
		// Budgets are held on Redis too, so replicas share them exactly;
		// the runner says for both whether Redis answers.
		shared := ledger.NewShared(rc, ledger.SharedOptions{Prefix: opts.RedisPrefix, Log: opts.Logger,
			Mode: s.enforcement, FailClosed: cfg.LiteLLMSettings.BudgetOnRedisFailure == "fail_closed", HoldTimeout: opts.RedisHoldTimeout})
		if opts.RedisLeaseTTL > 0 {
			shared.LeaseTTL = opts.RedisLeaseTTL
		}
		books.Holder = shared
		s.shared = shared
		// A dead replica's swept allotment is reseeded from the store's
		// spend, read off the request path (docs/allotments.md).
		shared.SetSpendReader(storeSpend(opts.Store, s.book, s.writer))
		if allot {
			// Holds decided in process against this replica's allotments,
			// flushed to Redis once per interval (docs/allotments.md).
			s.allot = ledger.NewAllotted(shared, ledger.AllotOptions{})
			books.Holder = s.allot
		}
	}
	// Rate limits too, by default only with the budgets' presence set (a
	// database): without it every replica would size its allotments as if
	// it were alone (remaining / 2, not remaining / (2 × replicas)), so
	// Redis without a database keeps the per-request scripts unless
	// budget_allotments is true.
	if allot && (s.shared != nil || cfg.GeneralSettings.BudgetAllotments != nil) {
		// Rate limits decided in process against allotments of each
		// rule, flushed to Redis once per interval (docs/allotments.md).
		var presence string
		if s.shared != nil {
			presence = s.shared.PresenceKey()
		}
		s.rlAllot = ratelimit.NewAllotter(s.limits.Limiter, ratelimit.AllotOptions{Presence: presence})
	}
	if books != nil {
		gopts.Meter = books
	}
	var metricsAuth func(*http.Request) error
	if cfg.LiteLLMSettings.RequireAuthForMetricsEndpoint {
		metricsAuth = func(r *http.Request) error { return mayReadMetrics(authn, r) }
	}
	s.metricsHandler = s.metrics.Handler(metricsAuth)
	s.Handle("GET /metrics", s.metricsHandler)
	s.gw = gateway.New(gopts, authn, rt)
	s.gw.Register(inferenceMux{s})
	if err := s.registerPassThrough(cfg); err != nil {
		return nil, err
	}
	if opts.Store != nil {
		// Files and batches need the store: it records who owns each.
		s.gw.RegisterFiles(s, opts.Store, books)
		var cb cache.Backend
		if gopts.Cache != nil {
			cb = gopts.Cache.Backend
			if sem := gopts.Cache.Semantic; sem != nil {
				// /cache/delete and /cache/flushall drop the prompts'
				// vectors with their answers.
				cb = cache.WithIndex(cb, sem.Index)
			}
		}
		admin.New(opts.Store, authn, s.book, cfg, opts.Logger).WithShared(s.shared).WithKeyHook(keyHook).WithNewKey(s.keyMade).WithSpendFlush(s.flushSpend).WithCache(cb).WithModels(&admin.Models{
			Deployments: s.deployments,
			Reload:      s.reloadModels,
			State: func(id string) (time.Time, bool) {
				_, until := s.health.CoolingDown(id)
				return until, s.health.Healthy(id)
			},
			Disabled: func(id string) string { return s.gw.Router().DisabledReason(id) },
		}).WithPricer(func(model string) (pricing.Price, bool) {
			if g, ok := s.gw.Router().Group(model); ok {
				t := g.Targets[0]
				return t.PriceFor(t.UpstreamModel(model))
			}
			return pricing.Lookup("", model)
		}).Register(s)
	}
	s.registerHealth(s.Handle)
	s.Handle("GET /routes", apierror.Handler(s.log, s.listRoutes))
	openapi.Register(pageHeaders(s.Handle), Version)
	ui.Register(pageHeaders(s.Handle))
	s.mux.Handle("/", s.pass.Fallback(unmatched(s.mux))) // not a route: kept out of Server.Routes
	s.warnShadowedPassThrough()
	s.handler = apierror.Recover(s.log, bodyDeadline(s.mux, cfg.RequestBodyTimeout()))
	return s, nil
}

// loadKeys reads every key into the snapshot: under Serve as its first
// actor, while the server already answers (a key not yet in goes through
// keyMiss, one store query, and is charged and limited as it would be once
// loaded: its ledger accounts start from the spend its row carries), or
// in Handler before it returns. It runs once. A failed read is tried twice
// more; then keys keep coming one by one through keyMiss.
func (s *Server) loadKeys(ctx context.Context) {
	if s.opts.Store == nil || !s.keysLoading.CompareAndSwap(false, true) {
		return
	}
	defer s.snap.DoneLoading()
	start := time.Now()
	for attempt := 1; ; attempt++ {
		// A page at a time: between pages the store serves the miss
		// path's reads (SQLite has one connection), and only one page's
		// rows are alive beside the snapshot. A retry reads every page
		// again; a row already in is left as it is.
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		put, n := s.snap.KeyLoader(), 0
		err := s.opts.Store.LoadKeys(lctx, func(page []*store.Key) error {
			// As keyMiss does, a new generation before the keys are in:
			// an end user remembered missing may be older than them.
			s.endGen.Add(1)
			put(page)
			n += len(page)
			return nil
		})
		cancel()
		if err == nil {
			// The pages' garbage (their JSON, the records before
			// compaction, the compactor's tables) is not collected soon on
			// an idle gateway: collect it now and hand the pages back.
			debug.FreeOSMemory()
			if s.opts.ReleaseStartPages {
				if _, err := procmem.Release(); err != nil {
					s.log.Warn("the start's pages of the executable and its libraries were not released", "err", err)
				}
			}
			s.log.Info("keys loaded", "keys", n, "took", time.Since(start).Round(time.Millisecond))
			return
		}
		if ctx.Err() != nil {
			return
		}
		if attempt == 3 {
			s.log.Error("keys not loaded: each key is read from the database on its first use", "err", err)
			return
		}
		s.log.Warn("loading keys failed; trying again", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// budgetReset follows a budget period rolling over in the book: the store
// through the spend writer, in order with the spend rows, and Redis.
func (s *Server) budgetReset(kind store.Kind, id string, next time.Time) {
	if kind.HasRow() && s.writer != nil {
		// a regenerated key's record is under its current hash
		s.writer.Reset(kind, recordName(s.book, kind, id), next)
	}
	if s.shared != nil {
		if kind == store.KindKey { // a regenerated key's Redis hash is its account's
			if k, ok := s.snap.Key(id); ok {
				id = k.Account()
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := s.shared.ResetPeriod(ctx, kind, id, next); err != nil {
			s.log.Warn("budget reset not written to redis", "kind", string(kind), "id", logID(kind, id), "err", err)
		}
	}
}

// softBudgetCrossed reports an account crossing its soft budget.
func (s *Server) softBudgetCrossed(a *ledger.Account) {
	s.log.Warn("soft budget crossed", "entity", string(a.Kind), "id", logID(a.Kind, a.ID), "spend", a.Spent().Dollars())
	s.metrics.SoftBudgetCrossed(a.Kind)
}

// Handler is the gateway's HTTP handler. Spend is written to the store,
// and Redis used, only while Serve runs.
// Without Serve, nothing reads the keys in the background: Handler reads
// them before it returns (once).
func (s *Server) Handler() http.Handler {
	s.loadKeys(context.Background())
	return s.handler
}

// Serve runs the server's actors (see actors) until ctx is done or one of
// them fails, then stops them in the reverse order, each waited for: the
// HTTP server first (the listener closes at once, requests and streams in
// flight run to their end, up to ShutdownTimeout, and what they spent is
// booked), then the background loops, the budget carry and presence, the
// spend writer (flushed to the store) and last Redis. more are actors of the
// caller's (a config reloader), started after the server's and stopped
// before them. Requests still running when ShutdownTimeout passes are
// cancelled, and Serve then reports the timeout. Serve runs once.
func (s *Server) Serve(ctx context.Context, ln net.Listener, more ...lifecycle.Actor) error {
	g := s.actors(ln)
	for _, a := range more {
		g.Add(a)
	}
	err := g.Run(ctx)
	s.Close()
	if err == nil {
		s.log.Info("shutdown complete")
	}
	return err
}

// actors lists what runs while the server serves, in start order; they
// stop in the reverse order. Each uses only actors before it: requests
// book spend on the writer and settle holds on Redis; the sweep queues
// resets on the writer; presence and the carry write to Redis.
func (s *Server) actors(ln net.Listener) *lifecycle.Group {
	g := &lifecycle.Group{}
	if s.tracer != nil {
		// First to start and last to stop: the spans of every request
		// answered before the shutdown are exported (within 5 s).
		g.Add(lifecycle.Actor{Name: "tracing", Start: s.tracer.Start, Run: func(ctx context.Context) error {
			if err := s.tracer.Run(ctx, 5*time.Second); err != nil {
				s.log.Warn("tracing: spans not exported at shutdown", "err", err)
			}
			return nil
		}})
	}
	if s.redis != nil {
		g.Add(lifecycle.Actor{Name: "redis", Start: s.redis.Start, Run: func(ctx context.Context) error {
			s.redis.Watch(ctx)
			return s.redis.Close()
		}})
	}
	if s.writer != nil {
		g.Add(lifecycle.Actor{Name: "spend writer", Run: s.runWriter})
	}
	if s.shared != nil {
		g.Add(lifecycle.Actor{Name: "presence", Run: s.runPresence})
	}
	if s.allot != nil {
		// Stopped before presence: its last flush books everything and
		// returns every allotment before the replica leaves the set.
		g.Add(lifecycle.Actor{Name: "allotments", Run: func(ctx context.Context) error { s.allot.Run(ctx); return nil }})
	}
	if s.rlAllot != nil {
		// Stopped before presence and the Redis runner: its last flush
		// returns every rate-limit allotment.
		g.Add(lifecycle.Actor{Name: "rate-limit allotments", Run: func(ctx context.Context) error { s.rlAllot.Run(ctx); return nil }})
	}
	if s.redis != nil {
		// Keeps the Redis leases of requests in flight (budget holds,
		// parallel slots) alive while they run. Stopped after the HTTP
		// server, once every request has settled.
		g.Add(lifecycle.Actor{Name: "lease renewal", Run: func(ctx context.Context) error { s.renewLeases(ctx); return nil }})
	}
	if s.opts.Store != nil {
		// The keys are read while the HTTP server answers.
		g.Add(lifecycle.Actor{Name: "keys", Run: func(ctx context.Context) error {
			s.loadStarted()
			s.loadKeys(ctx)
			s.loadEnded()
			<-ctx.Done()
			return nil
		}})
		g.Add(lifecycle.Actor{Name: "resync", Run: func(ctx context.Context) error { s.resync(ctx); return nil }})
	}
	if s.writer != nil {
		g.Add(lifecycle.Actor{Name: "budget sweep", Run: func(ctx context.Context) error { s.sweepBudgets(ctx); return nil }})
	}
	if s.cfg.Load().GeneralSettings.BackgroundHealthChecks {
		g.Add(lifecycle.Actor{Name: "health checks", Run: func(ctx context.Context) error { s.backgroundChecks(ctx); return nil }})
	}
	if s.callbacks != nil {
		// Stopped after the HTTP server: the last requests' payloads are
		// flushed.
		g.Add(lifecycle.Actor{Name: "callbacks", Run: func(ctx context.Context) error { s.callbacks.Run(ctx); return nil }})
	}
	g.Add(lifecycle.Actor{Name: "http", Run: func(ctx context.Context) error { return s.serveHTTP(ctx, ln) }})
	return g
}

// renewLeases renews, until ctx ends, the leases on Redis of this
// replica's requests in flight: their budget holds (ledger.Shared.Renew)
// and parallel slots (ratelimit.Limiter.Renew), each every quarter lease.
func (s *Server) renewLeases(ctx context.Context) {
	var wg sync.WaitGroup
	if s.shared != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.shared.Renew(ctx) }()
	}
	s.limits.Limiter.Renew(ctx)
	wg.Wait()
}

// runWriter runs the spend writer until ctx ends, then closes it: every
// row queued (the HTTP actor has stopped: no more come) reaches the store.
func (s *Server) runWriter(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.writer.Run(); close(done) }()
	s.writerRuns.Store(true)
	<-ctx.Done()
	left := s.writer.Close()
	<-done
	if left > 0 {
		s.log.Error("spend rows could not be written before exit", "rows", left)
	} else {
		s.log.Info("spend flushed")
	}
	return nil
}

// flushSpend writes the spend queued in the writer now, while it runs
// (without Serve nothing writes it, and a flush would wait for ever).
func (s *Server) flushSpend() {
	if s.writer != nil && s.writerRuns.Load() {
		s.writer.Flush()
	}
}

// runPresence beats this replica into Redis's presence set until ctx ends
// (sweeping to Redis, after each answered beat, the spend booked while it
// was away), then carries the spend booked while Redis was away that no
// later hold took there, and leaves the set so that the others' shares
// grow at once. The group stopping the actors gives no deadline (each
// actor bounds its own stop): the carry takes StopTimeout, long enough for
// the background carries in flight (each bounded by its own deadline, the
// larger of 2 s and the Redis hold timeout) to end and for its own carries.
func (s *Server) runPresence(ctx context.Context) error {
	s.shared.Announce(ctx)
	cctx, cancel := context.WithTimeout(context.Background(), s.shared.StopTimeout())
	if n := s.shared.CarryOffline(cctx, s.book); n > 0 {
		s.log.Warn("spend booked while redis was away could not be carried there; the database has it, and redis counts it at the account's next reseed", "accounts", n)
	}
	cancel()
	lctx, cancel := context.WithTimeout(context.Background(), time.Second)
	s.shared.Leave(lctx)
	cancel()
	return nil
}

// serveHTTP serves on ln until ctx ends, then shuts the HTTP server down
// gracefully and returns once every handler has returned (their spend
// queued on the writer).
func (s *Server) serveHTTP(ctx context.Context, ln net.Listener) error {
	base, cancelBase := context.WithCancelCause(context.Background())
	defer cancelBase(nil)
	newServer := func() *http.Server {
		return &http.Server{
			Handler:           s.track(s.handler),
			BaseContext:       func(net.Listener) context.Context { return base },
			ReadHeaderTimeout: s.cfg.Load().RequestHeaderTimeout(),
			// Request headers past 64 KiB are refused with 431 (Go's default is
			// 1 MiB): a key, a few tags and a trace context need far less.
			MaxHeaderBytes: 64 << 10,
			IdleTimeout:    2 * time.Minute,
			ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		}
	}
	srv := newServer()
	// Connections open are bounded at accept (accept.go): past the bound a
	// new connection is answered a canned 503 without net/http's work,
	// unless its first request is not an inference route (health probes,
	// metrics, management): those are served one request each by side, a
	// server with keep-alives off. Idle keep-alive connections are closed
	// at the bound, so clients' pools do not refuse new connections.
	gate := newConnGate(ln, s.cfg.Load().MaxClientConnections(), func() int64 { _, l := s.shed.InFlight(); return l },
		s.inferenceRoute, func() { s.metrics.Shed("connections") })
	s.gate.Store(gate)
	srv.ConnState = gate.connState
	side := newServer()
	side.SetKeepAlivesEnabled(false)
	// The side server's places (maxExemptConns) are few: a connection
	// there has sent its request line already (decide read it), and a
	// probe's or a management call's header is a packet, so a header not
	// whole after sideHeaderTimeout is a slow client, not a slow network
	// (it covers a lost segment's retransmission, RTO 1 s); at
	// request_header_timeout (10 s) 64 slow headers would refuse probes
	// past the bound for that long.
	if side.ReadHeaderTimeout <= 0 || side.ReadHeaderTimeout > sideHeaderTimeout {
		side.ReadHeaderTimeout = sideHeaderTimeout
	}
	sideLn := &sideListener{g: gate, done: make(chan struct{})}
	go func() { _ = side.Serve(sideLn) }()
	defer side.Close()
	// Shutdown closes the connections past the bound queued for the side
	// server or held by the gate's goroutines (side.Shutdown closes sideLn
	// too; this covers the serve error's path).
	defer sideLn.Close()
	// The lean server (lean.go) owns the accept loop on the gate and
	// serves the keep-alive POSTs to inference routes it parses exactly;
	// every other connection, from the request it could not take on, is
	// handed with the bytes read so far to srv, which serves it as before.
	lean := newLeanServer(srv, gate, s.leanRoute)
	s.lean.Store(lean)
	hardClose := func() { lean.Close(); _ = srv.Close() }
	herrc := make(chan error, 1)
	go func() { herrc <- srv.Serve(lean.handoff) }()
	errc := make(chan error, 1)
	go func() { errc <- lean.Serve() }()
	select {
	case err := <-errc:
		s.drain(cancelBase, hardClose)
		<-herrc
		return err
	case err := <-herrc:
		s.drain(cancelBase, hardClose)
		<-errc
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down: waiting for requests in flight", "timeout", s.opts.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	go func() { _ = side.Shutdown(sctx) }()
	// The lean server is shut down first, and net/http's after it: until
	// the lean connections have ended, a connection accepted before the
	// shutdown may still hand its first request to srv (a probe on a
	// connection net/http would have given 5 s), so srv's listener stays
	// open meanwhile; its keep-alives are off from now on (its idle
	// connections close, the others after their answer).
	srv.SetKeepAlivesEnabled(false)
	lerr := lean.Shutdown(sctx)
	err := srv.Shutdown(sctx)
	if err == nil {
		err = lerr
	}
	serr := <-errc
	if herr := <-herrc; serr == nil || errors.Is(serr, http.ErrServerClosed) {
		serr = herr
	}
	if serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		s.drain(cancelBase, hardClose)
		return serr
	}
	if err != nil {
		s.log.Warn("shutdown timeout passed: cancelling the requests still in flight; what they produced is booked", "requests", s.inflight.Load())
	}
	s.drain(cancelBase, hardClose)
	if err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	return nil
}

// leanRoute reports whether POSTs to path may be served by the lean
// server: the inference routes the in-flight bound counts, but not the
// pass-through fallback "/" (whatever path nothing else matched: rare, and
// left to net/http).
func (s *Server) leanRoute(path string) bool {
	r := &http.Request{Method: http.MethodPost, URL: &url.URL{Path: path}, Host: "gateway"}
	_, pattern := s.mux.Handler(r)
	return pattern != "/" && s.shedPatterns[pattern]
}

// errShuttingDown cancels the requests a shutdown timeout cut.
var errShuttingDown = errors.New("server shutting down")

// drainGrace bounds the wait for cancelled handlers to return: they only
// have to notice the cancellation and settle.
const drainGrace = 10 * time.Second

// drain cancels every request still in flight, closes their connections,
// and waits for their handlers to return (settling their spend on the way).
func (s *Server) drain(cancelBase context.CancelCauseFunc, closeAll func()) {
	s.closing.Store(true)
	if s.inflight.Load() > 0 {
		cancelBase(errShuttingDown)
		closeAll()
		deadline := time.Now().Add(drainGrace)
		for s.inflight.Load() > 0 && time.Now().Before(deadline) {
			select {
			case <-s.idle:
			case <-time.After(50 * time.Millisecond):
			}
		}
		if n := s.inflight.Load(); n > 0 {
			s.log.Error("requests still running after the shutdown grace; their spend may be lost", "requests", n, "grace", drainGrace)
		}
	}
	closeAll()
}

// track counts the handlers running, so that a shutdown can wait for the
// last one before closing the spend writer. A request that arrives once the
// server is closing gets a 503.
func (s *Server) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer func() {
			if s.inflight.Add(-1) == 0 && s.closing.Load() {
				select {
				case s.idle <- struct{}{}:
				default:
				}
			}
		}()
		if s.closing.Load() {
			w.Header().Set("Connection", "close")
			apierror.Write(w, apierror.Unavailable(errShuttingDown, "the gateway is shutting down; retry on another replica"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Close releases what the server holds when nothing runs: the upstream
// connection pools' idle connections and the Redis client. Serve calls it
// on its way out; a server built and never served (a test of Handler
// alone) should call it. It is idempotent, and must not be called while
// Serve runs.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.clients.CloseIdle()
		s.pyhooks.Close() // the python3 workers of custom_auth / custom_key_generate
		if s.redis != nil {
			_ = s.redis.Close() // closed already when Serve ran
		}
	})
}

// registerHealth registers the health routes with handle: on the main mux,
// and on the health listener's (HealthActor).
func (s *Server) registerHealth(handle func(string, http.Handler)) {
	alive := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`"I'm alive!"` + "\n"))
	}
	handle("GET /health", apierror.Handler(s.log, s.healthAll))
	handle("GET /health/liveliness", http.HandlerFunc(alive))
	handle("GET /health/liveness", http.HandlerFunc(alive))
	handle("GET /health/readiness", http.HandlerFunc(s.readiness))
	handle("GET /health/readiness/details", apierror.Handler(s.log, func(w http.ResponseWriter, r *http.Request) error {
		if _, err := s.authn.Authenticate(r); err != nil {
			return apierror.Unauthorized("%v", err)
		}
		s.readiness(w, r)
		return nil
	}))
}

// Handle registers a route and remembers its pattern, so a test can check
// that the OpenAPI document covers every route.
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
	s.routes = append(s.routes, pattern)
}

// Routes are the registered patterns ("METHOD /path").
func (s *Server) Routes() []string { return slices.Clone(s.routes) }

// resync keeps the key snapshot current with what other replicas write: it
// reads rows changed since its previous look, overlapping by resyncOverlap so
// that a write committed late, or stamped by a replica whose clock is behind,
// is not missed (re-applying a row is harmless). A store with change marks
// (PostgreSQL) is read from the mark taken before the previous look
// instead, not by time: a row is stamped when written, and its
// transaction may commit after any overlap has passed (a user's deletion
// of thousands of keys; before branch delstamp its tail of deletion
// records was never read by other replicas, whose snapshots kept serving
// the deleted keys until a restart). A mark is the oldest transaction in
// progress when it is taken: whatever a read misses was written at or
// after it, whatever the writer's duration or clock.
func (s *Server) resync(ctx context.Context) {
	if s.opts.Store == nil {
		return
	}
	const resyncOverlap = 5 * time.Second
	t := time.NewTicker(s.opts.ResyncInterval)
	defer t.Stop()
	// From New's read of users, teams and end users: what changed between
	// it and now (a start that took its time: Python hooks, Redis, a large
	// read) is read by the first resync, not missed for good.
	since := s.readAt.Add(-resyncOverlap)
	feed, _ := s.opts.Store.(store.ChangeFeed)
	mark, marked := s.readMark, s.marked && feed != nil
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.resyncKick:
		}
		seq := s.resyncSeq.Add(1) // before the read: keys read by keyMiss from now on are newer than it
		started := time.Now()
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var changed *store.Snapshot
		var deleted []store.Deletion
		var next uint64
		var err error
		if marked {
			// The next look's mark is taken before this one reads.
			if next, _, err = feed.ChangeMark(qctx); err == nil {
				// Read from after the mark: a transaction the next look
				// will not read again (committed before the mark) is
				// older than this, so a key the miss path read after
				// this read no row it deleted (PutKeyRead).
				started = time.Now()
				changed, deleted, err = feed.ChangesFrom(qctx, mark)
			}
		} else {
			changed, deleted, err = s.opts.Store.Changes(qctx, since)
		}
		cancel()
		if err != nil {
			if ctx.Err() == nil && !s.storeDown.Swap(true) {
				s.log.Warn("database unreachable: serving known keys from the cached snapshot; unknown keys get 503", "err", err)
			}
			continue
		}
		if s.storeDown.Swap(false) {
			s.log.Info("database reachable again")
		}
		// A deleted key's account is dropped once the snapshot has let the
		// key go: dropped before, a request of the key in between would make
		// it anew from the record's spend, which may lag.
		gone := s.deletedKeys(deleted)
		s.snap.Apply(changed, deleted, started)
		s.forgetDeletedKeys(ctx, gone, changed)
		s.resyncCompleted(seq)
		since, mark = started.Add(-resyncOverlap), next
		mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := s.reloadModels(mctx); err != nil && ctx.Err() == nil {
			s.log.Warn("model resync failed; serving the current models", "err", err)
		}
		cancel()
	}
}

// deletedKeys are the snapshot's records of the keys deleted says are gone
// (read before the snapshot applies the deletions). A key the snapshot no
// longer has was deleted here (admin.ForgetKeys dropped its account), or
// never known here.
func (s *Server) deletedKeys(deleted []store.Deletion) []*store.Key {
	if s.book == nil {
		return nil
	}
	var gone []*store.Key
	for _, d := range deleted {
		if d.Kind != store.KindKey {
			continue
		}
		// Not a key made again with its secret since: a resync's overlap
		// reads the deletion again.
		if k, ok := s.snap.Key(d.ID); ok && !k.CreatedAt.After(d.At) {
			gone = append(gone, k)
		}
	}
	return gone
}

// forgetDeletedKeys drops the budget accounts of keys another replica
// deleted, here and on Redis, as the deleting replica did (admin.ForgetKeys):
// a key made later with the same secret starts from its own spend. A
// regenerate is a deletion of the old hash too, and its account goes on
// with the new record: kept when a key read in the same resync under
// another hash, or the store (a record still naming it as its
// budget_account, HashesReplaced: the new record not read yet), has it.
// However many keys went, the store is asked in a few bounded queries and
// Redis in a few scripts (before branch keygaps, one store query and one
// Redis call per key: a resync after deleting 10,000 keys made 20,000
// round trips on every replica).
func (s *Server) forgetDeletedKeys(ctx context.Context, gone []*store.Key, changed *store.Snapshot) {
	if len(gone) == 0 {
		return
	}
	// A key made again with the deleted secret (its hash acct, its account
	// its own) does not keep the account: only a regenerate's record, under
	// another hash, does.
	kept := map[string]bool{}
	if changed != nil {
		for _, c := range changed.Keys {
			if a := c.Account(); a != c.TokenHash {
				kept[a] = true
			}
		}
	}
	ask := make([]string, 0, len(gone))
	for _, k := range gone {
		if !kept[k.Account()] {
			ask = append(ask, k.Account())
		}
	}
	if len(ask) == 0 {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, time.Duration(1+len(ask)/1000)*10*time.Second)
	used, err := s.opts.Store.HashesReplaced(qctx, ask)
	cancel()
	if err != nil {
		return // kept: the next deletion of a key on them drops them
	}
	var forget []*store.Key
	var mine []string
	for _, k := range gone {
		acct := k.Account()
		if kept[acct] || used[acct] {
			continue
		}
		if _, ok := s.snap.Key(acct); ok {
			// A key made again with the hash since: the deleting replica
			// removed the deleted key's Redis hash, which has had the new
			// key's spend only since; this replica's account, the deleted
			// key's, goes alone.
			mine = append(mine, acct)
			continue
		}
		forget = append(forget, k)
	}
	s.book.Forget(store.KindKey, mine...)
	admin.ForgetKeys(ctx, s.book, s.shared, s.log, forget)
}

// warnUnpriced says which deployments have no price: their requests cost
// nothing, so budgets never bind on them.
func warnUnpriced(rt *router.Router, log *slog.Logger) {
	for _, name := range rt.GroupNames() {
		g, _ := rt.Group(name)
		for _, t := range g.Targets {
			if !t.Priced && t.D.Provider != "demo" && !t.Wildcard() {
				log.Warn("deployment has no known price: its requests cost 0 and budgets do not bind on it; set input_cost_per_token and output_cost_per_token (or model_info.base_model)",
					"model_group", name, "deployment", t.D.ID, "model", t.D.Provider+"/"+t.D.Model)
			}
		}
	}
}

// buildRouter builds the routing table for cfg's deployments plus the
// models added through the API, sharing the server's deployment health and
// connection pools.
func (s *Server) buildRouter(cfg *config.Config) (*router.Router, error) {
	pol := cfg.Routing()
	s.modelsMu.Lock()
	deps := append(append([]config.Deployment{}, cfg.Deployments...), s.dbModels...)
	s.modelsMu.Unlock()
	rt, err := router.New(deps, router.Settings{Aliases: cfg.RouterSettings.ModelGroupAlias, Strategy: pol.Strategy,
		AllowedFails: pol.AllowedFails, Cooldown: pol.Cooldown, SingleDeploymentThreshold: pol.SingleDeploymentThreshold,
		Health: s.health, Clients: s.clients})
	if err == nil {
		for _, x := range rt.Disabled() {
			s.log.Error("deployment disabled", "model_group", x.D.ModelName, "deployment", x.D.ID, "reason", x.Reason)
		}
		for _, why := range rt.Dangling() {
			s.log.Error("model alias serves nothing", "reason", why)
		}
	}
	return rt, err
}

// deploymentStates reports each deployment's state for the metrics.
func (s *Server) deploymentStates(yield func(group, id string, up bool)) {
	rt := s.gw.Router()
	for _, name := range rt.GroupNames() {
		g, _ := rt.Group(name)
		for _, t := range g.Targets {
			cool, _ := s.health.CoolingDown(t.D.ID)
			yield(g.Name, t.D.ID, !cool && s.health.Healthy(t.D.ID))
		}
	}
}

// setDBModels parses the API's models; one that no longer validates is
// skipped with an error in the log rather than taking the others down. It
// reports whether the set changed.
func (s *Server) setDBModels(models []store.Model) bool {
	var sig strings.Builder
	deps := make([]config.Deployment, 0, len(models))
	for _, m := range models {
		fmt.Fprintf(&sig, "%s@%d;", m.ID, m.UpdatedAt.UnixNano())
		d, err := config.ParseModelEntry(m.Entry)
		if err == nil {
			err = provider.Check(&d) // what the router will do with it
		}
		if err != nil {
			s.log.Error("stored model is invalid; skipping it", "id", m.ID, "err", err)
			continue
		}
		deps = append(deps, d)
	}
	s.modelsMu.Lock()
	defer s.modelsMu.Unlock()
	if sig.String() == s.modelsSig {
		return false
	}
	s.dbModels, s.modelsSig = deps, sig.String()
	return true
}

// reloadModels reads the API's models and, when they changed, swaps in a
// router with them; requests in flight keep the router they started with.
func (s *Server) reloadModels(ctx context.Context) error {
	// One reload at a time: a resync that read the models before an API
	// write must not install its stale list after the write's own reload.
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	models, err := s.opts.Store.ListModels(ctx)
	if err != nil {
		return err
	}
	if !s.setDBModels(models) {
		return nil
	}
	rt, err := s.buildRouter(s.cfg.Load())
	if err != nil {
		return err
	}
	s.gw.SetRouter(rt)
	return nil
}

// deployments lists what the router serves, and which came from the API.
func (s *Server) deployments() ([]config.Deployment, func(string) bool) {
	cfg := s.cfg.Load()
	s.modelsMu.Lock()
	db := append([]config.Deployment{}, s.dbModels...)
	s.modelsMu.Unlock()
	ids := map[string]bool{}
	for _, d := range db {
		ids[d.ID] = true
	}
	return append(append([]config.Deployment{}, cfg.Deployments...), db...), func(id string) bool { return ids[id] }
}

// Reload applies a re-read config file (SIGHUP): model_list, agentgateway
// models, router_settings, fallbacks and general_settings.
// pass_through_endpoints take effect for new requests while
// requests in flight finish on the old router. Other settings (keys, budgets,
// limits, the database) need a restart; a reload that changes them logs so.
func (s *Server) Reload(cfg *config.Config) error {
	s.reloadMu.Lock() // not interleaved with a model reload
	defer s.reloadMu.Unlock()
	rt, err := s.buildRouter(cfg)
	if err != nil {
		return err
	}
	if err := s.pass.SetEndpoints(cfg.GeneralSettings.PassThroughEndpoints); err != nil {
		return err
	}
	s.warnShadowedPassThrough()
	old := s.cfg.Swap(cfg)
	s.gw.SetRouter(rt)
	s.gw.SetRouting(cfg.Routing())
	if old.MasterKey() != cfg.MasterKey() || old.DatabaseURL() != cfg.DatabaseURL() || old.RedisURL() != cfg.RedisURL() {
		s.log.Warn("config reloaded: master key, database and redis changes need a restart")
	}
	if !reflect.DeepEqual(old.CustomAuth, cfg.CustomAuth) || !reflect.DeepEqual(old.CustomKeyGenerate, cfg.CustomKeyGenerate) ||
		!reflect.DeepEqual(old.GeneralSettings.TollgatePythonHooks, cfg.GeneralSettings.TollgatePythonHooks) {
		// The hooks (and the python workers) keep running as started.
		s.log.Warn("config reloaded: custom_auth, custom_key_generate and tollgate_python_hooks changes need a restart")
	}
	s.log.Info("config reloaded", "models", len(cfg.Deployments))
	return nil
}

// startPythonHooks starts one pool of python3 workers for the Python
// functions custom_auth and custom_key_generate name (nil when neither
// does). Module paths resolve against the config file's directory, as
// LiteLLM's do.
func startPythonHooks(cfg *config.Config, log *slog.Logger) (*pyhook.Pool, error) {
	var funcs, settings []string
	for _, h := range []struct {
		name string
		spec *config.HookSpec
	}{{"custom_auth", cfg.CustomAuth}, {"custom_key_generate", cfg.CustomKeyGenerate}} {
		if h.spec != nil && h.spec.Python != "" {
			funcs = append(funcs, h.spec.Python)
			settings = append(settings, "general_settings."+h.name)
		}
	}
	if len(funcs) == 0 {
		return nil, nil
	}
	dir := "."
	if cfg.Path != "" {
		dir = filepath.Dir(cfg.Path)
	}
	ph := cfg.GeneralSettings.TollgatePythonHooks
	opts := pyhook.Options{Python: string(ph.Python), Workers: ph.Workers, Dir: dir, Funcs: funcs,
		Setting: strings.Join(settings, " and "), Log: log}
	if ph.Timeout != nil {
		opts.Timeout = time.Duration(*ph.Timeout)
	}
	p, err := pyhook.Start(opts)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	log.Info("python hooks started", "functions", funcs, "workers", len(p.Workers()), "dir", opts.Dir)
	return p, nil
}

// buildHook turns a config hook into a hooks.Hook.
func (s *Server) buildHook(name string, cfg *config.Config, c *config.HookSpec, vars []string) (*hooks.Hook, error) {
	spec := &hooks.Spec{CEL: c.CEL, Mode: c.Mode}
	if c.Python != "" {
		kind := "auth"
		if name == "custom_key_generate" {
			kind = "key_generate"
		}
		spec.Python = &hooks.PythonSpec{Pool: s.pyhooks, Func: c.Python, Kind: kind}
		if ttl := cfg.GeneralSettings.TollgatePythonHooks.CacheTTL; ttl != nil {
			spec.Python.CacheTTL = time.Duration(*ttl)
		}
	}
	if w := c.Webhook; w != nil {
		spec.Webhook = &hooks.WebhookSpec{URL: string(w.URL), Headers: map[string]string{}}
		if w.Timeout != nil {
			spec.Webhook.Timeout = time.Duration(*w.Timeout)
		}
		if w.CacheTTL != nil {
			spec.Webhook.CacheTTL = time.Duration(*w.CacheTTL)
		}
		for k, v := range w.Headers {
			spec.Webhook.Headers[k] = string(v)
		}
	}
	h, err := hooks.New("general_settings."+name, spec, vars...)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return h, nil
}

// newLimits builds the rate limiter: shared on Redis when a redis_url is
// configured (Options.RedisPrefix namespaces its keys), else in process.
// Whether Redis answers is the runner's to say; Serve starts it.
func newLimits(cfg *config.Config, opts Options, c *rscript.Runner, m *metrics.Metrics) *gateway.RateLimits {
	var rd *ratelimit.Redis
	if c != nil {
		rd = ratelimit.NewRedis(c, opts.RedisPrefix)
		if opts.RedisLeaseTTL > 0 {
			rd.LeaseTTL = opts.RedisLeaseTTL
		}
		if opts.RedisHoldTimeout > 0 {
			// a rate-limit admission alone waits as long as one fused
			// with a budget hold (the same script's part)
			rd.AdmitTimeout = opts.RedisHoldTimeout
		}
	}
	return &gateway.RateLimits{Limiter: ratelimit.New(rd), GlobalParallel: cfg.GlobalMaxParallelRequests(), Buckets: cfg.LocalRateLimits,
		OnRefused: func(d *ratelimit.Denied) { m.RateLimited(d.Rule.Scope.Entity, d.Rule.Name) }}
}

// keyMiss looks up, in the store, a key missing from the snapshot, so that
// a key created on another replica works here at once instead of after the
// next resync. Keys found missing are remembered for a second, so a client
// retrying an invalid key costs one query per second, not one per request.
func (s *Server) keyMiss(ctx context.Context, hash string) (bool, error) {
	now := time.Now()
	s.missMu.Lock()
	if until, ok := s.missed[hash]; ok && now.Before(until) {
		s.missMu.Unlock()
		return false, nil
	}
	s.missMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	read := time.Now() // what the row tells is as of here (PutKeyRead)
	k, err := s.opts.Store.GetKey(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		s.missMu.Lock()
		if len(s.missed) > 10000 {
			clear(s.missed) // bounded: a flood of random keys cannot grow it
		}
		s.missed[hash] = now.Add(time.Second)
		s.missMu.Unlock()
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// The key may have been made after end users this replica does not
	// have yet: its requests look for a missing end user in the store
	// (endUserMiss) until a resync started after this read completes, and
	// look again for those this replica looked for and did not find (a new
	// generation), so that an end user reaches here no later than a key
	// made after it. Both before the key is in the snapshot, where a
	// request may find it at once.
	s.endGen.Add(1)
	s.markFresh(hash)
	if err := s.keyDeps(ctx, k); err != nil {
		return false, err
	}
	s.snap.PutKeyRead(k, read)
	return true, nil
}

// keyDeps puts in the snapshot what k's limits come from when the snapshot
// lacks it (made on another replica since this one's last resync): k's
// user, its team, the budget object the user's membership of that team
// names, the team's organization with its budget, and k's own budget
// object. Without them k's requests would skip those budgets and blocks
// until the next resync. A user or team the store lacks is no error; a
// store error on a team, organization or budget is.
func (s *Server) keyDeps(ctx context.Context, k *store.Key) error {
	var err error
	if k.UserID != "" {
		if _, ok := s.snap.User(k.UserID); !ok {
			if u, err := s.opts.Store.GetUser(ctx, k.UserID); err == nil {
				s.snap.PutUser(u)
			}
		}
	}
	if k.TeamID != "" {
		t, ok := s.snap.Team(k.TeamID)
		if !ok {
			t, err = s.opts.Store.GetTeam(ctx, k.TeamID)
			switch {
			case err == nil:
				s.snap.PutTeam(t)
			case !errors.Is(err, store.ErrNotFound):
				// Without its team the key would skip the team's block and budget.
				return err
			}
		}
		// The budget object the key's user's membership names, and the
		// team's organization with its budget, may not have come with a
		// resync yet either: without them the key's requests would skip
		// the member's or the organization's budget.
		if t != nil && k.UserID != "" {
			for _, m := range t.Members {
				if m.UserID == k.UserID {
					if err := s.missBudget(ctx, m.BudgetID); err != nil {
						return err
					}
				}
			}
		}
		if t != nil && t.OrganizationID != "" {
			if _, ok := s.snap.Organization(t.OrganizationID); !ok {
				o, err := s.opts.Store.GetOrganization(ctx, t.OrganizationID)
				switch {
				case err == nil:
					if err := s.missBudget(ctx, o.BudgetID); err != nil {
						return err
					}
					s.snap.PutOrganization(o)
				case !errors.Is(err, store.ErrNotFound):
					return err
				}
			}
		}
	}
	// A key naming a budget object (budget_id) takes its max_budget,
	// limits and period from it: put without it, the key would be served
	// unbudgeted until a resync brought the budget, its spend held on no
	// shared account (TestKeyMissBringsItsBudget).
	return s.missBudget(ctx, k.BudgetID)
}

// missBudget puts the budget object id in the snapshot, read from the
// store, when the snapshot does not have it (a record read through a miss
// path names it before a resync brought it). A budget the store does not
// have is no error: what names it keeps its own limits, as the snapshot
// does for a budget deleted.
func (s *Server) missBudget(ctx context.Context, id string) error {
	if id == "" {
		return nil
	}
	if _, ok := s.snap.Budget(id); ok {
		return nil
	}
	b, err := s.opts.Store.GetBudget(ctx, id)
	switch {
	case err == nil:
		s.snap.PutBudget(b)
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	return nil
}

// maxEndUserMisses bounds the end user ids remembered missing: past it
// they are all forgotten (each costs one store read again).
const maxEndUserMisses = 50_000

// markFresh records that the key hash was read through keyMiss, after
// the resyncs started so far.
func (s *Server) markFresh(hash string) {
	seq := s.resyncSeq.Load()
	s.freshMu.Lock()
	if _, ok := s.fresh[hash]; !ok {
		s.freshN.Add(1)
	}
	s.fresh[hash] = seq
	s.freshMu.Unlock()
}

// keyMade marks a key made on this replica's management API as newer
// than the end users its snapshot lacks, as keyMiss does for a key read
// from the store: an end user made on another replica before it is read
// on the key's first request, not served as a new one until the next
// resync.
//
// What the key's limits come from is read too when this replica lacks it
// (keyDeps): a key made here naming a team, organization or budget made on
// another replica moments before was served without them until the next
// resync (TestKeyMadeWithTeamFromAnotherReplica).
func (s *Server) keyMade(ctx context.Context, k *store.Key) {
	s.endGen.Add(1)
	s.markFresh(k.TokenHash)
	if err := s.keyDeps(ctx, k); err != nil {
		s.log.Warn("a key made here is served without some of what its limits come from until the next resync", "err", err)
	}
}

// loadStarted marks every key the start's load reads as newer than the
// snapshot's end users (loadFresh), before the load reads any.
func (s *Server) loadStarted() {
	s.freshMu.Lock()
	if !s.loadFresh {
		s.loadFresh = true
		s.freshN.Add(1)
	}
	s.freshMu.Unlock()
}

// loadEnded records the resyncs started when the start's load ended (the
// next one to complete has read every end user made before those keys)
// and asks for that resync now rather than a resync interval later.
func (s *Server) loadEnded() {
	s.freshMu.Lock()
	s.loadSeq, s.loadDone = s.resyncSeq.Load(), true
	s.freshMu.Unlock()
	select {
	case s.resyncKick <- struct{}{}:
	default:
	}
}

// resyncCompleted forgets the keys read through keyMiss before the resync
// numbered seq started: that resync read every end user made before them.
// The map holds only keys the store has, read since the last completed
// resync, so it needs no other bound. The start's load is forgotten alike
// once a resync started after it ended completes.
func (s *Server) resyncCompleted(seq uint64) {
	s.resyncDone.Store(seq)
	if s.freshN.Load() == 0 {
		return
	}
	s.freshMu.Lock()
	for h, at := range s.fresh {
		if at < seq {
			delete(s.fresh, h)
		}
	}
	if s.loadFresh && s.loadDone && s.loadSeq < seq {
		s.loadFresh = false
	}
	n := int64(len(s.fresh))
	if s.loadFresh {
		n++
	}
	s.freshN.Store(n)
	s.freshMu.Unlock()
}

// keyNewer reports whether the key hash was read through keyMiss and no
// resync started after that has completed, or the start's load of every
// key has not been followed by a resync yet (loadFresh): the key may be
// newer than end users this replica's snapshot lacks.
func (s *Server) keyNewer(hash string) bool {
	if s.freshN.Load() == 0 {
		return false // the steady state: one atomic load
	}
	s.freshMu.Lock()
	at, ok := s.fresh[hash]
	loading := s.loadFresh
	s.freshMu.Unlock()
	return loading || ok && at >= s.resyncDone.Load()
}

// endUserMiss looks up, in the store, an end user missing from the
// snapshot that a request names with a key newer than the snapshot
// (keyNewer: read through keyMiss since the last completed resync), so
// that an end user created on another replica before that key is held to
// its budget here on the key's first request (Authenticator.EndUser). For
// any other key it reads nothing and answers "no": a missing end user is
// a new one (LiteLLM's come into being with their first request), and one
// created on another replica arrives with the next resync. No database
// round trip on the request path in the steady state, whatever `user`
// values clients send.
//
// Within the gated case an id the store does not have is remembered and
// not read again: until the id arrives through a resync (the snapshot
// answers before this is asked), or until another key is read through
// keyMiss, which starts a new generation: that key may be newer than the
// end user, and must not find it missing. A store that does not answer
// is a "no", remembered the same way.
func (s *Server) endUserMiss(ctx context.Context, keyHash, id string) bool {
	if !s.keyNewer(keyHash) {
		return false
	}
	gen := s.endGen.Load()
	if g, ok := s.endMissed.Load(id); ok && g.(uint64) == gen {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	e, err := s.opts.Store.GetEndUser(ctx, id)
	if err != nil {
		// Not found, or not answered (a store that hangs before the
		// resync notices must not cost every request naming the id a
		// wait): remembered alike. Either way an end user the store has
		// comes with the next resync that reads it.
		if s.endMissedN.Add(1) > maxEndUserMisses {
			s.endMissed.Clear()
			s.endMissedN.Store(1)
		}
		// Stamped with the generation read before the store was asked: a
		// key read meanwhile makes the entry stale at once.
		s.endMissed.Store(id, gen)
		return false
	}
	_ = s.missBudget(ctx, e.BudgetID) // not answered: the end user keeps its own limits until a resync
	s.snap.PutEndUser(e)
	s.endMissed.Delete(id)
	return true
}

// successCallbacks names, in config order, the callbacks of callbacks and
// success_callback that are served here: the dispatcher's sinks that take
// successes, the tracer's names when it runs, and prometheus (/metrics).
func successCallbacks(cfg *config.Config, cbs *callback.Dispatcher, traced bool) []string {
	out := []string{}
	var sinks []string
	if cbs != nil {
		sinks = cbs.SuccessNames()
	}
	ls := cfg.LiteLLMSettings
	for _, n := range slices.Concat(ls.Callbacks, ls.SuccessCallback) {
		n = strings.TrimSpace(n)
		served := slices.Contains(sinks, n) || slices.Contains(config.MetricsCallbacks, n) ||
			traced && (slices.Contains(config.OTelCallbacks, n) || slices.Contains(config.LangfuseCallbacks, n))
		if served && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}
