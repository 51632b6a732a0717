/*
 * Socket helpers for the libsdm C tests: an echo round trip over TCP or over a file
 * descriptor from sdm_session_dial, and a check that a local port is free. Every wait is
 * bounded by poll() with a timeout. Needs _POSIX_C_SOURCE >= 200809L.
 */
#ifndef SDM_TEST_NET_H
#define SDM_TEST_NET_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { NET_TIMEOUT_MS = 15000 };

/* Writes all of `len` bytes. Returns 0 on success. */
static inline int net_write_all(int fd, const void *data, size_t len) {
  const char *p = (const char *)data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads exactly `len` bytes, waiting at most NET_TIMEOUT_MS for each chunk. Returns 0 on
 * success, -1 on error, end of stream or timeout. */
static inline int net_read_exact(int fd, void *data, size_t len) {
  char *p = (char *)data;
  while (len > 0) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN, .revents = 0};
    int ready = poll(&pfd, 1, NET_TIMEOUT_MS);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return -1;
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Sends `msg` on `fd` and checks that the same bytes come back. Returns 1 when they do. */
static inline int net_echo_fd(int fd, const char *msg) {
  char back[256];
  size_t len = strlen(msg);
  if (len > sizeof back) return 0;
  if (net_write_all(fd, msg, len) != 0) return 0;
  if (net_read_exact(fd, back, len) != 0) return 0;
  return memcmp(back, msg, len) == 0;
}

/* A TCP connection to 127.0.0.1:port, or -1. */
static inline int net_connect_local(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* An echo round trip through a tunnel listening on 127.0.0.1:port. Returns 1 on success. */
static inline int net_echo_tcp(uint16_t port, const char *msg) {
  int fd = net_connect_local(port);
  if (fd < 0) return 0;
  int ok = net_echo_fd(fd, msg);
  close(fd);
  return ok;
}

/* Whether a listener could bind 127.0.0.1:port now (SO_REUSEADDR, so only another listener
 * on the port makes this fail, not connections in TIME_WAIT). */
static inline int net_port_is_free(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int ok = bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(fd, 1) == 0;
  close(fd);
  return ok;
}

#endif /* SDM_TEST_NET_H */
