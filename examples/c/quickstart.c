/*
 * libsdm quickstart: log in with the token in SDM_SERVICE_TOKEN (or SDM_ADMIN_TOKEN), list
 * the granted resources, open a tunnel to one (argv[1], default "pgsql": an exact name or a
 * unique substring) and run a query through it with libpq. libpq reads the database user and
 * password from PGUSER / PGPASSWORD / PGDATABASE as usual.
 *
 *   cc quickstart.c $(pkg-config --cflags --libs sdm libpq) -o quickstart
 *   SDM_SERVICE_TOKEN=sdm_svc_... PGUSER=app PGPASSWORD=... ./quickstart pgsql
 */
#include <libpq-fe.h>
#include <sdm.h>
#include <stdio.h>

/* Prints the error of a failed call, frees it and returns 1. */
static int report(const char *what, sdm_status status, sdm_error *error) {
  fprintf(stderr, "%s failed (%s%s): %s\n", what, sdm_status_name((int)status),
          sdm_error_retryable(error) ? ", retryable" : "", sdm_error_message(error));
  sdm_error_free(error);
  return 1;
}

int main(int argc, char **argv) {
  const char *target = argc > 1 ? argv[1] : "pgsql";
  sdm_error *error = NULL;
  sdm_session *session = NULL;
  sdm_status status = sdm_login_from_env(&session, &error);
  if (status != SDM_STATUS_OK) return report("login", status, error);

  const char *account = NULL;
  sdm_session_account_name(session, &account);
  printf("logged in as %s (libsdm %s)\n", account, sdm_version());

  sdm_resource_list *list = NULL;
  status = sdm_session_list_resources(session, &list, &error);
  if (status != SDM_STATUS_OK) {
    sdm_session_free(session);
    return report("list", status, error);
  }
  for (size_t i = 0; i < sdm_resource_list_len(list); i++) {
    const char *name = NULL, *kind = NULL;
    sdm_resource_list_name(list, i, &name);
    sdm_resource_list_kind(list, i, &kind);
    printf("  %-20s %s\n", name, kind);
  }
  sdm_resource_list_free(list);

  sdm_tunnel *tunnel = NULL;
  status = sdm_session_connect(session, target, &tunnel, &error);
  if (status != SDM_STATUS_OK) {
    sdm_session_free(session);
    return report("connect", status, error);
  }
  char host[64];
  uint16_t port = 0;
  const char *resource = NULL;
  sdm_tunnel_host(tunnel, host, sizeof host, NULL, NULL);
  sdm_tunnel_port(tunnel, &port, NULL);
  sdm_tunnel_resource_name(tunnel, &resource);
  printf("tunnel to %s at %s:%u\n", resource, host, (unsigned)port);

  char conninfo[128];
  snprintf(conninfo, sizeof conninfo, "host=%s port=%u sslmode=disable connect_timeout=10", host,
           (unsigned)port);
  PGconn *conn = PQconnectdb(conninfo);
  int failed = 1;
  if (PQstatus(conn) != CONNECTION_OK) {
    fprintf(stderr, "PostgreSQL: %s", PQerrorMessage(conn));
  } else {
    PGresult *res = PQexec(conn, "SELECT 1 + 1");
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
      printf("1 + 1 = %s\n", PQgetvalue(res, 0, 0));
      failed = 0;
    } else {
      fprintf(stderr, "query: %s", PQerrorMessage(conn));
    }
    PQclear(res);
  }
  PQfinish(conn);

  sdm_tunnel_free(tunnel);
  status = sdm_session_logout(session, &error);
  sdm_session_free(session);
  if (status != SDM_STATUS_OK) return report("logout", status, error);
  return failed;
}
