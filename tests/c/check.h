/*
 * A minimal test harness for the libsdm C tests: CHECK counts passes and failures, and each
 * program ends with `check_summary`, which prints "NAME: N passed, N failed" and returns the
 * exit code. Fixture values come from environment variables set by
 * scripts/suites/10-c-and-go.sh.
 */
#ifndef SDM_TEST_CHECK_H
#define SDM_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdm.h"

static int check_passed;
static int check_failed;

#define CHECK(cond, ...)                                                              \
  do {                                                                                \
    if (cond) {                                                                       \
      check_passed++;                                                                 \
    } else {                                                                          \
      check_failed++;                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);        \
      fprintf(stderr, __VA_ARGS__);                                                   \
      fputc('\n', stderr);                                                            \
    }                                                                                 \
  } while (0)

/* Checks that `call` (which takes `&err` as its sdm_error **) returns `expected`; prints the
 * error message when it does not. Frees the error. */
#define CHECK_STATUS(expected, call)                                                  \
  do {                                                                                \
    sdm_error *err = NULL;                                                            \
    sdm_status got_ = (call);                                                         \
    if (got_ == (expected)) {                                                         \
      check_passed++;                                                                 \
    } else {                                                                          \
      check_failed++;                                                                 \
      fprintf(stderr, "%s:%d: %s: expected %s, got %s: %s\n", __FILE__, __LINE__,     \
              #call, sdm_status_name(expected), sdm_status_name(got_),                \
              err ? sdm_error_message(err) : "(no error object)");                    \
    }                                                                                 \
    sdm_error_free(err);                                                              \
  } while (0)

/* A required environment variable (set by the suite script from the sdm-fixture). */
static const char *fixture(const char *name) {
  const char *value = getenv(name);
  if (value == NULL || value[0] == '\0') {
    fprintf(stderr, "environment variable %s is not set: run these tests through "
                    "scripts/suites/10-c-and-go.sh, which starts sdm-fixture\n", name);
    exit(2);
  }
  return value;
}

static int check_summary(const char *name) {
  printf("%s: %d passed, %d failed\n", name, check_passed, check_failed);
  fflush(stdout);
  return check_failed == 0 && check_passed > 0 ? 0 : 1;
}

#endif /* SDM_TEST_CHECK_H */
