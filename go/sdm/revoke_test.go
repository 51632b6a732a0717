package sdm_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sdm-dev/sdm/go/sdm"
)

// ownFixture is an sdm-fixture this test drives through its command channel (stdin), with
// short leases so that a revocation reaches open tunnels quickly.
type ownFixture struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	answer *bufio.Reader
}

func startOwnFixture(t *testing.T, args ...string) *ownFixture {
	t.Helper()
	bin := os.Getenv("SDM_FIXTURE")
	if bin == "" {
		bin, _ = filepath.Abs("../../target/release/sdm-fixture")
	}
	cmd := exec.Command(bin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	f := &ownFixture{cmd: cmd, stdin: stdin, answer: bufio.NewReader(stdout)}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
		}
	})
	if _, err := f.readLine(120 * time.Second); err != nil {
		t.Fatalf("sdm-fixture did not start: %v", err)
	}
	return f
}

func (f *ownFixture) readLine(limit time.Duration) (map[string]any, error) {
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := f.answer.ReadString('\n')
		ch <- result{line, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		var v map[string]any
		return v, json.Unmarshal([]byte(r.line), &v)
	case <-time.After(limit):
		return nil, errors.New("no answer from sdm-fixture")
	}
}

func (f *ownFixture) do(t *testing.T, command string) map[string]any {
	t.Helper()
	if _, err := fmt.Fprintln(f.stdin, command); err != nil {
		t.Fatalf("%s: %v", command, err)
	}
	v, err := f.readLine(60 * time.Second)
	if err != nil || v["ok"] != true {
		t.Fatalf("%s: %v %v", command, v, err)
	}
	return v
}

// A grant removed while a tunnel is open: the lease renewal is refused, the tunnel closes, and
// CloseReason says why.
func TestRevokedGrantClosesTunnelWithReason(t *testing.T) {
	f := startOwnFixture(t, "--lease-ttl", "4", "--no-postgres")
	token, _ := f.do(t, "account revokee")["token"].(string)
	f.do(t, "grant revokee server-echo")

	s, err := sdm.Login(token)
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	defer s.Close()
	tunnel, err := s.Connect("server-echo")
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer tunnel.Close()
	if tunnel.CloseReason() != nil {
		t.Fatal("an open tunnel has a close reason")
	}

	f.do(t, "revoke revokee server-echo")
	// The next renewal (at half the 4 s lease) is refused; wait for it, within a bound.
	for i := 0; i < 300 && tunnel.IsOpen(); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if tunnel.IsOpen() {
		t.Fatal("the tunnel stayed open 30 s after its grant was removed")
	}
	reason := tunnel.CloseReason()
	if !errors.Is(reason, sdm.ErrResourceNotFound) && !errors.Is(reason, sdm.ErrForbidden) {
		t.Fatalf("close reason %v", reason)
	}
	if _, err := s.Connect("server-echo"); !errors.Is(err, sdm.ErrResourceNotFound) {
		t.Errorf("Connect after the revocation: %v", err)
	}
}
