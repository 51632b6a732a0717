/*
 * The libsdm C API against a real sdm-server and PostgreSQL (from sdm-fixture): login and its
 * failures, options and the environment, the resource list, connect (name, substring,
 * ambiguous, not granted, port in use), a libpq query through a tunnel, the PostgreSQL wire
 * protocol and an echo over a dialed file descriptor, status, disconnect, logout, and misuse:
 * NULL pointers, closed tunnels, a freed session's tunnels, buffers too small.
 */
#define _POSIX_C_SOURCE 200809L

#include <libpq-fe.h>
#include <stdint.h>

#include "check.h"
#include "net.h"

static const char *token, *api_url, *pg_user, *pg_password, *pg_dbname;

/* A pointer value no function may write: outputs must stay untouched on failure. */
#define UNTOUCHED ((void *)(uintptr_t)0x5d)

static void test_version(void) {
  CHECK(strcmp(sdm_version(), SDM_VERSION_STRING) == 0, "sdm_version() = %s, header %s",
        sdm_version(), SDM_VERSION_STRING);
  CHECK(strcmp(sdm_status_name(SDM_STATUS_OK), "ok") == 0, "name of OK");
  CHECK(strcmp(sdm_status_name(SDM_STATUS_AMBIGUOUS_RESOURCE), "ambiguous_resource") == 0,
        "name of AMBIGUOUS_RESOURCE");
  CHECK(strcmp(sdm_status_name(SDM_STATUS_BUFFER_TOO_SMALL), "buffer_too_small") == 0,
        "name of BUFFER_TOO_SMALL");
  CHECK(strcmp(sdm_status_name(57), "unrecognized") == 0, "name of an unknown number");
  CHECK(SDM_STATUS_INVALID_TOKEN == 1 && SDM_STATUS_INTERNAL == 13, "kind codes are 1..13");
}

/* Logs in with `tok` and checks the failure: status, error object, untouched output. */
static void check_login_fails(const char *tok, sdm_status expected, int retryable) {
  sdm_session *session = (sdm_session *)UNTOUCHED;
  sdm_error *err = NULL;
  sdm_status status = sdm_login(tok, &session, &err);
  CHECK(status == expected, "login: expected %s, got %s", sdm_status_name(expected),
        sdm_status_name(status));
  CHECK(session == (sdm_session *)UNTOUCHED, "session_out written on failure");
  CHECK(err != NULL, "no error object");
  if (err != NULL) {
    CHECK(sdm_error_code(err) == expected, "error code %d", (int)sdm_error_code(err));
    CHECK(strcmp(sdm_error_kind(err), sdm_status_name(expected)) == 0, "kind %s",
          sdm_error_kind(err));
    CHECK(strlen(sdm_error_message(err)) > 10, "message too short: %s", sdm_error_message(err));
    CHECK(sdm_error_retryable(err) == retryable, "retryable of %s", sdm_error_kind(err));
  }
  sdm_error_free(err);
}

static void test_login_failures(void) {
  check_login_fails("not-a-token", SDM_STATUS_INVALID_TOKEN, 0);
  check_login_fails(fixture("SDM_TEST_UNKNOWN_TOKEN"), SDM_STATUS_UNAUTHENTICATED, 0);
  check_login_fails(fixture("SDM_TEST_UNREACHABLE_TOKEN"), SDM_STATUS_API_UNREACHABLE, 1);
  check_login_fails("\xff\xfe", SDM_STATUS_INVALID_ARGUMENT, 0);
  check_login_fails(NULL, SDM_STATUS_NULL_ARGUMENT, 0);
  /* NULL outputs: a status, no crash; error_out is optional. */
  CHECK(sdm_login(token, NULL, NULL) == SDM_STATUS_NULL_ARGUMENT, "NULL session_out");
  sdm_session *session = NULL;
  CHECK(sdm_login("not-a-token", &session, NULL) == SDM_STATUS_INVALID_TOKEN,
        "error_out may be NULL");
  CHECK(session == NULL, "no session on failure");
}

static void test_options_and_env(void) {
  sdm_options *options = NULL;
  CHECK(sdm_options_new(NULL) == SDM_STATUS_NULL_ARGUMENT, "options_new(NULL)");
  CHECK(sdm_options_new(&options) == SDM_STATUS_OK && options != NULL, "options_new");
  CHECK(sdm_options_set_token(options, token) == SDM_STATUS_OK, "set_token");
  CHECK(sdm_options_set_token(options, NULL) == SDM_STATUS_NULL_ARGUMENT, "set_token NULL");
  CHECK(sdm_options_set_token(NULL, token) == SDM_STATUS_NULL_ARGUMENT, "set_token on NULL");
  CHECK(sdm_options_add_label(options, "dag_id", "nightly_etl") == SDM_STATUS_OK, "label");
  CHECK(sdm_options_add_label(options, "task_id", NULL) == SDM_STATUS_NULL_ARGUMENT,
        "label NULL value");
  CHECK(sdm_options_set_timeout_ms(options, 0) == SDM_STATUS_INVALID_ARGUMENT, "timeout 0");
  CHECK(sdm_options_set_timeout_ms(options, 20000) == SDM_STATUS_OK, "timeout");
  CHECK(sdm_options_set_warm_connections(options, 1) == SDM_STATUS_OK, "warm connections");
  CHECK(sdm_options_set_api_url(options, api_url) == SDM_STATUS_OK, "api url");

  sdm_session *session = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_login_with_options(options, &session, &err));
  const char *name = NULL, *url = NULL, *id = NULL;
  CHECK(sdm_session_account_name(session, &name) == SDM_STATUS_OK && name != NULL &&
            strcmp(name, "etl") == 0,
        "account name %s", name ? name : "(null)");
  CHECK(sdm_session_api_url(session, &url) == SDM_STATUS_OK && url != NULL &&
            strcmp(url, api_url) == 0,
        "api url %s", url ? url : "(null)");
  CHECK(sdm_session_id(session, &id) == SDM_STATUS_OK && id != NULL && strlen(id) == 36,
        "session id %s", id ? id : "(null)");
  CHECK(sdm_session_account_id(session, &id) == SDM_STATUS_OK && strlen(id) == 36,
        "account id");
  CHECK(sdm_session_account_name(session, NULL) == SDM_STATUS_NULL_ARGUMENT, "NULL name_out");
  CHECK(sdm_session_account_name(NULL, &name) == SDM_STATUS_NULL_ARGUMENT, "NULL session");
  sdm_session_free(session);

  /* The server enforces label bounds; the error comes back as INVALID_ARGUMENT. */
  char long_key[80];
  memset(long_key, 'k', sizeof long_key - 1);
  long_key[sizeof long_key - 1] = '\0';
  CHECK(sdm_options_add_label(options, long_key, "v") == SDM_STATUS_OK, "long label");
  session = (sdm_session *)UNTOUCHED;
  CHECK_STATUS(SDM_STATUS_INVALID_ARGUMENT, sdm_login_with_options(options, &session, &err));
  CHECK(session == (sdm_session *)UNTOUCHED, "no session for a refused label");
  sdm_options_free(options);

  /* The API URL override is used (an unreachable one fails as such). */
  CHECK(sdm_options_new(&options) == SDM_STATUS_OK, "options_new");
  CHECK(sdm_options_set_token(options, token) == SDM_STATUS_OK, "set_token");
  CHECK(sdm_options_set_api_url(options, "https://127.0.0.1:9") == SDM_STATUS_OK, "url");
  CHECK_STATUS(SDM_STATUS_API_UNREACHABLE, sdm_login_with_options(options, &session, &err));
  sdm_options_free(options);
  sdm_options_free(NULL);
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_login_with_options(NULL, &session, &err));

  /* From the environment. */
  unsetenv("SDM_ADMIN_TOKEN");
  setenv("SDM_SERVICE_TOKEN", token, 1);
  session = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_login_from_env(&session, &err));
  CHECK(session != NULL, "session from env");
  sdm_session_free(session);
  unsetenv("SDM_SERVICE_TOKEN");
  session = (sdm_session *)UNTOUCHED;
  CHECK_STATUS(SDM_STATUS_INVALID_TOKEN, sdm_login_from_env(&session, &err));
  CHECK(session == (sdm_session *)UNTOUCHED, "no session without a token");
  /* Options without a token read the environment too. */
  setenv("SDM_ADMIN_TOKEN", token, 1);
  CHECK(sdm_options_new(&options) == SDM_STATUS_OK, "options_new");
  session = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_login_with_options(options, &session, &err));
  sdm_options_free(options);
  sdm_session_free(session);
  unsetenv("SDM_ADMIN_TOKEN");
}

static void test_resource_list(sdm_session *session) {
  sdm_resource_list *list = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_list_resources(session, &list, &err));
  CHECK(sdm_resource_list_len(list) == 3, "3 granted resources, got %zu",
        sdm_resource_list_len(list));
  static const char *const names[] = {"echo-other", "pgsql_1_31", "server-echo"};
  static const char *const kinds[] = {"tcp", "postgres", "tcp"};
  for (size_t i = 0; i < 3 && i < sdm_resource_list_len(list); i++) {
    const char *name = NULL, *kind = NULL, *id = NULL;
    uint16_t port = 1;
    bool healthy = false;
    size_t tags = 9;
    CHECK(sdm_resource_list_name(list, i, &name) == SDM_STATUS_OK && strcmp(name, names[i]) == 0,
          "name %zu: %s", i, name ? name : "(null)");
    CHECK(sdm_resource_list_kind(list, i, &kind) == SDM_STATUS_OK && strcmp(kind, kinds[i]) == 0,
          "kind %zu: %s", i, kind ? kind : "(null)");
    CHECK(sdm_resource_list_id(list, i, &id) == SDM_STATUS_OK && strlen(id) == 36, "id %zu", i);
    CHECK(sdm_resource_list_port(list, i, &port) == SDM_STATUS_OK && port == 0, "port %zu", i);
    CHECK(sdm_resource_list_healthy(list, i, &healthy) == SDM_STATUS_OK && healthy,
          "healthy %zu", i);
    CHECK(sdm_resource_list_tag_count(list, i, &tags) == SDM_STATUS_OK && tags == 0, "tags %zu",
          i);
    const char *host_key = (const char *)UNTOUCHED;
    CHECK(sdm_resource_list_ssh_host_key(list, i, &host_key) == SDM_STATUS_OK && host_key == NULL,
          "no ssh host key for %s resource %zu", kinds[i], i);
  }
  const char *text = (const char *)UNTOUCHED, *value = (const char *)UNTOUCHED;
  CHECK(sdm_resource_list_name(list, 3, &text) == SDM_STATUS_INVALID_ARGUMENT, "index 3");
  CHECK(text == (const char *)UNTOUCHED, "no output for a bad index");
  CHECK(sdm_resource_list_tag(list, 0, 0, &text, &value) == SDM_STATUS_INVALID_ARGUMENT,
        "tag index out of range");
  CHECK(sdm_resource_list_tag(list, 0, 0, NULL, &value) == SDM_STATUS_NULL_ARGUMENT,
        "NULL key_out");
  CHECK(sdm_resource_list_name(list, 0, NULL) == SDM_STATUS_NULL_ARGUMENT, "NULL name_out");
  CHECK(sdm_resource_list_name(NULL, 0, &text) == SDM_STATUS_NULL_ARGUMENT, "NULL list");
  CHECK(sdm_resource_list_len(NULL) == 0, "len of NULL");
  uint16_t port;
  CHECK(sdm_resource_list_port(NULL, 0, &port) == SDM_STATUS_NULL_ARGUMENT, "port of NULL");
  CHECK(sdm_resource_list_ssh_host_key(NULL, 0, &text) == SDM_STATUS_NULL_ARGUMENT,
        "ssh host key of NULL");
  CHECK(sdm_resource_list_ssh_host_key(list, 0, NULL) == SDM_STATUS_NULL_ARGUMENT,
        "ssh host key into NULL");
  CHECK(sdm_resource_list_ssh_host_key(list, 3, &text) == SDM_STATUS_INVALID_ARGUMENT,
        "ssh host key of index 3");
  sdm_resource_list_free(list);
  sdm_resource_list_free(NULL);
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_session_list_resources(session, NULL, &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_session_list_resources(NULL, &list, &err));
}

static void test_connect_failures(sdm_session *session) {
  sdm_tunnel *tunnel = (sdm_tunnel *)UNTOUCHED;
  sdm_error *err = NULL;
  CHECK(sdm_session_connect(session, "echo", &tunnel, &err) == SDM_STATUS_AMBIGUOUS_RESOURCE,
        "\"echo\" is ambiguous");
  CHECK(sdm_error_candidates_len(err) == 2, "2 candidates, got %zu",
        sdm_error_candidates_len(err));
  CHECK(sdm_error_candidate(err, 0) && strcmp(sdm_error_candidate(err, 0), "echo-other") == 0,
        "first candidate");
  CHECK(sdm_error_candidate(err, 1) && strcmp(sdm_error_candidate(err, 1), "server-echo") == 0,
        "second candidate");
  CHECK(sdm_error_candidate(err, 2) == NULL, "no third candidate");
  CHECK(strstr(sdm_error_message(err), "server-echo") != NULL, "message names candidates: %s",
        sdm_error_message(err));
  sdm_error_free(err);
  CHECK(tunnel == (sdm_tunnel *)UNTOUCHED, "tunnel_out written on failure");

  CHECK_STATUS(SDM_STATUS_RESOURCE_NOT_FOUND,
               sdm_session_connect(session, "secret-db", &tunnel, &err));
  CHECK_STATUS(SDM_STATUS_RESOURCE_NOT_FOUND,
               sdm_session_connect(session, "no-such-thing", &tunnel, &err));
  CHECK_STATUS(SDM_STATUS_INVALID_ARGUMENT, sdm_session_connect(session, "", &tunnel, &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_session_connect(session, NULL, &tunnel, &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_session_connect(session, "pgsql", NULL, &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_session_connect(NULL, "pgsql", &tunnel, &err));
  CHECK_STATUS(SDM_STATUS_INVALID_ARGUMENT,
               sdm_session_connect_with(session, "pgsql", "not-an-ip", 0, &tunnel, &err));
  CHECK(tunnel == (sdm_tunnel *)UNTOUCHED, "tunnel_out written on failure");
}

/* A query through the tunnel with libpq. Returns the number of rows checked. */
static void check_libpq_query(uint16_t port) {
  char conninfo[512];
  snprintf(conninfo, sizeof conninfo,
           "host=127.0.0.1 port=%u user=%s password=%s dbname=%s sslmode=disable "
           "connect_timeout=15",
           (unsigned)port, pg_user, pg_password, pg_dbname);
  PGconn *conn = PQconnectdb(conninfo);
  CHECK(PQstatus(conn) == CONNECTION_OK, "libpq connect through the tunnel: %s",
        PQerrorMessage(conn));
  if (PQstatus(conn) == CONNECTION_OK) {
    PGresult *res = PQexec(conn, "SELECT 40 + 2, current_user");
    CHECK(PQresultStatus(res) == PGRES_TUPLES_OK, "query: %s", PQerrorMessage(conn));
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
      CHECK(strcmp(PQgetvalue(res, 0, 0), "42") == 0, "40 + 2 = %s", PQgetvalue(res, 0, 0));
      CHECK(strcmp(PQgetvalue(res, 0, 1), pg_user) == 0, "current_user %s",
            PQgetvalue(res, 0, 1));
    }
    PQclear(res);
  }
  PQfinish(conn);
}

static void test_tunnel(sdm_session *session) {
  sdm_tunnel *pg = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_connect(session, "pgsql", &pg, &err));
  if (pg == NULL) return;

  const char *resource = NULL;
  CHECK(sdm_tunnel_resource_name(pg, &resource) == SDM_STATUS_OK &&
            strcmp(resource, "pgsql_1_31") == 0,
        "\"pgsql\" picks pgsql_1_31");
  uint16_t port = 0;
  CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_port(pg, &port, &err));
  CHECK(port != 0, "a port");
  char expected[64];
  snprintf(expected, sizeof expected, "127.0.0.1:%u", (unsigned)port);

  /* The address, and buffers too small for it. */
  char small[4] = {'x', 'x', 'x', 'x'};
  size_t needed = 0;
  CHECK_STATUS(SDM_STATUS_BUFFER_TOO_SMALL,
               sdm_tunnel_local_addr(pg, small, sizeof small, &needed, &err));
  CHECK(needed == strlen(expected) + 1, "needed %zu for %s", needed, expected);
  CHECK(small[0] == 'x', "nothing written to a small buffer");
  needed = 0;
  CHECK_STATUS(SDM_STATUS_BUFFER_TOO_SMALL, sdm_tunnel_local_addr(pg, NULL, 0, &needed, &err));
  CHECK(needed == strlen(expected) + 1, "size query: %zu", needed);
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_tunnel_local_addr(pg, NULL, 16, &needed, &err));
  char addr[64];
  CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_local_addr(pg, addr, needed, NULL, &err));
  CHECK(strcmp(addr, expected) == 0, "local addr %s", addr);
  char host[16];
  CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_host(pg, host, sizeof host, NULL, &err));
  CHECK(strcmp(host, "127.0.0.1") == 0, "host %s", host);
  CHECK_STATUS(SDM_STATUS_BUFFER_TOO_SMALL, sdm_tunnel_host(pg, host, 9, &needed, &err));
  CHECK(needed == 10, "host needs 10 bytes, got %zu", needed);
  bool open = false;
  CHECK(sdm_tunnel_is_open(pg, &open) == SDM_STATUS_OK && open, "open");

  check_libpq_query(port);
  check_libpq_query(port); /* a second local connection through the same tunnel */

  /* Status shows the tunnel. */
  sdm_status_report *report = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_status(session, &report, &err));
  CHECK(sdm_status_report_len(report) == 3, "3 rows");
  for (size_t i = 0; i < sdm_status_report_len(report); i++) {
    const char *name = NULL, *local = (const char *)UNTOUCHED, *kind = NULL;
    bool connected = false;
    uint16_t row_port = 1;
    CHECK(sdm_status_report_name(report, i, &name) == SDM_STATUS_OK, "row name");
    CHECK(sdm_status_report_kind(report, i, &kind) == SDM_STATUS_OK, "row kind");
    CHECK(sdm_status_report_connected(report, i, &connected) == SDM_STATUS_OK, "connected");
    CHECK(sdm_status_report_local_addr(report, i, &local) == SDM_STATUS_OK, "local addr");
    CHECK(sdm_status_report_port(report, i, &row_port) == SDM_STATUS_OK, "row port");
    int is_pg = strcmp(name, "pgsql_1_31") == 0;
    CHECK(connected == is_pg, "%s connected=%d", name, connected);
    if (is_pg) {
      CHECK(local != NULL && strcmp(local, expected) == 0, "status addr %s", local);
      CHECK(row_port == port, "status port %u", (unsigned)row_port);
      CHECK(strcmp(kind, "postgres") == 0, "status kind %s", kind);
    } else {
      CHECK(local == NULL, "%s not connected has no address", name);
      CHECK(row_port == 0, "%s has no port", name);
    }
  }
  const char *text = NULL, *account = NULL;
  CHECK(sdm_status_report_text(report, &text) == SDM_STATUS_OK && strstr(text, "pgsql_1_31") &&
            strstr(text, "DATASOURCE NAME") && strstr(text, "connected"),
        "status text:\n%s", text ? text : "(null)");
  CHECK(sdm_status_report_account(report, &account) == SDM_STATUS_OK &&
            strcmp(account, "etl") == 0,
        "status account");
  size_t connections = 9;
  CHECK(sdm_status_report_connections(report, 3, &connections) == SDM_STATUS_INVALID_ARGUMENT,
        "row 3 is out of range");
  CHECK(sdm_status_report_len(NULL) == 0, "len of NULL report");
  CHECK(sdm_status_report_text(NULL, &text) == SDM_STATUS_NULL_ARGUMENT, "text of NULL");
  sdm_status_report_free(report);
  sdm_status_report_free(NULL);

  /* The same port again: PORT_IN_USE. */
  sdm_tunnel *clash = (sdm_tunnel *)UNTOUCHED;
  CHECK_STATUS(SDM_STATUS_PORT_IN_USE,
               sdm_session_connect_with(session, "server-echo", NULL, port, &clash, &err));
  CHECK(clash == (sdm_tunnel *)UNTOUCHED, "no tunnel on a port in use");

  /* An explicit bind address; echo through it. */
  sdm_tunnel *echo = NULL;
  CHECK_STATUS(SDM_STATUS_OK,
               sdm_session_connect_with(session, "server-echo", "127.0.0.1", 0, &echo, &err));
  uint16_t echo_port = 0;
  CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_port(echo, &echo_port, &err));
  CHECK(net_echo_tcp(echo_port, "hello through a tunnel\n"), "echo through the tunnel");

  /* Close: the port is released, later calls give CLOSED, closing again is fine. */
  CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_close(pg, &err));
  CHECK(net_port_is_free(port), "port %u is free after close", (unsigned)port);
  CHECK(sdm_tunnel_is_open(pg, &open) == SDM_STATUS_OK && !open, "closed");
  uint16_t closed_port = 7;
  sdm_error *err = NULL;
  CHECK(sdm_tunnel_port(pg, &closed_port, &err) == SDM_STATUS_CLOSED, "port of closed tunnel");
  CHECK(closed_port == 7, "port_out written for a closed tunnel");
  CHECK(err && strstr(sdm_error_message(err), "closed"), "closed message: %s",
        err ? sdm_error_message(err) : "(none)");
  sdm_error_free(err);
  CHECK_STATUS(SDM_STATUS_CLOSED, sdm_tunnel_local_addr(pg, addr, sizeof addr, NULL, &err));
  CHECK_STATUS(SDM_STATUS_CLOSED, sdm_tunnel_host(pg, addr, sizeof addr, NULL, &err));
  CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_close(pg, &err));
  sdm_error *reason = (sdm_error *)UNTOUCHED;
  CHECK(sdm_tunnel_close_reason(pg, &reason) == SDM_STATUS_OK && reason == NULL,
        "closed by its owner: no reason");
  CHECK(sdm_tunnel_resource_name(pg, &resource) == SDM_STATUS_OK, "name of a closed tunnel");
  CHECK(net_connect_local(port) < 0, "nothing listens on a closed tunnel's port");
  sdm_tunnel_free(pg);

  /* Disconnect by substring closes the tunnel; its handle stays valid. */
  CHECK_STATUS(SDM_STATUS_RESOURCE_NOT_FOUND, sdm_session_disconnect(session, "pgsql", &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_session_disconnect(session, NULL, &err));
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_disconnect(session, "server", &err));
  CHECK(sdm_tunnel_is_open(echo, &open) == SDM_STATUS_OK && !open, "disconnected");
  CHECK_STATUS(SDM_STATUS_CLOSED, sdm_tunnel_port(echo, &echo_port, &err));
  sdm_tunnel_free(echo);
  sdm_tunnel_free(NULL);

  /* NULL tunnel everywhere. */
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_tunnel_port(NULL, &port, &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_tunnel_port(NULL, NULL, &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_tunnel_local_addr(NULL, addr, 8, NULL, &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_tunnel_host(NULL, addr, 8, NULL, &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_tunnel_close(NULL, &err));
  CHECK(sdm_tunnel_is_open(NULL, &open) == SDM_STATUS_NULL_ARGUMENT, "is_open(NULL)");
  CHECK(sdm_tunnel_close_reason(NULL, &reason) == SDM_STATUS_NULL_ARGUMENT, "reason(NULL)");
  CHECK(sdm_tunnel_resource_name(NULL, &resource) == SDM_STATUS_NULL_ARGUMENT, "name(NULL)");
}

static void test_dial(sdm_session *session) {
  int fd = -1;
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_dial(session, "server-echo", &fd, &err));
  CHECK(fd >= 0, "a file descriptor");
  if (fd >= 0) {
    CHECK(net_echo_fd(fd, "ping over a dialed fd\n"), "echo over the dialed fd");
    CHECK(net_echo_fd(fd, "and again\n"), "second echo over the dialed fd");
    close(fd);
  }

  /* The PostgreSQL wire protocol over a dialed fd: SSLRequest, answered 'S' or 'N'. */
  fd = -1;
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_dial(session, "pgsql", &fd, &err));
  if (fd >= 0) {
    const unsigned char ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    char answer = 0;
    CHECK(net_write_all(fd, ssl_request, sizeof ssl_request) == 0, "send SSLRequest");
    CHECK(net_read_exact(fd, &answer, 1) == 0 && (answer == 'N' || answer == 'S'),
          "PostgreSQL answers the SSLRequest: %c", answer ? answer : '?');
    close(fd);
  }

  fd = -7;
  CHECK_STATUS(SDM_STATUS_AMBIGUOUS_RESOURCE, sdm_session_dial(session, "echo", &fd, &err));
  CHECK_STATUS(SDM_STATUS_RESOURCE_NOT_FOUND, sdm_session_dial(session, "secret-db", &fd, &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_session_dial(session, "server-echo", NULL, &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_session_dial(session, NULL, &fd, &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_session_dial(NULL, "server-echo", &fd, &err));
  CHECK(fd == -7, "fd_out written on failure");
}

/* Freeing a session closes its tunnels; their handles stay valid and report CLOSED. */
static void test_session_free_closes_tunnels(void) {
  sdm_session *session = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_login(token, &session, &err));
  sdm_tunnel *tunnel = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_connect(session, "server-echo", &tunnel, &err));
  uint16_t port = 0;
  CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_port(tunnel, &port, &err));
  int dialed = -1;
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_dial(session, "server-echo", &dialed, &err));
  sdm_session_free(session);
  CHECK(net_port_is_free(port), "the tunnel's port is free once its session is freed");
  CHECK_STATUS(SDM_STATUS_CLOSED, sdm_tunnel_port(tunnel, &port, &err));
  bool open = true;
  CHECK(sdm_tunnel_is_open(tunnel, &open) == SDM_STATUS_OK && !open, "closed with session");
  CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_close(tunnel, &err));
  sdm_tunnel_free(tunnel);
  if (dialed >= 0) {
    CHECK(net_echo_fd(dialed, "a dialed fd outlives its session\n"), "dialed fd still works");
    close(dialed);
  }
}

static void test_logout(void) {
  sdm_session *session = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_login(token, &session, &err));
  sdm_tunnel *tunnel = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_connect(session, "pgsql", &tunnel, &err));
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_logout(session, &err));
  bool open = true;
  CHECK(sdm_tunnel_is_open(tunnel, &open) == SDM_STATUS_OK && !open, "logout closes tunnels");
  sdm_resource_list *list = (sdm_resource_list *)UNTOUCHED;
  CHECK_STATUS(SDM_STATUS_CLOSED, sdm_session_list_resources(session, &list, &err));
  CHECK(list == (sdm_resource_list *)UNTOUCHED, "no list after logout");
  sdm_tunnel *again = NULL;
  CHECK_STATUS(SDM_STATUS_CLOSED, sdm_session_connect(session, "pgsql", &again, &err));
  int fd = -1;
  CHECK_STATUS(SDM_STATUS_CLOSED, sdm_session_dial(session, "server-echo", &fd, &err));
  sdm_status_report *report = NULL;
  CHECK_STATUS(SDM_STATUS_CLOSED, sdm_session_status(session, &report, &err));
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_logout(session, &err));
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_disconnect_all(session, &err));
  sdm_tunnel_free(tunnel);
  sdm_session_free(session);

  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_session_logout(NULL, &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_session_disconnect_all(NULL, &err));
  CHECK_STATUS(SDM_STATUS_NULL_ARGUMENT, sdm_session_status(NULL, &report, &err));
  sdm_session_free(NULL);
}

static void test_error_accessors_on_null(void) {
  CHECK(sdm_error_code(NULL) == SDM_STATUS_NULL_ARGUMENT, "code of NULL");
  CHECK(sdm_error_message(NULL) == NULL, "message of NULL");
  CHECK(sdm_error_kind(NULL) == NULL, "kind of NULL");
  CHECK(!sdm_error_retryable(NULL), "retryable of NULL");
  CHECK(sdm_error_candidates_len(NULL) == 0, "candidates of NULL");
  CHECK(sdm_error_candidate(NULL, 0) == NULL, "candidate of NULL");
  sdm_error_free(NULL);
}

int main(void) {
  token = fixture("SDM_TEST_TOKEN");
  api_url = fixture("SDM_TEST_API_URL");
  pg_user = fixture("SDM_TEST_PG_USER");
  pg_password = fixture("SDM_TEST_PG_PASSWORD");
  pg_dbname = fixture("SDM_TEST_PG_DBNAME");

  test_version();
  test_error_accessors_on_null();
  test_login_failures();
  test_options_and_env();

  sdm_session *session = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_login(token, &session, &err));
  if (session != NULL) {
    test_resource_list(session);
    test_connect_failures(session);
    test_tunnel(session);
    test_dial(session);
    CHECK_STATUS(SDM_STATUS_OK, sdm_session_logout(session, &err));
    sdm_session_free(session);
  }
  test_session_free_closes_tunnels();
  test_logout();
  return check_summary("test_api");
}
