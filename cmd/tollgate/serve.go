package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/jsonlog"
	"github.com/tollgate/tollgate/internal/lifecycle"
	"github.com/tollgate/tollgate/internal/memlimit"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/server"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/dynamostore"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

func version() string {
	v := server.Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += "+" + s.Value[:12]
			}
		}
	}
	return v
}

func newLogger(format string, out io.Writer) *slog.Logger {
	if format == "text" {
		return slog.New(slog.NewTextHandler(out, nil))
	}
	return slog.New(jsonlog.New(out)) // slog's JSON handler, with the request line's fast path
}

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	cfgPath := fs.String("config", os.Getenv("TOLLGATE_CONFIG"), "config file (LiteLLM or agentgateway YAML); none: the embedded demo config")
	fs.StringVar(cfgPath, "f", *cfgPath, "the config file, as agentgateway's -f (same as --config)")
	fs.StringVar(cfgPath, "file", *cfgPath, "the config file, as agentgateway's --file (same as --config)")
	port := fs.Int("port", defaultPort, "port to listen on (default: the config's llm.port or binds[0].port, else 4000)")
	host := fs.String("host", "", "address to listen on (default: 0.0.0.0 when every request needs a key, 127.0.0.1 when the gateway serves requests without one)")
	logFormat := fs.String("log-format", "json", "log format: json or text")
	drain := fs.Duration("shutdown-timeout", 30*time.Second, "how long SIGTERM waits for requests in flight")
	leaseTTL := fs.Duration("redis-lease-ttl", 15*time.Minute, "how long a Redis lease (budget hold, allotment, parallel slot) outlives a replica that crashed holding it; a live replica renews its requests' holds and slots every quarter lease while they run")
	_ = fs.Parse(args)
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "tollgate serve: unexpected argument %q (the config file goes after -f or --config)\n", fs.Arg(0))
		os.Exit(2)
	}
	if *leaseTTL < time.Second {
		fmt.Fprintf(os.Stderr, "tollgate serve: --redis-lease-ttl %v: use 1s or more\n", *leaseTTL)
		os.Exit(2)
	}
	portSet := false
	fs.Visit(func(f *flag.Flag) { portSet = portSet || f.Name == "port" })
	logOut := newLogWriter(os.Stderr)
	defer logOut.Close()
	log := newLogger(*logFormat, logOut)
	server.Version = version()

	cfg := config.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = config.Load(*cfgPath); err != nil {
			return err
		}
	}
	for _, w := range cfg.Warnings {
		log.Warn("config", "warning", w)
	}
	// The soft memory limit, before anything large is allocated and before
	// the server's shedder reads it: GOMEMLIMIT, else
	// general_settings.memory_limit, else 90 % of the cgroup's limit.
	if limit, src, err := memlimit.Apply(os.Getenv, cfg.GeneralSettings.MemoryLimit, os.DirFS("/")); err != nil {
		return err
	} else if src != memlimit.None && limit != math.MaxInt64 {
		log.Info("soft memory limit", "bytes", limit, "from", string(src))
	}
	// The collector's headroom after each collection: max(12 MiB, half
	// the live heap, 32 MiB − the live heap) instead of GOGC=100's whole
	// live heap, unless the operator set GOGC, GOMEMLIMIT or memory_limit.
	if memlimit.HeadroomApplies(os.Getenv, cfg.GeneralSettings.MemoryLimit) {
		defer memlimit.Headroom()()
		log.Info("collector headroom", "floor_bytes", memlimit.HeadroomFloor, "fraction_of_live_heap", memlimit.HeadroomFraction, "min_goal_bytes", memlimit.HeadroomMinGoal)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	log.Info("store ready", "engine", st.Engine())
	srv, err := server.New(cfg, server.Options{Logger: log, ShutdownTimeout: *drain, Store: st, ShedOnCPU: true, ReleaseStartPages: true, RedisLeaseTTL: *leaseTTL})
	if err != nil {
		return err
	}
	defer srv.Close() // when Serve is not reached; it closes the server itself
	master := cfg.MasterKey()
	if *host == "" {
		*host = "0.0.0.0"
		if accessOf(cfg, master).served() {
			*host = "127.0.0.1"
		}
	}
	addr := net.JoinHostPort(*host, strconv.Itoa(listenPort(cfg, *port, portSet)))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// SIGHUP is caught from here on (its default would end the process);
	// the reload actor acts on it once the server runs.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	more := []lifecycle.Actor{{Name: "reload", Run: func(ctx context.Context) error {
		reloadOnHangup(ctx, hup, srv, *cfgPath, log)
		return nil
	}}}
	// LiteLLM's SEPARATE_HEALTH_APP=1: the health routes and /metrics also
	// on a port of their own (SEPARATE_HEALTH_PORT, default 4001), never
	// bounded at accept nor shed (docs/performance.md, Overload).
	if os.Getenv("SEPARATE_HEALTH_APP") == "1" {
		hport := os.Getenv("SEPARATE_HEALTH_PORT")
		if hport == "" {
			hport = "4001"
		}
		hln, err := net.Listen("tcp", net.JoinHostPort(*host, hport))
		if err != nil {
			ln.Close()
			return fmt.Errorf("SEPARATE_HEALTH_APP: %w", err)
		}
		log.Info("health listening", "addr", hln.Addr().String())
		more = append(more, srv.HealthActor(hln))
	}
	if addr := os.Getenv("TOLLGATE_PPROF_ADDR"); addr != "" {
		more = append(more, pprofActor(addr, log))
	}
	log.Info("tollgate listening", "addr", ln.Addr().String(), "version", server.Version, "config", *cfgPath, "models", len(cfg.Deployments))
	fmt.Fprint(os.Stderr, banner(cfg, master, ln.Addr().String(), server.Version))
	return srv.Serve(ctx, ln, more...)
}

// pprofActor serves Go's profiler on its own listener (keep it on
// loopback: go tool pprof http://ADDR/debug/pprof/profile). A listener
// that cannot be opened is reported and the gateway serves without it.
func pprofActor(addr string, log *slog.Logger) lifecycle.Actor {
	var ln net.Listener
	return lifecycle.Actor{
		Name: "pprof",
		Start: func(context.Context) error {
			var err error
			if ln, err = net.Listen("tcp", addr); err != nil {
				log.Warn("pprof listener not started", "addr", addr, "err", err)
			}
			return nil
		},
		Run: func(ctx context.Context) error {
			if ln == nil {
				<-ctx.Done()
				return nil
			}
			srv := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-ctx.Done()
				_ = srv.Close() // profiles in progress are cut; nothing to drain
			}()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				log.Warn("pprof listener stopped", "err", err)
				<-ctx.Done() // the gateway keeps serving without it
			}
			return nil
		},
	}
}

// reloadOnHangup re-reads the config file on each SIGHUP (hup) and applies
// it; a file that does not load is reported and the running config kept.
func reloadOnHangup(ctx context.Context, hup <-chan os.Signal, srv *server.Server, path string, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if path == "" {
			log.Warn("SIGHUP: no config file to reload (serving the embedded default)")
			continue
		}
		cfg, err := config.Load(path)
		if err == nil {
			err = srv.Reload(cfg)
		}
		if err != nil {
			log.Error("config reload failed; keeping the running config", "err", err)
			continue
		}
		for _, w := range cfg.Warnings {
			log.Warn("config", "warning", w)
		}
	}
}

const defaultPort = 4000

// listenPort is --port when given, else the port the config file asks for
// (agentgateway's llm.port or binds[0].port), else 4000.
func listenPort(cfg *config.Config, flagPort int, flagSet bool) int {
	if !flagSet && cfg.ListenPort != 0 {
		return cfg.ListenPort
	}
	return flagPort
}

// engineStore is a store that names its engine.
type engineStore interface {
	store.Store
	Engine() string
}

// openStore opens the store general_settings names: DynamoDB for
// database_type "dynamo_db" (tables from database_args, created when
// missing), else database_url (or DATABASE_URL), else the embedded SQLite
// file ./tollgate.db, migrated.
func openStore(ctx context.Context, cfg *config.Config) (engineStore, error) {
	switch cfg.GeneralSettings.DatabaseType {
	case "", "postgres", "sqlite":
	case "dynamo_db":
		st, err := dynamostore.Open(ctx, dynamoOptions(cfg.GeneralSettings.DatabaseArgs))
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		return st, nil
	default:
		return nil, fmt.Errorf("general_settings.database_type %q is not supported; use PostgreSQL (database_url), dynamo_db (database_args) or the default SQLite", cfg.GeneralSettings.DatabaseType)
	}
	url := cfg.DatabaseURL()
	if url == "" {
		url = "tollgate.db"
	}
	st, err := sqlstore.Open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return st, nil
}

// dynamoOptions are database_args as the DynamoDB store takes them.
func dynamoOptions(a *config.DatabaseArgs) dynamostore.Options {
	if a == nil {
		return dynamostore.Options{}
	}
	return dynamostore.Options{
		BillingMode: a.BillingMode, ReadCapacityUnits: deref(a.ReadCapacityUnits), WriteCapacityUnits: deref(a.WriteCapacityUnits),
		Region: string(a.RegionName), SSLVerify: a.SSLVerify, Endpoint: string(a.EndpointURL),
		UserTable: a.UserTableName, KeyTable: a.KeyTableName, ConfigTable: a.ConfigTableName, SpendTable: a.SpendTableName,
	}
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

func runMigrate(args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ExitOnError)
	cfgPath := fs.String("config", os.Getenv("TOLLGATE_CONFIG"), "config file naming database_url; none: DATABASE_URL, else ./tollgate.db")
	_ = fs.Parse(args)
	cfg := config.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = config.Load(*cfgPath); err != nil {
			return err
		}
	}
	st, err := openStore(context.Background(), cfg)
	if err != nil {
		return err
	}
	fmt.Printf("migrated %s store\n", st.Engine())
	return st.Close()
}

func runMockUpstream(args []string) error {
	fs := flag.NewFlagSet("mock-upstream", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	delay := fs.Duration("delay", 0, "delay before response headers")
	chunkDelay := fs.Duration("chunk-delay", 0, "delay between stream chunks")
	chunks := fs.Int("chunks", 5, "content chunks per stream")
	failStatus := fs.Int("fail-status", 0, "answer every request with this HTTP status")
	logFormat := fs.String("log-format", "json", "log format: json or text")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return mockupstream.ListenAndServe(ctx, *addr, mockupstream.Options{
		Delay: *delay, ChunkDelay: *chunkDelay, Chunks: *chunks, FailStatus: *failStatus, NoRecord: true,
	}, newLogger(*logFormat, os.Stderr))
}
