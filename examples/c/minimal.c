/* The smallest libsdm program (the one in sdm-ffi/README.md): log in with the token in
 * SDM_SERVICE_TOKEN and open a tunnel to "pgsql". */
#include <stdio.h>
#include <sdm.h>

int main(void) { /* SDM_SERVICE_TOKEN=sdm_svc_… ./app */
  sdm_session *s = NULL; sdm_tunnel *t = NULL; sdm_error *e = NULL;
  char addr[64];
  if (sdm_login_from_env(&s, &e) == SDM_STATUS_OK &&
      sdm_session_connect(s, "pgsql", &t, &e) == SDM_STATUS_OK &&
      sdm_tunnel_local_addr(t, addr, sizeof addr, NULL, &e) == SDM_STATUS_OK)
    printf("pgsql at %s\n", addr);                      /* point any PostgreSQL client here */
  else
    fprintf(stderr, "sdm: %s\n", sdm_error_message(e)); /* what failed, what to do */
  int failed = e != NULL;
  sdm_error_free(e);
  sdm_tunnel_free(t);  /* every _free accepts NULL */
  sdm_session_free(s); /* closes its tunnels */
  return failed;
}
