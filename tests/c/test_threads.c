/*
 * One session shared by 8 threads, each opening and closing tunnels (with an echo through
 * every one), dialing, listing and reading the status at the same time.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdint.h>

#include "check.h"
#include "net.h"

enum { THREADS = 8, ROUNDS = 6 };

struct worker {
  sdm_session *session;
  int index;
  int ok;      /* operations that succeeded */
  int failed;  /* operations that failed (details on stderr) */
};

static void note(struct worker *w, int ok, const char *what, sdm_error *err) {
  if (ok) {
    w->ok++;
  } else {
    w->failed++;
    fprintf(stderr, "thread %d: %s failed: %s\n", w->index, what,
            err ? sdm_error_message(err) : "");
  }
}

static void *work(void *arg) {
  struct worker *w = (struct worker *)arg;
  for (int round = 0; round < ROUNDS; round++) {
    char msg[64];
    snprintf(msg, sizeof msg, "thread %d round %d\n", w->index, round);
    sdm_error *err = NULL;

    /* Open a tunnel, echo through it, close it. */
    sdm_tunnel *tunnel = NULL;
    sdm_status status = sdm_session_connect(w->session, "server-echo", &tunnel, &err);
    note(w, status == SDM_STATUS_OK, "connect", err);
    sdm_error_free(err);
    err = NULL;
    if (tunnel != NULL) {
      uint16_t port = 0;
      note(w, sdm_tunnel_port(tunnel, &port, NULL) == SDM_STATUS_OK, "port", NULL);
      note(w, net_echo_tcp(port, msg), "echo through the tunnel", NULL);
      /* Every other round closes explicitly; the others leave it to sdm_tunnel_free. */
      if (round % 2 == 0) {
        note(w, sdm_tunnel_close(tunnel, NULL) == SDM_STATUS_OK, "close", NULL);
        bool open = true;
        note(w, sdm_tunnel_is_open(tunnel, &open) == SDM_STATUS_OK && !open, "closed", NULL);
      }
      sdm_tunnel_free(tunnel);
    }

    /* A dialed connection. */
    int fd = -1;
    status = sdm_session_dial(w->session, "server-echo", &fd, &err);
    note(w, status == SDM_STATUS_OK, "dial", err);
    sdm_error_free(err);
    err = NULL;
    if (fd >= 0) {
      note(w, net_echo_fd(fd, msg), "echo over the dialed fd", NULL);
      close(fd);
    }

    /* Reads that run beside the others. */
    if (w->index % 2 == 0) {
      sdm_resource_list *list = NULL;
      status = sdm_session_list_resources(w->session, &list, &err);
      note(w, status == SDM_STATUS_OK && sdm_resource_list_len(list) == 3, "list", err);
      sdm_resource_list_free(list);
    } else {
      sdm_status_report *report = NULL;
      status = sdm_session_status(w->session, &report, &err);
      note(w, status == SDM_STATUS_OK && sdm_status_report_len(report) == 3, "status", err);
      sdm_status_report_free(report);
    }
    sdm_error_free(err);
  }
  return NULL;
}

int main(void) {
  const char *token = fixture("SDM_TEST_TOKEN");
  sdm_session *session = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_login(token, &session, &err));
  if (session == NULL) return check_summary("test_threads");

  struct worker workers[THREADS];
  pthread_t threads[THREADS];
  int started = 0;
  for (int i = 0; i < THREADS; i++) {
    workers[i] = (struct worker){.session = session, .index = i, .ok = 0, .failed = 0};
    if (pthread_create(&threads[i], NULL, work, &workers[i]) == 0) started++;
  }
  CHECK(started == THREADS, "started %d of %d threads", started, THREADS);
  int ok = 0;
  for (int i = 0; i < started; i++) {
    pthread_join(threads[i], NULL);
    CHECK(workers[i].failed == 0, "thread %d: %d operations failed", i, workers[i].failed);
    ok += workers[i].ok;
  }
  /* connect, port, echo, (close, closed), dial, echo, list|status per round. */
  CHECK(ok == THREADS * (ROUNDS * 6 + ROUNDS / 2 * 2), "%d operations succeeded", ok);

  /* Every tunnel is closed: the status shows none connected. */
  sdm_status_report *report = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_status(session, &report, &err));
  for (size_t i = 0; i < sdm_status_report_len(report); i++) {
    bool connected = true;
    CHECK(sdm_status_report_connected(report, i, &connected) == SDM_STATUS_OK && !connected,
          "row %zu still connected", i);
  }
  sdm_status_report_free(report);
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_logout(session, &err));
  sdm_session_free(session);
  return check_summary("test_threads");
}
