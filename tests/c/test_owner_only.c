/*
 * Tunnels only their owner can use, from C: sdm_connect_options (same-user-only over TCP, a
 * private Unix socket), the honest address kind (sdm_tunnel_local_addr_kind: a TCP address or
 * a socket path, and no host or port for a socket), and another OS user who is refused while
 * the owner keeps working. The positive control: the same other user gets through a tunnel
 * opened with the defaults. The other-user half needs root (the suite runs as root, as CI
 * does) and the unprivileged user "sdmtest" that the PostgreSQL fixture runs as.
 */
#define _POSIX_C_SOURCE 200809L

#include <poll.h>
#include <pwd.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "check.h"
#include "net.h"

static const char *token;
static uid_t other_uid;
static gid_t other_gid;
static int have_other_user;

/* An AF_UNIX connection to `path`, or -1. */
static int connect_unix(const char *path) {
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof addr.sun_path) return -1;
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Whether another OS user gets an echo through the tunnel at `port` (TCP) or `path` (Unix):
 * a child process drops to that user and tries. Only async-signal-safe calls after fork(). */
static int other_user_gets_echo(uint16_t port, const char *path) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (setgid(other_gid) != 0 || setuid(other_uid) != 0) _exit(3);
    int fd = path != NULL ? connect_unix(path) : net_connect_local(port);
    if (fd < 0) _exit(2);
    _exit(net_echo_fd(fd, "other") ? 0 : 1);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

static sdm_tunnel *connect_echo(sdm_session *session, const sdm_connect_options *options) {
  sdm_tunnel *tunnel = NULL;
  CHECK_STATUS(SDM_STATUS_OK,
               sdm_session_connect_with_options(session, "server-echo", options, &tunnel, &err));
  return tunnel;
}

static void test_options_misuse(void) {
  CHECK(sdm_connect_options_new(NULL) == SDM_STATUS_NULL_ARGUMENT, "NULL options_out");
  CHECK(sdm_connect_options_set_port(NULL, 1) == SDM_STATUS_NULL_ARGUMENT, "NULL options");
  CHECK(sdm_connect_options_set_same_user_only(NULL, true) == SDM_STATUS_NULL_ARGUMENT,
        "NULL options");
  sdm_connect_options *options = NULL;
  CHECK(sdm_connect_options_new(&options) == SDM_STATUS_OK && options != NULL, "new options");
  CHECK(sdm_connect_options_set_bind_address(options, "localhost") ==
            SDM_STATUS_INVALID_ARGUMENT,
        "a name is not an IP address");
  CHECK(sdm_connect_options_set_bind_address(options, NULL) == SDM_STATUS_NULL_ARGUMENT,
        "NULL address");
  CHECK(sdm_connect_options_set_unix_socket(options, "") == SDM_STATUS_INVALID_ARGUMENT,
        "empty path");
  CHECK(sdm_connect_options_set_unix_socket(options, NULL) == SDM_STATUS_NULL_ARGUMENT,
        "NULL path");
  sdm_connect_options_free(options);
  sdm_connect_options_free(NULL);
}

static void test_default_tcp_tunnel(sdm_session *session) {
  /* NULL options: the defaults of sdm_session_connect, a TCP tunnel every local user may use. */
  sdm_tunnel *tunnel = connect_echo(session, NULL);
  if (tunnel == NULL) return;
  sdm_addr_kind kind = SDM_ADDR_KIND_UNIX;
  CHECK(sdm_tunnel_local_addr_kind(tunnel, &kind) == SDM_STATUS_OK && kind == SDM_ADDR_KIND_TCP,
        "a TCP tunnel by default");
  CHECK(sdm_tunnel_local_addr_kind(tunnel, NULL) == SDM_STATUS_NULL_ARGUMENT, "NULL kind_out");
  uint16_t port = 0;
  CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_port(tunnel, &port, &err));
  CHECK(net_echo_tcp(port, "mine"), "the owner's echo");
  if (have_other_user) {
    /* The positive control: without the option, another user does get through. */
    CHECK(other_user_gets_echo(port, NULL) == 0, "another user uses an open tunnel");
  }
  sdm_tunnel_free(tunnel);
}

static void test_same_user_only_tcp(sdm_session *session) {
  sdm_connect_options *options = NULL;
  CHECK(sdm_connect_options_new(&options) == SDM_STATUS_OK, "new options");
  CHECK(sdm_connect_options_set_same_user_only(options, true) == SDM_STATUS_OK, "same user");
  sdm_tunnel *tunnel = connect_echo(session, options);
  sdm_connect_options_free(options); /* copied by the connect */
  if (tunnel == NULL) return;
  uint16_t port = 0;
  CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_port(tunnel, &port, &err));
  CHECK(net_echo_tcp(port, "mine"), "the owner's echo");
  if (have_other_user) {
    int got = other_user_gets_echo(port, NULL);
    CHECK(got == 1, "another user is refused (child exit %d)", got);
    CHECK(net_echo_tcp(port, "still mine"), "the owner is unaffected by the refusal");
  }
  sdm_tunnel_free(tunnel);
}

static void test_private_unix_socket(sdm_session *session) {
  sdm_connect_options *options = NULL;
  CHECK(sdm_connect_options_new(&options) == SDM_STATUS_OK, "new options");
  CHECK(sdm_connect_options_set_private_unix_socket(options, true) == SDM_STATUS_OK, "unix");
  sdm_tunnel *tunnel = connect_echo(session, options);
  sdm_connect_options_free(options);
  if (tunnel == NULL) return;

  sdm_addr_kind kind = SDM_ADDR_KIND_TCP;
  CHECK(sdm_tunnel_local_addr_kind(tunnel, &kind) == SDM_STATUS_OK &&
            kind == SDM_ADDR_KIND_UNIX,
        "a Unix-socket tunnel says so");
  char path[256] = {0};
  CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_local_addr(tunnel, path, sizeof path, NULL, &err));
  CHECK(path[0] == '/' && strstr(path, "/socket") != NULL, "a socket path: %s", path);
  struct stat st;
  CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600,
        "%s is a socket of mode 0600", path);

  /* No host and no port: asking is an error that names the path, not 0.0.0.0:0. */
  uint16_t port = 7;
  sdm_error *error = NULL;
  CHECK(sdm_tunnel_port(tunnel, &port, &error) == SDM_STATUS_INVALID_ARGUMENT && port == 7,
        "no port for a Unix socket");
  CHECK(error != NULL && strstr(sdm_error_message(error), path) != NULL, "message: %s",
        error ? sdm_error_message(error) : "(none)");
  sdm_error_free(error);
  char host[64] = "untouched";
  CHECK_STATUS(SDM_STATUS_INVALID_ARGUMENT,
               sdm_tunnel_host(tunnel, host, sizeof host, NULL, &err));
  CHECK(strcmp(host, "untouched") == 0, "host buffer untouched");

  int fd = connect_unix(path);
  CHECK(fd >= 0 && net_echo_fd(fd, "over a socket"), "the owner's echo over the socket");
  if (fd >= 0) close(fd);
  if (have_other_user) {
    int got = other_user_gets_echo(0, path);
    CHECK(got == 2, "another user cannot even connect (child exit %d)", got);
  }

  /* The status report shows the path and no port. */
  sdm_status_report *report = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_status(session, &report, &err));
  for (size_t i = 0; report != NULL && i < sdm_status_report_len(report); i++) {
    const char *name = NULL, *local = NULL;
    uint16_t row_port = 1;
    sdm_status_report_name(report, i, &name);
    if (name == NULL || strcmp(name, "server-echo") != 0) continue;
    CHECK(sdm_status_report_local_addr(report, i, &local) == SDM_STATUS_OK && local != NULL &&
              strcmp(local, path) == 0,
          "status shows the path: %s", local ? local : "(null)");
    CHECK(sdm_status_report_port(report, i, &row_port) == SDM_STATUS_OK && row_port == 0,
          "status has no port: %u", (unsigned)row_port);
  }
  sdm_status_report_free(report);

  CHECK_STATUS(SDM_STATUS_OK, sdm_tunnel_close(tunnel, &err));
  CHECK(stat(path, &st) != 0, "the socket is removed with the tunnel");
  sdm_tunnel_free(tunnel);
}

int main(void) {
  token = fixture("SDM_TEST_TOKEN");
  if (geteuid() == 0) {
    struct passwd *pw = getpwnam("sdmtest");
    CHECK(pw != NULL, "running as root, the fixture's user sdmtest exists");
    if (pw != NULL) {
      other_uid = pw->pw_uid;
      other_gid = pw->pw_gid;
      have_other_user = 1;
    }
  } else {
    printf("not root: the other-user checks are skipped (they need to switch users)\n");
  }
  test_options_misuse();
  sdm_session *session = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_login(token, &session, &err));
  if (session != NULL) {
    test_default_tcp_tunnel(session);
    test_same_user_only_tcp(session);
    test_private_unix_socket(session);
    sdm_session_free(session);
  }
  return check_summary("test_owner_only");
}
