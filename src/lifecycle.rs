//! The process around a build: the runtime, the signals that stop it, and the
//! exit code, with the scratch root removed on success, failure and signals.

use kiln::scratch::Cleanup;
use std::future::Future;

/// Runs `work` to its end or to SIGTERM/SIGINT, then exits the process: 0 when
/// it succeeded, 1 with its error on one line, 130 when interrupted.
pub(crate) fn run_to_exit<F, Fut>(work: F) -> !
where
    F: FnOnce(Cleanup) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Directory walks recurse once per level; paths may be 4096 bytes deep
        // (2,048 levels). Untouched stack costs no memory.
        .thread_stack_size(32 << 20)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    let cleanup = Cleanup::default();
    // The work runs as its own task, so this thread sees a signal even while every
    // worker is busy compressing or unpacking.
    let work = runtime.spawn(work(cleanup.clone()));
    let code = runtime.block_on(async {
        let signals = shutdown_signal();
        let mut work = work;
        tokio::select! {
            r = &mut work => Some(exit_code(r)),
            _ = signals => {
                // Inside a user namespace the other executor does the work
                // and the cleanup; it gets the signal and this one its code.
                if kiln::sandbox::userns::forward_signal(nix::sys::signal::Signal::SIGTERM) {
                    match work.await {
                        Ok(Ok(())) => Some(0),
                        _ => Some(130),
                    }
                } else {
                    None
                }
            }
        }
    });
    match code {
        Some(code) => {
            // Dropping the runtime drops the build (and its scratch dir) first.
            drop(runtime);
            std::process::exit(code);
        }
        None => {
            // Threads busy in CPU-bound work are not waited for: the scratch root
            // goes now, and the process with them.
            runtime.shutdown_timeout(std::time::Duration::from_millis(200));
            cleanup.remove_all();
            kiln::log_error!("interrupted: the scratch root is removed and no manifest was pushed after this point");
            std::process::exit(130);
        }
    }
}

/// The exit code of a finished build, its error logged on one line.
fn exit_code(r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> i32 {
    match r {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            kiln::log_error!("{}", kiln::log::one_line(e.as_ref()));
            1
        }
        Err(e) => {
            kiln::log_error!("the build stopped: {e}");
            1
        }
    }
}

/// Waits for SIGTERM or SIGINT. The handlers are installed when this is called,
/// before the build starts, so an early signal still cleans up.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    }
}
