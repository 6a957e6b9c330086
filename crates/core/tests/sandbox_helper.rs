//! Sandboxed filesystem operations end to end: this test binary is its own sandbox helper
//! (its `main` dispatches the hidden helper arguments first, as the exec-server binary
//! does), so every check below really re-executes, confines and runs the operation.
//!
//! The checks double as escape tests: nothing may land outside the writable roots, through
//! `..`, symlinks or hard links, and denied paths stay unreadable.

// A `harness = false` test reports on stdout, like libtest does.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use exec_server_core::fs::sandboxed::maybe_run_helper;
use exec_server_core::fs::{
    CopyOptions, CreateDirectoryOptions, FileSystem, FsError, HandleTable, LocalFileSystem,
    MetadataOptions, ReadOptions, RemoveOptions, WriteOptions,
};
use exec_server_protocol::fs::{OpenMode, SandboxContext};
use exec_server_protocol::PathUri;

fn uri(p: &Path) -> String {
    PathUri::from_path(p)
        .map(|u| u.as_str().to_string())
        .unwrap_or_default()
}

fn sandbox(cwd: &Path, extra: serde_json::Value) -> SandboxContext {
    let mut entries = vec![serde_json::json!(
        {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"})];
    if let serde_json::Value::Array(more) = extra {
        entries.extend(more);
    }
    serde_json::from_value(serde_json::json!({
        "permissions": {"type": "managed", "network": "restricted",
            "file_system": {"type": "restricted", "entries": entries}},
        "cwd": uri(cwd),
        "windowsSandboxLevel": "disabled"
    }))
    .expect("valid sandbox")
}

fn write_entry(p: &Path) -> serde_json::Value {
    serde_json::json!({"path": {"type": "path", "path": uri(p)}, "access": "write"})
}

const W: WriteOptions = WriteOptions {
    follow_symlinks: true,
};
const R: ReadOptions = ReadOptions {
    follow_symlinks: true,
};

type Check = Result<(), String>;

fn expect_err<T: std::fmt::Debug>(r: Result<T, FsError>, what: &str) -> Check {
    match r {
        Err(FsError::Io(_)) => Ok(()),
        Err(e) => Err(format!("{what}: expected an OS error, got {e}")),
        Ok(v) => Err(format!("{what}: expected a denial, got {v:?}")),
    }
}

fn ensure(cond: bool, what: &str) -> Check {
    if cond {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

async fn read_only_root(dir: &Path) -> Check {
    let fs = LocalFileSystem::default();
    let sb = sandbox(dir, serde_json::json!([]));
    std::fs::write(dir.join("r"), b"readable").map_err(|e| e.to_string())?;
    let data = fs
        .read_file(&dir.join("r"), R, Some(&sb))
        .await
        .map_err(|e| e.to_string())?;
    ensure(data == b"readable", "read under a read-only root")?;
    let m = fs
        .get_metadata(
            &dir.join("r"),
            MetadataOptions {
                follow_symlinks: true,
            },
            Some(&sb),
        )
        .await
        .map_err(|e| e.to_string())?;
    ensure(m.size == 8, "metadata under a read-only root")?;
    let e = fs
        .write_file(&dir.join("denied"), b"x".to_vec(), W, Some(&sb))
        .await;
    ensure(
        matches!(&e, Err(FsError::Io(io)) if io.raw_os_error() == Some(libc::EROFS)),
        &format!("write under a read-only root: {e:?}"),
    )?;
    ensure(!dir.join("denied").exists(), "nothing written")?;
    let rm = RemoveOptions {
        recursive: true,
        force: true,
        follow_symlinks: true,
    };
    expect_err(fs.remove(&dir.join("r"), rm, Some(&sb)).await, "remove")?;
    ensure(dir.join("r").exists(), "nothing removed")
}

async fn writable_root(dir: &Path) -> Check {
    let fs = LocalFileSystem::default();
    let w = dir.join("w");
    let outside = dir.join("outside");
    for d in [&w, &outside, &w.join(".git")] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    std::fs::write(outside.join("victim"), b"keep").map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&outside, w.join("escape")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(outside.join("new"), w.join("dangling"))
        .map_err(|e| e.to_string())?;
    std::fs::hard_link(outside.join("victim"), w.join("hard")).map_err(|e| e.to_string())?;
    let sb = sandbox(dir, serde_json::json!([write_entry(&w)]));
    fs.write_file(&w.join("in"), b"in".to_vec(), W, Some(&sb))
        .await
        .map_err(|e| e.to_string())?;
    ensure(
        std::fs::read(w.join("in")).ok().as_deref() == Some(b"in"),
        "write inside",
    )?;
    let tries: Vec<PathBuf> = vec![
        dir.join("out"),
        w.join("../out"),
        w.join("escape/new"),
        w.join("escape/victim"),
        w.join("dangling"),
        w.join(".git/config"),
    ];
    for p in &tries {
        expect_err(
            fs.write_file(p, b"x".to_vec(), W, Some(&sb)).await,
            &p.display().to_string(),
        )?;
    }
    let mk = CreateDirectoryOptions {
        recursive: true,
        follow_symlinks: true,
    };
    expect_err(
        fs.create_directory(&w.join("escape/d"), mk, Some(&sb))
            .await,
        "mkdir via link",
    )?;
    let cp = CopyOptions { recursive: true };
    expect_err(
        fs.copy(&w.join("in"), &w.join("escape/copied"), cp, Some(&sb))
            .await,
        "copy out",
    )?;
    // A hard link shares the inode: replacing the link inside the workspace (atomic write)
    // must not change the file outside.
    fs.write_file(&w.join("hard"), b"changed".to_vec(), W, Some(&sb))
        .await
        .map_err(|e| e.to_string())?;
    ensure(
        std::fs::read(outside.join("victim")).ok().as_deref() == Some(b"keep"),
        "hard link",
    )?;
    ensure(
        !dir.join("out").exists() && !outside.join("new").exists(),
        "nothing outside",
    )?;
    ensure(
        !outside.join("copied").exists() && !outside.join("d").exists(),
        "nothing copied out",
    )
}

async fn denied_reads(dir: &Path) -> Check {
    let fs = LocalFileSystem::default();
    std::fs::create_dir_all(dir.join("sub")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("sub/.env"), b"secret").map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.join("private")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("private/key"), b"secret").map_err(|e| e.to_string())?;
    let sb = sandbox(
        dir,
        serde_json::json!([
            {"path": {"type": "glob_pattern", "pattern": "**/.env"}, "access": "deny"},
            {"path": {"type": "path", "path": uri(&dir.join("private"))}, "access": "none"}
        ]),
    );
    let e = fs.read_file(&dir.join("sub/.env"), R, Some(&sb)).await;
    ensure(
        matches!(&e, Err(FsError::Io(io)) if io.raw_os_error() == Some(libc::EACCES)),
        &format!("denied glob: {e:?}"),
    )?;
    let e = fs.read_file(&dir.join("private/key"), R, Some(&sb)).await;
    ensure(e.is_err(), &format!("denied directory: {e:?}"))
}

async fn sandboxed_open(dir: &Path) -> Check {
    std::fs::write(dir.join("blob"), b"0123456789").map_err(|e| e.to_string())?;
    let sb = sandbox(dir, serde_json::json!([]));
    let handles = HandleTable::default();
    handles
        .open_sandboxed("h", &dir.join("blob"), OpenMode::Read, Some(&sb))
        .await
        .map_err(|e| e.to_string())?;
    let data = handles
        .read_block("h", 2, 4)
        .await
        .map_err(|e| e.to_string())?;
    ensure(data == b"2345", "block read through a passed descriptor")?;
    let e = handles
        .open_sandboxed("w", &dir.join("new"), OpenMode::Replace, Some(&sb))
        .await;
    expect_err(e, "replace under a read-only root")?;
    ensure(!dir.join("new").exists(), "nothing created")
}

fn main() -> ExitCode {
    if let Some(code) = maybe_run_helper() {
        std::process::exit(code);
    }
    // Speak enough of libtest's command line for cargo test and nextest: `--list` prints the
    // test names; a bare argument selects one test (`--exact NAME`).
    const TESTS: [&str; 4] = [
        "read_only_root",
        "writable_root",
        "denied_reads",
        "sandboxed_open",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            for t in TESTS {
                println!("{t}: test");
            }
        }
        return ExitCode::SUCCESS;
    }
    let only: Option<&str> = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str);
    let selected = |name: &str| only.is_none_or(|o| name.contains(o));
    let support = exec_server_sandbox::probe();
    if !support.user_namespaces {
        println!("skipped: this kernel does not allow user namespaces");
        return ExitCode::SUCCESS;
    }
    let Ok(rt) = tokio::runtime::Runtime::new() else {
        return ExitCode::FAILURE;
    };
    let mut failed = 0;
    let mut passed = 0;
    macro_rules! run {
        ($name:ident) => {{
            if !selected(stringify!($name)) {
                // not selected
            } else {
                let dir = tempfile::tempdir().expect("tempdir");
                let path = std::fs::canonicalize(dir.path()).expect("canonical tempdir");
                match rt.block_on($name(&path)) {
                    Ok(()) => {
                        passed += 1;
                        println!("test {} ... ok", stringify!($name));
                    }
                    Err(e) => {
                        failed += 1;
                        println!("test {} ... FAILED: {e}", stringify!($name));
                    }
                }
            }
        }};
    }
    run!(read_only_root);
    run!(writable_root);
    run!(denied_reads);
    run!(sandboxed_open);
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
