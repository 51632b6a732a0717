// Command select is a data job in Go: -clients pgx connections (one goroutine each) running
// pgbench's select-only statement with a random account for -seconds, reached at a local TCP
// port (direct, or an external tunnel) or in-process through sdm.Session.DialContext as pgx's
// DialFunc (-resource, token in SDM_SERVICE_TOKEN). Section H of the benchmark runs it on every
// path; the same job exists in Rust (sdm-load job) and Python (bench/job/job.py). Prints one
// JSON line.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/sdm-dev/sdm/go/sdm"
)

const selectAccount = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"

func cpuSeconds() float64 {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		return 0
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano()).Seconds()
}

func main() {
	port := flag.Int("port", 0, "a local TCP port that leads to PostgreSQL")
	resource := flag.String("resource", "", "an sdm resource, reached in-process")
	clients := flag.Int("clients", 8, "connections, one goroutine each")
	seconds := flag.Float64("seconds", 15, "how long to run")
	accounts := flag.Int("accounts", 100000, "rows of pgbench_accounts")
	user := flag.String("user", "postgres", "database user")
	dbname := flag.String("dbname", "bench", "database")
	flag.Parse()
	if (*port == 0) == (*resource == "") || *clients < 1 || *clients > 64 ||
		*seconds <= 0 || *seconds > 600 || *accounts < 1 {
		fail(fmt.Errorf("give one of -port or -resource, -clients 1 to 64, -seconds at most 600"))
	}
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable connect_timeout=10",
		max(*port, 1), *user, *dbname))
	if err != nil {
		fail(err)
	}
	start := time.Now()
	if *resource != "" {
		session, err := sdm.LoginFromEnv()
		if err != nil {
			fail(err)
		}
		defer session.Close()
		cfg.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return session.DialContext(ctx, *resource)
		}
	}
	conns := make([]*pgx.Conn, *clients)
	for i := range conns {
		if conns[i], err = pgx.ConnectConfig(ctx, cfg); err != nil {
			fail(err)
		}
		defer conns[i].Close(ctx)
	}
	setupMs := float64(time.Since(start).Microseconds()) / 1e3

	var stop atomic.Bool
	var done atomic.Int64
	errs := make(chan error, *clients)
	var wg sync.WaitGroup
	cpu0 := cpuSeconds()
	started := time.Now()
	for i, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			var balance int32
			for !stop.Load() {
				aid := rng.IntN(*accounts) + 1
				if err := conn.QueryRow(ctx, selectAccount, aid).Scan(&balance); err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		}()
	}
	time.Sleep(time.Duration(*seconds * float64(time.Second)))
	stop.Store(true)
	elapsed := time.Since(started).Seconds()
	n := done.Load()
	cpu := cpuSeconds() - cpu0
	wg.Wait()
	select {
	case err := <-errs:
		fail(err)
	default:
	}
	perTxn := 0.0
	if n > 0 {
		perTxn = cpu * 1e6 / float64(n)
	}
	out, _ := json.Marshal(map[string]any{"tps": float64(n) / elapsed, "transactions": n,
		"seconds": elapsed, "clients": *clients, "cpu_s": cpu, "cpu_us_per_txn": perTxn,
		"setup_ms": setupMs})
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "job failed:", err)
	os.Exit(1)
}
