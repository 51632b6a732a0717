/*
 * fork(): the child cannot use its parent's session or tunnel (CLOSED, and freeing them does
 * not hang), logs in itself and uses its own tunnel and dial; the parent's tunnel keeps
 * working while and after the child runs.
 *
 * Built without AddressSanitizer (UBSan only): GCC 12's ASan allocator does not take its locks
 * around fork(), so a child forked while a libsdm thread allocates can hang in malloc; glibc's
 * malloc, which real programs use, is fork-safe. The fork happens while the parent's tunnel is
 * busy filling its warm connections, which is the case that matters.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "check.h"
#include "net.h"

/* The child: its result is its exit status (0 when every check passed). */
static int child(const char *token, sdm_session *inherited, sdm_tunnel *inherited_tunnel) {
  alarm(120); /* a hang in the child ends it instead of the whole suite */
  sdm_resource_list *list = NULL;
  CHECK_STATUS(SDM_STATUS_CLOSED, sdm_session_list_resources(inherited, &list, &err));
  uint16_t port = 0;
  CHECK_STATUS(SDM_STATUS_CLOSED, sdm_tunnel_port(inherited_tunnel, &port, &err));
  bool open = true;
  CHECK(sdm_tunnel_is_open(inherited_tunnel, &open) == SDM_STATUS_OK && !open,
        "an inherited tunnel is not open in the child");
  CHECK_STATUS(SDM_STATUS_CLOSED, sdm_tunnel_close(inherited_tunnel, &err));
  sdm_error *reason = NULL;
  CHECK(sdm_tunnel_close_reason(inherited_tunnel, &reason) == SDM_STATUS_CLOSED && !reason,
        "close reason of an inherited tunnel");
  const char *name = NULL;
  CHECK(sdm_session_account_name(inherited, &name) == SDM_STATUS_OK && strcmp(name, "etl") == 0,
        "plain accessors of an inherited session still read its data");
  /* Freeing inherited handles releases nothing of the parent's and returns. */
  sdm_tunnel_free(inherited_tunnel);
  sdm_session_free(inherited);

  sdm_session *session = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_login(token, &session, &err));
  if (session != NULL) {
    sdm_tunnel *tunnel = NULL;
    CHECK_STATUS(SDM_STATUS_OK, sdm_session_connect(session, "server-echo", &tunnel, &err));
    CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_port(tunnel, &port, &err));
    CHECK(net_echo_tcp(port, "from the child\n"), "echo through the child's tunnel");
    int fd = -1;
    CHECK_STATUS(SDM_STATUS_OK, sdm_session_dial(session, "server-echo", &fd, &err));
    if (fd >= 0) {
      CHECK(net_echo_fd(fd, "dialed in the child\n"), "echo over the child's dial");
      close(fd);
    }
    sdm_tunnel_free(tunnel);
    CHECK_STATUS(SDM_STATUS_OK, sdm_session_logout(session, &err));
    sdm_session_free(session);
  }
  printf("child: %d passed, %d failed\n", check_passed, check_failed);
  fflush(stdout);
  return check_failed == 0 ? 0 : 1;
}

int main(void) {
  const char *token = fixture("SDM_TEST_TOKEN");
  sdm_session *session = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_login(token, &session, &err));
  if (session == NULL) return check_summary("test_fork");
  sdm_tunnel *tunnel = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_connect(session, "server-echo", &tunnel, &err));
  uint16_t port = 0;
  CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_port(tunnel, &port, &err));
  CHECK(net_echo_tcp(port, "parent before fork\n"), "parent echo before fork");

  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    /* _exit: the child must not run the parent's exit handlers (or LeakSanitizer, which
     * would count the parent's deliberately abandoned handles). */
    _exit(child(token, session, tunnel));
  }
  CHECK(pid > 0, "fork failed");
  if (pid > 0) {
    CHECK(net_echo_tcp(port, "parent while the child runs\n"), "parent echo during the child");
    int wstatus = 0;
    CHECK(waitpid(pid, &wstatus, 0) == pid, "waitpid");
    CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0,
          "the child failed (exit %d, signal %d)", WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1,
          WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0);
  }
  CHECK(net_echo_tcp(port, "parent after the child\n"), "parent echo after the child");
  bool open = false;
  CHECK(sdm_tunnel_is_open(tunnel, &open) == SDM_STATUS_OK && open, "parent tunnel open");
  sdm_tunnel_free(tunnel);
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_logout(session, &err));
  sdm_session_free(session);
  return check_summary("test_fork");
}
