//! The OS sandbox: a `SandboxContext` becomes a `Policy` (resolved paths), the policy
//! becomes a `Plan` (mount steps, Landlock rules, seccomp), and `confine` applies the plan to
//! the calling process.
//!
//! Deciding and acting are separate: `Policy::from_context` and `Plan::new` are pure and
//! unit-tested without privileges; `confine` is the only code that changes the process, and
//! it runs in a helper process (the exec-server binary re-executed with a hidden argument)
//! that is still single-threaded. The helper applies, in order: a new user and mount
//! namespace, a read-only view of `/` with writable roots bound back read-write, read-only
//! carve-outs (`.git`, `.codex`, `.agents`, explicit `read` entries) and empty unreadable
//! mounts over denied paths, then Landlock as a second layer (required when the policy
//! restricts reads), `no_new_privs`, an empty capability set, and a seccomp filter that
//! refuses non-`AF_UNIX` sockets when the network is restricted. A managed network
//! (`enforceManagedNetwork`) adds a network namespace whose only way out is the allowed
//! loopback proxy ports (see `net`).
//!
//! **Architecture invariant:** the helper never runs what it could not confine: every step
//! that fails is an error, and the caller reports it instead of running unsandboxed.

mod apply;
pub mod bpf;
mod exec;
pub mod fdpass;
mod glob;
mod net;
mod plan;
mod policy;
mod seccomp;
mod sys;

pub use apply::{confine, probe, Support};
pub use exec::{exec_main, wrap_argv, EXEC_HELPER_ARG, EXIT_SANDBOX_FAILED};
pub use plan::{LandlockAccess, LandlockRule, MountStep, Plan};
pub use policy::{ManagedNetwork, Policy, PolicyError, Rule, RuleAccess, PROTECTED_NAMES};

/// Why the sandbox could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A step of the confinement failed; the process must not go on.
    #[error("{step}: {source}")]
    Step {
        /// What was being done.
        step: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel lacks a feature the policy needs.
    #[error("{0}")]
    Unsupported(String),
}

impl SandboxError {
    pub(crate) fn step(step: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Step {
            step: step.into(),
            source,
        }
    }
}
