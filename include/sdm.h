/*
 * sdm.h: the C interface of libsdm, the sdm client library.
 * SPDX-License-Identifier: Apache-2.0
 *
 * Conventions (every function follows them):
 * - Handles are opaque: sdm_session, sdm_tunnel, sdm_options, sdm_resource_list,
 *   sdm_status_report, sdm_error, sdm_connect_options. Each has one _free function, which
 *   accepts NULL.
 * - Fallible functions return an sdm_status; SDM_STATUS_OK (0) is success. Output
 *   parameters (*_out) are written only on success (the one exception, a size written with
 *   SDM_STATUS_BUFFER_TOO_SMALL, is documented where it applies).
 * - Functions that do work that can fail take an optional `sdm_error **error_out`: when it
 *   is not NULL and the call fails, *error_out receives a new sdm_error (code, message,
 *   retryable flag) that the caller frees with sdm_error_free.
 * - A NULL pointer where one is required gives SDM_STATUS_NULL_ARGUMENT; nothing crashes.
 *   No Rust panic crosses this interface (it becomes SDM_STATUS_PANIC).
 * - Texts are UTF-8 and NUL-terminated. A `const char *` written to an output parameter is
 *   borrowed from the handle it came from and valid until that handle is freed.
 * - Handles may be used from several threads at once; a _free must be the last use.
 * - fork(): a child must not use its parent's sessions or tunnels (calls give
 *   SDM_STATUS_CLOSED, frees release nothing); it logs in again with sdm_login.
 * - SIGPIPE: the library's threads block it, and a call blocks it on the caller's thread while
 *   it runs, so a peer that goes away gives the library EPIPE instead of killing the program.
 */

#ifndef SDM_H
#define SDM_H

/* Generated with cbindgen 0.29.2 from sdm-ffi/src; do not edit by hand. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** The header's version as text, e.g. "0.1.0". */
#define SDM_VERSION_STRING SDM_STRINGIFY_(SDM_VERSION_MAJOR) "." SDM_STRINGIFY_(SDM_VERSION_MINOR) "." SDM_STRINGIFY_(SDM_VERSION_PATCH)
#define SDM_STRINGIFY_(x) SDM_STRINGIFY2_(x)
#define SDM_STRINGIFY2_(x) #x

/**
 * Major version of the header (`SDM_VERSION_MAJOR`); compare with `sdm_version()` at run time.
 */
#define SDM_VERSION_MAJOR 0

/**
 * Minor version of the header.
 */
#define SDM_VERSION_MINOR 1

/**
 * Patch version of the header.
 */
#define SDM_VERSION_PATCH 0

/**
 * The result of a call. `SDM_STATUS_OK` (0) is success; every other value is a failure.
 *
 * Codes 1 to 13 are the error kinds shared by every sdm surface (Rust `ErrorKind::code()`,
 * Python exception classes); 14 to 99 are reserved for kinds added later; 100 and up are
 * failures of the C interface itself. A number is never reused for another meaning.
 */
typedef enum {
  /**
   * Success.
   */
  SDM_STATUS_OK = 0,
  /**
   * The token is not an sdm token (bad prefix, encoding or checksum), or no token was given
   * and none is set in the environment.
   */
  SDM_STATUS_INVALID_TOKEN = 1,
  /**
   * The token is unknown, revoked or expired, or its account is suspended or deleted.
   */
  SDM_STATUS_UNAUTHENTICATED = 2,
  /**
   * The account may not do this.
   */
  SDM_STATUS_FORBIDDEN = 3,
  /**
   * No resource of that name is granted to the account (or no open tunnel matches).
   */
  SDM_STATUS_RESOURCE_NOT_FOUND = 4,
  /**
   * A substring matched several resources; the error lists the candidates.
   */
  SDM_STATUS_AMBIGUOUS_RESOURCE = 5,
  /**
   * The control plane could not be reached (retryable).
   */
  SDM_STATUS_API_UNREACHABLE = 6,
  /**
   * No gateway for the resource could be reached (retryable).
   */
  SDM_STATUS_GATEWAY_UNREACHABLE = 7,
  /**
   * The gateway could not reach the resource (retryable).
   */
  SDM_STATUS_UPSTREAM_REFUSED = 8,
  /**
   * The requested local port is already in use.
   */
  SDM_STATUS_PORT_IN_USE = 9,
  /**
   * An operation did not finish in time (retryable).
   */
  SDM_STATUS_TIMEOUT = 10,
  /**
   * The session or tunnel is closed (logged out, closed, freed session, revoked access, or a
   * handle inherited across `fork()`).
   */
  SDM_STATUS_CLOSED = 11,
  /**
   * An argument is unusable: empty name, index out of range, text that is not UTF-8, bad
   * option value.
   */
  SDM_STATUS_INVALID_ARGUMENT = 12,
  /**
   * A bug or an unexpected condition; the message has details.
   */
  SDM_STATUS_INTERNAL = 13,
  /**
   * A pointer argument that must not be NULL was NULL. Nothing was done.
   */
  SDM_STATUS_NULL_ARGUMENT = 100,
  /**
   * A bug in libsdm caused a Rust panic; it was caught at the boundary. The handles passed
   * in are still valid and may be freed.
   */
  SDM_STATUS_PANIC = 101,
  /**
   * An error kind this version of the C interface does not know (from a newer sdm-core).
   * `sdm_error_kind()` names it.
   */
  SDM_STATUS_UNKNOWN = 102,
  /**
   * The buffer given for a text is too small; the needed size (with the terminating NUL) was
   * written to the size out-parameter.
   */
  SDM_STATUS_BUFFER_TOO_SMALL = 103,
} sdm_status;

/**
 * The level of a log event; also the `max_level` of `sdm_set_log_callback` (which takes it as
 * an `int`): events at that level and the more severe ones are delivered.
 */
typedef enum {
  /**
   * Something failed.
   */
  SDM_LOG_LEVEL_ERROR = 1,
  /**
   * Something went wrong and was handled (a retry, a refused local connection).
   */
  SDM_LOG_LEVEL_WARN = 2,
  /**
   * A normal event worth a line: a tunnel opened or closed.
   */
  SDM_LOG_LEVEL_INFO = 3,
  /**
   * Details for debugging.
   */
  SDM_LOG_LEVEL_DEBUG = 4,
  /**
   * Everything.
   */
  SDM_LOG_LEVEL_TRACE = 5,
} sdm_log_level;

/**
 * What kind of address a tunnel listens on (`sdm_tunnel_local_addr_kind`).
 */
typedef enum {
  /**
   * A TCP address: `sdm_tunnel_local_addr` gives `"127.0.0.1:PORT"`; `sdm_tunnel_host` and
   * `sdm_tunnel_port` give its parts.
   */
  SDM_ADDR_KIND_TCP = 0,
  /**
   * A Unix socket: `sdm_tunnel_local_addr` gives its path; the tunnel has no host or port.
   */
  SDM_ADDR_KIND_UNIX = 1,
} sdm_addr_kind;

/**
 * Tunnel options for `sdm_session_connect_with_options`. Create with
 * `sdm_connect_options_new`, free with `sdm_connect_options_free`. Every function on it is
 * thread-safe (it is guarded by a lock); one options handle may serve many connects.
 */
typedef struct sdm_connect_options sdm_connect_options;

/**
 * An error: a status code, a message for people, a retryable flag, and for
 * `SDM_STATUS_AMBIGUOUS_RESOURCE` the candidate names. Created by libsdm; free with
 * `sdm_error_free`. Immutable, so it may be read from several threads at once.
 */
typedef struct sdm_error sdm_error;

/**
 * Login options for `sdm_login_with_options`. Create with `sdm_options_new`, free with
 * `sdm_options_free`. Every function on it is thread-safe (it is guarded by a lock).
 */
typedef struct sdm_options sdm_options;

/**
 * The resources granted to an account, sorted by name: a snapshot from
 * `sdm_session_list_resources`, independent of the session. Free with
 * `sdm_resource_list_free`. Immutable, so every accessor is thread-safe.
 */
typedef struct sdm_resource_list sdm_resource_list;

/**
 * A logged-in service account. Create with `sdm_login`, `sdm_login_from_env` or
 * `sdm_login_with_options`; free with `sdm_session_free`.
 *
 * Thread-safe: any function may be called on one session from several threads at once,
 * except `sdm_session_free`, which must be the last use. A session belongs to the process that
 * logged in: in a child made by `fork()`, calls on an inherited session fail with
 * `SDM_STATUS_CLOSED` (log in again in the child).
 */
typedef struct sdm_session sdm_session;

/**
 * What `sdm status` shows: the account, and for every granted resource (sorted by name)
 * whether this session has a tunnel open to it. A snapshot from `sdm_session_status`,
 * independent of the session. Free with `sdm_status_report_free`. Immutable, so every
 * accessor is thread-safe.
 */
typedef struct sdm_status_report sdm_status_report;

/**
 * An open tunnel: a listener on a local address whose connections reach a resource through a
 * gateway. Create with `sdm_session_connect`; free with `sdm_tunnel_free`.
 *
 * Thread-safe: any function may be called on one tunnel from several threads at once, except
 * `sdm_tunnel_free`, which must be the last use. Once the tunnel is closed (by
 * `sdm_tunnel_close`, `sdm_session_disconnect`, logout, freeing its session, or revoked
 * access) the handle stays valid, and calls that need an open tunnel give
 * `SDM_STATUS_CLOSED`.
 */
typedef struct sdm_tunnel sdm_tunnel;

/**
 * A log callback: `level`, `target` (the module that logged, e.g. `"sdm_core::tunnel"`) and
 * `message` (the text, then any fields as ` key=value`) are valid only during the call.
 * `userdata` is what was given to `sdm_set_log_callback`.
 */
typedef void (*sdm_log_callback)(void *userdata,
                                 sdm_log_level level,
                                 const char *target,
                                 const char *message);

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * Creates tunnel options with the defaults of `sdm_session_connect`: TCP on 127.0.0.1, the
 * resource's fixed port or a free one, and every local OS user may connect.
 *
 * Ownership: on success `*options_out` receives a new handle the caller frees with
 * `sdm_connect_options_free`. NULL `options_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `options_out` is NULL or writable.
 */
sdm_status sdm_connect_options_new(sdm_connect_options **options_out);

/**
 * Sets the local TCP port (0: the resource's fixed port, else a free one).
 *
 * NULL `options`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `options` is NULL or live.
 */
sdm_status sdm_connect_options_set_port(sdm_connect_options *options, uint16_t port);

/**
 * Sets the local IP address to listen on (`"127.0.0.1"`, `"::1"`, …; default 127.0.0.1).
 * Anything but loopback exposes the resource to other machines.
 *
 * NULL `options` or `address`: `SDM_STATUS_NULL_ARGUMENT`; not an IP address:
 * `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `options` is NULL or live; `address` is NULL or a NUL-terminated string.
 */
sdm_status sdm_connect_options_set_bind_address(sdm_connect_options *options, const char *address);

/**
 * Listens on a Unix socket at `path` instead of a TCP port: the socket gets mode 0600, its
 * directory is created with mode 0700 if missing, and an existing directory that other users
 * can reach is refused at connect time (`SDM_STATUS_INVALID_ARGUMENT`). Only the owner (and
 * root) can then connect, whatever `sdm_connect_options_set_same_user_only` says.
 *
 * NULL `options` or `path`: `SDM_STATUS_NULL_ARGUMENT`; not UTF-8 or empty:
 * `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `options` is NULL or live; `path` is NULL or a NUL-terminated string.
 */
sdm_status sdm_connect_options_set_unix_socket(sdm_connect_options *options, const char *path);

/**
 * With `enabled`, listens on a Unix socket at a path sdm picks: a new directory of mode 0700
 * under `$XDG_RUNTIME_DIR/sdm` (else `sdm-UID` in the temporary directory), removed when the
 * tunnel closes. A postgres resource's socket is named `.s.PGSQL.5432` there, so libpq takes
 * the directory as `host` and 5432 as `port`. `sdm_tunnel_local_addr` gives the path. A path
 * set with `sdm_connect_options_set_unix_socket` takes precedence.
 *
 * NULL `options`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `options` is NULL or live.
 */
sdm_status sdm_connect_options_set_private_unix_socket(sdm_connect_options *options, bool enabled);

/**
 * With `enabled`, the tunnel refuses local connections from other OS users (Linux: a TCP
 * peer's user is asked of the kernel by its four-tuple, a Unix-socket peer's read from its
 * credentials). A refused PostgreSQL client reads why as a server error; the refusal is
 * logged. Default off for the library (the check costs a netlink query per connection).
 *
 * NULL `options`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `options` is NULL or live.
 */
sdm_status sdm_connect_options_set_same_user_only(sdm_connect_options *options, bool enabled);

/**
 * Frees tunnel options. Tunnels opened with them are not affected.
 *
 * NULL: does nothing. Must not run while another thread uses the same options.
 *
 * # Safety
 * `options` is NULL or a handle from `sdm_connect_options_new` that was not freed yet.
 */
void sdm_connect_options_free(sdm_connect_options *options);

/**
 * The status code of `error`.
 *
 * NULL: returns `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `error` is NULL or a live `sdm_error`.
 */
sdm_status sdm_error_code(const sdm_error *error);

/**
 * The kind of `error` as a snake_case name: `"unauthenticated"`, `"null_argument"`, … (the
 * name of its status; for `SDM_STATUS_UNKNOWN`, the name sdm-core gave the new kind).
 *
 * Ownership: borrowed from `error`; valid until `sdm_error_free(error)`. NULL: returns NULL.
 * Thread-safe.
 *
 * # Safety
 * `error` is NULL or a live `sdm_error`.
 */
const char *sdm_error_kind(const sdm_error *error);

/**
 * The message of `error`: what failed and what to do, UTF-8, NUL-terminated.
 *
 * Ownership: borrowed from `error`; valid until `sdm_error_free(error)`. NULL: returns NULL.
 * Thread-safe.
 *
 * # Safety
 * `error` is NULL or a live `sdm_error`.
 */
const char *sdm_error_message(const sdm_error *error);

/**
 * Whether the same call may succeed later without anyone changing anything (unreachable
 * control plane or gateway, refused upstream, timeout).
 *
 * NULL: returns false. Thread-safe.
 *
 * # Safety
 * `error` is NULL or a live `sdm_error`.
 */
bool sdm_error_retryable(const sdm_error *error);

/**
 * For `SDM_STATUS_AMBIGUOUS_RESOURCE`: how many resource names matched (0 for other errors).
 *
 * NULL: returns 0. Thread-safe.
 *
 * # Safety
 * `error` is NULL or a live `sdm_error`.
 */
size_t sdm_error_candidates_len(const sdm_error *error);

/**
 * For `SDM_STATUS_AMBIGUOUS_RESOURCE`: the `index`th matching resource name.
 *
 * Ownership: borrowed from `error`; valid until `sdm_error_free(error)`. NULL `error` or
 * `index` out of range: returns NULL. Thread-safe.
 *
 * # Safety
 * `error` is NULL or a live `sdm_error`.
 */
const char *sdm_error_candidate(const sdm_error *error, size_t index);

/**
 * Frees an error returned through an `sdm_error **error_out` parameter.
 *
 * NULL: does nothing. Not thread-safe with other uses of the same error.
 *
 * # Safety
 * `error` is NULL or an `sdm_error` from libsdm that was not freed yet.
 */
void sdm_error_free(sdm_error *error);

/**
 * The snake_case name of a status number: `"ok"`, `"invalid_token"`, …, `"buffer_too_small"`;
 * `"unrecognized"` for a number that is not an `sdm_status`.
 *
 * Ownership: a static string; never free it. Thread-safe.
 */
const char *sdm_status_name(int status);

/**
 * Hands libsdm's log events to `callback`: every event at `max_level` (an `sdm_log_level`:
 * `SDM_LOG_LEVEL_ERROR` 1 … `SDM_LOG_LEVEL_TRACE` 5) or more severe, with its level, target
 * and message. NULL `callback` stops the delivery. Replaces any callback set before.
 *
 * The callback runs on the thread that logged: one of libsdm's own threads or a thread of the
 * caller inside a libsdm call, possibly on several threads at once; so it must be thread-safe,
 * must not block for long, and must not call libsdm (a call from inside it may deadlock). When
 * this function returns, no call to the previous callback is in progress and none follows, so
 * the previous `userdata` may be freed.
 *
 * `max_level` outside 1…5: `SDM_STATUS_INVALID_ARGUMENT`. A process whose Rust code already
 * installed its own global `tracing` subscriber: `SDM_STATUS_INTERNAL` (that subscriber gets
 * the events). Thread-safe.
 *
 * # Safety
 * `callback` is NULL or a function that may be called as described, with `userdata`, from any
 * thread until this function is called again; `error_out` is NULL or writable.
 */
sdm_status sdm_set_log_callback(sdm_log_callback callback,
                                void *userdata,
                                int max_level,
                                sdm_error **error_out);

/**
 * Creates empty login options: no token (so the login reads `SDM_ADMIN_TOKEN`, then
 * `SDM_SERVICE_TOKEN`), the token's API URL (or `SDM_API_URL`), no labels, a 30 s timeout
 * per control plane call, 2 warm gateway connections per tunnel.
 *
 * Ownership: on success `*options_out` receives a new handle the caller frees with
 * `sdm_options_free`. NULL `options_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `options_out` is NULL or writable.
 */
sdm_status sdm_options_new(sdm_options **options_out);

/**
 * Sets the service account token (UTF-8 text, copied).
 *
 * NULL `options` or `token`: `SDM_STATUS_NULL_ARGUMENT`; text that is not UTF-8:
 * `SDM_STATUS_INVALID_ARGUMENT`. The token is checked by the login, not here. Thread-safe.
 *
 * # Safety
 * `options` is NULL or live; `token` is NULL or a NUL-terminated string.
 */
sdm_status sdm_options_set_token(sdm_options *options, const char *token);

/**
 * Overrides the control plane URL the token carries (e.g. `https://sdm.internal:8443`, for a
 * proxy); the CA pinned by the token still applies. Default: `SDM_API_URL`, else the token's.
 *
 * NULL `options` or `url`: `SDM_STATUS_NULL_ARGUMENT`; not UTF-8:
 * `SDM_STATUS_INVALID_ARGUMENT`. The URL is checked by the login. Thread-safe.
 *
 * # Safety
 * `options` is NULL or live; `url` is NULL or a NUL-terminated string.
 */
sdm_status sdm_options_set_api_url(sdm_options *options, const char *url);

/**
 * Adds a job label recorded with the session and every connection (e.g. `dag_id`,
 * `task_id`); a key set twice keeps the last value. The server limits labels (at most 32;
 * keys 1–64 characters, values at most 256) and refuses others at login with
 * `SDM_STATUS_INVALID_ARGUMENT`.
 *
 * NULL `options`, `key` or `value`: `SDM_STATUS_NULL_ARGUMENT`; not UTF-8:
 * `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `options` is NULL or live; `key` and `value` are NULL or NUL-terminated strings.
 */
sdm_status sdm_options_add_label(sdm_options *options, const char *key, const char *value);

/**
 * Sets the time limit of each control plane call, in milliseconds (default 30000).
 *
 * NULL `options`: `SDM_STATUS_NULL_ARGUMENT`; 0: `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `options` is NULL or live.
 */
sdm_status sdm_options_set_timeout_ms(sdm_options *options, uint64_t timeout_ms);

/**
 * Sets how many gateway connections each tunnel keeps ready so that a new local connection
 * skips the TLS handshake (default 2; 0 turns it off).
 *
 * NULL `options`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `options` is NULL or live.
 */
sdm_status sdm_options_set_warm_connections(sdm_options *options, size_t count);

/**
 * Frees login options. Sessions logged in with them are not affected.
 *
 * NULL: does nothing. Must not run while another thread uses the same options.
 *
 * # Safety
 * `options` is NULL or a handle from `sdm_options_new` that was not freed yet.
 */
void sdm_options_free(sdm_options *options);

/**
 * The number of resources (rows) in `report`. NULL: returns 0. Thread-safe.
 *
 * # Safety
 * `report` is NULL or live.
 */
size_t sdm_status_report_len(const sdm_status_report *report);

/**
 * The account name the report is for.
 *
 * Ownership: `*name_out` is borrowed from `report`; valid until `sdm_status_report_free`.
 * NULL `report` or `name_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `report` is NULL or live; `name_out` is NULL or writable.
 */
sdm_status sdm_status_report_account(const sdm_status_report *report, const char **name_out);

/**
 * The report as the table `sdm status` prints (a section per resource class, aligned
 * columns, a trailing newline).
 *
 * Ownership: `*text_out` is borrowed from `report`; valid until `sdm_status_report_free`.
 * NULL `report` or `text_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `report` is NULL or live; `text_out` is NULL or writable.
 */
sdm_status sdm_status_report_text(const sdm_status_report *report, const char **text_out);

/**
 * The name of the resource in row `index`.
 *
 * Ownership: `*name_out` is borrowed from `report`; valid until `sdm_status_report_free`.
 * NULL `report` or `name_out`: `SDM_STATUS_NULL_ARGUMENT`; `index` out of range:
 * `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `report` is NULL or live; `name_out` is NULL or writable.
 */
sdm_status sdm_status_report_name(const sdm_status_report *report,
                                  size_t index,
                                  const char **name_out);

/**
 * The kind (`"postgres"`, `"tcp"`, …) of the resource in row `index`. Ownership, NULL, range
 * and threads: as `sdm_status_report_name`.
 *
 * # Safety
 * `report` is NULL or live; `kind_out` is NULL or writable.
 */
sdm_status sdm_status_report_kind(const sdm_status_report *report,
                                  size_t index,
                                  const char **kind_out);

/**
 * Whether this session has a tunnel open to the resource in row `index`. NULL, range and
 * threads: as `sdm_status_report_name`.
 *
 * # Safety
 * `report` is NULL or live; `connected_out` is NULL or writable.
 */
sdm_status sdm_status_report_connected(const sdm_status_report *report,
                                       size_t index,
                                       bool *connected_out);

/**
 * The local address (`"127.0.0.1:40001"`) of the open tunnel in row `index`, or NULL when
 * the resource is not connected. Ownership, NULL, range and threads: as
 * `sdm_status_report_name`.
 *
 * # Safety
 * `report` is NULL or live; `addr_out` is NULL or writable.
 */
sdm_status sdm_status_report_local_addr(const sdm_status_report *report,
                                        size_t index,
                                        const char **addr_out);

/**
 * The local port of row `index`: the open tunnel's, else the resource's fixed port, else 0.
 * NULL, range and threads: as `sdm_status_report_name`.
 *
 * # Safety
 * `report` is NULL or live; `port_out` is NULL or writable.
 */
sdm_status sdm_status_report_port(const sdm_status_report *report,
                                  size_t index,
                                  uint16_t *port_out);

/**
 * The number of local connections the open tunnel of row `index` was carrying (0 when not
 * connected). NULL, range and threads: as `sdm_status_report_name`.
 *
 * # Safety
 * `report` is NULL or live; `connections_out` is NULL or writable.
 */
sdm_status sdm_status_report_connections(const sdm_status_report *report,
                                         size_t index,
                                         size_t *connections_out);

/**
 * Frees a status report; texts borrowed from it become invalid.
 *
 * NULL: does nothing. Must not run while another thread uses the same report.
 *
 * # Safety
 * `report` is NULL or a report from `sdm_session_status` that was not freed yet.
 */
void sdm_status_report_free(sdm_status_report *report);

/**
 * The number of resources in `list`. NULL: returns 0. Thread-safe.
 *
 * # Safety
 * `list` is NULL or live.
 */
size_t sdm_resource_list_len(const sdm_resource_list *list);

/**
 * The id (UUID text) of resource `index`.
 *
 * Ownership: `*id_out` is borrowed from `list`; valid until `sdm_resource_list_free`.
 * NULL `list` or `id_out`: `SDM_STATUS_NULL_ARGUMENT`; `index` out of range:
 * `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `list` is NULL or live; `id_out` is NULL or writable.
 */
sdm_status sdm_resource_list_id(const sdm_resource_list *list, size_t index, const char **id_out);

/**
 * The name of resource `index` (what `sdm_session_connect` takes). Ownership, NULL, range and
 * threads: as `sdm_resource_list_id`.
 *
 * # Safety
 * `list` is NULL or live; `name_out` is NULL or writable.
 */
sdm_status sdm_resource_list_name(const sdm_resource_list *list,
                                  size_t index,
                                  const char **name_out);

/**
 * The kind of resource `index`: `"postgres"`, `"mysql"`, `"redis"`, `"ssh"`, `"tcp"`, or any
 * other lowercase name a newer server uses. Ownership, NULL, range and threads: as
 * `sdm_resource_list_id`.
 *
 * # Safety
 * `list` is NULL or live; `kind_out` is NULL or writable.
 */
sdm_status sdm_resource_list_kind(const sdm_resource_list *list,
                                  size_t index,
                                  const char **kind_out);

/**
 * The fixed local port tunnels to resource `index` listen on, or 0 when the admin set none
 * (a tunnel then takes a free port). NULL `list` or `port_out`: `SDM_STATUS_NULL_ARGUMENT`;
 * `index` out of range: `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `list` is NULL or live; `port_out` is NULL or writable.
 */
sdm_status sdm_resource_list_port(const sdm_resource_list *list, size_t index, uint16_t *port_out);

/**
 * The host key the gateway presents for ssh resource `index`, as a known-hosts key
 * (`ssh-ed25519 AAAA…`), the same on every gateway: pin it for the tunnel's address (with
 * `HostKeyAlias`, as `sdm ssh-config` does). `*key_out` is NULL for other kinds. Owned by
 * `list`: valid until `sdm_resource_list_free`. NULL `list` or `key_out`:
 * `SDM_STATUS_NULL_ARGUMENT`; `index` out of range: `SDM_STATUS_INVALID_ARGUMENT`.
 * Thread-safe.
 *
 * # Safety
 * `list` is NULL or live; `key_out` is NULL or writable.
 */
sdm_status sdm_resource_list_ssh_host_key(const sdm_resource_list *list,
                                          size_t index,
                                          const char **key_out);

/**
 * Whether a live gateway serves resource `index`. NULL `list` or `healthy_out`:
 * `SDM_STATUS_NULL_ARGUMENT`; `index` out of range: `SDM_STATUS_INVALID_ARGUMENT`.
 * Thread-safe.
 *
 * # Safety
 * `list` is NULL or live; `healthy_out` is NULL or writable.
 */
sdm_status sdm_resource_list_healthy(const sdm_resource_list *list,
                                     size_t index,
                                     bool *healthy_out);

/**
 * The number of tags of resource `index`. NULL `list` or `count_out`:
 * `SDM_STATUS_NULL_ARGUMENT`; `index` out of range: `SDM_STATUS_INVALID_ARGUMENT`.
 * Thread-safe.
 *
 * # Safety
 * `list` is NULL or live; `count_out` is NULL or writable.
 */
sdm_status sdm_resource_list_tag_count(const sdm_resource_list *list,
                                       size_t index,
                                       size_t *count_out);

/**
 * The `tag_index`th tag of resource `index` (tags are sorted by key).
 *
 * Ownership: `*key_out` and `*value_out` are borrowed from `list`; valid until
 * `sdm_resource_list_free`. NULL `list`, `key_out` or `value_out`:
 * `SDM_STATUS_NULL_ARGUMENT`; either index out of range: `SDM_STATUS_INVALID_ARGUMENT`.
 * Thread-safe.
 *
 * # Safety
 * `list` is NULL or live; `key_out` and `value_out` are NULL or writable.
 */
sdm_status sdm_resource_list_tag(const sdm_resource_list *list,
                                 size_t index,
                                 size_t tag_index,
                                 const char **key_out,
                                 const char **value_out);

/**
 * Frees a resource list; texts borrowed from it become invalid.
 *
 * NULL: does nothing. Must not run while another thread uses the same list.
 *
 * # Safety
 * `list` is NULL or a list from `sdm_session_list_resources` that was not freed yet.
 */
void sdm_resource_list_free(sdm_resource_list *list);

/**
 * Logs in with a service account token; everything else (control plane URL, pinned CA) comes
 * from the token, except that `SDM_API_URL` overrides the URL. Blocks until the control plane
 * answers (at most 30 s).
 *
 * Ownership: `token` is copied; on success `*session_out` receives a new session the caller
 * frees with `sdm_session_free`. On failure `*error_out` (when `error_out` is not NULL)
 * receives an error the caller frees with `sdm_error_free`.
 *
 * Fails with `SDM_STATUS_INVALID_TOKEN` (not an sdm token), `SDM_STATUS_UNAUTHENTICATED`
 * (unknown, revoked or suspended), `SDM_STATUS_API_UNREACHABLE`, `SDM_STATUS_TIMEOUT`.
 * NULL `token` or `session_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe; works in a child
 * after `fork()`.
 *
 * # Safety
 * `token` is NULL or a NUL-terminated string; `session_out` and `error_out` are NULL or
 * writable.
 */
sdm_status sdm_login(const char *token, sdm_session **session_out, sdm_error **error_out);

/**
 * Logs in with the token in `SDM_ADMIN_TOKEN`, else `SDM_SERVICE_TOKEN`
 * (`SDM_STATUS_INVALID_TOKEN` when neither is set). Otherwise as `sdm_login`.
 *
 * # Safety
 * `session_out` and `error_out` are NULL or writable.
 */
sdm_status sdm_login_from_env(sdm_session **session_out, sdm_error **error_out);

/**
 * Logs in with options (see `sdm_options_new`): token (else from the environment), API URL
 * override, job labels, timeout. The options are only read; free them when convenient.
 * Otherwise as `sdm_login`; a bad label or timeout fails with `SDM_STATUS_INVALID_ARGUMENT`.
 *
 * # Safety
 * `options` is NULL or live; `session_out` and `error_out` are NULL or writable.
 */
sdm_status sdm_login_with_options(const sdm_options *options,
                                  sdm_session **session_out,
                                  sdm_error **error_out);

/**
 * The name of the account logged in (e.g. `"etl"`).
 *
 * Ownership: `*name_out` is borrowed from `session`; valid until `sdm_session_free`.
 * NULL `session` or `name_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `session` is NULL or live; `name_out` is NULL or writable.
 */
sdm_status sdm_session_account_name(const sdm_session *session, const char **name_out);

/**
 * The id (UUID text) of the account logged in. Ownership, NULL and threads: as
 * `sdm_session_account_name`.
 *
 * # Safety
 * `session` is NULL or live; `id_out` is NULL or writable.
 */
sdm_status sdm_session_account_id(const sdm_session *session, const char **id_out);

/**
 * The session id (UUID text) that audit records carry. Ownership, NULL and threads: as
 * `sdm_session_account_name`.
 *
 * # Safety
 * `session` is NULL or live; `id_out` is NULL or writable.
 */
sdm_status sdm_session_id(const sdm_session *session, const char **id_out);

/**
 * The control plane URL in use. Ownership, NULL and threads: as `sdm_session_account_name`.
 *
 * # Safety
 * `session` is NULL or live; `url_out` is NULL or writable.
 */
sdm_status sdm_session_api_url(const sdm_session *session, const char **url_out);

/**
 * Lists the resources granted to the account, sorted by name (a fresh list from the control
 * plane).
 *
 * Ownership: on success `*list_out` receives a new list the caller frees with
 * `sdm_resource_list_free`; it does not depend on the session. NULL `session` or `list_out`:
 * `SDM_STATUS_NULL_ARGUMENT`. After logout: `SDM_STATUS_CLOSED`. Thread-safe.
 *
 * # Safety
 * `session` is NULL or live; `list_out` and `error_out` are NULL or writable.
 */
sdm_status sdm_session_list_resources(const sdm_session *session,
                                      sdm_resource_list **list_out,
                                      sdm_error **error_out);

/**
 * Opens a tunnel to the resource `name` (an exact name or id, else a unique case-insensitive
 * substring, e.g. `"pgsql"`): a listener on 127.0.0.1 (on the resource's fixed port when the
 * admin set one, else a free port) that any driver can connect to. Blocks until the listener
 * is up and the control plane granted a lease.
 *
 * Ownership: `name` is copied; on success `*tunnel_out` receives a new tunnel the caller frees
 * with `sdm_tunnel_free`. The tunnel works until it is closed, its session is freed or logs
 * out, or access is revoked.
 *
 * Fails with `SDM_STATUS_RESOURCE_NOT_FOUND`, `SDM_STATUS_AMBIGUOUS_RESOURCE` (the error lists
 * the candidates), `SDM_STATUS_PORT_IN_USE`, `SDM_STATUS_FORBIDDEN`,
 * `SDM_STATUS_UNAUTHENTICATED`, `SDM_STATUS_API_UNREACHABLE`, `SDM_STATUS_GATEWAY_UNREACHABLE`,
 * `SDM_STATUS_CLOSED` (after logout). NULL `session`, `name` or `tunnel_out`:
 * `SDM_STATUS_NULL_ARGUMENT`; empty `name`: `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `session` is NULL or live; `name` is NULL or a NUL-terminated string; `tunnel_out` and
 * `error_out` are NULL or writable.
 */
sdm_status sdm_session_connect(const sdm_session *session,
                               const char *name,
                               sdm_tunnel **tunnel_out,
                               sdm_error **error_out);

/**
 * `sdm_session_connect` with a chosen local address and port.
 *
 * `bind_address`: the local IP address to listen on (`"127.0.0.1"`, `"::1"`, …); NULL means
 * 127.0.0.1. Anything but loopback exposes the resource to other machines. `port`: the local
 * port; 0 means the resource's fixed port, else a free one. A port in use fails with
 * `SDM_STATUS_PORT_IN_USE`; an address that is not an IP address with
 * `SDM_STATUS_INVALID_ARGUMENT`. Otherwise as `sdm_session_connect`.
 *
 * # Safety
 * `session` is NULL or live; `name` and `bind_address` are NULL or NUL-terminated strings;
 * `tunnel_out` and `error_out` are NULL or writable.
 */
sdm_status sdm_session_connect_with(const sdm_session *session,
                                    const char *name,
                                    const char *bind_address,
                                    uint16_t port,
                                    sdm_tunnel **tunnel_out,
                                    sdm_error **error_out);

/**
 * `sdm_session_connect` with tunnel options (`sdm_connect_options`): a port or address, a
 * Unix socket, refusing other OS users. NULL `options` means the defaults of
 * `sdm_session_connect`. The options are copied; they may be freed or changed afterwards.
 * Otherwise as `sdm_session_connect`.
 *
 * # Safety
 * `session` and `options` are NULL or live; `name` is NULL or a NUL-terminated string;
 * `tunnel_out` and `error_out` are NULL or writable.
 */
sdm_status sdm_session_connect_with_options(const sdm_session *session,
                                            const char *name,
                                            const sdm_connect_options *options,
                                            sdm_tunnel **tunnel_out,
                                            sdm_error **error_out);

/**
 * Connects to the resource `name` inside this process, without a local listener, and returns
 * a connected socket: read and write the resource's own protocol on it (`read`/`write`/
 * `send`/`recv`/`poll`/`select`). Blocks until the gateway has reached the resource.
 *
 * Ownership: on success `*fd_out` receives a file descriptor the caller owns and closes with
 * `close(2)`; it is a blocking `AF_UNIX` stream socket with `FD_CLOEXEC` set (one end of a
 * socket pair whose other end libsdm splices to the gateway). It stays connected until either
 * side closes it, also after the session is freed. Name lookup and failures as
 * `sdm_session_connect`. Thread-safe.
 *
 * # Safety
 * `session` is NULL or live; `name` is NULL or a NUL-terminated string; `fd_out` and
 * `error_out` are NULL or writable.
 */
sdm_status sdm_session_dial(const sdm_session *session,
                            const char *name,
                            int *fd_out,
                            sdm_error **error_out);

/**
 * Reads the status of every granted resource: connected (with the tunnel's address) or not,
 * as `sdm status` prints it.
 *
 * Ownership: on success `*report_out` receives a new report the caller frees with
 * `sdm_status_report_free`. NULL `session` or `report_out`: `SDM_STATUS_NULL_ARGUMENT`. After
 * logout: `SDM_STATUS_CLOSED`. Thread-safe.
 *
 * # Safety
 * `session` is NULL or live; `report_out` and `error_out` are NULL or writable.
 */
sdm_status sdm_session_status(const sdm_session *session,
                              sdm_status_report **report_out,
                              sdm_error **error_out);

/**
 * Closes this session's open tunnels to the resource `name` (exact name or unique substring
 * among the connected resources) and waits until their local ports are free. Their
 * `sdm_tunnel` handles stay valid (free them as usual); calls on them give
 * `SDM_STATUS_CLOSED`.
 *
 * No open tunnel matches: `SDM_STATUS_RESOURCE_NOT_FOUND`. NULL `session` or `name`:
 * `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `session` is NULL or live; `name` is NULL or a NUL-terminated string; `error_out` is NULL
 * or writable.
 */
sdm_status sdm_session_disconnect(const sdm_session *session,
                                  const char *name,
                                  sdm_error **error_out);

/**
 * Closes every open tunnel of this session and waits until their ports are free. The session
 * stays logged in. NULL `session`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `session` is NULL or live; `error_out` is NULL or writable.
 */
sdm_status sdm_session_disconnect_all(const sdm_session *session, sdm_error **error_out);

/**
 * Closes every tunnel and ends the session on the control plane (its leases stop working at
 * once). Later calls on the session fail with `SDM_STATUS_CLOSED`; logging out again succeeds
 * and does nothing. The handle must still be freed with `sdm_session_free`.
 *
 * NULL `session`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `session` is NULL or live; `error_out` is NULL or writable.
 */
sdm_status sdm_session_logout(const sdm_session *session, sdm_error **error_out);

/**
 * Frees a session. Its open tunnels are closed first (their local ports are free when this
 * returns); their `sdm_tunnel` handles stay valid until `sdm_tunnel_free`, and every call on
 * them gives `SDM_STATUS_CLOSED`. File descriptors from `sdm_session_dial` are not affected.
 * The session is not ended on the control plane: call `sdm_session_logout` first for that.
 *
 * In a child after `fork()`, freeing a session inherited from the parent releases nothing
 * (the parent still owns its sockets) and does not block.
 *
 * NULL: does nothing. Must be the last use of the session: no other thread may be using it.
 *
 * # Safety
 * `session` is NULL or a handle from a login function that was not freed yet.
 */
void sdm_session_free(sdm_session *session);

/**
 * Copies where the tunnel listens into `buf` with a terminating NUL: a TCP address as
 * `"127.0.0.1:40001"` (`"[::1]:40001"` for IPv6), or a Unix socket's path (see
 * `sdm_tunnel_local_addr_kind`).
 *
 * `needed_out` (may be NULL) receives the buffer size the text needs, including the NUL, both
 * on success and when the buffer is too small. `buf` may be NULL when `buf_len` is 0, to ask
 * for the size. Buffer too small: `SDM_STATUS_BUFFER_TOO_SMALL`, nothing written to `buf`.
 * Closed tunnel: `SDM_STATUS_CLOSED`. NULL `tunnel` (or `buf` with `buf_len` > 0):
 * `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `tunnel` is NULL or live; `buf` is NULL or writable for `buf_len` bytes; `needed_out` and
 * `error_out` are NULL or writable.
 */
sdm_status sdm_tunnel_local_addr(const sdm_tunnel *tunnel,
                                 char *buf,
                                 size_t buf_len,
                                 size_t *needed_out,
                                 sdm_error **error_out);

/**
 * Copies the tunnel's local IP address as text (`"127.0.0.1"`, what a driver's `host` takes)
 * into `buf`. Buffer, size, NULL and closed behaviour: as `sdm_tunnel_local_addr`. A
 * Unix-socket tunnel has no IP address: `SDM_STATUS_INVALID_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `tunnel` is NULL or live; `buf` is NULL or writable for `buf_len` bytes; `needed_out` and
 * `error_out` are NULL or writable.
 */
sdm_status sdm_tunnel_host(const sdm_tunnel *tunnel,
                           char *buf,
                           size_t buf_len,
                           size_t *needed_out,
                           sdm_error **error_out);

/**
 * The tunnel's local port. Closed tunnel: `SDM_STATUS_CLOSED`. A Unix-socket tunnel has no
 * port: `SDM_STATUS_INVALID_ARGUMENT`. NULL `tunnel` or `port_out`:
 * `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `tunnel` is NULL or live; `port_out` and `error_out` are NULL or writable.
 */
sdm_status sdm_tunnel_port(const sdm_tunnel *tunnel, uint16_t *port_out, sdm_error **error_out);

/**
 * Whether the tunnel listens on a TCP address (`SDM_ADDR_KIND_TCP`) or a Unix socket
 * (`SDM_ADDR_KIND_UNIX`); also once it is closed. NULL `tunnel` or `kind_out`:
 * `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `tunnel` is NULL or live; `kind_out` is NULL or writable.
 */
sdm_status sdm_tunnel_local_addr_kind(const sdm_tunnel *tunnel, sdm_addr_kind *kind_out);

/**
 * The name of the resource the tunnel reaches (also once it is closed).
 *
 * Ownership: `*name_out` is borrowed from `tunnel`; valid until `sdm_tunnel_free`. NULL
 * `tunnel` or `name_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `tunnel` is NULL or live; `name_out` is NULL or writable.
 */
sdm_status sdm_tunnel_resource_name(const sdm_tunnel *tunnel, const char **name_out);

/**
 * Whether the tunnel still accepts connections (false once closed, and in a forked child).
 * NULL `tunnel` or `open_out`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `tunnel` is NULL or live; `open_out` is NULL or writable.
 */
sdm_status sdm_tunnel_is_open(const sdm_tunnel *tunnel, bool *open_out);

/**
 * Why the tunnel closed when something other than its owner closed it, for example
 * `SDM_STATUS_UNAUTHENTICATED` after the account was suspended or `SDM_STATUS_FORBIDDEN`
 * after the grant was removed.
 *
 * On success `*reason_out` receives a new error (free it with `sdm_error_free`), or NULL when
 * the tunnel is open or was closed by its owner. NULL `tunnel` or `reason_out`:
 * `SDM_STATUS_NULL_ARGUMENT`; in a forked child: `SDM_STATUS_CLOSED`. Thread-safe.
 *
 * # Safety
 * `tunnel` is NULL or live; `reason_out` is NULL or writable.
 */
sdm_status sdm_tunnel_close_reason(const sdm_tunnel *tunnel, sdm_error **reason_out);

/**
 * Closes the tunnel: stops listening, closes its connections, and returns once the local port
 * is free. Closing a closed tunnel succeeds and does nothing. The handle must still be freed
 * with `sdm_tunnel_free`. In a forked child: `SDM_STATUS_CLOSED`.
 *
 * NULL `tunnel`: `SDM_STATUS_NULL_ARGUMENT`. Thread-safe.
 *
 * # Safety
 * `tunnel` is NULL or live; `error_out` is NULL or writable.
 */
sdm_status sdm_tunnel_close(sdm_tunnel *tunnel, sdm_error **error_out);

/**
 * Closes the tunnel (as `sdm_tunnel_close`) and frees the handle.
 *
 * In a child after `fork()`, freeing a tunnel inherited from the parent releases nothing and
 * does not block. NULL: does nothing. Must be the last use of the tunnel.
 *
 * # Safety
 * `tunnel` is NULL or a handle from `sdm_session_connect` that was not freed yet.
 */
void sdm_tunnel_free(sdm_tunnel *tunnel);

/**
 * The version of the loaded libsdm as `"MAJOR.MINOR.PATCH"` (e.g. `"0.1.0"`), which may differ
 * from the `SDM_VERSION_*` macros of the header a program was compiled with.
 *
 * Ownership: a static string; never free it. Thread-safe.
 */
const char *sdm_version(void);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* SDM_H */
