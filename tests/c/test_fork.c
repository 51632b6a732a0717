/*
 * fork(): the child cannot use its parent's session or tunnel (CLOSED, and freeing them does
 * not hang), logs in itself and uses its own tunnel and dial; the parent's tunnel keeps
 * working while and after the child runs. At the fork another parent thread is inside
 * sdm_login_with_options, waiting on an API that never answers: the child must not inherit
 * that call, and the parent's call ends as usual afterwards.
 *
 * Built without AddressSanitizer (UBSan only): GCC 12's ASan allocator does not take its locks
 * around fork(), so a child forked while a libsdm thread allocates can hang in malloc; glibc's
 * malloc, which real programs use, is fork-safe. The fork happens while the parent's tunnel is
 * busy filling its warm connections, which is the case that matters.
 */
#define _POSIX_C_SOURCE 200809L

#include <poll.h>
#include <pthread.h>
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

/* A listener that accepts and never answers: an sdm API that hangs. */
static int silent_listener(uint16_t *port_out) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 4) != 0 ||
      getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
    close(fd);
    return -1;
  }
  *port_out = ntohs(addr.sin_port);
  return fd;
}

struct waiting_login {
  const char *token;
  char url[64];
  sdm_status result;
};

/* Runs in its own thread: a login that waits until the silent API closes its connection. */
static void *login_to_silent_api(void *arg) {
  struct waiting_login *w = arg;
  sdm_options *options = NULL;
  sdm_session *session = NULL;
  sdm_error *error = NULL;
  w->result = SDM_STATUS_INTERNAL;
  if (sdm_options_new(&options) != SDM_STATUS_OK) return NULL;
  sdm_options_set_token(options, w->token);
  sdm_options_set_api_url(options, w->url);
  sdm_options_set_timeout_ms(options, 120000);
  w->result = sdm_login_with_options(options, &session, &error);
  sdm_error_free(error);
  sdm_session_free(session);
  sdm_options_free(options);
  return NULL;
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

  /* Another thread waits inside a call while this one forks. */
  uint16_t silent_port = 0;
  int silent = silent_listener(&silent_port);
  CHECK(silent >= 0, "silent listener");
  struct waiting_login waiting = {.token = token};
  snprintf(waiting.url, sizeof waiting.url, "https://127.0.0.1:%u", (unsigned)silent_port);
  pthread_t waiter;
  CHECK(pthread_create(&waiter, NULL, login_to_silent_api, &waiting) == 0, "pthread_create");
  struct pollfd arrival = {.fd = silent, .events = POLLIN};
  CHECK(poll(&arrival, 1, 60000) == 1, "the login never reached the silent API");
  int held = accept(silent, NULL, NULL); /* the login is inside its call from here on */
  CHECK(held >= 0, "accept");

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
  /* The parent's waiting call ends once its API connection closes, with an error. */
  close(held);
  close(silent);
  pthread_join(waiter, NULL);
  CHECK(waiting.result != SDM_STATUS_OK, "a login to an API that never answered succeeded");
  CHECK(net_echo_tcp(port, "parent after the child\n"), "parent echo after the child");
  bool open = false;
  CHECK(sdm_tunnel_is_open(tunnel, &open) == SDM_STATUS_OK && open, "parent tunnel open");
  sdm_tunnel_free(tunnel);
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_logout(session, &err));
  sdm_session_free(session);
  return check_summary("test_fork");
}
