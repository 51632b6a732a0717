/*
 * sdm_set_log_callback from C: events arrive with their level, target and message, from
 * libsdm's own threads and from threads of the caller at once; the level filter holds; a NULL
 * callback stops delivery, and once sdm_set_log_callback returns the old callback is neither
 * running nor called again (its userdata can be freed); bad levels are refused.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdint.h>

#include "check.h"

static const char *token;

/* What the callback saw; guarded by `lock` (the callback runs on several threads at once). */
struct seen {
  pthread_mutex_t lock;
  int calls;
  int tunnel_open_info; /* "tunnel open" at SDM_LOG_LEVEL_INFO from sdm_core::tunnel */
  int below_warn;       /* events more verbose than WARN */
  int bad_strings;      /* NULL or empty target/message */
  int other_threads;    /* calls on a thread other than the one that set the callback */
  pthread_t main_thread;
};

static void on_log(void *userdata, sdm_log_level level, const char *target, const char *message) {
  struct seen *seen = (struct seen *)userdata;
  pthread_mutex_lock(&seen->lock);
  seen->calls++;
  if (target == NULL || message == NULL || target[0] == '\0') {
    seen->bad_strings++;
  } else if (level == SDM_LOG_LEVEL_INFO && strcmp(target, "sdm_core::tunnel") == 0 &&
             strstr(message, "tunnel open") != NULL && strstr(message, "resource=") != NULL) {
    seen->tunnel_open_info++;
  }
  if (level > SDM_LOG_LEVEL_WARN) seen->below_warn++;
  if (!pthread_equal(pthread_self(), seen->main_thread)) seen->other_threads++;
  pthread_mutex_unlock(&seen->lock);
}

static int snapshot(struct seen *seen, int *field) {
  pthread_mutex_lock(&seen->lock);
  int value = *field;
  pthread_mutex_unlock(&seen->lock);
  return value;
}

/* Opens and closes a tunnel to server-echo (logs "tunnel open" and "tunnel closed"). */
static void open_and_close(sdm_session *session) {
  sdm_tunnel *tunnel = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_session_connect(session, "server-echo", &tunnel, &err));
  sdm_tunnel_free(tunnel);
}

static void *worker(void *arg) {
  sdm_session *session = (sdm_session *)arg;
  for (int i = 0; i < 5; i++) open_and_close(session);
  return NULL;
}

int main(void) {
  token = fixture("SDM_TEST_TOKEN");
  struct seen seen;
  memset(&seen, 0, sizeof seen);
  pthread_mutex_init(&seen.lock, NULL);
  seen.main_thread = pthread_self();

  CHECK_STATUS(SDM_STATUS_INVALID_ARGUMENT, sdm_set_log_callback(on_log, &seen, 0, &err));
  CHECK_STATUS(SDM_STATUS_INVALID_ARGUMENT, sdm_set_log_callback(on_log, &seen, 6, &err));
  CHECK_STATUS(SDM_STATUS_OK, sdm_set_log_callback(on_log, &seen, SDM_LOG_LEVEL_INFO, &err));

  sdm_session *session = NULL;
  CHECK_STATUS(SDM_STATUS_OK, sdm_login(token, &session, &err));
  if (session == NULL) return check_summary("test_log");

  /* Four threads of ours open tunnels while libsdm's threads log too. */
  pthread_t threads[4];
  for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, worker, session);
  for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
  CHECK(snapshot(&seen, &seen.tunnel_open_info) >= 20, "a \"tunnel open\" event per tunnel: %d",
        snapshot(&seen, &seen.tunnel_open_info));
  CHECK(snapshot(&seen, &seen.bad_strings) == 0, "every event has a target and a message");
  CHECK(snapshot(&seen, &seen.other_threads) > 0, "events from other threads");

  /* WARN and above only: opening a tunnel (INFO) says nothing now. */
  CHECK_STATUS(SDM_STATUS_OK, sdm_set_log_callback(on_log, &seen, SDM_LOG_LEVEL_WARN, &err));
  pthread_mutex_lock(&seen.lock);
  seen.below_warn = 0;
  pthread_mutex_unlock(&seen.lock);
  open_and_close(session);
  CHECK(snapshot(&seen, &seen.below_warn) == 0, "no event below WARN: %d",
        snapshot(&seen, &seen.below_warn));

  /* NULL stops delivery; afterwards nothing reaches the old callback. */
  CHECK_STATUS(SDM_STATUS_OK, sdm_set_log_callback(on_log, &seen, SDM_LOG_LEVEL_TRACE, &err));
  CHECK_STATUS(SDM_STATUS_OK, sdm_set_log_callback(NULL, NULL, 0, &err));
  int calls = snapshot(&seen, &seen.calls);
  open_and_close(session);
  CHECK(snapshot(&seen, &seen.calls) == calls, "no call after the callback was removed");

  CHECK_STATUS(SDM_STATUS_OK, sdm_session_logout(session, &err));
  sdm_session_free(session);
  pthread_mutex_destroy(&seen.lock);
  return check_summary("test_log");
}
