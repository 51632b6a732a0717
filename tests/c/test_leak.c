/*
 * Leak check: N (default 1000) cycles of login, connect, an echo, close, logout and free.
 * Built with AddressSanitizer, so LeakSanitizer reports any unreachable allocation at exit;
 * and the heap in use after the last cycle may exceed the heap after the warm-up cycles only
 * by a bound far below what one lost session or tunnel per cycle would add (memory that stays
 * reachable but grows, e.g. in a registry, is caught too).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>

#include "check.h"
#include "net.h"

#if defined(__SANITIZE_ADDRESS__)
/* From the AddressSanitizer runtime (sanitizer/allocator_interface.h). */
size_t __sanitizer_get_current_allocated_bytes(void);
#define HEAP_IN_USE() __sanitizer_get_current_allocated_bytes()
#else
#define HEAP_IN_USE() ((size_t)0)
#endif

/* Growth allowed between the warm-up and the end: 1 MiB over 900 cycles is about 1 KiB per
 * cycle, while a lost session or tunnel costs tens of KiB. */
enum { MAX_GROWTH = 1024 * 1024 };

static int cycle(const char *token, long i) {
  sdm_error *err = NULL;
  sdm_session *session = NULL;
  int ok = 1;
  if (sdm_login(token, &session, &err) != SDM_STATUS_OK) {
    fprintf(stderr, "cycle %ld: login: %s\n", i, sdm_error_message(err));
    sdm_error_free(err);
    return 0;
  }
  sdm_tunnel *tunnel = NULL;
  if (sdm_session_connect(session, "server-echo", &tunnel, &err) != SDM_STATUS_OK) {
    fprintf(stderr, "cycle %ld: connect: %s\n", i, sdm_error_message(err));
    sdm_error_free(err);
    err = NULL;
    ok = 0;
  } else {
    uint16_t port = 0;
    if (i % 10 == 0) {
      ok &= sdm_tunnel_port(tunnel, &port, NULL) == SDM_STATUS_OK && net_echo_tcp(port, "leak?\n");
      int fd = -1;
      ok &= sdm_session_dial(session, "server-echo", &fd, NULL) == SDM_STATUS_OK;
      if (fd >= 0) {
        ok &= net_echo_fd(fd, "dial\n");
        close(fd);
      }
    }
    ok &= sdm_tunnel_close(tunnel, NULL) == SDM_STATUS_OK;
    sdm_tunnel_free(tunnel);
  }
  ok &= sdm_session_logout(session, NULL) == SDM_STATUS_OK;
  sdm_session_free(session);
  if (!ok) fprintf(stderr, "cycle %ld failed\n", i);
  return ok;
}

int main(int argc, char **argv) {
  const char *token = fixture("SDM_TEST_TOKEN");
  long cycles = argc > 1 ? strtol(argv[1], NULL, 10) : 1000;
  if (cycles < 20 || cycles > 100000) {
    fprintf(stderr, "usage: %s [CYCLES between 20 and 100000]\n", argv[0]);
    return 2;
  }
  long warmup = cycles / 10, good = 0;
  size_t after_warmup = 0;
  for (long i = 0; i < cycles; i++) {
    good += cycle(token, i);
    if (i + 1 == warmup) after_warmup = HEAP_IN_USE();
  }
  size_t at_end = HEAP_IN_USE();
  CHECK(good == cycles, "%ld of %ld cycles failed", cycles - good, cycles);
  long growth = (long)at_end - (long)after_warmup;
  printf("heap in use: %zu bytes after %ld cycles, %zu after %ld (growth %ld)\n", after_warmup,
         warmup, at_end, cycles, growth);
  CHECK(growth < MAX_GROWTH, "heap grew by %ld bytes over %ld cycles", growth, cycles - warmup);
  return check_summary("test_leak");
}
