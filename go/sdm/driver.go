package sdm

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// DriverName is the database/sql driver RegisterDriver registers.
const DriverName = "sdm-postgres"

var (
	registerOnce  sync.Once
	driverSession atomic.Pointer[Session]
)

// RegisterDriver registers the database/sql driver "sdm-postgres", which opens every
// PostgreSQL connection through s, in-process (DialContext: no local listener), with pgx
// speaking the protocol:
//
//	sdm.RegisterDriver(session)
//	db, err := sql.Open("sdm-postgres", "resource=pgsql dbname=app user=etl")
//
// The data source name is pgx's (key=value words or a postgres:// URL) plus resource=NAME (a
// word, or a URL query parameter), the resource to reach; host and port are not used, and
// sslmode defaults to disable (the tunnel is TLS already). Calling RegisterDriver again makes
// later sql.Open calls use the new session; databases already open keep theirs.
func RegisterDriver(s *Session) {
	driverSession.Store(s)
	registerOnce.Do(func() { sql.Register(DriverName, pgDriver{}) })
}

type pgDriver struct{}

func (d pgDriver) Open(dsn string) (driver.Conn, error) {
	c, err := d.OpenConnector(dsn)
	if err != nil {
		return nil, err
	}
	return c.Connect(context.Background())
}

func (pgDriver) OpenConnector(dsn string) (driver.Connector, error) {
	s := driverSession.Load()
	if s == nil {
		return nil, &Error{Kind: KindInvalidArgument, Code: int(KindInvalidArgument),
			Message: "sdm.RegisterDriver was not given a session"}
	}
	resource, rest, err := takeResource(dsn)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(rest)
	if err != nil {
		return nil, &Error{Kind: KindInvalidArgument, Code: int(KindInvalidArgument),
			Message: "data source name: " + err.Error()}
	}
	cfg.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return s.DialContext(ctx, resource)
	}
	// The host is never looked up: every connection goes to the resource.
	cfg.LookupFunc = func(_ context.Context, host string) ([]string, error) { return []string{host}, nil }
	return stdlib.GetConnector(*cfg), nil
}

// takeResource removes resource=NAME from a data source name and returns it with the rest, in
// which sslmode defaults to disable.
func takeResource(dsn string) (resource, rest string, err error) {
	missing := &Error{Kind: KindInvalidArgument, Code: int(KindInvalidArgument),
		Message: "the data source name names no resource: add resource=NAME"}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", "", &Error{Kind: KindInvalidArgument, Code: int(KindInvalidArgument),
				Message: "data source name: " + err.Error()}
		}
		q := u.Query()
		resource = q.Get("resource")
		if resource == "" {
			return "", "", missing
		}
		q.Del("resource")
		if q.Get("sslmode") == "" {
			q.Set("sslmode", "disable")
		}
		u.RawQuery = q.Encode()
		return resource, u.String(), nil
	}
	m := resourceWord.FindStringSubmatchIndex(dsn)
	if m == nil {
		return "", "", missing
	}
	resource = dsn[m[4]:m[5]]
	rest = strings.TrimRight(dsn[:m[2]], " \t\n") + " " + strings.TrimLeft(dsn[m[1]:], " \t\n")
	if !sslmodeWord.MatchString(rest) {
		rest += " sslmode=disable"
	}
	return resource, strings.TrimSpace(rest), nil
}

var (
	// resource=NAME as a word of a key=value data source name (group 1: the word, 2: NAME).
	resourceWord = regexp.MustCompile(`(?:^|\s)(resource\s*=\s*(\S+))`)
	sslmodeWord  = regexp.MustCompile(`(?:^|\s)sslmode\s*=`)
)

var _ driver.DriverContext = pgDriver{}
