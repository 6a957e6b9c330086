//! `exec-server cp URL SRC DST`: copy files and directory trees to or from an executor.
//!
//! Remote paths start with `:` (exactly one of SRC and DST is remote), so a URL, a remote path
//! and a local path can never be confused. Files stream in blocks over `fs/open` +
//! `fs/readBlock` / `fs/writeBlock` (mode `replace`) + `fs/close` with several blocks in flight;
//! a progress bar shows on a terminal for anything over 1 MiB. File modes are preserved (the
//! protocol has no chmod or mode field, so modes are read with `stat` and set with `chmod`
//! run on the executor) and every file's size is checked at the end.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use exec_server_client::files::TransferOptions;
use exec_server_client::remote_fs::RemoteFileSystem;
use exec_server_client::Client;
use exec_server_core::fs::{CreateDirectoryOptions, FileSystem as _, MetadataOptions};
use exec_server_protocol::process::{EnvInherit, ExecEnvPolicy};
use exec_server_protocol::PathUri;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};

use super::ConnectArgs;

pub(crate) const EXAMPLES: &str = "\
Examples:
  exec-server cp ws://127.0.0.1:8765 ./build.tar.gz :/tmp/build.tar.gz     # upload
  exec-server cp ws://127.0.0.1:8765 :/var/log/app.log .                   # download into .
  exec-server cp -r ws://127.0.0.1:8765 ./src :/srv/app/src                # a directory
  exec-server cp devbox :relative/to/executor/cwd ./here                   # environment id

A path starting with `:` is on the executor (relative ones are relative to its working
directory); write a local path that starts with `:` as `./:name`. When DST is an existing
directory, SRC is copied into it.";

/// Flags of `cp`.
#[derive(Debug, clap::Args)]
pub(crate) struct CpArgs {
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,

    /// The source: a local path, or `:PATH` on the executor.
    #[arg(value_name = "SRC")]
    pub(crate) source: String,

    /// The destination: a local path, or `:PATH` on the executor.
    #[arg(value_name = "DST")]
    pub(crate) destination: String,

    /// Copy directories recursively.
    #[arg(long, short = 'r')]
    pub(crate) recursive: bool,

    /// No progress bar.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,

    /// Blocks in flight per file.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub(crate) in_flight: usize,

    /// Block size in KiB (at most 1024).
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    pub(crate) block_kib: usize,
}

/// Files and directories of one copy, with their modes.
#[derive(Default)]
struct Plan {
    /// Directories to create, parents first: (source, destination).
    dirs: Vec<(PathBuf, PathBuf)>,
    /// Files: (source, destination, size).
    files: Vec<(PathBuf, PathBuf, u64)>,
}

impl Plan {
    fn total(&self) -> u64 {
        self.files.iter().map(|f| f.2).sum()
    }
}

/// Keeps freed memory in the process instead of handing it back to the kernel. A transfer
/// allocates and frees megabyte buffers (request text, base64, blocks) all the time; with
/// glibc's defaults they are unmapped or trimmed when freed and their pages faulted back in
/// and zeroed by the kernel for the next block. On the 2-CPU VM of docs/benchmarks.md that
/// was most of a 1 GiB download's CPU time (1.1–2.8 s of system time; 0.4 s with this).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn retain_freed_memory() {
    // SAFETY: `mallopt` only sets allocator parameters; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn retain_freed_memory() {}

/// Copies; errors say what to fix.
pub(crate) async fn cp(args: CpArgs) -> anyhow::Result<()> {
    retain_freed_memory();
    let (src_remote, dst_remote) = (
        args.source.starts_with(':'),
        args.destination.starts_with(':'),
    );
    if src_remote == dst_remote {
        bail!(
            "exactly one of SRC and DST must be a remote path starting with `:` \
             (e.g. `:/tmp/file`); got `{}` and `{}`",
            args.source,
            args.destination
        );
    }
    let client = args.connect.connect("exec-server cp").await?;
    let opts = TransferOptions {
        block_size: (args.block_kib.clamp(1, 1024)) << 10,
        in_flight: args.in_flight.max(1),
    };
    let result = if dst_remote {
        upload(&client, &args, opts).await
    } else {
        download(&client, &args, opts).await
    };
    client.close();
    result
}

fn remote_path(client: &Client, spec: &str) -> PathBuf {
    let p = Path::new(spec.trim_start_matches(':'));
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let base = client
        .environment_info()
        .cwd
        .and_then(|u| u.to_path().ok())
        .unwrap_or_else(|| "/".into());
    base.join(p)
}

fn uri(p: &Path) -> anyhow::Result<PathUri> {
    PathUri::from_path(p).with_context(|| format!("`{}` is not an absolute path", p.display()))
}

fn file_name(p: &Path) -> anyhow::Result<&std::ffi::OsStr> {
    p.file_name().with_context(|| {
        format!(
            "`{}` has no file name to copy into a directory",
            p.display()
        )
    })
}

fn progress(quiet: bool, total: u64) -> ProgressBar {
    if quiet || total < (1 << 20) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

async fn upload(client: &Client, args: &CpArgs, opts: TransferOptions) -> anyhow::Result<()> {
    let fs = RemoteFileSystem::new(client.clone());
    let src = PathBuf::from(&args.source);
    let meta =
        std::fs::metadata(&src).with_context(|| format!("cannot read `{}`", src.display()))?;
    if meta.is_dir() && !args.recursive {
        bail!("`{}` is a directory; pass -r to copy it", src.display());
    }
    let mut dst = remote_path(client, &args.destination);
    let follow = MetadataOptions {
        follow_symlinks: true,
    };
    if let Ok(m) = fs.get_metadata(&dst, follow, None).await {
        if m.is_directory {
            dst = dst.join(file_name(&src)?);
        }
    }
    let mut plan = Plan::default();
    let mut modes: Vec<(PathBuf, u32)> = Vec::new();
    if meta.is_dir() {
        plan_local_dir(&src, &dst, &mut plan, &mut modes)?;
    } else {
        plan.files.push((src.clone(), dst.clone(), meta.len()));
        modes.push((dst.clone(), meta.permissions().mode() & 0o7777));
    }
    for (_, d) in &plan.dirs {
        let o = CreateDirectoryOptions {
            recursive: true,
            follow_symlinks: true,
        };
        fs.create_directory(d, o, None)
            .await
            .with_context(|| format!("cannot create the remote directory `{}`", d.display()))?;
    }
    let bar = progress(args.quiet, plan.total());
    for (s, d, size) in &plan.files {
        bar.set_message(s.display().to_string());
        let file = tokio::fs::File::open(s)
            .await
            .with_context(|| format!("cannot open `{}`", s.display()))?;
        let written = client
            .write_stream(&uri(d)?, file, opts, |n| bar.inc(n))
            .await
            .with_context(|| format!("cannot write the remote file `{}`", d.display()))?;
        let remote = fs
            .get_metadata(d, follow, None)
            .await
            .with_context(|| format!("cannot check the remote file `{}`", d.display()))?;
        if written != *size || remote.size != *size {
            bail!(
                "size mismatch for `{}`: local {size} bytes, sent {written}, remote {}",
                d.display(),
                remote.size
            );
        }
    }
    bar.finish_and_clear();
    set_remote_modes(client, &modes).await
}

fn plan_local_dir(
    src: &Path,
    dst: &Path,
    plan: &mut Plan,
    modes: &mut Vec<(PathBuf, u32)>,
) -> anyhow::Result<()> {
    let meta = std::fs::metadata(src)?;
    plan.dirs.push((src.to_path_buf(), dst.to_path_buf()));
    modes.push((dst.to_path_buf(), meta.permissions().mode() & 0o7777));
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .with_context(|| format!("cannot list `{}`", src.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let lmeta = std::fs::symlink_metadata(&s)?;
        if lmeta.file_type().is_symlink() {
            match std::fs::metadata(&s) {
                Ok(m) if m.is_file() => {
                    plan.files.push((s.clone(), d.clone(), m.len()));
                    modes.push((d, m.permissions().mode() & 0o7777));
                }
                _ => eprintln!(
                    "exec-server: skipping `{}`: a symlink to a directory or to nothing",
                    s.display()
                ),
            }
        } else if lmeta.is_dir() {
            plan_local_dir(&s, &d, plan, modes)?;
        } else if lmeta.is_file() {
            plan.files.push((s, d.clone(), lmeta.len()));
            modes.push((d, lmeta.permissions().mode() & 0o7777));
        } else {
            eprintln!(
                "exec-server: skipping `{}`: not a regular file",
                s.display()
            );
        }
    }
    Ok(())
}

async fn download(client: &Client, args: &CpArgs, opts: TransferOptions) -> anyhow::Result<()> {
    let fs = RemoteFileSystem::new(client.clone());
    let src = remote_path(client, &args.source);
    let follow = MetadataOptions {
        follow_symlinks: true,
    };
    let meta = fs
        .get_metadata(&src, follow, None)
        .await
        .with_context(|| format!("cannot read the remote path `{}`", src.display()))?;
    if meta.is_directory && !args.recursive {
        bail!("`:{}` is a directory; pass -r to copy it", src.display());
    }
    let mut dst = PathBuf::from(&args.destination);
    if dst.is_dir() {
        dst = dst.join(file_name(&src)?);
    }
    let mut plan = Plan::default();
    if meta.is_directory {
        plan_remote_dir(&fs, &src, &dst, &mut plan).await?;
    } else {
        plan.files.push((src.clone(), dst.clone(), meta.size));
    }
    for (_, d) in &plan.dirs {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create `{}`", d.display()))?;
    }
    let bar = progress(args.quiet, plan.total());
    for (s, d, size) in &plan.files {
        bar.set_message(s.display().to_string());
        let mut blocks = client
            .read_stream(&uri(s)?, opts)
            .await
            .with_context(|| format!("cannot open the remote file `{}`", s.display()))?;
        // The local file is written on a blocking thread, block by block, without copying.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(opts.in_flight);
        let target = d.clone();
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&target)?;
            while let Some(block) = rx.blocking_recv() {
                file.write_all(&block)?;
            }
            file.flush()
        });
        let mut got = 0u64;
        let mut failed = None;
        while let Some(block) = blocks.next().await {
            let block = match block {
                Ok(b) => b,
                Err(e) => {
                    failed = Some(
                        anyhow::Error::from(e)
                            .context(format!("cannot read the remote file `{}`", s.display())),
                    );
                    break;
                }
            };
            got += block.len() as u64;
            bar.inc(block.len() as u64);
            if tx.send(block).await.is_err() {
                break; // The writer failed; its error is reported below.
            }
        }
        drop(tx);
        writer
            .await
            .context("the file writer stopped")?
            .with_context(|| format!("cannot write `{}`", d.display()))?;
        if let Some(e) = failed {
            return Err(e);
        }
        let local = std::fs::metadata(d)?.len();
        if got != *size || local != *size {
            bail!(
                "size mismatch for `{}`: remote {size} bytes, received {got}, local {local}",
                d.display()
            );
        }
    }
    bar.finish_and_clear();
    // Modes: the protocol has no mode field, so ask the executor's `stat`.
    let mut remote_paths: Vec<(PathBuf, PathBuf)> = plan
        .dirs
        .iter()
        .map(|(s, d)| (s.clone(), d.clone()))
        .collect();
    remote_paths.extend(plan.files.iter().map(|(s, d, _)| (s.clone(), d.clone())));
    let modes = remote_modes(client, remote_paths.iter().map(|p| p.0.as_path())).await?;
    // Files first, then directories deepest first, so a read-only directory is set last.
    for (s, d) in remote_paths.iter().rev() {
        if let Some(mode) = modes.get(s) {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(*mode))
                .with_context(|| format!("cannot set the mode of `{}`", d.display()))?;
        }
    }
    Ok(())
}

async fn plan_remote_dir(
    fs: &RemoteFileSystem,
    src: &Path,
    dst: &Path,
    plan: &mut Plan,
) -> anyhow::Result<()> {
    let mut queue = vec![(src.to_path_buf(), dst.to_path_buf())];
    while let Some((s, d)) = queue.pop() {
        plan.dirs.push((s.clone(), d.clone()));
        let mut entries = fs
            .read_directory(&s, None)
            .await
            .with_context(|| format!("cannot list the remote directory `{}`", s.display()))?;
        entries.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        for e in entries.into_iter().rev() {
            let (es, ed) = (s.join(&e.file_name), d.join(&e.file_name));
            if e.is_directory {
                queue.push((es, ed));
            } else if e.is_file {
                let m = fs
                    .get_metadata(
                        &es,
                        MetadataOptions {
                            follow_symlinks: true,
                        },
                        None,
                    )
                    .await?;
                plan.files.push((es, ed, m.size));
            } else {
                eprintln!(
                    "exec-server: skipping `:{}`: not a regular file",
                    es.display()
                );
            }
        }
    }
    Ok(())
}

/// Runs a short helper command on the executor and returns its stdout (stderr on failure).
async fn remote_command(client: &Client, argv: Vec<String>) -> anyhow::Result<Vec<u8>> {
    let mut params = super::run::start_params(
        client,
        argv.clone(),
        uri(Path::new("/"))?,
        Vec::new(),
        false,
        false,
    );
    params.env_policy = Some(ExecEnvPolicy {
        inherit: EnvInherit::Core,
        ignore_default_excludes: false,
        exclude: Vec::new(),
        set: Default::default(),
        include_only: Vec::new(),
    });
    params.env.insert("LC_ALL".into(), "C".into());
    let mut p = client.start_process(params).await?;
    let (out, err, code) = p.events().collect_output().await?;
    if code != Some(0) {
        bail!(
            "`{}` failed on the executor ({}): {}",
            argv.first().map(String::as_str).unwrap_or_default(),
            code.map_or("no exit code".into(), |c| format!("exit {c}")),
            String::from_utf8_lossy(&err).trim()
        );
    }
    Ok(out)
}

/// Paths per helper command line, well under the executor's argument limit.
const PATHS_PER_COMMAND: usize = 512;

async fn set_remote_modes(client: &Client, modes: &[(PathBuf, u32)]) -> anyhow::Result<()> {
    let mut by_mode: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (p, m) in modes {
        by_mode
            .entry(*m)
            .or_default()
            .push(p.to_string_lossy().into_owned());
    }
    for (mode, paths) in by_mode {
        for chunk in paths.chunks(PATHS_PER_COMMAND) {
            let mut argv = vec!["chmod".to_string(), format!("{mode:o}"), "--".into()];
            argv.extend(chunk.iter().cloned());
            remote_command(client, argv)
                .await
                .context("cannot preserve file modes")?;
        }
    }
    Ok(())
}

async fn remote_modes<'a>(
    client: &Client,
    paths: impl Iterator<Item = &'a Path>,
) -> anyhow::Result<BTreeMap<PathBuf, u32>> {
    let paths: Vec<&Path> = paths.collect();
    let mut out = BTreeMap::new();
    for chunk in paths.chunks(PATHS_PER_COMMAND) {
        let mut argv = vec![
            "stat".to_string(),
            "-L".into(),
            "-c".into(),
            "%a".into(),
            "--".into(),
        ];
        argv.extend(chunk.iter().map(|p| p.to_string_lossy().into_owned()));
        let text = remote_command(client, argv)
            .await
            .context("cannot read remote file modes")?;
        let text = String::from_utf8_lossy(&text);
        for (p, line) in chunk.iter().zip(text.lines()) {
            if let Ok(mode) = u32::from_str_radix(line.trim(), 8) {
                out.insert(p.to_path_buf(), mode);
            }
        }
    }
    Ok(out)
}
