//! tracing's macros with the target the app's log lines have always had
//! (`cloudrack_controller::app`), whichever of the app's files they come from: log readers and
//! `RUST_LOG` filters see the same lines as when the app was one file.

macro_rules! app_debug {
    ($($arg:tt)+) => { tracing::debug!(target: "cloudrack_controller::app", $($arg)+) };
}
macro_rules! app_info {
    ($($arg:tt)+) => { tracing::info!(target: "cloudrack_controller::app", $($arg)+) };
}
macro_rules! app_warn {
    ($($arg:tt)+) => { tracing::warn!(target: "cloudrack_controller::app", $($arg)+) };
}
macro_rules! app_error {
    ($($arg:tt)+) => { tracing::error!(target: "cloudrack_controller::app", $($arg)+) };
}

// Imported under tracing's names (a macro named `warn` itself would clash with the attribute).
pub(super) use {app_debug as debug, app_error as error, app_info as info, app_warn as warn};
