package sdm

import "testing"

func TestTakeResource(t *testing.T) {
	for _, c := range []struct{ dsn, resource, rest string }{
		{"resource=pgsql dbname=app", "pgsql", "dbname=app sslmode=disable"},
		{"dbname=app resource = pg_1 sslmode=require", "pg_1", "dbname=app sslmode=require"},
		{"postgres://u@h/app?resource=pgsql", "pgsql", "postgres://u@h/app?sslmode=disable"},
		{"postgresql://u@h/app?resource=pg&sslmode=prefer", "pg", "postgresql://u@h/app?sslmode=prefer"},
	} {
		resource, rest, err := takeResource(c.dsn)
		if err != nil || resource != c.resource || rest != c.rest {
			t.Errorf("%q: %q %q %v", c.dsn, resource, rest, err)
		}
	}
	for _, dsn := range []string{"dbname=app", "postgres://u@h/app", "myresource=x"} {
		if _, _, err := takeResource(dsn); err == nil {
			t.Errorf("%q: no error", dsn)
		}
	}
}
