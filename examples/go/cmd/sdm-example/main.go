// Command sdm-example logs in with the token in SDM_SERVICE_TOKEN (or SDM_ADMIN_TOKEN), lists
// the granted resources, opens a tunnel to one and runs a query through it with database/sql
// and the pgx driver; then runs the same query over an in-process Dial, with no listener.
//
//	SDM_SERVICE_TOKEN=sdm_svc_… PGUSER=app PGPASSWORD=… go run ./cmd/sdm-example pgsql
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/sdm-dev/sdm/go/sdm"
)

func main() {
	target := "pgsql"
	if len(os.Args) > 1 {
		target = os.Args[1]
	}
	if err := run(target); err != nil {
		var e *sdm.Error
		if errors.As(err, &e) && e.Retryable {
			log.Fatalf("%v (retryable)", err)
		}
		log.Fatal(err)
	}
}

func run(target string) error {
	session, err := sdm.LoginFromEnv()
	if err != nil {
		return err
	}
	defer session.Close()
	fmt.Printf("logged in as %s (libsdm %s)\n", session.Account(), sdm.Version())

	resources, err := session.ListResources()
	if err != nil {
		return err
	}
	for _, r := range resources {
		fmt.Printf("  %-20s %s\n", r.Name, r.Kind)
	}

	tunnel, err := session.Connect(target)
	if errors.Is(err, sdm.ErrAmbiguousResource) {
		return fmt.Errorf("%q is ambiguous; say which: %w", target, err)
	} else if err != nil {
		return err
	}
	defer tunnel.Close()
	fmt.Printf("tunnel to %s at %s\n", tunnel.Resource(), tunnel.Addr())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// libpq-style settings (user, password, database) come from PGUSER, PGPASSWORD, PGDATABASE.
	dsn := fmt.Sprintf("host=%s port=%d sslmode=disable", tunnel.Host(), tunnel.Port())
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	var version string
	if err := db.QueryRowContext(ctx, "SELECT version()").Scan(&version); err != nil {
		return fmt.Errorf("query through the tunnel: %w", err)
	}
	fmt.Printf("through the tunnel: %s\n", version)

	// The same without a listener: pgx dials through sdm inside this process.
	cfg, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return err
	}
	cfg.DialFunc = func(context.Context, string, string) (net.Conn, error) { return session.Dial(target) }
	dialed := stdlib.OpenDB(*cfg)
	defer dialed.Close()
	var one int
	if err := dialed.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("query over Dial: %w", err)
	}
	fmt.Printf("over Dial: SELECT 1 = %d\n", one)
	return session.Logout()
}
