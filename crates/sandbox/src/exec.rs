//! The process side: a command line that runs a program inside the sandbox, and the helper
//! entry point that confines itself and then executes the program.
//!
//! `wrap_argv` turns `argv` into `[<exec-server>, --exec-server-sandbox-exec, <policy json>,
//! --, argv…]`; the spawned helper runs `exec_main`, which confines itself and replaces its
//! image with the program, so the program never runs unconfined.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use crate::{confine, Plan, Policy};

/// The hidden first argument that selects the exec helper.
pub const EXEC_HELPER_ARG: &str = "--exec-server-sandbox-exec";

/// Exit status of the helper when it cannot confine itself.
pub const EXIT_SANDBOX_FAILED: i32 = 125;

/// The argv that runs `argv` under `policy` through the exec helper. `exe` is the
/// exec-server binary (e.g. `/proc/self/exe` as seen by the server).
pub fn wrap_argv(exe: &str, policy: &Policy, argv: &[String]) -> Vec<String> {
    let json = serde_json::to_string(policy).unwrap_or_default();
    let mut out = vec![
        exe.to_string(),
        EXEC_HELPER_ARG.to_string(),
        json,
        "--".to_string(),
    ];
    out.extend(argv.iter().cloned());
    out
}

/// The exec helper: `args` are the process arguments after `EXEC_HELPER_ARG`. Returns only on
/// failure, with the exit status to use (after printing the reason to stderr).
pub fn exec_main(args: &[OsString]) -> i32 {
    let fail = |msg: String| {
        eprintln!("exec-server sandbox: {msg}");
        EXIT_SANDBOX_FAILED
    };
    let (Some(json), Some(sep)) = (args.first(), args.get(1)) else {
        return fail("missing policy".into());
    };
    if sep != "--" || args.len() < 3 {
        return fail("missing command".into());
    }
    let policy: Policy = match json.to_str().map(serde_json::from_str) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return fail(format!("bad policy: {e}")),
        None => return fail("bad policy: not UTF-8".into()),
    };
    if let Err(e) = confine(&Plan::new(&policy)) {
        return fail(format!("cannot apply the sandbox: {e}"));
    }
    #[allow(clippy::disallowed_methods)] // exec in place: no new process is created here
    let err = std::process::Command::new(&args[2]).args(&args[3..]).exec();
    eprintln!("exec-server sandbox: {}: {err}", args[2].to_string_lossy());
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_argv_round_trips_the_policy() {
        let policy = Policy {
            filesystem: None,
            deny_network: true,
            managed_network: None,
        };
        let argv = wrap_argv(
            "/proc/self/exe",
            &policy,
            &["sh".into(), "-c".into(), "true".into()],
        );
        assert_eq!(argv[1], EXEC_HELPER_ARG);
        assert_eq!(serde_json::from_str::<Policy>(&argv[2]).unwrap(), policy);
        assert_eq!(&argv[3..], ["--", "sh", "-c", "true"]);
    }
}
