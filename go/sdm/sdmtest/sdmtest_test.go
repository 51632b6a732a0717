package sdmtest_test

import (
	"database/sql"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/sdm-dev/sdm/go/sdm"
	"github.com/sdm-dev/sdm/go/sdm/internal/fixture"
	"github.com/sdm-dev/sdm/go/sdm/sdmtest"
)

// upstreams starts target/release/sdm-fixture for its PostgreSQL (password authentication) and
// echo server, the test's "own" database and service; it points sdmtest at the release binaries
// of this checkout unless SDM_SERVER_BIN/SDM_BIN say otherwise.
func upstreams(t *testing.T) (pgURL, echoURL string) {
	t.Helper()
	release := fixture.ReleaseDir()
	for env, name := range map[string]string{"SDM_SERVER_BIN": "sdm-server", "SDM_BIN": "sdm"} {
		if os.Getenv(env) == "" {
			t.Setenv(env, filepath.Join(release, name))
		}
	}
	var d struct {
		EchoPort int `json:"echo_port"`
		PG       struct {
			Host, User, Password, Dbname string
			Port                         int
		} `json:"pg"`
	}
	f, err := fixture.Start(&d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	pgURL = fmt.Sprintf("postgresql://%s:%s@%s:%d/%s", d.PG.User, d.PG.Password, d.PG.Host,
		d.PG.Port, d.PG.Dbname)
	return pgURL, fmt.Sprintf("tcp://127.0.0.1:%d", d.EchoPort)
}

func TestATokenReachesTheDatabaseWithoutAPassword(t *testing.T) {
	pgURL, _ := upstreams(t)
	inst := sdmtest.Start(t, pgURL, "pgsql")
	session, err := sdm.Login(inst.NewToken(t))
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	tunnel, err := session.Connect("pgsql")
	if err != nil {
		t.Fatal(err)
	}
	defer tunnel.Close()
	db, err := sql.Open("pgx", fmt.Sprintf("host=%s port=%d user=anyone dbname=postgres "+
		"sslmode=disable", tunnel.Host(), tunnel.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var answer int
	if err := db.QueryRow("select 6 * 7").Scan(&answer); err != nil {
		t.Fatal(err)
	}
	if answer != 42 {
		t.Fatalf("select 6 * 7 = %d", answer)
	}
}

func TestTokensAreAccountsAndGrantsAreOptional(t *testing.T) {
	_, echoURL := upstreams(t)
	inst := sdmtest.Start(t, echoURL, "echo")
	granted, err := sdm.Login(inst.NewToken(t))
	if err != nil {
		t.Fatal(err)
	}
	defer granted.Close()
	resources, err := granted.ListResources()
	if err != nil || len(resources) != 1 || resources[0].Name != "echo" {
		t.Fatalf("resources %v, %v; want [echo]", resources, err)
	}
	tunnel, err := granted.Connect("echo")
	if err != nil {
		t.Fatal(err)
	}
	defer tunnel.Close()
	conn, err := net.DialTimeout("tcp", tunnel.Addr(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	answer := make([]byte, 4)
	if _, err := io.ReadFull(conn, answer); err != nil || string(answer) != "ping" {
		t.Fatalf("echo answered %q, %v", answer, err)
	}

	ungranted, err := sdm.Login(inst.NewTokenWithoutGrant(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ungranted.Close()
	if resources, err := ungranted.ListResources(); err != nil || len(resources) != 0 {
		t.Fatalf("an account without the grant sees %v, %v", resources, err)
	}
	if granted.Account() == ungranted.Account() {
		t.Fatalf("two tokens of one account %q", granted.Account())
	}
}

func TestAFailingAdminCommandSaysWhy(t *testing.T) {
	_, echoURL := upstreams(t)
	inst := sdmtest.Start(t, echoURL, "echo")
	_, err := inst.Admin("", "grant", "nobody", "echo")
	if err == nil || !strings.Contains(err.Error(), `sdm admin grant nobody echo: no account is named "nobody"`) {
		t.Fatalf("err = %v", err)
	}
}
