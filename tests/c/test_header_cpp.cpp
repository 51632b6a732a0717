// include/sdm.h from C++: the header compiles as C++17 with -Wall -Wextra -Wpedantic -Werror,
// its declarations have C linkage (the program links against libsdm), and handles fit RAII.
#include "sdm.h"

#include <cstdio>
#include <cstring>
#include <memory>
#include <type_traits>

static_assert(SDM_STATUS_OK == 0, "0 is success");
static_assert(SDM_STATUS_INTERNAL == 13, "kind codes are stable");
static_assert(SDM_STATUS_NULL_ARGUMENT == 100, "C interface codes are stable");
static_assert(std::is_same<decltype(sdm_login(nullptr, nullptr, nullptr)), sdm_status>::value,
              "functions return sdm_status");

struct ErrorFree {
  void operator()(sdm_error *e) const { sdm_error_free(e); }
};
struct SessionFree {
  void operator()(sdm_session *s) const { sdm_session_free(s); }
};
using Error = std::unique_ptr<sdm_error, ErrorFree>;
using Session = std::unique_ptr<sdm_session, SessionFree>;

int main() {
  int passed = 0, failed = 0;
  auto check = [&](bool ok, const char *what) {
    if (ok) {
      passed++;
    } else {
      failed++;
      std::fprintf(stderr, "check failed: %s\n", what);
    }
  };
  check(std::strcmp(sdm_version(), SDM_VERSION_STRING) == 0, "sdm_version matches the header");

  sdm_session *raw = nullptr;
  sdm_error *raw_error = nullptr;
  sdm_status status = sdm_login("sdm_svc_not-really", &raw, &raw_error);
  Session session(raw);
  Error error(raw_error);
  check(status == SDM_STATUS_INVALID_TOKEN, "a bad token is INVALID_TOKEN");
  check(!session, "no session on failure");
  check(error && sdm_error_code(error.get()) == SDM_STATUS_INVALID_TOKEN, "error code");
  check(error && std::strlen(sdm_error_message(error.get())) > 0, "error message");

  sdm_options *options = nullptr;
  check(sdm_options_new(&options) == SDM_STATUS_OK, "options");
  check(sdm_options_add_label(options, "lang", "c++") == SDM_STATUS_OK, "label");
  sdm_options_free(options);

  std::printf("test_header_cpp: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
