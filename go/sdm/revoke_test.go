package sdm_test

import (
	"errors"
	"testing"
	"time"

	"github.com/sdm-dev/sdm/go/sdm"
	"github.com/sdm-dev/sdm/go/sdm/internal/fixture"
)

// startOwnFixture starts an sdm-fixture this test drives through its command channel (stdin),
// with short leases so that a revocation reaches open tunnels quickly.
func startOwnFixture(t *testing.T, args ...string) *fixture.Fixture {
	t.Helper()
	f, err := fixture.Start(nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	return f
}

func do(t *testing.T, f *fixture.Fixture, command string) map[string]any {
	t.Helper()
	answer, err := f.Do(command)
	if err != nil {
		t.Fatal(err)
	}
	return answer
}

// A grant removed while a tunnel is open: the lease renewal is refused, the tunnel closes, and
// CloseReason says why.
func TestRevokedGrantClosesTunnelWithReason(t *testing.T) {
	f := startOwnFixture(t, "--lease-ttl", "4", "--no-postgres")
	token, _ := do(t, f, "account revokee")["token"].(string)
	do(t, f, "grant revokee server-echo")

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

	do(t, f, "revoke revokee server-echo")
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
