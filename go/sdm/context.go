package sdm

import (
	"context"
	"fmt"
	"net"
)

// DialContext is Dial honouring ctx: it returns ctx's error as soon as ctx is cancelled or its
// deadline passes (errors.Is(err, context.DeadlineExceeded) or context.Canceled). libsdm's
// dial itself cannot be interrupted: an abandoned attempt finishes in the background within
// libsdm's own time limits, and a connection it still makes is closed. Its signature is the
// one pgx's ConnConfig.DialFunc takes once the resource is bound:
//
//	cfg.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
//		return session.DialContext(ctx, "pgsql")
//	}
func (s *Session) DialContext(ctx context.Context, name string) (net.Conn, error) {
	return withContext(ctx, "dial "+name, func() (net.Conn, error) { return s.Dial(name) },
		func(c net.Conn) { c.Close() })
}

// ConnectContext is ConnectWith honouring ctx, as DialContext does: a tunnel that opens after
// ctx ended is closed at once.
func (s *Session) ConnectContext(ctx context.Context, name string, opts ConnectOptions) (*Tunnel, error) {
	return withContext(ctx, "connect "+name, func() (*Tunnel, error) { return s.ConnectWith(name, opts) },
		func(t *Tunnel) { t.Close() })
}

// withContext runs work (a blocking libsdm call) and returns its result, or ctx's error as
// soon as ctx ends first; a result that arrives later is released with drop.
func withContext[T any](ctx context.Context, what string, work func() (T, error), drop func(T)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("sdm: %s: %w", what, err)
	}
	type result struct {
		value T
		err   error
	}
	done := make(chan result, 1)
	go func() {
		v, err := work()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.value, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.err == nil {
				drop(r.value)
			}
		}()
		return zero, fmt.Errorf("sdm: %s: %w", what, ctx.Err())
	}
}
