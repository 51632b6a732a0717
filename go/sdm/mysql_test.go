package sdm_test

import (
	"database/sql"
	"os"
	"os/exec"
	"strings"
	"testing"

	_ "github.com/go-sql-driver/mysql"

	"github.com/sdm-dev/sdm/go/sdm"
)

// Go's go-sql-driver/mysql through a tunnel to a real MariaDB whose credentials the admin
// stored: the job names any user and no password, the gateway logs in; the driver's prepared
// statements (binary protocol) run.
func TestMySQLDriverReachesMariaDBWithNoPassword(t *testing.T) {
	if _, err := exec.LookPath("mariadbd"); err != nil {
		if _, err := os.Stat("/usr/sbin/mariadbd"); err != nil {
			t.Skip("mariadb-server is not installed")
		}
	}
	f := startOwnFixture(t, "--no-postgres")
	do(t, f, "mariadb-resource shop-go")
	token, _ := do(t, f, "account gojob")["token"].(string)
	do(t, f, "grant gojob shop-go")

	s, err := sdm.Login(token)
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	defer s.Close()
	tunnel, err := s.Connect("shop-go")
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer tunnel.Close()

	db, err := sql.Open("mysql", "gojob@tcp("+tunnel.Addr()+")/shop?timeout=30s&readTimeout=60s")
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	defer db.Close()
	var item string
	// An argument makes the driver prepare the statement (COM_STMT_PREPARE, then EXECUTE).
	if err := db.QueryRow("SELECT item FROM orders WHERE id = ?", 2).Scan(&item); err != nil {
		t.Fatalf("query: %v", err)
	}
	if item != "ünïcode" {
		t.Errorf("item %q", item)
	}
	if _, err := db.Exec("INSERT INTO orders VALUES (?, ?)", 20, "from-go"); err != nil {
		t.Fatalf("insert: %v", err)
	}
	var count int
	var user string
	if err := db.QueryRow("SELECT COUNT(*), CURRENT_USER() FROM orders").Scan(&count, &user); err != nil {
		t.Fatalf("count: %v", err)
	}
	if count != 4 || !strings.HasPrefix(user, "shop_rw@") {
		t.Errorf("%d rows as %q: want 4 as the stored user shop_rw", count, user)
	}
}
