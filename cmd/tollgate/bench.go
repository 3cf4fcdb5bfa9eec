package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/bench"
)

func runBench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	scenarios := fs.String("scenarios", "plain,governed", "comma-separated: plain, governed (SQLite), governed-pg (PostgreSQL + Redis)")
	loads := fs.String("loads", "closed:50,rate:500,rate:2000", "comma-separated: closed:N connections or rate:R requests/s")
	stream := fs.Bool("stream", false, "streaming requests")
	both := fs.Bool("both", false, "run non-streaming and streaming")
	duration := fs.Duration("duration", 5*time.Second, "length of each run")
	rounds := fs.Int("rounds", 3, "direct/gateway run pairs per load (medians are reported)")
	pg := fs.String("pg", os.Getenv("TOLLGATE_TEST_POSTGRES_URL"), "PostgreSQL URL for governed-pg")
	redis := fs.String("redis", os.Getenv("TOLLGATE_TEST_REDIS_URL"), "Redis URL for governed-pg")
	smoke := fs.Bool("smoke", false, "a few seconds of everything, to prove the harness works (no timing meaning)")
	_ = fs.Parse(args)
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	o := bench.Options{Bin: bin, Scenarios: strings.Split(*scenarios, ","), Loads: strings.Split(*loads, ","), Stream: *stream,
		Duration: *duration, Rounds: *rounds, PGURL: *pg, RedisURL: *redis, Out: os.Stdout}
	if *smoke {
		o.Loads, o.Duration, o.Rounds = []string{"closed:4", "rate:100"}, 500*time.Millisecond, 1
	}
	fmt.Println(bench.Header)
	modes := []bool{o.Stream}
	if *both {
		modes = []bool{false, true}
	}
	for _, s := range modes {
		o.Stream = s
		results, err := bench.Run(o)
		if err != nil {
			return err
		}
		for _, r := range results {
			if r.GatewayRPS == 0 {
				return fmt.Errorf("%s %s: the gateway answered nothing", r.Scenario, r.Load)
			}
		}
	}
	return nil
}
