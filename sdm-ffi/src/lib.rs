#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod boundary;
mod connect_options;
mod error;
mod log;
mod options;
mod report;
mod resource;
mod session;
mod tunnel;
mod version;

pub use connect_options::{
    sdm_connect_options, sdm_connect_options_free, sdm_connect_options_new,
    sdm_connect_options_set_bind_address, sdm_connect_options_set_port,
    sdm_connect_options_set_private_unix_socket, sdm_connect_options_set_same_user_only,
    sdm_connect_options_set_unix_socket,
};
pub use error::{
    sdm_error, sdm_error_candidate, sdm_error_candidates_len, sdm_error_code, sdm_error_free,
    sdm_error_kind, sdm_error_message, sdm_error_retryable, sdm_status, sdm_status_name,
};
pub use log::{sdm_log_callback, sdm_log_level, sdm_set_log_callback};
pub use options::{
    sdm_options, sdm_options_add_label, sdm_options_free, sdm_options_new, sdm_options_set_api_url,
    sdm_options_set_timeout_ms, sdm_options_set_token, sdm_options_set_warm_connections,
};
pub use report::{
    sdm_status_report, sdm_status_report_account, sdm_status_report_connected,
    sdm_status_report_connections, sdm_status_report_free, sdm_status_report_kind,
    sdm_status_report_len, sdm_status_report_local_addr, sdm_status_report_name,
    sdm_status_report_port, sdm_status_report_text,
};
pub use resource::{
    sdm_resource_list, sdm_resource_list_free, sdm_resource_list_healthy, sdm_resource_list_id,
    sdm_resource_list_kind, sdm_resource_list_len, sdm_resource_list_name, sdm_resource_list_port,
    sdm_resource_list_ssh_host_key, sdm_resource_list_tag, sdm_resource_list_tag_count,
};
pub use session::{
    sdm_login, sdm_login_from_env, sdm_login_with_options, sdm_session, sdm_session_account_id,
    sdm_session_account_name, sdm_session_api_url, sdm_session_connect, sdm_session_connect_with,
    sdm_session_connect_with_options, sdm_session_dial, sdm_session_disconnect,
    sdm_session_disconnect_all, sdm_session_free, sdm_session_id, sdm_session_list_resources,
    sdm_session_logout, sdm_session_status,
};
pub use tunnel::{
    sdm_addr_kind, sdm_tunnel, sdm_tunnel_close, sdm_tunnel_close_reason, sdm_tunnel_free,
    sdm_tunnel_host, sdm_tunnel_is_open, sdm_tunnel_local_addr, sdm_tunnel_local_addr_kind,
    sdm_tunnel_port, sdm_tunnel_resource_name,
};
pub use version::{SDM_VERSION_MAJOR, SDM_VERSION_MINOR, SDM_VERSION_PATCH, sdm_version};

/// Every handle may be shared between threads (the header promises it): this fails to compile
/// otherwise.
#[allow(dead_code)]
fn handles_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<sdm_session>();
    send_sync::<sdm_tunnel>();
    send_sync::<sdm_options>();
    send_sync::<sdm_connect_options>();
    send_sync::<sdm_resource_list>();
    send_sync::<sdm_status_report>();
    send_sync::<sdm_error>();
}
