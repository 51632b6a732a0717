/* The smallest libsdm program: log in with $SDM_SERVICE_TOKEN, open a tunnel to "pgsql". */
#include <stdio.h>
#include <sdm.h>

int main(void) {
  sdm_session *session = NULL;
  sdm_tunnel *tunnel = NULL;
  sdm_error *error = NULL;
  const char *name = NULL;
  char addr[64];
  if (sdm_login_from_env(&session, &error) != SDM_STATUS_OK ||
      sdm_session_connect(session, "pgsql", &tunnel, &error) != SDM_STATUS_OK ||
      sdm_tunnel_local_addr(tunnel, addr, sizeof addr, NULL, &error) != SDM_STATUS_OK) {
    fprintf(stderr, "sdm: %s\n", sdm_error_message(error));
    sdm_error_free(error);
    sdm_tunnel_free(tunnel);
    sdm_session_free(session);
    return 1;
  }
  sdm_tunnel_resource_name(tunnel, &name);
  printf("%s at %s\n", name, addr); /* point any PostgreSQL client here */
  sdm_tunnel_free(tunnel);
  sdm_session_free(session);
  return 0;
}
