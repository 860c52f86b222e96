//! The `remedy` command line. Everything but argument handling and printing
//! lives in the library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use remedy::config::{Capability, Config};
use remedy::record::{RunRecord, RunStatus, Trigger};
use remedy::remedy::Overrides;

/// Every run allocates and frees many small objects on two threads and
/// more; glibc's allocator spent ~10 % of a loaded server's time in
/// `malloc`/`free`/`malloc_consolidate`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use remedy::service::registry::EntryView;
use remedy::{Remedy, RunRequest};

mod client;
mod follow;
mod mcp;
mod new;
mod output;
mod test;

use client::{admin, decide, report, run_id, runs, show_run};

#[derive(Parser)]
#[command(
    name = "remedy",
    version,
    about = "Runs production runbooks as sandboxed WebAssembly plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `remedy alerts …`
#[derive(Subcommand)]
enum AlertsCommand {
    /// Let Remedy act on a flapping alert again: its earlier mitigations no
    /// longer count towards `flap.max` (role approve).
    ClearFlap {
        fingerprint: String,
        #[arg(long, env = "REMEDY_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
    },
}

/// `remedy config …`
#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the JSON Schema of `remedy.toml` (for editors that validate
    /// TOML against a schema).
    Schema,
    /// Print the configuration reference (Markdown): every key, its type,
    /// default and examples.
    Reference,
}

#[derive(Subcommand)]
enum Command {
    /// Run one plugin's detection (and mitigation when unhealthy) in-process.
    Run(RunArgs),
    /// List the plugins, their grants and load status.
    Plugins {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The service: HTTP API, Alertmanager receiver, schedules, hot-loaded plugins.
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides REMEDY_LISTEN and server.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run history from a running server (REMEDY_URL, REMEDY_TOKEN).
    Runs {
        /// Show this run in full instead of listing.
        id: Option<String>,
        #[arg(long, env = "REMEDY_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
        #[arg(long)]
        plugin: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
        /// Print the server's live events (runs, actions, approvals,
        /// alerts, the kill switch) as they happen, until interrupted.
        #[arg(long, conflicts_with_all = ["id", "status"])]
        follow: bool,
    },
    /// Approve a plan waiting in `approve` mode: it runs live, limited to its actions.
    Approve {
        id: String,
        #[arg(long, env = "REMEDY_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
    },
    /// Reject a plan waiting in `approve` mode: nothing runs.
    Reject {
        id: String,
        #[arg(long, env = "REMEDY_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
    },
    /// The post-incident review of a run, as Markdown.
    Report {
        id: String,
        #[arg(long, env = "REMEDY_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Write it here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Turn the kill switch on: every run of the server becomes a dry run.
    Pause {
        #[arg(long, env = "REMEDY_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Why (stored with the pause, shown wherever it is).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Alerts on a running server.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// The MCP server over stdio, for an AI agent beside the operator: a
    /// bridge to a running server's `/mcp` (REMEDY_URL, REMEDY_TOKEN with
    /// the `agent` role).
    Mcp {
        #[arg(long, env = "REMEDY_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
    },
    /// Turn the kill switch off.
    Resume {
        #[arg(long, env = "REMEDY_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
    },
    /// Start a runbook project (Rust, Python or JavaScript) outside this repository.
    New {
        /// The plugin's name: lowercase letters, digits and dashes.
        name: String,
        #[arg(long, value_enum, default_value = "rust")]
        lang: new::Lang,
        /// The interfaces it imports, comma-separated (`log` always).
        #[arg(long, default_value = "database,log")]
        uses: String,
        /// Where to create it (default: ./NAME).
        dir: Option<PathBuf>,
    },
    /// Write the WIT contract this binary implements into DIR.
    Wit {
        dir: PathBuf,
        /// Narrow the world to these interfaces (comma-separated).
        #[arg(long)]
        uses: Option<String>,
    },
    /// Run a runbook against fixtures (recorded answers instead of live backends).
    Test {
        /// A plugin name (bundled or configured) or a path to a `.wasm` component.
        plugin: String,
        /// Fixture files or directories of them (default: ./fixtures).
        fixtures: Vec<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Grant an interface for the test: CAP or CAP=PATTERN[,PATTERN] (repeatable).
        #[arg(long = "grant", value_name = "CAP[=TARGETS]")]
        grants: Vec<String>,
        /// Print each case's verdict and record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy the SQLite store to OUT while the server runs (a consistent
    /// snapshot; restore it with the service stopped).
    Backup {
        /// The new file (it must not exist).
        out: PathBuf,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// The configuration file's JSON Schema and reference.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Validate a component against the runbook world; print describe() and imports.
    Inspect {
        file: PathBuf,
        /// Check the file's signature against this config's trusted keys.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct RunArgs {
    /// A plugin name (bundled or configured) or a path to a `.wasm` component.
    plugin: String,
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// An Alertmanager webhook payload (or one alert object) to run against.
    #[arg(long)]
    alert: Option<PathBuf>,
    /// A config key for this run only: KEY=VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Grant an interface, optionally with targets: CAP or CAP=PATTERN[,PATTERN] (repeatable).
    #[arg(long = "grant", value_name = "CAP[=TARGETS]")]
    grants: Vec<String>,
    /// Record actions without executing them (the default for plugins without a mode).
    #[arg(long, conflicts_with = "live")]
    dry_run: bool,
    /// Execute actions.
    #[arg(long)]
    live: bool,
    /// Deadline of each guest call in ms.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Memory of the instance in MiB.
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Print the run record as JSON.
    #[arg(long)]
    json: bool,
    /// Also write the run as a fixture for `remedy test`: its trigger,
    /// config and every answer its host calls got.
    #[arg(long, value_name = "FIXTURE")]
    record: Option<PathBuf>,
}

/// A usage or configuration problem: exit status 2.
#[derive(Debug)]
struct UsageError(anyhow::Error);

fn usage<T>(r: anyhow::Result<T>) -> anyhow::Result<T> {
    r.map_err(|e| anyhow::Error::new(UsageError(e)))
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // `serve` exports traces when its config (or the environment) names a
    // collector; a config that does not load is reported by the command.
    let telemetry = match &cli.command {
        Command::Serve { config, .. } => load_config(config.as_deref()).ok().map(|c| c.telemetry),
        _ => None,
    };
    let _telemetry = match rt.block_on(async { remedy::telemetry::init(telemetry.as_ref()) }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", output::terminal_safe(&format!("{e:#}")));
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Plugins { config, json } => plugins(config.as_deref(), json).await,
        Command::Inspect { file, config, json } => inspect(&file, config.as_deref(), json).await,
        Command::New {
            name,
            lang,
            uses,
            dir,
        } => {
            let uses = usage(new::parse_uses(&uses))?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            usage(new::scaffold(&name, lang, &uses, &dir))?;
            println!(
                "created {} ({}): see {}",
                name,
                dir.display(),
                dir.join("README.md").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { out, config } => {
            let config = load_config(config.as_deref())?;
            if remedy::service::store_url(&config).is_some() {
                bail!(
                    "the store is PostgreSQL (server.store or REMEDY_STORE_URL): back it up with pg_dump, e.g. `pg_dump --format=custom --file=remedy.dump DBNAME`"
                );
            }
            let dir = remedy::service::data_dir(&config);
            let b = remedy::store::backup(&dir, &out)
                .with_context(|| format!("backing up the store in {}", dir.display()))?;
            println!(
                "backed up {} runs, {} alerts, {} audit events ({} bytes) to {}",
                b.runs,
                b.alerts,
                b.audit_events,
                b.bytes,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Schema) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&remedy::config::schema::schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Reference) => {
            print!("{}", remedy::config::schema::reference());
            Ok(ExitCode::SUCCESS)
        }
        Command::Wit { dir, uses } => {
            let uses = usage(uses.as_deref().map(new::parse_uses).transpose())?;
            new::export_wit(&dir, uses.as_ref())?;
            println!("wrote the remedy:plugin@0.1.0 WIT to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Test {
            plugin,
            fixtures,
            config,
            grants,
            json,
        } => {
            let files = usage(test::fixture_files(&fixtures))?;
            let remedy = remedy_for(config.as_deref(), &grants, None, None)?;
            let (plugin, bundled) = load_plugin(&remedy, &plugin).await?;
            test::run(&remedy, &plugin, bundled, &files, json).await
        }
        Command::Serve { config, listen } => {
            let config = load_config(config.as_deref())?;
            remedy::serve::serve(config, listen.as_deref()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve { id, server } => decide(&server, &usage(run_id(&id))?, "approve").await,
        Command::Reject { id, server } => decide(&server, &usage(run_id(&id))?, "reject").await,
        Command::Report { id, server, out } => {
            report(&server, &usage(run_id(&id))?, out.as_deref()).await
        }
        Command::Pause { server, reason } => {
            admin(&server, "pause", serde_json::json!({ "reason": reason })).await
        }
        Command::Resume { server } => admin(&server, "resume", serde_json::json!({})).await,
        Command::Mcp { server } => mcp::bridge(&server).await,
        Command::Alerts {
            command:
                AlertsCommand::ClearFlap {
                    fingerprint,
                    server,
                },
        } => client::clear_flap(&server, &fingerprint).await,
        Command::Runs {
            id: Some(id),
            server,
            json,
            ..
        } => show_run(&server, &usage(run_id(&id))?, json).await,
        Command::Runs {
            server,
            plugin,
            json,
            follow: true,
            ..
        } => follow::follow(&server, plugin, json).await,
        Command::Runs {
            id: None,
            server,
            plugin,
            status,
            limit,
            json,
            ..
        } => runs(&server, plugin, status, limit, json).await,
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    usage(match path {
        Some(p) => Config::load(p).map_err(Into::into),
        None => Config::from_env().map_err(Into::into),
    })
}

fn parse_grant(s: &str) -> anyhow::Result<(Capability, Vec<String>)> {
    let (cap, targets) = s.split_once('=').unwrap_or((s, ""));
    let Some(cap) = Capability::parse(cap.trim()) else {
        bail!(
            "--grant {s}: unknown interface `{cap}` (one of {})",
            Capability::names()
        );
    };
    let targets = targets
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    Ok((cap, targets))
}

fn parse_params(params: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    params
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => bail!("--param {p}: expected KEY=VALUE"),
        })
        .collect()
}

/// Where the CLI caches compiled plugins, so a second `run`, `test` or
/// `inspect` of a file does not compile it again: `REMEDY_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/remedy`, else `~/.cache/remedy`; none without a home.
fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("REMEDY_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("remedy")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("remedy")))
}

/// A one-shot Remedy: config, command-line grants and limits, the cache.
fn remedy_for(
    config: Option<&Path>,
    grants: &[String],
    timeout_ms: Option<u64>,
    memory_mb: Option<u64>,
) -> anyhow::Result<Remedy> {
    let config = load_config(config)?;
    let overrides = Overrides {
        grants: usage(grants.iter().map(|g| parse_grant(g)).collect())?,
        timeout_ms,
        memory_mb,
    };
    let mut remedy = usage(Remedy::new(config, overrides))?;
    if let Some(dir) = cache_dir() {
        remedy.set_cache_dir(dir);
    }
    Ok(remedy)
}

/// A plugin by name or `.wasm` path; `true` when it is a bundled one.
async fn load_plugin(
    remedy: &Remedy,
    plugin: &str,
) -> anyhow::Result<(remedy::runtime::Plugin, bool)> {
    let is_file = plugin.ends_with(".wasm") || Path::new(plugin).is_file();
    let loaded = if is_file {
        remedy.load_file(Path::new(plugin)).await
    } else {
        remedy.load_named(plugin).await
    };
    // A configured path under a bundled name is not the bundled plugin.
    let configured_path = remedy
        .config
        .plugins
        .get(plugin)
        .is_some_and(|pc| pc.path.is_some());
    let bundled = !is_file && remedy::bundled::find(plugin).is_some() && !configured_path;
    Ok((usage(loaded.map_err(Into::into))?, bundled))
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let params = usage(parse_params(&args.params))?;
    let remedy = remedy_for(
        args.config.as_deref(),
        &args.grants,
        args.timeout_ms,
        args.memory_mb,
    )?;
    let (plugin, _) = load_plugin(&remedy, &args.plugin).await?;
    let trigger = match &args.alert {
        Some(path) => usage(alert_trigger(path, &plugin.info.alerts))?,
        None => Trigger::Manual { by: "cli".into() },
    };
    let dry_run = if args.live {
        Some(false)
    } else if args.dry_run {
        Some(true)
    } else {
        None
    };
    let request = RunRequest {
        trigger: trigger.clone(),
        dry_run,
        params: params.clone(),
        stage: remedy::guardrails::Stage::Normal,
    };
    let record = match &args.record {
        None => remedy.run(&plugin, request).await,
        Some(path) => {
            let recorder = remedy::fixture::record::Recorder::new((*remedy.backends).clone());
            let runner = remedy.with_backends_of(std::sync::Arc::new(recorder.backends()));
            let record = runner.run(&plugin, request).await;
            let mut config = plugin.settings.config.clone();
            config.extend(params);
            let fixture = recorder
                .fixture(&trigger, &config, &record)
                .context("recording the fixture")?;
            fixture.write(path).context("recording the fixture")?;
            let redacted: usize = fixture.redacted.values().sum();
            eprintln!(
                "recorded the run as the fixture {} ({redacted} secret-looking value(s) redacted)",
                path.display()
            );
            record
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        print!("{}", output::terminal_safe(&output::run_text(&record)));
    }
    Ok(exit_for(&record))
}

fn exit_for(record: &RunRecord) -> ExitCode {
    if record.status == RunStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The alert to run against, from a webhook payload (or one alert
/// object) validated as the receiver validates a POST: the first alert the
/// plugin handles, else the first alert.
fn alert_trigger(path: &Path, handled: &[String]) -> anyhow::Result<Trigger> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let alerts = remedy::triggers::alerts::parse_file(&bytes)
        .with_context(|| format!("{}", path.display()))?;
    let alert = alerts
        .iter()
        .find(|a| handled.contains(&a.name().to_string()))
        .or(alerts.first())
        .with_context(|| format!("{}: no alerts in the payload", path.display()))?;
    Ok(Trigger::Alert {
        alert: alert.info(),
    })
}

async fn plugins(config: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let remedy = usage(Remedy::new(load_config(config)?, Overrides::default()))?;
    let mut rows = Vec::new();
    let mut failures = 0;
    for (name, source) in remedy.sources() {
        let loaded = remedy.load_source(&source).await;
        if loaded.is_err() {
            failures += 1;
        }
        let settings =
            remedy.settings_for(&name, matches!(source, remedy::remedy::Source::Bundled(_)));
        rows.push(EntryView::of(
            &name,
            source.to_string(),
            loaded.as_ref().ok(),
            Some(&settings),
            loaded.as_ref().err().map(|e| e.to_string()),
        ));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", output::terminal_safe(&output::plugins_text(&rows)));
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn inspect(file: &Path, config: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    // Inspect grants everything so that it can report every import.
    let overrides = Overrides {
        grants: Capability::ALL.iter().map(|c| (*c, vec![])).collect(),
        ..Overrides::default()
    };
    // Only the trusted keys of a config matter here: inspect loads the
    // file whatever the config says of it.
    let mut cfg = Config::default();
    if let Some(path) = config {
        let full = load_config(Some(path))?;
        cfg.server.trusted_keys = full.server.trusted_keys;
        cfg.plugins = full
            .plugins
            .into_iter()
            .map(|(n, pc)| {
                let keys = remedy::config::PluginConfig {
                    trusted_keys: pc.trusted_keys,
                    ..Default::default()
                };
                (n, keys)
            })
            .collect();
    }
    let mut remedy = Remedy::new(cfg, overrides)?;
    if let Some(dir) = cache_dir() {
        remedy.set_cache_dir(dir);
    }
    match remedy.load_file(file).await {
        Ok(plugin) => {
            let v = serde_json::json!({
                "file": file.display().to_string(),
                "valid": true,
                "info": plugin.info,
                "digest": plugin.digest,
                "imports": plugin.imports,
                "signature": plugin.signed,
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!(
                    "{}",
                    output::terminal_safe(&output::inspect_text(file, &plugin))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json {
                let v = serde_json::json!({"file": file.display().to_string(), "valid": false, "error": e.to_string()});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                eprintln!("{}: invalid plugin: {e}", file.display());
            }
            Ok(ExitCode::from(1))
        }
    }
}
