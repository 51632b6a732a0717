package sdm_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/sdm-dev/sdm/go/sdm"
	"github.com/sdm-dev/sdm/go/sdm/internal/fixture"
)

// The fixture: an sdm-server, a PostgreSQL and an echo server with account "etl". The suite
// script (scripts/suites/10-c-and-go.sh) starts one and passes it in SDM_TEST_* variables;
// without them TestMain starts target/release/sdm-fixture itself.
var fx struct {
	token, apiURL, unknownToken, unreachableToken string
	pgUser, pgPassword, pgDB                      string
}

func TestMain(m *testing.M) {
	stop, err := setupFixture()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdm tests:", err)
		os.Exit(2)
	}
	code := m.Run()
	stop()
	os.Exit(code)
}

func setupFixture() (stop func(), err error) {
	if os.Getenv("SDM_TEST_TOKEN") != "" {
		fx.token = os.Getenv("SDM_TEST_TOKEN")
		fx.apiURL = os.Getenv("SDM_TEST_API_URL")
		fx.unknownToken = os.Getenv("SDM_TEST_UNKNOWN_TOKEN")
		fx.unreachableToken = os.Getenv("SDM_TEST_UNREACHABLE_TOKEN")
		fx.pgUser = os.Getenv("SDM_TEST_PG_USER")
		fx.pgPassword = os.Getenv("SDM_TEST_PG_PASSWORD")
		fx.pgDB = os.Getenv("SDM_TEST_PG_DBNAME")
		return func() {}, nil
	}
	var d struct {
		Token            string `json:"token"`
		APIURL           string `json:"api_url"`
		UnknownToken     string `json:"unknown_token"`
		UnreachableToken string `json:"unreachable_token"`
		PG               struct {
			User     string `json:"user"`
			Password string `json:"password"`
			DBName   string `json:"dbname"`
		} `json:"pg"`
	}
	f, err := fixture.Start(&d)
	if err != nil {
		return nil, err
	}
	fx.token, fx.apiURL, fx.unknownToken, fx.unreachableToken = d.Token, d.APIURL, d.UnknownToken, d.UnreachableToken
	fx.pgUser, fx.pgPassword, fx.pgDB = d.PG.User, d.PG.Password, d.PG.DBName
	return f.Stop, nil
}

func login(t *testing.T) *sdm.Session {
	t.Helper()
	s, err := sdm.Login(fx.token)
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dsn(host string, port int) string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable connect_timeout=15",
		host, port, fx.pgUser, fx.pgPassword, fx.pgDB)
}

func echo(t *testing.T, conn net.Conn, msg string) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, back); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(back) != msg {
		t.Fatalf("echo: got %q, want %q", back, msg)
	}
}

func TestVersion(t *testing.T) {
	if v := sdm.Version(); !strings.HasPrefix(v, "0.") {
		t.Fatalf("Version() = %q", v)
	}
}

func TestLoginErrors(t *testing.T) {
	cases := []struct {
		token     string
		sentinel  error
		kind      sdm.Kind
		retryable bool
	}{
		{"not-a-token", sdm.ErrInvalidToken, sdm.KindInvalidToken, false},
		{fx.unknownToken, sdm.ErrUnauthenticated, sdm.KindUnauthenticated, false},
		{fx.unreachableToken, sdm.ErrAPIUnreachable, sdm.KindAPIUnreachable, true},
	}
	for _, c := range cases {
		s, err := sdm.Login(c.token)
		if s != nil || err == nil {
			t.Fatalf("Login(%.12q): session %v, err %v", c.token, s, err)
		}
		if !errors.Is(err, c.sentinel) {
			t.Errorf("Login(%.12q): %v is not %v", c.token, err, c.sentinel)
		}
		var e *sdm.Error
		if !errors.As(err, &e) {
			t.Fatalf("%T is not *sdm.Error", err)
		}
		if e.Kind != c.kind || e.Code != int(c.kind) || e.Retryable != c.retryable || e.Message == "" {
			t.Errorf("Login(%.12q): %+v", c.token, e)
		}
		if errors.Is(err, sdm.ErrForbidden) {
			t.Errorf("%v matches the wrong sentinel", err)
		}
	}
	// Wrapping keeps the kind.
	_, err := sdm.Login("not-a-token")
	if wrapped := fmt.Errorf("job: %w", err); !errors.Is(wrapped, sdm.ErrInvalidToken) {
		t.Errorf("wrapped error lost its kind: %v", wrapped)
	}
}

func TestLoginWithOptionsAndEnv(t *testing.T) {
	s, err := sdm.LoginWithOptions(sdm.Options{
		Token: fx.token, APIURL: fx.apiURL, Labels: map[string]string{"dag_id": "go_test"},
		Timeout: 20 * time.Second, WarmConnections: 1,
	})
	if err != nil {
		t.Fatalf("LoginWithOptions: %v", err)
	}
	if s.Account() != "etl" || len(s.ID()) != 36 {
		t.Errorf("account %q, id %q", s.Account(), s.ID())
	}
	s.Close()

	_, err = sdm.LoginWithOptions(sdm.Options{Token: fx.token, Labels: map[string]string{strings.Repeat("k", 80): "v"}})
	if !errors.Is(err, sdm.ErrInvalidArgument) {
		t.Errorf("an over-long label key: %v", err)
	}
	_, err = sdm.LoginWithOptions(sdm.Options{Token: fx.token, APIURL: "https://127.0.0.1:9"})
	if !errors.Is(err, sdm.ErrAPIUnreachable) {
		t.Errorf("unreachable API URL override: %v", err)
	}

	t.Setenv("SDM_ADMIN_TOKEN", "")
	t.Setenv("SDM_SERVICE_TOKEN", fx.token)
	s, err = sdm.LoginFromEnv()
	if err != nil {
		t.Fatalf("LoginFromEnv: %v", err)
	}
	s.Close()
	t.Setenv("SDM_SERVICE_TOKEN", "")
	if _, err := sdm.LoginFromEnv(); !errors.Is(err, sdm.ErrInvalidToken) {
		t.Errorf("LoginFromEnv without a token: %v", err)
	}
}

func TestListResources(t *testing.T) {
	s := login(t)
	rs, err := s.ListResources()
	if err != nil {
		t.Fatalf("ListResources: %v", err)
	}
	want := []struct{ name, kind string }{{"echo-other", "tcp"}, {"pgsql_1_31", "postgres"}, {"server-echo", "tcp"}}
	if len(rs) != len(want) {
		t.Fatalf("got %d resources: %+v", len(rs), rs)
	}
	for i, w := range want {
		r := rs[i]
		if r.Name != w.name || r.Kind != w.kind || len(r.ID) != 36 || !r.Healthy || r.Port != 0 || len(r.Tags) != 0 || r.SSHHostKey != "" {
			t.Errorf("resource %d: %+v, want %s (%s)", i, r, w.name, w.kind)
		}
	}
}

func TestConnectErrors(t *testing.T) {
	s := login(t)
	_, err := s.Connect("echo")
	var e *sdm.Error
	if !errors.As(err, &e) || e.Kind != sdm.KindAmbiguousResource {
		t.Fatalf("Connect(echo): %v", err)
	}
	if strings.Join(e.Candidates, ",") != "echo-other,server-echo" {
		t.Errorf("candidates %v", e.Candidates)
	}
	if _, err := s.Connect("secret-db"); !errors.Is(err, sdm.ErrResourceNotFound) {
		t.Errorf("Connect(secret-db): %v", err)
	}
	if _, err := s.Connect(""); !errors.Is(err, sdm.ErrInvalidArgument) {
		t.Errorf("Connect(\"\"): %v", err)
	}
	if _, err := s.ConnectWith("pgsql", sdm.ConnectOptions{Bind: "nowhere"}); !errors.Is(err, sdm.ErrInvalidArgument) {
		t.Errorf("bad bind address: %v", err)
	}
	if _, err := s.Dial("echo"); !errors.Is(err, sdm.ErrAmbiguousResource) {
		t.Errorf("Dial(echo): %v", err)
	}
}

// database/sql with the pgx driver through a tunnel.
func TestDatabaseSQLThroughTunnel(t *testing.T) {
	s := login(t)
	tunnel, err := s.Connect("pgsql")
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer tunnel.Close()
	if tunnel.Resource() != "pgsql_1_31" || tunnel.Host() != "127.0.0.1" ||
		tunnel.Addr() != "127.0.0.1:"+strconv.Itoa(tunnel.Port()) || !tunnel.IsOpen() {
		t.Fatalf("tunnel %s %s %s %d", tunnel.Resource(), tunnel.Addr(), tunnel.Host(), tunnel.Port())
	}
	db, err := sql.Open("pgx", dsn(tunnel.Host(), tunnel.Port()))
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var sum int
	var user string
	if err := db.QueryRowContext(ctx, "SELECT 40 + 2, current_user").Scan(&sum, &user); err != nil {
		t.Fatalf("query through the tunnel: %v", err)
	}
	if sum != 42 || user != fx.pgUser {
		t.Errorf("got %d, %q", sum, user)
	}
	// Several pooled connections at once through the one tunnel.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n int
			if err := db.QueryRowContext(ctx, "SELECT $1::int * 2", i).Scan(&n); err != nil || n != i*2 {
				errs <- fmt.Errorf("query %d: %d, %v", i, n, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	st, err := s.Status()
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.Account != "etl" || len(st.Resources) != 3 || !strings.Contains(st.Text, "pgsql_1_31") {
		t.Fatalf("status %+v", st)
	}
	for _, r := range st.Resources {
		if (r.Name == "pgsql_1_31") != r.Connected {
			t.Errorf("status row %+v", r)
		}
		if r.Connected && (r.LocalAddr != tunnel.Addr() || r.Port != tunnel.Port()) {
			t.Errorf("status row %+v, tunnel at %s", r, tunnel.Addr())
		}
	}

	if _, err := s.ConnectWith("server-echo", sdm.ConnectOptions{Port: tunnel.Port()}); !errors.Is(err, sdm.ErrPortInUse) {
		t.Errorf("ConnectWith on a used port: %v", err)
	}

	if err := tunnel.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tunnel.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if tunnel.IsOpen() {
		t.Error("open after Close")
	}
	if c, err := net.DialTimeout("tcp", tunnel.Addr(), 5*time.Second); err == nil {
		c.Close()
		t.Error("something still listens on a closed tunnel's address")
	}
}

// database/sql with pgx over Session.Dial: no local listener at all.
func TestDatabaseSQLOverDial(t *testing.T) {
	s := login(t)
	cfg, err := pgx.ParseConfig(dsn("pgsql.invalid", 5432))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return s.Dial("pgsql")
	}
	cfg.LookupFunc = func(ctx context.Context, host string) ([]string, error) { return []string{host}, nil }
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var greeting string
	if err := db.QueryRowContext(ctx, "SELECT 'dialed ' || current_database()").Scan(&greeting); err != nil {
		t.Fatalf("query over Dial: %v", err)
	}
	if greeting != "dialed "+fx.pgDB {
		t.Errorf("got %q", greeting)
	}
}

func TestDialEcho(t *testing.T) {
	s := login(t)
	conn, err := s.Dial("server-echo")
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer conn.Close()
	echo(t, conn, "hello over a dialed connection\n")
	echo(t, conn, "and again\n")
}

func TestDisconnectLogoutAndClose(t *testing.T) {
	s := login(t)
	a, err := s.Connect("server-echo")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := s.Disconnect("server"); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	if a.IsOpen() {
		t.Error("open after Disconnect")
	}
	if err := s.Disconnect("server"); !errors.Is(err, sdm.ErrResourceNotFound) {
		t.Errorf("Disconnect with nothing open: %v", err)
	}

	b, err := s.Connect("pgsql")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := s.Logout(); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	if b.IsOpen() {
		t.Error("open after Logout")
	}
	if _, err := s.ListResources(); !errors.Is(err, sdm.ErrClosed) {
		t.Errorf("ListResources after Logout: %v", err)
	}

	// Close: the session's tunnels close, later calls report ErrClosed, Close again is fine.
	s2 := login(t)
	c, err := s2.Connect("server-echo")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s2.Close()
	s2.Close()
	if c.IsOpen() {
		t.Error("a tunnel outlived Session.Close")
	}
	if _, err := s2.Connect("server-echo"); !errors.Is(err, sdm.ErrClosed) {
		t.Errorf("Connect after Close: %v", err)
	}
}

// Eight goroutines opening and closing tunnels on one session, with an echo through each.
func TestConcurrentTunnels(t *testing.T) {
	s := login(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 4 {
				tunnel, err := s.Connect("server-echo")
				if err != nil {
					errs <- fmt.Errorf("goroutine %d: %w", g, err)
					return
				}
				conn, err := net.DialTimeout("tcp", tunnel.Addr(), 10*time.Second)
				if err == nil {
					msg := fmt.Sprintf("goroutine %d round %d\n", g, round)
					conn.SetDeadline(time.Now().Add(15 * time.Second))
					_, err = io.WriteString(conn, msg)
					back := make([]byte, len(msg))
					if err == nil {
						_, err = io.ReadFull(conn, back)
					}
					if err == nil && string(back) != msg {
						err = fmt.Errorf("echo %q", back)
					}
					conn.Close()
				}
				if cerr := tunnel.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					errs <- fmt.Errorf("goroutine %d round %d: %w", g, round, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestErrorText(t *testing.T) {
	_, err := sdm.Login("not-a-token")
	if !strings.HasPrefix(err.Error(), "sdm: invalid_token: ") || strings.Count(err.Error(), "sdm:") != 1 {
		t.Errorf("error text %q", err.Error())
	}
	if sdm.ErrClosed.Error() != "sdm: closed" || sdm.KindPortInUse.String() != "port_in_use" {
		t.Errorf("kind texts %q %q", sdm.ErrClosed.Error(), sdm.KindPortInUse.String())
	}
}
