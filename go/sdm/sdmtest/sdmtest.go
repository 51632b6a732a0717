// Package sdmtest starts a real, throwaway sdm installation for the tests of Go jobs that use
// sdm: sdm-server on free loopback ports in a temporary directory, the test's own database
// added as a resource with its credentials stored (so the job logs in with a token alone), and
// service accounts granted it. The Go twin of Python's sdm.testing and Rust's sdm-testing.
//
//	inst := sdmtest.Start(t, "postgresql://tester:secret@127.0.0.1:5432/app_test", "pgsql")
//	token := inst.NewToken(t)              // a new service account, granted "pgsql"
//	session, err := sdm.Login(token)       // what the job under test does
//
// It runs the sdm-server and sdm binaries (the release tarball, or cargo build --release -p
// sdm-server -p sdm-cli): SDM_SERVER_BIN and SDM_BIN, else PATH. It uses no cgo itself.
package sdmtest

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// StartTimeout bounds the wait for sdm-server's first line (its admin token); it starts in well
// under a second.
const StartTimeout = 60 * time.Second

// Installation is a running sdm-server with one resource. Start stops it when the test ends.
type Installation struct {
	// Resource is the resource's name.
	Resource string
	// AdminToken is the installation's admin token.
	AdminToken string
	sdm        string
	mu         sync.Mutex
	accounts   int
}

// Start starts sdm-server and adds upstream as the resource named resource. upstream is
// postgresql://USER:PASSWORD@HOST:PORT/DBNAME (the gateway logs in with these; jobs name DBNAME
// and need no password) or tcp://HOST:PORT. It fails the test on any error; the server stops
// and its directory is removed when the test (or benchmark) and its subtests end.
func Start(t testing.TB, upstream, resource string) *Installation {
	t.Helper()
	add, password, err := resourceArgs(upstream, resource)
	if err != nil {
		t.Fatal(err)
	}
	server, err := findBinary("sdm-server", "SDM_SERVER_BIN")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := findBinary("sdm", "SDM_BIN")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(server, "serve", "--data-dir", filepath.Join(dir, "data"),
		"--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0")
	cmd.Env = cleanEnv()
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("sdmtest: cannot start %s: %v", server, err)
	}
	t.Cleanup(func() { stop(cmd) })
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	var token string
	select {
	case token = <-line:
	case <-time.After(StartTimeout):
	}
	if token == "" {
		stop(cmd)
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		t.Fatalf("sdmtest: sdm-server did not start; its log:\n%s", log)
	}
	inst := &Installation{Resource: resource, AdminToken: token, sdm: cli}
	if _, err := inst.Admin(password, add...); err != nil {
		t.Fatal(err)
	}
	return inst
}

// NewToken creates a service account (test-1, test-2, …) granted the resource and returns its
// token; it fails the test on any error.
func (i *Installation) NewToken(t testing.TB) string {
	t.Helper()
	name, token := i.newAccount(t)
	if _, err := i.Admin("", "grant", name, i.Resource); err != nil {
		t.Fatal(err)
	}
	return token
}

// NewTokenWithoutGrant creates a service account granted nothing and returns its token.
func (i *Installation) NewTokenWithoutGrant(t testing.TB) string {
	t.Helper()
	_, token := i.newAccount(t)
	return token
}

func (i *Installation) newAccount(t testing.TB) (name, token string) {
	i.mu.Lock()
	i.accounts++
	name = fmt.Sprintf("test-%d", i.accounts)
	i.mu.Unlock()
	out, err := i.Admin("", "services", "create", name)
	if err != nil {
		t.Fatal(err)
	}
	return name, strings.TrimSpace(out)
}

// Admin runs `sdm admin ARGS…` with the admin token and stdin as its standard input, and
// returns its standard output; a failure's error holds the command and its message.
func (i *Installation) Admin(stdin string, args ...string) (string, error) {
	cmd := exec.Command(i.sdm, append([]string{"admin"}, args...)...)
	cmd.Env = append(cleanEnv(), "SDM_ADMIN_TOKEN="+i.AdminToken)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		message := strings.TrimPrefix(strings.TrimSpace(stderr.String()), "sdm: ")
		return "", fmt.Errorf("sdmtest: sdm admin %s: %s (%w)", strings.Join(args, " "), message, err)
	}
	return string(out), nil
}

func resourceArgs(upstream, resource string) (args []string, password string, err error) {
	u, err := url.Parse(upstream)
	if err != nil || u.Hostname() == "" || u.Port() == "" {
		return nil, "", fmt.Errorf("sdmtest: the upstream %q needs a host and a port, e.g. "+
			"postgresql://USER:PASSWORD@127.0.0.1:5432/DBNAME", redact(upstream))
	}
	switch u.Scheme {
	case "tcp":
		return []string{"servers", "add", "tcp", resource, "--hostname", u.Hostname(),
			"--port", u.Port()}, "", nil
	case "postgresql", "postgres":
		password, hasPassword := u.User.Password()
		database := strings.TrimPrefix(u.Path, "/")
		if u.User.Username() == "" || !hasPassword || database == "" {
			return nil, "", fmt.Errorf("sdmtest: the upstream %q needs a user, a password and a "+
				"database: postgresql://USER:PASSWORD@HOST:PORT/DBNAME", redact(upstream))
		}
		return []string{"datasources", "add", "postgres", resource, "--hostname", u.Hostname(),
			"--port", u.Port(), "--database", database, "--username", u.User.Username(),
			"--password-stdin"}, password + "\n", nil
	default:
		return nil, "", fmt.Errorf("sdmtest: unsupported upstream %q: give "+
			"postgresql://USER:PASSWORD@HOST:PORT/DBNAME or tcp://HOST:PORT", u.Scheme)
	}
}

// redact hides the password of an upstream URL in messages.
func redact(upstream string) string {
	u, err := url.Parse(upstream)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func findBinary(name, envVar string) (string, error) {
	if path := os.Getenv(envVar); path != "" {
		return path, nil
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("sdmtest: needs the %s binary: put it on PATH or set %s to its path "+
			"(it is in the sdm release tarball; from a checkout: cargo build --release "+
			"-p sdm-server -p sdm-cli)", name, envVar)
	}
	return path, nil
}

// cleanEnv is this process's environment without sdm settings that would point the binaries
// elsewhere.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "SDM_API_URL", "SDM_ADMIN_TOKEN", "SDM_SERVICE_TOKEN", "SDM_DATABASE_URL":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func stop(cmd *exec.Cmd) {
	if cmd.ProcessState != nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}
