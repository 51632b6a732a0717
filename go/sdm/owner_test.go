package sdm_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdm-dev/sdm/go/sdm"
)

// otherUser is the unprivileged user the PostgreSQL fixture runs as (sdmtest), when the tests
// run as root (as the suite and CI do); the other-user checks are skipped otherwise.
func otherUser(t *testing.T) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Log("not root: cannot act as another OS user; the other-user checks are skipped")
		return nil
	}
	u, err := user.Lookup("sdmtest")
	if err != nil {
		t.Fatalf("running as root, the fixture's user sdmtest should exist: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// echoAs sends "other" through addr as another OS user and returns what came back (empty when
// the tunnel refused), from a child that runs as that user: the system python3
// (scripts/install-deps.sh installs it; an interpreter under /root is out of its reach).
func echoAs(t *testing.T, cred *syscall.Credential, addr net.Addr) string {
	t.Helper()
	script := `
import socket, sys
family = socket.AF_UNIX if sys.argv[1] == "unix" else socket.AF_INET
target = sys.argv[2]
if family == socket.AF_INET:
    host, port = target.rsplit(":", 1)
    target = (host, int(port))
s = socket.socket(family, socket.SOCK_STREAM)
s.settimeout(15)
try:
    s.connect(target)
except OSError as e:
    print("connect failed:", e.strerror, file=sys.stderr)
    sys.exit(0)
s.sendall(b"other")
data = b""
try:
    while len(data) < 5:
        chunk = s.recv(5 - len(data))
        if not chunk:
            break
        data += chunk
except OSError:
    pass
sys.stdout.write(data.decode())
`
	cmd := exec.Command("/usr/bin/python3", "-c", script, addr.Network(), addr.String())
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 as uid %d: %v: %s", cred.Uid, err, stderr.String())
	}
	return string(out)
}

func dialEcho(t *testing.T, addr net.Addr, msg string) {
	t.Helper()
	conn, err := net.DialTimeout(addr.Network(), addr.String(), 15*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", addr.Network(), addr, err)
	}
	defer conn.Close()
	echo(t, conn, msg)
}

// SameUserOnly: the owner gets through, another OS user is refused; the same user gets
// through a tunnel opened with the defaults (the control).
func TestSameUserOnlyRefusesOtherOSUsers(t *testing.T) {
	s := login(t)
	cred := otherUser(t)
	open, err := s.Connect("server-echo")
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer open.Close()
	if open.LocalAddr().Network() != "tcp" {
		t.Fatalf("a default tunnel is TCP, got %s", open.LocalAddr().Network())
	}
	if cred != nil {
		if got := echoAs(t, cred, open.LocalAddr()); got != "other" {
			t.Fatalf("control: another user through an open tunnel got %q", got)
		}
	}
	open.Close()

	owned, err := s.ConnectWith("server-echo", sdm.ConnectOptions{SameUserOnly: true})
	if err != nil {
		t.Fatalf("ConnectWith(SameUserOnly): %v", err)
	}
	defer owned.Close()
	dialEcho(t, owned.LocalAddr(), "mine")
	if cred != nil {
		if got := echoAs(t, cred, owned.LocalAddr()); got != "" {
			t.Fatalf("another OS user got %q through an owner-only tunnel", got)
		}
	}
	dialEcho(t, owned.LocalAddr(), "still mine")
}

// PrivateUnixSocket: the honest address is a *net.UnixAddr (no host, no port), pgx reaches
// PostgreSQL through it with libpq's directory convention, another user cannot connect, and
// the socket's directory goes away with the tunnel.
func TestPrivateUnixSocketTunnel(t *testing.T) {
	s := login(t)
	cred := otherUser(t)
	tunnel, err := s.ConnectWith("pgsql", sdm.ConnectOptions{PrivateUnixSocket: true})
	if err != nil {
		t.Fatalf("ConnectWith(PrivateUnixSocket): %v", err)
	}
	defer tunnel.Close()
	addr, ok := tunnel.LocalAddr().(*net.UnixAddr)
	if !ok {
		t.Fatalf("LocalAddr is %T (%v), want *net.UnixAddr", tunnel.LocalAddr(), tunnel.LocalAddr())
	}
	if tunnel.Host() != "" || tunnel.Port() != 0 || tunnel.Addr() != addr.Name ||
		filepath.Base(addr.Name) != ".s.PGSQL.5432" {
		t.Fatalf("addr %q host %q port %d", tunnel.Addr(), tunnel.Host(), tunnel.Port())
	}
	st, err := s.Status()
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	for _, r := range st.Resources {
		if r.Name == "pgsql_1_31" && (r.LocalAddr != addr.Name || r.Port != 0) {
			t.Errorf("status row %+v", r)
		}
	}
	dir := filepath.Dir(addr.Name)
	db, err := sql.Open("pgx", fmt.Sprintf("host=%s port=5432 user=%s password=%s dbname=%s sslmode=disable connect_timeout=15",
		dir, fx.pgUser, fx.pgPassword, fx.pgDB))
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var text string
	if err := db.QueryRowContext(ctx, "SELECT 'over a socket'").Scan(&text); err != nil || text != "over a socket" {
		t.Fatalf("query over the socket: %q %v", text, err)
	}
	if cred != nil {
		if got := echoAs(t, cred, tunnel.LocalAddr()); got != "" {
			t.Fatalf("another OS user got %q through a private socket", got)
		}
	}
	db.Close()
	if err := tunnel.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is left behind: %v", dir, err)
	}
}

func TestConnectOptionsErrors(t *testing.T) {
	s := login(t)
	_, err := s.ConnectWith("pgsql", sdm.ConnectOptions{Bind: "nowhere"})
	var e *sdm.Error
	if !errors.As(err, &e) || e.Kind != sdm.KindInvalidArgument || !strings.Contains(e.Message, "nowhere") {
		t.Fatalf("bad bind address: %v", err)
	}
	// A directory other users can enter is refused for a socket.
	shared := t.TempDir()
	os.Chmod(shared, 0o755)
	_, err = s.ConnectWith("pgsql", sdm.ConnectOptions{UnixSocket: filepath.Join(shared, "s")})
	if !errors.Is(err, sdm.ErrInvalidArgument) || !strings.Contains(err.Error(), "0700") {
		t.Fatalf("socket in a shared directory: %v", err)
	}
}
