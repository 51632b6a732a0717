package sdm_test

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sdm-dev/sdm/go/sdm"
)

func TestDialContext(t *testing.T) {
	s := login(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := s.DialContext(ctx, "server-echo")
	if err != nil {
		t.Fatalf("DialContext: %v", err)
	}
	echo(t, conn, "with a context")
	conn.Close()

	// A context that has ended: its error, and nothing dialled.
	expired, cancelExpired := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelExpired()
	if _, err := s.DialContext(expired, "server-echo"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("expired deadline: %v", err)
	}
	cancelled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if _, err := s.ConnectContext(cancelled, "server-echo", sdm.ConnectOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	// libsdm's own errors come through unchanged.
	if _, err := s.DialContext(ctx, "echo"); !errors.Is(err, sdm.ErrAmbiguousResource) {
		t.Errorf("ambiguous name: %v", err)
	}
}

// Cancelling while connects are under way: each call returns either its tunnel or the
// context's error, and no tunnel is left open behind a cancelled call (run with -race).
func TestConnectContextCancelledMidway(t *testing.T) {
	s := login(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	results := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tunnel, err := s.ConnectContext(ctx, "server-echo", sdm.ConnectOptions{SameUserOnly: true})
			if err == nil {
				conn, derr := net.DialTimeout("tcp", tunnel.Addr(), 15*time.Second)
				if derr == nil {
					conn.Close()
				}
				tunnel.Close()
			}
			results <- err
		}()
	}
	cancel()
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("ConnectContext: %v", err)
		}
	}
	// Whatever the cancelled calls opened late is closed again.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := s.Status()
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		open := 0
		for _, r := range st.Resources {
			if r.Connected {
				open++
			}
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tunnels left open after cancelled connects", open)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// database/sql through the registered driver: sql.Open("sdm-postgres", ...).
func TestRegisterDriver(t *testing.T) {
	s := login(t)
	sdm.RegisterDriver(s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, dsn := range []string{
		"resource=pgsql user=" + fx.pgUser + " password=" + fx.pgPassword + " dbname=" + fx.pgDB,
		"postgres://" + fx.pgUser + ":" + fx.pgPassword + "@ignored/" + fx.pgDB + "?resource=pgsql",
	} {
		db, err := sql.Open(sdm.DriverName, dsn)
		if err != nil {
			t.Fatalf("sql.Open: %v", err)
		}
		var got string
		if err := db.QueryRowContext(ctx, "SELECT 'via the driver ' || current_database()").Scan(&got); err != nil {
			t.Fatalf("query (%s): %v", strings.SplitN(dsn, " ", 2)[0], err)
		}
		if got != "via the driver "+fx.pgDB {
			t.Errorf("got %q", got)
		}
		db.Close()
	}
	db, err := sql.Open(sdm.DriverName, "user=x dbname=y")
	if err == nil {
		err = db.PingContext(ctx)
		db.Close()
	}
	if !errors.Is(err, sdm.ErrInvalidArgument) || !strings.Contains(err.Error(), "resource=NAME") {
		t.Errorf("no resource: %v", err)
	}
}

// pgx itself with DialContext as its DialFunc: a cancelled context stops the connect.
func TestPgxDialFunc(t *testing.T) {
	s := login(t)
	cfg, err := pgx.ParseConfig(dsn("pgsql.invalid", 5432))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return s.DialContext(ctx, "pgsql")
	}
	cfg.LookupFunc = func(_ context.Context, host string) ([]string, error) { return []string{host}, nil }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgx.ConnectConfig: %v", err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1: %d %v", one, err)
	}
	conn.Close(ctx)
	cancelled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if _, err := pgx.ConnectConfig(cancelled, cfg); err == nil {
		t.Error("connected with a cancelled context")
	}
}
